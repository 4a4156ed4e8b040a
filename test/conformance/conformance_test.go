// Package conformance runs Istio's own sidecar-injection test corpus
// (../shared/conformance/istio-inject) through Remora's engine and compares
// the result with Istio's expected output in effect: containers and their
// order, the init container's flags, the proxy's args, env, probes,
// resources, security context, mounts and lifecycle, volumes, the labels and
// annotations added, the status annotation and the rewritten app probes.
// Image names (hub and tag) are not compared.
package conformance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/pkg/inject"
	"github.com/remora-mesh/remora/pkg/manifest"
	"github.com/remora-mesh/remora/pkg/templates"
)

// corpusDir is where CI and developers have the shared corpus: beside the
// repository.
func corpusDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../../shared/conformance/istio-inject")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cases.tsv")); err != nil {
		testenv.SkipOrFail(t, "conformance corpus missing at %s: %v", dir, err)
	}
	return dir
}

// knownDifferences are Istio-only extras that Remora does not implement,
// with the reason. Cases listed here are reported but do not count.
var knownDifferences = map[string]string{
	"hello-openshift.yaml.injected":                               "OpenShift platform profile (Istio-only extra)",
	"hello-openshift-custom-uid.yaml.injected":                    "OpenShift platform profile (Istio-only extra)",
	"hello-openshift-tproxy.yaml.injected":                        "OpenShift platform profile (Istio-only extra)",
	"spire-template.yaml.injected":                                "SPIRE workload identity template (Istio-only extra)",
	"spire-template-with-existing-volumes.yaml.injected":          "SPIRE workload identity template (Istio-only extra)",
	"hello-compliance.yaml.injected":                              "FIPS compliance policy (Istio-only extra)",
	"hello-otel.yaml.injected":                                    "OpenTelemetry resource attributes (Istio-only extra)",
	"deploymentconfig.yaml.injected":                              "OpenShift DeploymentConfig kind (Istio-only extra)",
	"deploymentconfig-multi.yaml.injected":                        "OpenShift DeploymentConfig kind (Istio-only extra)",
	"deploymentconfig-with-canonical-service-label.yaml.injected": "OpenShift DeploymentConfig kind (Istio-only extra)",
	"grpc-agent.yaml.injected":                                    "proxyless gRPC agent template (Istio-only extra)",
	"grpc-simple.yaml.injected":                                   "proxyless gRPC template (Istio-only extra)",
}

type testCase struct {
	kind, input, expected, settings string
}

func readCases(t *testing.T, dir string) []testCase {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "cases.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var cases []testCase
	sc := bufio.NewScanner(f)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		parts := strings.Split(sc.Text(), "\t")
		if len(parts) < 4 {
			continue
		}
		cases = append(cases, testCase{parts[0], parts[1], parts[2], parts[3]})
	}
	return cases
}

// caseConfig turns a case's settings into a configuration and the native
// sidecar switch. extra is non-empty when the settings need an Istio-only
// feature.
func caseConfig(dir, settings string) (src templates.Sources, native bool, extra string, err error) {
	native = true
	for _, s := range strings.Split(settings, ";") {
		s = strings.TrimSpace(s)
		switch {
		case s == "" || s == "defaults" || strings.HasPrefix(s, "kube-inject only") ||
			strings.HasPrefix(s, "webhook path only") || strings.HasPrefix(s, "expect "):
		case strings.HasPrefix(s, "ENABLE_NATIVE_SIDECARS=false"), strings.HasPrefix(s, "nodes report kubelet v1.28"):
			native = false
		case strings.HasPrefix(s, "run twice"):
		case s == "components.cni.enabled=true":
			err = src.Set("values.istio_cni.enabled=true")
		case strings.HasPrefix(s, "values.cni.provider="):
			err = src.Set("values.istio_cni.provider=" + strings.TrimPrefix(s, "values.cni.provider="))
		case strings.HasPrefix(s, "values."):
			err = src.Set(s)
		case strings.HasPrefix(s, "mesh.defaultConfig.tracing="):
			extra = "mesh tracing config"
		case strings.HasPrefix(s, "mesh.extensionProviders"), strings.HasPrefix(s, "mesh.inboundTrafficPolicy"):
			extra = s
		case strings.HasPrefix(s, "mesh."):
			err = src.Set("meshConfig." + strings.TrimPrefix(s, "mesh."))
		case strings.HasPrefix(s, "overlay file spire-template"):
			extra = "SPIRE workload identity template (Istio-only extra)"
		case strings.HasPrefix(s, "overlay file "):
			var b []byte
			b, err = os.ReadFile(filepath.Join(dir, "inject", strings.TrimPrefix(s, "overlay file ")))
			src.Values = b
		case strings.HasPrefix(s, "platform="), strings.HasPrefix(s, "COMPLIANCE_POLICY"):
			extra = s
		default:
			return src, native, "", fmt.Errorf("unknown setting %q", s)
		}
		if err != nil {
			return src, native, "", err
		}
	}
	return src, native, extra, nil
}

