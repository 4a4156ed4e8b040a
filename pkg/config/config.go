package config

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/pkg/templates"
)

//go:embed default/values.yaml default/mesh.yaml
var defaultFS embed.FS

// File names read from a configuration directory (a mounted ConfigMap).
const (
	// ValuesFile holds Istio-style injector values, overlaid on the defaults.
	ValuesFile = "values.yaml"
	// MeshFile holds the mesh config, overlaid on the defaults. Template
	// files end in templates.Suffix.
	MeshFile = "mesh.yaml"
)

// Sources are the raw inputs of a Config: what a configuration directory, an
// injector's ConfigMap or the CLI's files hold. Empty fields keep the
// embedded defaults. FromDir, FromData and FromFiles read them; Load builds
// the Config.
type Sources struct {
	// Values is YAML with Istio's injector value names (global.*,
	// sidecarInjectorWebhook.*), deep-merged over the embedded defaults.
	Values []byte
	// Mesh is a YAML MeshConfig, deep-merged over the embedded defaults.
	Mesh []byte
	// Templates adds or replaces templates by name.
	Templates map[string]string
}

// Config is a parsed and validated injection configuration. It is immutable
// once built; a reload builds a new one.
type Config struct {
	// Values are the merged Istio-style values, as templates see them.
	Values map[string]any
	// Settings are the values injection reads, typed and validated.
	Settings Settings
	// Mesh is the merged mesh config.
	Mesh MeshConfig
	// UserProxyConfig holds the defaultConfig fields the user set (not the
	// built-in defaults); the proxy receives them in PROXY_CONFIG.
	UserProxyConfig ProxyConfig
	// Templates are the parsed templates by name.
	Templates map[string]*template.Template
	// DefaultTemplates are applied when a pod names none.
	DefaultTemplates []string
	// Hash identifies the effective configuration (all inputs), so that
	// injected pods can record what they were injected with.
	Hash string

	// builtin names the templates whose text is the embedded default's.
	builtin map[string]bool
}

// IsBuiltin reports whether the named template is the embedded default,
// unchanged. The engine places such a template's fragment directly, which is
// equivalent to rendering it (a test proves it on every golden case).
func (c *Config) IsBuiltin(name string) bool { return c.builtin[name] }

// Settings are the typed injector values.
type Settings struct {
	Revision                  string
	Hub                       string
	Tag                       string
	ProxyImage                string
	ProxyInitImage            string
	ImagePullPolicy           corev1.PullPolicy
	ImagePullSecrets          []string
	ClusterDomain             string
	ClusterID                 string
	MeshID                    string
	Network                   string
	CAAddress                 string
	IstioNamespace            string
	PilotCertProvider         string
	LogLevel                  string
	ComponentLogLevel         string
	AgentLogLevel             string
	LogAsJSON                 bool
	StatusPort                int32
	ReadinessInitialDelay     int32
	ReadinessPeriod           int32
	ReadinessFailureThreshold int32
	StartupProbeEnabled       bool
	StartupFailureThreshold   int32
	IncludeIPRanges           string
	ExcludeIPRanges           string
	IncludeOutboundPorts      string
	ExcludeOutboundPorts      string
	IncludeInboundPorts       string
	ExcludeInboundPorts       string
	ExcludeInterfaces         string
	HoldApplication           bool
	Privileged                bool
	// ProxyLifecycle, when set (global.proxy.lifecycle), replaces the
	// proxy's own lifecycle hooks.
	ProxyLifecycle *corev1.Lifecycle
	ProxyUID       int64
	ProxyGID       int64
	ProxyResources corev1.ResourceRequirements
	// InitResources, when set (global.proxy_init.resources), are
	// istio-init's resources; otherwise it gets the proxy's, as in Istio.
	InitResources corev1.ResourceRequirements
	// NativeSidecars says whether the proxy runs as a native sidecar (an
	// init container with restartPolicy Always): global.nativeSidecars, or
	// --native-sidecars, with auto resolved by the API server's version
	// (offline: on). A pod's sidecar.istio.io/nativeSidecar annotation wins.
	NativeSidecars            bool
	RewriteAppProbes          bool
	EnableNamespacesByDefault bool
	NeverInjectSelector       []labels.Selector
	AlwaysInjectSelector      []labels.Selector
	InjectedAnnotations       map[string]string
	CNIEnabled                bool
	CNIProvider               string
	MountMTLSCerts            bool
}

