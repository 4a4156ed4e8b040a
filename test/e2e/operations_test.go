package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

// proxyImage returns the image of the proxy of a dry-run pod in ns.
func proxyImage(t *testing.T, ns string) string {
	t.Helper()
	pod := newPod(ns, "")
	if err := createPod(t, pod, client.DryRunAll); err != nil {
		t.Fatalf("creating a pod: %v", err)
	}
	p := testenv.ProxyContainer(pod)
	if p == nil {
		t.Fatalf("not injected: %v", names(pod.Spec.Containers))
	}
	return p.Image
}

// metric returns the sum of a metric's series whose labels include labels.
func metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	text, err := shared().Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	samples, err := framework.ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	return framework.Sum(samples, name, labels)
}

// waitUntil polls cond every 100ms for up to timeout.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return time.Since(start)
}

// TestConfigReload changes the configuration directory (a ConfigMap-style
// ..data swap) while the injector runs: a valid change is picked up by new
// pods, an invalid one is rejected and counted while the last good one
// keeps serving.
func TestConfigReload(t *testing.T) {
	ns := newNamespace(t, "reload", enabled)
	defaultImage := proxyImage(t, ns)
	t.Cleanup(func() {
		// Back to the defaults for the tests that follow (t.Context() is
		// already cancelled here).
		if err := framework.WriteAtomically(env.configDir, framework.Files{}); err != nil {
			t.Error(err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			pod := newPod(ns, "")
			return env.cluster.Client.Create(ctx, pod, client.DryRunAll) == nil && testenv.ProxyContainer(pod) != nil && testenv.ProxyContainer(pod).Image == defaultImage, nil
		})
		if err != nil {
			t.Errorf("the default configuration did not come back: %v", err)
		}
	})

	successes := metric(t, "remora_config_reload_total", map[string]string{"result": "success"})
	const v2 = "example.com/proxy:v2"
	if err := framework.WriteAtomically(env.configDir, framework.Files{
		"values.yaml": []byte("global:\n  proxy:\n    image: " + v2 + "\n"),
	}); err != nil {
		t.Fatal(err)
	}
	took := waitUntil(t, "the new proxy image", 15*time.Second, func() bool { return proxyImage(t, ns) == v2 })
	t.Logf("a new configuration served %v after the write", took.Round(time.Millisecond))
	if got := metric(t, "remora_config_reload_total", map[string]string{"result": "success"}); got <= successes {
		t.Errorf("remora_config_reload_total{result=success} %v, want more than %v", got, successes)
	}

	for name, values := range map[string]string{
		"invalid YAML":  "global: [\n",
		"invalid value": "global:\n  proxy:\n    statusPort: lots\n",
	} {
		t.Run(name, func(t *testing.T) {
			failures := metric(t, "remora_config_reload_total", map[string]string{"result": "failure"})
			if err := framework.WriteAtomically(env.configDir, framework.Files{"values.yaml": []byte(values)}); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the failure metric", 15*time.Second, func() bool {
				return metric(t, "remora_config_reload_total", map[string]string{"result": "failure"}) > failures
			})
			if got := proxyImage(t, ns); got != v2 {
				t.Fatalf("after an invalid configuration the proxy image is %q, want the last good %q", got, v2)
			}
		})
	}
}

