package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// reviewFile is a real AdmissionReview: a Bookinfo reviews-v1 pod created by
// its ReplicaSet in namespace "default", as the API server sends it (the
// repository's one copy, testenv.ReviewFile).
var reviewFile = filepath.Join("..", "..", testenv.ReviewFile)

// loadReview reads the real AdmissionReview and applies edit to its request.
func loadReview(t testing.TB, edit func(req *admissionv1.AdmissionRequest, pod map[string]any)) []byte {
	t.Helper()
	b, err := os.ReadFile(reviewFile)
	if err != nil {
		t.Fatal(err)
	}
	if edit == nil {
		return b
	}
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &ar); err != nil {
		t.Fatal(err)
	}
	var pod map[string]any
	if err := json.Unmarshal(ar.Request.Object.Raw, &pod); err != nil {
		t.Fatal(err)
	}
	edit(ar.Request, pod)
	if ar.Request.Object.Raw != nil { // an edit may drop the object
		if ar.Request.Object.Raw, err = json.Marshal(pod); err != nil {
			t.Fatal(err)
		}
	}
	if b, err = json.Marshal(ar); err != nil {
		t.Fatal(err)
	}
	return b
}

// annotate sets a pod annotation in the decoded pod JSON.
func annotate(pod map[string]any, key, value string) {
	meta := pod["metadata"].(map[string]any)
	ann, _ := meta["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
		meta["annotations"] = ann
	}
	ann[key] = value
}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// newTestWebhook serves a Handler over the given namespaces through
// controller-runtime's admission.Webhook, as the webhook server does.
// classicConfig is the default configuration on an API server without
// native sidecars (auto means classic there), which the tests use unless
// they say otherwise.
var classicConfig = testenv.DefaultConfig(false)

func classic() *config.Config { return classicConfig }

func newTestWebhook(t testing.TB, mutate func(*Options), namespaces ...client.Object) *httptest.Server {
	t.Helper()
	opts := Options{
		Config:       classic,
		Namespaces:   fake.NewClientBuilder().WithObjects(namespaces...).Build(),
		OwnNamespace: "remora-system",
	}
	if mutate != nil {
		mutate(&opts)
	}
	h, err := NewHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&admission.Webhook{Handler: h})
	t.Cleanup(srv.Close)
	return srv
}

// post sends body and returns the decoded response.
func post(t testing.TB, srv *httptest.Server, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	resp, err := srv.Client().Post(srv.URL+"/inject", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP status %d", resp.StatusCode)
	}
	var ar admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&ar); err != nil {
		t.Fatal(err)
	}
	if ar.Response == nil {
		t.Fatal("AdmissionReview without a response")
	}
	return ar.Response
}

// patched applies the response's patch to the request's pod.
func patched(t *testing.T, body []byte, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &ar); err != nil {
		t.Fatal(err)
	}
	doc := ar.Request.Object.Raw
	if len(resp.Patch) > 0 {
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
		}
		p, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("decoding the patch: %v", err)
		}
		if doc, err = p.Apply(doc); err != nil {
			t.Fatalf("applying the patch: %v", err)
		}
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(doc, pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

func containerNames(cs []corev1.Container) []string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Name
	}
	return names
}

func hasProxy(pod *corev1.Pod) bool {
	return slices.Contains(containerNames(pod.Spec.Containers), inject.ProxyContainerName) ||
		slices.Contains(containerNames(pod.Spec.InitContainers), inject.ProxyContainerName)
}

