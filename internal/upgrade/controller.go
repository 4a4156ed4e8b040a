package upgrade

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/remora-mesh/remora/internal/services"
	"github.com/remora-mesh/remora/pkg/config"
)

// Defaults applied to zero Options fields.
const (
	// DefaultMaxConcurrentRestarts is how many workloads may roll at once.
	DefaultMaxConcurrentRestarts = 1
	// DefaultResyncInterval is how often everything is re-evaluated without
	// any event, to pick up finished rollouts and an opening window.
	DefaultResyncInterval = 30 * time.Second
	// DefaultConfigPollInterval is how often the configuration getter's
	// Hash is compared with the last one evaluated.
	DefaultConfigPollInterval = 5 * time.Second
	// DefaultMinEvaluationInterval is the least time between two full
	// evaluations: a burst of pod events during a rollout causes one
	// evaluation, not one per event.
	DefaultMinEvaluationInterval = time.Second
)

// ControllerName names the controller in logs, metrics and as the Events'
// reporting controller.
const ControllerName = "remora-upgrade"

// Event reasons, on the owning workload.
const (
	// ReasonOutdatedSidecars: the workload has pods injected with an older
	// configuration (once per workload and configuration hash).
	ReasonOutdatedSidecars = "OutdatedSidecars"
	// ReasonRestarting: the controller started a rolling restart.
	ReasonRestarting = "RestartingOutdatedSidecars"
	// ReasonRestartFinished: the restart's rollout finished.
	ReasonRestartFinished = "RestartFinished"
	// ReasonRestartFailed: the restart's rollout exceeded its progress
	// deadline.
	ReasonRestartFailed = "RestartFailed"
)

// Options configure the controller.
type Options struct {
	// Config returns the injector's current configuration (for example
	// configwatch's Watcher.Current). Required.
	Config func() *config.Config
	// Changes, when set, signals that the configuration changed; the
	// controller also polls Config's Hash every ConfigPollInterval.
	Changes <-chan struct{}
	// RestartOutdated restarts outdated workloads unless they or their
	// namespace opt out (the global opt-in, --restart-outdated).
	RestartOutdated bool
	// ReportOnly turns restarts off: outdated workloads are reported, never
	// patched (--allow-restarts=false; the injector then holds no right to
	// patch workloads).
	ReportOnly bool
	// RestartNamespaces, when set, are the only namespaces whose workloads
	// may be restarted (--restart-namespaces; the injector may patch
	// workloads there only). Empty: every namespace.
	RestartNamespaces []string
	// MaxConcurrentRestarts is the most workloads restarting at once,
	// cluster-wide (default DefaultMaxConcurrentRestarts).
	MaxConcurrentRestarts int
	// MaintenanceWindow, when set, is the only time of day restarts start.
	MaintenanceWindow *Window
	// Now returns the current time (default time.Now); for tests of the
	// window and the restartedAt annotation.
	Now func() time.Time
	// ResyncInterval is the period of the full re-evaluation without events
	// (default DefaultResyncInterval).
	ResyncInterval time.Duration
	// ConfigPollInterval is how often Config's Hash is checked (default
	// DefaultConfigPollInterval).
	ConfigPollInterval time.Duration
	// MinEvaluationInterval is the least time between two evaluations
	// (default DefaultMinEvaluationInterval).
	MinEvaluationInterval time.Duration
	// ExcludeServices compares the Services pods exclude from the capture
	// by name with what they resolved to at injection, and makes outdated
	// the pods under whose Services new addresses appeared
	// (--exclude-services). The Services and EndpointSlices are read from,
	// and watched in, the manager's cache, which the webhook shares
	// (webhook.Options.ExcludeServices starts the informers).
	ExcludeServices bool
}

