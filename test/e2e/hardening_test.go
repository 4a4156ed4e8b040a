package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/manifest"
	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/pkg/inject"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

// Hardening the webhook, end to end: operations the chart's
// webhook configuration does not send (UPDATE, DELETE, subresources) reach
// the real injector through a second configuration and change nothing;
// every input pod of Istio's conformance corpus passes the API server's own
// validation after injection, or is refused with our named error; the
// served endpoint refuses hostile requests and old TLS; many slow clients do
// not stop it answering others.

// notPodCreate is the metric series of admissions the handler allows
// unchanged because they are not the creation of a pod.
var notPodCreate = map[string]string{"result": "skipped", "reason": "not-pod-create"}

// TestUpdateOfInjectedPodIsUnchanged creates an injected pod, then updates
// its labels, adds an ephemeral container and deletes it. The chart
// registers the webhook for CREATE only, so the API server does not call
// it for these: the first label update proves that configuration. Then a
// second MutatingWebhookConfiguration sends UPDATE and DELETE of pods and
// their subresources to the same injector, as a loosely written
// configuration would, and each goes through with nothing changed but what
// the request changed: the handler allowed it without a patch (counted in
// remora_injections_total{result="skipped",reason="not-pod-create"}). A
// patch to the pod's spec on UPDATE would have made the API server refuse
// the update (the spec is immutable), and the comparison would see it.
func TestUpdateOfInjectedPodIsUnchanged(t *testing.T) {
	const selectorLabel = "remora-e2e/update-hook"
	ns := newNamespace(t, "update", map[string]string{"istio-injection": "enabled", selectorLabel: "true"})
	pod := mustCreatePod(t, newPod(ns, "updated"))
	if !testenv.HasProxy(pod) {
		t.Fatal("the pod was not injected on CREATE")
	}
	injected := pod.DeepCopy()

	relabel := func(value string) *corev1.Pod {
		t.Helper()
		var p corev1.Pod
		err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			if err := env.cluster.Client.Get(ctx, client.ObjectKeyFromObject(pod), &p); err != nil {
				return false, err
			}
			p.Labels["e2e-update"] = value
			err := env.cluster.Client.Update(ctx, &p)
			if apierrors.IsConflict(err) {
				return false, nil
			}
			return err == nil, err
		})
		if err != nil {
			t.Fatalf("updating the labels: %v", err)
		}
		return &p
	}
	// assertUnchanged compares the pod with the injected one, except for
	// what an update may change.
	assertUnchanged := func(what string, got *corev1.Pod) {
		t.Helper()
		if !equality.Semantic.DeepEqual(got.Spec.Containers, injected.Spec.Containers) ||
			!equality.Semantic.DeepEqual(got.Spec.InitContainers, injected.Spec.InitContainers) ||
			!equality.Semantic.DeepEqual(got.Spec.Volumes, injected.Spec.Volumes) {
			t.Errorf("%s changed the pod's containers or volumes", what)
		}
		if !equality.Semantic.DeepEqual(got.Annotations, injected.Annotations) {
			t.Errorf("%s changed the annotations: %v -> %v", what, injected.Annotations, got.Annotations)
		}
		for k, v := range injected.Labels {
			if got.Labels[k] != v {
				t.Errorf("%s changed label %s: %q -> %q", what, k, v, got.Labels[k])
			}
		}
	}

	// With the chart's configuration (CREATE only) the webhook is not
	// called for an UPDATE.
	before := metric(t, "remora_injections_total", notPodCreate)
	got := relabel("chart")
	assertUnchanged("an UPDATE under the chart's configuration", got)
	if got.Labels["e2e-update"] != "chart" {
		t.Errorf("the label update was lost: %v", got.Labels)
	}
	if after := metric(t, "remora_injections_total", notPodCreate); after != before {
		t.Errorf("the webhook was called for an UPDATE the chart does not register (%v -> %v)", before, after)
	}

	// A configuration that sends UPDATE and DELETE of pods and their
	// subresources to the same injector.
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "remora-e2e-update-hook"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "update.sidecar-injector.remora.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(shared().WebhookURL(namespacePath)), CABundle: env.ca.PEM()},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update, admissionregistrationv1.Delete},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{""}, APIVersions: []string{"v1"},
					Resources: []string{"pods", "pods/ephemeralcontainers", "pods/status"},
				},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{selectorLabel: "true"}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To[int32](10),
		}},
	}
	if err := env.cluster.Client.Create(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.cluster.Client.Delete(context.Background(), cfg) })

	// The API server applies a new configuration within moments: relabel
	// until the webhook is called.
	before = metric(t, "remora_injections_total", notPodCreate)
	first := before
	n := 0
	waitUntil(t, "the API server to call the webhook for UPDATE", 30*time.Second, func() bool {
		n++
		relabel(fmt.Sprintf("hook-%d", n))
		return metric(t, "remora_injections_total", notPodCreate) > before
	})
	got = relabel("hooked")
	assertUnchanged("an UPDATE through the webhook", got)
	if got.Labels["e2e-update"] != "hooked" {
		t.Errorf("the label update was lost: %v", got.Labels)
	}

	// An UPDATE of pods/ephemeralcontainers (kubectl debug).
	before = metric(t, "remora_injections_total", notPodCreate)
	got.Spec.EphemeralContainers = append(got.Spec.EphemeralContainers, corev1.EphemeralContainer{
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: "debugger", Image: "example.com/debug:1", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy: corev1.PullIfNotPresent,
		},
	})
	if err := env.cluster.Client.SubResource("ephemeralcontainers").Update(t.Context(), got); err != nil {
		t.Fatalf("adding an ephemeral container: %v", err)
	}
	if after := metric(t, "remora_injections_total", notPodCreate); after <= before {
		t.Errorf("the webhook was not called for pods/ephemeralcontainers (%v -> %v)", before, after)
	}
	var stored corev1.Pod
	if err := env.cluster.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), &stored); err != nil {
		t.Fatal(err)
	}
	assertUnchanged("an UPDATE of pods/ephemeralcontainers", &stored)
	if names := ephemeralNames(stored.Spec.EphemeralContainers); !slices.Equal(names, []string{"debugger"}) {
		t.Errorf("ephemeral containers %v, want [debugger]", names)
	}

	// An UPDATE of pods/status (what the kubelet sends).
	before = metric(t, "remora_injections_total", notPodCreate)
	stored.Status.Conditions = append(stored.Status.Conditions, corev1.PodCondition{
		Type: "example.com/Checked", Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now(),
	})
	if err := env.cluster.Client.Status().Update(t.Context(), &stored); err != nil {
		t.Fatalf("updating the status: %v", err)
	}
	if after := metric(t, "remora_injections_total", notPodCreate); after <= before {
		t.Errorf("the webhook was not called for pods/status (%v -> %v)", before, after)
	}
	if err := env.cluster.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), &stored); err != nil {
		t.Fatal(err)
	}
	assertUnchanged("an UPDATE of pods/status", &stored)
	if !slices.ContainsFunc(stored.Status.Conditions, func(c corev1.PodCondition) bool { return c.Type == "example.com/Checked" }) {
		t.Errorf("the status update was lost: %v", stored.Status.Conditions)
	}

	// DELETE goes through.
	before = metric(t, "remora_injections_total", notPodCreate)
	if err := env.cluster.Client.Delete(t.Context(), &stored, client.GracePeriodSeconds(0)); err != nil {
		t.Fatalf("deleting the pod: %v", err)
	}
	if after := metric(t, "remora_injections_total", notPodCreate); after <= before {
		t.Errorf("the webhook was not called for DELETE (%v -> %v)", before, after)
	}
	t.Logf("through a second webhook configuration the injector allowed %v UPDATE and DELETE requests unchanged "+
		"(labels, pods/ephemeralcontainers, pods/status, delete); the injected pod's containers, volumes and annotations never changed",
		metric(t, "remora_injections_total", notPodCreate)-first)
}

