package chart_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

// chartCluster is a real kube-apiserver and etcd for the chart's tests, with, for the end-to-end
// ones, the injector built from source.
type chartCluster struct {
	env      *envtest.Environment
	cfg      *rest.Config
	admin    client.Client
	scheme   *runtime.Scheme
	injector string // the built binary (startChartCluster)
}

// startControlPlane starts etcd and kube-apiserver from assets, configure (if set) adjusting the
// API server first, and stops them at cleanup; admin is a client with client-go's scheme.
func startControlPlane(t *testing.T, assets string, configure func(*envtest.APIServer)) (*chartCluster, error) {
	t.Helper()
	env := &envtest.Environment{BinaryAssetsDirectory: assets, ControlPlaneStartTimeout: 2 * time.Minute}
	if configure != nil {
		configure(env.ControlPlane.GetAPIServer())
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	cfg.QPS, cfg.Burst = -1, 0
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	return &chartCluster{env: env, cfg: cfg, admin: admin, scheme: scheme}, nil
}

// startChartCluster starts the control plane as a cluster runs it for webhooks (Services
// resolved to their endpoints, the ServiceAccount admission plugin on) while the injector is
// built into work; both are stopped or removed at cleanup.
func startChartCluster(t *testing.T, assets, work string) *chartCluster {
	t.Helper()
	type build struct {
		binary string
		err    error
	}
	built := make(chan build, 1)
	repo := testenv.MustRepoRoot(t)
	go func() {
		b, err := framework.BuildInjector(repo, work)
		built <- build{b, err}
	}()
	c, err := startControlPlane(t, assets, func(apiserver *envtest.APIServer) {
		// Webhook Services resolve to their endpoints, not the ClusterIP, which nothing routes here.
		apiserver.Configure().Set("enable-aggregator-routing", "true")
		// envtest disables the ServiceAccount admission plugin; real clusters run it.
		apiserver.Configure().Disable("disable-admission-plugins")
	})
	b := <-built
	if err != nil {
		t.Fatal(err)
	}
	if b.err != nil {
		t.Fatal(b.err)
	}
	c.injector = b.binary
	return c
}

// applyChart creates the release namespace and applies every rendered object as helm would
// (server-side apply). The chart must render only built-in kinds: cert-manager's and
// prometheus-operator's have no CRDs here.
func (c *chartCluster) applyChart(t *testing.T, m *manifests) {
	t.Helper()
	ctx := t.Context()
	if err := c.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNS}}); err != nil {
		t.Fatal(err)
	}
	for _, o := range m.objects {
		if !builtIn(o) {
			continue
		}
		if err := c.admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.u.DeepCopy()), client.FieldOwner("helm"), client.ForceOwnership); err != nil {
			t.Fatalf("applying %s/%s: %v", o.u.GetKind(), o.u.GetName(), err)
		}
	}
}

// mountConfigMap writes the data of the release's ConfigMap name into dir, as the kubelet mounts
// it (an atomic swap of the files).
func (c *chartCluster) mountConfigMap(t *testing.T, name, dir string) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := c.admin.Get(t.Context(), client.ObjectKey{Namespace: releaseNS, Name: name}, cm); err != nil {
		t.Fatal(err)
	}
	files := framework.Files{}
	for k, v := range cm.Data {
		files[k] = []byte(v)
	}
	if err := framework.WriteAtomically(dir, files); err != nil {
		t.Fatal(err)
	}
}

// startInjector runs the built injector with args and opts (injectorArgs: the chart's
// Deployment's command line for a process on this host), its log in work/injector.log, and waits
// until it is ready. At cleanup it is stopped, and its log's last lines are printed if the test
// failed.
func (c *chartCluster) startInjector(t *testing.T, work string, args []string, opts framework.InjectorOptions) *framework.Injector {
	t.Helper()
	p, err := testenv.StartProcess("injector", filepath.Join(work, "injector.log"), c.injector, args...)
	if err != nil {
		t.Fatal(err)
	}
	inj := &framework.Injector{Process: p, Opts: opts}
	t.Cleanup(func() {
		_ = inj.Stop(10 * time.Second) // at once if the test stopped it already
		if t.Failed() {
			t.Logf("injector log (last lines):\n%s", inj.LogTail(60))
		}
	})
	if err := inj.WaitReady(t.Context(), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	return inj
}
