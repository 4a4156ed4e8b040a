package webhook

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/remora-mesh/remora/pkg/inject"
)

// recordedEvent is one call of an Event recorder.
type recordedEvent struct {
	regarding                 *corev1.ObjectReference
	eventType, reason, action string
	note                      string
	related                   runtime.Object
	formatArguments           bool
}

// eventRecorder records the Events it is given, as client-go's recorder
// would write them.
type eventRecorder struct{ events []recordedEvent }

func (r *eventRecorder) Eventf(regarding, related runtime.Object, eventType, reason, action, note string, args ...any) {
	ref, _ := regarding.(*corev1.ObjectReference)
	e := recordedEvent{regarding: ref, related: related, eventType: eventType, reason: reason, action: action, note: note}
	if note == "%s" && len(args) == 1 {
		e.note = args[0].(string)
	} else {
		e.formatArguments = true // a note must never be a format: an annotation name holds no %, a value might
	}
	r.events = append(r.events, e)
}

// countingReader counts the reads of the API server.
type countingReader struct {
	client.Reader
	gets atomic.Int32
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.gets.Add(1)
	return c.Reader.Get(ctx, key, obj, opts...)
}

const (
	deploymentUID = types.UID("0a0a0a0a-0000-4000-8000-00000000d001")
	replicaSetUID = types.UID("8f1d2c8e-3b0a-4d2f-9a51-7c1e6f0d4b21") // the reference review's pod's owner
	cronJobUID    = types.UID("0a0a0a0a-0000-4000-8000-00000000c001")
	jobUID        = types.UID("0a0a0a0a-0000-4000-8000-00000000j001")
)

func controllerRef(apiVersion, kind, name string, uid types.UID) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: uid, Controller: ptr.To(true)}
}

// owners is what the API server holds: the reference pod's ReplicaSet, of
// Deployment reviews-v1, and a CronJob's Job, in namespace default.
func owners() client.Reader {
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
		Namespace: "default", Name: "reviews-v1-5b5d6494f4", UID: replicaSetUID,
		OwnerReferences: []metav1.OwnerReference{controllerRef("apps/v1", "Deployment", "reviews-v1", deploymentUID)},
	}}
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{
		Namespace: "default", Name: "report-29000000", UID: jobUID,
		OwnerReferences: []metav1.OwnerReference{controllerRef("batch/v1", "CronJob", "report", cronJobUID)},
	}}
	orphan := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "migrate", UID: "0a0a0a0a-0000-4000-8000-00000000j002"}}
	return fake.NewClientBuilder().WithObjects(rs, job, orphan).Build()
}

// newTestEvents returns workload Events on the owners above, with a clock
// the test moves.
func newTestEvents(t *testing.T) (*workloadEvents, *eventRecorder, *countingReader, *time.Time) {
	t.Helper()
	rec := &eventRecorder{}
	reader := &countingReader{Reader: owners()}
	e := newWorkloadEvents(rec, reader, time.Minute, logr.Discard())
	e.limiter.SetLimit(1e6) // the tests measure the workload limit, not the API rate
	e.limiter.SetBurst(1e6)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.now = func() time.Time { return now }
	return e, rec, reader, &now
}

// drain processes every queued notice, as the worker does.
func drain(t *testing.T, e *workloadEvents) {
	t.Helper()
	for {
		select {
		case n := <-e.queue:
			e.process(t.Context(), n)
		default:
			return
		}
	}
}

func refusal() error {
	return &inject.AnnotationError{Errors: []inject.FieldError{{Annotation: inject.AnnotationProxyCPU, Value: "lots", Allowed: "a quantity"}}}
}

