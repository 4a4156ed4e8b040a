package upgrade

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// injectedPod returns a pod injected with cfg in namespace ns, with the
// extra labels and annotations applied before injection.
func injectedPod(t testing.TB, cfg *config.Config, ns, name string, labels, annotations map[string]string) corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			ServiceAccountName: "default",
			Containers:         []corev1.Container{{Name: "app", Image: "example.com/app:1"}},
		},
	}
	nsLabels := enabled
	if rev := cfg.Settings.Revision; rev != "" {
		nsLabels = map[string]string{inject.LabelRevision: rev}
	}
	res, err := inject.Inject(inject.Request{Pod: pod, Namespace: ns, NamespaceLabels: nsLabels, Config: cfg})
	if err != nil || !res.Injected {
		t.Fatalf("injecting: %v (%s)", err, res.Message)
	}
	out := res.Pod.DeepCopy()
	out.Status.Phase = corev1.PodRunning
	return *out
}

// podInfos returns the PodInfos of the injected pods.
func podInfos(pods ...corev1.Pod) []*PodInfo {
	var out []*PodInfo
	for i := range pods {
		if info := PodInfoFromPod(&pods[i]); info != nil {
			out = append(out, info)
		}
	}
	return out
}

func owned(pod corev1.Pod, apiVersion, kind, name string) corev1.Pod {
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID(kind + "-" + name), Controller: ptr.To(true)}}
	return pod
}

