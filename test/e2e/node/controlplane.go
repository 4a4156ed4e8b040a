package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// startControlPlane starts etcd and kube-apiserver through envtest, writes
// the admin kubeconfig, and starts kube-controller-manager and
// kube-scheduler.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	cpDir := filepath.Join(c.Dir, "controlplane")
	logDir := filepath.Join(c.Dir, "logs")
	for _, d := range []string{cpDir, logDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	env := c.opts.Environment
	if env == nil {
		env = &envtest.Environment{}
	}
	env.BinaryAssetsDirectory = c.K8sBinDir
	if env.ControlPlaneStartTimeout == 0 {
		env.ControlPlaneStartTimeout = 2 * time.Minute
	}
	if env.ControlPlaneStopTimeout == 0 {
		env.ControlPlaneStopTimeout = time.Minute
	}
	openLog := func(name string) (*os.File, error) {
		return os.OpenFile(filepath.Join(logDir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) //nolint:gosec // G304: a log in the run directory
	}
	etcdLog, err := openLog("etcd.log")
	if err != nil {
		return err
	}
	apiLog, err := openLog("kube-apiserver.log")
	if err != nil {
		return err
	}
	// Their data and certificates under Dir: the command lines name Dir, so a
	// crashed run's etcd and API server are found and stopped by the next
	// Start.
	if env.ControlPlane.Etcd == nil {
		env.ControlPlane.Etcd = &envtest.Etcd{}
	}
	for _, d := range []string{"etcd", "apiserver"} {
		if err := os.MkdirAll(filepath.Join(cpDir, d), 0o700); err != nil {
			return err
		}
	}
	env.ControlPlane.Etcd.DataDir = filepath.Join(cpDir, "etcd")
	env.ControlPlane.Etcd.Out, env.ControlPlane.Etcd.Err = etcdLog, etcdLog
	api := env.ControlPlane.GetAPIServer()
	api.CertDir = filepath.Join(cpDir, "apiserver")
	if c.opts.APIServerOnNodeIP {
		// The secure serving address (api.SecureServing): envtest puts it
		// in the serving certificate and the kubeconfigs it writes.
		port, err := freePort(c.NodeIP)
		if err != nil {
			return fmt.Errorf("a port for the API server on %s: %w", c.NodeIP, err)
		}
		api.Address = c.NodeIP.String()
		api.Port = strconv.Itoa(port)
	}
	api.Out, api.Err = apiLog, apiLog
	args := api.Configure()
	// envtest disables the ServiceAccount admission plugin because it runs
	// no controller manager. This cluster does, and real pods need it: it
	// sets spec.serviceAccountName (the kubelet requests the injected
	// istio-token for that account) and mounts the API access token.
	args.Disable("disable-admission-plugins")
	// Reach the kubelet at its InternalIP (the bridge address) whatever the
	// node is named.
	args.Set("kubelet-preferred-address-types", "InternalIP")
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("start etcd and kube-apiserver: %w", err)
	}
	c.Env = env
	if err := c.newClients(cfg); err != nil {
		return err
	}
	user, err := env.AddUser(envtest.User{Name: "remora-e2e-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("add admin user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.Kubeconfig, kubeconfig, 0o600); err != nil {
		return err
	}
	caFile := filepath.Join(cpDir, "ca.crt")
	if err := os.WriteFile(caFile, cfg.CAData, 0o600); err != nil {
		return err
	}

	bin := func(name string) string { return filepath.Join(c.K8sBinDir, name) }
	if _, err := c.startProc("kube-controller-manager", bin("kube-controller-manager"),
		"--kubeconfig="+c.Kubeconfig,
		"--leader-elect=false",
		// No serving port: nothing listens.
		"--bind-address=127.0.0.1", "--secure-port=0",
		// The legacy token controller needs the service-account signing key;
		// pods get bound tokens from the API server's TokenRequest instead.
		"--controllers=*,-serviceaccount-token",
		// Published in every namespace as the kube-root-ca.crt ConfigMap,
		// which the ServiceAccount token volume mounts.
		"--root-ca-file="+caFile,
	); err != nil {
		return err
	}
	if _, err := c.startProc("kube-scheduler", bin("kube-scheduler"),
		"--kubeconfig="+c.Kubeconfig,
		"--authentication-kubeconfig="+c.Kubeconfig,
		"--authorization-kubeconfig="+c.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=0",
	); err != nil {
		return err
	}
	return ctx.Err()
}

// freePort returns a TCP port free on addr right now.
func freePort(addr netip.Addr) (int, error) {
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// APIServerEnv returns the environment variables that point in-cluster
// clients of a pod at the API server (client-go's rest.InClusterConfig reads
// them), for a node started with Options.APIServerOnNodeIP: the kubelet sets
// them to the kubernetes Service's ClusterIP, which nothing routes on this
// node, and a container's own variables take precedence.
func (c *Cluster) APIServerEnv() (map[string]string, error) {
	u, err := url.Parse(c.Config.Host)
	if err != nil {
		return nil, fmt.Errorf("the API server's URL %q: %w", c.Config.Host, err)
	}
	if !c.opts.APIServerOnNodeIP || u.Hostname() != c.NodeIP.String() {
		return nil, fmt.Errorf("the API server listens on %s, not on the node IP: start the node with Options.APIServerOnNodeIP", u.Host)
	}
	return map[string]string{"KUBERNETES_SERVICE_HOST": u.Hostname(), "KUBERNETES_SERVICE_PORT": u.Port()}, nil
}
