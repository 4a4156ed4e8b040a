package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/remora-mesh/remora/internal/drain"
	"github.com/remora-mesh/remora/pkg/configwatch"
	"github.com/remora-mesh/remora/pkg/guard"
	"github.com/remora-mesh/remora/pkg/selfcert"
	"github.com/remora-mesh/remora/pkg/upgrade"
	"github.com/remora-mesh/remora/pkg/version"
	"github.com/remora-mesh/remora/pkg/webhook"
)

// Names fixed by the deployment (the Helm chart relies on them).
const (
	// leaderElectionID names the Lease the replicas elect a leader with.
	leaderElectionID = "remora-injector-leader"
	// injectPath serves Istio's webhook path; injectPrefix also serves
	// Istio's trailing path parameters (/inject/cluster/X/net/Y), which
	// are ignored.
	injectPath   = "/inject"
	injectPrefix = "/inject/"
)

// serveOptions are the flags of injector serve.
type serveOptions struct {
	clusterOptions
	port              int
	certDir           string
	configDir         string
	metricsAddr       string
	metricsSecure     bool
	metricsCertDir    string
	probeAddr         string
	namespace         string
	leaderElect       bool
	enableHTTP2       bool
	shutdownDelay     time.Duration
	selfManagedCerts  bool
	certSecretName    string
	webhookConfigName string
	serviceName       string
	certValidity      time.Duration
	caValidity        time.Duration
	// The companion controller (pkg/upgrade).
	restartOutdated       bool
	allowRestarts         bool
	restartNamespaces     []string
	maxConcurrentRestarts int
	maintenanceWindow     string
	upgradeController     bool
	// Client-side rate limits of every request to the API server.
	kubeAPIQPS   float32
	kubeAPIBurst int
	// memoryLimitRatio sets the Go runtime's soft memory limit to this
	// share of $REMORA_MEMORY_LIMIT (the container's limit, from the
	// chart), unless GOMEMLIMIT is set.
	memoryLimitRatio float64

	zap zap.Options
}

