package inject

import (
	"slices"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/pkg/config"
)

// loadConfig loads the embedded defaults with values and mesh config, on an
// API server with or without native sidecars.
func loadConfig(t *testing.T, native bool, values, mesh string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Sources{Values: []byte(values), Mesh: []byte(mesh)},
		config.Overrides{ServerVersion: testenv.ServerVersion(native)})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestWarnings checks each warning the engine gives a pod, and that a pod
// gets no other: deprecated annotations, annotations without effect in the
// pod's mode, and what a pod that is not injected sets in vain.
func TestWarnings(t *testing.T) {
	classic, native := testenv.DefaultConfig(false), testenv.DefaultConfig(true)
	cni := loadConfig(t, false, "istio_cni:\n  enabled: true\n", "")
	noMerge := loadConfig(t, false, "", "enablePrometheusMerge: false\n")
	neverSel := loadConfig(t, false, "sidecarInjectorWebhook:\n  neverInjectSelector:\n  - matchLabels: {batch: \"yes\"}\n", "")
	enabled := map[string]string{LabelNamespaceInject: "enabled"}
	disabled := map[string]string{LabelNamespaceInject: "disabled"}
	tests := []struct {
		name      string
		cfg       *config.Config
		nsLabels  map[string]string
		podLabels map[string]string
		ann       map[string]string
		host      bool
		want      []string
		optIn     bool
	}{
		{name: "a pod without Istio annotations gets none", cfg: classic, nsLabels: enabled},
		{name: "annotations in effect get none", cfg: classic, nsLabels: enabled,
			ann: map[string]string{AnnotationProxyCPU: "100m", AnnotationExcludeOutboundPorts: "3306", AnnotationRerouteVirtualIfaces: "k6t-eth0"}},

		// Deprecated annotations.
		{name: "the sidecar.istio.io/inject annotation is deprecated", cfg: classic, nsLabels: map[string]string{},
			ann:  map[string]string{AnnotationInject: "true"},
			want: []string{"annotation sidecar.istio.io/inject is deprecated: use the label sidecar.istio.io/inject"}},
		{name: "the sidecar.istio.io/inject annotation is ignored beside the label", cfg: classic, nsLabels: enabled,
			podLabels: map[string]string{LabelInject: "true"}, ann: map[string]string{AnnotationInject: "false"},
			want: []string{"annotation sidecar.istio.io/inject is ignored: the pod has the label of that name"}},
		{name: "kubevirtInterfaces is deprecated", cfg: classic, nsLabels: enabled,
			ann:  map[string]string{AnnotationKubevirtInterfaces: "k6t-eth0"},
			want: []string{"annotation traffic.sidecar.istio.io/kubevirtInterfaces is deprecated: use istio.io/reroute-virtual-interfaces"}},
		{name: "kubevirtInterfaces is ignored beside reroute-virtual-interfaces", cfg: classic, nsLabels: enabled,
			ann:  map[string]string{AnnotationKubevirtInterfaces: "k6t-eth0", AnnotationRerouteVirtualIfaces: "k6t-eth0"},
			want: []string{"annotation traffic.sidecar.istio.io/kubevirtInterfaces is ignored: istio.io/reroute-virtual-interfaces is set"}},
		{name: "the proxy's deprecated stats annotations", cfg: classic, nsLabels: enabled,
			ann: map[string]string{"sidecar.istio.io/statsInclusionPrefixes": "cluster", "sidecar.istio.io/extraStatTags": "a",
				"sidecar.istio.io/discoveryAddress": "istiod:15012", "sidecar.istio.io/statsCompression": "gzip"},
			want: []string{
				"annotation sidecar.istio.io/discoveryAddress is deprecated: use discoveryAddress in proxy.istio.io/config",
				"annotation sidecar.istio.io/statsInclusionPrefixes is deprecated: use proxyStatsMatcher in proxy.istio.io/config",
				"annotation sidecar.istio.io/extraStatTags is deprecated: use extraStatTags in proxy.istio.io/config",
				"annotation sidecar.istio.io/statsCompression is deprecated: Istio names no replacement",
			}},
		{name: "a deprecated annotation on a skipped pod", cfg: classic, nsLabels: enabled,
			ann:  map[string]string{AnnotationInject: "false"},
			want: []string{"annotation sidecar.istio.io/inject is deprecated: use the label sidecar.istio.io/inject"}},

		// A pod that asks for a sidecar and is not injected.
		{name: "inject=true in a namespace with istio-injection=disabled", cfg: classic, nsLabels: disabled,
			podLabels: map[string]string{LabelInject: "true"}, optIn: true,
			want: []string{"sidecar.istio.io/inject=true has no effect: not injected (namespace istio-injection=disabled)"}},
		{name: "inject=true on a hostNetwork pod", cfg: classic, nsLabels: enabled, host: true,
			podLabels: map[string]string{LabelInject: "true"}, optIn: true,
			want: []string{"sidecar.istio.io/inject=true has no effect: not injected (hostNetwork)"}},
		{name: "a disabled namespace without the pod's request", cfg: classic, nsLabels: disabled},

		// Settings of a pod that is not injected.
		{name: "settings of a pod that opts out", cfg: classic, nsLabels: enabled,
			podLabels: map[string]string{LabelInject: "false"}, ann: map[string]string{AnnotationProxyCPU: "100m"},
			want: []string{"sidecar.istio.io/proxyCPU has no effect: not injected (sidecar.istio.io/inject=false)"}},
		{name: "settings of a pod that matches neverInjectSelector", cfg: neverSel, nsLabels: enabled,
			podLabels: map[string]string{"batch": "yes"}, ann: map[string]string{AnnotationLogLevel: "debug"},
			want: []string{"sidecar.istio.io/logLevel has no effect: not injected (neverInjectSelector)"}},
		{name: "many settings in a disabled namespace: three, then a count", cfg: classic, nsLabels: disabled,
			podLabels: map[string]string{LabelInject: "true"}, optIn: true,
			ann: map[string]string{AnnotationProxyCPU: "1", AnnotationProxyMemory: "1Gi", AnnotationLogLevel: "debug",
				AnnotationStatusPort: "15030", AnnotationExcludeOutboundPorts: "3306"},
			want: []string{
				"sidecar.istio.io/inject=true has no effect: not injected (namespace istio-injection=disabled)",
				"sidecar.istio.io/logLevel has no effect: not injected (namespace istio-injection=disabled)",
				"sidecar.istio.io/proxyCPU has no effect: not injected (namespace istio-injection=disabled)",
				"sidecar.istio.io/proxyMemory has no effect: not injected (namespace istio-injection=disabled)",
				"2 more sidecar annotations have no effect: not injected (namespace istio-injection=disabled)",
			}},
		{name: "settings of a pod left to another revision get none", cfg: classic, nsLabels: map[string]string{LabelRevision: "canary"},
			ann: map[string]string{AnnotationProxyCPU: "100m"}},
		{name: "settings of a pod in a namespace not selected get none", cfg: classic, nsLabels: map[string]string{},
			ann: map[string]string{AnnotationProxyCPU: "100m"}},
		{name: "an injected pod re-created gets none", cfg: classic, nsLabels: enabled,
			ann: map[string]string{AnnotationStatus: "{}", AnnotationKubevirtInterfaces: "k6t-eth0"}},

		// Settings without effect in the pod's mode.
		{name: "capture annotations with interception mode NONE", cfg: classic, nsLabels: enabled,
			ann: map[string]string{AnnotationInterceptionMode: "NONE", AnnotationExcludeOutboundPorts: "3306", AnnotationIncludeInboundPorts: "8080"},
			want: []string{
				"traffic.sidecar.istio.io/includeInboundPorts has no effect: interception mode NONE captures no traffic",
				"traffic.sidecar.istio.io/excludeOutboundPorts has no effect: interception mode NONE captures no traffic",
			}},
		{name: "interception mode NONE from proxy.istio.io/config", cfg: classic, nsLabels: enabled,
			ann:  map[string]string{AnnotationProxyConfig: "interceptionMode: NONE", AnnotationExcludeInterfaces: "eth1"},
			want: []string{"traffic.sidecar.istio.io/excludeInterfaces has no effect: interception mode NONE captures no traffic"}},
		{name: "capture annotations with NONE and the Istio CNI plugin get none", cfg: cni, nsLabels: enabled,
			ann: map[string]string{AnnotationInterceptionMode: "NONE", AnnotationExcludeOutboundPorts: "3306"}},
		{name: "readiness timing and probe rewriting with status port 0", cfg: classic, nsLabels: enabled,
			ann: map[string]string{AnnotationStatusPort: "0", AnnotationReadinessPeriod: "5", AnnotationRewriteProbes: "true"},
			want: []string{
				"readiness.status.sidecar.istio.io/periodSeconds has no effect: the status port is 0 (no readiness probe)",
				"sidecar.istio.io/rewriteAppHTTPProbers has no effect: the status port is 0",
			}},
		{name: "probe rewriting turned off with status port 0 gets none", cfg: classic, nsLabels: enabled,
			ann: map[string]string{AnnotationStatusPort: "0", AnnotationRewriteProbes: "false"}},
		{name: "holdApplicationUntilProxyStarts with native sidecars", cfg: native, nsLabels: enabled,
			ann:  map[string]string{AnnotationProxyConfig: `{"holdApplicationUntilProxyStarts": true}`},
			want: []string{"holdApplicationUntilProxyStarts in proxy.istio.io/config has no effect with native sidecars"}},
		{name: "holdApplicationUntilProxyStarts with classic sidecars gets none", cfg: classic, nsLabels: enabled,
			ann: map[string]string{AnnotationProxyConfig: `{"holdApplicationUntilProxyStarts": true}`}},
		{name: "holdApplicationUntilProxyStarts with the pod's native sidecar", cfg: classic, nsLabels: enabled,
			ann:  map[string]string{AnnotationNativeSidecar: "true", AnnotationProxyConfig: `{"holdApplicationUntilProxyStarts": true}`},
			want: []string{"holdApplicationUntilProxyStarts in proxy.istio.io/config has no effect with native sidecars"}},
		{name: "scrape targets with merge-metrics=false", cfg: classic, nsLabels: enabled,
			ann:  map[string]string{AnnotationScrapeTargets: "9100:/metrics", AnnotationMergeMetrics: "false"},
			want: []string{"prometheus.istio.io/scrape-targets has no effect: metrics merging is off"}},
		{name: "scrape targets with the mesh's merging off", cfg: noMerge, nsLabels: enabled,
			ann:  map[string]string{AnnotationScrapeTargets: "9100:/metrics"},
			want: []string{"prometheus.istio.io/scrape-targets has no effect: metrics merging is off"}},
		{name: "scrape targets with merging on get none", cfg: classic, nsLabels: enabled,
			ann: map[string]string{AnnotationScrapeTargets: "9100:/metrics"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testPod(tt.ann)
			for k, v := range tt.podLabels {
				pod.Labels[k] = v
			}
			pod.Spec.HostNetwork = tt.host
			res, err := Inject(Request{Pod: pod, Namespace: "shop", NamespaceLabels: tt.nsLabels, Config: tt.cfg})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.Warnings, tt.want) {
				t.Errorf("warnings (%s):\n  %s\nwant:\n  %s", res.Reason, strings.Join(res.Warnings, "\n  "), strings.Join(tt.want, "\n  "))
			}
			if tt.want == nil && res.Warnings != nil {
				t.Errorf("warnings %#v, want nil", res.Warnings)
			}
			if res.OptInIgnored != tt.optIn {
				t.Errorf("OptInIgnored=%v, want %v (%s)", res.OptInIgnored, tt.optIn, res.Reason)
			}
		})
	}
}

