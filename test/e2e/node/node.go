package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/remora-mesh/remora/internal/ociimage"
	"github.com/remora-mesh/remora/internal/testenv"
)

// References of the test images Start builds and imports. Pods use them with
// imagePullPolicy Never (IfNotPresent works too: they are present).
const (
	// ImageHub and ImageTag are the hub and tag the injector's values need so
	// that injected pods use the test images; see InjectorValues.
	ImageHub = "localhost/remora"
	ImageTag = "test"

	// InjectorImage holds /usr/local/bin/injector (entrypoint; CMD serve) and
	// the host's iptables, ip6tables and ip with their libraries: the
	// istio-init image.
	InjectorImage = ImageHub + "/injector:" + ImageTag
	// ProxyImage holds the stand-in proxy at /usr/local/bin/pilot-agent
	// (entrypoint), UID 1337, in place of Istio's proxyv2.
	ProxyImage = ImageHub + "/proxyv2:" + ImageTag
	// AppImage holds /usr/local/bin/testapp (entrypoint; CMD server).
	AppImage = ImageHub + "/testapp:" + ImageTag
	// PauseImage is the pod sandbox image.
	PauseImage = ImageHub + "/pause:" + ImageTag
)

// InjectorValues returns the injector value overrides (`injector inject
// --set`, one values.PATH=VALUE each) under which injected pods use the test
// images: the proxy from ProxyImage, istio-init from InjectorImage, never
// pulled.
func InjectorValues() []string {
	return []string{
		"values.global.hub=" + ImageHub,
		"values.global.tag=" + ImageTag,
		"values.global.imagePullPolicy=Never",
		"values.global.proxy_init.image=" + InjectorImage,
	}
}

// Defaults of Options.
const (
	DefaultBaseDir = "/tmp/remora-e2e-node"
	DefaultBridge  = "remora-e2e0"
)

// DefaultSubnet is the bridge's subnet; the node IP is its first address.
var DefaultSubnet = netip.MustParsePrefix("10.244.78.0/24")

// Options configure Start. The zero value works.
type Options struct {
	// BaseDir holds the lock and one directory per run. Default:
	// $REMORA_NODE_DIR, else DefaultBaseDir. Keep it short: unix socket
	// paths (at most 107 bytes) live under it.
	BaseDir string
	// K8sBinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet and kubectl. Default: $KUBEBUILDER_ASSETS,
	// else bin/k8s in the repository.
	K8sBinDir string
	// RepoRoot is the module's root, where the images are built from.
	// Default: found from the working directory.
	RepoRoot string
	// CNIBinDir holds the bridge, host-local and loopback CNI plugins.
	// Default: /usr/lib/cni (Debian), else /opt/cni/bin.
	CNIBinDir string
	// Bridge is the name of the bridge Start creates. Default DefaultBridge.
	Bridge string
	// Subnet is the bridge's IPv4 subnet, unused on the machine. Default:
	// $REMORA_NODE_SUBNET, else DefaultSubnet.
	Subnet netip.Prefix
	// Environment, when set, is the envtest environment to start (for
	// example with WebhookInstallOptions or CRDs). Start sets its binary
	// directory, directories and API server flags.
	Environment *envtest.Environment
	// APIServerOnNodeIP makes the API server listen on the node IP (the
	// bridge) instead of 127.0.0.1, with the node IP in its serving
	// certificate, so that pods reach it (the injector running as pods).
	// Everything else (kubeconfig, kubelet, controllers) then uses that
	// address too. Pods still get the kubernetes Service's ClusterIP in
	// KUBERNETES_SERVICE_HOST, which nothing routes here (there is no Service
	// proxy): give such pods APIServerEnv.
	APIServerOnNodeIP bool
	// ExtraImages are written and imported along with the test images.
	ExtraImages []*ociimage.Image
	// Logf receives progress lines. Default: none.
	Logf func(format string, args ...any)
	// Timeout bounds Start (builds included). Default 5 minutes.
	Timeout time.Duration
	// LockTimeout bounds the wait for another node on this machine to stop.
	// Default 15 minutes.
	LockTimeout time.Duration
	// ArtifactsDir, when set, receives the node's logs and a dump of the
	// cluster's pods when Stop is called after SetFailed.
	ArtifactsDir string
}

