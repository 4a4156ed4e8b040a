package realpods_test

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
)

// latencyReplicas is how many pods each measurement starts at once.
const latencyReplicas = 20

// TestStartLatency measures what injection adds to a pod's start: the same
// Deployment (the test app with an HTTP readiness probe every second) is
// scaled from 0 to 20 replicas in a namespace labelled for injection and
// then in one that is not, one after the other on a quiet node. A pod's
// start latency is its creationTimestamp to its Ready condition's
// lastTransitionTime (the API server's clock, whole seconds); the same
// interval seen by a watch (client clock, milliseconds) is logged too. The
// injected pods keep the proxy's default readiness period (15 s): nothing
// here is tuned for the measurement.
//
// A third run, injected with the proxy's readiness period at 1 s (the
// annotation the functional tests use), shows what that default costs.
func TestStartLatency(t *testing.T) {
	cluster(t)
	injected := measureStart(t, namespace(t, "latency-injected", true), true, nil)
	plain := measureStart(t, namespace(t, "latency-plain", false), false, nil)
	fastProbe := measureStart(t, namespace(t, "latency-injected-1s", true), true, fast())
	t.Logf("start latency: injected p50=%s p90=%s; plain p50=%s p90=%s (%d pods each, creationTimestamp to Ready lastTransitionTime)",
		pct(injected.server, 50), pct(injected.server, 90), pct(plain.server, 50), pct(plain.server, 90), latencyReplicas)
	for _, m := range []struct {
		name string
		st   startTimes
	}{{"injected", injected}, {"plain", plain}, {"injected, proxy readiness period 1s", fastProbe}} {
		t.Logf("start latency (watch, ms): %s p50=%s p90=%s max=%s; all %d Ready %s after the scale-up",
			m.name, pct(m.st.watch, 50), pct(m.st.watch, 90), pct(m.st.watch, 100), latencyReplicas, m.st.all.Round(time.Millisecond))
	}
}

// startTimes are one measurement's per-pod latencies.
type startTimes struct {
	server, watch []time.Duration
	// all: from the scale-up to the last pod Ready.
	all time.Duration
}

