package testenv

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ProxyContainerName is the name of the injected sidecar.
const ProxyContainerName = "istio-proxy"

// PodReady reports whether the pod's Ready condition is true.
func PodReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ProxyContainer returns the istio-proxy container, native (an init
// container) or classic, or nil when the pod has none.
func ProxyContainer(pod *corev1.Pod) *corev1.Container {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == ProxyContainerName {
				return &cs[i]
			}
		}
	}
	return nil
}

// HasProxy reports whether pod carries the istio-proxy container, as a
// regular or a native sidecar.
func HasProxy(pod *corev1.Pod) bool { return ProxyContainer(pod) != nil }

// EnsureNamespace creates namespace name with labels, or adds labels to the
// namespace if it exists.
func EnsureNamespace(ctx context.Context, c client.Client, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	err := c.Create(ctx, ns)
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("creating namespace %s: %w", name, err)
		}
		return nil
	}
	if len(labels) == 0 {
		return nil
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(ns), ns); err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	for k, v := range labels {
		ns.Labels[k] = v
	}
	if err := c.Update(ctx, ns); err != nil {
		return fmt.Errorf("labelling namespace %s: %w", name, err)
	}
	return nil
}