func (o *Options) setDefaults() error {
	if o.BaseDir == "" {
		o.BaseDir = os.Getenv("REMORA_NODE_DIR")
	}
	if o.BaseDir == "" {
		o.BaseDir = DefaultBaseDir
	}
	if o.RepoRoot == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			return err
		}
		o.RepoRoot = root
	}
	if o.K8sBinDir == "" {
		o.K8sBinDir = testenv.K8sBinDir(o.RepoRoot)
	}
	if o.CNIBinDir == "" {
		o.CNIBinDir = "/usr/lib/cni"
		if _, err := os.Stat(filepath.Join(o.CNIBinDir, "bridge")); err != nil {
			o.CNIBinDir = "/opt/cni/bin"
		}
	}
	if o.Bridge == "" {
		o.Bridge = DefaultBridge
	}
	if !o.Subnet.IsValid() {
		o.Subnet = DefaultSubnet
		if s := os.Getenv("REMORA_NODE_SUBNET"); s != "" {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return fmt.Errorf("REMORA_NODE_SUBNET: %w", err)
			}
			o.Subnet = p
		}
	}
	o.Subnet = o.Subnet.Masked()
	if !o.Subnet.Addr().Is4() || o.Subnet.Bits() > 28 || o.Subnet.Bits() < 16 {
		return fmt.Errorf("subnet %s: want an IPv4 prefix between /16 and /28", o.Subnet)
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = 15 * time.Minute
	}
	var err error
	for _, p := range []*string{&o.BaseDir, &o.K8sBinDir, &o.RepoRoot, &o.CNIBinDir} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	return nil
}

// Timings says how long each phase of Start took, each measured from the
// moment Start was called.
type Timings struct {
	// ImagesBuilt: binaries built and image tarballs written.
	ImagesBuilt time.Duration
	// ContainerdUp: containerd answering on its socket.
	ContainerdUp time.Duration
	// ControlPlaneUp: etcd and kube-apiserver serving, admin kubeconfig
	// written, kube-controller-manager and kube-scheduler started.
	ControlPlaneUp time.Duration
	// KubeletStarted: the kubelet process started.
	KubeletStarted time.Duration
	// ImagesImported: the images imported into containerd.
	ImagesImported time.Duration
	// NodeReady: the Node reports Ready.
	NodeReady time.Duration
	// Total: Start returned (the default ServiceAccount exists too).
	Total time.Duration
}

func (t Timings) String() string {
	r := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	return fmt.Sprintf("images built %s, containerd up %s, control plane up %s, kubelet started %s, images imported %s, node Ready %s, total %s",
		r(t.ImagesBuilt), r(t.ContainerdUp), r(t.ControlPlaneUp), r(t.KubeletStarted), r(t.ImagesImported), r(t.NodeReady), r(t.Total))
}

// Cluster is a running one-node cluster.
type Cluster struct {
	// Dir is this run's directory: configs, logs, containerd's and the
	// kubelet's state. Stop removes it.
	Dir string
	// Kubeconfig is the path of an admin (system:masters) kubeconfig.
	Kubeconfig string
	// Config is an admin REST config.
	Config *rest.Config
	// Client is an admin controller-runtime client with client-go's scheme.
	Client client.Client
	// Clientset is an admin client-go clientset (logs, subresources).
	Clientset kubernetes.Interface
	// Env is the running envtest environment (etcd and kube-apiserver).
	Env *envtest.Environment
	// NodeName is the Node's name: its IP, so that the API server reaches
	// the kubelet for logs and exec without a DNS lookup.
	NodeName string
	// NodeIP is the bridge's address: the node's InternalIP, and the
	// address the host uses to reach pods.
	NodeIP netip.Addr
	// Subnet is the pod subnet on the bridge.
	Subnet netip.Prefix
	// Bridge is the bridge's name.
	Bridge string
	// BinDir holds the binaries built for the images: injector,
	// pilot-agent, testapp, pause.
	BinDir string
	// K8sBinDir holds the Kubernetes binaries (kubectl among them).
	K8sBinDir string
	// Timings are Start's phase durations.
	Timings Timings

	opts       Options
	state      *runState
	lock       *os.File
	socket     string
	procs      map[string]*testenv.Process
	procsMu    sync.Mutex
	stopOnce   sync.Once
	stopErr    error
	failed     bool
	containerd int // major version
}

