package realpods_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/internal/ociimage"
	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
	"github.com/remora-mesh/remora/test/e2e/node"
)

const (
	// ownNamespace is the injector's namespace (--namespace), excluded by
	// the webhook configuration like the system namespaces.
	ownNamespace = "remora-system"
	// probeNamespace is labelled for injection; the dry-run pods that tell
	// whether the webhook serves a configuration go there (nothing runs).
	probeNamespace = "realpods-probe"
	// webhookConfigName names the MutatingWebhookConfiguration.
	webhookConfigName = "remora-injector"

	// proxyImageV2 is the stand-in proxy again under a second name, with a
	// label that gives it an image ID of its own: the "new proxy release"
	// of the upgrade scenario.
	proxyImageV2 = node.ImageHub + "/proxyv2:test2"
)

// suite is what the tests share; TestMain builds it once.
var suite struct {
	// skip says why the tests skip (node.Wanted); err why they cannot run.
	skip string
	err  error

	cluster   *node.Cluster
	injector  *framework.Injector
	dir       string // our files, inside the node's run directory
	configDir string // the injector's --config-dir
	artifacts string
}

// cluster returns the shared cluster, skipping or failing the test the way
// node.Require does when there is none.
func cluster(t *testing.T) *node.Cluster {
	t.Helper()
	if suite.skip != "" {
		testenv.Skip(t, suite.skip)
	}
	if suite.err != nil {
		t.Fatal(suite.err)
	}
	return suite.cluster
}

func logf(format string, args ...any) {
	fmt.Printf("%s realpods: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if ok, why := node.Wanted(); !ok {
		suite.skip = why
		return m.Run()
	}
	opts := node.Options{Logf: logf}
	if root, err := testenv.RepoRoot(); err == nil {
		suite.artifacts = filepath.Join(root, "test", "e2e", "_artifacts", "realpods")
		opts.ArtifactsDir = suite.artifacts
	}
	if err := node.Check(opts); err != nil {
		// Wanted but impossible (CI=true on a machine without containerd):
		// every test fails rather than passing vacuously.
		suite.err = err
		return m.Run()
	}
	return node.RunCheckingHost("realpods", os.Getenv("REMORA_NODE_DIR"), func() int { return runOnNode(m, opts) }, logf)
}

