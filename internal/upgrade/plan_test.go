package upgrade

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/remora-mesh/remora/pkg/config"
)

// TestPlan covers the restart decisions on synthetic reports: opt-in,
// selection, one restart per hash, paused and manual workloads, rollouts in
// progress, the budget, pending patches and the maintenance window.
func TestPlan(t *testing.T) {
	const hash = "h2"
	noon := time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC)
	night, err := ParseWindow("02:00-04:00")
	if err != nil {
		t.Fatal(err)
	}
	midday, err := ParseWindow("11:00-13:00")
	if err != nil {
		t.Fatal(err)
	}
	type wl struct {
		name             string
		kind             string
		outdated, unsel  int
		annotations      map[string]string
		template         map[string]string
		finished, paused bool
		manual           string
		// key is the report's restart key (default: the hash).
		key string
	}
	outdated := func(name string) wl { return wl{name: name, kind: KindDeployment, outdated: 2, finished: true} }
	with := func(w wl, f func(*wl)) wl { f(&w); return w }
	on := map[string]string{AnnotationRestartOutdated: "true"}
	off := map[string]string{AnnotationRestartOutdated: "false"}

	tests := []struct {
		name      string
		opts      Options
		nsAnn     map[string]string
		workloads []wl
		pending   []string
		start     []string
		why       map[string]string
	}{
		{name: "not opted in", workloads: []wl{outdated("a")},
			why: map[string]string{"a": "not opted in"}},
		{name: "global opt-in", opts: Options{RestartOutdated: true}, workloads: []wl{outdated("a")},
			start: []string{"a"}},
		{name: "namespace opt-in", nsAnn: on, workloads: []wl{outdated("a")}, start: []string{"a"}},
		{name: "workload opts out of the global opt-in", opts: Options{RestartOutdated: true},
			workloads: []wl{with(outdated("a"), func(w *wl) { w.annotations = off })},
			why:       map[string]string{"a": "workload annotation remora.io/restart-outdated=false"}},
		{name: "up-to-date workload: nothing to decide", opts: Options{RestartOutdated: true},
			workloads: []wl{{name: "a", kind: KindDeployment, finished: true}}},
		{name: "no longer selected, global opt-in: not restarted", opts: Options{RestartOutdated: true},
			workloads: []wl{{name: "a", kind: KindDeployment, unsel: 1, finished: true}},
			why:       map[string]string{"a": "no longer selected"}},
		{name: "no longer selected, explicit opt-in: restarted", nsAnn: on,
			workloads: []wl{{name: "a", kind: KindDeployment, unsel: 1, finished: true}},
			start:     []string{"a"}},
		{name: "already restarted for this hash", opts: Options{RestartOutdated: true},
			workloads: []wl{with(outdated("a"), func(w *wl) { w.annotations = map[string]string{AnnotationRestartedFor: hash} })},
			why:       map[string]string{"a": "already restarted"}},
		{name: "restarted for an older hash: restarted again", opts: Options{RestartOutdated: true},
			workloads: []wl{with(outdated("a"), func(w *wl) {
				w.annotations = map[string]string{AnnotationRestartedFor: "h1"}
				w.template = map[string]string{AnnotationRestartedFor: "h1"}
			})},
			start: []string{"a"}},
		{name: "restarted for this hash, then an excluded Service's addresses changed: restarted again", opts: Options{RestartOutdated: true},
			workloads: []wl{with(outdated("a"), func(w *wl) {
				w.key = hash + "+services-0123"
				w.annotations = map[string]string{AnnotationRestartedFor: hash}
			})},
			start: []string{"a"}},
		{name: "already restarted for these Services' addresses", opts: Options{RestartOutdated: true},
			workloads: []wl{with(outdated("a"), func(w *wl) {
				w.key = hash + "+services-0123"
				w.annotations = map[string]string{AnnotationRestartedFor: hash + "+services-0123"}
			})},
			why: map[string]string{"a": "already restarted for h2+services-0123"}},
		{name: "paused", opts: Options{RestartOutdated: true},
			workloads: []wl{with(outdated("a"), func(w *wl) { w.paused = true })},
			why:       map[string]string{"a": "paused"}},
		{name: "OnDelete", opts: Options{RestartOutdated: true},
			workloads: []wl{with(outdated("a"), func(w *wl) { w.kind = KindStatefulSet; w.manual = "updateStrategy OnDelete" })},
			why:       map[string]string{"a": "OnDelete"}},
		{name: "a rollout in progress", opts: Options{RestartOutdated: true},
			workloads: []wl{with(outdated("a"), func(w *wl) { w.finished = false })},
			why:       map[string]string{"a": "already in progress"}},
		{name: "bare pods and CronJobs are never restarted", opts: Options{RestartOutdated: true},
			workloads: []wl{{name: "p", kind: KindPod, outdated: 1}, {name: "c", kind: KindCronJob, outdated: 1}},
			why:       map[string]string{"p": "never restarted", "c": "never restarted"}},
		{name: "budget held by a restart in progress", opts: Options{RestartOutdated: true},
			workloads: []wl{
				with(outdated("a"), func(w *wl) { w.finished = false; w.template = map[string]string{AnnotationRestartedFor: hash} }),
				outdated("b"),
			},
			why: map[string]string{"a": "already restarted", "b": "1 of at most 1"}},
		{name: "budget held by a restart whose new pods are not injected", opts: Options{RestartOutdated: true},
			workloads: []wl{
				with(outdated("a"), func(w *wl) {
					w.outdated = 0 // not in the report's workloads
					w.finished = false
					w.template = map[string]string{AnnotationRestartedFor: hash}
				}),
				outdated("b"),
			},
			why: map[string]string{"b": "1 of at most 1"}},
		{name: "budget held by this replica's patch the cache has not shown", opts: Options{RestartOutdated: true},
			workloads: []wl{outdated("b")}, pending: []string{"a"},
			why: map[string]string{"b": "1 of at most 1"}},
		{name: "budget of two, three candidates, in order", opts: Options{RestartOutdated: true, MaxConcurrentRestarts: 2},
			workloads: []wl{outdated("c"), outdated("a"), outdated("b")},
			start:     []string{"a", "b"}, why: map[string]string{"c": "2 of at most 2"}},
		{name: "outside the window", opts: Options{RestartOutdated: true, MaintenanceWindow: night},
			workloads: []wl{outdated("a")}, why: map[string]string{"a": "maintenance window 02:00-04:00"}},
		{name: "report only: never restarted", opts: Options{RestartOutdated: true, ReportOnly: true},
			workloads: []wl{outdated("a")}, why: map[string]string{"a": "restarts are off"}},
		{name: "restarts only in listed namespaces: another namespace", opts: Options{RestartOutdated: true, RestartNamespaces: []string{"other"}},
			workloads: []wl{outdated("a")}, why: map[string]string{"a": "not allowed in namespace ns (only in other)"}},
		{name: "restarts only in listed namespaces: this one", opts: Options{RestartOutdated: true, RestartNamespaces: []string{"other", "ns"}},
			workloads: []wl{outdated("a")}, start: []string{"a"}},
		{name: "inside the window", opts: Options{RestartOutdated: true, MaintenanceWindow: midday},
			workloads: []wl{outdated("a")}, start: []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.Config = func() *config.Config { return nil }
			opts.Now = func() time.Time { return noon }
			if err := opts.defaults(); err != nil {
				t.Fatal(err)
			}
			r := &reconciler{opts: opts, pending: map[Ref]pendingRestart{}}
			for _, p := range tt.pending {
				r.pending[Ref{KindDeployment, "ns", p}] = pendingRestart{hash: hash, at: "t", since: time.Now()}
			}
			rep := &Report{Hash: hash, Rollouts: map[Ref]*Rollout{},
				NamespaceAnnotations: map[string]map[string]string{"ns": tt.nsAnn}}
			for _, w := range tt.workloads {
				ref := Ref{w.kind, "ns", w.name}
				wr := WorkloadReport{Ref: ref, Counts: Counts{Total: 2, Outdated: w.outdated, Unselected: w.unsel}, RestartKey: w.key}
				if ref.Restartable() {
					d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: w.name, Annotations: w.annotations}}
					ro := &Rollout{Object: d, Finished: w.finished, Paused: w.paused, Manual: w.manual,
						Annotations: w.annotations, TemplateAnnotations: w.template}
					rep.Rollouts[ref] = ro
					wr.Rollout, wr.Object = ro, d
				}
				if w.outdated+w.unsel > 0 || !ref.Restartable() {
					rep.Workloads = append(rep.Workloads, wr)
				}
			}
			slices.SortFunc(rep.Workloads, func(a, b WorkloadReport) int { return compareRefs(a.Ref, b.Ref) })

			p := r.plan(rep)
			var started []string
			for _, i := range p.start {
				started = append(started, rep.Workloads[i].Ref.Name)
			}
			if !slices.Equal(started, tt.start) {
				t.Errorf("started %v, want %v", started, tt.start)
			}
			for name, want := range tt.why {
				var got string
				for ref, why := range p.why {
					if ref.Name == name {
						got = why
					}
				}
				if !strings.Contains(got, want) {
					t.Errorf("%s: why %q, want it to say %q", name, got, want)
				}
			}
			for ref, why := range p.why {
				if _, ok := tt.why[ref.Name]; !ok {
					t.Errorf("%s: unexpected decision %q", ref, why)
				}
			}
		})
	}
}

