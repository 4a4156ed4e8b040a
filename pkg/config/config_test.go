package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultLoads(t *testing.T) {
	cfg, err := Default()
	if err != nil {
		t.Fatalf("embedded defaults: %v", err)
	}
	if cfg.Settings.ProxyImage != "docker.io/istio/proxyv2:1.28.0" || cfg.Settings.StatusPort != 15020 {
		t.Errorf("unexpected defaults: image %q statusPort %d", cfg.Settings.ProxyImage, cfg.Settings.StatusPort)
	}
	if !cfg.IsBuiltin("sidecar") || len(cfg.Hash) != 16 {
		t.Errorf("builtin=%v hash=%q", cfg.IsBuiltin("sidecar"), cfg.Hash)
	}
	// Istio's templates a pod may select (proxyless gRPC among them).
	for _, name := range []string{"gateway", "grpc-agent", "grpc-simple"} {
		if !cfg.IsBuiltin(name) {
			t.Errorf("no built-in template %q", name)
		}
	}
}

func TestLoadRefusesInvalidConfig(t *testing.T) {
	tests := []struct {
		name string
		src  Sources
		want string
	}{
		{"values not YAML", Sources{Values: []byte("global: [")}, "values"},
		{"status port not a number", Sources{Values: []byte("global: {proxy: {statusPort: abc}}")}, "global.proxy.statusPort"},
		{"status port out of range", Sources{Values: []byte("global: {proxy: {statusPort: 70000}}")}, "out of range"},
		{"bad pull policy", Sources{Values: []byte("global: {imagePullPolicy: Sometimes}")}, "global.imagePullPolicy"},
		{"bad native switch", Sources{Values: []byte("global: {nativeSidecars: maybe}")}, "global.nativeSidecars"},
		{"bad resources", Sources{Values: []byte("global: {proxy: {resources: {requests: {cpu: lots}}}}")}, "global.proxy.resources"},
		{"bad selector", Sources{Values: []byte("sidecarInjectorWebhook: {neverInjectSelector: [{matchExpressions: [{key: a, operator: Sometimes}]}]}")}, "neverInjectSelector"},
		{"unknown default template", Sources{Values: []byte("sidecarInjectorWebhook: {defaultTemplates: [nosuch]}")}, `no template named "nosuch"`},
		{"template does not parse", Sources{Templates: map[string]string{"broken": "{{ .Spec"}}, `template "broken"`},
		{"mesh unknown field", Sources{Mesh: []byte("defaultConfig: {noSuchField: 1}")}, "noSuchField"},
		{"mesh bad duration", Sources{Mesh: []byte("defaultConfig: {drainDuration: soon}")}, "duration"},
		{"mesh bad interception", Sources{Mesh: []byte("defaultConfig: {interceptionMode: MAGIC}")}, "interceptionMode"},
		{"mesh bad inbound policy", Sources{Mesh: []byte("inboundTrafficPolicy: {mode: SOMETIMES}")}, `inboundTrafficPolicy.mode "SOMETIMES"`},
		{"bad proxy lifecycle", Sources{Values: []byte("global: {proxy: {lifecycle: {preStart: {}}}}")}, "global.proxy.lifecycle"},
		{"bad istio-init resources", Sources{Values: []byte("global: {proxy_init: {resources: {limits: {memory: lots}}}}")}, "global.proxy_init.resources"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.src, Overrides{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error containing %q, got %v", tt.want, err)
			}
		})
	}
}

func TestValuesOverlayAndSet(t *testing.T) {
	src := Sources{Values: []byte(`
global:
  hub: registry.example.com/istio
  tag: "1.29.1"
  proxy:
    resources:
      limits: {cpu: null}
`)}
	var o Overrides
	if err := o.Set("values.global.proxy.statusPort=0"); err != nil {
		t.Fatal(err)
	}
	if err := o.Set("meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true"); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(src, o)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Settings
	if s.ProxyImage != "registry.example.com/istio/proxyv2:1.29.1" {
		t.Errorf("image %q", s.ProxyImage)
	}
	if s.StatusPort != 0 || !s.HoldApplication {
		t.Errorf("statusPort %d hold %v", s.StatusPort, s.HoldApplication)
	}
	if _, ok := s.ProxyResources.Limits["cpu"]; ok {
		t.Error("a null resource must drop it")
	}
	if cfg.UserProxyConfig.HoldApplicationUntilProxyStarts == nil {
		t.Error("mesh --set not recorded as user proxy config")
	}
	def := MustDefault()
	if cfg.Hash == def.Hash {
		t.Error("different inputs must hash differently")
	}
}

func TestSetRefusesMalformed(t *testing.T) {
	for _, expr := range []string{"global.hub", "values.=x", "values", "other.key=1", "values.a..b=1"} {
		var o Overrides
		if err := o.Set(expr); err == nil {
			t.Errorf("Set(%q) accepted", expr)
		}
	}
}

func TestFromDirWithConfigMapLayout(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "..2026_11_25_data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"values.yaml": "global:\n  proxy:\n    image: example.com/proxy:v2\n",
		"mesh.yaml":   "defaultConfig:\n  drainDuration: 23s\n",
		"custom.tmpl": "metadata:\n  annotations:\n    custom: \"yes\"\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(data, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A mounted ConfigMap: ..data points at the timestamped dir, each key
	// is a symlink through ..data.
	if err := os.Symlink(filepath.Base(data), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	src, err := FromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(src, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	// The ConfigMap's own data loads to the same configuration.
	fromData, err := Load(FromData(files), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if fromData.Hash != cfg.Hash {
		t.Errorf("from the ConfigMap's data: hash %s; from its directory: %s", fromData.Hash, cfg.Hash)
	}
	if cfg.Settings.ProxyImage != "example.com/proxy:v2" {
		t.Errorf("image %q", cfg.Settings.ProxyImage)
	}
	if cfg.UserProxyConfig.DrainDuration == nil || cfg.UserProxyConfig.DrainDuration.String() != "23s" {
		t.Errorf("drainDuration not loaded")
	}
	if _, ok := cfg.Templates["custom"]; !ok || cfg.IsBuiltin("custom") || !cfg.IsBuiltin("sidecar") {
		t.Errorf("templates: %v", cfg.Templates)
	}
}