func runOnNode(m *testing.M, opts node.Options) int {
	start := time.Now()
	if err := setUp(opts); err != nil {
		suite.err = fmt.Errorf("setting up the real-pod suite: %w", err)
		logf("%v", suite.err)
	} else {
		logf("node, injector and webhook ready in %s", time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	if err := tearDown(code != 0 || suite.err != nil); err != nil {
		fmt.Fprintln(os.Stderr, "realpods:", err)
		code = 1
	}
	return code
}

// setUp starts the node (with the second proxy image), `injector serve`
// against its API server with a certificate for 127.0.0.1, and registers
// the chart's webhook configuration pointing at it.
func setUp(opts node.Options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	buildDir, err := os.MkdirTemp("", "remora-realpods-")
	if err != nil {
		return err
	}
	// Start has written the images by the time it returns.
	defer func() { _ = os.RemoveAll(buildDir) }()
	v2, err := proxyV2(ctx, root, buildDir)
	if err != nil {
		return err
	}
	opts.ExtraImages = append(opts.ExtraImages, v2)
	c, err := node.Start(ctx, opts)
	if err != nil {
		return err // Start has stopped what it started
	}
	suite.cluster = c
	logf("node %s Ready: %s", c.NodeName, c.Timings)

	suite.dir = filepath.Join(c.Dir, "realpods")
	suite.configDir = filepath.Join(suite.dir, "config")
	certDir := filepath.Join(suite.dir, "certs")
	ca, err := framework.NewCA()
	if err != nil {
		return err
	}
	cert, err := ca.Issue() // for 127.0.0.1: the API server calls the webhook there
	if err != nil {
		return err
	}
	if err := framework.WriteAtomically(certDir, cert.ServingFiles()); err != nil {
		return err
	}
	if err := writeConfig(); err != nil {
		return err
	}
	// The framework's helpers work on any envtest control plane.
	fw := &framework.Cluster{Env: c.Env, Config: c.Config, Client: c.Client, AdminKubeconfig: c.Kubeconfig}
	kubeconfig, err := fw.WriteKubeconfig("remora-injector", filepath.Join(suite.dir, "injector.kubeconfig"))
	if err != nil {
		return err
	}
	suite.injector, err = framework.StartInjector(ctx, framework.InjectorOptions{
		Binary:     filepath.Join(c.BinDir, "injector"), // the binary the node built for the init image
		Kubeconfig: kubeconfig,
		CertDir:    certDir,
		ConfigDir:  suite.configDir,
		Namespace:  ownNamespace,
		LogPath:    filepath.Join(suite.dir, "injector.log"),
		// Pods may exclude Services by name (TestExcludedServiceRecreated).
		ExtraArgs: []string{"--exclude-services"},
	})
	if err != nil {
		return err
	}
	if err := c.CreateNamespace(ctx, probeNamespace, map[string]string{"istio-injection": "enabled"}); err != nil {
		return err
	}
	return fw.InstallWebhook(ctx, framework.WebhookConfiguration(framework.WebhookOptions{
		Name:         webhookConfigName,
		NamespaceURL: suite.injector.WebhookURL("/inject"),
		RevisionURL:  suite.injector.WebhookURL("/inject/cluster/Kubernetes/net/network1"),
		CABundle:     ca.PEM(),
		OwnNamespace: ownNamespace,
	}), probeNamespace)
}

// proxyV2 builds the stand-in proxy and returns it as proxyImageV2.
func proxyV2(ctx context.Context, root, dir string) (*ociimage.Image, error) {
	goCmd := "go"
	if _, err := exec.LookPath(goCmd); err != nil && os.Getenv("GOROOT") != "" {
		goCmd = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	bin := filepath.Join(dir, "pilot-agent")
	cmd := exec.CommandContext(ctx, goCmd, "build", "-ldflags=-s -w", "-o", bin, "./test/images/pilot-agent") //nolint:gosec // G204: our own package
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./test/images/pilot-agent: %w\n%s", err, out)
	}
	im := ociimage.New(proxyImageV2)
	im.Entrypoint = []string{"/usr/local/bin/pilot-agent"}
	im.User = "1337:1337"
	im.Labels = map[string]string{"io.remora.test/proxy-release": "2"}
	if err := im.AddFile(bin, "/usr/local/bin/pilot-agent", 0o755); err != nil {
		return nil, err
	}
	return im, nil
}

func tearDown(failed bool) error {
	var errs []error
	if inj := suite.injector; inj != nil {
		if failed && suite.artifacts != "" {
			if b, err := os.ReadFile(inj.LogPath); err == nil {
				if err := os.MkdirAll(suite.artifacts, 0o750); err == nil {
					_ = os.WriteFile(filepath.Join(suite.artifacts, "injector.log"), b, 0o600)
				}
			}
		}
		if err := inj.Stop(15 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("stopping the injector: %w", err))
		}
	}
	if c := suite.cluster; c != nil {
		if failed {
			c.SetFailed() // Stop saves the node's logs and a dump of the pods
		}
		if err := c.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the node: %w", err))
		}
	}
	return errors.Join(errs...)
}

// writeConfig writes the injector's values.yaml: node.InjectorValues() (so
// that injected pods use the local images, never pulled) plus sets, each
// "values.PATH=VALUE" like `injector inject --set`.
func writeConfig(sets ...string) error {
	values := map[string]any{}
	for _, s := range append(node.InjectorValues(), sets...) {
		kv, ok := strings.CutPrefix(s, "values.")
		path, value, ok2 := strings.Cut(kv, "=")
		if !ok || !ok2 {
			return fmt.Errorf("injector value %q: want values.PATH=VALUE", s)
		}
		keys := strings.Split(path, ".")
		m := values
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = value
	}
	b, err := yaml.Marshal(values)
	if err != nil {
		return err
	}
	return framework.WriteAtomically(suite.configDir, framework.Files{"values.yaml": b})
}

// waitServing waits until the webhook injects proxyImage (the configuration
// written last is in effect) and returns that configuration's injection
// hash. It creates dry-run pods only.
func waitServing(ctx context.Context, proxyImage string) (string, error) {
	var last string
	var hash string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pod := framework.ProbePod(probeNamespace)
		if err := suite.cluster.Client.Create(ctx, pod, client.DryRunAll); err != nil {
			last = err.Error()
			return false, nil
		}
		p := testenv.ProxyContainer(pod)
		if p == nil {
			last = "not injected"
			return false, nil
		}
		last = "proxy image " + p.Image
		hash = pod.Annotations[annotationHash]
		return p.Image == proxyImage, nil
	})
	if err != nil {
		return "", fmt.Errorf("the webhook does not inject %s: %w (last: %s)", proxyImage, err, last)
	}
	return hash, nil
}
