package upgrade

import (
	"encoding/json"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/remora-mesh/remora/pkg/inject"
)

func size(t *testing.T, v any) int {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

// TestTransform: the cache keeps what Evaluate reads and little else.
func TestTransform(t *testing.T) {
	v1 := loadConfig(t, "example.com/proxy:v1")
	full := owned(injectedPod(t, v1, "ns", "p", map[string]string{"app": "web"}, map[string]string{
		corev1.LastAppliedConfigAnnotation: `{"big":"manifest"}`, inject.AnnotationProxyImage: "example.com/mine:1",
	}), "apps/v1", KindReplicaSet, "web-abc")
	full.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	full.OwnerReferences = append(full.OwnerReferences, metav1.OwnerReference{Kind: "Other", Name: "x"})

	out, err := transform(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	pod := out.(*corev1.Pod)
	if got, want := ProxyImage(pod), ProxyImage(&full); got != want || got == "" {
		t.Errorf("proxy image %q, want %q", got, want)
	}
	for _, k := range keptPodAnnotations {
		if pod.Annotations[k] != full.Annotations[k] {
			t.Errorf("annotation %s = %q, want %q", k, pod.Annotations[k], full.Annotations[k])
		}
	}
	if _, ok := pod.Annotations[corev1.LastAppliedConfigAnnotation]; ok {
		t.Error("last-applied annotation kept")
	}
	if _, ok := pod.Labels["app"]; ok {
		t.Error("unneeded label kept")
	}
	if len(pod.OwnerReferences) != 1 || pod.OwnerReferences[0].Name != "web-abc" {
		t.Errorf("owner references %v, want only the controller", pod.OwnerReferences)
	}
	if pod.Status.Phase != corev1.PodRunning || pod.ResourceVersion != full.ResourceVersion {
		t.Error("phase or resourceVersion lost")
	}
	if before, after := size(t, &full), size(t, pod); after*3 > before {
		t.Errorf("stripped pod is %d bytes of JSON, the full one %d: expected at least 3x smaller", after, before)
	} else {
		t.Logf("injected pod: %d bytes of JSON, cached: %d", before, after)
	}

	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "plain", Labels: map[string]string{"a": "b"},
		Annotations: map[string]string{"x": "y"}}, Spec: full.Spec}
	out, err = transform(plain)
	if err != nil {
		t.Fatal(err)
	}
	if p := out.(*corev1.Pod); p.Labels != nil || p.Annotations != nil || len(p.Spec.Containers) != 0 {
		t.Errorf("a pod that is not injected kept %+v", p)
	}

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
	out, err = transform(d.DeepCopy())
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
