package framework

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/remora-mesh/remora/internal/testenv"
)

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	// Assets is the directory with etcd, kube-apiserver and
	// kube-controller-manager (KUBEBUILDER_ASSETS).
	Assets string
	// Dir receives kubeconfigs and logs.
	Dir string
	// ControllerManager also runs kube-controller-manager, so that
	// Deployments, Jobs and CronJobs create pods.
	ControllerManager bool
	// AdminKubeconfig is where the admin kubeconfig is written
	// (default Dir/admin.kubeconfig).
	AdminKubeconfig string
	// DualStackServices gives Services cluster IPs of both families
	// (DualStackServiceCIDRs): a dual-stack Service gets one of each.
	DualStackServices bool
}

// DualStackServiceCIDRs are the API server's --service-cluster-ip-range with
// ClusterOptions.DualStackServices: IPv4 first, as envtest's default.
const DualStackServiceCIDRs = "10.0.0.0/24,fd00:10:96::/112"

// Cluster is a running control plane.
type Cluster struct {
	// Env is the envtest environment (etcd and kube-apiserver).
	Env *envtest.Environment
	// Config is an admin REST config, without client-side rate limits.
	Config *rest.Config
	// Client is an admin client.
	Client client.Client
	// AdminKubeconfig is the path of an admin kubeconfig file.
	AdminKubeconfig string
	// ControllerManager is the kube-controller-manager process, if started.
	ControllerManager *testenv.Process

	opts ClusterOptions
}

// StartCluster starts etcd and kube-apiserver, writes an admin kubeconfig
// and, if asked, starts kube-controller-manager.
func StartCluster(opts ClusterOptions) (_ *Cluster, err error) {
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(opts.Assets, bin)); err != nil {
			return nil, fmt.Errorf("control-plane binary missing (build them with the k8sbins recipe, or set KUBEBUILDER_ASSETS): %w", err)
		}
	}
	env := &envtest.Environment{BinaryAssetsDirectory: opts.Assets}
	// envtest disables the ServiceAccount admission plugin; a real cluster
	// runs it, and injected pods depend on it (the proxy's istio-token
	// volume needs the serviceAccountName it defaults). CreateNamespace
	// creates the "default" ServiceAccount the plugin requires.
	env.ControlPlane.GetAPIServer().Configure().Disable("disable-admission-plugins")
	if opts.DualStackServices {
		env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", DualStackServiceCIDRs)
	}
	if _, err := env.Start(); err != nil {
		return nil, fmt.Errorf("starting etcd and kube-apiserver: %w", err)
	}
	c := &Cluster{Env: env, opts: opts}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	if opts.AdminKubeconfig == "" {
		opts.AdminKubeconfig = filepath.Join(opts.Dir, "admin.kubeconfig")
	}
	if c.AdminKubeconfig, err = c.WriteKubeconfig("admin", opts.AdminKubeconfig); err != nil {
		return nil, err
	}
	c.Config = rest.CopyConfig(env.Config)
	c.Config.QPS, c.Config.Burst = -1, 0 // no client-side throttling in tests
	if c.Client, err = client.New(c.Config, client.Options{Scheme: scheme.Scheme}); err != nil {
		return nil, fmt.Errorf("creating the admin client: %w", err)
	}
	if opts.ControllerManager {
		if err := c.startControllerManager(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// WriteKubeconfig provisions a system:masters user and writes a kubeconfig
// for it to path.
func (c *Cluster) WriteKubeconfig(user, path string) (string, error) {
	u, err := c.Env.AddUser(envtest.User{Name: user, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("adding user %s: %w", user, err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("kubeconfig of %s: %w", user, err)
	}
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		return "", fmt.Errorf("writing the kubeconfig of %s: %w", user, err)
	}
	return path, nil
}

// startControllerManager runs kube-controller-manager against the API
// server: every controller except the service-account token controller,
// which needs a signing key envtest does not hand out.
func (c *Cluster) startControllerManager() error {
	kubeconfig, err := c.WriteKubeconfig("kube-controller-manager", filepath.Join(c.opts.Dir, "kcm.kubeconfig"))
	if err != nil {
		return err
	}
	c.ControllerManager, err = testenv.StartProcess("kube-controller-manager", filepath.Join(c.opts.Dir, "kube-controller-manager.log"),
		filepath.Join(c.opts.Assets, "kube-controller-manager"),
		"--kubeconfig="+kubeconfig, "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
		"--controllers=*,-serviceaccount-token")
	if err != nil {
		return err
	}
	// Ready once the service-account controller has created "default"'s
	// ServiceAccount: the controllers are then running.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if exited, err := c.ControllerManager.Exited(); exited {
			return false, fmt.Errorf("kube-controller-manager exited: %w\n%s", err, c.ControllerManager.LogTail(30))
		}
		err := c.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, client.IgnoreNotFound(err)
	})
	if err != nil {
		return fmt.Errorf("waiting for kube-controller-manager: %w", err)
	}
	return nil
}

// CreateNamespace creates a namespace with labels (testenv.EnsureNamespace),
// and its "default" ServiceAccount at once rather than waiting for
// kube-controller-manager to, so that pods can be created in it straight
// away.
func (c *Cluster) CreateNamespace(ctx context.Context, name string, labels map[string]string) error {
	if err := testenv.EnsureNamespace(ctx, c.Client, name, labels); err != nil {
		return err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name}}
	if err := c.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the default ServiceAccount of %s: %w", name, err)
	}
	return nil
}

// Stop stops kube-controller-manager, kube-apiserver and etcd.
func (c *Cluster) Stop() error {
	var errs []error
	if c.ControllerManager != nil {
		if err := c.ControllerManager.Stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.Env.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("stopping the control plane: %w", err))
	}
	return errors.Join(errs...)
}