// TestCertificateRotation replaces the serving certificate (a new key, same
// CA, swapped in like a Secret update) while pods are being created, and
// checks that no admission fails.
func TestCertificateRotation(t *testing.T) {
	ns := newNamespace(t, "rotate", enabled)
	inj := shared()
	before, err := inj.ServingCertSerial(env.ca.Pool())
	if err != nil {
		t.Fatal(err)
	}

	var (
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		mu        sync.Mutex
		latencies []time.Duration
		failures  []error
	)
	const workers = 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				pod := newPod(ns, fmt.Sprintf("load-%d-%d", w, i))
				start := time.Now()
				err := env.cluster.Client.Create(context.Background(), pod)
				took := time.Since(start)
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, err)
				case !testenv.HasProxy(pod):
					failures = append(failures, fmt.Errorf("pod %s not injected", pod.Name))
				default:
					latencies = append(latencies, took)
				}
				mu.Unlock()
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)

	// admitted counts the load's admissions so far, answered or failed.
	admitted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(latencies) + len(failures)
	}
	const overlap = 20 // admissions on each side of the rotation
	waitUntil(t, fmt.Sprintf("%d admissions on the old certificate", overlap), 30*time.Second, func() bool { return admitted() >= overlap })
	cert, err := env.ca.Issue()
	if err != nil {
		t.Fatal(err)
	}
	if err := framework.WriteAtomically(env.certDir, cert.ServingFiles()); err != nil {
		t.Fatal(err)
	}
	took := waitUntil(t, "the new certificate to be served", 30*time.Second, func() bool {
		serial, err := inj.ServingCertSerial(env.ca.Pool())
		return err == nil && serial == cert.Serial.String()
	})
	// Keep the load on the new certificate, over connections made after it.
	served := admitted()
	waitUntil(t, fmt.Sprintf("%d admissions on the new certificate", overlap), 30*time.Second, func() bool { return admitted() >= served+overlap })
	stopLoad()

	if serial := cert.Serial.String(); serial == before {
		t.Fatal("the new certificate has the old serial")
	}
	for _, err := range failures {
		t.Errorf("admission failed during the rotation: %v", err)
	}
	if len(latencies) < 20 {
		t.Fatalf("only %d pods were created during the rotation", len(latencies))
	}
	slices.Sort(latencies)
	t.Logf("certificate served %v after the swap; %d pods created by %d clients, 0 failed; pod create round trip through the API server: p50 %v, p99 %v",
		took.Round(time.Millisecond), len(latencies), workers,
		latencies[len(latencies)/2].Round(time.Microsecond), latencies[len(latencies)*99/100].Round(time.Microsecond))
}