func TestHandler(t *testing.T) {
	enabled := map[string]string{inject.LabelNamespaceInject: "enabled"}
	tests := []struct {
		name       string
		namespaces []client.Object
		edit       func(req *admissionv1.AdmissionRequest, pod map[string]any)
		allowed    bool
		code       int32  // expected Result.Code when not zero
		injected   bool   // the patched pod carries the proxy
		msg        string // substring of the response message
		reason     inject.Reason
	}{
		{
			name:       "enabled namespace is injected",
			namespaces: []client.Object{namespace("default", enabled)},
			allowed:    true, injected: true, reason: inject.ReasonInjected,
		},
		{
			name:       "revision label selects the default revision",
			namespaces: []client.Object{namespace("default", map[string]string{inject.LabelRevision: "default"})},
			allowed:    true, injected: true, reason: inject.ReasonInjected,
		},
		{
			name:       "unlabelled namespace is skipped",
			namespaces: []client.Object{namespace("default", nil)},
			allowed:    true, msg: "not labelled", reason: inject.ReasonNamespaceNotLabel,
		},
		{
			name:       "disabled namespace is skipped",
			namespaces: []client.Object{namespace("default", map[string]string{inject.LabelNamespaceInject: "disabled"})},
			allowed:    true, reason: inject.ReasonNamespaceDisabled,
		},
		{
			name:       "pod opt-out",
			namespaces: []client.Object{namespace("default", enabled)},
			edit: func(_ *admissionv1.AdmissionRequest, pod map[string]any) {
				pod["metadata"].(map[string]any)["labels"].(map[string]any)[inject.LabelInject] = "false"
			},
			allowed: true, reason: inject.ReasonPodOptOut,
		},
		{
			name:       "own namespace is never injected",
			namespaces: []client.Object{namespace("remora-system", enabled)},
			edit: func(req *admissionv1.AdmissionRequest, _ map[string]any) {
				req.Namespace = "remora-system"
			},
			allowed: true, reason: inject.ReasonIgnoredNamespace,
		},
		{
			name:       "the namespace comes from the request, not the pod",
			namespaces: []client.Object{namespace("apps", enabled), namespace("default", nil)},
			edit: func(req *admissionv1.AdmissionRequest, pod map[string]any) {
				req.Namespace = "apps"
				delete(pod["metadata"].(map[string]any), "namespace")
			},
			allowed: true, injected: true, reason: inject.ReasonInjected,
		},
		{
			name:       "dry run is answered like a real request",
			namespaces: []client.Object{namespace("default", enabled)},
			edit: func(req *admissionv1.AdmissionRequest, _ map[string]any) {
				dry := true
				req.DryRun = &dry
			},
			allowed: true, injected: true, reason: inject.ReasonInjected,
		},
		{
			name:       "invalid annotation is denied, naming it",
			namespaces: []client.Object{namespace("default", enabled)},
			edit: func(_ *admissionv1.AdmissionRequest, pod map[string]any) {
				annotate(pod, "traffic.sidecar.istio.io/includeInboundPorts", "80,,x")
			},
			code: http.StatusForbidden, msg: "traffic.sidecar.istio.io/includeInboundPorts", reason: inject.ReasonInvalidAnnotations,
		},
		{
			name:       "invalid resource annotation is denied",
			namespaces: []client.Object{namespace("default", enabled)},
			edit: func(_ *admissionv1.AdmissionRequest, pod map[string]any) {
				annotate(pod, "sidecar.istio.io/proxyCPU", "lots")
			},
			code: http.StatusForbidden, msg: "sidecar.istio.io/proxyCPU", reason: inject.ReasonInvalidAnnotations,
		},
		{
			name:       "update is not processed",
			namespaces: []client.Object{namespace("default", enabled)},
			edit: func(req *admissionv1.AdmissionRequest, _ map[string]any) {
				req.Operation = admissionv1.Update
			},
			allowed: true, reason: ReasonNotPodCreate,
		},
		{
			name:       "subresource is not processed",
			namespaces: []client.Object{namespace("default", enabled)},
			edit: func(req *admissionv1.AdmissionRequest, _ map[string]any) {
				req.SubResource = "ephemeralcontainers"
			},
			allowed: true, reason: ReasonNotPodCreate,
		},
		{
			name:       "other resources are not processed",
			namespaces: []client.Object{namespace("default", enabled)},
			edit: func(req *admissionv1.AdmissionRequest, _ map[string]any) {
				req.Kind = metav1.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
				req.Resource = metav1.GroupVersionResource{Version: "v1", Resource: "configmaps"}
			},
			allowed: true, reason: ReasonNotPodCreate,
		},
		{
			name:       "undecodable pod is a bad request",
			namespaces: []client.Object{namespace("default", enabled)},
			edit: func(req *admissionv1.AdmissionRequest, pod map[string]any) {
				pod["spec"] = "not a pod spec"
			},
			code: http.StatusBadRequest, msg: "decoding the pod", reason: ReasonMalformedRequest,
		},
		{
			name:       "request without kind or resource is a bad request",
			namespaces: []client.Object{namespace("default", enabled)},
			edit: func(req *admissionv1.AdmissionRequest, _ map[string]any) {
				req.Kind, req.Resource, req.RequestKind, req.RequestResource = metav1.GroupVersionKind{}, metav1.GroupVersionResource{}, nil, nil
			},
			code: http.StatusBadRequest, msg: "malformed AdmissionReview", reason: ReasonMalformedRequest,
		},
		{
			name:       "missing object is a bad request",
			namespaces: []client.Object{namespace("default", enabled)},
			edit: func(req *admissionv1.AdmissionRequest, _ map[string]any) {
				req.Object.Raw = nil
			},
			code: http.StatusBadRequest, reason: ReasonMalformedRequest,
		},
		{
			name:   "unknown namespace is an error",
			code:   http.StatusInternalServerError,
			msg:    `namespace "default"`,
			reason: ReasonNamespaceLookup,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestWebhook(t, nil, tt.namespaces...)
			body := loadReview(t, tt.edit)
			before := counter(t, injectionsTotal.WithLabelValues(resultOf(tt.allowed, tt.injected, tt.code), string(tt.reason)))
			resp := post(t, srv, body)

			if resp.UID != "0f9b0e3a-6a1c-4a53-9e8b-1d2f3c4b5a69" {
				t.Errorf("response UID %q does not match the request's", resp.UID)
			}
			if resp.Allowed != tt.allowed {
				t.Fatalf("allowed=%v, want %v (result %+v)", resp.Allowed, tt.allowed, resp.Result)
			}
			var msg string
			var code int32
			if resp.Result != nil {
				msg, code = resp.Result.Message, resp.Result.Code
			}
			if tt.code != 0 && code != tt.code {
				t.Errorf("code %d, want %d (message %q)", code, tt.code, msg)
			}
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q does not contain %q", msg, tt.msg)
			}
			if !tt.allowed {
				if len(resp.Patch) > 0 {
					t.Error("a refused request carries a patch")
				}
			} else if got := hasProxy(patched(t, body, resp)); got != tt.injected {
				t.Errorf("patched pod has the proxy: %v, want %v", got, tt.injected)
			}
			if !tt.injected && len(resp.Patch) > 0 {
				t.Errorf("a request that is not injected carries a patch: %s", resp.Patch)
			}
			after := counter(t, injectionsTotal.WithLabelValues(resultOf(tt.allowed, tt.injected, tt.code), string(tt.reason)))
			if after != before+1 {
				t.Errorf("remora_injections_total for %s went from %v to %v", tt.reason, before, after)
			}
		})
	}
}