func runInject(cfg *templates.Config, native bool, input []byte) ([]byte, error) {
	out, _, err := manifest.Process(bytes.NewReader(input), func(pod *corev1.Pod, wl inject.Workload) (*corev1.Pod, bool, string, string, error) {
		res, err := inject.Inject(inject.Request{Pod: pod, Namespace: pod.Namespace, Config: cfg, NativeSidecars: native, Workload: wl})
		if err != nil {
			return nil, false, "", "", err
		}
		return res.Pod, res.Injected, string(res.Reason), res.Message, nil
	})
	return out, err
}

func TestIstioConformance(t *testing.T) {
	dir := corpusDir(t)
	cases := readCases(t, dir)
	var matched, counted, extras int
	var failures []string
	for _, c := range cases {
		name := c.input + " -> " + c.expected
		if c.settings != "" {
			name += " [" + c.settings + "]"
		}
		src, native, extra, err := caseConfig(dir, c.settings)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if reason, ok := knownDifferences[c.expected]; ok && extra == "" {
			extra = reason
		}
		input, err := os.ReadFile(filepath.Join(dir, "inject", c.input))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		cfg, err := templates.Load(src)
		var out []byte
		if err == nil {
			out, err = runInject(cfg, native, input)
		}
		var diffs []string
		if c.expected == "(error expected)" {
			want := ""
			if i := strings.Index(c.settings, `"`); i >= 0 {
				want = strings.Trim(c.settings[i:], `"`)
			}
			// Istio's messages use its internal names (includeipranges);
			// ours name the annotation itself, which is what a user sets.
			wantAnn := map[string]string{
				"includeipranges":      inject.AnnotationIncludeOutboundCIDRs,
				"excludeipranges":      inject.AnnotationExcludeOutboundCIDRs,
				"includeinboundports":  inject.AnnotationIncludeInboundPorts,
				"excludeinboundports":  inject.AnnotationExcludeInboundPorts,
				"excludeoutboundports": inject.AnnotationExcludeOutboundPorts,
			}[want]
			switch {
			case err == nil:
				diffs = append(diffs, "expected an error, got none")
			case wantAnn == "" || !strings.Contains(err.Error(), wantAnn):
				diffs = append(diffs, fmt.Sprintf("error %q does not name the annotation for %q", err, want))
			}
		} else if err != nil {
			diffs = append(diffs, "error: "+err.Error())
		} else {
			golden, rerr := os.ReadFile(filepath.Join(dir, "inject", c.expected))
			if rerr != nil {
				t.Errorf("%s: %v", name, rerr)
				continue
			}
			diffs = compareOutputs(input, golden, out)
		}
		if extra != "" {
			extras++
			t.Logf("EXTRA %s: %s (matched=%v)", name, extra, len(diffs) == 0)
			continue
		}
		counted++
		if len(diffs) == 0 {
			matched++
			continue
		}
		failures = append(failures, fmt.Sprintf("%s:\n    %s", name, strings.Join(diffs, "\n    ")))
	}
	sort.Strings(failures)
	for _, f := range failures {
		t.Logf("DIFF %s", f)
	}
	pct := 100 * float64(matched) / float64(max(counted, 1))
	t.Logf("conformance: %d of %d Istio cases match in effect (%.1f%%); %d Istio-only extras not counted", matched, counted, pct, extras)
	fmt.Printf("conformance: %d of %d Istio cases match in effect (%.1f%%); %d Istio-only extras not counted\n", matched, counted, pct, extras)
	if pct < 90 {
		t.Errorf("conformance %.1f%% is below the 90%% goal", pct)
	}
}

// readDocs splits YAML documents into generic objects.
func readDocs(b []byte) ([]map[string]any, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var docs []map[string]any
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(d, &m); err != nil {
			return nil, err
		}
		if m != nil {
			docs = append(docs, m)
		}
	}
}