// TestTrackRollouts: a restart seen in progress is counted and evented once
// when it fails and once when it finishes, however many evaluations see it.
func TestTrackRollouts(t *testing.T) {
	sink := newEventSink(nil, clientgoscheme.Scheme, logr.Discard()) // not run: the test reads its queue
	r := &reconciler{opts: Options{}, events: sink, log: logr.Discard(), tracked: map[Ref]*trackedRollout{}}
	ref := Ref{KindDeployment, "ns", "web"}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}
	state := func(finished, failed bool) *Report {
		return &Report{Rollouts: map[Ref]*Rollout{ref: {
			Object: d, Finished: finished, Failed: failed,
			TemplateAnnotations: map[string]string{AnnotationRestartedFor: "h"},
		}}}
	}
	failed0, finished0 := counterValue(t, resultFailed), counterValue(t, resultFinished)
	for _, s := range []*Report{state(false, false), state(false, true), state(false, true), state(true, false), state(true, false)} {
		r.trackRollouts(s)
	}
	close(sink.queue)
	var got []string
	for e := range sink.queue {
		if e.Regarding.Kind != KindDeployment || e.Regarding.Name != "web" || e.Regarding.APIVersion != "apps/v1" {
			t.Errorf("event regarding %+v", e.Regarding)
		}
		got = append(got, e.Reason)
	}
	if want := []string{ReasonRestartFailed, ReasonRestartFinished}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if f := counterValue(t, resultFailed) - failed0; f != 1 {
		t.Errorf("failed counted %v times", f)
	}
	if f := counterValue(t, resultFinished) - finished0; f != 1 {
		t.Errorf("finished counted %v times", f)
	}
	if len(r.tracked) != 0 {
		t.Errorf("still tracked: %v", r.tracked)
	}
}

func counterValue(t *testing.T, result string) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := restartsTotal.WithLabelValues(result).Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