func (o *Options) defaults() error {
	if o.Config == nil {
		return errors.New("upgrade: Options.Config is required")
	}
	if o.MaxConcurrentRestarts < 0 {
		return fmt.Errorf("upgrade: Options.MaxConcurrentRestarts is %d, must be at least 1", o.MaxConcurrentRestarts)
	}
	if o.MaxConcurrentRestarts == 0 {
		o.MaxConcurrentRestarts = DefaultMaxConcurrentRestarts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = DefaultResyncInterval
	}
	if o.ConfigPollInterval <= 0 {
		o.ConfigPollInterval = DefaultConfigPollInterval
	}
	if o.MinEvaluationInterval <= 0 {
		o.MinEvaluationInterval = DefaultMinEvaluationInterval
	}
	return nil
}

// Setup adds the controller to the manager. It runs only on the elected
// leader (NeedLeaderElection is true): its cache of pods and workloads is
// started when leadership is acquired, so replicas that only serve the
// webhook hold none of it. The manager's scheme must know core/v1, apps/v1
// and batch/v1 (client-go's scheme does).
func Setup(mgr manager.Manager, opts Options) error {
	_, err := setup(mgr, opts)
	return err
}

// singleton is the only request: every event re-evaluates the cluster as a
// whole, because the restart budget and the per-namespace gauges are
// cluster-wide. The workqueue folds a burst of events into one evaluation.
var singleton = reconcile.Request{NamespacedName: types.NamespacedName{Name: "cluster"}}

func setup(mgr manager.Manager, opts Options) (*reconciler, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	scheme := mgr.GetScheme()
	for _, gvk := range []schema.GroupVersionKind{
		corev1.SchemeGroupVersion.WithKind(KindPod),
		appsv1.SchemeGroupVersion.WithKind(KindDeployment),
	} {
		if !scheme.Recognizes(gvk) {
			return nil, fmt.Errorf("upgrade: the manager's scheme does not know %s", gvk)
		}
	}
	// Pods are not in this cache: they are watched as metadata into the
	// compact podStore (see podstore.go).
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient:       mgr.GetHTTPClient(),
		Scheme:           scheme,
		Mapper:           mgr.GetRESTMapper(),
		DefaultTransform: transform,
	})
	if err != nil {
		return nil, fmt.Errorf("upgrade: creating the cache: %w", err)
	}
	pods := newPodStore()
	reflector, err := newPodReflector(mgr.GetConfig(), mgr.GetHTTPClient(), pods)
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	logger := mgr.GetLogger().WithName("upgrade")
	r := &reconciler{
		opts:     opts,
		excluded: &excludedRefs{},
		cache:    c,
		pods:     pods,
		client:   mgr.GetClient(),
		events:   newEventSink(mgr.GetClient(), scheme, logger.WithName("events")),
		log:      logger,
		pending:  map[Ref]pendingRestart{},
		tracked:  map[Ref]*trackedRollout{},
		reported: map[Ref]string{},
		outdated: gaugeSet{gauge: outdatedPods},
		unselect: gaugeSet{gauge: unselectedPods},
		stale:    gaugeSet{gauge: staleServicePods},
	}
	// The controller is not added to the manager: leaderRunnable starts it,
	// after its cache, on the leader only.
	ctrlOpts := controller.Options{
		Reconciler:              r,
		MaxConcurrentReconciles: 1,
		Logger:                  logger,
		LogConstructor:          func(*reconcile.Request) logr.Logger { return logger },
	}
	ctrlOpts.DefaultFromConfig(mgr.GetControllerOptions())
	ctrl, err := controller.NewUnmanaged(ControllerName, ctrlOpts)
	if err != nil {
		return nil, fmt.Errorf("upgrade: creating the controller: %w", err)
	}

	all := func(context.Context, client.Object) []reconcile.Request { return []reconcile.Request{singleton} }
	toAll := handler.EnqueueRequestsFromMapFunc(all)
	createdOnly := predicate.Funcs{
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
	sources := []source.Source{
		source.Func(r.watchPods),
		source.Kind(c, client.Object(&appsv1.Deployment{}), toAll),
		source.Kind(c, client.Object(&appsv1.StatefulSet{}), toAll),
		source.Kind(c, client.Object(&appsv1.DaemonSet{}), toAll),
		source.Kind(c, client.Object(metadataOf(corev1.SchemeGroupVersion.WithKind("Namespace"))), toAll,
			predicate.Or[client.Object](predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{})),
		// A pod may arrive before its ReplicaSet or Job: evaluate again
		// when they appear. Their updates (status) do not matter.
		source.Kind(c, client.Object(metadataOf(appsv1.SchemeGroupVersion.WithKind(KindReplicaSet))), toAll, createdOnly),
		source.Kind(c, client.Object(metadataOf(batchv1JobGVK)), toAll, createdOnly),
		source.Func(r.watchConfig),
	}
	if opts.ExcludeServices {
		r.services = (&services.Resolver{Reader: mgr.GetCache()}).Lookup
		// Only Services that injected pods exclude, and only changes of
		// their addresses, cost an evaluation.
		for _, obj := range services.Objects() {
			sources = append(sources, source.Kind(mgr.GetCache(), obj, toAll, r.excluded.servicePredicate()))
		}
	}
	for _, s := range sources {
		if err := ctrl.Watch(s); err != nil {
			return nil, fmt.Errorf("upgrade: watching: %w", err)
		}
	}
	if err := mgr.Add(&leaderRunnable{cache: c, ctrl: ctrl, pods: pods, reflector: reflector, events: r.events}); err != nil {
		return nil, fmt.Errorf("upgrade: adding the controller to the manager: %w", err)
	}
	return r, nil
}