// podTemplates returns the pod templates (metadata+spec maps) of a doc.
func podTemplates(doc map[string]any) []map[string]any {
	if doc["kind"] == "List" {
		var out []map[string]any
		items, _ := doc["items"].([]any)
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				out = append(out, podTemplates(m)...)
			}
		}
		return out
	}
	if doc["kind"] == "Pod" {
		return []map[string]any{doc}
	}
	spec, _ := doc["spec"].(map[string]any)
	if spec == nil {
		return []map[string]any{nil}
	}
	if t, ok := spec["template"].(map[string]any); ok {
		return []map[string]any{t}
	}
	if jt, ok := spec["jobTemplate"].(map[string]any); ok {
		if js, ok := jt["spec"].(map[string]any); ok {
			if t, ok := js["template"].(map[string]any); ok {
				// Istio's kube-inject writes a CronJob's labels and
				// annotations on the jobTemplate; in effect they belong
				// to the pods, so compare them there.
				if jm, ok := jt["metadata"].(map[string]any); ok {
					t = mergeMeta(t, jm)
				}
				return []map[string]any{t}
			}
		}
	}
	return []map[string]any{nil}
}

// mergeMeta returns tmpl with the labels and annotations of extra added.
func mergeMeta(tmpl, extra map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range tmpl {
		out[k] = v
	}
	meta := map[string]any{}
	if m, ok := tmpl["metadata"].(map[string]any); ok {
		for k, v := range m {
			meta[k] = v
		}
	}
	for _, key := range []string{"labels", "annotations"} {
		merged := map[string]any{}
		if m, ok := meta[key].(map[string]any); ok {
			for k, v := range m {
				merged[k] = v
			}
		}
		if m, ok := extra[key].(map[string]any); ok {
			for k, v := range m {
				merged[k] = v
			}
		}
		if len(merged) > 0 {
			meta[key] = merged
		}
	}
	out["metadata"] = meta
	return out
}

// ignoredAnnotations are Istio's own bookkeeping, which Remora keeps in
// its own way: Istio records a user's istio-proxy override in
// proxy.istio.io/overrides to re-apply it on re-injection; Remora keeps the
// user's fields in the merged container and is idempotent instead.
var ignoredAnnotations = map[string]bool{"proxy.istio.io/overrides": true}

func compareOutputs(input, golden, ours []byte) []string {
	in, err := readDocs(input)
	if err != nil {
		return []string{"input: " + err.Error()}
	}
	want, err := readDocs(golden)
	if err != nil {
		return []string{"golden: " + err.Error()}
	}
	got, err := readDocs(ours)
	if err != nil {
		return []string{"ours: " + err.Error()}
	}
	var inT, wantT, gotT []map[string]any
	for _, d := range in {
		inT = append(inT, podTemplates(d)...)
	}
	for _, d := range want {
		wantT = append(wantT, podTemplates(d)...)
	}
	for _, d := range got {
		gotT = append(gotT, podTemplates(d)...)
	}
	if len(wantT) != len(gotT) {
		return []string{fmt.Sprintf("%d objects, want %d", len(gotT), len(wantT))}
	}
	var diffs []string
	for i := range wantT {
		var orig map[string]any
		if i < len(inT) {
			orig = inT[i]
		}
		we, ge := effectOf(orig, wantT[i]), effectOf(orig, gotT[i])
		for _, k := range sortedKeys(we, ge) {
			if !reflect.DeepEqual(normalize(we[k]), normalize(ge[k])) {
				wj, _ := json.Marshal(we[k])
				gj, _ := json.Marshal(ge[k])
				diffs = append(diffs, fmt.Sprintf("object %d %s: got %s, want %s", i, k, trunc(gj), trunc(wj)))
			}
		}
	}
	return diffs
}

func trunc(b []byte) string {
	if len(b) > 400 {
		return string(b[:400]) + "..."
	}
	return string(b)
}

