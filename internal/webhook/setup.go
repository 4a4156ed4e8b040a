package webhook

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"

	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/remora-mesh/remora/internal/guard"
	"github.com/remora-mesh/remora/internal/services"
)

// The paths the webhook is served at. Path is Istio's webhook path;
// PathPrefix also serves Istio's trailing path parameters
// (/inject/cluster/X/net/Y), which are ignored.
const (
	Path       = "/inject"
	PathPrefix = "/inject/"
)

// Setup adds the webhook to the manager, whose webhook server should come
// from Options.Server:
//   - the Handler, behind the guard (internal/guard checks the HTTP request and
//     its JSON strictly before controller-runtime decodes the review, bounds
//     read and write time per request, and recovers panics), registered at
//     Path and PathPrefix;
//   - the namespace metadata informer, started with the manager's cache so
//     that admissions read namespace labels from memory;
//   - with ExcludeServices, the Service and EndpointSlice informers, whose
//     objects the manager's cache must strip (services.CacheOptions), to
//     resolve the Services pods exclude from the capture by name;
//   - the readiness checks "webhook" (the server is serving),
//     "namespace-cache" (the informer has synced) and, with
//     ExcludeServices, "service-cache";
//   - with WorkloadEvents, the worker that writes Events on the workloads of
//     refused pods (events.go), with the manager's Event recorder and
//     uncached reader, on every replica.
//
// Every replica serves admissions; nothing here waits for leadership.
func Setup(mgr manager.Manager, opts Options) error {
	if opts.Namespaces == nil {
		opts.Namespaces = mgr.GetClient()
	}
	if opts.Uncached == nil {
		opts.Uncached = mgr.GetAPIReader()
	}
	if opts.ExcludeServices && opts.Services == nil {
		opts.Services = &services.Resolver{Reader: mgr.GetCache(), Uncached: mgr.GetAPIReader()}
	}
	handler, err := NewHandler(opts)
	if err != nil {
		return fmt.Errorf("creating the admission handler: %w", err)
	}
	// Before the cache starts, GetInformer only adds the informer; it never
	// waits for it to sync.
	nsInformer, err := mgr.GetCache().GetInformer(context.Background(), namespaceMetadata(), cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("creating the namespace informer: %w", err)
	}
	checks := []namedCheck{
		{"webhook", mgr.GetWebhookServer().StartedChecker()},
		{"namespace-cache", syncedChecker(nsInformer.HasSynced)},
	}
	if opts.ExcludeServices {
		check, err := serviceInformers(mgr)
		if err != nil {
			return err
		}
		checks = append(checks, check)
	}

	if opts.WorkloadEvents {
		interval := cmp.Or(opts.WorkloadEventInterval, DefaultWorkloadEventInterval)
		handler.events = newWorkloadEvents(mgr.GetEventRecorder(EventsController), mgr.GetAPIReader(), interval,
			log.Log.WithName("workload-events"))
		if err := mgr.Add(handler.events); err != nil {
			return fmt.Errorf("adding the workload Events: %w", err)
		}
	}

	hook := guard.New(&admission.Webhook{Handler: handler, LogConstructor: requestLogger}, guard.Options{Log: log.Log.WithName("guard")})
	server := mgr.GetWebhookServer()
	server.Register(Path, hook)
	server.Register(PathPrefix, hook)

	for _, c := range checks {
		if err := mgr.AddReadyzCheck(c.name, c.check); err != nil {
			return fmt.Errorf("adding readiness check %s: %w", c.name, err)
		}
	}
	return nil
}

// namedCheck is a readiness check and its name.
type namedCheck struct {
	name  string
	check healthz.Checker
}

// serviceInformers adds the informers of Services and EndpointSlices to the
// manager's cache (which keeps only what the resolver reads of them:
// services.CacheOptions) and returns the readiness check "service-cache",
// which passes once both have synced: until then a Service could look
// missing, and its pod be refused.
func serviceInformers(mgr manager.Manager) (namedCheck, error) {
	var synced []func() bool
	for _, obj := range services.Objects() {
		inf, err := mgr.GetCache().GetInformer(context.Background(), obj, cache.BlockUntilSynced(false))
		if err != nil {
			return namedCheck{}, fmt.Errorf("creating the %T informer: %w", obj, err)
		}
		synced = append(synced, inf.HasSynced)
	}
	return namedCheck{"service-cache", syncedChecker(func() bool {
		for _, s := range synced {
			if !s() {
				return false
			}
		}
		return true
	})}, nil
}

// syncedChecker is a readiness check that passes once synced does.
func syncedChecker(synced func() bool) healthz.Checker {
	return func(_ *http.Request) error {
		if !synced() {
			return errors.New("not synced yet")
		}
		return nil
	}
}