var batchv1JobGVK = batchv1.SchemeGroupVersion.WithKind(KindJob)

func metadataOf(gvk schema.GroupVersionKind) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	return m
}

// leaderRunnable starts the controller's own cache, its pod reflector and
// its Event sink, and then the controller, only once this replica is the
// leader.
type leaderRunnable struct {
	cache     cache.Cache
	ctrl      controller.Controller
	pods      *podStore
	reflector *toolscache.Reflector
	events    *eventSink
}

var _ manager.LeaderElectionRunnable = (*leaderRunnable)(nil)

// NeedLeaderElection returns true: only the leader evaluates and restarts.
func (l *leaderRunnable) NeedLeaderElection() bool { return true }

// Start runs the cache and the controller until ctx ends.
func (l *leaderRunnable) Start(ctx context.Context) error {
	for _, obj := range cachedTypes() {
		if _, err := l.cache.GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("upgrade: creating the informer for %T: %w", obj, err)
		}
	}
	cacheErr := make(chan error, 1)
	go func() { cacheErr <- l.cache.Start(ctx) }()
	var wg sync.WaitGroup
	defer wg.Wait() // the reflector and the Event sink's flush
	wg.Go(func() { l.reflector.RunWithContext(ctx) })
	wg.Go(func() { l.events.run(ctx) })
	if !l.cache.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("upgrade: the cache did not sync: %w", <-cacheErr)
	}
	select {
	case <-l.pods.synced:
	case <-ctx.Done():
		return nil
	}
	if err := l.ctrl.Start(ctx); err != nil {
		return fmt.Errorf("upgrade: running the controller: %w", err)
	}
	return nil
}

// watchPods is a source that enqueues an evaluation when an injected pod
// was added, changed or removed (the workqueue folds a burst into one).
func (r *reconciler) watchPods(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.pods.changed:
				q.Add(singleton)
			}
		}
	}()
	return nil
}

