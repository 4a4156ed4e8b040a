package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/internal/guard"
	"github.com/remora-mesh/remora/pkg/config"
)

// labelsReader answers namespace Gets from memory, as the manager's
// informer cache does, so that the benchmark measures the handler.
type labelsReader map[string]map[string]string

func (r labelsReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	obj.SetName(key.Name)
	obj.SetLabels(r[key.Name])
	return nil
}

func (r labelsReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return nil
}

// benchReviews returns the benchmark requests: the reference review, and
// the large and annotated pods wrapped in the same review.
func benchReviews(b *testing.B) map[string][]byte {
	ref, err := os.ReadFile(reviewFile)
	if err != nil {
		b.Fatal(err)
	}
	out := map[string][]byte{"reviews-v1": ref}
	for name, file := range map[string]string{"large": "large-pod.yaml", "annotated": "annotated-pod.yaml"} {
		y, err := os.ReadFile("../../testdata/bench/" + file)
		if err != nil {
			b.Fatal(err)
		}
		podJSON, err := yaml.YAMLToJSON(y)
		if err != nil {
			b.Fatal(err)
		}
		var ar admissionv1.AdmissionReview
		if err := json.Unmarshal(ref, &ar); err != nil {
			b.Fatal(err)
		}
		ar.Request.Object = runtime.RawExtension{Raw: podJSON}
		if out[name], err = json.Marshal(ar); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

func serveOnce(b *testing.B, h http.Handler, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/inject", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"patch"`)) {
		b.Fatalf("status %d, body %.300s", rec.Code, rec.Body.String())
	}
	return rec
}

// floorHandler is the reference point: it decodes the pod, as any webhook
// must, and returns a precomputed answer of the size Remora's real one has.
type floorHandler struct {
	decoder admission.Decoder
	resp    admission.Response
}

func (f *floorHandler) Handle(_ context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := f.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	return f.resp
}

// BenchmarkAdmission runs Remora's full admission path (guard, decoding,
// engine, patch, encoding: raw review in, response bytes out) and the floor
// side by side on the same requests, so their ratio comes from one run.
func BenchmarkAdmission(b *testing.B) {
	cfg := classicConfig // parsed once, as the watcher does
	h, err := NewHandler(Options{
		Config:     func() *config.Config { return cfg },
		Namespaces: labelsReader{"default": {"istio-injection": "enabled"}},
	})
	if err != nil {
		b.Fatal(err)
	}
	ours := guard.New(&admission.Webhook{Handler: h}, guard.Options{Log: logr.Discard()})
	decoder := admission.NewDecoder(clientgoscheme.Scheme)
	for _, name := range []string{"reviews-v1", "large", "annotated"} {
		body := benchReviews(b)[name]
		// The floor answers with exactly the patch ours computes.
		var ar admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &ar); err != nil {
			b.Fatal(err)
		}
		resp := h.Handle(context.Background(), admission.Request{AdmissionRequest: *ar.Request})
		if len(resp.Patch) == 0 {
			b.Fatalf("%s: not injected: %v", name, resp.Result)
		}
		floor := &admission.Webhook{Handler: &floorHandler{decoder: decoder, resp: resp}}
		b.Run(name+"/remora", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				serveOnce(b, ours, body)
			}
		})
		b.Run(name+"/floor", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				serveOnce(b, floor, body)
			}
		})
	}
}
