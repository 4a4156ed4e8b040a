package node

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"
)

//go:embed config/*.tmpl
var configFS embed.FS

var templates = template.Must(template.ParseFS(configFS, "config/*.tmpl"))

// render writes the named config template to path.
func render(name, path string, data any, mode os.FileMode) error {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, data); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), mode)
}

// containerdMajor returns the major version of the containerd in PATH.
func containerdMajor() (int, error) {
	out, err := exec.Command("containerd", "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("containerd --version: %w", err)
	}
	// "containerd github.com/containerd/containerd 1.6.20~ds1 ..." or "... v2.1.4 ..."
	m := regexp.MustCompile(`\sv?(\d+)\.\d+`).FindStringSubmatch(string(out))
	if m == nil {
		return 0, fmt.Errorf("containerd --version: cannot parse %q", out)
	}
	return strconv.Atoi(m[1])
}

// startContainerd writes the CNI and containerd configs and starts
// containerd on its own socket.
func (c *Cluster) startContainerd(ctx context.Context) error {
	major, err := containerdMajor()
	if err != nil {
		return err
	}
	c.containerd = major
	tmpl := "containerd.toml.tmpl"
	if major >= 2 {
		tmpl = "containerd2.toml.tmpl"
	}
	data := map[string]any{"Dir": c.Dir, "Socket": c.socket, "PauseImage": PauseImage, "CNIBinDir": c.opts.CNIBinDir}
	cfg := filepath.Join(c.Dir, "containerd", "config.toml")
	if err := render(tmpl, cfg, data, 0o600); err != nil {
		return err
	}
	// Pod addresses from .10 up; the node has .1. No routes: pods reach the
	// bridge subnet and nothing else.
	start := c.Subnet.Addr()
	for range 10 {
		start = start.Next()
	}
	end := lastAddr(c.Subnet).Prev()
	if err := render("cni.conflist.tmpl", filepath.Join(c.Dir, "cni", "net.d", "10-remora-e2e.conflist"), map[string]any{
		"Network": c.state.Network, "Bridge": c.Bridge, "Dir": c.Dir, "Subnet": c.Subnet.String(),
		"RangeStart": start.String(), "RangeEnd": end.String(), "NodeIP": c.NodeIP.String(),
	}, 0o600); err != nil {
		return err
	}
	for _, d := range []string{"run", "cni/ipam"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o750); err != nil {
			return err
		}
	}
	if _, err := c.startProc("containerd", "containerd", "--config", cfg); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.ctr(ctx, "version"); err == nil {
			return nil
		}
		if !c.procRunning("containerd") {
			return fmt.Errorf("containerd exited: %s", c.logTail("containerd", 15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not answering on %s: %s", c.socket, c.logTail("containerd", 15))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lastAddr is the broadcast address of p (IPv4).
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	for i := range a {
		switch netBits := p.Bits() - 8*i; {
		case netBits <= 0:
			a[i] = 0xff
		case netBits < 8:
			a[i] |= 0xff >> netBits
		}
	}
	return netip.AddrFrom4(a)
}

// ctr runs ctr against the node's containerd, in the CRI's namespace.
func (c *Cluster) ctr(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.socket, "--namespace", "k8s.io"}, args...)...) //nolint:gosec // G204: ctr against the node's containerd
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// importImages imports the OCI tarball into containerd's k8s.io namespace,
// where the CRI (and so the kubelet) finds the images.
func (c *Cluster) importImages(ctx context.Context, tarball string) error {
	if _, err := c.ctr(ctx, "images", "import", tarball); err != nil {
		return err
	}
	out, err := c.ctr(ctx, "images", "ls", "-q")
	if err != nil {
		return err
	}
	for _, want := range []string{InjectorImage, ProxyImage, AppImage, PauseImage} {
		if !strings.Contains(out, want+"\n") {
			return fmt.Errorf("image %s missing after import; have:\n%s", want, out)
		}
	}
	return nil
}

// waitNoTasks waits until containerd runs no container any more.
func (c *Cluster) waitNoTasks(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := c.ctr(ctx, "tasks", "ls", "-q")
		if err == nil && strings.TrimSpace(out) == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tasks still running after %s: %s", timeout, strings.Fields(out))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// kubeletSysctls are the kernel tunables the kubelet sets when they differ
// (pkg/kubelet/cm setupKernelTunables), with the values it wants.
var kubeletSysctls = []struct{ Name, Path, Value string }{
	{"vm.overcommit_memory", "vm/overcommit_memory", "1"},
	{"vm.panic_on_oom", "vm/panic_on_oom", "0"},
	{"kernel.panic", "kernel/panic", "10"},
	{"kernel.panic_on_oops", "kernel/panic_on_oops", "1"},
	{"kernel.keys.root_maxkeys", "kernel/keys/root_maxkeys", "1000000"},
	{"kernel.keys.root_maxbytes", "kernel/keys/root_maxbytes", "25000000"},
}

// startKubelet writes the kubelet's config and wrapper and starts it in a
// mount namespace of its own (see kubelet.sh.tmpl).
func (c *Cluster) startKubelet() error {
	data := map[string]any{"Dir": c.Dir, "Socket": c.socket, "NodeIP": c.NodeIP.String(),
		"Kubelet": filepath.Join(c.K8sBinDir, "kubelet"), "Sysctls": kubeletSysctls}
	for _, s := range kubeletSysctls {
		if err := os.MkdirAll(filepath.Join(c.Dir, "sysctl"), 0o750); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(c.Dir, "sysctl", s.Name), []byte(s.Value+"\n"), 0o400); err != nil {
			return err
		}
	}
	cfg := filepath.Join(c.Dir, "kubelet.yaml")
	if err := render("kubelet.yaml.tmpl", cfg, data, 0o600); err != nil {
		return err
	}
	wrapper := filepath.Join(c.Dir, "kubelet.sh")
	if err := render("kubelet.sh.tmpl", wrapper, data, 0o700); err != nil {
		return err
	}
	for _, d := range []string{"kubelet/pki", "podlogs"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o750); err != nil {
			return err
		}
	}
	_, err := c.startProc("kubelet", "unshare", "--mount", "--propagation", "unchanged", "--", wrapper,
		"--config="+cfg,
		"--kubeconfig="+c.Kubeconfig,
		"--root-dir="+filepath.Join(c.Dir, "kubelet"),
		"--cert-dir="+filepath.Join(c.Dir, "kubelet", "pki"),
		// The node is named after its IP: the API server then reaches the
		// kubelet (logs, exec, port-forward) without resolving a host name
		// through the machine's DNS.
		"--hostname-override="+c.NodeName,
		"--node-ip="+c.NodeIP.String(),
		"--v=2")
	return err
}