func ephemeralNames(cs []corev1.EphemeralContainer) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

// corpusPod is one pod template of the conformance corpus.
type corpusPod struct {
	input string // the input file
	index int    // the template's position in it
	pod   *corev1.Pod
}

// corpusPods reads every input of the corpus (inject/*.yaml that are not
// goldens or overlays) and returns its pod templates as pods, and the
// inputs the corpus expects to be refused.
func corpusPods(t *testing.T) ([]corpusPod, map[string]bool) {
	t.Helper()
	corpusDir := testenv.Corpus(t)
	tsv, err := os.ReadFile(filepath.Join(corpusDir, "cases.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	refused := map[string]bool{}
	for _, line := range strings.Split(string(tsv), "\n") {
		if cols := strings.Split(line, "\t"); len(cols) >= 3 && cols[2] == "(error expected)" {
			refused[cols[1]] = true
		}
	}
	files, err := filepath.Glob(filepath.Join(corpusDir, "inject", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []corpusPod
	for _, f := range files {
		if strings.HasSuffix(f, ".iop.yaml") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		_, _, err = manifest.Process(bytes.NewReader(b), func(pod *corev1.Pod, _ inject.Workload) (*corev1.Pod, bool, string, string, error) {
			out = append(out, corpusPod{input: filepath.Base(f), index: i, pod: pod.DeepCopy()})
			i++
			return pod, false, "", "", nil
		})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if len(refused) == 0 || len(out) == 0 {
		t.Fatalf("the corpus has %d pods and %d error cases", len(out), len(refused))
	}
	return out, refused
}

var notDNSLabel = regexp.MustCompile(`[^a-z0-9-]+`)

// ownRefusals are corpus inputs whose injected pod the API server would
// refuse, so the webhook refuses them first with its own message naming
// why: a pod whose only container is istio-proxy (with native sidecars it
// would have no container left), and a userVolume whose configMap item
// path is absolute.
var ownRefusals = map[string]string{
	"only-proxy-container.yaml": "the pod would have no container",
	"user-volume.yaml":          inject.AnnotationUserVolume,
}

// TestDryRunConformanceCorpus creates every input pod of Istio's
// conformance corpus (each pod template of each input, as a Pod with a
// unique name) with a server-side dry run in a namespace enabled for
// injection: the API server calls the webhook, then validates the injected
// pod. Each must be accepted by the API server's validation, or refused
// with our webhook's named error: for the corpus' error cases, naming the
// bad annotation; for inputs that ask for a template this configuration
// does not have (Istio's spire template; a case's own custom template),
// naming inject.istio.io/templates.
func TestDryRunConformanceCorpus(t *testing.T) {
	pods, errorCases := corpusPods(t)
	ns := newNamespace(t, "corpus", enabled)
	// The ServiceAccount admission plugin refuses a pod whose account does
	// not exist; a user's cluster has them.
	accounts := map[string]bool{}
	for _, cp := range pods {
		if sa := cp.pod.Spec.ServiceAccountName; sa != "" && sa != "default" && !accounts[sa] {
			accounts[sa] = true
			if err := env.cluster.Client.Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}}); err != nil {
				t.Fatal(err)
			}
		}
	}

	var accepted, injected, refusedAsExpected, noTemplate int
	var unexpected, known []string
	denied := `admission webhook "` + framework.NamespaceWebhookName + `" denied the request`
	for i, cp := range pods {
		name := fmt.Sprintf("c%03d-%s", i, strings.Trim(notDNSLabel.ReplaceAllString(strings.ToLower(strings.TrimSuffix(cp.input, ".yaml")), "-"), "-"))
		if len(name) > 63 {
			name = strings.TrimRight(name[:63], "-")
		}
		t.Run(name, func(t *testing.T) {
			pod := cp.pod.DeepCopy()
			pod.Name, pod.GenerateName, pod.Namespace = name, "", ns
			pod.ResourceVersion, pod.UID = "", ""
			err := createPod(t, pod, client.DryRunAll)
			where := fmt.Sprintf("%s#%d", cp.input, cp.index)
			switch {
			case errorCases[cp.input]:
				if err == nil || !strings.Contains(err.Error(), denied) || !strings.Contains(err.Error(), "traffic.sidecar.istio.io/") {
					unexpected = append(unexpected, fmt.Sprintf("%s: an error case, want our named refusal, got %v", where, err))
					t.Errorf("an error case: want our webhook's refusal naming the annotation, got %v", err)
					return
				}
				refusedAsExpected++
				t.Logf("refused as expected: %v", err)
			case err == nil:
				accepted++
				if testenv.HasProxy(pod) {
					injected++
				}
			case strings.Contains(err.Error(), denied) && strings.Contains(err.Error(), `annotation `+inject.AnnotationTemplates+`=`) &&
				strings.Contains(err.Error(), "does not exist"):
				noTemplate++
				t.Logf("refused with our named error, the template is not in this configuration: %v", err)
			case ownRefusals[cp.input] != "" && strings.Contains(err.Error(), denied) && strings.Contains(err.Error(), ownRefusals[cp.input]):
				known = append(known, fmt.Sprintf("%s: %v", where, err))
				t.Logf("refused with our own message before the API server's validation: %v", err)
			default:
				unexpected = append(unexpected, fmt.Sprintf("%s: %v", where, err))
				t.Errorf("refused: %v", err)
			}
		})
	}
	t.Logf("dry run of the conformance corpus: %d pod templates: %d accepted by the API server (%d of them injected); "+
		"%d refused as expected with our named error (the %d error cases); %d refused with our named error for a template this configuration lacks; "+
		"%d refused with our own message where the API server would refuse the result; %d unexpected",
		len(pods), accepted, injected, refusedAsExpected, len(errorCases), noTemplate, len(known), len(unexpected))
	for _, k := range known {
		t.Logf("REFUSED BY US %s", k)
	}
	sort.Strings(unexpected)
	for _, u := range unexpected {
		t.Logf("UNEXPECTED %s", u)
	}
}

// injectorTLS is a TLS client configuration that trusts the injector.
func injectorTLS() *tls.Config {
	return &tls.Config{RootCAs: env.ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// TestHardeningServedEndpoint sends hostile requests straight to the
// injector's HTTPS endpoint (not through the API server), on both of its
// paths, and checks that injector serve put the guard in front of the
// webhook, answers v1beta1 in v1beta1, and offers only modern TLS without
// HTTP/2.
func TestHardeningServedEndpoint(t *testing.T) {
	inj := shared()
	addr := fmt.Sprintf("127.0.0.1:%d", inj.Opts.Port)
	httpClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: injectorTLS()}}
	t.Cleanup(httpClient.CloseIdleConnections)
	review := admissionReview(t, probeNamespace, 1)
	tests := []struct {
		name, method, contentType string
		body                      []byte
		status                    int
		has                       string
	}{
		{"a review is injected", "POST", "application/json", review, 200, `"patch"`},
		{"v1beta1 is answered as v1beta1", "POST", "application/json",
			bytes.Replace(review, []byte(`"apiVersion":"admission.k8s.io/v1"`), []byte(`"apiVersion":"admission.k8s.io/v1beta1"`), 1), 200, `"apiVersion":"admission.k8s.io/v1beta1"`},
		{"GET is 405", "GET", "application/json", nil, 405, "POST"},
		{"YAML is 415", "POST", "application/yaml", review, 415, "application/json"},
		{"a byte-order mark is 400", "POST", "application/json", append([]byte("\xef\xbb\xbf"), review...), 400, "byte-order mark"},
		{"a duplicate key is 400", "POST", "application/json",
			bytes.Replace(review, []byte(`"kind":"AdmissionReview"`), []byte(`"kind":"AdmissionReview","kind":"AdmissionReview"`), 1), 400, "duplicate"},
		{"no uid is 400", "POST", "application/json", bytes.Replace(review, []byte(`"uid":"drain-1",`), nil, 1), 400, "no uid"},
		{"over the size limit is 413", "POST", "application/json", append(bytes.Repeat([]byte(" "), 4<<20), review...), 413, "exceeds"},
	}
	for _, path := range []string{namespacePath, revisionPath} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				var body io.Reader
				if tt.body != nil {
					body = bytes.NewReader(tt.body)
				}
				req, err := http.NewRequestWithContext(t.Context(), tt.method, inj.WebhookURL(path), body)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", tt.contentType)
				resp, err := httpClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = resp.Body.Close() }()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != tt.status || !strings.Contains(string(b), tt.has) {
					t.Errorf("status %d body %.200q, want %d containing %q", resp.StatusCode, b, tt.status, tt.has)
				}
				if resp.ProtoMajor != 1 {
					t.Errorf("answered over %s, want HTTP/1.1", resp.Proto)
				}
			})
		}
	}

	t.Run("TLS", func(t *testing.T) {
		dial := func(cfg *tls.Config) (*tls.ConnectionState, error) {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
			if err != nil {
				return nil, err
			}
			defer func() { _ = conn.Close() }()
			st := conn.ConnectionState()
			return &st, nil
		}
		old := injectorTLS()
		old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		if _, err := dial(old); err == nil {
			t.Error("a TLS 1.1 handshake succeeded")
		}
		cbc := injectorTLS()
		cbc.MaxVersion = tls.VersionTLS12
		cbc.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256}
		if _, err := dial(cbc); err == nil {
			t.Error("a TLS 1.2 handshake with CBC or non-ECDHE suites only succeeded")
		}
		modern := injectorTLS()
		modern.MaxVersion = tls.VersionTLS12
		if st, err := dial(modern); err != nil {
			t.Errorf("a TLS 1.2 handshake with ECDHE AEAD suites failed: %v", err)
		} else {
			t.Logf("TLS 1.2 suite: %s", tls.CipherSuiteName(st.CipherSuite))
		}
		h2 := injectorTLS()
		h2.NextProtos = []string{"h2", "http/1.1"}
		if st, err := dial(h2); err != nil {
			t.Errorf("a TLS 1.3 handshake failed: %v", err)
		} else if st.NegotiatedProtocol == "h2" {
			t.Error("HTTP/2 was negotiated; it is off by default")
		}
	})
}