// TestWorkloadEventsRegardTheWorkload checks which object the Event about a
// pod regards: a ReplicaSet's or Job's controller, read from the API
// server; another controller as the pod names it; the pod without one.
func TestWorkloadEventsRegardTheWorkload(t *testing.T) {
	tests := []struct {
		name   string
		pod    string
		owners []metav1.OwnerReference
		want   *corev1.ObjectReference // nil: no Event
		gets   int32
	}{
		{name: "a ReplicaSet's pod: its Deployment",
			owners: []metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", "reviews-v1-5b5d6494f4", replicaSetUID)},
			want:   &corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "default", Name: "reviews-v1", UID: deploymentUID}, gets: 1},
		{name: "a Job's pod: its CronJob",
			owners: []metav1.OwnerReference{controllerRef("batch/v1", "Job", "report-29000000", jobUID)},
			want:   &corev1.ObjectReference{APIVersion: "batch/v1", Kind: "CronJob", Namespace: "default", Name: "report", UID: cronJobUID}, gets: 1},
		{name: "a Job without a controller: the Job",
			owners: []metav1.OwnerReference{controllerRef("batch/v1", "Job", "migrate", "0a0a0a0a-0000-4000-8000-00000000j002")},
			want:   &corev1.ObjectReference{APIVersion: "batch/v1", Kind: "Job", Namespace: "default", Name: "migrate", UID: "0a0a0a0a-0000-4000-8000-00000000j002"}, gets: 1},
		{name: "a StatefulSet's pod: the StatefulSet, without a read",
			owners: []metav1.OwnerReference{controllerRef("apps/v1", "StatefulSet", "db", "0a0a0a0a-0000-4000-8000-00000000s001")},
			want:   &corev1.ObjectReference{APIVersion: "apps/v1", Kind: "StatefulSet", Namespace: "default", Name: "db", UID: "0a0a0a0a-0000-4000-8000-00000000s001"}},
		{name: "a DaemonSet's pod: the DaemonSet",
			owners: []metav1.OwnerReference{controllerRef("apps/v1", "DaemonSet", "agent", "0a0a0a0a-0000-4000-8000-00000000a001")},
			want:   &corev1.ObjectReference{APIVersion: "apps/v1", Kind: "DaemonSet", Namespace: "default", Name: "agent", UID: "0a0a0a0a-0000-4000-8000-00000000a001"}},
		{name: "another controller's pod: that controller",
			owners: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "not-the-controller", UID: "x"},
				controllerRef("argoproj.io/v1alpha1", "Rollout", "web", "0a0a0a0a-0000-4000-8000-00000000r001")},
			want: &corev1.ObjectReference{APIVersion: "argoproj.io/v1alpha1", Kind: "Rollout", Namespace: "default", Name: "web", UID: "0a0a0a0a-0000-4000-8000-00000000r001"}},
		{name: "a ReplicaSet that is gone: the ReplicaSet",
			owners: []metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", "gone-1", "0a0a0a0a-0000-4000-8000-00000000b001")},
			want:   &corev1.ObjectReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Namespace: "default", Name: "gone-1", UID: "0a0a0a0a-0000-4000-8000-00000000b001"}, gets: 1},
		{name: "a ReplicaSet replaced by another of its name: the pod's ReplicaSet",
			owners: []metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", "reviews-v1-5b5d6494f4", "0a0a0a0a-0000-4000-8000-00000000b002")},
			want:   &corev1.ObjectReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Namespace: "default", Name: "reviews-v1-5b5d6494f4", UID: "0a0a0a0a-0000-4000-8000-00000000b002"}, gets: 1},
		{name: "a pod without a controller: the pod", pod: "debug",
			owners: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "cm", UID: "x"}},
			want:   &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "default", Name: "debug"}},
		{name: "a pod without a controller or a name: none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, rec, reader, _ := newTestEvents(t)
			noObject := counter(t, workloadEventsTotal.WithLabelValues(EventInvalidAnnotation, eventNoObject))
			e.report(notice{reason: EventInvalidAnnotation, namespace: "default", pod: tt.pod, owners: tt.owners, refused: refusal()})
			drain(t, e)
			if got := reader.gets.Load(); got != tt.gets {
				t.Errorf("%d reads of the API server, want %d", got, tt.gets)
			}
			if tt.want == nil {
				if len(rec.events) != 0 {
					t.Fatalf("Events %+v, want none", rec.events)
				}
				if got := counter(t, workloadEventsTotal.WithLabelValues(EventInvalidAnnotation, eventNoObject)); got != noObject+1 {
					t.Errorf("no-object went from %v to %v", noObject, got)
				}
				return
			}
			if len(rec.events) != 1 {
				t.Fatalf("%d Events, want 1", len(rec.events))
			}
			if got := *rec.events[0].regarding; got != *tt.want {
				t.Errorf("the Event regards %+v, want %+v", got, *tt.want)
			}
		})
	}
}

