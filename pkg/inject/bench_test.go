package inject

import (
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/pkg/config"
)

// BenchmarkInject injects a typical Deployment pod: Bookinfo's reviews-v1
// as the API server hands it to the webhook (one app container with ports,
// env, resources and HTTP probes).
func BenchmarkInject(b *testing.B) { benchInject(b, "reviews-v1-pod.yaml", false) }

// BenchmarkInjectRendered is the same through text/template and the
// strategic merge, for comparison.
func BenchmarkInjectRendered(b *testing.B) { benchInject(b, "reviews-v1-pod.yaml", true) }

// BenchmarkInjectLarge injects a pod with 5 containers and 100 env vars.
func BenchmarkInjectLarge(b *testing.B) { benchInject(b, "large-pod.yaml", false) }

// BenchmarkInjectAnnotated injects a pod with 73 annotations, 13 of them
// Istio's (validated, and a proxy.istio.io/config to merge).
func BenchmarkInjectAnnotated(b *testing.B) { benchInject(b, "annotated-pod.yaml", false) }

func benchInject(b *testing.B, file string, render bool) {
	raw, err := os.ReadFile("../../testdata/bench/" + file)
	if err != nil {
		b.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.Unmarshal(raw, &pod); err != nil {
		b.Fatal(err)
	}
	cfg := config.MustDefault()
	req := Request{Pod: &pod, Namespace: "default", NamespaceLabels: map[string]string{LabelNamespaceInject: "enabled"}, Config: cfg, AlwaysRender: render}
	b.ReportAllocs()
	for b.Loop() {
		res, err := Inject(req)
		if err != nil || !res.Injected {
			b.Fatalf("Inject: %v %v", res.Reason, err)
		}
	}
}
