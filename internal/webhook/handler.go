// Package webhook is Remora's admission adapter: an admission.Handler that
// decodes the pod of an AdmissionReview, looks up its namespace's labels in
// the manager's cache, runs the pure injection engine (pkg/inject) with the
// current configuration and answers with a JSON patch computed from the raw
// original and the injected pod, with the engine's warnings (kubectl prints
// them). It also defines the injection metrics, and the Events (events.go)
// that tell a workload's owner of the pods refused, or skipped against their
// own request, off the admission path.
//
// Setup registers it, behind internal/guard, on the manager's webhook server
// (controller-runtime's, built by Options.Server), which owns TLS,
// AdmissionReview decoding and encoding, and request metrics. Options carry
// the server's flags (AddFlags, Validate) and the handler's inputs.
package webhook

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/remora-mesh/remora/internal/patch"
	"github.com/remora-mesh/remora/pkg/inject"
)

// Reasons the handler reports in addition to the engine's inject.Reason set,
// for requests that never reach the engine. Like the engine's, the set is
// small and fixed so that it can label metrics.
const (
	// ReasonNotPodCreate: the request is not the creation of a pod (another
	// operation, resource or a subresource); it is allowed unchanged.
	ReasonNotPodCreate inject.Reason = "not-pod-create"
	// ReasonMalformedRequest: the request or its pod could not be decoded.
	ReasonMalformedRequest inject.Reason = "malformed-request"
	// ReasonNamespaceLookup: the namespace's labels could not be read.
	ReasonNamespaceLookup inject.Reason = "namespace-lookup-failed"
	// ReasonInternal: the engine or the encoding of its result failed.
	ReasonInternal inject.Reason = "internal-error"
)

// Values of the result label of the injection metrics.
const (
	ResultInjected = "injected"
	ResultSkipped  = "skipped"
	ResultDenied   = "denied"
	ResultError    = "error"
)

var (
	podResource = metav1.GroupVersionResource{Group: "", Version: "v1", Resource: "pods"}
	podKind     = metav1.GroupVersionKind{Group: "", Version: "v1", Kind: "Pod"}
)

// Handler injects pods on admission. It implements admission.Handler.
type Handler struct {
	opts Options
	// events, when not nil, is told of the pods whose owner should hear of
	// their admission (Setup sets it with Options.WorkloadEvents).
	events *workloadEvents
}

var _ admission.Handler = (*Handler)(nil)

// NewHandler returns a Handler, or an error naming a missing option. It reads
// the handler's options only (Config, Namespaces, Uncached, OwnNamespace,
// Services), not the server's.
func NewHandler(opts Options) (*Handler, error) {
	if opts.Config == nil {
		return nil, errors.New("webhook: Options.Config is required")
	}
	if opts.Namespaces == nil {
		return nil, errors.New("webhook: Options.Namespaces is required")
	}
	return &Handler{opts: opts}, nil
}

// Handle implements admission.Handler: it injects a created pod, allows
// everything else unchanged, denies a pod with invalid annotations and
// reports other failures as errors. It never panics on malformed input.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	o := h.handle(ctx, req)
	injectionsTotal.WithLabelValues(o.result, string(o.reason)).Inc()
	injectionDuration.Observe(time.Since(start).Seconds())
	if o.event != "" && h.events != nil && (req.DryRun == nil || !*req.DryRun) {
		h.events.report(notice{reason: o.event, namespace: cmp.Or(req.Namespace, o.pod.Namespace), pod: o.pod.Name,
			owners: o.pod.OwnerReferences, refused: o.err, skipped: o.reason})
	}

	// admission.Webhook's logger already carries the request's uid
	// (requestID), namespace, name and user.
	logger := log.FromContext(ctx).WithValues("result", o.result, "reason", o.reason)
	if o.pod != nil && req.Name == "" {
		logger = logger.WithValues("generateName", o.pod.GenerateName)
	}
	switch o.result {
	case ResultInjected:
		logger.Info("Injected pod")
	case ResultDenied:
		logger.Info("Denied pod", deniedKeys(o.err)...)
	case ResultError:
		logger.Error(o.err, "Admission failed")
	default:
		logger.V(1).Info("Skipped", "message", o.message)
	}
	return o.resp
}

// deniedKeys are the log keys of a denial: the names of the invalid
// annotations and what is wrong with each, never their values (a value may
// hold anything a user pasted), or why the pod cannot be injected.
func deniedKeys(err error) []any {
	var ae *inject.AnnotationError
	if !errors.As(err, &ae) {
		return []any{"message", err.Error()}
	}
	names := make([]string, len(ae.Errors))
	reasons := make([]string, len(ae.Errors))
	for i, fe := range ae.Errors {
		names[i] = fe.Annotation
		reasons[i] = fe.Annotation + ": " + fe.Reason()
	}
	return []any{"annotations", names, "reasons", reasons}
}

// outcome is what one admission came to, for the response, the metrics and
// the log.
type outcome struct {
	resp    admission.Response
	result  string
	reason  inject.Reason
	message string
	err     error
	pod     *corev1.Pod
	// event is the reason of the Event to write on the pod's workload, if
	// any (events.go).
	event string
}

