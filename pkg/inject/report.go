package inject

import corev1 "k8s.io/api/core/v1"

// Reason says why a pod was or was not injected. The set is small and fixed
// so that it can label metrics.
type Reason string

// The reasons the engine reports.
const (
	ReasonInjected           Reason = "injected"
	ReasonAlreadyInjected    Reason = "already-injected"
	ReasonIgnoredNamespace   Reason = "ignored-namespace"
	ReasonHostNetwork        Reason = "host-network"
	ReasonPodOptOut          Reason = "pod-opt-out"
	ReasonNamespaceDisabled  Reason = "namespace-disabled"
	ReasonNamespaceNotLabel  Reason = "namespace-not-enabled"
	ReasonOtherRevision      Reason = "other-revision"
	ReasonNeverInjectLabel   Reason = "never-inject-selector"
	ReasonNoContainers       Reason = "no-containers"
	ReasonInvalidAnnotations Reason = "invalid-annotations"
)

// Result is the outcome of Inject.
type Result struct {
	// Pod is the injected pod; when Injected is false it is the input pod,
	// unchanged.
	Pod *corev1.Pod
	// Injected is true when the pod was changed.
	Injected bool
	// Reason is why, from a fixed set.
	Reason Reason
	// Message explains the reason for a person.
	Message string
	// Warnings are short notes for the pod's creator (the webhook returns
	// them as admission warnings, which kubectl prints): deprecated
	// annotations, and settings the pod sets that have no effect in its mode
	// or because it is not injected. Each is one line of at most
	// MaxWarningLength characters that names the annotation, never its
	// value. Nil for a pod without any, and for a refused pod.
	Warnings []string
	// OptInIgnored is set when the pod is not injected although it asks
	// for a sidecar itself (sidecar.istio.io/inject=true): its namespace
	// has istio-injection=disabled, or it uses hostNetwork. Its owner
	// would not expect that, and may need to be told.
	OptInIgnored bool
}
