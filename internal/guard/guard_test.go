package guard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

const goodReview = `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"ns","operation":"CREATE","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"a":"1"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}`

type allow struct{ panics bool }

func (a allow) Handle(_ context.Context, _ admission.Request) admission.Response {
	if a.panics {
		panic("boom")
	}
	return admission.Allowed("ok")
}

func serve(t *testing.T, h http.Handler, method, contentType, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, "/inject", strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestGuard(t *testing.T) {
	h := New(&admission.Webhook{Handler: allow{}}, Options{Log: logr.Discard()})
	tests := []struct {
		name       string
		method, ct string
		body       string
		code       int
		wantInBody string
		wantReason string
	}{
		{"good v1 review", "POST", "application/json", goodReview, 200, `"allowed":true`, ""},
		{"charset parameter", "POST", "application/json; charset=utf-8", goodReview, 200, `"uid":"u1"`, ""},
		{"v1beta1 answered in v1beta1", "POST", "application/json", strings.Replace(goodReview, "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1), 200, `"apiVersion":"admission.k8s.io/v1beta1"`, ""},
		{"GET", "GET", "application/json", "", 405, "POST", ReasonMethod},
		{"PUT", "PUT", "application/json", goodReview, 405, "POST", ReasonMethod},
		{"YAML content type", "POST", "application/yaml", goodReview, 415, "application/json", ReasonMediaType},
		{"no content type", "POST", "", goodReview, 415, "application/json", ReasonMediaType},
		{"too large", "POST", "application/json", `{"a":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, 413, "exceeds", ReasonTooLarge},
		{"not JSON", "POST", "application/json", "{", 400, "not strict JSON", ReasonInvalidJSON},
		{"YAML body", "POST", "application/json", "apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\n", 400, "not strict JSON", ReasonInvalidJSON},
		{"byte-order mark", "POST", "application/json", "\xef\xbb\xbf" + goodReview, 400, "byte-order mark", ReasonInvalidJSON},
		{"invalid UTF-8", "POST", "application/json", strings.Replace(goodReview, `"a":"1"`, "\"a\":\"\xff\"", 1), 400, "UTF-8", ReasonInvalidJSON},
		{"trailing garbage", "POST", "application/json", goodReview + "x", 400, "not strict JSON", ReasonInvalidJSON},
		{"second value", "POST", "application/json", goodReview + "{}", 400, "not strict JSON", ReasonInvalidJSON},
		{"duplicate top-level key", "POST", "application/json", strings.Replace(goodReview, `"kind":"AdmissionReview"`, `"kind":"AdmissionReview","kind":"AdmissionReview"`, 1), 400, "duplicate", ReasonInvalidJSON},
		{"duplicate annotation", "POST", "application/json", strings.Replace(goodReview, `"a":"1"`, `"traffic.sidecar.istio.io/includeInboundPorts":"80,,x","traffic.sidecar.istio.io/includeInboundPorts":"80"`, 1), 400, "duplicate", ReasonInvalidJSON},
		{"array body", "POST", "application/json", "[]", 400, "JSON object", ReasonInvalidJSON},
		{"wrong apiVersion", "POST", "application/json", strings.Replace(goodReview, "admission.k8s.io/v1", "admission.k8s.io/v2", 1), 400, "apiVersion", ReasonEnvelope},
		{"wrong kind", "POST", "application/json", strings.Replace(goodReview, `"kind":"AdmissionReview"`, `"kind":"Pod"`, 1), 400, "kind", ReasonEnvelope},
		{"no request", "POST", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, 400, "no request", ReasonEnvelope},
		{"no uid", "POST", "application/json", strings.Replace(goodReview, `"uid":"u1",`, "", 1), 400, "no uid", ReasonEnvelope},
		{"CREATE without object", "POST", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE"}}`, 400, "no object", ReasonEnvelope},
		{"request of the wrong type", "POST", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":"x"}`, 400, "not an AdmissionReview", ReasonEnvelope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before float64
			if tt.wantReason != "" {
				before = testutil.ToFloat64(rejected.WithLabelValues(tt.wantReason))
			}
			code, body := serve(t, h, tt.method, tt.ct, tt.body)
			if code != tt.code {
				t.Fatalf("status %d, want %d (body %.200s)", code, tt.code, body)
			}
			if !strings.Contains(body, tt.wantInBody) {
				t.Errorf("body %.300q does not contain %q", body, tt.wantInBody)
			}
			if tt.wantReason != "" {
				if after := testutil.ToFloat64(rejected.WithLabelValues(tt.wantReason)); after != before+1 {
					t.Errorf("rejections for %s went %v -> %v", tt.wantReason, before, after)
				}
			}
		})
	}
}

func TestGuardRecoversPanics(t *testing.T) {
	// controller-runtime recovers handler panics itself unless told not to;
	// the guard is the last line for anything that escapes.
	wh := (&admission.Webhook{Handler: allow{panics: true}}).WithRecoverPanic(false)
	h := New(wh, Options{Log: logr.Discard()})
	before := testutil.ToFloat64(panics)
	code, _ := serve(t, h, "POST", "application/json", goodReview)
	if code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", code)
	}
	if testutil.ToFloat64(panics) != before+1 {
		t.Fatal("panic not counted")
	}
	// The server keeps answering.
	if code, _ := serve(t, New(&admission.Webhook{Handler: allow{}}, Options{Log: logr.Discard()}), "POST", "application/json", goodReview); code != 200 {
		t.Fatalf("status %d after a panic", code)
	}
}
