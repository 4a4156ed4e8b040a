package webhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/pkg/inject"
)

// Reasons of the Events the webhook writes on the workload that owns a pod
// (an events.k8s.io/v1 Event of type Warning, action Inject). The set is
// fixed, to label metrics.
const (
	// EventInvalidAnnotation: a pod was refused for an invalid annotation.
	// The note names the annotations, never their values.
	EventInvalidAnnotation = "InvalidSidecarAnnotation"
	// EventNotInjectable: a pod was refused because it cannot be injected
	// as it is (a container or volume named like an injected one, ...).
	EventNotInjectable = "SidecarNotInjectable"
	// EventOptInIgnored: a pod asked for a sidecar
	// (sidecar.istio.io/inject=true) and was created without one: its
	// namespace has istio-injection=disabled, or it uses hostNetwork.
	EventOptInIgnored = "SidecarOptInIgnored"
)

// eventReasons are the Event reasons, for the metric's series.
var eventReasons = []string{EventInvalidAnnotation, EventNotInjectable, EventOptInIgnored}

// DefaultWorkloadEventInterval is how long a workload's Event of one reason
// stands for every later one (--workload-event-interval).
const DefaultWorkloadEventInterval = 10 * time.Minute

// EventsController names the webhook as the Events' reporting controller.
const EventsController = "remora.io/injector"

// The bounds of Event emission: admissions put notices on a queue of
// eventQueueSize and never wait; one worker resolves owners and records
// Events, at most eventRate a second (each may cost one read of the API
// server); it remembers up to eventTracked workloads.
const (
	eventQueueSize     = 256
	eventRate          = 5
	eventBurst         = 10
	eventTracked       = 4096
	ownerLookupTimeout = 5 * time.Second
	eventAction        = "Inject"
	maxNamedInNote     = 5
)

// Results of remora_workload_events_total.
const (
	eventRecorded    = "recorded"
	eventRateLimited = "rate-limited"
	eventDropped     = "dropped"
	eventNoObject    = "no-object"
)

// notice is what an admission tells the workload Events: the pod as it
// arrived (its namespace, its name when it has one, its owner references)
// and what happened to it. The worker makes the Event's note from it.
type notice struct {
	reason    string
	namespace string
	pod       string
	owners    []metav1.OwnerReference
	// refused is the engine's error, for the names of the invalid
	// annotations; skipped is the engine's reason for a pod not injected.
	refused error
	skipped inject.Reason
}

// workloadEvents writes an Event on the workload that owns a pod the
// webhook refused, or skipped although it asked for a sidecar: the pod's
// creator is told (a denial, a warning) but the workload's owner would
// otherwise see nothing but pods that never come, or come without their
// sidecar. It runs beside the admissions, never in their way: report
// queues a notice or drops it (counted), and one worker does the rest.
//
// A ReplicaSet's or Job's pod is reported on the controller of that
// ReplicaSet or Job (a Deployment, a CronJob), read from the API server
// (metadata only); another controller's pod on that controller; a pod
// without one on the pod. Each workload gets at most one Event per reason
// per interval: the first; the rest are counted (rate-limited) without a
// read of the API server, since the pod's own owner is remembered too.
type workloadEvents struct {
	queue    chan notice
	recorder events.EventRecorder
	reader   client.Reader
	interval time.Duration
	limiter  *rate.Limiter
	log      logr.Logger
	now      func() time.Time
	// last is when an Event of a reason was last recorded for a workload,
	// or a pod's owner last looked up; only the worker touches it.
	last map[eventKey]time.Time
}

// eventKey identifies a workload (by UID when known) and an Event reason.
type eventKey struct {
	uid                   types.UID
	namespace, kind, name string
	reason                string
}

func newWorkloadEvents(recorder events.EventRecorder, reader client.Reader, interval time.Duration, log logr.Logger) *workloadEvents {
	return &workloadEvents{
		queue:    make(chan notice, eventQueueSize),
		recorder: recorder,
		reader:   reader,
		interval: interval,
		limiter:  rate.NewLimiter(eventRate, eventBurst),
		log:      log,
		now:      time.Now,
		last:     map[eventKey]time.Time{},
	}
}

// report queues n for the worker, or drops and counts it when the queue is
// full. It never blocks.
func (e *workloadEvents) report(n notice) {
	select {
	case e.queue <- n:
	default:
		workloadEventsTotal.WithLabelValues(n.reason, eventDropped).Inc()
	}
}

// Start runs the worker until ctx ends. It implements manager.Runnable.
func (e *workloadEvents) Start(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-e.queue:
			e.process(ctx, n)
		}
	}
}

// NeedLeaderElection is false: every replica reports the admissions it
// served.
func (e *workloadEvents) NeedLeaderElection() bool { return false }