// admissionReview returns an AdmissionReview for the creation of a pod in
// ns, as the API server sends it.
func admissionReview(t *testing.T, ns string, uid int) []byte {
	t.Helper()
	pod := newPod(ns, "")
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	ar := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID(fmt.Sprintf("drain-%d", uid)),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	b, err := json.Marshal(ar)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// drainResult is one admission sent during TestGracefulShutdown.
type drainResult struct {
	// accepted: the TLS handshake completed, so the server had accepted
	// the connection.
	accepted   bool
	acceptedAt time.Time
	doneAt     time.Time
	err        error
	status     int
	patched    bool
}

// ok reports whether the admission got a complete, injected response.
func (r drainResult) ok() bool { return r.err == nil && r.status == http.StatusOK && r.patched }

// raceWindow bounds the instant before the listener closes in which Go's
// http.Server.Shutdown may close a just-accepted connection without reading
// its request (net/http drops requests that arrive once Shutdown has begun).
const raceWindow = 250 * time.Millisecond

// TestGracefulShutdown sends SIGTERM to an injector while 32 clients post
// AdmissionReviews to it directly over HTTPS (bypassing the API server),
// each on a new connection so that acceptance is observable, and checks:
//   - /readyz fails as soon as shutdown begins, while the webhook still
//     serves: the endpoints can drop the replica before it stops;
//   - the webhook keeps serving for --shutdown-delay after SIGTERM;
//   - every connection accepted before the listener closed gets a complete,
//     injected 200 response, admissions in flight when it closes included,
//     except those accepted within raceWindow of the close whose request the
//     server had not read yet (Go's Shutdown closes them unanswered; counted
//     and logged);
//   - after the close, connections are refused at once, and the process
//     exits 0.
func TestGracefulShutdown(t *testing.T) {
	ns := newNamespace(t, "drain", enabled)
	const delay = 2 * time.Second
	inj, err := framework.StartInjector(t.Context(), framework.InjectorOptions{
		Binary:        env.binary,
		Kubeconfig:    env.kubeconfig,
		CertDir:       env.certDir,
		Namespace:     ownNamespace,
		LogPath:       filepath.Join(env.dir, "injector-drain.log"),
		ShutdownDelay: delay,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inj.Stop(5 * time.Second) })

	httpClient := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: env.ca.Pool(), MinVersion: tls.VersionTLS12},
			DisableKeepAlives: true,
		},
	}
	url := inj.WebhookURL("/inject/cluster/Kubernetes/net/network1")
	send := func(body []byte) (r drainResult) {
		defer func() { r.doneAt = time.Now() }()
		trace := &httptrace.ClientTrace{TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			if err == nil {
				r.accepted, r.acceptedAt = true, time.Now()
			}
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			r.err = err
			return r
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := httpClient.Do(req)
		if err != nil {
			r.err = err
			return r
		}
		defer func() { _ = resp.Body.Close() }()
		r.status = resp.StatusCode
		var ar admissionv1.AdmissionReview
		b, err := io.ReadAll(resp.Body)
		if err == nil {
			err = json.Unmarshal(b, &ar)
		}
		if err != nil {
			r.err = fmt.Errorf("reading the response: %w", err)
			return r
		}
		r.patched = ar.Response != nil && ar.Response.Allowed && len(ar.Response.Patch) > 0
		return r
	}

	// Readiness, polled every 10ms.
	var notReadyAt atomic.Pointer[time.Time]
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for {
			if exited, _ := inj.Exited(); exited {
				return
			}
			code, err := inj.Readyz(context.Background())
			if err == nil && code != http.StatusOK && notReadyAt.Load() == nil {
				now := time.Now()
				notReadyAt.Store(&now)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	const clients = 32
	var (
		mu      sync.Mutex
		results []drainResult
		wg      sync.WaitGroup
		seq     atomic.Int64
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if exited, _ := inj.Exited(); exited {
					return
				}
				r := send(admissionReview(t, ns, int(seq.Add(1))))
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				if !r.accepted {
					time.Sleep(5 * time.Millisecond) // refused: the listener is closed
				}
			}
		}()
	}

	// SIGTERM once every client has had answers: the load is in flight.
	waitUntil(t, fmt.Sprintf("%d admissions answered before SIGTERM", 2*clients), 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(results) >= 2*clients
	})
	sigterm := time.Now()
	if err := inj.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exitErr := inj.Wait(30 * time.Second)
	exited := time.Now()
	wg.Wait()
	<-pollDone
	if exitErr != nil {
		t.Fatalf("the injector did not exit cleanly: %v\n%s", exitErr, inj.LogTail(30))
	}

	// The listener closed before the first refused connection.
	var closedBy time.Time
	for _, r := range results {
		if errors.Is(r.err, syscall.ECONNREFUSED) && (closedBy.IsZero() || r.doneAt.Before(closedBy)) {
			closedBy = r.doneAt
		}
	}
	if closedBy.IsZero() {
		t.Fatal("no connection was refused: the test did not observe the listener closing")
	}
	var accepted, servedAfterSigterm, drainedAfterClose, racedAtClose, refused, resetBeforeHandshake int
	var lastServed time.Time
	var widestRace time.Duration
	for _, r := range results {
		switch {
		case r.accepted && r.ok():
			accepted++
			if r.acceptedAt.After(sigterm) {
				servedAfterSigterm++
			}
			if r.doneAt.After(closedBy) {
				drainedAfterClose++ // in flight while the listener closed
			}
			if r.acceptedAt.After(lastServed) {
				lastServed = r.acceptedAt
			}
		case r.accepted:
			accepted++
			if lead := closedBy.Sub(r.acceptedAt); lead <= raceWindow {
				racedAtClose++
				widestRace = max(widestRace, lead)
				continue
			}
			t.Errorf("an admission accepted %v before the listener closed got no complete response: status %d, patched %v, error %v",
				closedBy.Sub(r.acceptedAt).Round(time.Millisecond), r.status, r.patched, r.err)
		case errors.Is(r.err, syscall.ECONNREFUSED):
			refused++
		default:
			resetBeforeHandshake++ // connected while the listener closed; never accepted
		}
	}
	switch down := notReadyAt.Load(); {
	case down == nil:
		t.Error("/readyz never failed during the shutdown")
	case down.Before(sigterm):
		t.Errorf("/readyz failed %v before SIGTERM", sigterm.Sub(*down))
	case !down.Before(lastServed):
		t.Errorf("/readyz failed %v after the last admission served: it must fail while the webhook still serves", down.Sub(lastServed))
	default:
		t.Logf("/readyz failed %v after SIGTERM; the webhook served on for %v", down.Sub(sigterm).Round(time.Millisecond), lastServed.Sub(*down).Round(time.Millisecond))
	}
	if servedAfterSigterm == 0 || lastServed.Sub(sigterm) < delay/2 {
		t.Errorf("the webhook served %d admissions after SIGTERM, the last %v after it; want service throughout --shutdown-delay=%v",
			servedAfterSigterm, lastServed.Sub(sigterm).Round(time.Millisecond), delay)
	}
	t.Logf("SIGTERM with %d clients: %d admissions accepted, %d of them after SIGTERM; listener closed %v after SIGTERM; "+
		"%d completed after the close (drained in flight), %d accepted at most %v before the close went unanswered; "+
		"%d refused, %d reset before the TLS handshake; exit %v after SIGTERM",
		clients, accepted, servedAfterSigterm, closedBy.Sub(sigterm).Round(time.Millisecond),
		drainedAfterClose, racedAtClose, widestRace.Round(time.Millisecond), refused, resetBeforeHandshake, exited.Sub(sigterm).Round(time.Millisecond))
}

