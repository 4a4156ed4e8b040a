package patch_test

import (
	"encoding/json"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/internal/patch"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

func benchPods(b *testing.B) ([]byte, *corev1.Pod, *corev1.Pod) {
	y, err := os.ReadFile("../../testdata/bench/reviews-v1-pod.yaml")
	if err != nil {
		b.Fatal(err)
	}
	pod := &corev1.Pod{}
	if err := yaml.Unmarshal(y, pod); err != nil {
		b.Fatal(err)
	}
	raw, _ := json.Marshal(pod)
	res, err := inject.Inject(inject.Request{Pod: pod, Config: config.MustDefault()})
	if err != nil {
		b.Fatal(err)
	}
	return raw, pod, res.Pod
}

// BenchmarkPatchDirect builds the patch from the injected fields.
func BenchmarkPatchDirect(b *testing.B) {
	raw, orig, injected := benchPods(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := patch.Operations(raw, orig, injected); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPatchGeneric is controller-runtime's way: marshal the injected
// pod and diff two JSON documents.
func BenchmarkPatchGeneric(b *testing.B) {
	raw, _, injected := benchPods(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := patch.Generic(raw, injected); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMarshal encodes the reference pod's patch in one pass, side by
// side with encoding/json through jsonpatch.Operation's MarshalJSON (what
// controller-runtime's Response.Complete does).
func BenchmarkMarshal(b *testing.B) {
	raw, orig, injected := benchPods(b)
	ops, err := patch.Operations(raw, orig, injected)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("one-pass", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := patch.Marshal(ops); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("operation-marshaljson", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(ops); err != nil {
				b.Fatal(err)
			}
		}
	})
}