func normalize(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

func sortedKeys(a, b map[string]any) []string {
	set := map[string]bool{}
	for k := range a {
		set[k] = true
	}
	for k := range b {
		set[k] = true
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func get(m map[string]any, path ...string) any {
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

func list(v any) []map[string]any {
	l, _ := v.([]any)
	out := make([]map[string]any, 0, len(l))
	for _, e := range l {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func namesOf(items []map[string]any) []string {
	out := []string{}
	for _, it := range items {
		out = append(out, fmt.Sprint(it["name"]))
	}
	return out
}

// flagMap reads istio-iptables args into flag -> value and the bare flags.
func flagMap(args []any) (map[string]string, []string) {
	m := map[string]string{}
	var bare []string
	for i := 0; i < len(args); i++ {
		a := fmt.Sprint(args[i])
		if a == "istio-iptables" {
			continue
		}
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && i+1 < len(args) {
			m[a] = fmt.Sprint(args[i+1])
			i++
			continue
		}
		bare = append(bare, a)
	}
	sort.Strings(bare)
	return m, bare
}

// envValue parses JSON env values so that formatting does not count.
func envValue(s string) any {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err == nil {
		return v
	}
	return s
}

// effectOf extracts what matters of one pod template.
func effectOf(orig, tmpl map[string]any) map[string]any {
	e := map[string]any{}
	if tmpl == nil {
		e["template"] = nil
		return e
	}
	meta, _ := tmpl["metadata"].(map[string]any)
	spec, _ := tmpl["spec"].(map[string]any)
	ann, _ := get(meta, "annotations").(map[string]any)
	lbl, _ := get(meta, "labels").(map[string]any)
	origAnn, _ := get(orig, "metadata", "annotations").(map[string]any)
	origLbl, _ := get(orig, "metadata", "labels").(map[string]any)
	added := func(now, before map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range now {
			if strings.HasPrefix(k, "remora.io/") || k == inject.AnnotationStatus || ignoredAnnotations[k] {
				continue
			}
			if bv, ok := before[k]; !ok || fmt.Sprint(bv) != fmt.Sprint(v) {
				out[k] = fmt.Sprint(v)
			}
		}
		return out
	}
	e["annotationsAdded"] = added(ann, origAnn)
	e["labelsAdded"] = added(lbl, origLbl)
	if st, ok := ann[inject.AnnotationStatus].(string); ok {
		e["status"] = envValue(st)
	}
	inits := list(spec["initContainers"])
	conts := list(spec["containers"])
	e["initContainers"] = namesOf(inits)
	e["containers"] = namesOf(conts)
	e["volumes"] = namesOf(list(spec["volumes"]))
	e["imagePullSecrets"] = spec["imagePullSecrets"]
	for _, c := range inits {
		if c["name"] == inject.InitContainerName || c["name"] == inject.ValidationContainerName {
			args, _ := c["args"].([]any)
			fm, bare := flagMap(args)
			e["init.args"] = fm
			e["init.flags"] = bare
			e["init.resources"] = c["resources"]
			e["init.securityContext"] = c["securityContext"]
			e["init.imagePullPolicy"] = c["imagePullPolicy"]
		}
	}
	var proxy map[string]any
	loc := ""
	for _, c := range inits {
		if c["name"] == inject.ProxyContainerName {
			proxy, loc = c, "initContainers"
		}
	}
	for _, c := range conts {
		if c["name"] == inject.ProxyContainerName {
			proxy, loc = c, "containers"
		}
	}
	if proxy != nil {
		e["proxy.location"] = loc
		e["proxy.args"] = proxy["args"]
		env := map[string]any{}
		var envNames []string
		for _, ev := range list(proxy["env"]) {
			n := fmt.Sprint(ev["name"])
			envNames = append(envNames, n)
			if v, ok := ev["value"].(string); ok {
				env[n] = envValue(v)
			} else {
				env[n] = ev["valueFrom"]
			}
		}
		sort.Strings(envNames)
		e["proxy.envNames"] = envNames
		e["proxy.env"] = env
		for _, k := range []string{"lifecycle", "ports", "readinessProbe", "startupProbe", "livenessProbe", "resources", "restartPolicy", "securityContext", "imagePullPolicy"} {
			e["proxy."+k] = proxy[k]
		}
		var mounts []string
		for _, m := range list(proxy["volumeMounts"]) {
			mounts = append(mounts, fmt.Sprint(m["name"], ":", m["mountPath"]))
		}
		// Which volumes are mounted where is the effect; a user's extra
		// mount may come before or after the injected ones.
		sort.Strings(mounts)
		e["proxy.volumeMounts"] = mounts
	}
	probes := map[string]any{}
	for _, c := range conts {
		if c["name"] == inject.ProxyContainerName {
			continue
		}
		probes[fmt.Sprint(c["name"])] = map[string]any{
			"readiness": c["readinessProbe"], "liveness": c["livenessProbe"], "startup": c["startupProbe"], "lifecycle": c["lifecycle"],
		}
	}
	e["appProbes"] = probes
	return e
}
