package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/internal/golden"
)

// TestInjectGolden runs `injector inject` on each testdata/*.yaml and
// compares the output with testdata/*.golden.yaml, printing a diff when they
// differ (go test -update rewrites them). The engine's own, larger corpus is
// pkg/inject/testdata/golden; these cases prove the CLI's path (flags, YAML
// out, the report on stderr).
func TestInjectGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden.yaml") {
			continue
		}
		n++
		t.Run(filepath.Base(in), func(t *testing.T) {
			args := []string{"inject", "-f", in}
			if strings.Contains(in, "classic") {
				args = append(args, "--native-sidecars=false")
			}
			out, stderr, err := runRoot(t, args...)
			if err != nil {
				t.Fatalf("inject: %v (stderr %s)", err, stderr)
			}
			golden.Assert(t, strings.TrimSuffix(in, ".yaml")+".golden.yaml", []byte(out))
			if !strings.Contains(stderr, ": injected") {
				t.Errorf("report %q names no injected object", stderr)
			}
		})
	}
	if n == 0 {
		t.Fatal("no golden inputs")
	}
}

func TestInjectRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`apiVersion: v1
kind: Pod
metadata:
  name: bad
  annotations:
    traffic.sidecar.istio.io/includeInboundPorts: "80,,x"
spec:
  containers:
  - name: app
    image: app
`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad annotation", []string{"inject", "-f", bad}, "traffic.sidecar.istio.io/includeInboundPorts"},
		{"missing file", []string{"inject", "-f", filepath.Join(dir, "nope.yaml")}, "nope.yaml"},
		{"no -f", []string{"inject"}, "-f FILE"},
		{"bad --set", []string{"inject", "-f", bad, "--set", "global.hub"}, "--set"},
		{"bad value", []string{"inject", "-f", "testdata/tproxy-pod.yaml", "--set", "values.global.proxy.statusPort=notaport"}, "statusPort"},
		{"bad native", []string{"inject", "-f", bad, "--native-sidecars=maybe"}, "--native-sidecars"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runRoot(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error naming %q, got %v", tt.want, err)
			}
			if out != "" {
				t.Errorf("stdout must be empty on error, got %d bytes", len(out))
			}
		})
	}
}

func TestSetOverridesValues(t *testing.T) {
	out, _, err := runRoot(t, "inject", "-f", "testdata/tproxy-pod.yaml",
		"--set", "values.global.proxy.image=example.com/proxy:v2",
		"--set", "meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "image: example.com/proxy:v2") {
		t.Error("--set values.global.proxy.image was not applied")
	}
	if !strings.Contains(out, `holdApplicationUntilProxyStarts`) {
		t.Error("--set meshConfig.defaultConfig was not passed to the proxy")
	}
}

func TestUninjectRestoresOriginal(t *testing.T) {
	injected, _, err := runRoot(t, "inject", "-f", "testdata/bookinfo-reviews.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "in.yaml")
	if err := os.WriteFile(f, []byte(injected), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runRoot(t, "uninject", "-f", f)
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"istio-proxy", "istio-init", "sidecar.istio.io/status", "/app-health/", "ISTIO_KUBE_APP_PROBERS"} {
		if strings.Contains(out, gone) {
			t.Errorf("uninjected output still contains %q", gone)
		}
	}
	if !strings.Contains(out, "path: /health") || !strings.Contains(stderr, "uninjected") {
		t.Errorf("probes not restored or no report: %s", stderr)
	}
}