// watchConfig is a source that enqueues the first evaluation and one more
// each time the configuration changes (signalled on Changes, or seen by
// polling Config's Hash).
func (r *reconciler) watchConfig(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	q.Add(singleton)
	changes := r.opts.Changes
	go func() {
		last := ""
		if cfg := r.opts.Config(); cfg != nil {
			last = cfg.Hash
		}
		tick := time.NewTicker(r.opts.ConfigPollInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-changes:
				if !ok {
					changes = nil // closed: rely on polling
					continue
				}
				q.Add(singleton)
			case <-tick.C:
				if cfg := r.opts.Config(); cfg != nil && cfg.Hash != last {
					last = cfg.Hash
					q.Add(singleton)
				}
			}
		}
	}()
	return nil
}

// reconciler evaluates the whole cluster on each reconcile. It runs with one
// worker, so its maps need no lock.
type reconciler struct {
	opts   Options
	cache  cache.Cache
	pods   *podStore
	client client.Client
	events *eventSink
	log    logr.Logger

	lastEval time.Time
	lastHash string
	// pending are workloads patched by this replica whose patch the cache
	// has not shown yet: they count as restarting meanwhile.
	pending map[Ref]pendingRestart
	// tracked are restarts seen in progress, to count and report them once
	// when they finish or fail.
	tracked map[Ref]*trackedRollout
	// reported holds, per workload, the restart key (the hash, with the
	// excluded Services' addresses when only they changed) its
	// OutdatedSidecars Event was emitted for.
	reported map[Ref]string
	// services looks up the Services pods exclude (nil without
	// Options.ExcludeServices); excluded are those the last snapshot's
	// pods exclude, for the watches' predicate.
	services ServiceSource
	excluded *excludedRefs
	outdated gaugeSet
	unselect gaugeSet
	stale    gaugeSet

	// evaluations counts full evaluations (for tests).
	evaluations atomic.Int64
	// lastDuration is the last evaluation's duration in nanoseconds.
	lastDuration atomic.Int64
}

type pendingRestart struct {
	hash, at string
	since    time.Time
}

type trackedRollout struct {
	hash   string
	failed bool
}

// pendingExpiry bounds how long a patched workload counts as restarting
// without the cache showing the patch (the workload was deleted).
const pendingExpiry = 2 * time.Minute

// Reconcile evaluates every injected pod, updates the gauges, reports, and
// starts restarts within the budget.
func (r *reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	if wait := r.opts.MinEvaluationInterval - time.Since(r.lastEval); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	r.lastEval = time.Now()
	cfg := r.opts.Config()
	if cfg == nil {
		r.log.Info("No configuration yet; waiting")
		return reconcile.Result{RequeueAfter: r.opts.ResyncInterval}, nil
	}
	snap, err := r.snapshot(ctx, cfg)
	if err != nil {
		return reconcile.Result{}, err
	}
	start := time.Now()
	rep := Evaluate(snap)
	took := time.Since(start)
	r.lastDuration.Store(int64(took))
	r.evaluations.Add(1)
	evaluationSeconds.Observe(took.Seconds())
	injectedPods.Set(float64(rep.Pods.Total))
	if cfg.Hash != r.lastHash {
		r.log.Info("Evaluating injected pods against the configuration", "hash", cfg.Hash, "previousHash", r.lastHash,
			"revision", rep.Revision, "pods", rep.Pods.Total, "outdated", rep.Pods.Outdated, "unselected", rep.Pods.Unselected)
		r.lastHash = cfg.Hash
	}
	r.updateGauges(rep)
	r.trackRollouts(rep)
	plan := r.plan(rep)
	r.report(rep, plan)
	requeue := r.opts.ResyncInterval
	if err := r.restart(ctx, rep, plan); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			// The workload changed since the cache saw it: decide again
			// on fresh state, soon.
			r.log.V(1).Info("A workload changed under a restart; re-evaluating", "error", err.Error())
			return reconcile.Result{RequeueAfter: r.opts.MinEvaluationInterval}, nil
		}
		return reconcile.Result{}, err
	}
	if w := r.opts.MaintenanceWindow.Next(r.opts.Now()); w > 0 && w < requeue && plan.waiting > 0 {
		requeue = w
	}
	r.log.V(1).Info("Evaluated", "pods", rep.Pods.Total, "outdated", rep.Pods.Outdated, "unselected", rep.Pods.Unselected,
		"workloads", len(rep.Workloads), "restarting", len(plan.restarting), "duration", time.Duration(r.lastDuration.Load()))
	return reconcile.Result{RequeueAfter: requeue}, nil
}

