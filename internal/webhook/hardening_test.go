package webhook

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/remora-mesh/remora/internal/guard"
	"github.com/remora-mesh/remora/pkg/inject"
)

// This file proves the rules that harden the webhook (strict checks before
// decoding, bounded bodies, named refusals, no panics) through
// the real HTTP stack the injector serves: raw bytes are POSTed to
// guard.New(&admission.Webhook{Handler: the Handler}) on an httptest
// server, and the status and the response are checked.

// reviewUID is the uid of the real review in reviewFile.
const reviewUID = "0f9b0e3a-6a1c-4a53-9e8b-1d2f3c4b5a69"

// memNamespaces answers namespace Gets from memory, as the manager's cache
// does; an unknown namespace is NotFound.
type memNamespaces map[string]map[string]string

func (m memNamespaces) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	labels, ok := m[key.Name]
	if !ok {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, key.Name)
	}
	obj.SetName(key.Name)
	obj.SetLabels(labels)
	return nil
}

func (m memNamespaces) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return nil
}

// hardenedNamespaces: "default" is enabled, "plain" is not labelled.
var hardenedNamespaces = memNamespaces{
	"default": {inject.LabelNamespaceInject: "enabled"},
	"plain":   {},
	// They exist in every cluster; the engine never injects them.
	"kube-system":   {inject.LabelNamespaceInject: "enabled"},
	"remora-system": {inject.LabelNamespaceInject: "enabled"},
}

