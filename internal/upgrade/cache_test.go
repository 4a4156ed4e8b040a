package upgrade

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/remora-mesh/remora/pkg/inject"
)

// TestTransform: the cache keeps what Evaluate reads of workloads,
// ReplicaSets and namespaces, and little else (pods: podinfo_test.go).
func TestTransform(t *testing.T) {
	v1 := loadConfig(t, "example.com/proxy:v1")
	full := injectedPod(t, v1, "ns", "p", nil, nil)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Generation: 4, Annotations: map[string]string{
			AnnotationRestartOutdated: "true", corev1.LastAppliedConfigAnnotation: "{}",
		}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2), Paused: true,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}, Annotations: map[string]string{
					AnnotationRestartedAt: "t", AnnotationRestartedFor: "h", "other": "x",
				}},
				Spec: full.Spec,
			},
		},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 4, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2},
	}
	out, err := transform(d.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	sd := out.(*appsv1.Deployment)
	want, got := RolloutOf(d), RolloutOf(sd)
	if want.Finished != got.Finished || want.Paused != got.Paused || !equality.Semantic.DeepEqual(got.Annotations, map[string]string{AnnotationRestartOutdated: "true"}) ||
		!equality.Semantic.DeepEqual(got.TemplateAnnotations, map[string]string{AnnotationRestartedAt: "t", AnnotationRestartedFor: "h"}) {
		t.Errorf("stripped Deployment's rollout %+v, full %+v", got, want)
	}
	if len(sd.Spec.Template.Spec.Containers) != 0 {
		t.Error("the pod template's spec was kept")
	}
	if d.Annotations[corev1.LastAppliedConfigAnnotation] == "" {
		t.Error("the transform changed a map it shares with the input")
	}

	rs := metadataOf(appsv1.SchemeGroupVersion.WithKind(KindReplicaSet))
	rs.Name, rs.Namespace, rs.Labels = "web-abc", "ns", map[string]string{"app": "web"}
	rs.OwnerReferences = []metav1.OwnerReference{{Kind: KindDeployment, Name: "web", Controller: ptr.To(true)}}
	out, err = transform(rs)
	if err != nil {
		t.Fatal(err)
	}
	if m := out.(*metav1.PartialObjectMetadata); m.Labels != nil || len(m.OwnerReferences) != 1 || m.Kind != KindReplicaSet {
		t.Errorf("ReplicaSet metadata %+v", m)
	}
	ns := metadataOf(corev1.SchemeGroupVersion.WithKind("Namespace"))
	ns.Name, ns.Labels, ns.Annotations = "ns", enabled, map[string]string{AnnotationRestartOutdated: "true"}
	out, err = transform(ns)
	if err != nil {
		t.Fatal(err)
	}
	if m := out.(*metav1.PartialObjectMetadata); m.Labels[inject.LabelNamespaceInject] != "enabled" || m.Annotations[AnnotationRestartOutdated] != "true" {
		t.Errorf("namespace metadata %+v", m)
	}
}

func TestGaugeSet(t *testing.T) {
	g := gaugeSet{gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "test"}, []string{"namespace"})}
	g.update(map[string]int{"a": 2, "b": 1, "c": 0})
	if n := countSeries(t, g.gauge); n != 2 {
		t.Errorf("%d series, want 2 (no zero series)", n)
	}
	g.update(map[string]int{"b": 3})
	if n := countSeries(t, g.gauge); n != 1 {
		t.Errorf("%d series after a's pods went, want 1", n)
	}
}

func countSeries(t *testing.T, c prometheus.Collector) int {
	t.Helper()
	ch := make(chan prometheus.Metric, 10)
	c.Collect(ch)
	close(ch)
	n := 0
	for range ch {
		n++
	}
	return n
}