// snapshot lists the cache, and the pods from the pod store.
func (r *reconciler) snapshot(ctx context.Context, cfg *config.Config) (*Snapshot, error) {
	snap, err := ListSnapshot(ctx, r.cache, cfg, "", func(context.Context) ([]*PodInfo, error) { return r.pods.List(), nil }, r.services)
	if err != nil {
		return nil, err
	}
	if r.services != nil {
		r.excluded.store(snap.Pods)
	}
	return snap, nil
}

func (r *reconciler) updateGauges(rep *Report) {
	outdated := make(map[string]int, len(rep.Namespaces))
	unselected := make(map[string]int, len(rep.Namespaces))
	stale := make(map[string]int, len(rep.Namespaces))
	for ns, c := range rep.Namespaces {
		outdated[ns] = c.Outdated
		unselected[ns] = c.Unselected
		stale[ns] = c.StaleServices
	}
	r.outdated.update(outdated)
	r.unselect.update(unselected)
	r.stale.update(stale)
}

// trackRollouts counts and reports, once each, the restarts that finished
// or failed. A restart is tracked from the first evaluation that sees it in
// progress (after a leader change too).
func (r *reconciler) trackRollouts(rep *Report) {
	workloads := make(map[Ref]*WorkloadReport, len(rep.Workloads))
	for i := range rep.Workloads {
		workloads[rep.Workloads[i].Ref] = &rep.Workloads[i]
	}
	for ref, ro := range rep.Rollouts {
		t := r.tracked[ref]
		if t == nil {
			if !ro.Restarting() || !ours(ro, rep.Revision) {
				continue
			}
			t = &trackedRollout{hash: ro.TemplateAnnotations[AnnotationRestartedFor]}
			r.tracked[ref] = t
		}
		// A restart this replica just made is tracked from the patch on;
		// until the cache shows the patch, the old rollout's state says
		// nothing about it.
		if ro.TemplateAnnotations[AnnotationRestartedFor] != t.hash {
			continue
		}
		log := r.log.WithValues("workload", ref.String(), "restartedFor", t.hash)
		switch {
		case ro.Finished:
			restartsTotal.WithLabelValues(resultFinished).Inc()
			delete(r.tracked, ref)
			msg := "Rollout finished"
			var outdated, total int
			if w := workloads[ref]; w != nil {
				outdated, total = w.Outdated, w.Total
				msg += fmt.Sprintf("; %d of %d injected pods up to date", w.Total-w.Outdated-w.Unselected, w.Total)
				if w.Outdated > 0 {
					msg += fmt.Sprintf("; %d still carry an older configuration (were the new pods injected? is the webhook running?)", w.Outdated)
				}
			}
			log.Info("Restart finished", "outdated", outdated, "pods", total)
			r.event(ro.Object, corev1.EventTypeNormal, ReasonRestartFinished, "Restart", msg)
		case ro.Failed && !t.failed:
			t.failed = true
			restartsTotal.WithLabelValues(resultFailed).Inc()
			log.Info("Restart failed: the rollout exceeded its progress deadline; it keeps its restart slot until it is fixed or rolled back")
			r.event(ro.Object, corev1.EventTypeWarning, ReasonRestartFailed, "Restart",
				"The rollout restarting outdated sidecars exceeded its progress deadline; fix or roll it back: "+
					"other restarts wait while it is in progress")
		}
	}
	for ref := range r.tracked {
		if _, ok := rep.Rollouts[ref]; !ok {
			delete(r.tracked, ref) // the workload was deleted
		}
	}
}

