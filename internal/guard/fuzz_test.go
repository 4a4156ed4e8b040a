package guard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/remora-mesh/remora/internal/guard"
	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/internal/webhook"
	"github.com/remora-mesh/remora/pkg/config"
)

// enabled answers every namespace Get with istio-injection=enabled, from
// memory, so that every pod reaches the engine.
type enabled struct{}

func (enabled) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	obj.SetName(key.Name)
	obj.SetLabels(map[string]string{"istio-injection": "enabled"})
	return nil
}

func (enabled) List(context.Context, client.ObjectList, ...client.ListOption) error { return nil }

// answered are the statuses the guard and the webhook may answer with. A
// 500 from the guard is a recovered panic: a bug.
var answered = map[int]bool{
	http.StatusOK:                    true,
	http.StatusBadRequest:            true,
	http.StatusMethodNotAllowed:      true,
	http.StatusRequestEntityTooLarge: true,
	http.StatusUnsupportedMediaType:  true,
}

// FuzzGuard sends arbitrary requests (method, Content-Type, body bytes)
// through the whole admission path injector serve registers: the guard,
// controller-runtime's admission.Webhook and Remora's handler with the
// engine. It must never panic, must answer with one of the statuses above,
// and a 200 must be a JSON AdmissionReview of the request's apiVersion
// whose response carries the request's uid, refuses with an error code, and
// patches only a pod creation with a patch that applies to the request's
// object. Seeds: f.Add below and testdata/fuzz/FuzzGuard.
func FuzzGuard(f *testing.F) {
	review, err := os.ReadFile(filepath.Join("..", "..", testenv.ReviewFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("POST", "application/json", review)
	f.Add("POST", "application/json; charset=utf-8", bytes.Replace(review, []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v1beta1"), 1))
	f.Add("POST", "application/json", bytes.Replace(review, []byte(`"operation":"CREATE"`), []byte(`"operation":"UPDATE"`), 1))
	f.Add("POST", "application/json", bytes.Replace(review, []byte(`"namespace":"default","labels"`),
		[]byte(`"namespace":"default","annotations":{"sidecar.istio.io/nativeSidecar":"maybe"},"labels"`), 1))
	f.Add("GET", "application/json", []byte(nil))
	f.Add("POST", "application/yaml", review)
	f.Add("POST", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","object":{}}}`))

	h, err := webhook.NewHandler(webhook.Options{Config: config.MustDefault, Namespaces: enabled{}, OwnNamespace: "remora-system"})
	if err != nil {
		f.Fatal(err)
	}
	// No recovery in controller-runtime: a panic in the handler reaches
	// the guard, which counts it and answers 500, and the fuzzer fails.
	srv := guard.New((&admission.Webhook{Handler: h}).WithRecoverPanic(false), guard.Options{Log: logr.Discard()})

	f.Fuzz(func(t *testing.T, method, contentType string, body []byte) {
		if method == "" || !validMethod(method) {
			method = http.MethodPost
		}
		req := httptest.NewRequestWithContext(t.Context(), method, "/inject", bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)

		if !answered[rec.Code] {
			t.Fatalf("status %d (body %.300q)", rec.Code, rec.Body.String())
		}
		if rec.Code != http.StatusOK {
			return
		}
		// The guard let it through: it is strict JSON with the envelope.
		// Read it case-sensitively, as controller-runtime does.
		var in struct {
			APIVersion string `json:"apiVersion"`
			Request    struct {
				UID       string          `json:"uid"`
				Operation string          `json:"operation"`
				Object    jsonv2RawObject `json:"object"`
			} `json:"request"`
		}
		if err := jsonv2.Unmarshal(body, &in); err != nil {
			t.Fatalf("the guard passed a body that does not decode: %v", err)
		}
		var out struct {
			APIVersion string                         `json:"apiVersion"`
			Kind       string                         `json:"kind"`
			Response   *admissionv1.AdmissionResponse `json:"response"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("a 200 that is not JSON: %v: %.300q", err, rec.Body.String())
		}
		if out.Kind != "AdmissionReview" || out.APIVersion != in.APIVersion || out.Response == nil {
			t.Fatalf("answered %s %s (response %v) to a %s review", out.APIVersion, out.Kind, out.Response != nil, in.APIVersion)
		}
		resp := out.Response
		if string(resp.UID) != in.Request.UID {
			t.Fatalf("response uid %q, request uid %q", resp.UID, in.Request.UID)
		}
		if !resp.Allowed && (resp.Result == nil || resp.Result.Code < 400) {
			t.Fatalf("refused without an error code: %+v", resp.Result)
		}
		if len(resp.Patch) == 0 {
			return
		}
		if !resp.Allowed || in.Request.Operation != "CREATE" {
			t.Fatalf("a patch for allowed=%v operation %q", resp.Allowed, in.Request.Operation)
		}
		p, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("the patch does not decode: %v", err)
		}
		if _, err := p.Apply(in.Request.Object); err != nil {
			t.Fatalf("the patch does not apply to the request's object: %v", err)
		}
	})
}

// jsonv2RawObject keeps a JSON value's bytes.
type jsonv2RawObject []byte

func (r *jsonv2RawObject) UnmarshalJSON(b []byte) error {
	*r = append((*r)[:0], b...)
	return nil
}

// validMethod reports whether m is a token net/http accepts as a method.
func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`()<>@,;:\"/[]?={}`), c) >= 0 {
			return false
		}
	}
	return true
}