func TestClassifyPod(t *testing.T) {
	v1, v2 := loadConfig(t, "example.com/proxy:v1"), loadConfig(t, "example.com/proxy:v2")
	sameImage, err := config.Load(config.Sources{
		Values: []byte("global:\n  proxy:\n    image: example.com/proxy:v1\n  logging:\n    level: debug\n"),
	}, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if sameImage.Hash == v1.Hash {
		t.Fatal("the configurations should differ")
	}
	canary, err := config.Load(config.Sources{Values: []byte("revision: canary\n")}, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	revLabels := map[string]string{inject.LabelRevision: "canary"}

	tests := []struct {
		name     string
		pod      corev1.Pod
		nsLabels map[string]string
		cfg      *config.Config
		want     PodVerdict
	}{
		{name: "same configuration", pod: injectedPod(t, v1, "a", "p", nil, nil), nsLabels: enabled, cfg: v1,
			want: PodVerdict{State: PodUpToDate}},
		{name: "new proxy image", pod: injectedPod(t, v1, "a", "p", nil, nil), nsLabels: enabled, cfg: v2,
			want: PodVerdict{State: PodOutdated, Change: ChangeImage}},
		{name: "new values, same image", pod: injectedPod(t, v1, "a", "p", nil, nil), nsLabels: enabled, cfg: sameImage,
			want: PodVerdict{State: PodOutdated, Change: ChangeConfig}},
		{name: "the pod chooses its image", nsLabels: enabled, cfg: v2,
			pod:  injectedPod(t, v1, "a", "p", nil, map[string]string{inject.AnnotationProxyImage: "example.com/mine:1"}),
			want: PodVerdict{State: PodOutdated, Change: ChangeConfig}},
		{name: "no hash annotation (injected by Istio)", nsLabels: enabled, cfg: v1,
			pod: func() corev1.Pod {
				p := injectedPod(t, v1, "a", "p", nil, nil)
				delete(p.Annotations, inject.AnnotationConfigHash)
				return p
			}(),
			want: PodVerdict{State: PodOutdated, Change: ChangeConfig}},
		{name: "namespace lost its label", pod: injectedPod(t, v1, "a", "p", nil, nil), nsLabels: map[string]string{}, cfg: v2,
			want: PodVerdict{State: PodUnselected, Reason: `namespace "a" is no longer labelled istio-injection=enabled or istio.io/rev=default`}},
		{name: "namespace disabled", pod: injectedPod(t, v1, "a", "p", nil, nil), cfg: v1,
			nsLabels: map[string]string{inject.LabelNamespaceInject: "disabled"},
			want:     PodVerdict{State: PodUnselected, Reason: `namespace "a" has istio-injection=disabled`}},
		{name: "pod opted out", nsLabels: enabled, cfg: v1,
			pod: func() corev1.Pod {
				p := injectedPod(t, v1, "a", "p", nil, nil)
				p.Annotations[inject.AnnotationInject] = "false"
				return p
			}(),
			want: PodVerdict{State: PodUnselected, Reason: "the pod sets sidecar.istio.io/inject=false"}},
		{name: "pod opted in, namespace unlabelled", pod: injectedPod(t, v1, "a", "p", map[string]string{inject.LabelInject: "true"}, nil),
			nsLabels: map[string]string{}, cfg: v1, want: PodVerdict{State: PodUpToDate}},
		{name: "namespace selects this revision", pod: injectedPod(t, canary, "a", "p", revLabels, nil), cfg: canary,
			nsLabels: revLabels, want: PodVerdict{State: PodUpToDate}},
		{name: "namespace moved to another revision", pod: injectedPod(t, canary, "a", "p", nil, nil), cfg: canary,
			nsLabels: map[string]string{inject.LabelRevision: "stable"},
			want:     PodVerdict{State: PodUnselected, Reason: `namespace "a" selects revision "stable", not "canary"`}},
		{name: "kube-system", nsLabels: enabled, cfg: v1,
			pod: func() corev1.Pod {
				// Injected by something else, or copied there.
				p := injectedPod(t, v1, "a", "p", nil, nil)
				p.Namespace = "kube-system"
				return p
			}(),
			want: PodVerdict{State: PodUnselected, Reason: `namespace "kube-system" is never injected`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev := tt.cfg.Revision()
			info := PodInfoFromPod(&tt.pod)
			if info == nil || !Considered(info, rev) {
				t.Fatalf("pod not considered for revision %q", rev)
			}
			got := ClassifyPod(info, tt.nsLabels, tt.cfg, rev)
			if got != tt.want {
				t.Errorf("ClassifyPod = %+v, want %+v", got, tt.want)
			}
			// The controller classifies what it watches, the pod's
			// metadata: the same answer.
			if fromMeta := ClassifyPod(PodInfoFromMeta(&tt.pod.ObjectMeta), tt.nsLabels, tt.cfg, rev); fromMeta != got {
				t.Errorf("from metadata: %+v, from the whole pod: %+v", fromMeta, got)
			}
		})
	}
}

func TestConsidered(t *testing.T) {
	v1 := loadConfig(t, "example.com/proxy:v1")
	canary, err := config.Load(config.Sources{Values: []byte("revision: canary\n")}, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	tests := []struct {
		name string
		pod  func() corev1.Pod
		rev  string
		want bool
	}{
		{"running injected pod", func() corev1.Pod { return injectedPod(t, v1, "a", "p", nil, nil) }, "default", true},
		{"not injected", func() corev1.Pod {
			return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "p"}}
		}, "default", false},
		{"another revision's pod", func() corev1.Pod { return injectedPod(t, canary, "a", "p", nil, nil) }, "default", false},
		{"this revision's pod", func() corev1.Pod { return injectedPod(t, canary, "a", "p", nil, nil) }, "canary", true},
		{"terminating", func() corev1.Pod {
			p := injectedPod(t, v1, "a", "p", nil, nil)
			p.DeletionTimestamp = &now
			return p
		}, "default", false},
		{"finished Job pod", func() corev1.Pod {
			p := injectedPod(t, v1, "a", "p", nil, nil)
			p.Status.Phase = corev1.PodSucceeded
			return p
		}, "default", false},
		{"status without revision (Istio's default)", func() corev1.Pod {
			p := injectedPod(t, v1, "a", "p", nil, nil)
			p.Annotations[inject.AnnotationStatus] = `{"containers":["istio-proxy"]}`
			return p
		}, "default", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.pod()
			info := PodInfoFromPod(&p)
			if got := info != nil && Considered(info, tt.rev); got != tt.want {
				t.Errorf("Considered = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestEvaluate groups pods by workload through ReplicaSets and Jobs, and
// derives each workload's status.
func TestEvaluate(t *testing.T) {
	v1, v2 := loadConfig(t, "example.com/proxy:v1"), loadConfig(t, "example.com/proxy:v2")
	nsMeta := func(name string, labels map[string]string) metav1.PartialObjectMetadata {
		return metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	rsMeta := func(ns, name, ownerKind, owner string) metav1.PartialObjectMetadata {
		m := metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		if owner != "" {
			m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: ownerKind, Name: owner, Controller: ptr.To(true)}}
		}
		return m
	}
	jobMeta := func(ns, name, cronJob string) metav1.PartialObjectMetadata {
		m := metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: KindCronJob, Name: cronJob, Controller: ptr.To(true)}}
		return m
	}
	finished := appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2, ReadyReplicas: 2}
	rolling := appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 1, AvailableReplicas: 2}
	deploy := func(name string, gen int64, st appsv1.DeploymentStatus) appsv1.Deployment {
		return appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, Generation: gen},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
			Status:     st,
		}
	}

	snap := &Snapshot{
		Config: v2,
		Namespaces: []metav1.PartialObjectMetadata{
			nsMeta("app", enabled), nsMeta("old", map[string]string{}),
		},
		Pods: podInfos(
			owned(injectedPod(t, v1, "app", "web-1", nil, nil), "apps/v1", KindReplicaSet, "web-abc"),
			owned(injectedPod(t, v2, "app", "web-2", nil, nil), "apps/v1", KindReplicaSet, "web-def"),
			owned(injectedPod(t, v1, "app", "api-1", nil, nil), "apps/v1", KindReplicaSet, "api-abc"),
			owned(injectedPod(t, v2, "app", "fresh-1", nil, nil), "apps/v1", KindReplicaSet, "fresh-abc"),
			owned(injectedPod(t, v1, "app", "db-0", nil, nil), "apps/v1", KindStatefulSet, "db"),
			owned(injectedPod(t, v1, "app", "nightly-1-x", nil, nil), "batch/v1", KindJob, "nightly-1"),
			owned(injectedPod(t, v1, "app", "orphan-rs-1", nil, nil), "apps/v1", KindReplicaSet, "orphan-rs"),
			owned(injectedPod(t, v1, "app", "unknown-rs-1", nil, nil), "apps/v1", KindReplicaSet, "unknown-rs"),
			injectedPod(t, v1, "app", "bare", nil, nil),
			owned(injectedPod(t, v1, "old", "legacy-1", nil, nil), "apps/v1", KindReplicaSet, "legacy-abc"),
			owned(injectedPod(t, v1, "gone", "x-1", nil, nil), "apps/v1", KindReplicaSet, "x-abc"),
			corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "plain"}},
		),
		ReplicaSets: []metav1.PartialObjectMetadata{
			rsMeta("app", "web-abc", KindDeployment, "web"), rsMeta("app", "web-def", KindDeployment, "web"),
			rsMeta("app", "api-abc", KindDeployment, "api"), rsMeta("app", "fresh-abc", KindDeployment, "fresh"),
			rsMeta("app", "orphan-rs", "", ""), rsMeta("old", "legacy-abc", KindDeployment, "legacy"),
		},
		Jobs:        []metav1.PartialObjectMetadata{jobMeta("app", "nightly-1", "nightly")},
		Deployments: []appsv1.Deployment{deploy("web", 2, rolling), deploy("api", 1, finished), deploy("fresh", 1, finished)},
	}
	rep := Evaluate(snap)

	type row struct {
		outdated, unselected, total int
		change                      Change
		status                      Status
		rollout, object             bool
	}
	want := map[Ref]row{
		{KindCronJob, "app", "nightly"}:       {1, 0, 1, ChangeImage, StatusNeedsRestart, false, true},
		{KindDeployment, "app", "api"}:        {1, 0, 1, ChangeImage, StatusNeedsRestart, true, true},
		{KindDeployment, "app", "fresh"}:      {0, 0, 1, ChangeNone, StatusUpToDate, true, true},
		{KindDeployment, "app", "web"}:        {1, 0, 2, ChangeImage, StatusRestarting, true, true},
		{KindPod, "app", "bare"}:              {1, 0, 1, ChangeImage, StatusNeedsRestart, false, true},
		{KindReplicaSet, "app", "orphan-rs"}:  {1, 0, 1, ChangeImage, StatusNeedsRestart, false, true},
		{KindReplicaSet, "app", "unknown-rs"}: {1, 0, 1, ChangeImage, StatusNeedsRestart, false, false},
		{KindStatefulSet, "app", "db"}:        {1, 0, 1, ChangeImage, StatusNeedsRestart, false, true},
		{KindDeployment, "old", "legacy"}:     {0, 1, 1, ChangeNone, StatusUnselected, false, true},
	}
	if len(rep.Workloads) != len(want) {
		t.Errorf("%d workloads, want %d: %+v", len(rep.Workloads), len(want), rep.Workloads)
	}
	for i, w := range rep.Workloads {
		if i > 0 && compareRefs(rep.Workloads[i-1].Ref, w.Ref) >= 0 {
			t.Errorf("workloads not sorted: %s before %s", rep.Workloads[i-1].Ref, w.Ref)
		}
		exp, ok := want[w.Ref]
		if !ok {
			t.Errorf("unexpected workload %s", w.Ref)
			continue
		}
		got := row{w.Outdated, w.Unselected, w.Total, w.Change, w.Status, w.Rollout != nil, w.EventObject() != nil}
		if got != exp {
			t.Errorf("%s: got %+v, want %+v", w.Ref, got, exp)
		}
	}
	if got := rep.Namespaces["app"]; got != (Counts{Total: 9, Outdated: 7}) {
		t.Errorf("namespace app counts %+v", got)
	}
	if got := rep.Namespaces["old"]; got != (Counts{Total: 1, Unselected: 1}) {
		t.Errorf("namespace old counts %+v", got)
	}
	if _, ok := rep.Namespaces["gone"]; ok {
		t.Error("a pod of an unknown namespace was counted")
	}
	if rep.Pods != (Counts{Total: 10, Outdated: 7, Unselected: 1}) {
		t.Errorf("pod counts %+v", rep.Pods)
	}
	if rep.Hash != v2.Hash || rep.Revision != "default" {
		t.Errorf("hash %q revision %q", rep.Hash, rep.Revision)
	}
	for _, w := range rep.Workloads {
		if w.Ref == (Ref{KindCronJob, "app", "nightly"}) {
			if gvk := w.EventObject().GetObjectKind().GroupVersionKind(); gvk.Kind != KindCronJob || gvk.Group != "batch" {
				t.Errorf("CronJob reference has kind %v", gvk)
			}
		}
	}
}

func TestChangeString(t *testing.T) {
	for c, want := range map[Change]string{ChangeNone: "-", ChangeConfig: "config", ChangeImage: "image"} {
		if c.String() != want {
			t.Errorf("%q.String() = %q, want %q", string(c), c.String(), want)
		}
	}
}
