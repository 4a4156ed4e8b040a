package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/remora-mesh/remora/internal/configwatch"
	"github.com/remora-mesh/remora/internal/drain"
	"github.com/remora-mesh/remora/internal/selfcert"
	"github.com/remora-mesh/remora/internal/services"
	"github.com/remora-mesh/remora/internal/upgrade"
	"github.com/remora-mesh/remora/internal/webhook"
	"github.com/remora-mesh/remora/pkg/version"
)

// The steps of serveOptions.run, in the order it takes them.

// setupLogging makes the --zap-* logger controller-runtime's and client-go's,
// and returns the logger of the set-up steps.
func (o *serveOptions) setupLogging() logr.Logger {
	logger := zap.New(zap.UseFlagOptions(&o.zap))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger.WithName("client-go"))
	log := logger.WithName("setup")
	log.Info("Starting the Remora injector", "version", version.Version, "revision", version.Revision)
	return log
}

// apiServerConfig loads the kubeconfig (clusterOptions.restConfig) and sets
// the user agent and the client-side rate limits of every client.
func (o *serveOptions) apiServerConfig() (*rest.Config, error) {
	restCfg, err := o.restConfig()
	if err != nil {
		return nil, err
	}
	restCfg.UserAgent = "remora-injector/" + version.Version
	// Set on purpose, the same in-cluster and with --kubeconfig (client-go
	// would use 5/10 with a kubeconfig, controller-runtime none in-cluster).
	restCfg.QPS, restCfg.Burst = o.kubeAPIQPS, o.kubeAPIBurst
	return restCfg, nil
}

// configWatcher loads the injection configuration from --config-dir (or
// the embedded defaults) with the flags' overrides, and keeps it current.
func (o *serveOptions) configWatcher(restCfg *rest.Config, log logr.Logger) (*configwatch.Watcher, error) {
	overrides, err := o.overrides(restCfg, log)
	if err != nil {
		return nil, err
	}
	watcher, err := configwatch.New(configwatch.Options{Dir: o.configDir, Overrides: overrides})
	if err != nil {
		return nil, fmt.Errorf("loading the injection configuration: %w", err)
	}
	cfg := watcher.Current()
	log.Info("Loaded the injection configuration", "dir", o.configDir, "hash", cfg.Hash,
		"revision", cfg.Revision(), "nativeSidecars", cfg.Settings.NativeSidecars)
	return watcher, nil
}