// TestWorkloadEventReasons checks the Event of each admission that gets
// one, through the handler: its reason, type, action and note, which names
// the annotations and never their values; and that the others get none.
func TestWorkloadEventReasons(t *testing.T) {
	enabled := map[string]string{inject.LabelNamespaceInject: "enabled"}
	disabled := map[string]string{inject.LabelNamespaceInject: "disabled"}
	tests := []struct {
		name    string
		labels  map[string]string
		edit    func(req *admissionv1.AdmissionRequest, pod map[string]any)
		reason  string // "": no Event
		note    []string
		notNote []string
	}{
		{name: "invalid annotations", labels: enabled, reason: EventInvalidAnnotation,
			edit: func(_ *admissionv1.AdmissionRequest, pod map[string]any) {
				annotate(pod, inject.AnnotationProxyCPU, "lots-of-SECRET")
				annotate(pod, inject.AnnotationIncludeInboundPorts, "80,SECRET")
				annotate(pod, inject.AnnotationProxyConfig, "SECRET: field")
			},
			note:    []string{"invalid annotations: " + inject.AnnotationIncludeInboundPorts + ", " + inject.AnnotationProxyCPU + ", " + inject.AnnotationProxyConfig, "FailedCreate"},
			notNote: []string{"SECRET", "lots", "80"}},
		{name: "a pod that cannot be injected as it is", labels: enabled, reason: EventNotInjectable,
			edit: func(_ *admissionv1.AdmissionRequest, pod map[string]any) {
				spec := pod["spec"].(map[string]any)
				spec["volumes"] = append(spec["volumes"].([]any), map[string]any{"name": "istio-envoy", "emptyDir": map[string]any{}})
			},
			note: []string{"cannot be injected as it is"}},
		{name: "inject=true in a namespace with istio-injection=disabled", labels: disabled, reason: EventOptInIgnored,
			edit: func(_ *admissionv1.AdmissionRequest, pod map[string]any) {
				pod["metadata"].(map[string]any)["labels"].(map[string]any)[inject.LabelInject] = "true"
			},
			note: []string{"sidecar.istio.io/inject=true", "istio-injection=disabled"}},
		{name: "inject=true on a hostNetwork pod", labels: enabled, reason: EventOptInIgnored,
			edit: func(_ *admissionv1.AdmissionRequest, pod map[string]any) {
				pod["metadata"].(map[string]any)["labels"].(map[string]any)[inject.LabelInject] = "true"
				pod["spec"].(map[string]any)["hostNetwork"] = true
			},
			note: []string{"sidecar.istio.io/inject=true", "hostNetwork"}},
		{name: "an injected pod gets none", labels: enabled},
		{name: "a pod its namespace disables, without a request of its own, gets none", labels: disabled},
		{name: "a pod that opts out gets none", labels: enabled,
			edit: func(_ *admissionv1.AdmissionRequest, pod map[string]any) {
				pod["metadata"].(map[string]any)["labels"].(map[string]any)[inject.LabelInject] = "false"
			}},
		{name: "a dry run gets none", labels: enabled,
			edit: func(req *admissionv1.AdmissionRequest, pod map[string]any) {
				req.DryRun = ptr.To(true)
				annotate(pod, inject.AnnotationProxyCPU, "lots")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, rec, _, _ := newTestEvents(t)
			h, err := NewHandler(Options{Config: classic, Namespaces: fake.NewClientBuilder().WithObjects(namespace("default", tt.labels)).Build()})
			if err != nil {
				t.Fatal(err)
			}
			h.events = e
			h.Handle(t.Context(), admissionRequest(t, loadReview(t, tt.edit)))
			drain(t, e)
			if tt.reason == "" {
				if len(rec.events) != 0 {
					t.Fatalf("Events %+v, want none", rec.events)
				}
				return
			}
			if len(rec.events) != 1 {
				t.Fatalf("%d Events, want 1", len(rec.events))
			}
			ev := rec.events[0]
			if ev.reason != tt.reason || ev.eventType != corev1.EventTypeWarning || ev.action != eventAction || ev.related != nil || ev.formatArguments {
				t.Errorf("Event %+v, want a Warning %s, action %s, the note as an argument", ev, tt.reason, eventAction)
			}
			if ev.regarding.Kind != "Deployment" || ev.regarding.Name != "reviews-v1" {
				t.Errorf("the Event regards %+v, want Deployment reviews-v1", ev.regarding)
			}
			for _, s := range tt.note {
				if !strings.Contains(ev.note, s) {
					t.Errorf("note %q does not contain %q", ev.note, s)
				}
			}
			for _, s := range tt.notNote {
				if strings.Contains(ev.note, s) {
					t.Errorf("note %q contains %q, part of a value", ev.note, s)
				}
			}
		})
	}
}

// admissionRequest decodes an AdmissionReview's request.
func admissionRequest(t *testing.T, body []byte) admission.Request {
	t.Helper()
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &ar); err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: *ar.Request}
}

