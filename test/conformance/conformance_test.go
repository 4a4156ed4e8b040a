// Package conformance runs Istio's own sidecar-injection test corpus
// (../shared/conformance/istio-inject) through Remora's engine and compares
// every injected pod template with Istio's expected output field for field:
// metadata (every label and annotation, added, changed or removed), init
// containers, containers, volumes with their sources and every other
// pod-level field. Only three things are not differences: container images
// (hub and tag), map order (including the key order of JSON carried in
// annotation and env values), and `emptyDir: {}` versus a volume written
// without a source (the API server defaults the latter to the former).
//
// Every difference must be on keptDifferences, with its reason and the test
// that proves the reason, or the test fails and prints the case's diff. Every
// case of the corpus counts except the Istio-only extras the corpus README
// allows leaving out (istioOnlyExtras).
package conformance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/internal/manifest"
	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// corpusDir is where CI and developers have the shared corpus: beside the
// repository (testenv.Corpus).
func corpusDir(t *testing.T) string { return testenv.Corpus(t) }

// istioOnlyExtras are the cases the corpus README allows leaving out: the
// Istio-only extras SPIRE, OpenTelemetry, FIPS and OpenShift (its platform
// profile and its DeploymentConfig kind). Keyed by expected output.
var istioOnlyExtras = map[string]string{
	"hello-openshift.yaml.injected":                               "OpenShift platform profile",
	"hello-openshift-custom-injection.yaml.injected":              "OpenShift platform profile",
	"hello-openshift-tproxy.yaml.injected":                        "OpenShift platform profile",
	"deploymentconfig.yaml.injected":                              "OpenShift DeploymentConfig kind",
	"deploymentconfig-multi.yaml.injected":                        "OpenShift DeploymentConfig kind",
	"deploymentconfig-with-canonical-service-label.yaml.injected": "OpenShift DeploymentConfig kind",
	"sidecar-spire.yaml.injected":                                 "SPIRE workload identity template",
	"gateway-spire.yaml.injected":                                 "SPIRE workload identity template",
	"hello-otel-semconv.yaml.injected":                            "OpenTelemetry semantic-convention enrichment",
	"hello-fips-140-3.yaml.injected":                              "FIPS 140-3 compliance policy",
}

// keptDifference is a difference from Istio that Remora keeps on purpose.
type keptDifference struct {
	// cases are the expected outputs (golden file names) it applies to.
	cases []string
	// path is the field path as the diff prints it; a difference whose
	// path starts with it is kept.
	path string
	// reason is why Remora differs, for a user.
	reason string
	// test names the test that proves the reason.
	test string
}

// keptDifferences is the one list of differences from Istio that do not
// fail the test.
var keptDifferences = []keptDifference{
	{
		cases: []string{"cronjob.yaml.injected", "cronjob-old-version.yaml.injected"},
		path:  "CronJob/hellocron jobTemplate: metadata",
		reason: "Istio's kube-inject writes a CronJob's injected labels and annotations on the jobTemplate's own " +
			"metadata, which is never copied to the Job's pods; Remora writes them on the pod template, so the " +
			"pods carry the status, revision and Prometheus annotations as the webhook would give them",
		test: "TestCronJobInjectsThePodTemplate",
	},
	{
		cases:  []string{"cronjob.yaml.injected", "cronjob-old-version.yaml.injected"},
		path:   "CronJob/hellocron template: metadata",
		reason: "the other half of the same difference: the labels and annotations are on the pod template",
		test:   "TestCronJobInjectsThePodTemplate",
	},
	{
		cases: []string{"only-proxy-container.yaml.injected"},
		path:  "error: Deployment istio-ingressgateway: the pod's only container is istio-proxy",
		reason: "with native sidecars the proxy becomes an init container and the pod is left with no container, " +
			"which the API server refuses; Istio writes that pod anyway, Remora refuses it at injection and says " +
			"how to fix it (add the app's container or set sidecar.istio.io/nativeSidecar: \"false\")",
		test: "TestPodsTheAPIServerWouldRefuseAreRefused",
	},
	{
		cases: []string{"user-volume.yaml.injected"},
		path:  `error: Deployment user-volume: annotation sidecar.istio.io/userVolume=`,
		reason: "the annotation's configMap item path \"/some-path\" is absolute; the API server refuses such a pod " +
			"(item paths must be relative), so Istio's output cannot be created; Remora refuses it at injection, " +
			"naming the annotation and the item",
		test: "TestPodsTheAPIServerWouldRefuseAreRefused",
	},
	{
		cases: []string{"merge-probers.yaml.injected"},
		path:  "Deployment/hello template:",
		reason: "the input already carries sidecar.istio.io/status (it was injected before); Istio's kube-inject " +
			"injects it again, Remora leaves an injected pod unchanged so that reinvocation and kubectl apply of " +
			"an injected manifest are safe (uninject first to re-inject)",
		test: "TestInjectIsIdempotentAndPure",
	},
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
			t.Fatalf("cases.tsv: malformed line %q", sc.Text())
		}
		cases = append(cases, testCase{parts[0], parts[1], parts[2], parts[3]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

// run is one run of a case: "run twice" cases run once with native
// sidecars and once without.
type run struct {
	testCase
	name   string
	native *bool
}

func runsOf(cases []testCase) []run {
	var runs []run
	for _, c := range cases {
		name := c.input + " -> " + c.expected + " [" + c.settings + "]"
		if strings.HasPrefix(c.settings, "run twice") {
			runs = append(runs, run{c, name + " (native)", ptr(true)}, run{c, name + " (classic)", ptr(false)})
			continue
		}
		runs = append(runs, run{testCase: c, name: name})
	}
	return runs
}

func ptr[T any](v T) *T { return &v }

// caseConfig turns a case's settings into a configuration's sources and
// overrides, and the native sidecar switch.
func caseConfig(dir, settings string) (src config.Sources, o config.Overrides, native bool, err error) {
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
			err = o.Set("values.istio_cni.enabled=true")
		case strings.HasPrefix(s, "values.cni.provider="):
			err = o.Set("values.istio_cni.provider=" + strings.TrimPrefix(s, "values.cni.provider="))
		case strings.HasPrefix(s, "values."):
			err = o.Set(s)
		case s == "mesh.defaultConfig.tracing={} (empty)":
			src.Mesh = []byte("defaultConfig:\n  tracing: {}\n")
		case strings.HasPrefix(s, "mesh."):
			err = o.Set("meshConfig." + strings.TrimPrefix(s, "mesh."))
		case strings.HasPrefix(s, "overlay file "):
			var b []byte
			b, err = os.ReadFile(filepath.Join(dir, "inject", strings.TrimPrefix(s, "overlay file ")))
			src.Values = b
		default:
			return src, o, native, fmt.Errorf("unknown setting %q", s)
		}
		if err != nil {
			return src, o, native, fmt.Errorf("setting %q: %w", s, err)
		}
	}
	return src, o, native, nil
}

