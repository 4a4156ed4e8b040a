package upgrade

import (
	"fmt"
	"runtime"
	"testing"
	"unsafe"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/remora-mesh/remora/pkg/inject"
)

// TestPodInfoFromMeta: the metadata carries everything the classification
// reads, including the proxy image the pod was injected with.
func TestPodInfoFromMeta(t *testing.T) {
	v1 := loadConfig(t, "example.com/proxy:v1")
	pod := owned(injectedPod(t, v1, "ns", "web-1", map[string]string{"app": "web", inject.LabelRevision: "canary"},
		map[string]string{inject.AnnotationProxyImage: "example.com/mine:1", inject.AnnotationInject: "true"}),
		"apps/v1", KindReplicaSet, "web-abc")
	now := metav1.Now()
	pod.DeletionTimestamp = &now

	info := PodInfoFromMeta(&pod.ObjectMeta)
	if info == nil {
		t.Fatal("an injected pod has no PodInfo")
	}
	owner, ok := info.Controller()
	want := PodInfo{
		Namespace: "ns", Name: "web-1", UID: pod.UID, Revision: "default", Hash: v1.Hash,
		ProxyImage: pod.Annotations[inject.AnnotationInjectedImage], OwnImage: true,
		Inject: "true", InjectSet: true, RevisionLabel: "canary", RevisionLabelSet: true,
		Labels: info.Labels, Terminating: true, owner: info.owner,
	}
	if *info != want {
		t.Errorf("PodInfo %+v\nwant     %+v", *info, want)
	}
	if !ok || owner != (Owner{APIVersion: "apps/v1", Kind: KindReplicaSet, Name: "web-abc", UID: "ReplicaSet-web-abc"}) {
		t.Errorf("controller %+v, %v", owner, ok)
	}
	if info.ProxyImage != ProxyImage(&pod) || info.ProxyImage == "" {
		t.Errorf("injected image %q, the pod's proxy runs %q", info.ProxyImage, ProxyImage(&pod))
	}
	for k, v := range pod.Labels {
		if got, ok := info.Labels.Lookup(k); !ok || got != v {
			t.Errorf("label %s = %q, %v; want %q", k, got, ok, v)
		}
	}
	if info.Labels.Has("missing") || info.Labels.Get("ap") != "" {
		t.Error("Labels finds a label the pod does not have")
	}
	sel, err := labels.Parse("app in (web), " + inject.LabelRevision + "=canary")
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(info.Labels) {
		t.Errorf("selector %s does not match %s", sel, info.Labels)
	}

	plain := &metav1.ObjectMeta{Namespace: "ns", Name: "plain", Annotations: map[string]string{"x": "y"}}
	if got := PodInfoFromMeta(plain); got != nil {
		t.Errorf("a pod that is not injected has a PodInfo: %+v", got)
	}
	bare := injectedPod(t, v1, "ns", "bare", nil, nil)
	if _, ok := PodInfoFromMeta(&bare.ObjectMeta).Controller(); ok {
		t.Error("a bare pod has a controller")
	}

	// A pod injected before remora.io/proxy-image: the metadata does not
	// know its image (reported as a configuration change), the whole pod
	// does.
	legacy := injectedPod(t, v1, "ns", "legacy", nil, nil)
	delete(legacy.Annotations, inject.AnnotationInjectedImage)
	if got := PodInfoFromMeta(&legacy.ObjectMeta).ProxyImage; got != "" {
		t.Errorf("metadata image %q", got)
	}
	if got := PodInfoFromPod(&legacy).ProxyImage; got != "example.com/proxy:v1" {
		t.Errorf("whole pod's image %q", got)
	}
	done := injectedPod(t, v1, "ns", "done", nil, nil)
	done.Status.Phase = corev1.PodSucceeded
	if !PodInfoFromPod(&done).Finished || PodInfoFromMeta(&done.ObjectMeta).Finished {
		t.Error("Finished comes from the phase of a whole pod only")
	}
}

// TestPodInfoInterning: pods that share values share their bytes.
func TestPodInfoInterning(t *testing.T) {
	v1 := loadConfig(t, "example.com/proxy:v1")
	a := owned(injectedPod(t, v1, "ns", "a", map[string]string{"app": "web"}, nil), "apps/v1", KindReplicaSet, "web-abc")
	b := owned(injectedPod(t, v1, "ns", "b", map[string]string{"app": "web"}, nil), "apps/v1", KindReplicaSet, "web-abc")
	pa, pb := PodInfoFromMeta(&a.ObjectMeta), PodInfoFromMeta(&b.ObjectMeta)
	for name, pair := range map[string][2]string{
		"hash": {pa.Hash, pb.Hash}, "image": {pa.ProxyImage, pb.ProxyImage}, "labels": {string(pa.Labels), string(pb.Labels)},
		"namespace": {pa.Namespace, pb.Namespace}, "revision": {pa.Revision, pb.Revision},
	} {
		if pair[0] == "" || unsafe.StringData(pair[0]) != unsafe.StringData(pair[1]) {
			t.Errorf("%s %q is not shared", name, pair[0])
		}
	}
	if pa.owner != pb.owner {
		t.Error("the owner is not shared")
	}
}

