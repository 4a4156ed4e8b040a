package chart_test

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/remora-mesh/remora/test/e2e/framework"
)

// chartCluster is a real kube-apiserver and etcd for the chart's end-to-end tests, with the
// injector built from source.
type chartCluster struct {
	cfg      *rest.Config
	admin    client.Client
	scheme   *runtime.Scheme
	injector string // the built binary
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
	repo := repoRoot(t)
	go func() {
		b, err := framework.BuildInjector(repo, work)
		built <- build{b, err}
	}()
	env := &envtest.Environment{BinaryAssetsDirectory: assets, ControlPlaneStartTimeout: 2 * time.Minute}
	apiserver := env.ControlPlane.GetAPIServer()
	// Webhook Services resolve to their endpoints, not the ClusterIP, which nothing routes here.
	apiserver.Configure().Set("enable-aggregator-routing", "true")
	// envtest disables the ServiceAccount admission plugin; real clusters run it.
	apiserver.Configure().Disable("disable-admission-plugins")
	cfg, err := env.Start()
	b := <-built
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	cfg.QPS, cfg.Burst = -1, 0
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return &chartCluster{cfg: cfg, admin: admin, scheme: scheme, injector: b.binary}
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
