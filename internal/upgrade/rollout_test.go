package upgrade

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestRolloutOf(t *testing.T) {
	meta := metav1.ObjectMeta{Namespace: "ns", Name: "w", Generation: 3}
	deploy := func(st appsv1.DeploymentStatus, mutate ...func(*appsv1.Deployment)) *appsv1.Deployment {
		d := &appsv1.Deployment{ObjectMeta: meta, Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3)}, Status: st}
		for _, m := range mutate {
			m(d)
		}
		return d
	}
	done := appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3, ReadyReplicas: 3}
	sts := func(st appsv1.StatefulSetStatus, strategy appsv1.StatefulSetUpdateStrategy) *appsv1.StatefulSet {
		return &appsv1.StatefulSet{ObjectMeta: meta, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2), UpdateStrategy: strategy}, Status: st}
	}
	stsDone := appsv1.StatefulSetStatus{ObservedGeneration: 3, CurrentRevision: "r2", UpdateRevision: "r2", ReadyReplicas: 2}
	ds := func(st appsv1.DaemonSetStatus, strategy appsv1.DaemonSetUpdateStrategyType) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{ObjectMeta: meta, Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: strategy}}, Status: st}
	}
	dsDone := appsv1.DaemonSetStatus{ObservedGeneration: 3, DesiredNumberScheduled: 4, UpdatedNumberScheduled: 4, NumberAvailable: 4}

	tests := []struct {
		name                   string
		obj                    client.Object
		finished, failed, paus bool
		manual                 bool
	}{
		{name: "Deployment rolled out", obj: deploy(done), finished: true},
		{name: "Deployment spec not observed yet", obj: deploy(func() appsv1.DeploymentStatus { s := done; s.ObservedGeneration = 2; return s }())},
		{name: "Deployment with old replicas left", obj: deploy(func() appsv1.DeploymentStatus { s := done; s.Replicas = 4; return s }())},
		{name: "Deployment not all available", obj: deploy(func() appsv1.DeploymentStatus { s := done; s.AvailableReplicas = 2; return s }())},
		{name: "Deployment not all updated", obj: deploy(func() appsv1.DeploymentStatus { s := done; s.UpdatedReplicas = 2; return s }())},
		{name: "Deployment progress deadline exceeded", failed: true, obj: deploy(func() appsv1.DeploymentStatus {
			s := done
			s.UpdatedReplicas = 1
			s.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded"}}
			return s
		}())},
		{name: "Deployment paused", obj: deploy(done, func(d *appsv1.Deployment) { d.Spec.Paused = true }), finished: true, paus: true},
		{name: "Deployment replicas default to 1", obj: &appsv1.Deployment{ObjectMeta: meta,
			Status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}}, finished: true},
		{name: "StatefulSet rolled out", obj: sts(stsDone, appsv1.StatefulSetUpdateStrategy{}), finished: true},
		{name: "StatefulSet revisions differ", obj: sts(func() appsv1.StatefulSetStatus { s := stsDone; s.CurrentRevision = "r1"; return s }(), appsv1.StatefulSetUpdateStrategy{})},
		{name: "StatefulSet not ready", obj: sts(func() appsv1.StatefulSetStatus { s := stsDone; s.ReadyReplicas = 1; return s }(), appsv1.StatefulSetUpdateStrategy{})},
		{name: "StatefulSet OnDelete", obj: sts(stsDone, appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}), finished: true, manual: true},
		{name: "StatefulSet partitioned", finished: true, manual: true, obj: sts(stsDone, appsv1.StatefulSetUpdateStrategy{
			Type: appsv1.RollingUpdateStatefulSetStrategyType, RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](1)}})},
		{name: "DaemonSet rolled out", obj: ds(dsDone, appsv1.RollingUpdateDaemonSetStrategyType), finished: true},
		{name: "DaemonSet not all updated", obj: ds(func() appsv1.DaemonSetStatus { s := dsDone; s.UpdatedNumberScheduled = 3; return s }(), appsv1.RollingUpdateDaemonSetStrategyType)},
		{name: "DaemonSet not all available", obj: ds(func() appsv1.DaemonSetStatus { s := dsDone; s.NumberAvailable = 3; return s }(), appsv1.RollingUpdateDaemonSetStrategyType)},
		{name: "DaemonSet OnDelete", obj: ds(dsDone, appsv1.OnDeleteDaemonSetStrategyType), finished: true, manual: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := RolloutOf(tt.obj)
			if r == nil {
				t.Fatal("no rollout")
			}
			if r.Finished != tt.finished || r.Failed != tt.failed || r.Paused != tt.paus || (r.Manual != "") != tt.manual {
				t.Errorf("got finished %v failed %v paused %v manual %q; want %v %v %v %v",
					r.Finished, r.Failed, r.Paused, r.Manual, tt.finished, tt.failed, tt.paus, tt.manual)
			}
			if r.Object != tt.obj {
				t.Error("Object is not the workload")
			}
		})
	}
	if RolloutOf(&corev1.Pod{}) != nil {
		t.Error("a Pod has a rollout")
	}
}

func TestRolloutRestarting(t *testing.T) {
	tests := []struct {
		name       string
		r          Rollout
		restarting bool
		restarted  string
	}{
		{"never restarted", Rollout{}, false, ""},
		{"restart in progress", Rollout{TemplateAnnotations: map[string]string{AnnotationRestartedFor: "h1"}}, true, "h1"},
		{"restart finished", Rollout{Finished: true, TemplateAnnotations: map[string]string{AnnotationRestartedFor: "h1"}}, false, "h1"},
		{"rolled back: the workload remembers", Rollout{Finished: true, Annotations: map[string]string{AnnotationRestartedFor: "h2"}}, false, "h2"},
		{"a user's rollout is not ours", Rollout{Finished: false}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Restarting(); got != tt.restarting {
				t.Errorf("Restarting() = %v, want %v", got, tt.restarting)
			}
			if got := tt.r.RestartedFor(); got != tt.restarted {
				t.Errorf("RestartedFor() = %q, want %q", got, tt.restarted)
			}
		})
	}
}

func TestResolveOptIn(t *testing.T) {
	on := map[string]string{AnnotationRestartOutdated: "true"}
	off := map[string]string{AnnotationRestartOutdated: "false"}
	junk := map[string]string{AnnotationRestartOutdated: "yes"}
	tests := []struct {
		name              string
		workload, ns      map[string]string
		global            bool
		allowed, explicit bool
	}{
		{"nothing set", nil, nil, false, false, false},
		{"global", nil, nil, true, true, false},
		{"namespace opts in", nil, on, false, true, true},
		{"workload opts in", on, nil, false, true, true},
		{"workload opts out of the global opt-in", off, nil, true, false, true},
		{"namespace opts out of the global opt-in", nil, off, true, false, true},
		{"workload wins over namespace (in)", on, off, false, true, true},
		{"workload wins over namespace (out)", off, on, true, false, true},
		{"invalid value is ignored", junk, on, false, true, true},
		{"invalid value everywhere falls back to global", junk, junk, true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ResolveOptIn(tt.workload, tt.ns, tt.global)
			if got.Allowed != tt.allowed || got.Explicit != tt.explicit || got.Source == "" {
				t.Errorf("ResolveOptIn = %+v, want allowed %v explicit %v", got, tt.allowed, tt.explicit)
			}
		})
	}
}