// newManager creates the manager with the webhook server, the metrics and
// probe endpoints, leader election and a graceful shutdown long enough for
// the drainer.
func (o *serveOptions) newManager(restCfg *rest.Config) (manager.Manager, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("building the scheme: %w", err)
	}
	gracePeriod := drain.GracePeriod(o.shutdownDelay)
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       o.metricsOptions(),
		HealthProbeBindAddress:        o.probeAddr,
		PprofBindAddress:              o.pprofAddr,
		WebhookServer:                 o.webhook.Server(),
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionNamespace:       o.namespace,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &gracePeriod,
		Cache: cache.Options{
			// Namespace metadata is cached; drop what is never read. With
			// --exclude-services, Services and EndpointSlices too, reduced
			// to what the resolver reads.
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject:         services.CacheOptions(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	return mgr, nil
}

// metricsOptions configure the /metrics server: by default HTTPS, with each
// request's bearer token authenticated and its get on /metrics authorized by
// the API server, as the kubebuilder scaffold does.
func (o *serveOptions) metricsOptions() metricsserver.Options {
	opts := metricsserver.Options{BindAddress: o.metricsAddr}
	if !o.metricsSecure {
		return opts
	}
	opts.SecureServing = true
	opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	opts.CertDir = o.metricsCertDir
	opts.TLSOpts = []func(*tls.Config){o.webhook.HardenTLS}
	return opts
}

// webhookOptions are the webhook's flags with the current configuration and
// the injector's own namespace.
func (o *serveOptions) webhookOptions(watcher *configwatch.Watcher, log logr.Logger) webhook.Options {
	if o.namespace == "" {
		log.Info("No --namespace or POD_NAMESPACE: the injector's own namespace is not excluded from injection by the injector itself")
	}
	opts := o.webhook
	opts.Config = watcher.Current
	opts.OwnNamespace = o.namespace
	return opts
}

// addConfigWatcher runs the configuration watcher with the manager; readiness
// waits for a valid configuration.
func addConfigWatcher(mgr manager.Manager, watcher *configwatch.Watcher) error {
	if err := mgr.Add(watcher); err != nil {
		return fmt.Errorf("adding the configuration watcher: %w", err)
	}
	if err := mgr.AddReadyzCheck("config", watcher.Checker); err != nil {
		return fmt.Errorf("adding readiness check config: %w", err)
	}
	return nil
}

// setupUpgradeController adds the companion controller (internal/upgrade), unless
// --upgrade-controller=false.
func (o *serveOptions) setupUpgradeController(mgr manager.Manager, watcher *configwatch.Watcher) error {
	if !o.upgradeController {
		return nil
	}
	var window *upgrade.Window
	if o.maintenanceWindow != "" {
		var err error
		if window, err = upgrade.ParseWindow(o.maintenanceWindow); err != nil {
			return fmt.Errorf("--maintenance-window: %w", err)
		}
	}
	if err := upgrade.Setup(mgr, upgrade.Options{
		Config:                watcher.Current,
		Changes:               watcher.Changes(),
		RestartOutdated:       o.restartOutdated,
		ReportOnly:            !o.allowRestarts,
		RestartNamespaces:     o.restartNamespaces,
		MaxConcurrentRestarts: o.maxConcurrentRestarts,
		MaintenanceWindow:     window,
		ExcludeServices:       o.webhook.ExcludeServices,
	}); err != nil {
		return fmt.Errorf("setting up the upgrade controller: %w", err)
	}
	return nil
}

// errStopped: the process was told to stop before the manager started.
var errStopped = errors.New("stopped before serving")

// setupSelfManagedCerts, with --self-managed-certs, writes the serving
// certificate to --cert-dir (the webhook server reads it as it starts,
// before any runnable) and adds the rotation and its readiness check. It
// returns errStopped when ctx ends before the certificate is written.
func (o *serveOptions) setupSelfManagedCerts(ctx context.Context, mgr manager.Manager, log logr.Logger) error {
	if !o.selfManagedCerts {
		return nil
	}
	certDir, err := filepath.Abs(o.webhook.CertDir)
	if err != nil {
		return fmt.Errorf("--cert-dir: %w", err)
	}
	certs, err := selfcert.New(mgr.GetClient(), mgr.GetAPIReader(), selfcert.Options{
		Namespace:         o.namespace,
		SecretName:        o.certSecretName,
		ServiceName:       o.serviceName,
		WebhookConfigName: o.webhookConfigName,
		CertDir:           certDir,
		CertValidity:      o.certValidity,
		CAValidity:        o.caValidity,
	})
	if err != nil {
		return fmt.Errorf("setting up self-managed certificates: %w", err)
	}
	if err := certs.Bootstrap(ctx); err != nil {
		if ctx.Err() != nil {
			log.Info("Stopped before the self-managed certificate was written")
			return errStopped
		}
		return err
	}
	if err := mgr.Add(certs); err != nil {
		return fmt.Errorf("adding the self-managed certificates: %w", err)
	}
	if err := mgr.AddReadyzCheck("self-managed-certs", certs.Checker); err != nil {
		return fmt.Errorf("adding a readiness check: %w", err)
	}
	return nil
}

// serve runs the manager until ctx ends and its graceful shutdown is done.
func (o *serveOptions) serve(ctx context.Context, mgr manager.Manager, log logr.Logger) error {
	log.Info("Serving", "port", o.webhook.Port, "metrics", o.metricsAddr, "metricsSecure", o.metricsSecure,
		"paths", []string{webhook.Path, webhook.PathPrefix}, "certDir", o.webhook.CertDir,
		"ownNamespace", o.namespace, "http2", o.webhook.EnableHTTP2, "leaderElection", o.leaderElect)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the manager: %w", err)
	}
	log.Info("Stopped")
	return nil
}