// ours reports whether a rollout was restarted by a controller of this
// revision (restarts made before the restarted-by annotation existed count
// as everyone's).
func ours(ro *Rollout, revision string) bool {
	by, ok := ro.TemplateAnnotations[AnnotationRestartedBy]
	return !ok || by == revision
}

// plan is what the controller decides for one evaluation.
type plan struct {
	// restarting are the workloads that hold a slot of the budget.
	restarting map[Ref]bool
	// start are the workloads to restart now.
	start []int
	// why says, per workload with outdated pods, why it is not restarted
	// now (for the Event and the logs).
	why map[Ref]string
	// waiting counts workloads that would be restarted but for the budget
	// or the window.
	waiting int
}

func (r *reconciler) plan(rep *Report) *plan {
	p := &plan{restarting: map[Ref]bool{}, why: map[Ref]string{}}
	now := time.Now()
	for ref, ro := range rep.Rollouts {
		if ro.Restarting() && ours(ro, rep.Revision) {
			p.restarting[ref] = true
		}
		if pr, ok := r.pending[ref]; ok {
			shown := ro.TemplateAnnotations[AnnotationRestartedFor] == pr.hash &&
				ro.TemplateAnnotations[AnnotationRestartedAt] == pr.at
			if shown {
				delete(r.pending, ref)
			}
		}
	}
	for ref, pr := range r.pending {
		if now.Sub(pr.since) > pendingExpiry {
			delete(r.pending, ref)
			continue
		}
		p.restarting[ref] = true
	}
	budget := r.opts.MaxConcurrentRestarts - len(p.restarting)
	inWindow := r.opts.MaintenanceWindow.Contains(r.opts.Now())
	for i := range rep.Workloads {
		w := &rep.Workloads[i]
		if w.Outdated == 0 && w.Unselected == 0 {
			continue
		}
		why := r.decide(rep, w, p)
		if why == "" {
			switch {
			case !inWindow:
				why = "waiting for the maintenance window " + r.opts.MaintenanceWindow.String() + " UTC"
				p.waiting++
			case budget <= 0:
				why = fmt.Sprintf("waiting: %d of at most %d workloads are restarting",
					len(p.restarting)+len(p.start), r.opts.MaxConcurrentRestarts)
				p.waiting++
			default:
				budget--
				p.start = append(p.start, i)
				continue
			}
		}
		p.why[w.Ref] = why
	}
	return p
}

// decide returns why the workload is not to be restarted, or "" when it is
// a candidate.
func (r *reconciler) decide(rep *Report, w *WorkloadReport, p *plan) string {
	if !w.Ref.Restartable() {
		return "a " + w.Ref.Kind + "'s pods are never restarted by Remora: recreate them"
	}
	if r.opts.ReportOnly {
		return "restarts are off (report only)"
	}
	if len(r.opts.RestartNamespaces) > 0 && !slices.Contains(r.opts.RestartNamespaces, w.Ref.Namespace) {
		return "restarts are not allowed in namespace " + w.Ref.Namespace + " (only in " + strings.Join(r.opts.RestartNamespaces, ", ") + ")"
	}
	ro := w.Rollout
	if ro == nil {
		return "the " + w.Ref.Kind + " is not in the cache yet"
	}
	opt := ResolveOptIn(ro.Annotations, rep.NamespaceAnnotations[w.Ref.Namespace], r.opts.RestartOutdated)
	switch {
	case w.Unselected > 0 && (!opt.Allowed || !opt.Explicit):
		return "injected but no longer selected: restarted only with an explicit " + AnnotationRestartOutdated + "=true annotation, which would remove its sidecars"
	case !opt.Allowed:
		return "restart: " + opt.Source
	case ro.RestartedFor() == w.restartFor(rep.Hash):
		return "already restarted for " + w.restartFor(rep.Hash)
	case p.restarting[w.Ref]:
		return "restarting"
	case ro.Paused:
		return "the Deployment is paused"
	case ro.Manual != "":
		return "its pods are replaced only by hand: " + ro.Manual
	case !ro.Finished:
		return "a rollout is already in progress"
	}
	return ""
}

