package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/pkg/config"
)

// Names of what the default template injects.
const (
	ProxyContainerName      = "istio-proxy"
	InitContainerName       = "istio-init"
	ValidationContainerName = "istio-validation"
	// EnvoyReadinessPort is where Envoy reports readiness (/healthz/ready).
	EnvoyReadinessPort = 15021
	// EnvoyPrometheusPort is Envoy's own metrics port.
	EnvoyPrometheusPort = 15090
)

// Request is the input of Inject.
type Request struct {
	// Pod is the pod (or a workload's pod template as a pod). Inject does
	// not modify it.
	Pod *corev1.Pod
	// Namespace is the pod's namespace; pods created by controllers arrive
	// without one, so the webhook passes the request's namespace.
	Namespace string
	// NamespaceLabels are the namespace's labels. Nil means offline
	// injection (the CLI): the namespace's selection is not checked.
	NamespaceLabels map[string]string
	// OwnNamespace is the injector's own namespace, never injected.
	OwnNamespace string
	// Config is the loaded configuration. Whether the proxy is a native
	// sidecar is part of it (Settings.NativeSidecars, resolved by the API
	// server's version at load); the pod's annotation wins.
	Config *config.Config
	// Workload names the pod's owning workload; when empty it is derived
	// from the pod's owner references and generateName.
	Workload Workload
	// Services resolves the Services the pod names in
	// traffic.remora.io/excludeOutboundServices to their addresses; nil
	// when there is no cluster to ask, and a pod that names Services is
	// then refused. It is called only for such a pod.
	Services ServiceResolver
	// AlwaysRender renders even the unchanged built-in template through
	// text/template and the strategic merge instead of placing its fragment
	// directly. The result is the same (a test proves it); it is slower.
	AlwaysRender bool
}

// Inject decides whether the pod is to be injected and, if so, returns the
// injected copy. An *AnnotationError is returned when an annotation is
// invalid, a *PodError when the pod cannot be injected as it is; nothing is
// injected then.
//
// Injection is a pipeline of five named steps, each in its own file:
//
//  1. policy (policy.go): whether the pod is to be injected at all, and
//     if not, why (and, in warnings.go, what the pod sets in vain).
//  2. resolve (resolve.go): validate the pod's annotations and settle every
//     setting once, the pod's annotation over the configuration; resolve
//     the Services the pod excludes (services.go), through
//     Request.Services; note deprecated annotations and those without
//     effect in the pod's mode (warnings.go).
//  3. assemble (assemble.go, containers.go): compute what a template sees:
//     the proxy and capture containers, volumes, labels and annotations.
//  4. place (merge.go): add them to a copy of the pod, directly for the
//     built-in template, else by rendering the templates and merging them.
//  5. finish (finish.go, status.go): order the containers, keep the pod's
//     own over the injected ones, rewrite probes, record the status and
//     check the result as the API server would.
func Inject(req Request) (Result, error) {
	if req.Pod == nil {
		return Result{}, fmt.Errorf("no pod")
	}
	if req.Config == nil {
		return Result{}, fmt.Errorf("no configuration")
	}
	ns := req.namespace()
	if reason, msg, skip := policy(req, ns); skip {
		w, optInIgnored := skipWarnings(req.Pod, reason)
		return Result{Pod: req.Pod, Reason: reason, Message: msg, Warnings: w, OptInIgnored: optInIgnored}, nil
	}
	r, err := resolve(req, ns)
	if err != nil {
		return refused(req.Pod, err)
	}
	data := assemble(req, &r)
	out, touched, err := place(req, &r, data)
	if err != nil {
		return refused(req.Pod, err)
	}
	if err := finish(out, req, &r, data, touched); err != nil {
		return refused(req.Pod, err)
	}
	return Result{Pod: out, Injected: true, Reason: ReasonInjected, Message: "injected " + ProxyContainerName, Warnings: r.warnings}, nil
}

// namespace is the pod's namespace: the request's, else the pod's own.
func (req Request) namespace() string {
	if req.Namespace != "" {
		return req.Namespace
	}
	return req.Pod.Namespace
}

// refused is the result for a pod that is not injected because of err: an
// invalid annotation, a pod that cannot be injected as it is, or a
// template that fails.
func refused(pod *corev1.Pod, err error) (Result, error) {
	return Result{Pod: pod, Reason: ReasonInvalidAnnotations, Message: err.Error()}, err
}
