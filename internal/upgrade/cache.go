package upgrade

import (
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The controller caches, for thousands of pods, only what Evaluate reads.
// Its cache is its own (not the manager's, which the webhook shares), so the
// objects it holds can be stripped: nothing else reads them, and the
// controller only ever writes merge patches computed between two stripped
// copies, which carry nothing but the changed annotations.

// keptTemplateAnnotations are the pod template annotations the controller
// reads and patches.
var keptTemplateAnnotations = []string{AnnotationRestartedFor, AnnotationRestartedAt, AnnotationRestartedBy}

// lastApplied is kubectl's copy of the applied manifest: large, never read.
const lastApplied = corev1.LastAppliedConfigAnnotation

// transform is the cache's transform: it reduces every object to the
// fields the controller reads.
func transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &appsv1.Deployment{
			ObjectMeta: stripMeta(&o.ObjectMeta),
			Spec: appsv1.DeploymentSpec{
				Replicas: o.Spec.Replicas,
				Paused:   o.Spec.Paused,
				Template: stripTemplate(&o.Spec.Template),
			},
			Status: o.Status,
		}, nil
	case *appsv1.StatefulSet:
		return &appsv1.StatefulSet{
			ObjectMeta: stripMeta(&o.ObjectMeta),
			Spec: appsv1.StatefulSetSpec{
				Replicas:       o.Spec.Replicas,
				UpdateStrategy: o.Spec.UpdateStrategy,
				Template:       stripTemplate(&o.Spec.Template),
			},
			Status: o.Status,
		}, nil
	case *appsv1.DaemonSet:
		return &appsv1.DaemonSet{
			ObjectMeta: stripMeta(&o.ObjectMeta),
			Spec: appsv1.DaemonSetSpec{
				UpdateStrategy: o.Spec.UpdateStrategy,
				Template:       stripTemplate(&o.Spec.Template),
			},
			Status: o.Status,
		}, nil
	case *metav1.PartialObjectMetadata:
		if o.Kind == "Namespace" {
			// Labels decide selection, annotations the opt-in.
			o.ManagedFields = nil
			if _, ok := o.Annotations[lastApplied]; ok {
				o.Annotations = maps.Clone(o.Annotations)
				delete(o.Annotations, lastApplied)
			}
			return o, nil
		}
		// ReplicaSets and Jobs: only the owner is read.
		return &metav1.PartialObjectMetadata{
			TypeMeta: o.TypeMeta,
			ObjectMeta: metav1.ObjectMeta{
				Name: o.Name, Namespace: o.Namespace, UID: o.UID, ResourceVersion: o.ResourceVersion,
				OwnerReferences: controllerRefs(o.OwnerReferences),
			},
		}, nil
	}
	return obj, nil
}

func stripMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	out := metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Generation: m.Generation, DeletionTimestamp: m.DeletionTimestamp, Annotations: m.Annotations,
	}
	if _, ok := out.Annotations[lastApplied]; ok {
		out.Annotations = maps.Clone(out.Annotations)
		delete(out.Annotations, lastApplied)
	}
	return out
}

func stripTemplate(t *corev1.PodTemplateSpec) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: keep(t.Annotations, keptTemplateAnnotations)}}
}

func keep(m map[string]string, keys []string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := m[k]; ok {
			if out == nil {
				out = make(map[string]string, len(keys))
			}
			out[k] = v
		}
	}
	return out
}

func controllerRefs(refs []metav1.OwnerReference) []metav1.OwnerReference {
	for i := range refs {
		if refs[i].Controller != nil && *refs[i].Controller {
			return []metav1.OwnerReference{refs[i]}
		}
	}
	return nil
}

// cachedTypes are the objects the controller's cache holds.
func cachedTypes() []client.Object {
	return []client.Object{
		&appsv1.Deployment{},
		&appsv1.StatefulSet{},
		&appsv1.DaemonSet{},
		metadataOf(corev1.SchemeGroupVersion.WithKind("Namespace")),
		metadataOf(appsv1.SchemeGroupVersion.WithKind(KindReplicaSet)),
		metadataOf(batchv1.SchemeGroupVersion.WithKind(KindJob)),
	}
}