func runInject(cfg *config.Config, input []byte) ([]byte, error) {
	out, _, err := manifest.Process(bytes.NewReader(input), func(pod *corev1.Pod, wl inject.Workload) (*corev1.Pod, bool, string, string, error) {
		res, err := inject.Inject(inject.Request{Pod: pod, Namespace: pod.Namespace, Config: cfg, Workload: wl})
		if err != nil {
			return nil, false, "", "", err
		}
		return res.Pod, res.Injected, string(res.Reason), res.Message, nil
	})
	return out, err
}

// caseDiffs runs one case and returns its differences from Istio.
func caseDiffs(dir string, r run) ([]string, error) {
	src, o, native, err := caseConfig(dir, r.settings)
	if err != nil {
		return nil, err
	}
	if r.native != nil {
		native = *r.native
	}
	input, err := os.ReadFile(filepath.Join(dir, "inject", r.input))
	if err != nil {
		return nil, err
	}
	// Istio's native sidecar switch is what auto means on the case's
	// cluster: a 1.28 API server has no native sidecars.
	if !native {
		o.ServerVersion = "v1.28.0"
	}
	cfg, err := config.Load(src, o)
	var out []byte
	if err == nil {
		out, err = runInject(cfg, input)
	}
	if r.expected == "(error expected)" {
		return errorDiffs(r.settings, err), nil
	}
	if err != nil {
		return []string{"error: " + err.Error()}, nil
	}
	golden, err := os.ReadFile(filepath.Join(dir, "inject", r.expected))
	if err != nil {
		return nil, err
	}
	return compareOutputs(golden, out), nil
}

// errorDiffs checks that an error case is refused with a message naming
// the annotation. Istio's messages use its internal names
// (includeipranges); ours name the annotation itself, which is what a user
// sets.
func errorDiffs(settings string, err error) []string {
	want := ""
	if i := strings.Index(settings, `"`); i >= 0 {
		want = strings.Trim(settings[i:], `"`)
	}
	wantAnn := map[string]string{
		"includeipranges":      inject.AnnotationIncludeOutboundCIDRs,
		"excludeipranges":      inject.AnnotationExcludeOutboundCIDRs,
		"includeinboundports":  inject.AnnotationIncludeInboundPorts,
		"excludeinboundports":  inject.AnnotationExcludeInboundPorts,
		"excludeoutboundports": inject.AnnotationExcludeOutboundPorts,
	}[want]
	switch {
	case err == nil:
		return []string{"expected an error, got none"}
	case wantAnn == "" || !strings.Contains(err.Error(), wantAnn):
		return []string{fmt.Sprintf("error %q does not name the annotation for %q", err, want)}
	}
	return nil
}

