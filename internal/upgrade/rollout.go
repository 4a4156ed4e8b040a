package upgrade

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Annotations the controller reads and writes.
const (
	// AnnotationRestartOutdated opts a namespace or a workload in ("true")
	// or out ("false") of automatic restarts. The workload's annotation wins
	// over the namespace's, which wins over the global setting.
	AnnotationRestartOutdated = "remora.io/restart-outdated"
	// AnnotationRestartedFor is set, on the workload and on its pod
	// template, to the configuration hash the controller restarted it for.
	// The workload is never restarted twice for the same hash.
	AnnotationRestartedFor = "remora.io/restarted-for"
	// AnnotationRestartedBy is set on the pod template to the revision of
	// the controller that restarted the workload, so that the controllers
	// of revisions running side by side (a canary upgrade) each track and
	// count only their own restarts.
	AnnotationRestartedBy = "remora.io/restarted-by"
	// AnnotationRestartedAt is the pod template annotation that
	// kubectl rollout restart sets; changing it rolls the workload.
	AnnotationRestartedAt = "kubectl.kubernetes.io/restartedAt"
)

// deploymentProgressDeadlineExceeded is the reason of a Deployment's
// Progressing condition when its rollout is stuck.
const deploymentProgressDeadlineExceeded = "ProgressDeadlineExceeded"

// Rollout is the rollout state of a Deployment, StatefulSet or DaemonSet.
type Rollout struct {
	// Object is the workload, as given to RolloutOf.
	Object client.Object
	// Finished: the controller observed the latest spec and every replica
	// is updated and available (ready for a StatefulSet).
	Finished bool
	// Failed: a Deployment's Progressing condition is False with reason
	// ProgressDeadlineExceeded.
	Failed bool
	// Paused: a Deployment's spec.paused.
	Paused bool
	// Manual is not empty when template changes do not roll the pods by
	// themselves (updateStrategy OnDelete, a StatefulSet partition): such
	// workloads are never restarted automatically.
	Manual string
	// Annotations are the workload's own annotations (opt-in,
	// restarted-for).
	Annotations map[string]string
	// TemplateAnnotations are its pod template's annotations.
	TemplateAnnotations map[string]string
}

// RestartedFor returns the configuration hash the workload was last
// restarted for by the controller, from the workload's annotation (which a
// rollback of the template does not undo) or its template's.
func (r *Rollout) RestartedFor() string {
	if h := r.Annotations[AnnotationRestartedFor]; h != "" {
		return h
	}
	return r.TemplateAnnotations[AnnotationRestartedFor]
}

// Restarting reports whether the workload counts against the restart
// budget: its template carries the controller's restarted-for annotation
// and its rollout has not finished.
func (r *Rollout) Restarting() bool {
	return r.TemplateAnnotations[AnnotationRestartedFor] != "" && !r.Finished
}

// RolloutOf returns the rollout state of a Deployment, StatefulSet or
// DaemonSet, and nil for any other object.
func RolloutOf(obj client.Object) *Rollout {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return deploymentRollout(o)
	case *appsv1.StatefulSet:
		return statefulSetRollout(o)
	case *appsv1.DaemonSet:
		return daemonSetRollout(o)
	}
	return nil
}

func deploymentRollout(d *appsv1.Deployment) *Rollout {
	replicas := ptr.Deref(d.Spec.Replicas, 1)
	st := &d.Status
	r := &Rollout{
		Finished: st.ObservedGeneration >= d.Generation &&
			st.UpdatedReplicas == replicas &&
			st.AvailableReplicas == replicas &&
			st.Replicas == st.UpdatedReplicas, // no old replicas left
		Object:              d,
		Paused:              d.Spec.Paused,
		Annotations:         d.Annotations,
		TemplateAnnotations: d.Spec.Template.Annotations,
	}
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == deploymentProgressDeadlineExceeded {
			r.Failed = true
		}
	}
	return r
}

func statefulSetRollout(s *appsv1.StatefulSet) *Rollout {
	replicas := ptr.Deref(s.Spec.Replicas, 1)
	st := &s.Status
	r := &Rollout{
		Finished: st.ObservedGeneration >= s.Generation &&
			st.UpdateRevision == st.CurrentRevision &&
			st.ReadyReplicas == replicas,
		Object:              s,
		Annotations:         s.Annotations,
		TemplateAnnotations: s.Spec.Template.Annotations,
	}
	switch u := s.Spec.UpdateStrategy; {
	case u.Type == appsv1.OnDeleteStatefulSetStrategyType:
		r.Manual = "updateStrategy OnDelete"
	case u.RollingUpdate != nil && ptr.Deref(u.RollingUpdate.Partition, 0) > 0:
		r.Manual = fmt.Sprintf("a partitioned rolling update (partition %d)", *u.RollingUpdate.Partition)
	}
	return r
}

func daemonSetRollout(d *appsv1.DaemonSet) *Rollout {
	st := &d.Status
	r := &Rollout{
		Finished: st.ObservedGeneration >= d.Generation &&
			st.UpdatedNumberScheduled == st.DesiredNumberScheduled &&
			st.NumberAvailable == st.DesiredNumberScheduled,
		Object:              d,
		Annotations:         d.Annotations,
		TemplateAnnotations: d.Spec.Template.Annotations,
	}
	if d.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType {
		r.Manual = "updateStrategy OnDelete"
	}
	return r
}

// OptIn is the resolved restart opt-in of a workload.
type OptIn struct {
	// Allowed: the workload may be restarted.
	Allowed bool
	// Explicit: an annotation (the workload's or the namespace's) decided,
	// not the global setting.
	Explicit bool
	// Source says what decided, for logs and Events.
	Source string
}

// ResolveOptIn decides whether a workload may be restarted: its own
// remora.io/restart-outdated annotation, else its namespace's, else the
// global setting. Only "true" and "false" count; any other value is
// ignored, as if the annotation were absent.
func ResolveOptIn(workloadAnnotations, namespaceAnnotations map[string]string, global bool) OptIn {
	for _, level := range []struct {
		name        string
		annotations map[string]string
	}{{"workload", workloadAnnotations}, {"namespace", namespaceAnnotations}} {
		switch v, ok := level.annotations[AnnotationRestartOutdated]; {
		case !ok:
		case v == "true":
			return OptIn{Allowed: true, Explicit: true, Source: level.name + " annotation " + AnnotationRestartOutdated + "=true"}
		case v == "false":
			return OptIn{Allowed: false, Explicit: true, Source: level.name + " annotation " + AnnotationRestartOutdated + "=false"}
		}
	}
	if global {
		return OptIn{Allowed: true, Source: "global setting (--restart-outdated)"}
	}
	return OptIn{Source: "not opted in (set " + AnnotationRestartOutdated + "=true on the workload or namespace)"}
}
