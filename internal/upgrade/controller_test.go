package upgrade

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/pkg/config"
)

// fast are the controller options of the envtest tests: short periods so
// that a test sees several evaluations in a few seconds.
func fast(cfg *config.Config, o Options) Options {
	if o.Config == nil {
		o.Config = func() *config.Config { return cfg }
	}
	if o.ResyncInterval == 0 {
		o.ResyncInterval = 500 * time.Millisecond
	}
	if o.ConfigPollInterval == 0 {
		o.ConfigPollInterval = 200 * time.Millisecond
	}
	if o.MinEvaluationInterval == 0 {
		o.MinEvaluationInterval = 100 * time.Millisecond
	}
	return o
}

func counter(t *testing.T, result string) float64 {
	t.Helper()
	v, _ := gauge(t, "remora_restarts_total", map[string]string{"result": result})
	return v
}

func waitGauge(t *testing.T, name, ns string, want float64) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%s{namespace=%q} = %v", name, ns, want), func() (bool, string) {
		v, ok := gauge(t, name, map[string]string{"namespace": ns})
		return ok && v == want, fmt.Sprintf("got %v (present %v)", v, ok)
	})
}

// TestRestartOptedIn: a Deployment whose pods were injected with an older
// configuration (proxy v1; the controller's is v2) in an enabled namespace
// that opts in is reported (gauge, Event) and restarted once: the template
// gets restartedAt and restarted-for, the rollout (kube-controller-manager,
// pods marked Ready) finishes and is counted.
//
// Without the webhook, the new pods are created from the template, which
// still carries the v1 injection: they stay outdated, and the controller must
// not restart the Deployment a second time for the same configuration. That
// the new pods carry the new sidecar is the webhook e2e suite's to show.
func TestRestartOptedIn(t *testing.T) {
	c := startCluster(t)
	c.startControllers(t)
	v1, v2 := loadConfig(t, "example.com/proxy:v1"), loadConfig(t, "example.com/proxy:v2")
	ns := "restart-opted-in"
	c.createNamespace(t, ns, enabled, map[string]string{AnnotationRestartOutdated: "true"})
	c.createDeployment(t, v1, ns, "web", 2, nil)
	before := c.waitRolledOut(t, ns, "web", time.Minute)
	if before.Spec.Template.Annotations[AnnotationRestartedAt] != "" {
		t.Fatal("the template has restartedAt before the controller ran")
	}
	started, finished := counter(t, resultStarted), counter(t, resultFinished)

	fixed := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	tm := c.startManager(t, managerOptions{name: "a"}, fast(v2, Options{Now: func() time.Time { return fixed }}))

	waitGauge(t, "remora_outdated_pods", ns, 2)
	note := c.waitEvent(t, ns, KindDeployment, "web", ReasonOutdatedSidecars)
	if !strings.Contains(note, "2 of 2 pods") || !strings.Contains(note, "image changed") {
		t.Errorf("OutdatedSidecars note = %q, want the counts and the image change", note)
	}
	c.waitEvent(t, ns, KindDeployment, "web", ReasonRestarting)

	d := c.getDeployment(t, ns, "web")
	if got, want := d.Spec.Template.Annotations[AnnotationRestartedAt], fixed.Format(time.RFC3339); got != want {
		t.Errorf("template restartedAt = %q, want %q", got, want)
	}
	if got := d.Spec.Template.Annotations[AnnotationRestartedFor]; got != v2.Hash {
		t.Errorf("template restarted-for = %q, want %q", got, v2.Hash)
	}
	if got := d.Annotations[AnnotationRestartedFor]; got != v2.Hash {
		t.Errorf("workload restarted-for = %q, want %q", got, v2.Hash)
	}

	after := c.waitRolledOut(t, ns, "web", time.Minute)
	if after.Generation <= before.Generation {
		t.Errorf("generation %d after the restart, was %d: no rollout", after.Generation, before.Generation)
	}
	c.waitEvent(t, ns, KindDeployment, "web", ReasonRestartFinished)
	waitFor(t, 10*time.Second, "restarts counted", func() (bool, string) {
		s, f := counter(t, resultStarted)-started, counter(t, resultFinished)-finished
		return s == 1 && f == 1, fmt.Sprintf("started %v, finished %v", s, f)
	})

	// The new pods carry the template's v1 injection: still outdated, and
	// never restarted again for v2.
	evals := tm.r.evaluations.Load()
	waitFor(t, 10*time.Second, "three more evaluations", func() (bool, string) {
		return tm.r.evaluations.Load() >= evals+3, ""
	})
	d = c.getDeployment(t, ns, "web")
	if d.Generation != after.Generation || d.Spec.Template.Annotations[AnnotationRestartedAt] != fixed.Format(time.RFC3339) {
		t.Errorf("the Deployment was changed again: generation %d (was %d), restartedAt %q",
			d.Generation, after.Generation, d.Spec.Template.Annotations[AnnotationRestartedAt])
	}
	if s := counter(t, resultStarted) - started; s != 1 {
		t.Errorf("%v restarts started, want 1", s)
	}
	waitGauge(t, "remora_outdated_pods", ns, 2)
}