// kept returns the kept difference that covers diff in case expected.
func kept(expected, diff string) *keptDifference {
	for i := range keptDifferences {
		k := &keptDifferences[i]
		if !strings.HasPrefix(diff, k.path) {
			continue
		}
		for _, c := range k.cases {
			if c == expected {
				return k
			}
		}
	}
	return nil
}

func TestIstioConformance(t *testing.T) {
	dir := corpusDir(t)
	runs := runsOf(readCases(t, dir))
	var matched, counted, keptOnly int
	var extras []string
	used := map[*keptDifference]bool{}
	for _, r := range runs {
		if reason, ok := istioOnlyExtras[r.expected]; ok {
			extras = append(extras, r.name+": "+reason)
			continue
		}
		diffs, err := caseDiffs(dir, r)
		if err != nil {
			t.Errorf("%s: %v", r.name, err)
			continue
		}
		counted++
		if len(diffs) == 0 {
			matched++
			continue
		}
		var failing []string
		keptHere := map[*keptDifference]int{}
		for _, d := range diffs {
			if k := kept(r.expected, d); k != nil {
				used[k] = true
				keptHere[k]++
				continue
			}
			failing = append(failing, d)
		}
		for i := range keptDifferences {
			if k := &keptDifferences[i]; keptHere[k] > 0 {
				t.Logf("kept difference in %s: %s (%d fields): %s [%s]", r.name, k.path, keptHere[k], k.reason, k.test)
			}
		}
		if len(failing) == 0 {
			keptOnly++
			continue
		}
		t.Errorf("%s differs from Istio:\n    %s", r.name, strings.Join(failing, "\n    "))
	}
	for _, e := range extras {
		t.Logf("Istio-only extra, not counted: %s", e)
	}
	for i := range keptDifferences {
		if !used[&keptDifferences[i]] {
			t.Errorf("kept difference %q for %v no longer occurs: remove it", keptDifferences[i].path, keptDifferences[i].cases)
		}
	}
	msg := fmt.Sprintf("conformance: %d/%d field-for-field (%d more differ only by kept differences; %d Istio-only extras not counted)",
		matched, counted, keptOnly, len(extras))
	t.Log(msg)
	fmt.Println(msg)
}

