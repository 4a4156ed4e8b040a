package install_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/node"
)

const (
	releaseName = "remora"
	releaseNS   = "remora-system"
	chartPath   = "charts/remora"

	// proxyTagV2 is the "new proxy release" of the upgrade step: the stand-in
	// proxy imported again as ImageHub/proxyv2:test2 with an image ID of its own.
	proxyTagV2 = "test2"
)

// suite is what the journey's steps share; TestMain builds it once.
var suite struct {
	// skip says why the tests skip (node.Wanted); err why they cannot run.
	skip string
	err  error

	cluster     *node.Cluster
	root        string
	helm        string // bin/helm
	certManager string // bin/cert-manager (hack/certmanager)
	crds        string // bin/cert-manager-crds: the module's deploy/crds
	dir         string // our files, inside the node's run directory
	values      string // the chart values every install and upgrade uses
	artifacts   string
	procs       []*testenv.Process // cert-manager's controller and CA injector
}

func logf(format string, args ...any) {
	fmt.Printf("%s install: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// cluster returns the shared cluster, skipping or failing the test the way
// node.Require does when there is none.
func cluster(t *testing.T) *node.Cluster {
	t.Helper()
	if suite.skip != "" {
		t.Skip(suite.skip)
	}
	if suite.err != nil {
		t.Fatal(suite.err)
	}
	return suite.cluster
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	log.SetLogger(zap.New(zap.WriteTo(io.Discard))) // envtest's own logging
	if ok, why := node.Wanted(); !ok {
		suite.skip = why
		return m.Run()
	}
	// Start builds the images too: a cold build of the injector on a loaded 2-core machine
	// takes minutes.
	opts := node.Options{Logf: logf, APIServerOnNodeIP: true, Timeout: 15 * time.Minute}
	root, err := testenv.RepoRoot()
	if err != nil {
		suite.err = err
		return m.Run()
	}
	suite.root = root
	suite.artifacts = filepath.Join(root, "test", "e2e", "_artifacts", "install")
	opts.ArtifactsDir = suite.artifacts
	// Wanted but impossible (CI=true on a machine without containerd, helm
	// or cert-manager): every test fails rather than passing vacuously.
	if err := errors.Join(node.Check(opts), checkTools(root)); err != nil {
		suite.err = err
		return m.Run()
	}
	// The host snapshot must not see another suite's node: wait for it to stop first.
	if err := node.Cleanup(context.Background(), opts); err != nil {
		suite.err = fmt.Errorf("waiting for another e2e node to stop: %w", err)
		return m.Run()
	}
	return node.RunCheckingHost("install", os.Getenv("REMORA_NODE_DIR"), func() int { return runOnNode(m, opts) }, logf)
}

// checkTools finds helm, cert-manager and its CRDs in bin/ (make
// test-e2e-install builds them).
func checkTools(root string) error {
	suite.helm = filepath.Join(root, "bin", "helm")
	suite.certManager = filepath.Join(root, "bin", "cert-manager")
	suite.crds = filepath.Join(root, "bin", "cert-manager-crds")
	var errs []error
	for _, p := range []struct{ path, how string }{
		{suite.helm, "make helm"},
		{suite.certManager, "make cert-manager"},
		{filepath.Join(suite.crds, "cert-manager.io_certificates.yaml"), "make cert-manager"},
	} {
		if _, err := os.Stat(p.path); err != nil {
			errs = append(errs, fmt.Errorf("%s is missing (%s): %w", p.path, p.how, err))
		}
	}
	return errors.Join(errs...)
}

func runOnNode(m *testing.M, opts node.Options) int {
	start := time.Now()
	if err := setUp(opts); err != nil {
		suite.err = fmt.Errorf("setting up the install suite: %w", err)
		logf("%v", suite.err)
	} else {
		logf("node, cert-manager and images ready in %s", time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	if err := tearDown(code != 0 || suite.err != nil); err != nil {
		fmt.Fprintln(os.Stderr, "install:", err)
		code = 1
	}
	logf("suite wall time %s", time.Since(start).Round(time.Second))
	return code
}

// setUp starts the node with the API server on the node IP (the injector's
// pods talk to it) and webhook Services routed to their endpoints, imports
// the second proxy image, installs cert-manager's CRDs and starts its
// controller and CA injector.
func setUp(opts node.Options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	env := &envtest.Environment{}
	// The API server calls a webhook Service at one of its endpoints (the
	// injector pods' addresses on the bridge) instead of its ClusterIP,
	// which nothing routes here: there is no kube-proxy.
	env.ControlPlane.GetAPIServer().Configure().Set("enable-aggregator-routing", "true")
	opts.Environment = env
	c, err := node.Start(ctx, opts)
	if err != nil {
		return err // Start has stopped what it started
	}
	suite.cluster = c
	suite.dir = filepath.Join(c.Dir, "install")
	if err := os.MkdirAll(suite.dir, 0o750); err != nil {
		return err
	}

	v2, err := c.ProxyRelease(node.ImageHub+"/proxyv2:"+proxyTagV2, map[string]string{"io.remora.test/proxy-release": "2"})
	if err != nil {
		return err
	}
	if err := c.LoadImages(ctx, v2); err != nil {
		return err
	}
	if suite.values, err = writeValues(c); err != nil {
		return err
	}

	// cert-manager, as its install does: the CRDs, then the controller and
	// the CA injector (host processes with the admin kubeconfig; their
	// command lines name the run directory, so the node's teardown finds
	// them if this process dies).
	t0 := time.Now()
	if _, err := c.Kubectl(ctx, "apply", "--server-side", "--field-manager=cert-manager-install", "-f", suite.crds); err != nil {
		return fmt.Errorf("installing cert-manager's CRDs: %w", err)
	}
	if _, err := c.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/certificates.cert-manager.io", "crd/certificaterequests.cert-manager.io", "crd/issuers.cert-manager.io",
		"crd/clusterissuers.cert-manager.io"); err != nil {
		return err
	}
	for _, role := range []string{"controller", "cainjector"} {
		p, err := testenv.StartProcess("cert-manager-"+role, filepath.Join(suite.dir, "cert-manager-"+role+".log"),
			suite.certManager, role, "--kubeconfig="+c.Kubeconfig)
		if err != nil {
			return err
		}
		suite.procs = append(suite.procs, p)
	}
	logf("cert-manager CRDs installed and controller, CA injector started in %s", time.Since(t0).Round(time.Millisecond))
	return nil
}

// writeValues writes the chart values of the journey: the injector image
// built and imported by the node (never pulled), the injected containers'
// test images, and the API server's address for the injector's in-cluster
// client (node.APIServerEnv: no Service proxy routes the kubernetes Service
// here).
func writeValues(c *node.Cluster) (string, error) {
	apiEnv, err := c.APIServerEnv()
	if err != nil {
		return "", err
	}
	repo, tag, _ := strings.Cut(node.InjectorImage, ":")
	values := fmt.Sprintf(`image:
  repository: %s
  tag: %q
  pullPolicy: Never
extraEnv:
  - name: KUBERNETES_SERVICE_HOST
    value: %q
  - name: KUBERNETES_SERVICE_PORT
    value: %q
global:
  hub: %s
  tag: %q
  imagePullPolicy: Never
  proxy_init:
    image: %s
`, repo, tag, apiEnv["KUBERNETES_SERVICE_HOST"], apiEnv["KUBERNETES_SERVICE_PORT"], node.ImageHub, node.ImageTag, node.InjectorImage)
	path := filepath.Join(suite.dir, "values.yaml")
	return path, os.WriteFile(path, []byte(values), 0o600)
}

func tearDown(failed bool) error {
	var errs []error
	for _, p := range suite.procs {
		if failed && suite.artifacts != "" {
			if b, err := os.ReadFile(p.LogPath); err == nil {
				if err := os.MkdirAll(suite.artifacts, 0o750); err == nil {
					_ = os.WriteFile(filepath.Join(suite.artifacts, filepath.Base(p.LogPath)), b, 0o600)
				}
			}
		}
		if err := p.Stop(15 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("stopping %s: %w", p.Name, err))
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

// helm runs the pinned helm from the repository root against the node, with
// its home directories in the run directory.
func helm(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c := suite.cluster
	cmd := exec.CommandContext(ctx, suite.helm, append(args, "--kubeconfig", c.Kubeconfig)...) //nolint:gosec // G204: the pinned helm with the test's arguments
	cmd.Dir = suite.root
	home := filepath.Join(suite.dir, "helm")
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECACHEDIR="+filepath.Join(home, "kubecache"),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