// TestReportOnly: without an opt-in nothing is patched, but everything is
// reported: outdated Deployments, a paused one even when opted in, a Job of a
// CronJob, a bare pod, and pods whose namespace lost its injection label. A
// configuration change (signalled on Changes) is picked up, and a namespace's
// series disappears when its last outdated pod goes.
func TestReportOnly(t *testing.T) {
	c := startCluster(t)
	c.startControllers(t)
	v1, v2 := loadConfig(t, "example.com/proxy:v1"), loadConfig(t, "example.com/proxy:v2")
	ns, unlabelled, bare := "report-only", "report-unlabelled", "report-bare"
	c.createNamespace(t, ns, enabled, nil)
	c.createNamespace(t, unlabelled, nil, nil)
	c.createNamespace(t, bare, enabled, map[string]string{AnnotationRestartOutdated: "true"})
	c.createDeployment(t, v1, ns, "api", 2, nil)
	c.createDeployment(t, v1, ns, "paused", 1, map[string]string{AnnotationRestartOutdated: "true"})
	c.createDeployment(t, v1, ns, "opted-out", 1, map[string]string{AnnotationRestartOutdated: "false"})
	c.createDeployment(t, v1, unlabelled, "legacy", 1, nil)
	c.jobOfCronJob(t, v1, ns, "nightly")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: bare, Name: "bare"}}
	tmpl := injectedTemplate(t, v1, bare, enabled, nil, false)
	pod.Annotations, pod.Labels, pod.Spec = tmpl.Annotations, tmpl.Labels, tmpl.Spec
	if err := c.client.Create(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"api", "paused", "opted-out"} {
		c.waitRolledOut(t, ns, name, time.Minute)
	}
	c.waitRolledOut(t, unlabelled, "legacy", time.Minute)
	// Paused once its pods run (a Deployment paused from its creation
	// creates none).
	paused := c.getDeployment(t, ns, "paused")
	paused.Spec.Paused = true
	if err := c.client.Update(t.Context(), paused); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the Job's pod", func() (bool, string) {
		n := c.countPods(t, ns)
		return n == 2+1+1+1, fmt.Sprintf("%d pods in %s", n, ns)
	})
	generations := map[string]int64{}
	for _, name := range []string{"api", "paused", "opted-out"} {
		generations[name] = c.getDeployment(t, ns, name).Generation
	}
	started := counter(t, resultStarted)

	// Start with v1 current: nothing is outdated.
	var current atomic.Pointer[config.Config]
	current.Store(v1)
	changes := make(chan struct{}, 1)
	tm := c.startManager(t, managerOptions{name: "report"}, fast(nil, Options{
		Config:             current.Load,
		Changes:            changes,
		ConfigPollInterval: time.Hour, // only Changes tells of the change
	}))
	waitFor(t, 30*time.Second, "a first evaluation", func() (bool, string) { return tm.r.evaluations.Load() > 0, "" })
	if _, ok := gauge(t, "remora_outdated_pods", map[string]string{"namespace": ns}); ok {
		t.Error("outdated pods reported while the configuration is the pods' own")
	}
	waitGauge(t, "remora_unselected_injected_pods", unlabelled, 1)

	current.Store(v2)
	changes <- struct{}{}
	waitGauge(t, "remora_outdated_pods", ns, 5)
	waitGauge(t, "remora_outdated_pods", bare, 1)
	waitGauge(t, "remora_unselected_injected_pods", unlabelled, 1)
	for _, e := range []struct{ kind, ns, name, want string }{
		{KindDeployment, ns, "api", "not opted in"},
		{KindDeployment, ns, "paused", "paused"},
		{KindDeployment, ns, "opted-out", "=false"},
		{KindCronJob, ns, "nightly", "never restarted by Remora"},
		{KindPod, bare, "bare", "never restarted by Remora"},
		{KindDeployment, unlabelled, "legacy", "no longer selected"},
	} {
		if note := c.waitEvent(t, e.ns, e.kind, e.name, ReasonOutdatedSidecars); !strings.Contains(note, e.want) {
			t.Errorf("%s %s/%s: OutdatedSidecars note %q does not say %q", e.kind, e.ns, e.name, note, e.want)
		}
	}

	evals := tm.r.evaluations.Load()
	waitFor(t, 10*time.Second, "three more evaluations", func() (bool, string) {
		return tm.r.evaluations.Load() >= evals+3, ""
	})
	for name, gen := range generations {
		d := c.getDeployment(t, ns, name)
		if d.Generation != gen || d.Spec.Template.Annotations[AnnotationRestartedAt] != "" {
			t.Errorf("Deployment %s was patched: generation %d (was %d), template %v", name, d.Generation, gen, d.Spec.Template.Annotations)
		}
	}
	if d := c.getDeployment(t, unlabelled, "legacy"); d.Spec.Template.Annotations[AnnotationRestartedAt] != "" {
		t.Error("a workload that is no longer selected was restarted")
	}
	if s := counter(t, resultStarted) - started; s != 0 {
		t.Errorf("%v restarts started, want none", s)
	}

	// The bare pod goes: its namespace's series goes with it.
	if err := c.client.Delete(t.Context(), pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the series of "+bare+" removed", func() (bool, string) {
		_, ok := gauge(t, "remora_outdated_pods", map[string]string{"namespace": bare})
		return !ok, ""
	})
}