// TestKeptDifferencesAreProven checks that every kept difference has a
// reason and names a test that exists in the repository.
func TestKeptDifferencesAreProven(t *testing.T) {
	tests := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func (Test\w+)\(`)
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range decl.FindAllSubmatch(b, -1) {
				tests[string(m[1])] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keptDifferences {
		if k.reason == "" || len(k.cases) == 0 || k.path == "" {
			t.Errorf("kept difference %q: needs cases, a path and a reason", k.path)
		}
		if !tests[k.test] {
			t.Errorf("kept difference %q: test %q, which should prove it, does not exist", k.path, k.test)
		}
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

// part is one compared piece of a document: a pod template, or a CronJob's
// jobTemplate metadata.
type part struct {
	label string
	tmpl  map[string]any
}

// podTemplates returns the pod templates of a doc, labelled by kind and
// name.
func podTemplates(doc map[string]any) []part {
	kind, _ := doc["kind"].(string)
	name, _ := get(doc, "metadata", "name").(string)
	label := kind + "/" + name
	switch kind {
	case "List":
		var out []part
		items, _ := doc["items"].([]any)
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				out = append(out, podTemplates(m)...)
			}
		}
		return out
	case "Pod":
		return []part{{label, map[string]any{"metadata": doc["metadata"], "spec": doc["spec"]}}}
	}
	if t, ok := get(doc, "spec", "template").(map[string]any); ok {
		return []part{{label + " template", t}}
	}
	if t, ok := get(doc, "spec", "jobTemplate", "spec", "template").(map[string]any); ok {
		jm, _ := get(doc, "spec", "jobTemplate", "metadata").(map[string]any)
		return []part{
			{label + " jobTemplate", map[string]any{"metadata": jm}},
			{label + " template", t},
		}
	}
	return []part{{label + " (no pod template)", nil}}
}

// normalize decodes a pod template as Kubernetes does and returns it as a
// generic map without images and remora.io/ annotations, with source-less
// volumes as emptyDir and JSON-valued strings decoded.
func normalize(tmpl map[string]any) (map[string]any, error) {
	if tmpl == nil {
		return nil, nil
	}
	b, err := json.Marshal(tmpl)
	if err != nil {
		return nil, err
	}
	var pts corev1.PodTemplateSpec
	if err := json.Unmarshal(b, &pts); err != nil {
		return nil, fmt.Errorf("decoding pod template: %w", err)
	}
	for _, cs := range [][]corev1.Container{pts.Spec.InitContainers, pts.Spec.Containers} {
		for i := range cs {
			cs[i].Image = ""
		}
	}
	for i := range pts.Spec.Volumes {
		if reflect.DeepEqual(pts.Spec.Volumes[i].VolumeSource, corev1.VolumeSource{}) {
			pts.Spec.Volumes[i].EmptyDir = &corev1.EmptyDirVolumeSource{}
		}
	}
	for k := range pts.Annotations {
		if strings.HasPrefix(k, "remora.io/") {
			delete(pts.Annotations, k)
		}
	}
	if len(pts.Annotations) == 0 {
		pts.Annotations = nil
	}
	if b, err = json.Marshal(pts); err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if ann, ok := get(m, "metadata", "annotations").(map[string]any); ok {
		for k, v := range ann {
			ann[k] = jsonValue(v)
		}
	}
	for _, key := range []string{"initContainers", "containers"} {
		for _, c := range list(get(m, "spec", key)) {
			for _, e := range list(c["env"]) {
				if v, ok := e["value"]; ok {
					e["value"] = jsonValue(v)
				}
			}
		}
	}
	return m, nil
}

// jsonValue decodes a string holding a JSON object or array, so that its
// key order and spacing do not count.
func jsonValue(v any) any {
	s, ok := v.(string)
	if !ok {
		return v
	}
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, "{") && !strings.HasPrefix(t, "[") {
		return v
	}
	var out any
	if err := json.Unmarshal([]byte(t), &out); err != nil {
		return v
	}
	return out
}

func compareOutputs(golden, ours []byte) []string {
	want, err := readDocs(golden)
	if err != nil {
		return []string{"golden: " + err.Error()}
	}
	got, err := readDocs(ours)
	if err != nil {
		return []string{"ours: " + err.Error()}
	}
	var wantT, gotT []part
	for _, d := range want {
		wantT = append(wantT, podTemplates(d)...)
	}
	for _, d := range got {
		gotT = append(gotT, podTemplates(d)...)
	}
	if len(wantT) != len(gotT) {
		return []string{fmt.Sprintf("objects: got %d pod templates, want %d", len(gotT), len(wantT))}
	}
	var diffs []string
	for i := range wantT {
		if wantT[i].label != gotT[i].label {
			diffs = append(diffs, fmt.Sprintf("objects: got %s, want %s", gotT[i].label, wantT[i].label))
			continue
		}
		w, err := normalize(wantT[i].tmpl)
		if err != nil {
			return []string{"golden " + wantT[i].label + ": " + err.Error()}
		}
		g, err := normalize(gotT[i].tmpl)
		if err != nil {
			return []string{"ours " + gotT[i].label + ": " + err.Error()}
		}
		diffValue(wantT[i].label+":", g, w, &diffs)
	}
	return diffs
}

// diffValue appends one line per differing field. Lists of named items
// (containers, env, volumes, mounts) are compared by name, after their
// order.
func diffValue(path string, got, want any, out *[]string) {
	gm, gok := got.(map[string]any)
	wm, wok := want.(map[string]any)
	if gok && wok {
		keys := map[string]bool{}
		for k := range gm {
			keys[k] = true
		}
		for k := range wm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		sep := "."
		if strings.HasSuffix(path, ":") {
			sep = " "
		}
		for _, k := range sorted {
			diffValue(path+sep+k, gm[k], wm[k], out)
		}
		return
	}
	gl, gok := got.([]any)
	wl, wok := want.([]any)
	if gok && wok {
		gn, gNamed := itemNames(gl)
		wn, wNamed := itemNames(wl)
		if gNamed && wNamed {
			if !reflect.DeepEqual(gn, wn) {
				*out = append(*out, fmt.Sprintf("%s names: got %v, want %v", path, gn, wn))
			}
			for i, n := range gn {
				for j, m := range wn {
					if n == m {
						diffValue(path+"["+n+"]", gl[i], wl[j], out)
					}
				}
			}
			return
		}
		if len(gl) == len(wl) {
			for i := range gl {
				diffValue(fmt.Sprintf("%s[%d]", path, i), gl[i], wl[i], out)
			}
			return
		}
	}
	if !reflect.DeepEqual(got, want) {
		*out = append(*out, fmt.Sprintf("%s: got %s, want %s", path, short(got), short(want)))
	}
}

// itemNames returns the names of a list's items when every item is a map
// with a unique name.
func itemNames(l []any) ([]string, bool) {
	if len(l) == 0 {
		return nil, false
	}
	names := make([]string, 0, len(l))
	seen := map[string]bool{}
	for _, e := range l {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, false
		}
		n, ok := m["name"].(string)
		if !ok || seen[n] {
			return nil, false
		}
		seen[n] = true
		names = append(names, n)
	}
	return names, true
}

func short(v any) string {
	if v == nil {
		return "(absent)"
	}
	b, _ := json.Marshal(v)
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
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