// TestSelfManagedCertificates runs an injector with --self-managed-certs:
// before serving it creates the CA and serving certificate in a Secret of its
// namespace, writes them to its --cert-dir, and sets the caBundle of its
// webhook configuration, which then verifies what the webhook serves.
func TestSelfManagedCertificates(t *testing.T) {
	const configName = "remora-selfcert-e2e"
	// A configuration that selects no namespace: only its caBundle matters.
	cfg := framework.WebhookConfiguration(framework.WebhookOptions{
		Name: configName, NamespaceURL: "https://127.0.0.1:1/inject", RevisionURL: "https://127.0.0.1:1/inject",
		OwnNamespace: ownNamespace,
	})
	for i := range cfg.Webhooks {
		cfg.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"remora-e2e/never": "true"}}
	}
	if err := env.cluster.Client.Create(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.cluster.Client.Delete(context.Background(), cfg) })

	inj, err := framework.StartInjector(t.Context(), framework.InjectorOptions{
		Binary:     env.binary,
		Kubeconfig: env.kubeconfig,
		CertDir:    t.TempDir(),
		Namespace:  ownNamespace,
		LogPath:    filepath.Join(env.dir, "injector-selfcert.log"),
		ExtraArgs: []string{"--self-managed-certs", "--cert-secret-name=remora-selfcert-e2e",
			"--service-name=remora-injector", "--webhook-config-name=" + configName},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inj.Stop(5 * time.Second) })

	secret := &corev1.Secret{}
	if err := env.cluster.Client.Get(t.Context(), client.ObjectKey{Namespace: ownNamespace, Name: "remora-selfcert-e2e"}, secret); err != nil {
		t.Fatalf("the certificate Secret: %v", err)
	}
	bundle := secret.Data["ca-bundle.crt"]
	if len(bundle) == 0 {
		t.Fatalf("the Secret has no ca-bundle.crt; keys %v", slices.Sorted(maps.Keys(secret.Data)))
	}
	if err := env.cluster.Client.Get(t.Context(), client.ObjectKeyFromObject(cfg), cfg); err != nil {
		t.Fatal(err)
	}
	for _, wh := range cfg.Webhooks {
		if !bytes.Equal(wh.ClientConfig.CABundle, bundle) {
			t.Errorf("webhook %s: caBundle is not the Secret's bundle", wh.Name)
		}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("the bundle holds no certificate")
	}
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", inj.Opts.Port), &tls.Config{
		RootCAs: roots, ServerName: "remora-injector." + ownNamespace + ".svc", MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		t.Fatalf("the served certificate does not verify against the caBundle for the Service name: %v", err)
	}
	_ = conn.Close()
}

