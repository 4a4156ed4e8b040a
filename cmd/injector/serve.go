package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/remora-mesh/remora/internal/drain"
	"github.com/remora-mesh/remora/internal/selfcert"
	"github.com/remora-mesh/remora/internal/upgrade"
	"github.com/remora-mesh/remora/internal/webhook"
)

// leaderElectionID names the Lease the replicas elect a leader with; the
// Helm chart relies on it.
const leaderElectionID = "remora-injector-leader"

// serveOptions are the flags of injector serve.
type serveOptions struct {
	clusterOptions
	// webhook holds --port, --cert-dir, --enable-http2 and the workload
	// Events flags (--workload-events, --workload-event-interval); run adds the
	// configuration and the own namespace.
	webhook           webhook.Options
	configDir         string
	metricsAddr       string
	metricsSecure     bool
	metricsCertDir    string
	probeAddr         string
	pprofAddr         string
	namespace         string
	leaderElect       bool
	shutdownDelay     time.Duration
	selfManagedCerts  bool
	certSecretName    string
	webhookConfigName string
	serviceName       string
	certValidity      time.Duration
	caValidity        time.Duration
	// The companion controller (internal/upgrade).
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
	o := &serveOptions{webhook: *webhook.NewOptions(), zap: zap.Options{}}
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
	o.addFlags(cmd.Flags())
	return cmd
}

// addFlags registers serve's flags: the cluster's, the webhook server's,
// then serve's own.
func (o *serveOptions) addFlags(f *pflag.FlagSet) {
	o.clusterOptions.addFlags(f)
	o.webhook.AddFlags(f)
	f.StringVar(&o.configDir, "config-dir", "", "injection configuration directory (values.yaml, mesh.yaml, *.tmpl), watched for changes; empty: the embedded defaults")
	f.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", `address of the Prometheus /metrics endpoint; "0" disables it`)
	f.BoolVar(&o.metricsSecure, "metrics-secure", true, "serve /metrics over HTTPS and let only callers the API server authenticates (TokenReview) and authorizes for get on the non-resource URL /metrics (SubjectAccessReview) read it; false serves plain HTTP to anyone who can connect")
	f.StringVar(&o.metricsCertDir, "metrics-cert-dir", "", "directory with tls.crt and tls.key for the HTTPS /metrics endpoint, reloaded when they change; empty: a self-signed certificate generated at start (with --metrics-secure)")
	f.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz endpoints")
	f.StringVar(&o.pprofAddr, "pprof-bind-address", "", "address of Go's /debug/pprof/ profiling endpoints, unauthenticated: bind it to loopback (127.0.0.1:6060) and reach it with kubectl port-forward; empty: off")
	f.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the injector's own namespace: never injected, holds the leader election Lease and the self-managed certificate Secret (default $POD_NAMESPACE)")
	f.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader among the replicas (Lease "+leaderElectionID+" in --namespace) for the companion controller's work; admissions are served by every replica")
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
}

// validate reports every invalid flag.
func (o *serveOptions) validate() field.ErrorList {
	var errs field.ErrorList
	root := field.NewPath("serve")
	errs = append(errs, o.clusterOptions.validate(root)...)
	errs = append(errs, o.webhook.Validate(root)...)
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
	if o.pprofAddr != "" {
		if _, _, err := net.SplitHostPort(o.pprofAddr); err != nil {
			errs = append(errs, field.Invalid(root.Child("pprof-bind-address"), o.pprofAddr, "must be host:port, such as 127.0.0.1:6060"))
		}
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

// run serves until ctx ends (SIGTERM or SIGINT), then shuts down
// gracefully. Each part of the injector is added to the manager by its own
// Setup; the self-managed certificate, when there is one, is written before
// the manager starts its webhook server, which reads it.
func (o *serveOptions) run(ctx context.Context) error {
	log := o.setupLogging()
	restCfg, err := o.apiServerConfig()
	if err != nil {
		return err
	}
	if err := setMemoryLimit(o.memoryLimitRatio, log); err != nil {
		return err
	}
	watcher, err := o.configWatcher(restCfg, log)
	if err != nil {
		return err
	}
	mgr, err := o.newManager(restCfg)
	if err != nil {
		return err
	}
	if err := webhook.Setup(mgr, o.webhookOptions(watcher, log)); err != nil {
		return err
	}
	if err := addConfigWatcher(mgr, watcher); err != nil {
		return err
	}
	if err := o.setupUpgradeController(mgr, watcher); err != nil {
		return err
	}
	if err := drain.Setup(mgr, o.shutdownDelay); err != nil {
		return err
	}
	switch err := o.setupSelfManagedCerts(ctx, mgr, log); {
	case errors.Is(err, errStopped):
		return nil
	case err != nil:
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding the liveness check: %w", err)
	}
	return o.serve(ctx, mgr, log)
}