// resultOf is the result label a test case expects.
func resultOf(allowed, injected bool, code int32) string {
	switch {
	case injected:
		return ResultInjected
	case allowed:
		return ResultSkipped
	case code == http.StatusForbidden:
		return ResultDenied
	}
	return ResultError
}

// counter reads a counter's value.
func counter(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestHandlerIsIdempotent(t *testing.T) {
	srv := newTestWebhook(t, nil, namespace("default", map[string]string{inject.LabelNamespaceInject: "enabled"}))
	body := loadReview(t, nil)
	first := patched(t, body, post(t, srv, body))
	if !hasProxy(first) {
		t.Fatal("the first admission did not inject")
	}
	// Admit the injected pod again, as reinvocationPolicy: IfNeeded or a
	// re-applied injected manifest does.
	again := loadReview(t, func(_ *admissionv1.AdmissionRequest, pod map[string]any) {
		raw, err := json.Marshal(first)
		if err != nil {
			t.Fatal(err)
		}
		clear(pod)
		if err := json.Unmarshal(raw, &pod); err != nil {
			t.Fatal(err)
		}
	})
	resp := post(t, srv, again)
	if !resp.Allowed || len(resp.Patch) > 0 {
		t.Fatalf("re-admission: allowed=%v patch=%s, want allowed without a patch", resp.Allowed, resp.Patch)
	}
	if !strings.Contains(resp.Result.Message, inject.AnnotationStatus) {
		t.Errorf("message %q does not say the pod is already injected", resp.Result.Message)
	}
}

func TestHandlerFallsBackToTheAPIOnACacheMiss(t *testing.T) {
	live := fake.NewClientBuilder().WithObjects(namespace("default", map[string]string{inject.LabelNamespaceInject: "enabled"})).Build()
	srv := newTestWebhook(t, func(o *Options) { o.Uncached = live }) // the cache has no namespaces
	body := loadReview(t, nil)
	if pod := patched(t, body, post(t, srv, body)); !hasProxy(pod) {
		t.Fatal("a namespace missing from the cache but present in the API was not used")
	}
}

func TestHandlerUsesTheCurrentConfig(t *testing.T) {
	v2, err := config.Load(config.FromData(map[string]string{
		config.ValuesFile: "global:\n  proxy:\n    image: example.com/proxy:v2\n",
	}), config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	current := config.MustDefault()
	srv := newTestWebhook(t, func(o *Options) { o.Config = func() *config.Config { return current } },
		namespace("default", map[string]string{inject.LabelNamespaceInject: "enabled"}))
	body := loadReview(t, nil)
	for _, want := range []string{config.MustDefault().Settings.ProxyImage, "example.com/proxy:v2"} {
		pod := patched(t, body, post(t, srv, body))
		var image string
		for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
			if c.Name == inject.ProxyContainerName {
				image = c.Image
			}
		}
		if image != want {
			t.Fatalf("proxy image %q, want %q", image, want)
		}
		current = v2
	}
}

func TestNewHandlerRequiresOptions(t *testing.T) {
	for name, opts := range map[string]Options{
		"no config":     {Namespaces: fake.NewClientBuilder().Build()},
		"no namespaces": {Config: classic},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewHandler(opts); err == nil {
				t.Fatal("NewHandler accepted incomplete options")
			}
		})
	}
}