// process records the Event of one notice, unless its workload had one of
// the same reason within the interval.
func (e *workloadEvents) process(ctx context.Context, n notice) {
	owner := controllerOf(n.owners)
	first := eventKey{namespace: n.namespace, kind: "Pod", name: n.pod, reason: n.reason}
	if owner != nil {
		first = eventKey{uid: owner.UID, namespace: n.namespace, kind: owner.Kind, name: owner.Name, reason: n.reason}
	} else if n.pod == "" {
		workloadEventsTotal.WithLabelValues(n.reason, eventNoObject).Inc()
		return
	}
	if e.recent(first) {
		workloadEventsTotal.WithLabelValues(n.reason, eventRateLimited).Inc()
		return
	}
	if err := e.limiter.Wait(ctx); err != nil {
		return // shutting down
	}
	target := e.workload(ctx, n.namespace, n.pod, owner)
	key := eventKey{uid: target.UID, namespace: target.Namespace, kind: target.Kind, name: target.Name, reason: n.reason}
	if key != first && e.recent(key) {
		workloadEventsTotal.WithLabelValues(n.reason, eventRateLimited).Inc()
		return
	}
	e.recorder.Eventf(target, nil, corev1.EventTypeWarning, n.reason, eventAction, "%s", eventNote(n))
	workloadEventsTotal.WithLabelValues(n.reason, eventRecorded).Inc()
}

// recent reports whether k had an Event (or a look-up) within the interval,
// and if not, records that it has one now. When it tracks eventTracked
// workloads, it forgets those whose interval has passed; if none has, it
// reports k as recent: a flood of distinct workloads is bounded too.
func (e *workloadEvents) recent(k eventKey) bool {
	now := e.now()
	if t, ok := e.last[k]; ok && now.Sub(t) < e.interval {
		return true
	}
	if len(e.last) >= eventTracked {
		for old, t := range e.last {
			if now.Sub(t) >= e.interval {
				delete(e.last, old)
			}
		}
		if len(e.last) >= eventTracked {
			return true
		}
	}
	e.last[k] = now
	return false
}

// workload is the object an Event about a pod regards: the controller of
// the pod's ReplicaSet or Job when it has one, else the pod's controller,
// else the pod. An owner that cannot be read (gone, or not readable) is
// reported on as it is.
func (e *workloadEvents) workload(ctx context.Context, ns, pod string, owner *metav1.OwnerReference) *corev1.ObjectReference {
	if owner == nil {
		return &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: ns, Name: pod}
	}
	ref := reference(ns, owner)
	gv, err := schema.ParseGroupVersion(owner.APIVersion)
	if err != nil || !ownedByController(gv.WithKind(owner.Kind)) {
		return ref
	}
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(gv.WithKind(owner.Kind))
	ctx, cancel := context.WithTimeout(ctx, ownerLookupTimeout)
	defer cancel()
	if err := e.reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: owner.Name}, obj); err != nil {
		e.log.V(1).Info("Could not read a pod's owner; reporting on it", "owner", owner.Kind+" "+ns+"/"+owner.Name, "error", err.Error())
		return ref
	}
	if obj.UID != owner.UID {
		return ref // another object of that name: the pod's owner is gone
	}
	if up := controllerOf(obj.OwnerReferences); up != nil {
		return reference(ns, up)
	}
	return ref
}

// ownedByController reports whether objects of kind are made by another
// controller, to be followed to it: ReplicaSets (Deployments) and Jobs
// (CronJobs). The chart grants get on those two only.
func ownedByController(kind schema.GroupVersionKind) bool {
	switch kind.GroupKind() {
	case schema.GroupKind{Group: "apps", Kind: "ReplicaSet"}, schema.GroupKind{Group: "batch", Kind: "Job"}:
		return true
	}
	return false
}

// controllerOf is the owner reference marked controller, or nil.
func controllerOf(refs []metav1.OwnerReference) *metav1.OwnerReference {
	for i := range refs {
		if c := refs[i].Controller; c != nil && *c {
			return &refs[i]
		}
	}
	return nil
}

func reference(ns string, o *metav1.OwnerReference) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: o.APIVersion, Kind: o.Kind, Namespace: ns, Name: o.Name, UID: o.UID}
}

// eventNote says what happened to the pod, without an annotation's value:
// a value may hold anything a user pasted, and Events are read more widely
// than the denial the pod's creator gets.
func eventNote(n notice) string {
	switch n.reason {
	case EventInvalidAnnotation:
		return "The sidecar injector refused a pod with invalid annotations: " + annotationNames(n.refused) +
			". The pod's creator was told why (a controller's FailedCreate Events show it)."
	case EventNotInjectable:
		return "The sidecar injector refused a pod that cannot be injected as it is (such as a container or volume " +
			"named like an injected one). The pod's creator was told why (a controller's FailedCreate Events show it)."
	}
	why := "its namespace has " + inject.LabelNamespaceInject + "=disabled"
	if n.skipped == inject.ReasonHostNetwork {
		why = "it uses hostNetwork, and such pods are never injected"
	}
	return "A pod asks for a sidecar (" + inject.LabelInject + "=true) but was created without one: " + why + "."
}

// annotationNames lists the invalid annotations of an *inject.AnnotationError
// once each, in the engine's order: the first maxNamedInNote, the rest
// counted.
func annotationNames(err error) string {
	var ae *inject.AnnotationError
	if !errors.As(err, &ae) {
		return "(unknown)"
	}
	var names []string
	for _, fe := range ae.Errors {
		if !slices.Contains(names, fe.Annotation) {
			names = append(names, fe.Annotation)
		}
	}
	if len(names) > maxNamedInNote {
		return strings.Join(names[:maxNamedInNote], ", ") + fmt.Sprintf(" and %d more", len(names)-maxNamedInNote)
	}
	return strings.Join(names, ", ")
}