// Reporting is bounded per evaluation, however many workloads a change
// makes outdated: an OutdatedSidecars Event for each of the first
// maxEventsPerNamespace workloads of a namespace, then one Event on the
// namespace that counts the rest; a log line for each of the first
// maxLoggedWorkloads workloads, then one line that counts the rest.
// `injector status` lists them all.
const (
	maxEventsPerNamespace = 10
	maxLoggedWorkloads    = 20
)

// unreported counts the outdated workloads of a namespace that got no Event
// of their own.
type unreported struct{ workloads, pods int }

// report emits one OutdatedSidecars Event per workload and configuration
// hash, within the bounds above, and logs the decisions.
func (r *reconciler) report(rep *Report, p *plan) {
	current := make(map[Ref]bool, len(rep.Workloads))
	evented := map[string]int{}
	overflow := map[string]*unreported{}
	logged, notLogged, notLoggedPods := 0, 0, 0
	for i := range rep.Workloads {
		w := &rep.Workloads[i]
		if w.Outdated == 0 && w.Unselected == 0 {
			continue
		}
		current[w.Ref] = true
		key := w.restartFor(rep.Hash)
		if r.reported[w.Ref] == key {
			continue
		}
		obj := w.EventObject()
		if obj == nil {
			continue // reported once its owner is known
		}
		r.reported[w.Ref] = key
		decision := p.why[w.Ref]
		if decision == "" {
			decision = "restarting now"
		}
		if logged < maxLoggedWorkloads {
			logged++
			r.log.Info("Outdated sidecars", "workload", w.Ref.String(), "outdated", w.Outdated, "unselected", w.Unselected,
				"pods", w.Total, "change", w.Change.String(), "hash", rep.Hash, "staleServices", serviceNames(w.ChangedServices),
				"decision", decision)
		} else {
			notLogged++
			notLoggedPods += w.Outdated + w.Unselected
		}
		ns := w.Ref.Namespace
		if evented[ns] >= maxEventsPerNamespace {
			o := overflow[ns]
			if o == nil {
				o = &unreported{}
				overflow[ns] = o
			}
			o.workloads++
			o.pods += w.Outdated + w.Unselected
			continue
		}
		evented[ns]++
		r.event(obj, corev1.EventTypeNormal, ReasonOutdatedSidecars, "Report", outdatedNote(w, rep.Hash, decision))
	}
	if notLogged > 0 {
		r.log.Info("Outdated sidecars in more workloads (not logged one by one; `injector status` lists them)",
			"workloads", notLogged, "pods", notLoggedPods, "hash", rep.Hash)
	}
	for _, ns := range slices.Sorted(maps.Keys(overflow)) {
		o := overflow[ns]
		r.event(reference("v1", "Namespace", "", ns, rep.NamespaceUIDs[ns]), corev1.EventTypeNormal, ReasonOutdatedSidecars, "Report",
			fmt.Sprintf("%d more workloads in namespace %s (%d pods) carry sidecars injected with an older configuration "+
				"or are no longer selected (current %s); `injector status -n %s` lists them", o.workloads, ns, o.pods, rep.Hash, ns))
	}
	for ref := range r.reported {
		if !current[ref] {
			delete(r.reported, ref)
		}
	}
}