// Start brings the node up; see the package documentation. On error
// everything started so far is already stopped and removed. The caller must
// call Stop (StartForTest registers it with t.Cleanup).
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	t0 := time.Now()
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := Check(opts); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	logf := opts.Logf

	lock, err := acquireLock(ctx, filepath.Join(opts.BaseDir, "lock"), opts.LockTimeout, logf)
	if err != nil {
		return nil, err
	}
	sweepStale(opts.BaseDir, logf)

	id := make([]byte, 3)
	_, _ = rand.Read(id)
	dir := filepath.Join(opts.BaseDir, fmt.Sprintf("r%d-%s", os.Getpid(), hex.EncodeToString(id)))
	nodeIP := opts.Subnet.Addr().Next()
	c := &Cluster{
		Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig"), NodeName: nodeIP.String(), NodeIP: nodeIP,
		Subnet: opts.Subnet, Bridge: opts.Bridge, BinDir: filepath.Join(dir, "bin"), K8sBinDir: opts.K8sBinDir,
		opts: opts, lock: lock, socket: filepath.Join(dir, "run", "containerd.sock"), procs: map[string]*testenv.Process{},
	}
	defer func() {
		if err != nil {
			logf("node: start failed: %v", err)
			c.failed = true
			if stopErr := c.Stop(); stopErr != nil {
				err = errors.Join(err, fmt.Errorf("stop after failed start: %w", stopErr))
			}
		}
	}()
	if c.state, err = newRunState(c); err != nil {
		return c, err
	}
	if err := c.prepareHost(); err != nil {
		return c, err
	}

	// The builds, containerd and the control plane do not depend on each
	// other: start them together.
	var (
		wg                       sync.WaitGroup
		buildErr, ctrdErr, cpErr error
		tarball                  string
	)
	wg.Add(3)
	go func() {
		defer wg.Done()
		tarball, buildErr = c.buildImages(ctx)
		c.Timings.ImagesBuilt = time.Since(t0)
		logf("node: images built in %s", c.Timings.ImagesBuilt.Round(time.Millisecond))
	}()
	go func() {
		defer wg.Done()
		ctrdErr = c.startContainerd(ctx)
		c.Timings.ContainerdUp = time.Since(t0)
		logf("node: containerd up at %s", c.Timings.ContainerdUp.Round(time.Millisecond))
	}()
	go func() {
		defer wg.Done()
		cpErr = c.startControlPlane(ctx)
		c.Timings.ControlPlaneUp = time.Since(t0)
		logf("node: control plane up at %s", c.Timings.ControlPlaneUp.Round(time.Millisecond))
	}()
	wg.Wait()
	if err := errors.Join(ctrdErr, cpErr, buildErr); err != nil {
		return c, err
	}

	// The kubelet registers the node while the images are imported: a Ready
	// node needs no image.
	if err := c.startKubelet(); err != nil {
		return c, err
	}
	c.Timings.KubeletStarted = time.Since(t0)
	importErr := make(chan error, 1)
	go func() {
		importErr <- c.importImages(ctx, tarball)
		c.Timings.ImagesImported = time.Since(t0)
	}()
	if err := c.waitNodeReady(ctx); err != nil {
		return c, errors.Join(err, <-importErr)
	}
	c.Timings.NodeReady = time.Since(t0)
	if err := <-importErr; err != nil {
		return c, err
	}
	// The ServiceAccount admission plugin rejects pods until the namespace's
	// default ServiceAccount exists.
	if err := c.waitServiceAccount(ctx, metav1.NamespaceDefault); err != nil {
		return c, err
	}
	c.Timings.Total = time.Since(t0)
	logf("node: %s Ready: %s", c.NodeName, c.Timings)
	return c, nil
}

