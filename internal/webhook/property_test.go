package webhook_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/diff"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/remora-mesh/remora/internal/guard"
	"github.com/remora-mesh/remora/internal/manifest"
	"github.com/remora-mesh/remora/internal/patch"
	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/internal/webhook"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// The property: for every golden input (the engine's, pkg/inject/testdata/golden, and
// the CLI's, cmd/injector/testdata) and every
// input of Istio's conformance corpus, under the settings of each of its
// cases, applying the webhook's JSON patch (from the real handler behind
// the guard, given an AdmissionReview built from the pod) to the request's
// pod gives exactly the engine's pod, and a second admission of that pod
// changes nothing. Pods the engine skips or refuses get the same answer from
// the webhook, without a patch.

const ownNamespace = "remora-system"

// goldenDirs hold the golden inputs: the engine's and the CLI's.
var goldenDirs = []string{"../inject/testdata/golden", "../../cmd/injector/testdata"}

// corpusDir is the shared conformance corpus, beside the repository ("" if
// the repository's root cannot be found: the corpus is then missing).
var corpusDir = func() string {
	dir, _ := testenv.CorpusDir()
	return dir
}()

// enabledEverywhere labels every namespace for injection, so that the
// engine's policy, not the namespace, decides.
type enabledEverywhere struct{}

func (enabledEverywhere) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	obj.SetName(key.Name)
	obj.SetLabels(map[string]string{inject.LabelNamespaceInject: "enabled"})
	return nil
}

func (enabledEverywhere) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return nil
}

// propertyInput is one pod with the configuration it is injected under.
type propertyInput struct {
	name   string
	pod    *corev1.Pod
	raw    []byte // the pod template as written, in JSON
	cfg    *config.Config
	native bool
}

// podsOf returns the pod templates of a manifest, as pods, with their JSON
// as written.
func podsOf(t *testing.T, file string) ([]*corev1.Pod, [][]byte) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var pods []*corev1.Pod
	_, _, err = manifest.Process(bytes.NewReader(b), func(pod *corev1.Pod, _ inject.Workload) (*corev1.Pod, bool, string, string, error) {
		p := pod.DeepCopy()
		// As the API server sends it.
		p.APIVersion, p.Kind = "v1", "Pod"
		pods = append(pods, p)
		return pod, false, "", "", nil
	})
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	// The JSON as written: the typed pod loses nothing the webhook reads,
	// but the raw form keeps the author's omissions (no annotations map,
	// no status), which the patch must cope with.
	raws := make([][]byte, len(pods))
	for i, p := range pods {
		raw, err := json.Marshal(struct {
			APIVersion string            `json:"apiVersion"`
			Kind       string            `json:"kind"`
			Metadata   metav1.ObjectMeta `json:"metadata"`
			Spec       corev1.PodSpec    `json:"spec"`
		}{"v1", "Pod", p.ObjectMeta, p.Spec})
		if err != nil {
			t.Fatal(err)
		}
		raws[i] = raw
	}
	return pods, raws
}

