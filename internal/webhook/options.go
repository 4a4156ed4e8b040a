package webhook

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/remora-mesh/remora/internal/services"
	"github.com/remora-mesh/remora/pkg/config"
)

// DefaultPort is the port the webhook server listens on by default.
const DefaultPort = 9443

// DefaultCertDir is where the serving certificate is read from by default
// (controller-runtime's default).
var DefaultCertDir = filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")

// Options configure the webhook. Port, CertDir and EnableHTTP2 configure its
// server: they are flags (AddFlags, Validate) and build the manager's
// webhook server (Server); WorkloadEvents, WorkloadEventInterval and
// ExcludeServices are flags that Setup reads. The others are the handler's inputs: NewHandler reads
// only those, and Setup fills Namespaces and Uncached from the
// manager when they are nil.
type Options struct {
	// Port is the port the webhook server listens on (--port).
	Port int
	// CertDir is the directory with the serving certificate tls.crt and its
	// key tls.key, reloaded when they change (--cert-dir).
	CertDir string
	// EnableHTTP2 serves HTTP/2 as well as HTTP/1.1 (--enable-http2); off by
	// default because of HTTP/2 rapid reset, CVE-2023-44487.
	EnableHTTP2 bool
	// WorkloadEvents writes an Event on the workload that owns a pod the
	// webhook refuses, or skips although it asks for a sidecar
	// (--workload-events; Setup reads it). It needs create and patch on
	// events.k8s.io Events and get on ReplicaSets and Jobs.
	WorkloadEvents bool
	// WorkloadEventInterval is how long one Event of a reason stands for a
	// workload's later ones (--workload-event-interval).
	WorkloadEventInterval time.Duration

	// Config returns the configuration in effect (configwatch.Watcher.Current).
	// It is called once per admission and must not return nil. Whether
	// the proxy is a native sidecar is part of it.
	Config func() *config.Config
	// Namespaces reads namespaces; give it the manager's cached client so
	// that an admission never costs an API request. The handler reads
	// metav1.PartialObjectMetadata, so the cache holds only metadata.
	// Setup's default: the manager's client.
	Namespaces client.Reader
	// Uncached, if not nil, is asked when the cache does not have the
	// namespace yet (a namespace created an instant before its first pod);
	// use the manager's API reader. Only cache misses reach it. Setup's
	// default: the manager's API reader.
	Uncached client.Reader
	// OwnNamespace is the injector's namespace; it is never injected.
	OwnNamespace string

	// ExcludeServices resolves the Services pods name in
	// traffic.remora.io/excludeOutboundServices (--exclude-services):
	// Setup starts informers of Services and EndpointSlices in the
	// manager's cache and gates readiness on their sync. Off, such a pod
	// is refused, saying the feature is off.
	ExcludeServices bool
	// Services resolves them; Setup's default with ExcludeServices: the
	// manager's cache, and its API reader for a Service the cache has not
	// seen yet. Nil: the feature is off.
	Services *services.Resolver
}

// NewOptions returns Options holding the server's defaults.
func NewOptions() *Options {
	return &Options{Port: DefaultPort, CertDir: DefaultCertDir, WorkloadEvents: true, WorkloadEventInterval: DefaultWorkloadEventInterval}
}

// AddFlags registers the webhook's flags --port, --cert-dir,
// --enable-http2, --workload-events, --workload-event-interval and
// --exclude-services on fs, with the current values as defaults.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.IntVar(&o.Port, "port", o.Port, "port the webhook server listens on")
	fs.StringVar(&o.CertDir, "cert-dir", o.CertDir,
		"directory with the serving certificate tls.crt and key tls.key; reloaded when they change")
	fs.BoolVar(&o.EnableHTTP2, "enable-http2", o.EnableHTTP2,
		"serve the webhook over HTTP/2 as well as HTTP/1.1 (off by default: HTTP/2 rapid reset, CVE-2023-44487)")
	fs.BoolVar(&o.WorkloadEvents, "workload-events", o.WorkloadEvents,
		"write an Event on the workload (Deployment, StatefulSet, DaemonSet, Job, CronJob, or the pod) of a pod the webhook refuses, "+
			"or skips although it asks for a sidecar; needs create on events.k8s.io Events and get on ReplicaSets and Jobs")
	fs.DurationVar(&o.WorkloadEventInterval, "workload-event-interval", o.WorkloadEventInterval,
		"at most one such Event per workload and reason in this interval (per replica)")
	fs.BoolVar(&o.ExcludeServices, "exclude-services", o.ExcludeServices,
		"resolve the Services pods name in traffic.remora.io/excludeOutboundServices to their addresses, from a cache of Services and EndpointSlices (needs list and watch of both, get of Services); off: such a pod is refused")
}

// Validate reports every invalid flag, under fldPath.
func (o *Options) Validate(fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if o.Port < 1 || o.Port > 65535 {
		errs = append(errs, field.Invalid(fldPath.Child("port"), o.Port, "must be between 1 and 65535"))
	}
	if o.CertDir == "" {
		errs = append(errs, field.Required(fldPath.Child("cert-dir"), ""))
	}
	if o.WorkloadEvents && o.WorkloadEventInterval <= 0 {
		errs = append(errs, field.Invalid(fldPath.Child("workload-event-interval"), o.WorkloadEventInterval.String(), "must be positive"))
	}
	return errs
}

// Server returns the webhook server to give the manager
// (ctrl.Options.WebhookServer): TLS on Port with the certificate in CertDir,
// hardened by HardenTLS.
func (o *Options) Server() crwebhook.Server {
	return crwebhook.NewServer(crwebhook.Options{
		Port:    o.Port,
		CertDir: o.CertDir,
		TLSOpts: []func(*tls.Config){o.HardenTLS},
	})
}

// HardenTLS hardens a server's TLS configuration: TLS 1.2 at least, forward
// secrecy and AEAD only, and HTTP/1.1 only unless EnableHTTP2. The injector's
// metrics server uses it too.
func (o *Options) HardenTLS(c *tls.Config) {
	c.MinVersion = tls.VersionTLS12
	// TLS 1.2 with forward secrecy and AEAD only (TLS 1.3 suites are fixed).
	c.CipherSuites = []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
	if !o.EnableHTTP2 {
		c.NextProtos = []string{"http/1.1"}
	}
}