// slowResult is what one slow client saw.
type slowResult struct {
	cutAfter time.Duration // from the end of the headers to the server's answer or close
	at       time.Time     // when the server answered or closed
	status   int           // the answer's status, if any
	err      error
}

// TestHardeningSlowloris opens many slow connections to the injector's
// endpoint on loopback (half trickle their headers, half trickle a body
// after complete headers, a byte a second each) while another client keeps
// sending admission requests, and checks that admissions are answered while
// every slow connection is still held open (before the first is cut: had
// they blocked the server, the admissions would have waited for the cuts),
// that the body senders are cut by the guard's 10 s read deadline, and that
// the header senders, which only the server's 32 s ReadHeaderTimeout cuts,
// block nobody meanwhile. It is bounded: about 13 s and 200 connections,
// which it closes.
func TestHardeningSlowloris(t *testing.T) {
	const (
		slowHeaders = 100
		slowBodies  = 100
		// The guard's default read deadline for the body.
		bodyDeadline = 10 * time.Second
	)
	inj := shared()
	addr := fmt.Sprintf("127.0.0.1:%d", inj.Opts.Port)
	ctx, cancel := context.WithTimeout(t.Context(), bodyDeadline+10*time.Second)
	defer cancel()

	dial := func() (*tls.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, injectorTLS())
	}
	// trickle writes one byte a second until ctx ends or the write fails.
	trickle := func(conn net.Conn, b byte) {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if _, err := conn.Write([]byte{b}); err != nil {
					return
				}
			}
		}
	}

	var (
		mu        sync.Mutex
		conns     []net.Conn
		headerCut []time.Duration // header senders the server closed early
		bodies    []slowResult
		wg        sync.WaitGroup
	)
	t.Cleanup(func() {
		cancel()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	open := func() (*tls.Conn, error) {
		conn, err := dial()
		if err != nil {
			return nil, err
		}
		mu.Lock()
		conns = append(conns, conn)
		mu.Unlock()
		return conn, nil
	}

	// Slow header senders: a request line and a header that never ends.
	for range slowHeaders {
		conn, err := open()
		if err != nil {
			t.Fatalf("opening a slow connection: %v", err)
		}
		start := time.Now()
		if _, err := io.WriteString(conn, "POST /inject HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go func() { defer wg.Done(); trickle(conn, 'a') }()
		go func() {
			defer wg.Done()
			// The server answers nothing; a read returns when it
			// closes the connection or when the test does.
			_, err := conn.Read(make([]byte, 1))
			if ctx.Err() == nil && err != nil {
				mu.Lock()
				headerCut = append(headerCut, time.Since(start))
				mu.Unlock()
			}
		}()
	}
	// Slow body senders: complete headers, then a body a byte a second.
	for range slowBodies {
		conn, err := open()
		if err != nil {
			t.Fatalf("opening a slow connection: %v", err)
		}
		if _, err := io.WriteString(conn, "POST /inject HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		wg.Add(2)
		go func() { defer wg.Done(); trickle(conn, ' ') }()
		go func() {
			defer wg.Done()
			r := slowResult{}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			r.at = time.Now()
			r.cutAfter = r.at.Sub(start)
			if err != nil {
				r.err = err
			} else {
				r.status = resp.StatusCode
				_ = resp.Body.Close()
			}
			if ctx.Err() == nil {
				mu.Lock()
				bodies = append(bodies, r)
				mu.Unlock()
			}
		}()
	}
	t.Logf("%d slow header senders and %d slow body senders connected", slowHeaders, slowBodies)

	// Meanwhile admissions from another client, one every 100 ms, until
	// every body sender has been cut.
	httpClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: injectorTLS()}}
	t.Cleanup(httpClient.CloseIdleConnections)
	var (
		latencies  []time.Duration
		answeredAt []time.Time
	)
	pace := time.NewTicker(100 * time.Millisecond)
	defer pace.Stop()
	for seq := 0; ; seq++ {
		mu.Lock()
		done := len(bodies) == slowBodies
		mu.Unlock()
		if done || ctx.Err() != nil {
			break
		}
		body := admissionReview(t, probeNamespace, seq)
		start := time.Now()
		resp, err := httpClient.Post(inj.WebhookURL(namespacePath), "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("admission %d during the slowloris: %v", seq, err)
		}
		var ar admissionv1.AdmissionReview
		err = json.NewDecoder(resp.Body).Decode(&ar)
		_ = resp.Body.Close()
		took := time.Since(start)
		latencies = append(latencies, took)
		answeredAt = append(answeredAt, start.Add(took))
		if err != nil || resp.StatusCode != http.StatusOK || ar.Response == nil || !ar.Response.Allowed || len(ar.Response.Patch) == 0 {
			t.Fatalf("admission %d: status %d, error %v, response %+v", seq, resp.StatusCode, err, ar.Response)
		}
		select {
		case <-pace.C:
		case <-ctx.Done():
		}
	}

	mu.Lock()
	defer mu.Unlock()
	// Admissions answered while all 200 slow connections were still open.
	var firstCut time.Time
	for _, r := range bodies {
		if firstCut.IsZero() || r.at.Before(firstCut) {
			firstCut = r.at
		}
	}
	during := 0
	for _, at := range answeredAt {
		if at.Before(firstCut) {
			during++
		}
	}
	if during < 20 {
		t.Errorf("only %d of %d admissions were answered while the slow connections were all open (before the first was cut): they blocked the server",
			during, len(answeredAt))
	}
	slices.Sort(latencies)
	var cut []time.Duration
	for _, r := range bodies {
		cut = append(cut, r.cutAfter)
		if r.err == nil && r.status != http.StatusBadRequest {
			t.Errorf("a slow body sender got status %d, want 400 (the body could not be read in time) or a closed connection", r.status)
		}
		if r.cutAfter < bodyDeadline-time.Second || r.cutAfter > bodyDeadline+4*time.Second {
			t.Errorf("a slow body sender was cut after %v, want about %v", r.cutAfter.Round(time.Millisecond), bodyDeadline)
		}
	}
	if len(bodies) != slowBodies {
		t.Errorf("%d of %d slow body senders were cut within %v", len(bodies), slowBodies, bodyDeadline+10*time.Second)
	}
	slices.Sort(cut)
	if len(headerCut) > 0 {
		t.Errorf("%d slow header senders were closed before the 32 s ReadHeaderTimeout, the first after %v", len(headerCut), slices.Min(headerCut))
	}
	if len(latencies) > 0 && len(cut) > 0 {
		t.Logf("%d admissions answered during the slowloris, %d of them while all slow connections were open: p50 %v, max %v; %d slow body senders cut after %v-%v (answered 400); %d slow header senders still held open (the server's ReadHeaderTimeout is 32 s) and blocking nobody",
			len(latencies), during, latencies[len(latencies)/2].Round(time.Millisecond), latencies[len(latencies)-1].Round(time.Millisecond),
			len(bodies), cut[0].Round(time.Millisecond), cut[len(cut)-1].Round(time.Millisecond), slowHeaders-len(headerCut))
	}
}