// newHardenedServer serves the handler behind the guard, as injector serve
// registers it.
func newHardenedServer(t testing.TB, mutate func(*Options)) *httptest.Server {
	t.Helper()
	opts := Options{Config: classic, Namespaces: hardenedNamespaces, OwnNamespace: "remora-system"}
	if mutate != nil {
		mutate(&opts)
	}
	h, err := NewHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	hook := guard.New(&admission.Webhook{Handler: h}, guard.Options{Log: logr.Discard()})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Tell the test how the body arrived.
		if r.ContentLength == -1 && slices.Contains(r.TransferEncoding, "chunked") {
			w.Header().Set(chunkedHeader, "true")
		}
		hook.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// chunkedHeader marks an answer to a request whose body came chunked,
// without a Content-Length.
const chunkedHeader = "X-Test-Request-Chunked"

// baseReview is the real review, decoded generically so that cases can put
// values of any JSON type anywhere.
func baseReview(t testing.TB) map[string]any {
	t.Helper()
	b, err := os.ReadFile(reviewFile)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func obj(v any) map[string]any { return v.(map[string]any) }

// reqOf, podOf, metaOf and specOf reach into a generic review.
func reqOf(ar map[string]any) map[string]any  { return obj(ar["request"]) }
func podOf(ar map[string]any) map[string]any  { return obj(reqOf(ar)["object"]) }
func metaOf(ar map[string]any) map[string]any { return obj(podOf(ar)["metadata"]) }
func specOf(ar map[string]any) map[string]any { return obj(podOf(ar)["spec"]) }

// firstContainer is the reviews container of the base pod.
func firstContainer(ar map[string]any) map[string]any {
	return obj(specOf(ar)["containers"].([]any)[0])
}

// withAnnotations sets pod annotations.
func withAnnotations(ar map[string]any, kv ...string) {
	meta := metaOf(ar)
	ann, _ := meta["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
		meta["annotations"] = ann
	}
	for i := 0; i+1 < len(kv); i += 2 {
		ann[kv[i]] = kv[i+1]
	}
}

// rawRequest is what a case sends.
type rawRequest struct {
	method      string // default POST
	contentType string // default application/json; "-" sends none
	body        []byte
	chunked     bool // send without a Content-Length
}

// expectation is what a case must get back.
type expectation struct {
	status int // HTTP status (default 200)
	// For a status other than 200: substrings of the plain-text body.
	bodyHas []string
	// For 200: the review's apiVersion (default admission.k8s.io/v1), the
	// response's uid (default reviewUID), allowed, whether a patch comes
	// back, Result.Code and substrings of Result.Message.
	apiVersion string
	uid        string
	allowed    bool
	patched    bool
	code       int32
	msgHas     []string
	// check inspects the patched pod (allowed responses only).
	check func(t *testing.T, pod *corev1.Pod)
	// orDenied also accepts a denial (code 403), for a case where either
	// a valid result or our own refusal is right.
	orDenied bool
}

type hardeningCase struct {
	rule string
	name string
	req  rawRequest
	want expectation
}

// send posts a raw request and returns the status and body.
func send(t *testing.T, srv *httptest.Server, r rawRequest) (int, []byte) {
	t.Helper()
	method := r.method
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
		if r.chunked {
			// A reader of unknown length: the client sends it chunked.
			body = io.MultiReader(body)
		}
	}
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+"/inject", body)
	if err != nil {
		t.Fatal(err)
	}
	switch r.contentType {
	case "":
		req.Header.Set("Content-Type", "application/json")
	case "-":
	default:
		req.Header.Set("Content-Type", r.contentType)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if r.chunked && resp.Header.Get(chunkedHeader) != "true" {
		t.Fatal("the server did not receive the body chunked, without a Content-Length")
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// checkCase sends a case and checks the answer.
func checkCase(t *testing.T, srv *httptest.Server, tc hardeningCase) {
	t.Helper()
	w := tc.want
	if w.status == 0 {
		w.status = http.StatusOK
	}
	status, body := send(t, srv, tc.req)
	if status != w.status {
		t.Fatalf("HTTP status %d, want %d; body %.400q", status, w.status, body)
	}
	if status != http.StatusOK {
		for _, s := range w.bodyHas {
			if !strings.Contains(string(body), s) {
				t.Errorf("body %.300q does not contain %q", body, s)
			}
		}
		return
	}
	var envelope struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		t.Fatalf("the answer is not JSON: %v: %.300q", err, body)
	}
	wantVersion := w.apiVersion
	if wantVersion == "" {
		wantVersion = "admission.k8s.io/v1"
	}
	if envelope.APIVersion != wantVersion || envelope.Kind != "AdmissionReview" {
		t.Errorf("answered as %s %s, want %s AdmissionReview", envelope.APIVersion, envelope.Kind, wantVersion)
	}
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &ar); err != nil || ar.Response == nil {
		t.Fatalf("the answer is not an AdmissionReview with a response: %v: %.300q", err, body)
	}
	resp := ar.Response
	wantUID := w.uid
	if wantUID == "" {
		wantUID = reviewUID
	}
	if string(resp.UID) != wantUID {
		t.Errorf("response uid %q, want %q", resp.UID, wantUID)
	}
	var msg string
	var code int32
	if resp.Result != nil {
		msg, code = resp.Result.Message, resp.Result.Code
	}
	if w.orDenied && !resp.Allowed && code == http.StatusForbidden {
		t.Logf("denied: %s", msg)
		return
	}
	if resp.Allowed != w.allowed {
		t.Fatalf("allowed=%v, want %v (code %d, message %q)", resp.Allowed, w.allowed, code, msg)
	}
	if w.code != 0 && code != w.code {
		t.Errorf("result code %d, want %d (message %q)", code, w.code, msg)
	}
	for _, s := range w.msgHas {
		if !strings.Contains(msg, s) {
			t.Errorf("message %q does not contain %q", msg, s)
		}
	}
	if !resp.Allowed && strings.ContainsAny(msg, "\r\n") {
		t.Errorf("the refusal is not on one line: %q", msg)
	}
	if got := len(resp.Patch) > 0; got != w.patched {
		t.Fatalf("patched=%v, want %v (patch %.300s)", got, w.patched, resp.Patch)
	}
	if resp.Allowed && w.check != nil {
		w.check(t, patched(t, tc.req.body, resp))
	}
}

// Expectations shared by many cases.
var (
	injected = expectation{allowed: true, patched: true, check: func(t *testing.T, pod *corev1.Pod) {
		t.Helper()
		if !hasProxy(pod) {
			t.Error("the patched pod has no istio-proxy")
		}
	}}
	notTouched = func(msg ...string) expectation {
		return expectation{allowed: true, msgHas: msg}
	}
	badRequest = func(msg ...string) expectation {
		return expectation{code: http.StatusBadRequest, msgHas: msg}
	}
	denied = func(msg ...string) expectation {
		return expectation{code: http.StatusForbidden, msgHas: msg}
	}
	refusedBody = func(status int, msg ...string) expectation {
		return expectation{status: status, bodyHas: msg}
	}
)

func TestHardeningRules(t *testing.T) {
	srv := newHardenedServer(t, nil)
	cases := hardeningCases(t)
	for _, tc := range cases {
		t.Run(tc.rule+"/"+tc.name, func(t *testing.T) {
			checkCase(t, srv, tc)
		})
	}
	// Per rule, how many cases this file covers (this test's, the raw
	// HTTP ones and the log ones), and how many of them are skipped as
	// known product bugs.
	type count struct{ cases int }
	counts := map[string]*count{}
	order := []string{"body", "envelope", "scope", "object", "annotations", "result", "logs"}
	for _, r := range order {
		counts[r] = &count{}
	}
	for _, tc := range cases {
		c := counts[tc.rule]
		if c == nil {
			t.Fatalf("case %q has an unknown rule %q", tc.name, tc.rule)
		}
		c.cases++
	}
	counts["body"].cases += len(rawBodyCases)
	counts["logs"].cases += logCases
	var total int
	for _, r := range order {
		c := counts[r]
		total += c.cases
		t.Logf("rule %-11s %3d cases", r, c.cases)
	}
	t.Logf("rules total %3d cases", total)
}

// logCases is the number of cases of TestHardeningLogs, which checks it.
const logCases = 7

// hardeningCases lists the cases, rule by rule.
func hardeningCases(t *testing.T) []hardeningCase {
	base := baseReview(t)
	baseBody := mustMarshal(base)
	// review returns the base review with edit applied.
	review := func(edit func(ar map[string]any)) []byte {
		var ar map[string]any
		if err := json.Unmarshal(baseBody, &ar); err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(ar)
		}
		return mustMarshal(ar)
	}
	post := func(body []byte) rawRequest { return rawRequest{body: body} }
	// replaceOnce edits the serialised review as text, for what a decoded
	// map cannot hold (duplicate keys, invalid UTF-8).
	replaceOnce := func(body []byte, old, new string) []byte {
		if !bytes.Contains(body, []byte(old)) {
			t.Fatalf("%q is not in the review", old)
		}
		return bytes.Replace(body, []byte(old), []byte(new), 1)
	}
	annotated := func(kv ...string) []byte {
		return review(func(ar map[string]any) { withAnnotations(ar, kv...) })
	}
	// annotatedBody puts a placeholder annotation in, for text edits.
	annotatedBody := annotated("example.com/placeholder", "x")

	var cases []hardeningCase
	add := func(rule, name string, req rawRequest, want expectation) {
		cases = append(cases, hardeningCase{rule: rule, name: name, req: req, want: want})
	}

	// --- Body: method, media type, size, strict JSON.
	add("body", "POST application/json is answered", post(baseBody), injected)
	add("body", "charset parameter is accepted", rawRequest{body: baseBody, contentType: "application/json; charset=utf-8"}, injected)
	add("body", "chunked without a length is accepted", rawRequest{body: baseBody, chunked: true}, injected)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead} {
		want := refusedBody(http.StatusMethodNotAllowed, "POST")
		if m == http.MethodHead {
			want.bodyHas = nil // no body in an answer to HEAD
		}
		add("body", m+" is 405", rawRequest{method: m, body: baseBody}, want)
	}
	for name, ct := range map[string]string{
		"application/yaml":            "application/yaml",
		"text/plain":                  "text/plain",
		"application/json-patch+json": "application/json-patch+json",
		"no content type":             "-",
		"a malformed media type":      "application/json; =",
	} {
		add("body", name+" is 415", rawRequest{body: baseBody, contentType: ct}, refusedBody(http.StatusUnsupportedMediaType, "application/json"))
	}
	// Exactly the limit is read and answered: a huge annotation the
	// engine refuses (the result would break the annotation size limit).
	atLimit := review(func(ar map[string]any) { withAnnotations(ar, "example.com/blob", "") })
	atLimit = replaceOnce(atLimit, `"example.com/blob":""`, `"example.com/blob":"`+strings.Repeat("a", guard.MaxBodyBytes-len(atLimit))+`"`)
	if len(atLimit) != guard.MaxBodyBytes {
		t.Fatalf("the at-limit body has %d bytes, want %d", len(atLimit), guard.MaxBodyBytes)
	}
	add("body", "a body of exactly the limit is read and answered", post(atLimit), denied("annotations would total"))
	overLimit := append(bytes.Clone(atLimit[:len(atLimit)-2]), []byte(`a"}}}`)...)
	add("body", "one byte over the limit with a Content-Length is 413", post(overLimit), refusedBody(http.StatusRequestEntityTooLarge, "exceeds"))
	add("body", "over the limit chunked without a length is 413", rawRequest{body: overLimit, chunked: true}, refusedBody(http.StatusRequestEntityTooLarge, "exceeds"))
	add("body", "an empty body is 400", rawRequest{body: []byte{}}, refusedBody(http.StatusBadRequest, "not strict JSON"))
	add("body", "truncated JSON is 400", post(baseBody[:len(baseBody)/2]), refusedBody(http.StatusBadRequest, "not strict JSON"))
	add("body", "a JSON array is 400", post([]byte(`[]`)), refusedBody(http.StatusBadRequest, "JSON object"))
	add("body", "a JSON string is 400", post([]byte(`"AdmissionReview"`)), refusedBody(http.StatusBadRequest, "JSON object"))
	add("body", "invalid UTF-8 in a value is 400", post(replaceOnce(annotatedBody, `"example.com/placeholder":"x"`, "\"example.com/placeholder\":\"\xff\xfe\"")), refusedBody(http.StatusBadRequest, "UTF-8"))
	add("body", "invalid UTF-8 in a key is 400", post(replaceOnce(annotatedBody, `"example.com/placeholder":"x"`, "\"example.com/\xc3\x28\":\"x\"")), refusedBody(http.StatusBadRequest, "UTF-8"))
	add("body", "a lone UTF-16 surrogate escape is 400", post(replaceOnce(annotatedBody, `"example.com/placeholder":"x"`, `"example.com/placeholder":"\ud800"`)), refusedBody(http.StatusBadRequest, "not strict JSON"))
	add("body", "a byte-order mark is 400", post(append([]byte("\xef\xbb\xbf"), baseBody...)), refusedBody(http.StatusBadRequest, "byte-order mark"))
	add("body", "YAML is 400", post([]byte("apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\nrequest:\n  uid: u\n")), refusedBody(http.StatusBadRequest, "not strict JSON"))
	add("body", "trailing garbage is 400", post(append(bytes.Clone(baseBody), "garbage"...)), refusedBody(http.StatusBadRequest, "not strict JSON"))
	add("body", "a second JSON value is 400", post(append(bytes.Clone(baseBody), baseBody...)), refusedBody(http.StatusBadRequest, "more than one JSON value"))
	add("body", "trailing whitespace is accepted", post(append(bytes.Clone(baseBody), " \r\n\t"...)), injected)
	add("body", "a duplicate top-level key is 400", post(replaceOnce(baseBody, `"kind":"AdmissionReview"`, `"kind":"AdmissionReview","kind":"AdmissionReview"`)), refusedBody(http.StatusBadRequest, "duplicate"))
	add("body", "a duplicate request key is 400", post(replaceOnce(baseBody, `"operation":"CREATE"`, `"operation":"UPDATE","operation":"CREATE"`)), refusedBody(http.StatusBadRequest, "duplicate"))
	add("body", "a duplicate annotation, invalid then valid, is 400", post(replaceOnce(annotatedBody, `"example.com/placeholder":"x"`,
		`"traffic.sidecar.istio.io/includeInboundPorts":"80,,x","traffic.sidecar.istio.io/includeInboundPorts":"80"`)), refusedBody(http.StatusBadRequest, "duplicate"))
	add("body", "a duplicate annotation, valid then invalid, is 400", post(replaceOnce(annotatedBody, `"example.com/placeholder":"x"`,
		`"sidecar.istio.io/proxyCPU":"100m","sidecar.istio.io/proxyCPU":"-1"`)), refusedBody(http.StatusBadRequest, "duplicate"))
	add("body", "a duplicate annotation spelled with an escape is 400", post(replaceOnce(annotatedBody, `"example.com/placeholder":"x"`,
		`"sidecar.istio.io/proxyCPU":"-1","sidecar.istio.io/proxyCP\u0055":"100m"`)), refusedBody(http.StatusBadRequest, "duplicate"))
	add("body", "a duplicate uid spelled with an escape is 400", post(replaceOnce(baseBody, `"uid":"`+reviewUID+`"`,
		`"uid":"`+reviewUID+`","\u0075id":"other"`)), refusedBody(http.StatusBadRequest, "duplicate"))
	add("body", "a duplicate key in a container is 400", post(replaceOnce(baseBody, `"name":"reviews",`, `"name":"reviews","name":"istio-proxy",`)), refusedBody(http.StatusBadRequest, "duplicate"))
	add("body", "nesting 20000 deep is 400", post(replaceOnce(baseBody, `"operation":"CREATE"`, `"operation":"CREATE","options":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000))), refusedBody(http.StatusBadRequest, "not strict JSON"))

	// --- Envelope.
	add("envelope", "v1 is answered as v1", post(baseBody), expectation{apiVersion: "admission.k8s.io/v1", allowed: true, patched: true})
	v1beta1 := review(func(ar map[string]any) { ar["apiVersion"] = "admission.k8s.io/v1beta1" })
	add("envelope", "v1beta1 is answered as v1beta1", post(v1beta1), expectation{apiVersion: "admission.k8s.io/v1beta1", allowed: true, patched: true})
	add("envelope", "v1beta1 refusals are answered as v1beta1", post(review(func(ar map[string]any) {
		ar["apiVersion"] = "admission.k8s.io/v1beta1"
		withAnnotations(ar, inject.AnnotationLogLevel, "loud")
	})), expectation{apiVersion: "admission.k8s.io/v1beta1", code: http.StatusForbidden, msgHas: []string{inject.AnnotationLogLevel}})
	for name, v := range map[string]any{
		"apiVersion admission.k8s.io/v2": "admission.k8s.io/v2",
		"apiVersion v1":                  "v1",
		"apiVersion a number":            1,
	} {
		add("envelope", name+" is 400", post(review(func(ar map[string]any) { ar["apiVersion"] = v })), refusedBody(http.StatusBadRequest))
	}
	add("envelope", "apiVersion missing is 400", post(review(func(ar map[string]any) { delete(ar, "apiVersion") })), refusedBody(http.StatusBadRequest, "apiVersion"))
	add("envelope", "kind Pod is 400", post(review(func(ar map[string]any) { ar["kind"] = "Pod" })), refusedBody(http.StatusBadRequest, "kind"))
	add("envelope", "kind missing is 400", post(review(func(ar map[string]any) { delete(ar, "kind") })), refusedBody(http.StatusBadRequest, "kind"))
	add("envelope", "request missing is 400", post(review(func(ar map[string]any) { delete(ar, "request") })), refusedBody(http.StatusBadRequest, "no request"))
	add("envelope", "request null is 400", post(review(func(ar map[string]any) { ar["request"] = nil })), refusedBody(http.StatusBadRequest, "no request"))
	add("envelope", "request a string is 400", post(review(func(ar map[string]any) { ar["request"] = "pod" })), refusedBody(http.StatusBadRequest, "not an AdmissionReview"))
	add("envelope", "a review with a response instead of a request is 400", post(review(func(ar map[string]any) {
		ar["response"] = map[string]any{"uid": reviewUID, "allowed": true}
		delete(ar, "request")
	})), refusedBody(http.StatusBadRequest, "no request"))
	add("envelope", "uid missing is 400", post(review(func(ar map[string]any) { delete(reqOf(ar), "uid") })), refusedBody(http.StatusBadRequest, "no uid"))
	add("envelope", "uid empty is 400", post(review(func(ar map[string]any) { reqOf(ar)["uid"] = "" })), refusedBody(http.StatusBadRequest, "no uid"))
	add("envelope", "uid a number is 400", post(review(func(ar map[string]any) { reqOf(ar)["uid"] = 7 })), refusedBody(http.StatusBadRequest, "not an AdmissionReview"))
	add("envelope", "object missing on CREATE is 400", post(review(func(ar map[string]any) { delete(reqOf(ar), "object") })), refusedBody(http.StatusBadRequest, "no object"))
	add("envelope", "object null on CREATE is 400", post(review(func(ar map[string]any) { reqOf(ar)["object"] = nil })), refusedBody(http.StatusBadRequest, "no object"))
	add("envelope", "another uid is answered with that uid", post(review(func(ar map[string]any) { reqOf(ar)["uid"] = "another-uid" })),
		expectation{uid: "another-uid", allowed: true, patched: true})

	// --- Scope: never block or rewrite what we must not touch.
	scope := func(name string, edit func(req map[string]any)) {
		add("scope", name+" is allowed without a patch", post(review(func(ar map[string]any) { edit(reqOf(ar)) })), notTouched("is not injected"))
	}
	gvk := func(group, version, kind string) map[string]any {
		return map[string]any{"group": group, "version": version, "kind": kind}
	}
	gvr := func(group, version, resource string) map[string]any {
		return map[string]any{"group": group, "version": version, "resource": resource}
	}
	scope("UPDATE of a pod", func(req map[string]any) {
		req["operation"] = "UPDATE"
		req["oldObject"] = req["object"]
	})
	scope("DELETE of a pod (no object)", func(req map[string]any) {
		req["operation"] = "DELETE"
		req["oldObject"] = req["object"]
		delete(req, "object")
	})
	scope("CONNECT of pods/exec", func(req map[string]any) {
		req["operation"] = "CONNECT"
		req["subResource"] = "exec"
		req["kind"] = gvk("", "v1", "PodExecOptions")
		req["object"] = map[string]any{"apiVersion": "v1", "kind": "PodExecOptions", "command": []any{"sh"}, "container": "reviews"}
	})
	scope("CONNECT of pods/portforward", func(req map[string]any) {
		req["operation"] = "CONNECT"
		req["subResource"] = "portforward"
		req["kind"] = gvk("", "v1", "PodPortForwardOptions")
		req["object"] = map[string]any{"apiVersion": "v1", "kind": "PodPortForwardOptions", "ports": []any{9080}}
	})
	scope("UPDATE of pods/ephemeralcontainers", func(req map[string]any) {
		req["operation"] = "UPDATE"
		req["subResource"] = "ephemeralcontainers"
		req["oldObject"] = req["object"]
	})
	scope("UPDATE of pods/status", func(req map[string]any) {
		req["operation"] = "UPDATE"
		req["subResource"] = "status"
		req["oldObject"] = req["object"]
	})
	scope("CREATE of pods/binding", func(req map[string]any) {
		req["subResource"] = "binding"
		req["kind"] = gvk("", "v1", "Binding")
		req["object"] = map[string]any{"apiVersion": "v1", "kind": "Binding", "metadata": map[string]any{"name": "p"}, "target": map[string]any{"kind": "Node", "name": "n"}}
	})
	scope("CREATE of pods/eviction", func(req map[string]any) {
		req["subResource"] = "eviction"
		req["kind"] = gvk("policy", "v1", "Eviction")
		req["object"] = map[string]any{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": map[string]any{"name": "p"}}
	})
	scope("CREATE of pods/ephemeralcontainers", func(req map[string]any) {
		req["subResource"] = "ephemeralcontainers"
	})
	scope("CREATE of a service", func(req map[string]any) {
		req["kind"], req["resource"] = gvk("", "v1", "Service"), gvr("", "v1", "services")
		req["requestKind"], req["requestResource"] = req["kind"], req["resource"]
		req["object"] = map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "reviews"},
			"spec": map[string]any{"ports": []any{map[string]any{"port": 9080}}}}
	})
	scope("CREATE of a configmap", func(req map[string]any) {
		req["kind"], req["resource"] = gvk("", "v1", "ConfigMap"), gvr("", "v1", "configmaps")
		req["object"] = map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "c"}, "data": map[string]any{"a": "b"}}
	})
	scope("CREATE of a deployment (its pod template is not injected)", func(req map[string]any) {
		pod := req["object"]
		req["kind"], req["resource"] = gvk("apps", "v1", "Deployment"), gvr("apps", "v1", "deployments")
		req["object"] = map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "reviews"},
			"spec": map[string]any{"template": map[string]any{"metadata": obj(pod)["metadata"], "spec": obj(pod)["spec"]}}}
	})
	scope("CREATE of configmaps whose kind says Pod", func(req map[string]any) {
		req["resource"] = gvr("", "v1", "configmaps")
	})
	add("scope", "UPDATE in v1beta1 is allowed in v1beta1 without a patch", post(review(func(ar map[string]any) {
		ar["apiVersion"] = "admission.k8s.io/v1beta1"
		reqOf(ar)["operation"] = "UPDATE"
	})), expectation{apiVersion: "admission.k8s.io/v1beta1", allowed: true, msgHas: []string{"UPDATE of pods is not injected"}})
	add("scope", "CREATE in an unlabelled namespace is allowed without a patch", post(review(func(ar map[string]any) {
		reqOf(ar)["namespace"] = "plain"
	})), notTouched("not labelled"))
	add("scope", "CREATE in kube-system is allowed without a patch", post(review(func(ar map[string]any) {
		reqOf(ar)["namespace"] = "kube-system"
	})), notTouched("never injected"))
	add("scope", "CREATE in the injector's own namespace is allowed without a patch", post(review(func(ar map[string]any) {
		reqOf(ar)["namespace"] = "remora-system"
	})), notTouched("never injected"))
	add("scope", "a hostNetwork pod is allowed without a patch", post(review(func(ar map[string]any) {
		specOf(ar)["hostNetwork"] = true
	})), notTouched("hostNetwork"))

	// --- The object: a Pod, with fields of the right JSON types.
	add("object", "request.kind Deployment on resource pods is refused", post(review(func(ar map[string]any) {
		reqOf(ar)["kind"] = gvk("apps", "v1", "Deployment")
	})), badRequest("Deployment"))
	add("object", "object kind Service is refused, naming the kind", post(review(func(ar map[string]any) {
		podOf(ar)["kind"] = "Service"
	})), badRequest("Service"))
	add("object", "object apiVersion v2 is refused", post(review(func(ar map[string]any) {
		podOf(ar)["apiVersion"] = "v2"
	})), badRequest("v2"))
	add("object", "object a string is refused", post(review(func(ar map[string]any) {
		reqOf(ar)["object"] = "pod"
	})), badRequest("decoding the pod"))
	add("object", "metadata a string is refused, naming it", post(review(func(ar map[string]any) {
		podOf(ar)["metadata"] = "m"
	})), badRequest("metadata"))
	add("object", "spec a string is refused, naming it", post(review(func(ar map[string]any) {
		podOf(ar)["spec"] = "not a pod spec"
	})), badRequest("spec"))
	add("object", "containers an object is refused, naming it", post(review(func(ar map[string]any) {
		specOf(ar)["containers"] = map[string]any{}
	})), badRequest("containers"))
	add("object", "volumes an object is refused, naming it", post(review(func(ar map[string]any) {
		specOf(ar)["volumes"] = map[string]any{"tmp": map[string]any{}}
	})), badRequest("volumes"))
	add("object", "an annotation value a number is refused, naming annotations", post(review(func(ar map[string]any) {
		metaOf(ar)["annotations"] = map[string]any{inject.AnnotationProxyCPU: 100}
	})), badRequest("annotations"))
	add("object", "an annotation value a boolean is refused, naming annotations", post(review(func(ar map[string]any) {
		metaOf(ar)["annotations"] = map[string]any{inject.AnnotationNativeSidecar: true}
	})), badRequest("annotations"))
	add("object", "labels a list is refused, naming labels", post(review(func(ar map[string]any) {
		metaOf(ar)["labels"] = []any{"app"}
	})), badRequest("labels"))
	add("object", "containerPort a string is refused, naming it", post(review(func(ar map[string]any) {
		obj(firstContainer(ar)["ports"].([]any)[0])["containerPort"] = "9080"
	})), badRequest("containerPort"))
	add("object", "an env value a number is refused, naming env", post(review(func(ar map[string]any) {
		obj(firstContainer(ar)["env"].([]any)[0])["value"] = 5
	})), badRequest("env"))
	add("object", "a container a string is refused, naming containers", post(review(func(ar map[string]any) {
		specOf(ar)["containers"] = []any{"reviews"}
	})), badRequest("containers"))
	for name, v := range map[string]any{"missing": "-", "null": nil, "empty": []any{}} {
		add("object", "containers "+name+" is allowed unchanged with the reason", post(review(func(ar map[string]any) {
			if v == "-" {
				delete(specOf(ar), "containers")
				return
			}
			specOf(ar)["containers"] = v
		})), notTouched("no containers"))
	}
	add("object", "spec missing is allowed unchanged with the reason", post(review(func(ar map[string]any) {
		delete(podOf(ar), "spec")
	})), notTouched("no containers"))

	// --- Annotations: each class, refused with one line naming each bad
	// annotation, its value and what is allowed; a valid value of each
	// class is injected.
	bad := func(name string, kv []string, msg ...string) {
		add("annotations", name, post(annotated(kv...)), denied(append(msg, kv[len(kv)-2], fmt.Sprintf("%q", kv[len(kv)-1]))...))
	}
	good := func(name string, kv ...string) {
		add("annotations", name+" is injected", post(annotated(kv...)), injected)
	}
	// Envoy log levels.
	bad("logLevel verbose", []string{inject.AnnotationLogLevel, "verbose"}, "trace, debug, info")
	bad("logLevel in capitals", []string{inject.AnnotationLogLevel, "DEBUG"}, "trace, debug, info")
	bad("logLevel empty", []string{inject.AnnotationLogLevel, ""}, "trace, debug, info")
	good("logLevel warning", inject.AnnotationLogLevel, "warning")
	good("logLevel warn", inject.AnnotationLogLevel, "warn")
	// Component log levels.
	bad("componentLogLevel without a level", []string{inject.AnnotationComponentLogLevel, "misc"}, "component:level")
	bad("componentLogLevel with a bad level", []string{inject.AnnotationComponentLogLevel, "misc:verbose"}, "component:level")
	bad("componentLogLevel with an empty entry", []string{inject.AnnotationComponentLogLevel, "misc:debug,"}, "component:level")
	bad("componentLogLevel without a component", []string{inject.AnnotationComponentLogLevel, ":debug"}, "component:level")
	good("componentLogLevel misc:debug,upstream:warning", inject.AnnotationComponentLogLevel, "misc:debug,upstream:warning")
	bad("agentLogLevel loud", []string{inject.AnnotationAgentLogLevel, "loud"}, "scope:level")
	good("agentLogLevel default:debug", inject.AnnotationAgentLogLevel, "default:debug")
	// Booleans.
	bad("nativeSidecar maybe", []string{inject.AnnotationNativeSidecar, "maybe"}, "true or false")
	bad("nativeSidecar True", []string{inject.AnnotationNativeSidecar, "True"}, "true or false")
	bad("rewriteAppHTTPProbers yes", []string{inject.AnnotationRewriteProbes, "yes"}, "true or false")
	bad("merge-metrics on", []string{inject.AnnotationMergeMetrics, "on"}, "true or false")
	bad("sidecar.istio.io/inject maybe", []string{inject.AnnotationInject, "maybe"}, "true or false")
	good("nativeSidecar true", inject.AnnotationNativeSidecar, "true")
	good("nativeSidecar false", inject.AnnotationNativeSidecar, "false")
	// Quantities.
	bad("proxyCPU lots", []string{inject.AnnotationProxyCPU, "lots"}, "quantity")
	bad("proxyMemory negative", []string{inject.AnnotationProxyMemory, "-1Gi"}, "negative")
	bad("proxyCPULimit negative", []string{inject.AnnotationProxyCPULimit, "-100m"}, "negative")
	bad("proxyMemory 1.5.5Gi", []string{inject.AnnotationProxyMemory, "1.5.5Gi"}, "quantity")
	bad("proxyCPULimit below proxyCPU", []string{inject.AnnotationProxyCPU, "200m", inject.AnnotationProxyCPULimit, "100m"}, "must not be below")
	bad("proxyMemoryLimit below proxyMemory", []string{inject.AnnotationProxyMemory, "1Gi", inject.AnnotationProxyMemoryLimit, "512Mi"}, "must not be below")
	good("proxyCPU 100m with limit 1", inject.AnnotationProxyCPU, "100m", inject.AnnotationProxyCPULimit, "1")
	good("proxyMemory equal to its limit", inject.AnnotationProxyMemory, "256Mi", inject.AnnotationProxyMemoryLimit, "256Mi")
	// Ports.
	bad("includeInboundPorts 80,,x", []string{inject.AnnotationIncludeInboundPorts, "80,,x"}, "ports 1-65535")
	bad("excludeInboundPorts 0", []string{inject.AnnotationExcludeInboundPorts, "0"}, "ports 1-65535")
	bad("excludeOutboundPorts 65536", []string{inject.AnnotationExcludeOutboundPorts, "65536"}, "ports 1-65535")
	bad("includeOutboundPorts * (no wildcard here)", []string{inject.AnnotationIncludeOutboundPorts, "*"}, "not allowed")
	bad("excludeInboundPorts with a trailing comma", []string{inject.AnnotationExcludeInboundPorts, "80,"}, "empty entry")
	bad("status port abc", []string{inject.AnnotationStatusPort, "abc"}, "whole number")
	bad("status port 70000", []string{inject.AnnotationStatusPort, "70000"}, "whole number")
	bad("readiness periodSeconds 0", []string{inject.AnnotationReadinessPeriod, "0"}, "whole number")
	good("includeInboundPorts * with spaces in a list elsewhere", inject.AnnotationIncludeInboundPorts, "*", inject.AnnotationExcludeInboundPorts, " 8080 , 9090 ")
	// CIDRs and bare IPs.
	bad("includeOutboundIPRanges /33", []string{inject.AnnotationIncludeOutboundCIDRs, "10.0.0.0/33"}, "CIDR")
	bad("excludeOutboundIPRanges * (no wildcard here)", []string{inject.AnnotationExcludeOutboundCIDRs, "*"}, "not allowed")
	bad("excludeOutboundIPRanges with a zone", []string{inject.AnnotationExcludeOutboundCIDRs, "fe80::1%eth0"}, "CIDR")
	bad("includeOutboundIPRanges 1.2.3", []string{inject.AnnotationIncludeOutboundCIDRs, "1.2.3"}, "CIDR")
	bad("includeOutboundIPRanges with an empty entry", []string{inject.AnnotationIncludeOutboundCIDRs, "10.0.0.1,,10.0.0.2"}, "empty entry")
	good("bare IPv4 and IPv6 addresses", inject.AnnotationExcludeOutboundCIDRs, "10.96.0.1,::1")
	good("includeOutboundIPRanges * and IPv6 CIDRs", inject.AnnotationIncludeOutboundCIDRs, "*", inject.AnnotationExcludeOutboundCIDRs, "fd00::/8,10.0.0.0/8")
	// Interface names.
	bad("excludeInterfaces too long", []string{inject.AnnotationExcludeInterfaces, "eth0,this-name-is-too-long"}, "interface names")
	bad("excludeInterfaces with a space", []string{inject.AnnotationExcludeInterfaces, "eth 0"}, "interface names")
	bad("reroute-virtual-interfaces with a slash", []string{inject.AnnotationRerouteVirtualIfaces, "a/b"}, "interface names")
	bad("kubevirtInterfaces with an empty entry", []string{inject.AnnotationKubevirtInterfaces, "net1,,net2"}, "interface names")
	good("excludeInterfaces eth1,veth@if2", inject.AnnotationExcludeInterfaces, "eth1,veth@if2")
	// JSON and YAML structures.
	bad("userVolume not JSON", []string{inject.AnnotationUserVolume, "{"}, "volume source")
	bad("userVolume with an unknown field", []string{inject.AnnotationUserVolume, `{"data":{"emptyDir":{},"bogus":1}}`}, "volume source")
	bad("userVolume with a mistyped field", []string{inject.AnnotationUserVolume, `{"data":{"emptyDir":"yes"}}`}, "volume source")
	bad("userVolume with an invalid name", []string{inject.AnnotationUserVolume, `{"Data_1":{"emptyDir":{}}}`}, "DNS-1123")
	bad("userVolumeMount with an unknown field", []string{inject.AnnotationUserVolumeMount, `{"data":{"mountPath":"/d","bogus":true}}`}, "mount")
	bad("userVolumeMount with a mistyped field", []string{inject.AnnotationUserVolumeMount, `{"data":{"mountPath":5}}`}, "mount")
	bad("userVolumeMount with a relative path", []string{inject.AnnotationUserVolumeMount, `{"data":{"mountPath":"d"}}`}, "absolute mountPath")
	bad("proxy.istio.io/config with an unknown field", []string{inject.AnnotationProxyConfig, `{"bogusField":1}`}, "known fields")
	bad("proxy.istio.io/config with a mistyped field", []string{inject.AnnotationProxyConfig, `{"concurrency":"two"}`}, "known fields")
	bad("proxy.istio.io/config YAML with a mistyped field", []string{inject.AnnotationProxyConfig, "concurrency: two\n"}, "known fields")
	bad("proxy.istio.io/config not YAML", []string{inject.AnnotationProxyConfig, "{: ["}, "known fields")
	// A YAML parser error spans lines; the refusal must not.
	bad("userVolume YAML with a duplicate key", []string{inject.AnnotationUserVolume, "data: {emptyDir: {}}\ndata: {emptyDir: {}}"}, "volume source")
	bad("userVolumeMount YAML with a duplicate key", []string{inject.AnnotationUserVolumeMount, "data: {mountPath: /a}\ndata: {mountPath: /b}"}, "mount")
	bad("proxy.istio.io/config YAML with a duplicate key", []string{inject.AnnotationProxyConfig, "concurrency: 1\nconcurrency: 2"}, "known fields")
	good("userVolume and userVolumeMount", inject.AnnotationUserVolume, `{"data":{"emptyDir":{}}}`, inject.AnnotationUserVolumeMount, `{"data":{"mountPath":"/data","readOnly":true}}`)
	good("proxy.istio.io/config in YAML", inject.AnnotationProxyConfig, "concurrency: 2\nholdApplicationUntilProxyStarts: true\n")
	// Status port collisions.
	bad("status port on Envoy's 15090", []string{inject.AnnotationStatusPort, "15090"}, "proxy's own ports")
	bad("status port on Envoy's 15001", []string{inject.AnnotationStatusPort, "15001"}, "proxy's own ports")
	bad("status port on the app's 9080", []string{inject.AnnotationStatusPort, "9080"}, `container "reviews"`)
	good("status port 15030", inject.AnnotationStatusPort, "15030")
	// Others the engine reads.
	bad("interceptionMode BOGUS", []string{inject.AnnotationInterceptionMode, "BOGUS"}, "REDIRECT, TPROXY, NONE")
	bad("bootstrapOverride not a name", []string{inject.AnnotationBootstrapOverride, "Not_A_Name"}, "ConfigMap")
	bad("templates unknown", []string{inject.AnnotationTemplates, "nonexistent"}, "does not exist")
	bad("proxyImage with a space", []string{inject.AnnotationProxyImage, "proxy image"}, "without spaces")
	// Every bad one is named, in one message on one line.
	add("annotations", "three bad annotations are all named in one line", post(annotated(
		inject.AnnotationLogLevel, "verbose",
		inject.AnnotationNativeSidecar, "maybe",
		inject.AnnotationIncludeInboundPorts, "80,,x",
	)), denied(inject.AnnotationLogLevel, `"verbose"`, inject.AnnotationNativeSidecar, `"maybe"`, inject.AnnotationIncludeInboundPorts, `"80,,x"`, "; "))
	add("annotations", "a value with a newline stays on one line", post(annotated(inject.AnnotationLogLevel, "debug\nerror")),
		denied(inject.AnnotationLogLevel, `"debug\nerror"`))

	// --- The result passes the API server's validation, or is refused
	// with our own message.
	withContainer := func(list string, c map[string]any) []byte {
		return review(func(ar map[string]any) {
			l, _ := specOf(ar)[list].([]any)
			specOf(ar)[list] = append(l, c)
		})
	}
	add("result", "an init container named istio-proxy is refused", post(withContainer("initContainers", map[string]any{"name": "istio-proxy", "image": "x"})),
		denied(`two containers named "istio-proxy"`))
	add("result", "a container named istio-init is refused", post(withContainer("containers", map[string]any{"name": "istio-init", "image": "x"})),
		denied(`two containers named "istio-init"`))
	add("result", "the pod's own duplicate container names are refused", post(withContainer("containers", map[string]any{"name": "reviews", "image": "x"})),
		denied(`two containers named "reviews"`))
	add("result", "an init container sharing an app container's name is refused", post(withContainer("initContainers", map[string]any{"name": "reviews", "image": "x"})),
		denied(`two containers named "reviews"`))
	add("result", "a volume with an injected volume's name is refused", post(review(func(ar map[string]any) {
		specOf(ar)["volumes"] = append(specOf(ar)["volumes"].([]any), map[string]any{"name": "istio-envoy", "emptyDir": map[string]any{}})
	})), denied(`volume "istio-envoy"`))
	add("result", "the pod's own duplicate volume names are refused", post(review(func(ar map[string]any) {
		specOf(ar)["volumes"] = append(specOf(ar)["volumes"].([]any), map[string]any{"name": "tmp", "emptyDir": map[string]any{}})
	})), denied(`two volumes named "tmp"`))
	add("result", "a userVolume with the pod's volume name is refused", post(annotated(inject.AnnotationUserVolume, `{"tmp":{"emptyDir":{}}}`)),
		denied(`"tmp"`))
	add("result", "a userVolumeMount without its volume is refused", post(annotated(inject.AnnotationUserVolumeMount, `{"missing":{"mountPath":"/m"}}`)),
		denied(`mounts volume "missing"`, inject.AnnotationUserVolume))
	add("result", "the pod's own mount without a volume is refused", post(review(func(ar map[string]any) {
		c := firstContainer(ar)
		c["volumeMounts"] = append(c["volumeMounts"].([]any), map[string]any{"name": "nowhere", "mountPath": "/n"})
	})), denied(`mounts volume "nowhere"`))
	long := strings.Repeat("r", 64)
	add("result", "a label value over 63 characters is refused", post(review(func(ar map[string]any) {
		obj(metaOf(ar)["labels"])["version"] = long
	})), denied("label", "at most 63"))
	add("result", "annotations over 256 KiB after injection are refused", post(review(func(ar map[string]any) {
		// Just under the limit before injection; the injected
		// annotations push it over.
		const key = "example.com/blob"
		withAnnotations(ar, key, strings.Repeat("b", 256<<10-len(key)-16))
	})), denied("annotations would total", "262144"))
	add("result", "a pod whose only container is istio-proxy keeps a container, or is refused", post(review(func(ar map[string]any) {
		withAnnotations(ar, inject.AnnotationNativeSidecar, "true")
		specOf(ar)["containers"] = []any{map[string]any{"name": "istio-proxy", "image": "auto"}}
	})), expectation{allowed: true, patched: true, orDenied: true, check: func(t *testing.T, pod *corev1.Pod) {
		t.Helper()
		if len(pod.Spec.Containers) == 0 {
			t.Errorf("the injected pod has no containers (init containers %v): the API server refuses it (spec.containers: Required value)",
				containerNames(pod.Spec.InitContainers))
		}
	}})
	add("result", "a userVolume the API server would refuse is refused", post(annotated(
		inject.AnnotationUserVolume, `{"cfg":{"configMap":{"name":"c","items":[{"key":"k","path":"/abs"}]}}}`,
		inject.AnnotationUserVolumeMount, `{"cfg":{"mountPath":"/cfg"}}`,
	)), denied(inject.AnnotationUserVolume))
	add("result", "a user container named istio-proxy is merged, not refused", post(withContainer("containers", map[string]any{
		"name": "istio-proxy", "image": "example.com/custom-proxy:1",
		"env": []any{map[string]any{"name": "CUSTOM", "value": "1"}},
	})), expectation{allowed: true, patched: true, check: func(t *testing.T, pod *corev1.Pod) {
		t.Helper()
		var proxies []corev1.Container
		for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
			if c.Name == inject.ProxyContainerName {
				proxies = append(proxies, c)
			}
		}
		if len(proxies) != 1 {
			t.Fatalf("%d istio-proxy containers, want one merged", len(proxies))
		}
		p := proxies[0]
		if p.Image != "example.com/custom-proxy:1" {
			t.Errorf("image %q: the user's image did not win", p.Image)
		}
		if !slices.ContainsFunc(p.Env, func(e corev1.EnvVar) bool { return e.Name == "CUSTOM" }) ||
			!slices.ContainsFunc(p.Env, func(e corev1.EnvVar) bool { return e.Name == "ISTIO_META_WORKLOAD_NAME" }) {
			t.Errorf("env %v: want the user's and the injected variables merged", p.Env)
		}
	}})
	add("result", "a user init container named istio-init is merged, not refused", post(withContainer("initContainers", map[string]any{
		"name": "istio-init", "image": "example.com/custom-init:1",
	})), expectation{allowed: true, patched: true, check: func(t *testing.T, pod *corev1.Pod) {
		t.Helper()
		n := 0
		for _, c := range pod.Spec.InitContainers {
			if c.Name == inject.InitContainerName {
				n++
				if c.Image != "example.com/custom-init:1" {
					t.Errorf("image %q: the user's image did not win", c.Image)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d istio-init containers, want one merged", n)
		}
	}})
	return cases
}

// rawBodyCases are sent over a raw TCP connection, where the client
// controls exactly what is sent and when.
var rawBodyCases = []struct {
	name string
	// head is the request line and headers, without the final CRLF.
	head string
	// body is written after the head; it may be shorter than announced.
	body   string
	status int
	// within bounds how long the answer may take.
	within time.Duration
}{
	{
		name:   "a Content-Length over the limit is 413 before the body is sent",
		head:   fmt.Sprintf("POST /inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d", guard.MaxBodyBytes+1),
		status: http.StatusRequestEntityTooLarge, within: 2 * time.Second,
	},
	{
		name:   "a huge Content-Length is 413 before the body is sent",
		head:   "POST /inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9223372036854775807",
		status: http.StatusRequestEntityTooLarge, within: 2 * time.Second,
	},
	{
		name:   "a wrong method is 405 before the body is sent",
		head:   "PUT /inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000",
		status: http.StatusMethodNotAllowed, within: 2 * time.Second,
	},
	{
		name:   "a wrong media type is 415 before the body is sent",
		head:   "POST /inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/yaml\r\nContent-Length: 1000",
		status: http.StatusUnsupportedMediaType, within: 2 * time.Second,
	},
	{
		name:   "a body shorter than its Content-Length, then EOF, is 400",
		head:   "POST /inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000",
		body:   `{"apiVersion":"admission.k8s.io/v1"`,
		status: http.StatusBadRequest, within: 2 * time.Second,
	},
	{
		name:   "a malformed chunk is 400",
		head:   "POST /inject HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked",
		body:   "zz\r\n{}\r\n0\r\n\r\n",
		status: http.StatusBadRequest, within: 2 * time.Second,
	},
}

// TestHardeningRawBody sends requests byte by byte where the HTTP client
// would not: a Content-Length beyond the limit with no body (the guard
// answers at once, without waiting for or reading the rest), bodies that
// end early, malformed chunks.
func TestHardeningRawBody(t *testing.T) {
	srv := newHardenedServer(t, nil)
	addr := srv.Listener.Addr().String()
	for _, tc := range rawBodyCases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			_ = conn.SetDeadline(time.Now().Add(tc.within + time.Second))
			start := time.Now()
			if _, err := io.WriteString(conn, tc.head+"\r\n\r\n"+tc.body); err != nil {
				t.Fatal(err)
			}
			if tc.body != "" && !strings.Contains(tc.head, "chunked") {
				// End the short body: the server sees EOF.
				_ = conn.(*net.TCPConn).CloseWrite()
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			_ = resp.Body.Close()
			took := time.Since(start)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if took > tc.within {
				t.Errorf("answered after %v, want within %v", took, tc.within)
			}
		})
	}
}

// TestHardeningLogs captures the handler's log while a pod whose env and
// args carry a secret-looking value is injected, denied, refused, skipped
// and found malformed, and checks that the line has the request's identity
// (uid, namespace, name or generateName), result and reason, at the level
// expected, but never the env value or the pod spec. It logs through
// controller-runtime's zap logger at info (injector serve's default) and at
// debug (--zap-log-level=debug): nothing more leaks at debug.
func TestHardeningLogs(t *testing.T) {
	const secret = "s3cr3t-Hunter2-do-not-log"
	h, err := NewHandler(Options{Config: classic, Namespaces: hardenedNamespaces, OwnNamespace: "remora-system"})
	if err != nil {
		t.Fatal(err)
	}
	serveLogged := func(opts ...zap.Opts) (*httptest.Server, *bytes.Buffer) {
		var buf bytes.Buffer
		logger := zap.New(append([]zap.Opts{zap.WriteTo(&buf), zap.JSONEncoder()}, opts...)...)
		// The webhook's log constructor (requestLogger), over our logger: it
		// adds the uid (requestID), namespace, name and user, as in
		// production.
		wh := &admission.Webhook{Handler: h, LogConstructor: func(_ logr.Logger, req *admission.Request) logr.Logger {
			return requestLogger(logger, req)
		}}
		srv := httptest.NewServer(guard.New(wh, guard.Options{Log: logger.WithName("guard")}))
		t.Cleanup(srv.Close)
		return srv, &buf
	}
	infoSrv, infoLog := serveLogged()                       // production mode: info
	debugSrv, debugLog := serveLogged(zap.UseDevMode(true)) // debug, V(1)

	baseBody := mustMarshal(baseReview(t))
	review := func(uid string, edit func(ar map[string]any)) []byte {
		var ar map[string]any
		if err := json.Unmarshal(baseBody, &ar); err != nil {
			t.Fatal(err)
		}
		reqOf(ar)["uid"] = uid
		c := firstContainer(ar)
		c["env"] = append(c["env"].([]any), map[string]any{"name": "DB_PASSWORD", "value": secret})
		c["args"] = []any{"--password=" + secret}
		if edit != nil {
			edit(ar)
		}
		return mustMarshal(ar)
	}
	tests := []struct {
		name  string
		body  []byte
		level string   // the line's level: info, debug (not logged at info) or error
		has   []string // substrings of the line, besides the uid
	}{
		{"injected, with generateName", review("uid-injected", nil), "info",
			[]string{`"msg":"Injected pod"`, `"result":"injected"`, `"reason":"injected"`, `"namespace":"default"`, `"generateName":"reviews-v1-5b5d6494f4-"`}},
		{"injected, with a name", review("uid-named", func(ar map[string]any) {
			reqOf(ar)["name"] = "reviews-named"
			metaOf(ar)["name"] = "reviews-named"
		}), "info", []string{`"msg":"Injected pod"`, `"result":"injected"`, `"name":"reviews-named"`, `"namespace":"default"`}},
		{"denied for an annotation", review("uid-denied", func(ar map[string]any) { withAnnotations(ar, inject.AnnotationLogLevel, "verbose") }), "info",
			[]string{`"msg":"Denied pod"`, `"result":"denied"`, `"reason":"invalid-annotations"`, inject.AnnotationLogLevel, `"generateName":"reviews-v1-5b5d6494f4-"`}},
		{"denied for the result (PodError)", review("uid-poderror", func(ar map[string]any) {
			specOf(ar)["volumes"] = append(specOf(ar)["volumes"].([]any), map[string]any{"name": "tmp", "emptyDir": map[string]any{}})
		}), "info", []string{`"msg":"Denied pod"`, `"result":"denied"`, `two volumes named \"tmp\"`, `"namespace":"default"`}},
		{"skipped: no containers", review("uid-nocontainers", func(ar map[string]any) {
			specOf(ar)["initContainers"] = specOf(ar)["containers"] // the secret stays in the pod
			delete(specOf(ar), "containers")
		}), "debug", []string{`"msg":"Skipped"`, `"result":"skipped"`, `"reason":"no-containers"`, "no containers", `"generateName":"reviews-v1-5b5d6494f4-"`}},
		{"skipped: not a pod creation", review("uid-update", func(ar map[string]any) { reqOf(ar)["operation"] = "UPDATE" }), "debug",
			[]string{`"msg":"Skipped"`, `"result":"skipped"`, `"reason":"not-pod-create"`, `"namespace":"default"`}},
		{"malformed pod", review("uid-malformed", func(ar map[string]any) {
			obj(firstContainer(ar)["ports"].([]any)[0])["containerPort"] = secret
		}), "error", []string{`"msg":"Admission failed"`, `"result":"error"`, `"reason":"malformed-request"`, "containerPort"}},
	}
	if len(tests) != logCases {
		t.Fatalf("logCases is %d, there are %d log cases", logCases, len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ar struct {
				Request struct {
					UID string `json:"uid"`
				} `json:"request"`
			}
			if err := json.Unmarshal(tt.body, &ar); err != nil {
				t.Fatal(err)
			}
			for _, s := range []struct {
				name string
				srv  *httptest.Server
				log  *bytes.Buffer
			}{{"info", infoSrv, infoLog}, {"debug", debugSrv, debugLog}} {
				s.log.Reset()
				resp, err := s.srv.Client().Post(s.srv.URL+"/inject", "application/json", bytes.NewReader(tt.body))
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
				out := s.log.String()
				for _, leak := range []string{secret, "DB_PASSWORD", "registry.istio.io/release/examples-bookinfo-reviews-v1", `"containers"`, "/health", "LOG_DIR"} {
					if strings.Contains(out, leak) {
						t.Errorf("at %s the log contains %q, which is part of the pod spec:\n%s", s.name, leak, out)
					}
				}
				if s.name == "info" && tt.level == "debug" {
					if out != "" {
						t.Errorf("at info a %s line was logged: %s", tt.level, out)
					}
					continue
				}
				var line string
				for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
					if strings.Contains(l, `"requestID":"`+ar.Request.UID+`"`) {
						line = l
					}
				}
				if line == "" {
					t.Fatalf("at %s no line has the uid %s:\n%s", s.name, ar.Request.UID, out)
				}
				for _, want := range append([]string{`"level":"` + tt.level + `"`}, tt.has...) {
					if !strings.Contains(line, want) {
						t.Errorf("at %s the line does not contain %s:\n%s", s.name, want, line)
					}
				}
				if s.name == "debug" {
					t.Logf("logged: %s", line)
				}
			}
		})
	}
}