func (h *Handler) handle(ctx context.Context, req admission.Request) outcome {
	if req.Kind.Kind == "" && req.Resource.Resource == "" {
		err := errors.New("malformed AdmissionReview: no request, kind or resource")
		return outcome{resp: admission.Errored(http.StatusBadRequest, err), result: ResultError, reason: ReasonMalformedRequest, err: err}
	}
	if req.Operation != admissionv1.Create || req.SubResource != "" || req.Resource != podResource {
		msg := fmt.Sprintf("%s of %s%s is not injected", req.Operation, req.Resource.Resource, subresource(req.SubResource))
		return outcome{resp: admission.Allowed(msg), result: ResultSkipped, reason: ReasonNotPodCreate, message: msg}
	}
	if req.Kind != podKind {
		err := fmt.Errorf("malformed AdmissionReview: a creation of pods whose request.kind is %s, not v1 Pod", kindString(req.Kind))
		return outcome{resp: admission.Errored(http.StatusBadRequest, err), result: ResultError, reason: ReasonMalformedRequest, err: err}
	}
	if len(req.Object.Raw) == 0 {
		err := errors.New("malformed AdmissionReview: the request has no object")
		return outcome{resp: admission.Errored(http.StatusBadRequest, err), result: ResultError, reason: ReasonMalformedRequest, err: err}
	}
	pod := &corev1.Pod{}
	if err := decodePod(req.Object.Raw, pod); err != nil {
		err = fmt.Errorf("decoding the pod: %w", err)
		return outcome{resp: admission.Errored(http.StatusBadRequest, err), result: ResultError, reason: ReasonMalformedRequest, err: err}
	}
	// Pods created by controllers arrive without a namespace; the request
	// always has it.
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	if ns == "" {
		err := errors.New("malformed AdmissionReview: a pod creation without a namespace")
		return outcome{resp: admission.Errored(http.StatusBadRequest, err), result: ResultError, reason: ReasonMalformedRequest, err: err, pod: pod}
	}
	nsLabels, err := h.namespaceLabels(ctx, ns)
	if err != nil {
		return outcome{resp: admission.Errored(http.StatusInternalServerError, err), result: ResultError, reason: ReasonNamespaceLookup, err: err, pod: pod}
	}

	res, err := inject.Inject(inject.Request{
		Pod:             pod,
		Namespace:       ns,
		NamespaceLabels: nsLabels,
		OwnNamespace:    h.opts.OwnNamespace,
		Config:          h.opts.Config(),
		Services:        h.services(ctx, pod),
	})
	switch {
	case inject.IsRefused(err):
		// An invalid annotation, or a pod that cannot be injected as it is:
		// the user's to fix; the message names what and why.
		event := EventNotInjectable
		if ae := (*inject.AnnotationError)(nil); errors.As(err, &ae) {
			event = EventInvalidAnnotation
		}
		return outcome{resp: admission.Denied(err.Error()), result: ResultDenied, reason: inject.ReasonInvalidAnnotations, err: err, pod: pod, event: event}
	case err != nil:
		err = fmt.Errorf("injecting the pod: %w", err)
		return outcome{resp: admission.Errored(http.StatusInternalServerError, err), result: ResultError, reason: ReasonInternal, err: err, pod: pod}
	case !res.Injected:
		resp := admission.Allowed(res.Message)
		resp.Warnings = res.Warnings
		o := outcome{resp: resp, result: ResultSkipped, reason: res.Reason, message: res.Message, pod: pod}
		if res.OptInIgnored {
			o.event = EventOptInIgnored
		}
		return o
	}
	// The patch is built from the fields injection changed; it equals
	// PatchResponseFromRaw's generic diff in effect (internal/patch proves it).
	ops, err := patch.Operations(req.Object.Raw, pod, res.Pod)
	if err != nil {
		err = fmt.Errorf("building the patch: %w", err)
		return outcome{resp: admission.Errored(http.StatusInternalServerError, err), result: ResultError, reason: ReasonInternal, err: err, pod: pod}
	}
	resp, err := patchedResponse(ops)
	if err != nil {
		return outcome{resp: admission.Errored(http.StatusInternalServerError, err), result: ResultError, reason: ReasonInternal, err: err, pod: pod}
	}
	resp.Warnings = res.Warnings // shown by kubectl; nil for most pods
	return outcome{resp: resp, result: ResultInjected, reason: res.Reason, message: res.Message, pod: pod}
}

var jsonPatchType = admissionv1.PatchTypeJSONPatch

// patchedResponse is admission.Patched("", ops...) with the patch already encoded
// (patch.Marshal, one pass): Response.Complete leaves a response without
// Patches as it is.
func patchedResponse(ops []jsonpatch.Operation) (admission.Response, error) {
	b, err := patch.Marshal(ops)
	if err != nil {
		return admission.Response{}, err
	}
	resp := admission.Allowed("")
	resp.Patch, resp.PatchType = b, &jsonPatchType
	return resp, nil
}

// namespaceLabels returns the labels of namespace ns from the cache, or from
// the API server when the cache has not seen the namespace yet. The result is
// never nil, which tells the engine to apply the namespace policy.
func (h *Handler) namespaceLabels(ctx context.Context, ns string) (map[string]string, error) {
	obj := namespaceMetadata()
	err := h.opts.Namespaces.Get(ctx, client.ObjectKey{Name: ns}, obj)
	if apierrors.IsNotFound(err) && h.opts.Uncached != nil {
		err = h.opts.Uncached.Get(ctx, client.ObjectKey{Name: ns}, obj)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the labels of namespace %q: %w", ns, err)
	}
	if obj.Labels == nil {
		return map[string]string{}, nil
	}
	return obj.Labels, nil
}

// namespaceMetadata is an empty namespace as metadata only: what the handler
// reads and the manager's cache holds.
func namespaceMetadata() *metav1.PartialObjectMetadata {
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return obj
}

func kindString(k metav1.GroupVersionKind) string {
	if k.Group == "" {
		return k.Version + " " + k.Kind
	}
	return k.Group + "/" + k.Version + " " + k.Kind
}

func subresource(s string) string {
	if s == "" {
		return ""
	}
	return "/" + s
}