// Default returns the embedded default configuration, offline (native
// sidecars on).
func Default() (*Config, error) { return Load(Sources{}, Overrides{}) }

// MustDefault returns the embedded default configuration and panics if it is
// invalid, which only a broken build can cause. For tests and benchmarks.
func MustDefault() *Config { return MustLoad(Sources{}, Overrides{}) }

// MustLoad is Load that panics on an error. For tests and benchmarks.
func MustLoad(src Sources, o Overrides) *Config {
	c, err := Load(src, o)
	if err != nil {
		panic(err)
	}
	return c
}

// FromData reads a configuration from an injector ConfigMap's data:
// values.yaml, mesh.yaml and *.tmpl keys. Other keys, and hidden ones (the
// kubelet's ..data bookkeeping in a mounted ConfigMap), are ignored, as the
// injector ignores them in its mounted directory.
func FromData(data map[string]string) Sources {
	src := Sources{Templates: map[string]string{}}
	for name, text := range data {
		switch {
		case strings.HasPrefix(name, "."):
		case name == ValuesFile:
			src.Values = []byte(text)
		case name == MeshFile:
			src.Mesh = []byte(text)
		case strings.HasSuffix(name, templates.Suffix):
			src.Templates[strings.TrimSuffix(name, templates.Suffix)] = text
		}
	}
	return src
}

// FromDir reads a configuration directory (a mounted ConfigMap) and returns
// what FromData returns for the ConfigMap itself.
func FromDir(dir string) (Sources, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Sources{}, fmt.Errorf("reading config directory: %w", err)
	}
	data := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || name != ValuesFile && name != MeshFile && !strings.HasSuffix(name, templates.Suffix) {
			continue
		}
		path := filepath.Join(dir, name)
		if st, err := os.Stat(path); err != nil || st.IsDir() {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return Sources{}, fmt.Errorf("reading %s: %w", path, err)
		}
		data[name] = string(b)
	}
	return FromData(data), nil
}

// FromFiles reads the CLI's files, each optional: a values file, a mesh
// config file, and a directory of *.tmpl templates (which must hold one).
func FromFiles(valuesFile, meshFile, templatesDir string) (Sources, error) {
	src := Sources{Templates: map[string]string{}}
	var err error
	if valuesFile != "" {
		if src.Values, err = os.ReadFile(valuesFile); err != nil {
			return Sources{}, fmt.Errorf("--values: %w", err)
		}
	}
	if meshFile != "" {
		if src.Mesh, err = os.ReadFile(meshFile); err != nil {
			return Sources{}, fmt.Errorf("--mesh-config: %w", err)
		}
	}
	if templatesDir != "" {
		matches, err := filepath.Glob(filepath.Join(templatesDir, "*"+templates.Suffix))
		if err != nil {
			return Sources{}, fmt.Errorf("--templates: %w", err)
		}
		if len(matches) == 0 {
			return Sources{}, fmt.Errorf("--templates %s: no *%s files", templatesDir, templates.Suffix)
		}
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err != nil {
				return Sources{}, fmt.Errorf("--templates: %w", err)
			}
			src.Templates[strings.TrimSuffix(filepath.Base(m), templates.Suffix)] = string(b)
		}
	}
	return src, nil
}