// Cleanup removes what runs killed before they could stop left on the host
// (Start does the same before it starts a node). It waits for a running node
// to stop first.
func Cleanup(ctx context.Context, opts Options) error {
	if err := opts.setDefaults(); err != nil {
		return err
	}
	if _, err := os.Stat(opts.BaseDir); os.IsNotExist(err) {
		return nil
	}
	lock, err := acquireLock(ctx, filepath.Join(opts.BaseDir, "lock"), opts.LockTimeout, opts.Logf)
	if err != nil {
		return err
	}
	sweepStale(opts.BaseDir, opts.Logf)
	releaseLock(lock, opts.BaseDir)
	return nil
}

// SetFailed makes Stop save the logs and a dump of the cluster to
// Options.ArtifactsDir before it tears down.
func (c *Cluster) SetFailed() { c.failed = true }

// Stop stops the node and removes everything it made on the host: pods are
// deleted while the kubelet still runs (so their network and mounts are torn
// down normally), then every process, container, mount, network namespace,
// cgroup, the bridge, the host paths containerd and the kubelet hard-code,
// and Dir. It is safe to call more than once and after a failed Start.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var errs []error
		if c.failed && c.opts.ArtifactsDir != "" {
			if err := c.saveArtifacts(ctx, c.opts.ArtifactsDir); err != nil {
				errs = append(errs, fmt.Errorf("save artifacts: %w", err))
			}
		}
		c.stopGracefully(ctx)
		if c.state != nil {
			errs = append(errs, teardown(c.state, c.opts.Logf)...)
		}
		if c.lock != nil {
			releaseLock(c.lock, c.opts.BaseDir)
		}
		c.stopErr = errors.Join(errs...)
		c.opts.Logf("node: stopped in %s (errors: %v)", time.Since(t0).Round(time.Millisecond), c.stopErr)
	})
	return c.stopErr
}

// stopGracefully deletes every pod while the kubelet runs and then stops the
// processes in order: the controller manager first (nothing recreates pods),
// the kubelet, the scheduler, the API server and etcd, containerd last.
func (c *Cluster) stopGracefully(ctx context.Context) {
	logf := c.opts.Logf
	c.stopProc("kube-controller-manager", 10*time.Second)
	if c.Clientset != nil && c.procRunning("kubelet") {
		t0 := time.Now()
		if err := c.deleteAllPods(ctx, time.Minute); err != nil {
			logf("node: deleting pods: %v", err)
		}
		if err := c.waitNoTasks(ctx, 30*time.Second); err != nil {
			logf("node: waiting for containers to stop: %v", err)
		}
		logf("node: pods deleted in %s", time.Since(t0).Round(time.Millisecond))
	}
	c.stopProc("kubelet", 15*time.Second)
	c.stopProc("kube-scheduler", 10*time.Second)
	if c.Env != nil {
		if err := c.Env.Stop(); err != nil {
			logf("node: stopping the control plane: %v", err)
		}
	}
	c.stopProc("containerd", 15*time.Second)
}

func (c *Cluster) deleteAllPods(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pods, err := c.Clientset.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	grace := int64(2)
	for _, p := range pods.Items {
		err := c.Clientset.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Clientset.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // retry until the timeout
		}
		return len(pods.Items) == 0, nil
	})
}

func (c *Cluster) waitNodeReady(ctx context.Context) error {
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if !c.procRunning("kubelet") {
			return false, fmt.Errorf("the kubelet exited: %s", c.logTail("kubelet", 15))
		}
		var n corev1.Node
		if err := c.Client.Get(ctx, client.ObjectKey{Name: c.NodeName}, &n); err != nil {
			return false, nil //nolint:nilerr // not registered yet
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready: %w; kubelet log: %s", c.NodeName, err, c.logTail("kubelet", 15))
	}
	return nil
}

func (c *Cluster) waitServiceAccount(ctx context.Context, namespace string) error {
	return wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var sa corev1.ServiceAccount
		err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "default"}, &sa)
		return err == nil, nil
	})
}

// newClients fills Config, Client and Clientset from the admin REST config.
func (c *Cluster) newClients(cfg *rest.Config) error {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 200, 400
	cl, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	c.Config, c.Client, c.Clientset = cfg, cl, cs
	return nil
}
