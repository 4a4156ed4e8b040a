package webhook

import (
	"context"
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/pkg/inject"
)

// services returns the resolver of the Services the pod excludes from the
// capture by name; nil, at no cost, for a pod that names none.
func (h *Handler) services(ctx context.Context, pod *corev1.Pod) inject.ServiceResolver {
	if _, ok := pod.Annotations[inject.AnnotationExcludeOutboundServices]; !ok {
		return nil
	}
	if h.opts.Services == nil {
		return featureOff{}
	}
	return h.opts.Services.For(ctx)
}

// featureOff refuses every Service: the injector runs without
// --exclude-services, so it holds no cache to resolve them from.
type featureOff struct{}

func (featureOff) ServiceAddresses(ref inject.ServiceRef) ([]netip.Addr, error) {
	return nil, &inject.ServiceRefusal{Ref: ref, Reason: "cannot be resolved: this injector runs without --exclude-services " +
		"(the chart's excludeServices.enabled); ask its operator to turn it on, or list the Service's addresses in " +
		inject.AnnotationExcludeOutboundCIDRs + " instead"}
}