// Load builds and validates a Config from sources over the embedded
// defaults, with the overrides applied. It is the one way a configuration is
// built: serve (through configwatch), status, inject and the tests all call
// it, so that equal inputs give equal configurations and equal hashes.
func Load(src Sources, o Overrides) (*Config, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	values, err := loadValues(src.Values, o)
	if err != nil {
		return nil, err
	}
	meshMap, userProxy, err := loadMesh(src.Mesh, o.meshSets)
	if err != nil {
		return nil, err
	}
	if userProxy, err = mergeValuesMeshConfig(meshMap, values, userProxy); err != nil {
		return nil, err
	}
	mesh, err := parseMeshMap(meshMap)
	if err != nil {
		return nil, err
	}
	settings, err := parseSettings(values, o.ServerVersion)
	if err != nil {
		return nil, err
	}
	if mesh.DefaultConfig.HoldApplicationUntilProxyStarts != nil && *mesh.DefaultConfig.HoldApplicationUntilProxyStarts {
		settings.HoldApplication = true
	}
	embeddedTexts, err := templates.Builtin()
	if err != nil {
		return nil, err
	}
	texts, err := templateTexts(embeddedTexts, values, src.Templates)
	if err != nil {
		return nil, err
	}
	parsed, err := parseTemplates(texts)
	if err != nil {
		return nil, err
	}
	defaults, err := defaultTemplates(values, parsed)
	if err != nil {
		return nil, err
	}

	cfg := &Config{
		Values:           values,
		Settings:         settings,
		Mesh:             mesh,
		UserProxyConfig:  userProxy,
		Templates:        parsed,
		DefaultTemplates: defaults,
		builtin:          builtinTemplates(texts, embeddedTexts),
	}
	cfg.Hash = hashInputs(effectiveValues(values, cfg), meshMap, texts)
	return cfg, nil
}

// loadValues returns the embedded values with the source's values (YAML,
// optionally in an IstioOperator's spec.values) and the overrides merged
// over them.
func loadValues(src []byte, o Overrides) (map[string]any, error) {
	values, err := readYAMLMap(defaultFS, "default/values.yaml")
	if err != nil {
		return nil, fmt.Errorf("embedded values: %w", err)
	}
	if len(src) > 0 {
		var user map[string]any
		if err := yaml.Unmarshal(src, &user); err != nil {
			return nil, fmt.Errorf("values: %w", err)
		}
		// Accept an IstioOperator-style wrapper (spec.values) as well.
		if spec, ok := user["spec"].(map[string]any); ok {
			if v, ok := spec["values"].(map[string]any); ok {
				user = v
			}
		}
		deepMerge(values, user)
	}
	deepMerge(values, o.valueSets)
	o.applyTo(values)
	return values, nil
}

// loadMesh returns the embedded mesh config with the source's mesh config
// and the --set overrides (sets) merged over it, and the defaultConfig
// fields the user set.
func loadMesh(src []byte, sets map[string]any) (map[string]any, ProxyConfig, error) {
	var userProxy ProxyConfig
	meshMap, err := readYAMLMap(defaultFS, "default/mesh.yaml")
	if err != nil {
		return nil, userProxy, fmt.Errorf("embedded mesh config: %w", err)
	}
	if len(src) == 0 && sets == nil {
		return meshMap, userProxy, nil
	}
	user := map[string]any{}
	if err := yaml.Unmarshal(src, &user); err != nil {
		return nil, userProxy, fmt.Errorf("mesh config: %w", err)
	}
	if user == nil {
		user = map[string]any{}
	}
	deepMerge(user, sets)
	deepMerge(meshMap, user)
	if dc, ok := user["defaultConfig"]; ok {
		b, _ := json.Marshal(dc)
		if userProxy, err = ParseProxyConfig(b); err != nil {
			return nil, userProxy, fmt.Errorf("mesh config defaultConfig: %w", err)
		}
	}
	return meshMap, userProxy, nil
}

