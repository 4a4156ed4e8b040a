package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/remora-mesh/remora/internal/ociimage"
)

// goTool returns the go command: the one in PATH, else $GOROOT/bin/go.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}

// buildImages builds the static binaries from the module and writes every
// test image into one OCI layout tarball, which it returns.
func (c *Cluster) buildImages(ctx context.Context) (string, error) {
	if err := os.MkdirAll(c.BinDir, 0o750); err != nil {
		return "", err
	}
	// G204: go build of our own packages.
	cmd := exec.CommandContext(ctx, goTool(), "build", "-ldflags=-s -w", "-o", c.BinDir+"/", //nolint:gosec
		"./cmd/injector", "./test/images/pilot-agent", "./test/images/testapp", "./test/images/pause")
	cmd.Dir = c.opts.RepoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build (in %s): %w\n%s", cmd.Dir, err, out)
	}
	bin := func(name string) string { return filepath.Join(c.BinDir, name) }
	for _, name := range []string{"injector", "pilot-agent", "testapp", "pause"} {
		if _, err := os.Stat(bin(name)); err != nil {
			entries, _ := os.ReadDir(c.BinDir)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			return "", fmt.Errorf("go build wrote no %s (is its package a main package right now?): %w; %s holds %v", name, err, c.BinDir, names)
		}
	}

	initImage, err := InitImage(InjectorImage, bin("injector"))
	if err != nil {
		return "", err
	}

	proxy, err := proxyImage(ProxyImage, bin("pilot-agent"), nil)
	if err != nil {
		return "", err
	}

	app := ociimage.New(AppImage)
	app.Entrypoint = []string{"/usr/local/bin/testapp"}
	app.Cmd = []string{"server"}
	if err := app.AddFile(bin("testapp"), "/usr/local/bin/testapp", 0o755); err != nil {
		return "", err
	}

	pause := ociimage.New(PauseImage)
	pause.Entrypoint = []string{"/pause"}
	pause.User = "65535:65535"
	if err := pause.AddFile(bin("pause"), "/pause", 0o755); err != nil {
		return "", err
	}

	tarball := filepath.Join(c.Dir, "images", "images.tar")
	if err := os.MkdirAll(filepath.Dir(tarball), 0o750); err != nil {
		return "", err
	}
	images := append([]*ociimage.Image{initImage, proxy, app, pause}, c.opts.ExtraImages...)
	if err := ociimage.WriteFile(tarball, images...); err != nil {
		return "", fmt.Errorf("write images: %w", err)
	}
	return tarball, nil
}

// InitImage returns the istio-init image: the injector binary at
// /usr/local/bin/injector (entrypoint, default command serve, user 65532, as
// in the Dockerfile) and the host's iptables, ip6tables (their -save and
// -restore forms, through the same /etc/alternatives links, with every
// xtables extension) and ip, each with the shared libraries ldd lists.
func InitImage(name, injector string) (*ociimage.Image, error) {
	im := ociimage.New(name)
	im.Entrypoint = []string{"/usr/local/bin/injector"}
	im.Cmd = []string{"serve"}
	im.User = "65532:65532"
	if err := im.AddFile(injector, "/usr/local/bin/injector", 0o755); err != nil {
		return nil, err
	}
	for _, tool := range []string{"iptables", "iptables-save", "iptables-restore",
		"ip6tables", "ip6tables-save", "ip6tables-restore", "ip"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			return nil, fmt.Errorf("the init image needs the host's %s: %w", tool, err)
		}
		if err := im.AddHostBinary(p); err != nil {
			return nil, err
		}
	}
	// iptables loads its match and target extensions (libxt_owner.so,
	// libxt_REDIRECT.so, ...) at run time from its compiled-in directory.
	exts, _ := filepath.Glob("/usr/lib/*/xtables/*.so")
	more, _ := filepath.Glob("/usr/lib*/xtables/*.so")
	exts = append(exts, more...)
	if len(exts) == 0 {
		return nil, fmt.Errorf("no xtables extensions found under /usr/lib")
	}
	for _, ext := range exts {
		if err := im.AddHostBinary(ext); err != nil {
			return nil, err
		}
	}
	for _, f := range []string{"/etc/protocols", "/etc/services", "/etc/ethertypes"} {
		if _, err := os.Stat(f); err == nil {
			if _, err := im.AddHostPath(f); err != nil {
				return nil, err
			}
		}
	}
	// The legacy backend takes its lock in /run.
	if err := im.AddDir("/run", 0o755); err != nil {
		return nil, err
	}
	return im, nil
}

// proxyImage returns the stand-in proxy image: pilot-agent at
// /usr/local/bin/pilot-agent (entrypoint), Istio's proxy UID 1337, and labels.
func proxyImage(name, pilotAgent string, labels map[string]string) (*ociimage.Image, error) {
	proxy := ociimage.New(name)
	proxy.Entrypoint = []string{"/usr/local/bin/pilot-agent"}
	proxy.User = "1337:1337" // Istio's proxy UID; the capture rules let its traffic out
	proxy.Labels = labels
	if err := proxy.AddFile(pilotAgent, "/usr/local/bin/pilot-agent", 0o755); err != nil {
		return nil, err
	}
	return proxy, nil
}

// ProxyRelease returns the stand-in proxy the node built (ProxyImage's
// binary) as another image: name, with labels that give it an image ID of
// its own, such as a "new proxy release" for an upgrade. Import it with
// LoadImages.
func (c *Cluster) ProxyRelease(name string, labels map[string]string) (*ociimage.Image, error) {
	return proxyImage(name, filepath.Join(c.BinDir, "pilot-agent"), labels)
}

// LoadImages writes images into one OCI tarball in the run directory and
// imports it into the node's containerd, for images made after Start
// (Options.ExtraImages are imported by Start).
func (c *Cluster) LoadImages(ctx context.Context, images ...*ociimage.Image) error {
	dir := filepath.Join(c.Dir, "images")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "extra-*.tar")
	if err != nil {
		return err
	}
	tarball := f.Name()
	_ = f.Close()
	if err := ociimage.WriteFile(tarball, images...); err != nil {
		return fmt.Errorf("write images: %w", err)
	}
	if _, err := c.ctr(ctx, "images", "import", tarball); err != nil {
		return err
	}
	out, err := c.ctr(ctx, "images", "ls", "-q")
	if err != nil {
		return err
	}
	for _, im := range images {
		if !strings.Contains(out, im.Name+"\n") {
			return fmt.Errorf("image %s missing after import; have:\n%s", im.Name, out)
		}
	}
	return nil
}
