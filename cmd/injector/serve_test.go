package main

import (
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/remora-mesh/remora/internal/webhook"
)

// TestServeFlags pins the flag names and defaults the Helm chart relies on.
func TestServeFlags(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "remora-system")
	cmd := newServeCmd()
	want := map[string]string{
		"port":                      "9443",
		"config-dir":                "",
		"metrics-bind-address":      ":8080",
		"health-probe-bind-address": ":8081",
		"pprof-bind-address":        "",
		"namespace":                 "remora-system",
		"revision":                  "",
		"native-sidecars":           "auto",
		"leader-elect":              "false",
		"enable-http2":              "false",
		"kubeconfig":                "",
		"self-managed-certs":        "false",
		"cert-secret-name":          "remora-injector-tls",
		"webhook-config-name":       "remora-injector",
		"service-name":              "remora-injector",
		"restart-outdated":          "false",
		"max-concurrent-restarts":   "1",
		"shutdown-delay":            "5s",
		"cert-dir":                  "",
		"zap-log-level":             "",
		"kube-api-qps":              "50",
		"kube-api-burst":            "100",
		"memory-limit-ratio":        "0.8",
	}
	for name, def := range want {
		t.Run(name, func(t *testing.T) {
			f := cmd.Flags().Lookup(name)
			if f == nil {
				t.Fatalf("no --%s flag", name)
			}
			if name == "cert-dir" || name == "zap-log-level" {
				return // defaults depend on the environment or the logger
			}
			if f.DefValue != def {
				t.Errorf("--%s defaults to %q, want %q", name, f.DefValue, def)
			}
		})
	}
}

func TestServeValidate(t *testing.T) {
	valid := func() *serveOptions {
		return &serveOptions{clusterOptions: clusterOptions{nativeSidecars: "auto"}, webhook: webhook.Options{Port: 9443, CertDir: "/certs"}, maxConcurrentRestarts: 1,
			shutdownDelay: time.Second, certSecretName: "s", serviceName: "svc",
			kubeAPIQPS: defaultKubeAPIQPS, kubeAPIBurst: defaultKubeAPIBurst, memoryLimitRatio: defaultMemoryLimitRatio}
	}
	tests := []struct {
		name   string
		mutate func(o *serveOptions)
		errs   []string // substrings of the errors, one per expected error
	}{
		{name: "defaults are valid", mutate: func(*serveOptions) {}},
		{name: "port out of range", mutate: func(o *serveOptions) { o.webhook.Port = 70000 }, errs: []string{"serve.port"}},
		{name: "unknown native sidecars mode", mutate: func(o *serveOptions) { o.nativeSidecars = "yes" }, errs: []string{"serve.native-sidecars"}},
		{name: "no cert dir", mutate: func(o *serveOptions) { o.webhook.CertDir = "" }, errs: []string{"serve.cert-dir"}},
		{name: "negative shutdown delay", mutate: func(o *serveOptions) { o.shutdownDelay = -time.Second }, errs: []string{"serve.shutdown-delay"}},
		{name: "no restarts allowed", mutate: func(o *serveOptions) { o.maxConcurrentRestarts = 0 }, errs: []string{"serve.max-concurrent-restarts"}},
		{name: "no API requests allowed", mutate: func(o *serveOptions) { o.kubeAPIQPS = 0 }, errs: []string{"serve.kube-api-qps"}},
		{name: "burst below the rate", mutate: func(o *serveOptions) { o.kubeAPIQPS, o.kubeAPIBurst = 50, 10 }, errs: []string{"serve.kube-api-burst"}},
		{name: "memory limit ratio above 1", mutate: func(o *serveOptions) { o.memoryLimitRatio = 1.5 }, errs: []string{"serve.memory-limit-ratio"}},
		{name: "memory limit ratio zero", mutate: func(o *serveOptions) { o.memoryLimitRatio = 0 }, errs: []string{"serve.memory-limit-ratio"}},
		{name: "leader election without namespace", mutate: func(o *serveOptions) { o.leaderElect = true }, errs: []string{"--leader-elect"}},
		{name: "pprof on loopback", mutate: func(o *serveOptions) { o.pprofAddr = "127.0.0.1:6060" }},
		{name: "pprof address without a port", mutate: func(o *serveOptions) { o.pprofAddr = "localhost" }, errs: []string{"serve.pprof-bind-address"}},
		{name: "leader election with namespace", mutate: func(o *serveOptions) { o.leaderElect, o.namespace = true, "remora-system" }},
		{
			name:   "self-managed certs need a namespace and names",
			mutate: func(o *serveOptions) { o.selfManagedCerts, o.certSecretName, o.serviceName = true, "", "" },
			errs:   []string{"--self-managed-certs needs the namespace", "serve.cert-secret-name", "serve.service-name"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := valid()
			tt.mutate(o)
			errs := o.validate()
			if len(errs) != len(tt.errs) {
				t.Fatalf("got %d errors %v, want %d", len(errs), errs, len(tt.errs))
			}
			all := errs.ToAggregate()
			for _, want := range tt.errs {
				if !strings.Contains(all.Error(), want) {
					t.Errorf("errors %q do not mention %q", all, want)
				}
			}
		})
	}
}

// TestSetMemoryLimit: the chart's $REMORA_MEMORY_LIMIT sets the runtime's
// soft limit to the given share; GOMEMLIMIT wins; garbage is refused.
func TestSetMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	tests := []struct {
		name, gomemlimit, limit string
		want                    int64 // the soft limit after; -1: unchanged
		err                     string
	}{
		{name: "no limit given", want: -1},
		{name: "a share of the container's limit", limit: "268435456", want: 214748364},
		{name: "GOMEMLIMIT wins", gomemlimit: "100MiB", limit: "268435456", want: -1},
		{name: "not a number", limit: "256Mi", want: -1, err: `$REMORA_MEMORY_LIMIT="256Mi": must be the container's memory limit in bytes`},
		{name: "zero", limit: "0", want: -1, err: "positive integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetMemoryLimit(prev)
			t.Setenv("GOMEMLIMIT", tt.gomemlimit)
			t.Setenv(envMemoryLimit, tt.limit)
			err := setMemoryLimit(0.8, logr.Discard())
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("error %v, want %q", err, tt.err)
			}
			want := tt.want
			if want == -1 {
				want = prev
			}
			if got := debug.SetMemoryLimit(-1); got != want {
				t.Errorf("soft memory limit %d, want %d", got, want)
			}
		})
	}
}