// FuzzHandler feeds arbitrary objects and operations through the real
// admission.Webhook: the handler must answer every request without
// panicking, and anything it does not allow must carry an error code.
func FuzzHandler(f *testing.F) {
	f.Add([]byte(`{"metadata":{"name":"x"},"spec":{"containers":[{"name":"a","image":"b"}]}}`), "CREATE", "")
	f.Add([]byte(`{"metadata":{"annotations":{"traffic.sidecar.istio.io/includeInboundPorts":"80,,x"}},"spec":{"containers":[{"name":"a"}]}}`), "CREATE", "")
	f.Add([]byte(`{"spec":{"containers":[]}}`), "CREATE", "")
	f.Add([]byte(`null`), "UPDATE", "status")
	f.Add([]byte(`{"spec":"x"}`), "CREATE", "")
	h, err := NewHandler(Options{
		Config:     config.MustDefault,
		Namespaces: fake.NewClientBuilder().WithObjects(namespace("default", map[string]string{inject.LabelNamespaceInject: "enabled"})).Build(),
	})
	if err != nil {
		f.Fatal(err)
	}
	wh := &admission.Webhook{Handler: h}
	f.Fuzz(func(t *testing.T, object []byte, op, sub string) {
		req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID:         "fuzz",
			Kind:        podKind,
			Resource:    podResource,
			SubResource: sub,
			Namespace:   "default",
			Operation:   admissionv1.Operation(op),
			Object:      runtime.RawExtension{Raw: object},
		}}
		resp := wh.Handle(t.Context(), req)
		if !resp.Allowed && (resp.Result == nil || resp.Result.Code < 400) {
			t.Fatalf("refused without an error code: %+v", resp.Result)
		}
	})
}