// TestLatencyReport logs the handler's latency over every admission the
// shared injector served during the run, from its histogram.
func TestLatencyReport(t *testing.T) {
	text, err := shared().Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	samples, err := framework.ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	h, err := framework.HistogramOf(samples, "remora_injection_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	if h.Count < 50 {
		t.Fatalf("only %v admissions recorded", h.Count)
	}
	injected := framework.Sum(samples, "remora_injections_total", map[string]string{"result": "injected"})
	byResult := map[string]float64{}
	for _, s := range samples {
		if s.Name == "remora_injections_total" && s.Value > 0 {
			byResult[s.Labels["result"]+"/"+s.Labels["reason"]] += s.Value
		}
	}
	keys := make([]string, 0, len(byResult))
	for k := range byResult {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var breakdown bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&breakdown, " %s=%v", k, byResult[k])
	}
	ms := func(s float64) string { return fmt.Sprintf("%.2fms", s*1000) }
	t.Logf("handler latency over %v admissions (%v injected): p50 %s, p90 %s, p99 %s, mean %s (histogram estimates)",
		h.Count, injected, ms(h.Quantile(0.5)), ms(h.Quantile(0.9)), ms(h.Quantile(0.99)), ms(h.Sum/h.Count))
	t.Logf("by result/reason:%s", breakdown.String())
	if webhook, err := framework.HistogramOf(samples, "controller_runtime_webhook_latency_seconds"); err == nil {
		t.Logf("controller-runtime webhook latency (HTTP handler): p50 %s, p99 %s", ms(webhook.Quantile(0.5)), ms(webhook.Quantile(0.99)))
	}
}

// TestWebhookDown stops the injector: with failurePolicy Fail, pods in
// selected namespaces are refused with an error naming the webhook, while
// other namespaces and opted-out pods are unaffected. The injector is
// restarted afterwards.
func TestWebhookDown(t *testing.T) {
	enabledNS := newNamespace(t, "down", enabled)
	plainNS := newNamespace(t, "down-plain", nil)
	inj := shared()
	t.Cleanup(func() {
		// t.Context() is already cancelled here.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := startSharedInjector(ctx); err != nil {
			t.Fatalf("restarting the injector: %v", err)
		}
		err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			pod := newPod(probeNamespace, "")
			return env.cluster.Client.Create(ctx, pod, client.DryRunAll) == nil && testenv.HasProxy(pod), nil
		})
		if err != nil {
			t.Fatalf("injection does not work after the restart: %v", err)
		}
	})
	if err := inj.Stop(15 * time.Second); err != nil {
		t.Fatalf("stopping the injector: %v", err)
	}

	err := createPod(t, newPod(enabledNS, ""))
	errorContains(t, err, `failed calling webhook "`+framework.NamespaceWebhookName+`"`, "connection refused")

	pod := mustCreatePod(t, newPod(plainNS, ""))
	if testenv.HasProxy(pod) {
		t.Error("a pod in an unlabelled namespace was injected with the webhook down")
	}
	optOut := newPod(enabledNS, "")
	optOut.Labels = map[string]string{"sidecar.istio.io/inject": "false"}
	mustCreatePod(t, optOut) // the object selector keeps the webhook out of it
}

// TestProfilingEndpoint: --pprof-bind-address serves Go's profiles on the
// given address only; without it (the suite's injector) neither the probe
// nor the metrics port answers /debug/pprof/.
func TestProfilingEndpoint(t *testing.T) {
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	inj, err := framework.StartInjector(t.Context(), framework.InjectorOptions{
		Binary:     env.binary,
		Kubeconfig: env.kubeconfig,
		CertDir:    env.certDir,
		Namespace:  ownNamespace,
		LogPath:    filepath.Join(env.dir, "injector-pprof.log"),
		ExtraArgs:  []string{"--pprof-bind-address=" + addr, "--upgrade-controller=false"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inj.Stop(5 * time.Second) })

	for path, want := range map[string]string{
		"/debug/pprof/cmdline":           "--pprof-bind-address=" + addr,
		"/debug/pprof/heap?debug=1":      "heap profile:",
		"/debug/pprof/goroutine?debug=1": "goroutine profile:",
	} {
		code, body, err := framework.Get(t.Context(), "http://"+addr+path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, want 200 with %q; got %.200q", path, code, want, body)
		}
	}
	opts := shared().Opts
	probe := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", opts.ProbePort)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", opts.MetricsPort)
	for _, url := range []string{probe, metricsURL} {
		code, _, err := framework.Get(t.Context(), url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		if code != http.StatusNotFound {
			t.Errorf("GET %s on an injector without --pprof-bind-address: %d, want 404", url, code)
		}
	}
}
