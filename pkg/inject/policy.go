package inject

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/remora-mesh/remora/pkg/config"
)

// IgnoredNamespaces are never injected, whatever their labels say.
var IgnoredNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// policy is the pipeline's first step: it returns whether to skip the pod,
// and why. The checks run in order and the first one that skips wins:
// already injected, never-injected namespace, hostNetwork, the pod's
// opt-out, the namespace's selection and revision, neverInjectSelector, and
// a pod without containers.
func policy(req Request, ns string) (Reason, string, bool) {
	pod := req.Pod
	if _, ok := pod.Annotations[AnnotationStatus]; ok {
		return ReasonAlreadyInjected, "the pod already carries " + AnnotationStatus, true
	}
	if slices.Contains(IgnoredNamespaces, ns) || (req.OwnNamespace != "" && ns == req.OwnNamespace) {
		return ReasonIgnoredNamespace, fmt.Sprintf("namespace %q is never injected", ns), true
	}
	if pod.Spec.HostNetwork {
		return ReasonHostNetwork, "pods with hostNetwork share the node's network and are never injected", true
	}
	explicit, set := explicitInject(pod)
	if set && explicit == "false" {
		return ReasonPodOptOut, fmt.Sprintf("the pod sets %s=false", LabelInject), true
	}
	optIn := set && explicit == "true"
	if req.NamespaceLabels != nil {
		if reason, msg, skip := namespacePolicy(req, ns, optIn); skip {
			return reason, msg, true
		}
	}
	if !optIn {
		if reason, msg, skip := selectorPolicy(pod, &req.Config.Settings); skip {
			return reason, msg, true
		}
	}
	if len(pod.Spec.Containers) == 0 {
		return ReasonNoContainers, "the pod has no containers to inject into", true
	}
	return "", "", false
}

// explicitInject is the pod's own choice: its sidecar.istio.io/inject
// label, else the annotation of that name.
func explicitInject(pod *corev1.Pod) (value string, set bool) {
	if v, ok := pod.Labels[LabelInject]; ok {
		return v, true
	}
	if v, ok := pod.Annotations[AnnotationInject]; ok {
		return v, true
	}
	return "", false
}

// namespacePolicy checks the namespace's selection (istio-injection, or a
// revision label on the namespace or the pod) against the revision this
// injector serves; optIn is the pod's own sidecar.istio.io/inject=true.
func namespacePolicy(req Request, ns string, optIn bool) (Reason, string, bool) {
	cfg := req.Config
	rev := cfg.Revision()
	nsInject := req.NamespaceLabels[LabelNamespaceInject]
	nsRev, nsHasRev := req.NamespaceLabels[LabelRevision]
	podRev, podHasRev := req.Pod.Labels[LabelRevision]
	switch {
	case nsInject == "disabled":
		return ReasonNamespaceDisabled, fmt.Sprintf("namespace %q has %s=disabled", ns, LabelNamespaceInject), true
	case nsInject == "enabled":
		if rev != config.DefaultRevision && (!podHasRev || podRev != rev) {
			return ReasonOtherRevision, fmt.Sprintf("namespace %q is enabled for the default revision, this injector serves %q", ns, rev), true
		}
	case nsHasRev:
		if nsRev != rev {
			return ReasonOtherRevision, fmt.Sprintf("namespace %q selects revision %q, this injector serves %q", ns, nsRev, rev), true
		}
	case podHasRev:
		if podRev != rev {
			return ReasonOtherRevision, fmt.Sprintf("the pod selects revision %q, this injector serves %q", podRev, rev), true
		}
	case optIn:
	case cfg.Settings.EnableNamespacesByDefault:
	default:
		return ReasonNamespaceNotLabel, fmt.Sprintf("namespace %q is not labelled %s=enabled or %s=%s", ns, LabelNamespaceInject, LabelRevision, rev), true
	}
	return "", "", false
}

// selectorPolicy skips a pod whose labels match a neverInjectSelector,
// unless they also match an alwaysInjectSelector.
func selectorPolicy(pod *corev1.Pod, s *config.Settings) (Reason, string, bool) {
	podLabels := labels.Set(pod.Labels)
	for _, n := range s.NeverInjectSelector {
		if n.Matches(podLabels) {
			for _, a := range s.AlwaysInjectSelector {
				if a.Matches(podLabels) {
					return "", "", false
				}
			}
			return ReasonNeverInjectLabel, fmt.Sprintf("the pod's labels match neverInjectSelector %q", n.String()), true
		}
	}
	return "", "", false
}