// goldenInputs are the golden inputs, with native sidecars on and off.
func goldenInputs(t *testing.T) []propertyInput {
	t.Helper()
	var files []string
	for _, dir := range goldenDirs {
		m, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	var out []propertyInput
	for _, f := range files {
		if strings.HasSuffix(f, ".golden.yaml") {
			continue
		}
		pods, raws := podsOf(t, f)
		for _, native := range []bool{true, false} {
			for i, p := range pods {
				out = append(out, propertyInput{
					name: fmt.Sprintf("golden/%s#%d/native=%v", f, i, native),
					pod:  p, raw: raws[i], cfg: testenv.DefaultConfig(native), native: native,
				})
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no golden inputs in %s", goldenDirs)
	}
	return out
}

// corpusInputs are the conformance corpus's inputs under each case's
// settings (Istio-only settings are left out: the property holds under any
// configuration). It returns nil when the corpus is not there.
func corpusInputs(t *testing.T) []propertyInput {
	t.Helper()
	f, err := os.Open(filepath.Join(corpusDir, "cases.tsv"))
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("conformance corpus missing: %v", err)
		}
		t.Logf("conformance corpus missing (%v): golden inputs only", err)
		return nil
	}
	defer func() { _ = f.Close() }()
	var out []propertyInput
	sc := bufio.NewScanner(f)
	for line := 0; sc.Scan(); line++ {
		cols := strings.Split(sc.Text(), "\t")
		if line == 0 || len(cols) < 4 {
			continue
		}
		input, settings := cols[1], cols[3]
		cfg, native, err := caseConfig(settings)
		if err != nil {
			t.Fatalf("cases.tsv line %d: %v", line+1, err)
		}
		pods, raws := podsOf(t, filepath.Join(corpusDir, "inject", input))
		for i, p := range pods {
			out = append(out, propertyInput{
				name: fmt.Sprintf("corpus/%d/%s#%d", line+1, input, i),
				pod:  p, raw: raws[i], cfg: cfg, native: native,
			})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// caseConfig turns a case's settings into a configuration, as the
// conformance test does, leaving out what only Istio has.
func caseConfig(settings string) (*config.Config, bool, error) {
	var (
		src config.Sources
		o   config.Overrides
	)
	native := true
	for _, s := range strings.Split(settings, ";") {
		s = strings.TrimSpace(s)
		var err error
		switch {
		case strings.HasPrefix(s, "ENABLE_NATIVE_SIDECARS=false"), strings.HasPrefix(s, "nodes report kubelet v1.28"):
			native = false
		case s == "components.cni.enabled=true":
			err = o.Set("values.istio_cni.enabled=true")
		case strings.HasPrefix(s, "values.cni.provider="):
			err = o.Set("values.istio_cni.provider=" + strings.TrimPrefix(s, "values.cni.provider="))
		case strings.HasPrefix(s, "values."):
			err = o.Set(s)
		case strings.HasPrefix(s, "mesh.defaultConfig.tracing="), strings.HasPrefix(s, "mesh.extensionProviders"),
			strings.HasPrefix(s, "mesh.inboundTrafficPolicy"):
			// Istio-only.
		case strings.HasPrefix(s, "mesh."):
			err = o.Set("meshConfig." + strings.TrimPrefix(s, "mesh."))
		case strings.HasPrefix(s, "overlay file ") && !strings.HasPrefix(s, "overlay file spire-template"):
			src.Values, err = os.ReadFile(filepath.Join(corpusDir, "inject", strings.TrimPrefix(s, "overlay file ")))
		}
		if err != nil {
			return nil, false, fmt.Errorf("setting %q: %w", s, err)
		}
	}
	o.ServerVersion = testenv.ServerVersion(native)
	cfg, err := config.Load(src, o)
	return cfg, native, err
}

// admissionServer serves the real handler behind the guard.
type admissionServer struct {
	h http.Handler
}

func newAdmissionServer(t *testing.T, cfg *config.Config) *admissionServer {
	t.Helper()
	h, err := webhook.NewHandler(webhook.Options{
		Config:       func() *config.Config { return cfg },
		Namespaces:   enabledEverywhere{},
		OwnNamespace: ownNamespace,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &admissionServer{h: guard.New(&admission.Webhook{Handler: h}, guard.Options{Log: logr.Discard()})}
}

// admit sends the creation of raw (a pod's JSON) in namespace ns.
func (s *admissionServer) admit(t *testing.T, ns, name string, raw []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("property"),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns,
			Name:      name,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/inject", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP status %d: %s", rec.Code, rec.Body.String())
	}
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &ar); err != nil || ar.Response == nil {
		t.Fatalf("not an AdmissionReview with a response: %v: %.300s", err, rec.Body.String())
	}
	if ar.Response.UID != "property" {
		t.Fatalf("response uid %q", ar.Response.UID)
	}
	return ar.Response
}

// applyPatch applies the response's JSON patch to raw.
func applyPatch(t *testing.T, raw []byte, resp *admissionv1.AdmissionResponse) []byte {
	t.Helper()
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("decoding the patch: %v", err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("applying the patch: %v", err)
	}
	return out
}

// generic decodes JSON into maps and slices, for an exact comparison that
// ignores only key order and formatting.
func generic(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWebhookPatchGivesTheEnginesPod(t *testing.T) {
	inputs := append(goldenInputs(t), corpusInputs(t)...)
	type server struct {
		cfg    *config.Config
		native bool
	}
	servers := map[server]*admissionServer{}
	var injected, exact, direct, skipped, refused, forms int
	var failed []string
	for _, in := range inputs {
		ok := t.Run(in.name, func(t *testing.T) {
			key := server{in.cfg, in.native}
			srv := servers[key]
			if srv == nil {
				srv = newAdmissionServer(t, in.cfg)
				servers[key] = srv
			}
			ns := in.pod.Namespace
			if ns == "" {
				ns = "default"
			}
			res, err := inject.Inject(inject.Request{
				Pod: in.pod, Namespace: ns, NamespaceLabels: map[string]string{inject.LabelNamespaceInject: "enabled"},
				OwnNamespace: ownNamespace, Config: in.cfg,
			})
			// The pod as the API server sends it (its own serialisation)
			// and as written.
			apiRaw, err2 := json.Marshal(in.pod)
			if err2 != nil {
				t.Fatal(err2)
			}
			for _, form := range []struct {
				name  string
				raw   []byte
				exact bool // compare the JSON, not only the decoded pod
			}{{"as the API server sends it", apiRaw, true}, {"as written", in.raw, false}} {
				forms++
				resp := srv.admit(t, ns, in.pod.Name, form.raw)
				switch {
				case inject.IsRefused(err):
					if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusForbidden || resp.Result.Message != err.Error() {
						t.Fatalf("%s: the engine refuses with %q; the webhook answered allowed=%v %+v", form.name, err, resp.Allowed, resp.Result)
					}
					refused++
					continue
				case err != nil:
					t.Fatalf("the engine failed: %v", err)
				case !res.Injected:
					if !resp.Allowed || len(resp.Patch) > 0 {
						t.Fatalf("%s: the engine skips (%s); the webhook answered allowed=%v with a %d-byte patch", form.name, res.Reason, resp.Allowed, len(resp.Patch))
					}
					skipped++
					continue
				}
				if !resp.Allowed || len(resp.Patch) == 0 {
					t.Fatalf("%s: the engine injects; the webhook answered allowed=%v %+v without a patch", form.name, resp.Allowed, resp.Result)
				}
				injected++
				out := applyPatch(t, form.raw, resp)
				var got corev1.Pod
				if err := json.Unmarshal(out, &got); err != nil {
					t.Fatalf("%s: the patched pod does not decode: %v", form.name, err)
				}
				if !equality.Semantic.DeepEqual(&got, res.Pod) {
					t.Fatalf("%s: the patched pod is not the engine's (-engine +patched):\n%s", form.name, diff.Diff(res.Pod, &got))
				}
				if form.exact {
					// From the API server's serialisation the result is
					// the engine's pod's serialisation, byte for byte in
					// effect.
					want, err := json.Marshal(res.Pod)
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(generic(t, out), generic(t, want)) {
						t.Fatalf("%s: the patched JSON differs from the engine's pod's JSON:\n%s", form.name, diff.Diff(string(want), string(out)))
					}
					exact++
					if patch.IsDirect(in.pod, res.Pod) {
						direct++
					}
				}
				// A second admission of the injected pod changes nothing.
				again := srv.admit(t, ns, in.pod.Name, out)
				if !again.Allowed || len(again.Patch) > 0 {
					t.Fatalf("%s: the second admission answered allowed=%v with a %d-byte patch (%+v)", form.name, again.Allowed, len(again.Patch), again.Result)
				}
			}
		})
		if !ok {
			failed = append(failed, in.name)
		}
	}
	// Every input is admitted in two forms; count inputs.
	t.Logf("property: %d pod inputs (%d golden and corpus templates x settings), each admitted as the API server sends it and as written: "+
		"%d injected, where the patched pod is the engine's (byte for byte in effect from the API server's form; %d by the direct patch, %d by the generic diff) "+
		"and a second admission changes nothing; %d skipped and %d refused, answered alike without a patch",
		len(inputs), len(inputs), injected/2, direct, exact-direct, skipped/2, refused/2)
	if forms != 2*len(inputs) && len(failed) == 0 {
		t.Errorf("%d admissions for %d inputs", forms, len(inputs))
	}
	if len(failed) > 0 {
		t.Errorf("%d inputs fail the property: %s", len(failed), strings.Join(failed, ", "))
	}
	if injected == 0 {
		t.Error("no input was injected: the property was not tested")
	}
}