// restart rolls the planned workloads: a merge patch of the pod template's
// restartedAt (as kubectl rollout restart) and restarted-for annotations,
// and of the workload's restarted-for, with the cached resourceVersion as a
// precondition so that a workload changed since the cache saw it is not
// touched.
func (r *reconciler) restart(ctx context.Context, rep *Report, p *plan) error {
	for _, i := range p.start {
		w := &rep.Workloads[i]
		orig := w.Object
		if orig == nil {
			continue
		}
		at := r.opts.Now().UTC().Format(time.RFC3339)
		key := w.restartFor(rep.Hash)
		obj := orig.DeepCopyObject().(client.Object)
		annotate(obj, AnnotationRestartedFor, key)
		tmpl := templateOf(obj)
		if tmpl.Annotations == nil {
			tmpl.Annotations = map[string]string{}
		}
		tmpl.Annotations[AnnotationRestartedAt] = at
		tmpl.Annotations[AnnotationRestartedFor] = key
		tmpl.Annotations[AnnotationRestartedBy] = rep.Revision
		patch := client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})
		log := r.log.WithValues("workload", w.Ref.String(), "hash", rep.Hash, "restartedFor", key, "outdated", w.Outdated, "pods", w.Total,
			"change", w.Change.String())
		if err := r.client.Patch(ctx, obj, patch, client.FieldOwner(ControllerName)); err != nil {
			return fmt.Errorf("restarting %s: %w", w.Ref, err)
		}
		r.pending[w.Ref] = pendingRestart{hash: key, at: at, since: time.Now()}
		// Track it from now on, so that a rollout that finishes before the
		// next evaluation is still counted and evented.
		r.tracked[w.Ref] = &trackedRollout{hash: key}
		p.restarting[w.Ref] = true
		restartsTotal.WithLabelValues(resultStarted).Inc()
		log.Info("Restarting a workload with outdated sidecars", "restartedAt", at,
			"restarting", len(p.restarting), "maxConcurrentRestarts", r.opts.MaxConcurrentRestarts)
		r.event(obj, corev1.EventTypeNormal, ReasonRestarting, "Restart", restartingNote(w, key))
	}
	return nil
}

func annotate(obj client.Object, k, v string) {
	a := obj.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[k] = v
	obj.SetAnnotations(a)
}

func templateOf(obj client.Object) *corev1.PodTemplateSpec {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template
	case *appsv1.StatefulSet:
		return &o.Spec.Template
	case *appsv1.DaemonSet:
		return &o.Spec.Template
	}
	panic(fmt.Sprintf("upgrade: %T has no pod template", obj))
}

func (r *reconciler) event(obj client.Object, eventType, reason, action, note string) {
	r.events.emit(obj, eventType, reason, action, note)
}

// outdatedNote is the OutdatedSidecars Event's note on a workload.
func outdatedNote(w *WorkloadReport, hash, decision string) string {
	switch {
	case w.Unselected > 0:
		return fmt.Sprintf("%d of %d pods are injected but no longer selected for injection (%s); %s",
			w.Unselected, w.Total, w.UnselectedReason, decision)
	case w.Change == ChangeServices:
		return fmt.Sprintf("%d of %d pods exclude Services from the capture whose addresses changed since they were injected (%s): "+
			"their connections to the new addresses go through the proxy; %s",
			w.Outdated, w.Total, serviceNames(w.ChangedServices), decision)
	}
	msg := fmt.Sprintf("%d of %d pods carry sidecars injected with an older configuration (%s changed; current %s)",
		w.Outdated, w.Total, w.Change, hash)
	if len(w.ChangedServices) > 0 {
		msg += "; excluded Services' addresses changed too (" + serviceNames(w.ChangedServices) + ")"
	}
	return msg + "; " + decision
}

// restartingNote is the RestartingOutdatedSidecars Event's note.
func restartingNote(w *WorkloadReport, key string) string {
	if w.Change == ChangeServices {
		return fmt.Sprintf("Rolling restart: %d of %d pods exclude Services whose addresses changed (%s); restarted for %s",
			w.Outdated, w.Total, serviceNames(w.ChangedServices), key)
	}
	return fmt.Sprintf("Rolling restart: %d of %d pods carry sidecars injected with an older configuration (%s changed); restarted for configuration %s",
		w.Outdated+w.Unselected, w.Total, w.Change, key)
}