// TestRateLimit: with the global opt-in, four outdated Deployments with
// MaxConcurrentRestarts 1 are all restarted, one after another: sampled every
// 50ms, the cluster never shows two restarts in progress. A Deployment that
// opts out, and one whose namespace is no longer enabled, are not restarted.
func TestRateLimit(t *testing.T) {
	c := startCluster(t)
	c.startControllers(t)
	v1, v2 := loadConfig(t, "example.com/proxy:v1"), loadConfig(t, "example.com/proxy:v2")
	ns := "rate-limit"
	c.createNamespace(t, ns, enabled, nil)
	names := []string{"a", "b", "c", "d"}
	for _, n := range names {
		c.createDeployment(t, v1, ns, n, 2, nil)
	}
	c.createDeployment(t, v1, ns, "opted-out", 1, map[string]string{AnnotationRestartOutdated: "false"})
	unlabelled := "rate-limit-unlabelled"
	c.createNamespace(t, unlabelled, nil, nil)
	c.createDeployment(t, v1, unlabelled, "legacy", 1, nil)
	for _, n := range names {
		c.waitRolledOut(t, ns, n, time.Minute)
	}
	c.waitRolledOut(t, ns, "opted-out", time.Minute)
	c.waitRolledOut(t, unlabelled, "legacy", time.Minute)

	ctx, stopSampling := context.WithCancel(t.Context())
	var (
		mu         sync.Mutex
		maxRolling int
		samples    int
	)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for ctx.Err() == nil {
			list := &appsv1.DeploymentList{}
			if err := c.client.List(ctx, list, client.InNamespace(ns)); err == nil {
				rolling := 0
				for i := range list.Items {
					if RolloutOf(&list.Items[i]).Restarting() {
						rolling++
					}
				}
				mu.Lock()
				maxRolling = max(maxRolling, rolling)
				samples++
				mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	start := time.Now()
	c.startManager(t, managerOptions{name: "rate"}, fast(v2, Options{RestartOutdated: true, MaxConcurrentRestarts: 1}))
	waitFor(t, 2*time.Minute, "all four Deployments restarted and rolled out", func() (bool, string) {
		done := 0
		for _, n := range names {
			d := c.getDeployment(t, ns, n)
			if d.Spec.Template.Annotations[AnnotationRestartedFor] == v2.Hash && RolloutOf(d).Finished {
				done++
			}
		}
		return done == len(names), fmt.Sprintf("%d of %d done", done, len(names))
	})
	stopSampling()
	<-sampled
	t.Logf("4 restarts in %s, %d samples, at most %d rolling at once", time.Since(start).Round(100*time.Millisecond), samples, maxRolling)
	if maxRolling != 1 {
		t.Errorf("at most %d Deployments were restarting at once, want 1", maxRolling)
	}
	if samples < 20 {
		t.Errorf("only %d samples", samples)
	}
	// Sequential: each restart began after the previous one finished, so
	// the restartedAt times (with a real clock) are distinct.
	seen := map[string]bool{}
	for _, n := range names {
		seen[c.getDeployment(t, ns, n).Spec.Template.Annotations[AnnotationRestartedAt]] = true
	}
	if len(seen) < 2 {
		t.Errorf("restartedAt times %v: the restarts were not spread", seen)
	}
	for _, ref := range []Ref{{KindDeployment, ns, "opted-out"}, {KindDeployment, unlabelled, "legacy"}} {
		if a := c.getDeployment(t, ref.Namespace, ref.Name).Spec.Template.Annotations; a[AnnotationRestartedAt] != "" {
			t.Errorf("%s was restarted: %v", ref, a)
		}
	}
}

// TestLeaderElection: two controller instances against one API server. Only
// the leader evaluates and restarts; when it stops, the other takes over,
// finds the restart in progress in the cluster, waits for it, and restarts
// the next workload, never the first one again.
func TestLeaderElection(t *testing.T) {
	c := startCluster(t)
	c.startControllers(t)
	v1, v2 := loadConfig(t, "example.com/proxy:v1"), loadConfig(t, "example.com/proxy:v2")
	ns := "leader"
	c.createNamespace(t, ns, enabled, map[string]string{AnnotationRestartOutdated: "true"})
	for _, n := range []string{"first", "second"} {
		c.createDeployment(t, v1, ns, n, 1, nil)
	}
	for _, n := range []string{"first", "second"} {
		c.waitRolledOut(t, ns, n, time.Minute)
	}
	// The first restart stays in progress until the test lets it finish:
	// the fake kubelet leaves the new pods unready.
	c.held.Store(ns, true)

	opts := fast(v2, Options{MaxConcurrentRestarts: 1})
	a := c.startManager(t, managerOptions{name: "a", leaderElection: true}, opts)
	select {
	case <-a.mgr.Elected():
	case <-time.After(30 * time.Second):
		t.Fatal("instance a was not elected")
	}
	b := c.startManager(t, managerOptions{name: "b", leaderElection: true}, opts)

	waitFor(t, 30*time.Second, "the leader restarts the first Deployment", func() (bool, string) {
		d := c.getDeployment(t, ns, "first")
		return d.Spec.Template.Annotations[AnnotationRestartedFor] == v2.Hash, ""
	})
	firstAt := c.getDeployment(t, ns, "first").Spec.Template.Annotations[AnnotationRestartedAt]
	// Two more evaluations by the leader after the restart: the second sees the first Deployment
	// rolling and must leave the second waiting. Meanwhile b keeps trying to acquire the lease.
	after := a.r.evaluations.Load()
	waitFor(t, 30*time.Second, "the leader to evaluate twice after the restart", func() (bool, string) {
		n := a.r.evaluations.Load()
		return n >= after+2, fmt.Sprintf("%d evaluations since", n-after)
	})
	if n := b.r.evaluations.Load(); n != 0 {
		t.Errorf("the standby instance evaluated %d times", n)
	}
	if got := c.getDeployment(t, ns, "second").Spec.Template.Annotations[AnnotationRestartedFor]; got != "" {
		t.Fatal("the second Deployment was restarted while the first is rolling")
	}

	stopped := time.Now()
	a.stop()
	t.Logf("instance a stopped in %s", time.Since(stopped).Round(10*time.Millisecond))
	select {
	case <-b.mgr.Elected():
	case <-time.After(30 * time.Second):
		t.Fatal("instance b did not take over")
	}
	t.Logf("instance b leads %s after a was asked to stop", time.Since(stopped).Round(10*time.Millisecond))
	// Twice: the first evaluation after the takeover may run before the cache shows every pod.
	waitFor(t, 10*time.Second, "b evaluates twice", func() (bool, string) { return b.r.evaluations.Load() >= 2, "" })
	if got := c.getDeployment(t, ns, "second").Spec.Template.Annotations[AnnotationRestartedFor]; got != "" {
		t.Fatal("the new leader restarted the second Deployment while the first one's restart is in progress")
	}

	// Let the first rollout finish; b restarts the second.
	c.held.Delete(ns)
	waitFor(t, time.Minute, "the new leader restarts the second Deployment", func() (bool, string) {
		d := c.getDeployment(t, ns, "second")
		return d.Spec.Template.Annotations[AnnotationRestartedFor] == v2.Hash, ""
	})
	c.waitRolledOut(t, ns, "second", time.Minute)
	if got := c.getDeployment(t, ns, "first").Spec.Template.Annotations[AnnotationRestartedAt]; got != firstAt {
		t.Errorf("the first Deployment was restarted again: restartedAt %q, was %q", got, firstAt)
	}
}