// TestPodInfoFootprint measures what the controller keeps per injected pod:
// 10,000 pods of 100 ReplicaSets, as the pod store holds them. The figure
// is in docs/upgrades.md.
func TestPodInfoFootprint(t *testing.T) {
	v1 := loadConfig(t, "example.com/proxy:v1")
	tmpl := injectedPod(t, v1, "scale", "tmpl", map[string]string{"app": "web", "version": "v1"}, nil)
	const n = 10000
	metas := make([]metav1.ObjectMeta, n)
	for i := range metas {
		m := tmpl.ObjectMeta.DeepCopy()
		m.Name = fmt.Sprintf("web-%d-%05d", i/100, i)
		m.UID = types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i))
		m.Labels["pod-template-hash"] = fmt.Sprintf("h%d", i/100)
		m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: KindReplicaSet,
			Name: fmt.Sprintf("web-%d", i/100), UID: "rs-uid", Controller: ptr.To(true)}}
		metas[i] = *m
	}
	store := newPodStore()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range metas {
		if err := store.Add(&metav1.PartialObjectMetadata{ObjectMeta: metas[i]}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if store.Len() != n {
		t.Fatalf("%d pods stored, want %d", store.Len(), n)
	}
	perPod := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("the pod store keeps %.0f bytes of heap per injected pod (%d pods)", perPod, n)
	if perPod > 400 {
		t.Errorf("%.0f bytes per pod: the store should keep a few hundred at most", perPod)
	}
	runtime.KeepAlive(metas)
}

// TestPodStore: the Reflector's store keeps injected pods only and says when
// one changed.
func TestPodStore(t *testing.T) {
	v1, v2 := loadConfig(t, "example.com/proxy:v1"), loadConfig(t, "example.com/proxy:v2")
	meta := func(p corev1.Pod) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{ObjectMeta: p.ObjectMeta}
	}
	web := injectedPod(t, v1, "ns", "web", nil, nil)
	plain := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "plain"}}
	s := newPodStore()
	changed := func() bool {
		select {
		case <-s.changed:
			return true
		default:
			return false
		}
	}
	select {
	case <-s.synced:
		t.Fatal("synced before the first list")
	default:
	}

	// The initial list, as the Reflector's watch-list hands it over:
	// already transformed, nil for pods that were not injected.
	tr := s.Transformer()
	webInfo, err := tr(meta(web))
	if err != nil {
		t.Fatal(err)
	}
	plainInfo, err := tr(plain)
	if err != nil || plainInfo != nil {
		t.Fatalf("transformed a pod that is not injected into %v, %v", plainInfo, err)
	}
	if again, err := tr(webInfo); err != nil || again != webInfo {
		t.Errorf("the transformer is not idempotent: %v, %v", again, err)
	}
	if _, err := tr(&corev1.Pod{}); err == nil {
		t.Error("the transformer took a typed pod")
	}
	if err := s.Replace([]any{webInfo, plainInfo}, "1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.synced:
	default:
		t.Fatal("not synced after Replace")
	}
	if s.Len() != 1 || !changed() {
		t.Fatalf("after Replace: %d pods, changed %v", s.Len(), false)
	}

	steps := []struct {
		name    string
		op      func() error
		pods    int
		changed bool
	}{
		{"a pod that is not injected", func() error { return s.Add(plain) }, 1, false},
		{"the same pod again (a resync or a status change)", func() error { return s.Update(meta(web)) }, 1, false},
		{"re-injected with another configuration", func() error {
			return s.Update(meta(injectedPod(t, v2, "ns", "web", nil, nil)))
		}, 1, true},
		{"another injected pod", func() error { return s.Add(meta(injectedPod(t, v1, "ns", "api", nil, nil))) }, 2, true},
		{"its annotations removed", func() error {
			return s.Update(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "api"}})
		}, 1, true},
		{"a deletion of a pod not stored", func() error { return s.Delete(plain) }, 1, false},
		{"a deletion seen late", func() error {
			return s.Delete(toolscache.DeletedFinalStateUnknown{Key: "ns/web", Obj: meta(web)})
		}, 0, true},
	}
	for _, st := range steps {
		if err := st.op(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got, ch := s.Len(), changed(); got != st.pods || ch != st.changed {
			t.Errorf("%s: %d pods, changed %v; want %d, %v", st.name, got, ch, st.pods, st.changed)
		}
	}
	if err := s.Add("not an object"); err == nil {
		t.Error("the store took a string")
	}
}

// BenchmarkEvaluate150k evaluates 150,000 injected pods (1,500 Deployments
// of 100 pods in 15 namespaces), all outdated: the work after a
// configuration change at Kubernetes' largest supported cluster size.
func BenchmarkEvaluate150k(b *testing.B) {
	v1, v2 := loadConfig(b, "example.com/proxy:v1"), loadConfig(b, "example.com/proxy:v2")
	tmpl := injectedPod(b, v1, "tmpl", "tmpl", map[string]string{"app": "web"}, nil)
	const deployments, perDeployment, namespaces = 1500, 100, 15
	snap := &Snapshot{Config: v2}
	for n := range namespaces {
		snap.Namespaces = append(snap.Namespaces, metav1.PartialObjectMetadata{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns-%d", n), Labels: enabled}})
	}
	for d := range deployments {
		ns, name := fmt.Sprintf("ns-%d", d%namespaces), fmt.Sprintf("web-%d", d)
		snap.Deployments = append(snap.Deployments, appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
		rs := metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-abc",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: KindDeployment, Name: name, Controller: ptr.To(true)}}}}
		snap.ReplicaSets = append(snap.ReplicaSets, rs)
		for p := range perDeployment {
			m := tmpl.ObjectMeta.DeepCopy()
			m.Namespace, m.Name = ns, fmt.Sprintf("%s-abc-%d", name, p)
			m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: KindReplicaSet, Name: rs.Name, Controller: ptr.To(true)}}
			snap.Pods = append(snap.Pods, PodInfoFromMeta(m))
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rep := Evaluate(snap)
		if rep.Pods.Outdated != deployments*perDeployment {
			b.Fatalf("%d outdated", rep.Pods.Outdated)
		}
	}
}
