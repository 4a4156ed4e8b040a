package webhook

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/remora-mesh/remora/pkg/config"
)

// TestOptionsFlags pins the server's flag names and defaults (the Helm chart
// and docs/webhook.md rely on them).
func TestOptionsFlags(t *testing.T) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	NewOptions().AddFlags(fs)
	for name, def := range map[string]string{"port": "9443", "cert-dir": DefaultCertDir, "enable-http2": "false",
		"workload-events": "true", "workload-event-interval": "10m0s"} {
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("no --%s flag", name)
			continue
		}
		if f.DefValue != def {
			t.Errorf("--%s defaults to %q, want %q", name, f.DefValue, def)
		}
	}
	o := NewOptions()
	fs = pflag.NewFlagSet("serve", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse([]string{"--port=8443", "--cert-dir=/certs", "--enable-http2", "--workload-events=false", "--workload-event-interval=1m"}); err != nil {
		t.Fatal(err)
	}
	if o.Port != 8443 || o.CertDir != "/certs" || !o.EnableHTTP2 || o.WorkloadEvents || o.WorkloadEventInterval != time.Minute {
		t.Errorf("flags parsed into %+v", o)
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(o *Options)
		errs   []string // substrings of the errors, one per expected error
	}{
		{name: "defaults are valid", mutate: func(*Options) {}},
		{name: "port zero", mutate: func(o *Options) { o.Port = 0 }, errs: []string{"serve.port"}},
		{name: "port out of range", mutate: func(o *Options) { o.Port = 70000 }, errs: []string{"serve.port: Invalid value: 70000"}},
		{name: "no cert dir", mutate: func(o *Options) { o.CertDir = "" }, errs: []string{"serve.cert-dir: Required value"}},
		{name: "both", mutate: func(o *Options) { o.Port, o.CertDir = -1, "" }, errs: []string{"serve.port", "serve.cert-dir"}},
		{name: "no Event interval", mutate: func(o *Options) { o.WorkloadEventInterval = 0 }, errs: []string{"serve.workload-event-interval"}},
		{name: "no Event interval without Events", mutate: func(o *Options) { o.WorkloadEvents, o.WorkloadEventInterval = false, 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewOptions()
			tt.mutate(o)
			errs := o.Validate(field.NewPath("serve"))
			if len(errs) != len(tt.errs) {
				t.Fatalf("got %d errors %v, want %d", len(errs), errs, len(tt.errs))
			}
			for _, want := range tt.errs {
				if !strings.Contains(errs.ToAggregate().Error(), want) {
					t.Errorf("errors %q do not mention %q", errs.ToAggregate(), want)
				}
			}
		})
	}
}

func TestHardenTLS(t *testing.T) {
	for _, http2 := range []bool{false, true} {
		c := &tls.Config{NextProtos: []string{"h2"}} // controller-runtime's starting point
		(&Options{EnableHTTP2: http2}).HardenTLS(c)
		if c.MinVersion != tls.VersionTLS12 {
			t.Errorf("http2=%v: MinVersion %x, want TLS 1.2", http2, c.MinVersion)
		}
		offersH2 := len(c.NextProtos) > 0 && c.NextProtos[0] == "h2"
		if offersH2 != http2 {
			t.Errorf("http2=%v: NextProtos %v", http2, c.NextProtos)
		}
	}
}

// newTestManager returns a manager that is never started: its API server
// does not exist and its REST mapper knows namespaces only.
func newTestManager(t *testing.T, o *Options) manager.Manager {
	t.Helper()
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(corev1.SchemeGroupVersion.WithKind("Namespace"), meta.RESTScopeRoot)
	mgr, err := manager.New(&rest.Config{Host: "https://127.0.0.1:1"}, manager.Options{
		Metrics:       metricsserver.Options{BindAddress: "0"},
		WebhookServer: o.Server(),
		MapperProvider: func(*rest.Config, *http.Client) (meta.RESTMapper, error) {
			return mapper, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return mgr
}

// TestSetup: the handler is served, behind the guard, at Istio's path and
// below it; a missing configuration is an error.
func TestSetup(t *testing.T) {
	o := NewOptions()
	mgr := newTestManager(t, o)
	if err := Setup(mgr, *o); err == nil || !strings.Contains(err.Error(), "Options.Config is required") {
		t.Fatalf("Setup without a configuration: %v", err)
	}

	o.Config = config.MustDefault
	mgr = newTestManager(t, o)
	if err := Setup(mgr, *o); err != nil {
		t.Fatal(err)
	}
	mux := mgr.GetWebhookServer().WebhookMux()
	for _, path := range []string{"/inject", "/inject/cluster/Kubernetes/net/network1"} {
		// The guard refuses a GET before the review is decoded: proof that
		// the path is served, and served through the guard.
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, path, nil))
		if rec.Code == http.StatusNotFound {
			t.Errorf("GET %s: not served", path)
		}
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("GET %s: status %d, want %d from the guard", path, rec.Code, http.StatusMethodNotAllowed)
		}
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/mutate", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("POST /mutate: status %d, want 404", rec.Code)
	}
}
