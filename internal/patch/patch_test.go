package patch_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	jsonpatch5 "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/internal/manifest"
	"github.com/remora-mesh/remora/internal/patch"
	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

func apply(t *testing.T, raw []byte, ops any) []byte {
	t.Helper()
	b, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch5.DecodePatch(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("applying patch: %v", err)
	}
	return out
}

func canonical(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// TestPatchEqualsGenericDiff proves, on every pod of the Istio corpus and
// our goldens, that applying the directly built patch to the raw pod gives
// the same document as applying controller-runtime's generic diff, and the
// same as the injected pod itself.
func TestPatchEqualsGenericDiff(t *testing.T) {
	corpus, err := testenv.CorpusDir()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, pattern := range []string{filepath.Join(corpus, "inject", "*.yaml"), "../inject/testdata/golden/*.yaml", "../../cmd/injector/testdata/*.yaml", "../../testdata/bench/*.yaml"} {
		m, _ := filepath.Glob(pattern)
		files = append(files, m...)
	}
	if len(files) < 10 {
		t.Fatalf("only %d inputs", len(files))
	}
	cfg := config.MustDefault()
	var direct, total int
	for _, f := range files {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, _, _ = manifest.Process(bytes.NewReader(in), func(pod *corev1.Pod, wl inject.Workload) (*corev1.Pod, bool, string, string, error) {
			res, err := inject.Inject(inject.Request{Pod: pod, Config: cfg, Workload: wl})
			if err != nil || !res.Injected {
				return pod, false, "", "", nil
			}
			total++
			raw, err := json.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			injected, err := json.Marshal(res.Pod)
			if err != nil {
				t.Fatal(err)
			}
			ops, err := patch.Operations(raw, pod, res.Pod)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			got := canonical(t, apply(t, raw, ops))
			want := canonical(t, injected)
			checkMarshal(t, filepath.Base(f), raw, ops, want)
			if got != want {
				t.Errorf("%s: patched pod differs from the injected pod", filepath.Base(f))
			}
			generic, err := patch.Generic(raw, res.Pod)
			if err != nil {
				t.Fatal(err)
			}
			checkMarshal(t, filepath.Base(f)+" (generic diff)", raw, generic, want)
			if g := canonical(t, apply(t, raw, generic)); g != got {
				t.Errorf("%s: direct and generic patches give different pods", filepath.Base(f))
			}
			if patch.IsDirect(pod, res.Pod) {
				direct++
			}
			return pod, false, "", "", nil
		})
	}
	t.Logf("%d injected pods, %d patched directly", total, direct)
	if total < 50 || direct < total*9/10 {
		t.Fatalf("too few cases (%d) or direct patches (%d)", total, direct)
	}
}

// checkMarshal: Marshal writes the same JSON document as encoding/json with
// jsonpatch's own MarshalJSON, and applying it gives want.
func checkMarshal(t *testing.T, name string, raw []byte, ops []jsonpatch.Operation, want string) {
	t.Helper()
	b, err := patch.Marshal(ops)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	ref, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	if canonical(t, b) != canonical(t, ref) {
		t.Errorf("%s: Marshal wrote\n%s\nencoding/json writes\n%s", name, b, ref)
	}
	p, err := jsonpatch5.DecodePatch(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("%s: applying the marshalled patch: %v", name, err)
	}
	if canonical(t, out) != want {
		t.Errorf("%s: the marshalled patch does not give the injected pod", name)
	}
}

// TestMarshalNullValues: an add or replace of a nil value is written with
// "value": null, as jsonpatch writes it; a remove has no value.
func TestMarshalNullValues(t *testing.T) {
	ops := []jsonpatch.Operation{
		jsonpatch.NewOperation("add", "/spec/dnsConfig", nil),
		jsonpatch.NewOperation("replace", "/metadata/labels/a", nil),
		jsonpatch.NewOperation("remove", "/spec/volumes", nil),
		jsonpatch.NewOperation("add", "/metadata/labels/a~1b", "<x&y>"),
	}
	b, err := patch.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"op":"add","path":"/spec/dnsConfig","value":null},{"op":"replace","path":"/metadata/labels/a","value":null},` +
		`{"op":"remove","path":"/spec/volumes"},{"op":"add","path":"/metadata/labels/a~1b","value":"\u003cx\u0026y\u003e"}]`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	ref, _ := json.Marshal(ops)
	if canonical(t, b) != canonical(t, ref) {
		t.Errorf("differs from encoding/json's %s", ref)
	}
}

// TestFallsBackWhenOtherFieldsChange checks the generic diff is used when a
// template changes a field the direct patch does not cover.
func TestFallsBackWhenOtherFieldsChange(t *testing.T) {
	orig := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "a"}}}}
	changed := orig.DeepCopy()
	changed.Spec.ServiceAccountName = "other"
	changed.Annotations = map[string]string{"a/b~c": "x"}
	if patch.IsDirect(orig, changed) {
		t.Fatal("a change of serviceAccountName must not be patched directly")
	}
	raw, _ := json.Marshal(orig)
	ops, err := patch.Operations(raw, orig, changed)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(changed)
	if got := canonical(t, apply(t, raw, ops)); got != canonical(t, want) {
		t.Fatalf("fallback patch gives %s, want %s", got, want)
	}
}