// mergeValuesMeshConfig merges values.meshConfig, Istio's other way to set
// the mesh config, into meshMap, and its defaultConfig into userProxy.
func mergeValuesMeshConfig(meshMap, values map[string]any, userProxy ProxyConfig) (ProxyConfig, error) {
	vm, ok := values["meshConfig"].(map[string]any)
	if !ok || len(vm) == 0 {
		return userProxy, nil
	}
	deepMerge(meshMap, vm)
	dc, ok := vm["defaultConfig"]
	if !ok {
		return userProxy, nil
	}
	b, _ := json.Marshal(dc)
	pc, err := ParseProxyConfig(b)
	if err != nil {
		return userProxy, fmt.Errorf("values meshConfig.defaultConfig: %w", err)
	}
	return MergeProxyConfig(userProxy, pc)
}

// parseMeshMap types and validates the merged mesh config.
func parseMeshMap(meshMap map[string]any) (MeshConfig, error) {
	meshJSON, err := json.Marshal(meshMap)
	if err != nil {
		return MeshConfig{}, fmt.Errorf("mesh config: %w", err)
	}
	mesh, err := ParseMeshConfig(meshJSON)
	if err != nil {
		return MeshConfig{}, fmt.Errorf("mesh config: %w", err)
	}
	return mesh, nil
}

// templateTexts returns the template texts by name: the embedded ones, then
// the values' sidecarInjectorWebhook.templates, then the sources' files.
func templateTexts(embedded map[string]string, values map[string]any, files map[string]string) (map[string]string, error) {
	texts := maps.Clone(embedded)
	if sw, ok := values["sidecarInjectorWebhook"].(map[string]any); ok {
		if ts, ok := sw["templates"].(map[string]any); ok {
			for name, t := range ts {
				s, ok := t.(string)
				if !ok {
					return nil, fmt.Errorf("values sidecarInjectorWebhook.templates.%s: must be a string, got %T", name, t)
				}
				texts[name] = s
			}
		}
	}
	maps.Copy(texts, files)
	return texts, nil
}

// parseTemplates parses every template, once, at load.
func parseTemplates(texts map[string]string) (map[string]*template.Template, error) {
	parsed := make(map[string]*template.Template, len(texts))
	for name, text := range texts {
		t, err := templates.Parse(name, text)
		if err != nil {
			return nil, err
		}
		parsed[name] = t
	}
	return parsed, nil
}

// defaultTemplates are the templates applied when a pod names none: the
// values' sidecarInjectorWebhook.defaultTemplates, else sidecar. Each must
// exist.
func defaultTemplates(values map[string]any, parsed map[string]*template.Template) ([]string, error) {
	defaults := stringList(lookup(values, "sidecarInjectorWebhook", "defaultTemplates"))
	if len(defaults) == 0 {
		defaults = []string{"sidecar"}
	}
	for _, d := range defaults {
		if _, ok := parsed[d]; !ok {
			return nil, fmt.Errorf("values sidecarInjectorWebhook.defaultTemplates: no template named %q", d)
		}
	}
	return defaults, nil
}

// builtinTemplates names the templates whose text is the embedded default's.
func builtinTemplates(texts, embedded map[string]string) map[string]bool {
	builtin := map[string]bool{}
	for name, text := range texts {
		if embedded[name] == text {
			builtin[name] = true
		}
	}
	return builtin
}

// Revision returns the revision this configuration serves: the values'
// revision (which --revision overrides), else DefaultRevision. Injection
// records it on the pods it injects; status and the upgrade controller
// consider the pods of this revision.
func (c *Config) Revision() string { return effectiveRevision(c.Settings.Revision) }

// effectiveValues returns the values as the hash sees them: with the
// revision and the native sidecar switch as they take effect (an empty
// revision is "default"; auto is resolved), so that configurations that
// inject the same way hash the same however they were written.
func effectiveValues(values map[string]any, cfg *Config) map[string]any {
	out := maps.Clone(values)
	out["revision"] = cfg.Revision()
	global, _ := values["global"].(map[string]any)
	global = maps.Clone(global)
	if global == nil {
		global = map[string]any{}
	}
	global["nativeSidecars"] = strconv.FormatBool(cfg.Settings.NativeSidecars)
	out["global"] = global
	return out
}

