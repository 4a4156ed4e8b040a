package upgrade

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/pkg/config"
)

// PodSource returns the injected pods of a snapshot.
type PodSource func(ctx context.Context) ([]*PodInfo, error)

// ListPods is the PodSource that lists whole pods from r (in namespace, or
// in every namespace when it is empty) and keeps the injected ones.
func ListPods(r client.Reader, namespace string) PodSource {
	return func(ctx context.Context) ([]*PodInfo, error) {
		pods := &corev1.PodList{}
		if err := r.List(ctx, pods, client.InNamespace(namespace)); err != nil {
			return nil, fmt.Errorf("listing pods: %w", err)
		}
		var out []*PodInfo
		for i := range pods.Items {
			if info := PodInfoFromPod(&pods.Items[i]); info != nil {
				out = append(out, info)
			}
		}
		return out, nil
	}
}

// ListSnapshot reads what Evaluate needs for cfg: the namespaces' metadata,
// the pods from pods, the Deployments, StatefulSets and DaemonSets, and the
// ReplicaSets' and Jobs' metadata, from r, in namespace or, when it is
// empty, in every namespace; and, unless services is nil, the current
// addresses of the Services the pods exclude from the capture by name. It
// is the one snapshot lister: the status command reads the API server with
// it, the controller its cache and its pod store. The lists are read-only
// (Evaluate does not modify them), so a cache's objects are not deep-copied.
func ListSnapshot(ctx context.Context, r client.Reader, cfg *config.Config, namespace string, pods PodSource, services ServiceSource) (*Snapshot, error) {
	s := &Snapshot{Config: cfg}
	if namespace != "" {
		ns := metadataOf(corev1.SchemeGroupVersion.WithKind("Namespace"))
		if err := r.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
			return nil, fmt.Errorf("reading namespace %s: %w", namespace, err)
		}
		s.Namespaces = []metav1.PartialObjectMetadata{*ns}
	} else {
		nss := &metav1.PartialObjectMetadataList{}
		nss.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
		if err := r.List(ctx, nss, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing namespaces: %w", err)
		}
		s.Namespaces = nss.Items
	}
	var (
		deps = &appsv1.DeploymentList{}
		sts  = &appsv1.StatefulSetList{}
		dss  = &appsv1.DaemonSetList{}
		rss  = &metav1.PartialObjectMetadataList{}
		jobs = &metav1.PartialObjectMetadataList{}
	)
	rss.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ReplicaSetList"))
	jobs.SetGroupVersionKind(batchv1JobGVK.GroupVersion().WithKind("JobList"))
	for _, l := range []struct {
		what string
		list client.ObjectList
	}{{"Deployments", deps}, {"StatefulSets", sts}, {"DaemonSets", dss}, {"ReplicaSets", rss}, {"Jobs", jobs}} {
		if err := r.List(ctx, l.list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing %s: %w", l.what, err)
		}
	}
	var err error
	if s.Pods, err = pods(ctx); err != nil {
		return nil, err
	}
	s.Deployments, s.StatefulSets, s.DaemonSets = deps.Items, sts.Items, dss.Items
	s.ReplicaSets, s.Jobs = rss.Items, jobs.Items
	if services != nil {
		if s.Services, err = ResolveServices(ctx, s.Pods, services); err != nil {
			return nil, err
		}
	}
	return s, nil
}