func newServeCmd() *cobra.Command {
	o := &serveOptions{zap: zap.Options{}}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the sidecar injection admission webhook",
		Long: `Run the mutating admission webhook that injects the Istio proxy into pods.

The webhook is served over TLS on --port at /inject (and /inject/..., where
Istio's trailing path parameters are ignored) with the certificate in
--cert-dir, which is reloaded when it changes. The injection configuration is
read from --config-dir (a mounted ConfigMap with values.yaml, mesh.yaml and
*.tmpl) and reloaded when it changes; an invalid change is rejected and the
last good configuration keeps serving. Without --config-dir the embedded
defaults are used. Metrics are served on --metrics-bind-address at /metrics,
over HTTPS to callers the API server authenticates and authorizes (get on
the non-resource URL /metrics) unless --metrics-secure=false; liveness and
readiness on --health-probe-bind-address at /healthz and /readyz.`,
		Example: `  # In a pod, with the certificate and configuration mounted:
  injector serve --cert-dir=/etc/remora/certs --config-dir=/etc/remora/config

  # Against a cluster from a workstation, self-signing its own certificate:
  injector serve --kubeconfig ~/.kube/config --namespace remora-system \
    --self-managed-certs --cert-dir /tmp/remora-certs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if errs := o.validate(); len(errs) > 0 {
				return fmt.Errorf("invalid flags: %w", errs.ToAggregate())
			}
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	o.addFlags(f)
	f.IntVar(&o.port, "port", 9443, "port the webhook server listens on")
	f.StringVar(&o.certDir, "cert-dir", filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs"),
		"directory with the serving certificate tls.crt and key tls.key; reloaded when they change")
	f.StringVar(&o.configDir, "config-dir", "", "injection configuration directory (values.yaml, mesh.yaml, *.tmpl), watched for changes; empty: the embedded defaults")
	f.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", `address of the Prometheus /metrics endpoint; "0" disables it`)
	f.BoolVar(&o.metricsSecure, "metrics-secure", true, "serve /metrics over HTTPS and let only callers the API server authenticates (TokenReview) and authorizes for get on the non-resource URL /metrics (SubjectAccessReview) read it; false serves plain HTTP to anyone who can connect")
	f.StringVar(&o.metricsCertDir, "metrics-cert-dir", "", "directory with tls.crt and tls.key for the HTTPS /metrics endpoint, reloaded when they change; empty: a self-signed certificate generated at start (with --metrics-secure)")
	f.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	f.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the injector's own namespace: never injected, holds the leader election Lease and the self-managed certificate Secret (default $POD_NAMESPACE)")
	f.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader among the replicas (Lease "+leaderElectionID+" in --namespace) for the companion controller's work; admissions are served by every replica")
	f.BoolVar(&o.enableHTTP2, "enable-http2", false, "serve the webhook over HTTP/2 as well as HTTP/1.1 (off by default: HTTP/2 rapid reset, CVE-2023-44487)")
	f.DurationVar(&o.shutdownDelay, "shutdown-delay", 5*time.Second, "on SIGTERM, report not-ready and keep serving this long before closing the listener, so that the Service's endpoints drop this replica first")
	f.BoolVar(&o.selfManagedCerts, "self-managed-certs", false, "generate and rotate the CA and serving certificate in a Secret of --namespace, write them to --cert-dir and keep the webhook configuration's caBundle in sync (the alternative to cert-manager)")
	f.StringVar(&o.certSecretName, "cert-secret-name", "remora-injector-tls", "Secret holding the self-managed certificates (with --self-managed-certs)")
	f.StringVar(&o.webhookConfigName, "webhook-config-name", "remora-injector", "MutatingWebhookConfiguration whose caBundle is kept in sync (with --self-managed-certs)")
	f.StringVar(&o.serviceName, "service-name", "remora-injector", "the webhook's Service; the self-managed serving certificate is valid for its DNS names (with --self-managed-certs)")
	f.DurationVar(&o.certValidity, "self-managed-cert-validity", selfcert.DefaultCertValidity, "lifetime of a self-managed serving certificate, renewed when a third of it remains; shorter than --self-managed-ca-validity (with --self-managed-certs)")
	f.DurationVar(&o.caValidity, "self-managed-ca-validity", selfcert.DefaultCAValidity, "lifetime of the self-managed CA, rotated when a third of it remains; the previous CA stays in the caBundle until it expires (with --self-managed-certs)")
	f.BoolVar(&o.upgradeController, "upgrade-controller", true, "run the companion controller that reports (and, where opted in, restarts) workloads whose pods were injected with an outdated configuration; only the leader acts")
	f.BoolVar(&o.restartOutdated, "restart-outdated", false, "opt every workload in to rolling restarts when its sidecars are outdated (namespaces and workloads opt in or out with the annotation remora.io/restart-outdated)")
	f.BoolVar(&o.allowRestarts, "allow-restarts", true, "let the companion controller rolling-restart workloads that opted in; false: it only reports them (and needs no right to patch workloads)")
	f.StringSliceVar(&o.restartNamespaces, "restart-namespaces", nil, "restart workloads in these namespaces only (comma-separated; where the injector may patch them); empty: every namespace")
	f.IntVar(&o.maxConcurrentRestarts, "max-concurrent-restarts", 1, "at most this many workloads restarting at once, cluster-wide (per revision)")
	f.StringVar(&o.maintenanceWindow, "maintenance-window", "", "restart only inside this daily UTC window, such as 02:00-04:00 (empty: any time)")
	f.Float32Var(&o.kubeAPIQPS, "kube-api-qps", defaultKubeAPIQPS, "client-side limit of requests per second to the API server (every client of the process, in-cluster or with --kubeconfig)")
	f.IntVar(&o.kubeAPIBurst, "kube-api-burst", defaultKubeAPIBurst, "client-side burst of requests to the API server above --kube-api-qps")
	f.Float64Var(&o.memoryLimitRatio, "memory-limit-ratio", defaultMemoryLimitRatio, "set the Go runtime's soft memory limit to this share of $"+envMemoryLimit+" (the container's memory limit in bytes, which the chart sets), so that the garbage collector works harder before the container's limit is reached; ignored when GOMEMLIMIT is set or $"+envMemoryLimit+" is empty")

	// controller-runtime's zap flags: --zap-log-level, --zap-devel,
	// --zap-encoder, --zap-stacktrace-level, --zap-time-encoding.
	gofs := flag.NewFlagSet("zap", flag.ContinueOnError)
	o.zap.BindFlags(gofs)
	f.AddGoFlagSet(gofs)
	return cmd
}

// validate reports every invalid flag.
func (o *serveOptions) validate() field.ErrorList {
	var errs field.ErrorList
	root := field.NewPath("serve")
	if o.port < 1 || o.port > 65535 {
		errs = append(errs, field.Invalid(root.Child("port"), o.port, "must be between 1 and 65535"))
	}
	errs = append(errs, o.clusterOptions.validate(root)...)
	if o.certDir == "" {
		errs = append(errs, field.Required(root.Child("cert-dir"), ""))
	}
	if o.shutdownDelay < 0 {
		errs = append(errs, field.Invalid(root.Child("shutdown-delay"), o.shutdownDelay.String(), "must not be negative"))
	}
	if o.maintenanceWindow != "" {
		if _, err := upgrade.ParseWindow(o.maintenanceWindow); err != nil {
			errs = append(errs, field.Invalid(root.Child("maintenance-window"), o.maintenanceWindow, err.Error()))
		}
	}
	if o.kubeAPIQPS <= 0 {
		errs = append(errs, field.Invalid(root.Child("kube-api-qps"), o.kubeAPIQPS, "must be positive"))
	}
	if o.kubeAPIBurst < 1 || float32(o.kubeAPIBurst) < o.kubeAPIQPS {
		errs = append(errs, field.Invalid(root.Child("kube-api-burst"), o.kubeAPIBurst, "must be at least 1 and at least --kube-api-qps"))
	}
	if o.memoryLimitRatio <= 0 || o.memoryLimitRatio > 1 {
		errs = append(errs, field.Invalid(root.Child("memory-limit-ratio"), o.memoryLimitRatio, "must be in (0, 1]"))
	}
	if o.maxConcurrentRestarts < 1 {
		errs = append(errs, field.Invalid(root.Child("max-concurrent-restarts"), o.maxConcurrentRestarts, "must be at least 1"))
	}
	if o.leaderElect && o.namespace == "" {
		errs = append(errs, field.Required(root.Child("namespace"), "--leader-elect needs the namespace of its Lease"))
	}
	if o.selfManagedCerts {
		if o.namespace == "" {
			errs = append(errs, field.Required(root.Child("namespace"), "--self-managed-certs needs the namespace of its Secret"))
		}
		for name, v := range map[string]string{"cert-secret-name": o.certSecretName, "service-name": o.serviceName} {
			if v == "" {
				errs = append(errs, field.Required(root.Child(name), "needed by --self-managed-certs"))
			}
		}
		// Zero leaves selfcert's default.
		for name, d := range map[string]time.Duration{"self-managed-cert-validity": o.certValidity, "self-managed-ca-validity": o.caValidity} {
			if d < 0 {
				errs = append(errs, field.Invalid(root.Child(name), d.String(), "must not be negative"))
			}
		}
		if o.certValidity > 0 && o.caValidity > 0 && o.certValidity >= o.caValidity {
			errs = append(errs, field.Invalid(root.Child("self-managed-cert-validity"), o.certValidity.String(), "must be shorter than --self-managed-ca-validity"))
		}
	}
	return errs
}

// run serves until ctx ends (SIGTERM or SIGINT), then shuts down gracefully.
func (o *serveOptions) run(ctx context.Context) error {
	logger := zap.New(zap.UseFlagOptions(&o.zap))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger.WithName("client-go"))
	setupLog := logger.WithName("setup")
	setupLog.Info("Starting the Remora injector", "version", version.Version, "revision", version.Revision)

	restCfg, err := o.restConfig()
	if err != nil {
		return err
	}
	restCfg.UserAgent = "remora-injector/" + version.Version
	// Set on purpose, the same in-cluster and with --kubeconfig (client-go
	// would use 5/10 with a kubeconfig, controller-runtime none in-cluster).
	restCfg.QPS, restCfg.Burst = o.kubeAPIQPS, o.kubeAPIBurst
	if err := setMemoryLimit(o.memoryLimitRatio, setupLog); err != nil {
		return err
	}

	watcher, err := o.configWatcher(restCfg, setupLog)
	if err != nil {
		return err
	}
	setupLog.Info("Loaded the injection configuration", "dir", o.configDir, "hash", watcher.Current().Hash,
		"revision", watcher.Current().Revision(), "nativeSidecars", watcher.Current().Settings.NativeSidecars)
	if o.namespace == "" {
		setupLog.Info("No --namespace or POD_NAMESPACE: the injector's own namespace is not excluded from injection by the injector itself")
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return fmt.Errorf("building the scheme: %w", err)
	}
	gracePeriod := drain.GracePeriod(o.shutdownDelay)
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                o.metricsOptions(),
		HealthProbeBindAddress: o.probeAddr,
		WebhookServer: crwebhook.NewServer(crwebhook.Options{
			Port:    o.port,
			CertDir: o.certDir,
			TLSOpts: []func(*tls.Config){o.tlsOptions},
		}),
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionNamespace:       o.namespace,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &gracePeriod,
		Cache: cache.Options{
			// Only namespace metadata is cached; drop what is never read.
			DefaultTransform: cache.TransformStripManagedFields(),
		},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}

	// Start the namespace metadata informer with the manager's cache, so
	// that readiness waits for it and admissions read labels from memory.
	nsMeta := &metav1.PartialObjectMetadata{}
	nsMeta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	nsInformer, err := mgr.GetCache().GetInformer(ctx, nsMeta)
	if err != nil {
		return fmt.Errorf("creating the namespace informer: %w", err)
	}

	handler, err := webhook.NewHandler(webhook.Options{
		Config:       watcher.Current,
		Namespaces:   mgr.GetClient(),
		Uncached:     mgr.GetAPIReader(),
		OwnNamespace: o.namespace,
		Decoder:      admission.NewDecoder(scheme),
	})
	if err != nil {
		return fmt.Errorf("creating the admission handler: %w", err)
	}
	// The guard checks the HTTP request and its JSON strictly before
	// controller-runtime decodes the review, bounds read and write time
	// per request, and recovers panics.
	hook := guard.New(&admission.Webhook{Handler: handler}, guard.Options{Log: ctrl.Log.WithName("guard")})
	mgr.GetWebhookServer().Register(injectPath, hook)
	mgr.GetWebhookServer().Register(injectPrefix, hook)

	if err := mgr.Add(watcher); err != nil {
		return fmt.Errorf("adding the configuration watcher: %w", err)
	}
	if o.upgradeController {
		var window *upgrade.Window
		if o.maintenanceWindow != "" {
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
		}); err != nil {
			return fmt.Errorf("setting up the upgrade controller: %w", err)
		}
	}
	if err := drain.Setup(mgr, o.shutdownDelay); err != nil {
		return err
	}

	if o.selfManagedCerts {
		certDir, err := filepath.Abs(o.certDir)
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
		// The webhook server reads the certificate as it starts, before
		// any runnable: write it first.
		if err := certs.Bootstrap(ctx); err != nil {
			if ctx.Err() != nil {
				setupLog.Info("Stopped before the self-managed certificate was written")
				return nil
			}
			return err
		}
		if err := mgr.Add(certs); err != nil {
			return fmt.Errorf("adding the self-managed certificates: %w", err)
		}
		if err := mgr.AddReadyzCheck("self-managed-certs", certs.Checker); err != nil {
			return fmt.Errorf("adding a readiness check: %w", err)
		}
	}

	for name, check := range map[string]healthz.Checker{
		"webhook":         mgr.GetWebhookServer().StartedChecker(),
		"config":          watcher.Checker,
		"namespace-cache": syncedChecker(nsInformer.HasSynced),
	} {
		if err := mgr.AddReadyzCheck(name, check); err != nil {
			return fmt.Errorf("adding readiness check %s: %w", name, err)
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding the liveness check: %w", err)
	}

	setupLog.Info("Serving", "port", o.port, "metrics", o.metricsAddr, "metricsSecure", o.metricsSecure, "paths", []string{injectPath, injectPrefix}, "certDir", o.certDir,
		"ownNamespace", o.namespace, "http2", o.enableHTTP2, "leaderElection", o.leaderElect)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the manager: %w", err)
	}
	setupLog.Info("Stopped")
	return nil
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
	return watcher, nil
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
	opts.TLSOpts = []func(*tls.Config){o.tlsOptions}
	return opts
}

// tlsOptions hardens the TLS configuration of the webhook and metrics servers.
func (o *serveOptions) tlsOptions(c *tls.Config) {
	c.MinVersion = tls.VersionTLS12
	// TLS 1.2 with forward secrecy and AEAD only (TLS 1.3 suites are fixed).
	c.CipherSuites = []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
	if !o.enableHTTP2 {
		c.NextProtos = []string{"http/1.1"}
	}
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