// hashInputs is the configuration hash: of the values, the mesh config and
// every template's text.
func hashInputs(values, mesh map[string]any, texts map[string]string) string {
	h := sha256.New()
	b, _ := json.Marshal(values) // map keys are sorted by encoding/json
	h.Write(b)
	b, _ = json.Marshal(mesh)
	h.Write(b)
	names := make([]string, 0, len(texts))
	for n := range texts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(texts[n]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func readYAMLMap(fsys fs.FS, path string) (map[string]any, error) {
	b, err := fs.ReadFile(fsys, path)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// deepMerge merges src into dst: maps merge recursively, anything else
// replaces.
func deepMerge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				deepMerge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

func lookup(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func stringList(v any) []string {
	switch t := v.(type) {
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	case string:
		if t == "" {
			return nil
		}
		return strings.Split(t, ",")
	}
	return nil
}

// settingsReader reads typed values and collects every error, so one load
// reports all the problems at once.
type settingsReader struct {
	values map[string]any
	errs   []error
}

func (r *settingsReader) str(path string) string {
	v := lookup(r.values, strings.Split(path, ".")...)
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case bool, float64, int64, int:
		return fmt.Sprint(t)
	}
	r.errs = append(r.errs, fmt.Errorf("values %s: must be a string, got %T", path, v))
	return ""
}

func (r *settingsReader) boolean(path string) bool {
	v := lookup(r.values, strings.Split(path, ".")...)
	switch t := v.(type) {
	case nil:
		return false
	case bool:
		return t
	case string:
		switch t {
		case "true":
			return true
		case "false", "":
			return false
		}
	}
	r.errs = append(r.errs, fmt.Errorf("values %s: must be true or false, got %v", path, v))
	return false
}

func (r *settingsReader) integer(path string, min, max int64) int64 {
	v := lookup(r.values, strings.Split(path, ".")...)
	var n int64
	switch t := v.(type) {
	case nil:
		return 0
	case float64:
		n = int64(t)
		if float64(n) != t {
			r.errs = append(r.errs, fmt.Errorf("values %s: must be a whole number, got %v", path, t))
			return 0
		}
	case string:
		if _, err := fmt.Sscanf(t, "%d", &n); err != nil {
			r.errs = append(r.errs, fmt.Errorf("values %s: must be a number, got %q", path, t))
			return 0
		}
	default:
		r.errs = append(r.errs, fmt.Errorf("values %s: must be a number, got %T", path, v))
		return 0
	}
	if n < min || n > max {
		r.errs = append(r.errs, fmt.Errorf("values %s: %d is out of range %d-%d", path, n, min, max))
		return 0
	}
	return n
}

// int32 reads a whole number in [0, max].
func (r *settingsReader) int32(path string, max int32) int32 {
	n := r.integer(path, 0, int64(max))
	// integer keeps n in [0, max]; the bounds check shows gosec (G115) that
	// the conversion cannot overflow.
	if n < 0 || n > math.MaxInt32 {
		return 0
	}
	return int32(n)
}

func (r *settingsReader) resources(path string) corev1.ResourceRequirements {
	v := lookup(r.values, strings.Split(path, ".")...)
	if v == nil {
		return corev1.ResourceRequirements{}
	}
	// Istio values may null out a resource to drop it.
	if m, ok := v.(map[string]any); ok {
		for _, section := range []string{"requests", "limits"} {
			if sm, ok := m[section].(map[string]any); ok {
				for k, q := range sm {
					if q == nil {
						delete(sm, k)
					}
				}
			}
		}
	}
	b, _ := json.Marshal(v)
	var rr corev1.ResourceRequirements
	if err := json.Unmarshal(b, &rr); err != nil {
		r.errs = append(r.errs, fmt.Errorf("values %s: %w", path, err))
	}
	return rr
}

// lifecycle reads a Kubernetes Lifecycle; nil when unset or empty.
func (r *settingsReader) lifecycle(path string) *corev1.Lifecycle {
	v := lookup(r.values, strings.Split(path, ".")...)
	if m, ok := v.(map[string]any); v == nil || ok && len(m) == 0 {
		return nil
	}
	b, _ := json.Marshal(v)
	var l corev1.Lifecycle
	if err := yaml.UnmarshalStrict(b, &l); err != nil {
		r.errs = append(r.errs, fmt.Errorf("values %s: must be a Kubernetes container lifecycle (postStart, preStop): %w", path, err))
		return nil
	}
	return &l
}

func (r *settingsReader) selectors(path string) []labels.Selector {
	v := lookup(r.values, strings.Split(path, ".")...)
	if v == nil {
		return nil
	}
	b, _ := json.Marshal(v)
	var ls []metav1.LabelSelector
	if err := json.Unmarshal(b, &ls); err != nil {
		r.errs = append(r.errs, fmt.Errorf("values %s: must be a list of label selectors: %w", path, err))
		return nil
	}
	out := make([]labels.Selector, 0, len(ls))
	for i := range ls {
		s, err := metav1.LabelSelectorAsSelector(&ls[i])
		if err != nil {
			r.errs = append(r.errs, fmt.Errorf("values %s[%d]: %w", path, i, err))
			continue
		}
		out = append(out, s)
	}
	return out
}

func parseSettings(values map[string]any, serverVersion string) (Settings, error) {
	r := &settingsReader{values: values}
	s := Settings{
		Revision:                  r.str("revision"),
		Hub:                       r.str("global.hub"),
		Tag:                       r.str("global.tag"),
		ImagePullPolicy:           corev1.PullPolicy(r.str("global.imagePullPolicy")),
		ClusterDomain:             r.str("global.proxy.clusterDomain"),
		ClusterID:                 r.str("global.multiCluster.clusterName"),
		MeshID:                    r.str("global.meshID"),
		Network:                   r.str("global.network"),
		CAAddress:                 r.str("global.caAddress"),
		IstioNamespace:            r.str("global.istioNamespace"),
		PilotCertProvider:         r.str("global.pilotCertProvider"),
		LogLevel:                  r.str("global.proxy.logLevel"),
		ComponentLogLevel:         r.str("global.proxy.componentLogLevel"),
		AgentLogLevel:             r.str("global.logging.level"),
		LogAsJSON:                 r.boolean("global.logAsJson"),
		StatusPort:                r.int32("global.proxy.statusPort", 65535),
		ReadinessInitialDelay:     r.int32("global.proxy.readinessInitialDelaySeconds", math.MaxInt32),
		ReadinessPeriod:           r.int32("global.proxy.readinessPeriodSeconds", math.MaxInt32),
		ReadinessFailureThreshold: r.int32("global.proxy.readinessFailureThreshold", math.MaxInt32),
		StartupProbeEnabled:       r.boolean("global.proxy.startupProbe.enabled"),
		StartupFailureThreshold:   r.int32("global.proxy.startupProbe.failureThreshold", math.MaxInt32),
		IncludeIPRanges:           r.str("global.proxy.includeIPRanges"),
		ExcludeIPRanges:           r.str("global.proxy.excludeIPRanges"),
		IncludeOutboundPorts:      r.str("global.proxy.includeOutboundPorts"),
		ExcludeOutboundPorts:      r.str("global.proxy.excludeOutboundPorts"),
		IncludeInboundPorts:       r.str("global.proxy.includeInboundPorts"),
		ExcludeInboundPorts:       r.str("global.proxy.excludeInboundPorts"),
		ExcludeInterfaces:         r.str("global.proxy.excludeInterfaces"),
		HoldApplication:           r.boolean("global.proxy.holdApplicationUntilProxyStarts"),
		Privileged:                r.boolean("global.proxy.privileged"),
		ProxyLifecycle:            r.lifecycle("global.proxy.lifecycle"),
		ProxyUID:                  r.integer("global.proxy.uid", 0, 1<<31-1),
		ProxyGID:                  r.integer("global.proxy.gid", 0, 1<<31-1),
		ProxyResources:            r.resources("global.proxy.resources"),
		InitResources:             r.resources("global.proxy_init.resources"),
		RewriteAppProbes:          r.boolean("sidecarInjectorWebhook.rewriteAppHTTPProbe"),
		EnableNamespacesByDefault: r.boolean("sidecarInjectorWebhook.enableNamespacesByDefault"),
		NeverInjectSelector:       r.selectors("sidecarInjectorWebhook.neverInjectSelector"),
		AlwaysInjectSelector:      r.selectors("sidecarInjectorWebhook.alwaysInjectSelector"),
		CNIEnabled:                r.boolean("istio_cni.enabled") || r.boolean("pilot.cni.enabled"),
		CNIProvider:               r.str("istio_cni.provider"),
		MountMTLSCerts:            r.boolean("global.mountMtlsCerts"),
	}
	if p := r.str("pilot.cni.provider"); p != "" && p != "default" {
		s.CNIProvider = p
	}
	if s.ProxyUID == 0 {
		s.ProxyUID = 1337
	}
	if s.ProxyGID == 0 {
		s.ProxyGID = s.ProxyUID
	}
	s.ProxyImage = imageRef(s.Hub, s.Tag, r.str("global.proxy.image"))
	s.ProxyInitImage = imageRef(s.Hub, s.Tag, r.str("global.proxy_init.image"))
	native, err := resolveNativeSidecars(r.str("global.nativeSidecars"), serverVersion)
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("values global.nativeSidecars: %w", err))
	}
	s.NativeSidecars = native
	switch s.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullNever, corev1.PullIfNotPresent:
	default:
		r.errs = append(r.errs, fmt.Errorf("values global.imagePullPolicy: %q is not one of Always, Never, IfNotPresent", s.ImagePullPolicy))
	}
	if s.ClusterID == "" {
		s.ClusterID = "Kubernetes"
	}
	if s.IstioNamespace == "" {
		s.IstioNamespace = "istio-system"
	}
	if s.ClusterDomain == "" {
		s.ClusterDomain = "cluster.local"
	}
	s.ImagePullSecrets = append(s.ImagePullSecrets, stringListAny(lookup(values, "global", "imagePullSecrets"))...)
	if ia, ok := lookup(values, "sidecarInjectorWebhook", "injectedAnnotations").(map[string]any); ok {
		s.InjectedAnnotations = map[string]string{}
		for k, v := range ia {
			s.InjectedAnnotations[k] = fmt.Sprint(v)
		}
	}
	return s, errors.Join(r.errs...)
}

// stringListAny reads a list of strings or of {name: x} objects, as Istio's
// imagePullSecrets value allows both.
func stringListAny(v any) []string {
	l, ok := v.([]any)
	if !ok {
		return nil
	}
	var out []string
	for _, e := range l {
		switch t := e.(type) {
		case string:
			out = append(out, t)
		case map[string]any:
			if n, ok := t["name"].(string); ok {
				out = append(out, n)
			}
		}
	}
	return out
}

// imageRef resolves an image value as Istio does: a value with a slash or a
// colon is a full reference; otherwise it is joined to hub and tag.
func imageRef(hub, tag, image string) string {
	if strings.Contains(image, "/") || strings.Contains(image, ":") {
		return image
	}
	if image == "" {
		image = "proxyv2"
	}
	ref := image
	if hub != "" {
		ref = hub + "/" + image
	}
	if tag != "" {
		ref += ":" + tag
	}
	return ref
}