// TestDeniedPodIsLoggedWithoutTheValue: a denial is logged with the invalid annotation's name and
// what is wrong, never with the value, which may hold anything a user pasted; the user's response
// still shows it.
func TestDeniedPodIsLoggedWithoutTheValue(t *testing.T) {
	const secret = "80,hunter2-token-pasted-here"
	var lines []string
	logger := funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) }, funcr.Options{})
	h, err := NewHandler(Options{
		Config:     config.MustDefault,
		Namespaces: fake.NewClientBuilder().WithObjects(namespace("default", map[string]string{inject.LabelNamespaceInject: "enabled"})).Build(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&admission.Webhook{Handler: h, LogConstructor: func(logr.Logger, *admission.Request) logr.Logger { return logger }})
	t.Cleanup(srv.Close)
	const name = "traffic.sidecar.istio.io/includeInboundPorts"
	body := loadReview(t, func(_ *admissionv1.AdmissionRequest, pod map[string]any) { annotate(pod, name, secret) })
	resp := post(t, srv, body)
	if resp.Allowed || !strings.Contains(resp.Result.Message, secret) {
		t.Fatalf("response allowed=%v message %q: want a denial that shows the user the value", resp.Allowed, resp.Result.Message)
	}
	var denied string
	for _, l := range lines {
		if strings.Contains(l, "Denied pod") {
			denied = l
		}
	}
	if denied == "" {
		t.Fatalf("no Denied pod log line in %q", lines)
	}
	if strings.Contains(denied, "hunter2") {
		t.Errorf("the log line holds the annotation's value: %s", denied)
	}
	if !strings.Contains(denied, `"annotations"=["`+name+`"]`) || !strings.Contains(denied, "ports 1-65535") {
		t.Errorf("the log line does not name the annotation and the reason: %s", denied)
	}
}

// TestHandlerReturnsWarnings checks that the engine's warnings reach the
// AdmissionReview's response (the API server passes them to the client,
// which kubectl prints), on injected and on skipped pods, and that a pod
// without any gets none.
func TestHandlerReturnsWarnings(t *testing.T) {
	enabled := namespace("default", map[string]string{inject.LabelNamespaceInject: "enabled"})
	disabled := namespace("default", map[string]string{inject.LabelNamespaceInject: "disabled"})
	tests := []struct {
		name     string
		ns       client.Object
		ann      map[string]string
		injected bool
		want     []string
	}{
		{name: "an injected pod without warnings", ns: enabled, injected: true},
		{name: "an injected pod with a deprecated annotation", ns: enabled, injected: true,
			ann:  map[string]string{inject.AnnotationKubevirtInterfaces: "k6t-eth0"},
			want: []string{"annotation traffic.sidecar.istio.io/kubevirtInterfaces is deprecated: use istio.io/reroute-virtual-interfaces"}},
		{name: "a skipped pod's request for a sidecar", ns: disabled,
			ann: map[string]string{inject.AnnotationInject: "true", inject.AnnotationProxyCPU: "100m"},
			want: []string{
				"annotation sidecar.istio.io/inject is deprecated: use the label sidecar.istio.io/inject",
				"sidecar.istio.io/inject=true has no effect: not injected (namespace istio-injection=disabled)",
				"sidecar.istio.io/proxyCPU has no effect: not injected (namespace istio-injection=disabled)",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestWebhook(t, nil, tt.ns)
			body := loadReview(t, func(_ *admissionv1.AdmissionRequest, pod map[string]any) {
				for k, v := range tt.ann {
					annotate(pod, k, v)
				}
			})
			resp := post(t, srv, body)
			if !resp.Allowed {
				t.Fatalf("refused: %+v", resp.Result)
			}
			if got := hasProxy(patched(t, body, resp)); got != tt.injected {
				t.Fatalf("injected=%v, want %v", got, tt.injected)
			}
			if !slices.Equal(resp.Warnings, tt.want) {
				t.Errorf("warnings %q, want %q", resp.Warnings, tt.want)
			}
		})
	}
}