// measureStart scales a Deployment of the app, its pods annotated, from 0 to
// latencyReplicas in ns and returns the pods' start latencies; inject says
// whether they must have been injected.
func measureStart(t *testing.T, ns string, inject bool, annotations map[string]string) startTimes {
	t.Helper()
	c := suite.cluster
	ctx := t.Context()
	dep := newDeployment(ns, "app", 0, annotations)
	create(t, dep)

	// The watch sees each pod appear and turn Ready.
	w, err := c.Clientset.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu          sync.Mutex
		seen, ready = map[string]time.Time{}, map[string]time.Time{}
		watched     = make(chan struct{})
	)
	go func() {
		defer close(watched)
		for ev := range w.ResultChan() {
			now := time.Now()
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			mu.Lock()
			if _, ok := seen[pod.Name]; !ok {
				seen[pod.Name] = now
			}
			if _, ok := ready[pod.Name]; !ok && testenv.PodReady(pod) {
				ready[pod.Name] = now
			}
			mu.Unlock()
		}
	}()

	loadBefore := loadAverage()
	scaled := time.Now()
	patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, latencyReplicas))
	if err := c.Client.Patch(ctx, &appsv1.Deployment{ObjectMeta: dep.ObjectMeta}, patch); err != nil {
		t.Fatal(err)
	}
	pods, err := waitPods(ctx, ns, "app", latencyReplicas, 5*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	all := time.Since(scaled)
	w.Stop()
	<-watched

	var st startTimes
	st.all = all
	// Phases, from each pod's creation (API server times, whole seconds):
	// sandbox ready (volumes mounted, network set up), init containers done,
	// app container started, Ready.
	phases := map[string][]time.Duration{}
	for i := range pods {
		p := &pods[i]
		for _, cond := range p.Status.Conditions {
			switch cond.Type {
			case corev1.PodReadyToStartContainers, corev1.PodInitialized:
				phases[string(cond.Type)] = append(phases[string(cond.Type)], cond.LastTransitionTime.Sub(p.CreationTimestamp.Time))
			}
		}
		if s := status(p, "app"); s != nil && s.State.Running != nil {
			phases["app"] = append(phases["app"], s.State.Running.StartedAt.Sub(p.CreationTimestamp.Time))
		}
	}
	for i := range pods {
		p := &pods[i]
		if injected := testenv.ProxyContainer(p) != nil; injected != inject {
			t.Fatalf("pod %s injected=%v, want %v", p.Name, injected, inject)
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady {
				st.server = append(st.server, cond.LastTransitionTime.Sub(p.CreationTimestamp.Time))
			}
		}
		mu.Lock()
		if s, ok := seen[p.Name]; ok && !ready[p.Name].IsZero() {
			st.watch = append(st.watch, ready[p.Name].Sub(s))
		}
		mu.Unlock()
	}
	// The slowest pod's timeline says where its time went.
	slowest := slices.MaxFunc(pods, func(a, b corev1.Pod) int {
		return cmp.Compare(readySince(&a), readySince(&b))
	})
	mu.Lock()
	t.Logf("%s: slowest pod %s: seen by the watch %s, Ready seen %s after; %s", ns, slowest.Name,
		seen[slowest.Name].Format("15:04:05.000"), ready[slowest.Name].Sub(seen[slowest.Name]).Round(time.Millisecond), timeline(&slowest))
	mu.Unlock()
	if len(st.server) != latencyReplicas || len(st.watch) != latencyReplicas {
		t.Fatalf("measured %d pods (%d by watch), want %d", len(st.server), len(st.watch), latencyReplicas)
	}
	t.Logf("%s: %d pods Ready %s after the scale-up (load average %s before, %s after); per pod p50=%s p90=%s (watch p50=%s p90=%s); "+
		"p50 from creation: sandbox ready %s, initialized %s, app started %s, Ready %s", ns, latencyReplicas,
		all.Round(time.Millisecond), loadBefore, loadAverage(), pct(st.server, 50), pct(st.server, 90), pct(st.watch, 50), pct(st.watch, 90),
		pct(phases[string(corev1.PodReadyToStartContainers)], 50), pct(phases[string(corev1.PodInitialized)], 50), pct(phases["app"], 50), pct(st.server, 50))

	// Scale back to zero and wait for the pods to go, so that the next
	// measurement has the node to itself.
	if err := c.Client.Patch(context.WithoutCancel(ctx), &appsv1.Deployment{ObjectMeta: dep.ObjectMeta},
		client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":0}}`))); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var list corev1.PodList
		if err := c.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, nil //nolint:nilerr // retry until the timeout
		}
		return len(list.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("pods of %s not gone after scaling to 0: %v", ns, err)
	}
	return st
}

// pct returns the p-th percentile (nearest rank) of ds; 100 is the maximum.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return s[i].Round(time.Millisecond)
}

// readySince returns how long after its creation the pod became Ready
// (whole seconds).
func readySince(p *corev1.Pod) time.Duration {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.LastTransitionTime.Sub(p.CreationTimestamp.Time)
		}
	}
	return 0
}

// timeline says when each container started (and ended) and each condition
// last changed, relative to the pod's creation (whole seconds).
func timeline(p *corev1.Pod) string {
	rel := func(t metav1.Time) string { return t.Sub(p.CreationTimestamp.Time).String() }
	var parts []string
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		switch {
		case s.State.Terminated != nil:
			parts = append(parts, fmt.Sprintf("%s ran %s..%s", s.Name, rel(s.State.Terminated.StartedAt), rel(s.State.Terminated.FinishedAt)))
		case s.State.Running != nil:
			parts = append(parts, fmt.Sprintf("%s started %s", s.Name, rel(s.State.Running.StartedAt)))
		}
	}
	for _, c := range p.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s=%s %s", c.Type, c.Status, rel(c.LastTransitionTime)))
	}
	return strings.Join(parts, ", ")
}

// loadAverage returns the machine's 1-minute load average: the
// measurement's context on a shared machine.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}
