package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/internal/webhook"
	"github.com/remora-mesh/remora/pkg/inject"
)

// warningRecorder collects the warnings the API server returns, as
// kubectl's rest.WarningHandler prints them.
type warningRecorder struct {
	mu   sync.Mutex
	seen []string
}

func (w *warningRecorder) HandleWarningHeader(code int, _, text string) {
	if code != 299 || text == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, text)
}

func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.seen
	w.seen = nil
	return out
}

// TestWarningsReachTheClient creates pods through the API server with a
// client that records warnings, as kubectl does, and checks that the
// webhook's warnings come back with the creation: a deprecated annotation,
// a setting without effect, a request for a sidecar that is not honoured,
// and none for a plain pod.
func TestWarningsReachTheClient(t *testing.T) {
	rec := &warningRecorder{}
	cfg := rest.CopyConfig(env.cluster.Config)
	cfg.WarningHandler = rec
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t, "warn", enabled)
	tests := []struct {
		name     string
		labels   map[string]string
		ann      map[string]string
		host     bool
		injected bool
		want     []string
	}{
		{name: "a pod without Istio annotations", injected: true},
		{name: "a deprecated annotation", injected: true,
			ann:  map[string]string{inject.AnnotationKubevirtInterfaces: "k6t-eth0"},
			want: []string{"annotation traffic.sidecar.istio.io/kubevirtInterfaces is deprecated: use istio.io/reroute-virtual-interfaces"}},
		{name: "readiness timing without a status port", injected: true,
			ann:  map[string]string{inject.AnnotationStatusPort: "0", inject.AnnotationReadinessPeriod: "5"},
			want: []string{"readiness.status.sidecar.istio.io/periodSeconds has no effect: the status port is 0 (no readiness probe)"}},
		{name: "a hostNetwork pod that asks for a sidecar", host: true,
			labels: map[string]string{inject.LabelInject: "true"}, ann: map[string]string{inject.AnnotationProxyMemory: "256Mi"},
			want: []string{
				"sidecar.istio.io/inject=true has no effect: not injected (hostNetwork)",
				"sidecar.istio.io/proxyMemory has no effect: not injected (hostNetwork)",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := newPod(ns, "")
			pod.Labels, pod.Annotations, pod.Spec.HostNetwork = tt.labels, tt.ann, tt.host
			rec.take()
			if err := c.Create(t.Context(), pod); err != nil {
				t.Fatal(err)
			}
			if got := testenv.HasProxy(pod); got != tt.injected {
				t.Errorf("injected=%v, want %v", got, tt.injected)
			}
			if got := rec.take(); !slices.Equal(got, tt.want) {
				t.Errorf("warnings through the API server:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}

// TestWorkloadEventsOnTheDeployment creates Deployments whose pods the
// webhook refuses (an invalid annotation) or skips against their request (a
// hostNetwork pod with sidecar.istio.io/inject=true), lets
// kube-controller-manager's ReplicaSet create the pods, and waits for the
// Event on the Deployment: the webhook followed the pod's ReplicaSet to it.
// The note names the annotation, never its value.
func TestWorkloadEventsOnTheDeployment(t *testing.T) {
	ns := newNamespace(t, "owner", enabled)
	tests := []struct {
		name   string
		labels map[string]string
		ann    map[string]string
		host   bool
		reason string
		note   string
	}{
		{name: "refused for an invalid annotation", ann: map[string]string{inject.AnnotationProxyCPU: "lots-of-SECRET"},
			reason: webhook.EventInvalidAnnotation, note: inject.AnnotationProxyCPU},
		{name: "a hostNetwork pod that asks for a sidecar", labels: map[string]string{inject.LabelInject: "true"}, host: true,
			reason: webhook.EventOptInIgnored, note: "hostNetwork"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dep := newDeployment(ns, fmt.Sprintf("web-%d", i), 1)
			maps := &dep.Spec.Template.ObjectMeta
			for k, v := range tt.labels {
				maps.Labels[k] = v
			}
			maps.Annotations, dep.Spec.Template.Spec.HostNetwork = tt.ann, tt.host
			createUntilCleanup(t, dep)
			e := waitForEvent(t, ns, dep.UID, tt.reason)
			if e.Type != corev1.EventTypeWarning || e.ReportingController != webhook.EventsController || e.Action != "Inject" ||
				e.Regarding.Kind != "Deployment" || e.Regarding.Name != dep.Name {
				t.Errorf("Event %s: type %s, controller %s, action %s, regarding %+v", e.Name, e.Type, e.ReportingController, e.Action, e.Regarding)
			}
			if !strings.Contains(e.Note, tt.note) || strings.Contains(e.Note, "SECRET") {
				t.Errorf("note %q: want it to name %q and carry no value", e.Note, tt.note)
			}
		})
	}
}

// TestWorkloadEventsAreRateLimited has the webhook refuse 20 pods of one
// Deployment's ReplicaSet, then one of another Deployment. The worker takes
// notices in order, so once the second Deployment's Event is there, the 20
// have been handled: the first Deployment has exactly one Event, and the
// other 19 refusals were counted as rate-limited.
func TestWorkloadEventsAreRateLimited(t *testing.T) {
	const refusals = 20
	ns := newNamespace(t, "burst", enabled)
	limitedLabels := map[string]string{"reason": webhook.EventInvalidAnnotation, "result": "rate-limited"}
	limitedBefore := metric(t, "remora_workload_events_total", limitedLabels)

	burst, sentinel := newDeployment(ns, "burst", 0), newDeployment(ns, "sentinel", 0)
	createUntilCleanup(t, burst)
	createUntilCleanup(t, sentinel)
	refuse := func(dep *appsv1.Deployment) {
		rs := waitForReplicaSet(t, dep)
		pod := newPod(ns, "")
		pod.Annotations = map[string]string{inject.AnnotationProxyCPU: "lots"}
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}
		if err := createPod(t, pod); !apierrors.IsForbidden(err) {
			t.Fatalf("creating a pod of %s with an invalid annotation: %v, want it refused", rs.Name, err)
		}
	}
	for range refusals {
		refuse(burst)
	}
	refuse(sentinel)
	waitForEvent(t, ns, sentinel.UID, webhook.EventInvalidAnnotation)
	waitForEvent(t, ns, burst.UID, webhook.EventInvalidAnnotation)

	if n := len(eventsOn(t, ns, burst.UID, webhook.EventInvalidAnnotation)); n != 1 {
		t.Errorf("%d Events on Deployment %s for %d refusals, want 1", n, burst.Name, refusals)
	}
	if limited := metric(t, "remora_workload_events_total", limitedLabels) - limitedBefore; limited < refusals-1 {
		t.Errorf("remora_workload_events_total{result=\"rate-limited\"} rose by %v, want at least %d", limited, refusals-1)
	}
}

// createUntilCleanup creates dep and deletes it at the end of the test, so
// that its ReplicaSet stops retrying.
func createUntilCleanup(t *testing.T, dep *appsv1.Deployment) {
	t.Helper()
	if err := env.cluster.Client.Create(t.Context(), dep); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.cluster.Client.Delete(context.Background(), dep, client.PropagationPolicy(metav1.DeletePropagationBackground))
	})
}

// waitForReplicaSet waits for the ReplicaSet the Deployment controller
// creates for dep.
func waitForReplicaSet(t *testing.T, dep *appsv1.Deployment) *appsv1.ReplicaSet {
	t.Helper()
	var found *appsv1.ReplicaSet
	waitUntil(t, "the ReplicaSet of "+dep.Name, 30*time.Second, func() bool {
		var list appsv1.ReplicaSetList
		if err := env.cluster.Client.List(t.Context(), &list, client.InNamespace(dep.Namespace)); err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			if c := metav1.GetControllerOf(&list.Items[i]); c != nil && c.UID == dep.UID {
				found = &list.Items[i]
				return true
			}
		}
		return false
	})
	return found
}

// eventsOn lists the events.k8s.io Events of a reason regarding the object
// with uid.
func eventsOn(t *testing.T, ns string, uid types.UID, reason string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := env.cluster.Client.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(list.Items, func(e eventsv1.Event) bool { return e.Regarding.UID != uid || e.Reason != reason })
}

// waitForEvent waits for an Event of a reason regarding the object with uid
// and returns it.
func waitForEvent(t *testing.T, ns string, uid types.UID, reason string) eventsv1.Event {
	t.Helper()
	var found []eventsv1.Event
	waitUntil(t, "a "+reason+" Event in "+ns, 60*time.Second, func() bool {
		found = eventsOn(t, ns, uid, reason)
		return len(found) > 0
	})
	return found[0]
}