// TestWorkloadEventsAreRateLimited: a workload gets one Event per reason
// per interval however many of its pods are refused, and the refusals after
// the first cost no read of the API server, even from another of its
// ReplicaSets; a later interval, or another reason, gets its own.
func TestWorkloadEventsAreRateLimited(t *testing.T) {
	e, rec, reader, now := newTestEvents(t)
	rsPod := []metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", "reviews-v1-5b5d6494f4", replicaSetUID)}
	limited := counter(t, workloadEventsTotal.WithLabelValues(EventInvalidAnnotation, eventRateLimited))
	recorded := counter(t, workloadEventsTotal.WithLabelValues(EventInvalidAnnotation, eventRecorded))
	for range 50 {
		e.report(notice{reason: EventInvalidAnnotation, namespace: "default", owners: rsPod, refused: refusal()})
	}
	drain(t, e)
	if len(rec.events) != 1 || reader.gets.Load() != 1 {
		t.Fatalf("50 refusals: %d Events and %d reads, want 1 and 1", len(rec.events), reader.gets.Load())
	}
	if got := counter(t, workloadEventsTotal.WithLabelValues(EventInvalidAnnotation, eventRateLimited)) - limited; got != 49 {
		t.Errorf("rate-limited +%v, want +49", got)
	}
	if got := counter(t, workloadEventsTotal.WithLabelValues(EventInvalidAnnotation, eventRecorded)) - recorded; got != 1 {
		t.Errorf("recorded +%v, want +1", got)
	}

	// Another ReplicaSet of the same Deployment (a rollout): one read, no Event.
	e.reader = &countingReader{Reader: fake.NewClientBuilder().WithObjects(&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{
		Namespace: "default", Name: "reviews-v1-new", UID: "0a0a0a0a-0000-4000-8000-00000000b003",
		OwnerReferences: []metav1.OwnerReference{controllerRef("apps/v1", "Deployment", "reviews-v1", deploymentUID)},
	}}).Build()}
	e.report(notice{reason: EventInvalidAnnotation, namespace: "default",
		owners: []metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", "reviews-v1-new", "0a0a0a0a-0000-4000-8000-00000000b003")}, refused: refusal()})
	// Another reason on the same Deployment: its own Event.
	e.report(notice{reason: EventOptInIgnored, namespace: "default", owners: rsPod, skipped: inject.ReasonNamespaceDisabled})
	drain(t, e)
	if len(rec.events) != 2 || rec.events[1].reason != EventOptInIgnored {
		t.Fatalf("Events %+v, want the first and one %s", rec.events, EventOptInIgnored)
	}

	// The interval passes: the next refusal is reported again.
	*now = now.Add(time.Minute)
	e.report(notice{reason: EventInvalidAnnotation, namespace: "default", owners: rsPod, refused: refusal()})
	drain(t, e)
	if len(rec.events) != 3 || rec.events[2].reason != EventInvalidAnnotation {
		t.Fatalf("after the interval: Events %+v, want a third, %s", rec.events, EventInvalidAnnotation)
	}
}

// TestWorkloadEventsAreBounded: report never blocks; a full queue drops and
// counts; and the memory of recent workloads is bounded: when it is full of
// workloads within their interval, a new one is rate-limited rather than
// remembered.
func TestWorkloadEventsAreBounded(t *testing.T) {
	e, rec, _, now := newTestEvents(t)
	dropped := counter(t, workloadEventsTotal.WithLabelValues(EventNotInjectable, eventDropped))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range eventQueueSize + 10 {
			e.report(notice{reason: EventNotInjectable, namespace: "default", pod: "p"})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("report blocked on a full queue")
	}
	if got := counter(t, workloadEventsTotal.WithLabelValues(EventNotInjectable, eventDropped)) - dropped; got != 10 {
		t.Errorf("dropped +%v, want +10", got)
	}
	if len(e.queue) != eventQueueSize {
		t.Errorf("%d queued, want %d", len(e.queue), eventQueueSize)
	}
	drain(t, e)
	if len(rec.events) != 1 {
		t.Errorf("%d Events for one pod's %d notices, want 1", len(rec.events), eventQueueSize)
	}

	for i := len(e.last); i < eventTracked; i++ {
		if e.recent(eventKey{namespace: "default", kind: "Pod", name: "p" + string(rune(i)), reason: EventNotInjectable}) {
			t.Fatalf("workload %d of %d was recent", i, eventTracked)
		}
	}
	fresh := eventKey{namespace: "default", kind: "Pod", name: "fresh", reason: EventNotInjectable}
	if !e.recent(fresh) || len(e.last) != eventTracked {
		t.Fatalf("a new workload with %d remembered: not limited, or remembered (%d)", eventTracked, len(e.last))
	}
	*now = now.Add(time.Minute) // every interval has passed: forgotten
	if e.recent(fresh) || len(e.last) != 1 {
		t.Errorf("after the interval: recent, or %d remembered, want 1", len(e.last))
	}
}