// TestRefusedPodsGetNoWarnings: a refused pod's message says what is wrong.
func TestRefusedPodsGetNoWarnings(t *testing.T) {
	pod := testPod(map[string]string{AnnotationKubevirtInterfaces: "k6t-eth0", AnnotationProxyCPU: "lots"})
	res, err := Inject(Request{Pod: pod, Namespace: "shop", NamespaceLabels: map[string]string{LabelNamespaceInject: "enabled"}, Config: testenv.DefaultConfig(true)})
	if !IsRefused(err) || res.Warnings != nil {
		t.Fatalf("err %v, warnings %q; want a refusal without warnings", err, res.Warnings)
	}
}

// TestWarningsAreShort gives a pod every annotation a warning can name, in
// every cause, and checks that each warning fits on a line of
// MaxWarningLength, names an annotation and carries no value.
func TestWarningsAreShort(t *testing.T) {
	const value = "VALUE-NEVER-SHOWN"
	known := append(append([]string{LabelInject}, settingAnnotations[:]...), AnnotationProxyConfig, AnnotationScrapeTargets)
	for _, d := range deprecatedAnnotations {
		known = append(known, d.name)
	}
	var w warnings
	for _, name := range settingAnnotations {
		for _, why := range []string{notInjectedNamespace, notInjectedHostNetwork, notInjectedOptOut, notInjectedSelector,
			"interception mode NONE captures no traffic", "the status port is 0 (no readiness probe)"} {
			noEffect(&w, map[string]string{name: value}, []string{name}, why)
		}
	}
	all := map[string]string{LabelInject: "true", AnnotationKubevirtInterfaces: value, AnnotationRerouteVirtualIfaces: value}
	for _, d := range deprecatedAnnotations {
		all[d.name] = value
	}
	for _, name := range settingAnnotations {
		all[name] = value
	}
	deprecationWarnings(&w, all, nil)
	deprecationWarnings(&w, all, map[string]string{LabelInject: "true"})
	delete(all, AnnotationRerouteVirtualIfaces)
	deprecationWarnings(&w, all, nil)
	for _, reason := range []Reason{ReasonNamespaceDisabled, ReasonHostNetwork, ReasonPodOptOut, ReasonNeverInjectLabel} {
		pod := testPod(all)
		pod.Labels[LabelInject] = "true"
		sw, _ := skipWarnings(pod, reason)
		w = append(w, sw...)
	}
	res, err := Inject(Request{Pod: testPod(map[string]string{
		AnnotationStatusPort: "0", AnnotationReadinessDelay: "1", AnnotationRewriteProbes: "true", AnnotationNativeSidecar: "true",
		AnnotationProxyConfig: "holdApplicationUntilProxyStarts: true", AnnotationScrapeTargets: "9100:/m", AnnotationMergeMetrics: "false",
	}), Namespace: "shop", Config: testenv.DefaultConfig(true)})
	if err != nil || len(res.Warnings) != 4 {
		t.Fatalf("%v: %q, want 4 warnings", err, res.Warnings)
	}
	w = append(w, res.Warnings...)
	for _, s := range w {
		if len(s) > MaxWarningLength || strings.ContainsAny(s, "\n\r") || strings.Contains(s, value) {
			t.Errorf("%d characters, or a line break or a value: %q", len(s), s)
		}
		if !slices.ContainsFunc(known, func(name string) bool { return strings.Contains(s, name) }) && !strings.Contains(s, "more sidecar annotations") {
			t.Errorf("names no annotation: %q", s)
		}
	}
	t.Logf("%d warnings checked", len(w))
}

// TestWarningChecksDoNotAllocate: a pod without warnings costs the checks
// no allocation, however many annotations it has.
func TestWarningChecksDoNotAllocate(t *testing.T) {
	cfg := testenv.DefaultConfig(true)
	ann := map[string]string{AnnotationProxyCPU: "1", AnnotationExcludeOutboundPorts: "3306", AnnotationProxyConfig: "concurrency: 2"}
	for i := range 60 {
		ann["example.com/note-"+string(rune('a'+i%26))+string(rune('a'+i/26))] = "x"
	}
	pod := testPod(ann)
	r, err := resolve(Request{Pod: pod, Config: cfg}, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if r.warnings != nil {
		t.Fatalf("warnings %q", r.warnings)
	}
	allocs := testing.AllocsPerRun(100, func() {
		var w warnings
		deprecationWarnings(&w, pod.Annotations, pod.Labels)
		modeWarnings(&w, pod.Annotations, &cfg.Settings, &cfg.Mesh, &r)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per pod without warnings, want 0", allocs)
	}
}
