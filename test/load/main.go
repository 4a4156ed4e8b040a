// Command load drives `injector serve` over HTTPS with real AdmissionReview
// requests, side by side with the floor webhook (test/load/floor), and
// prints for each server and concurrency the latency percentiles,
// admissions per second, errors, the server's CPU time per admission
// (utime+stime of /proc/PID/stat over the run) and its peak RSS
// (/proc/PID/status). With two or more CPUs the servers share CPU 0 and the
// load generator, the API server and etcd run on the others, so that the
// client's work is not counted against a server's latency.
//
// Then it creates the same pods through the real API server with and
// without the webhook (alternately, in a namespace the webhook selects and
// one it does not) and prints what the webhook adds to a pod's creation.
//
// It starts what it needs on this machine only: a real kube-apiserver and
// etcd (KUBEBUILDER_ASSETS), the two servers on 127.0.0.1, and self-signed
// certificates.
//
//	go run ./test/load -duration 20s -concurrency 1,16 -pods 300 -soak 60s
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "how long each (server, concurrency) run lasts")
	flag.StringVar(&o.levels, "concurrency", "1,16", "comma-separated concurrency levels")
	flag.DurationVar(&o.soak, "soak", 0, "after the runs, drive injector serve at the highest concurrency this long and report its RSS every 10s")
	flag.StringVar(&o.request, "request", testenv.ReviewFile, "the AdmissionReview to send (each gets a fresh uid)")
	flag.IntVar(&o.pods, "pods", 300, "pods to create through the API server with the webhook and as many without it (0: skip)")
	flag.IntVar(&o.rounds, "rounds", 5, "split each -duration into this many rounds, the servers taking turns, and report each figure's median over the rounds")
	flag.BoolVar(&o.pin, "pin", true, "with 2 or more CPUs, run both servers on CPU 0 and everything else on the other CPUs")
	flag.StringVar(&o.baseline, "baseline", "", "also drive this injector binary (an earlier build, same flags but no --pprof-bind-address), as \"baseline\", in the same run")
	flag.StringVar(&o.pprofDir, "pprof-dir", "", "write a CPU and an allocation profile of injector serve under load at the highest concurrency into this directory (serve runs with --pprof-bind-address)")
	flag.Parse()
	// The control plane's client logs through controller-runtime; the
	// servers log to their own files.
	ctrllog.SetLogger(logr.Discard())
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

type options struct {
	duration, soak time.Duration
	levels         string
	request        string
	pods           int
	rounds         int
	pin            bool
	pprofDir       string
	baseline       string
}

type server struct {
	name string
	cmd  *exec.Cmd
	url  string
}

const (
	servePort    = 19443
	floorPort    = 19444
	baselinePort = 19445
	pprofAddr    = "127.0.0.1:16060"
)

func run(o options) error {
	body, err := os.ReadFile(o.request)
	if err != nil {
		return err
	}
	var cs []int
	for _, s := range strings.Split(o.levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 256 {
			return fmt.Errorf("-concurrency %q: want numbers 1-256", o.levels)
		}
		cs = append(cs, n)
	}
	if o.duration <= 0 || o.duration > 10*time.Minute || o.soak < 0 || o.soak > 30*time.Minute || o.pods < 0 || o.pods > 10000 ||
		o.rounds < 1 || o.duration/time.Duration(max(o.rounds, 1)) < time.Second {
		return fmt.Errorf("-duration must be in (0, 10m], -soak in [0, 30m], -pods in [0, 10000] and -rounds at least 1, with rounds of at least 1s")
	}
	tmp, err := os.MkdirTemp("", "remora-load-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()

	bin := filepath.Join(tmp, "injector")
	floorBin := filepath.Join(tmp, "floor")
	for out, pkg := range map[string]string{bin: "./cmd/injector", floorBin: "./test/load/floor"} {
		build := exec.Command("go", "build", "-o", out, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building %s: %w", pkg, err)
		}
	}
	serverCPUs, otherCPUs, err := pinSelf(o.pin)
	if err != nil {
		return err
	}

	// A real API server for the injector's namespace cache and the pod
	// creations; it inherits this process's CPUs.
	cluster, err := framework.StartCluster(framework.ClusterOptions{Assets: os.Getenv("KUBEBUILDER_ASSETS"), Dir: tmp})
	if err != nil {
		return err
	}
	defer func() { _ = cluster.Stop() }()
	ctx := context.Background()
	if err := cluster.CreateNamespace(ctx, "remora-system", nil); err != nil {
		return err
	}
	if err := enableInjection(ctx, cluster, body); err != nil {
		return err
	}

	certDir := filepath.Join(tmp, "certs")
	ca, err := framework.NewCA()
	if err != nil {
		return err
	}
	serving, err := ca.Issue()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	if err := framework.WriteAtomically(certDir, serving.ServingFiles()); err != nil {
		return err
	}

	serveArgs := func(port, metricsPort int) []string {
		return []string{"serve", "--port=" + strconv.Itoa(port), "--cert-dir=" + certDir, "--kubeconfig=" + cluster.AdminKubeconfig,
			"--namespace=remora-system", "--upgrade-controller=false", "--metrics-secure=false",
			"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(metricsPort), "--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(metricsPort+1)}
	}
	args := serveArgs(servePort, 18080)
	if o.pprofDir != "" {
		args = append(args, "--pprof-bind-address="+pprofAddr)
	}
	serve := &server{name: "injector serve", url: fmt.Sprintf("https://127.0.0.1:%d/inject", servePort), cmd: pinned(serverCPUs, bin, args...)}
	floor := &server{name: "floor", url: fmt.Sprintf("https://127.0.0.1:%d/inject", floorPort), cmd: pinned(serverCPUs, floorBin,
		"--port="+strconv.Itoa(floorPort), "--cert-dir="+certDir, "--request="+o.request)}
	servers := []*server{serve, floor}
	if o.baseline != "" {
		servers = append(servers, &server{name: "baseline", url: fmt.Sprintf("https://127.0.0.1:%d/inject", baselinePort),
			cmd: pinned(serverCPUs, o.baseline, serveArgs(baselinePort, 18090)...)})
	}
	for _, s := range servers {
		logf, err := os.Create(filepath.Join(tmp, strings.ReplaceAll(s.name, " ", "-")+".log"))
		if err != nil {
			return err
		}
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
		if err := s.cmd.Start(); err != nil {
			return fmt.Errorf("starting %s: %w", s.name, err)
		}
		defer func(s *server) {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			_ = s.cmd.Wait()
		}(s)
	}
	tlsCfg := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	for _, s := range servers {
		if err := waitServing(s.url, tlsCfg, body, 60*time.Second); err != nil {
			return fmt.Errorf("%s: %w (log in %s)", s.name, err, tmp)
		}
	}
	if serverCPUs != "" {
		fmt.Printf("servers on CPU %s (GOMAXPROCS follows), load generator, API server and etcd on CPUs %s\n", serverCPUs, otherCPUs)
	}

	fmt.Printf("each figure is the median of %d rounds of %s per server, the servers taking turns within each round\n", o.rounds, o.duration/time.Duration(o.rounds))
	fmt.Printf("%-15s %4s %10s %9s %9s %9s %7s %12s %10s\n", "server", "c", "adm/s", "p50", "p90", "p99", "errors", "CPU/adm", "peak RSS")
	results := map[string]map[int]result{}
	for _, n := range cs {
		rounds := map[string][]result{}
		for range o.rounds {
			for _, s := range servers {
				rounds[s.name] = append(rounds[s.name], drive(s, tlsCfg, body, n, o.duration/time.Duration(o.rounds)))
			}
		}
		for _, s := range servers {
			r := medianOf(rounds[s.name])
			if results[s.name] == nil {
				results[s.name] = map[int]result{}
			}
			results[s.name][n] = r
			fmt.Printf("%-15s %4d %10.0f %9s %9s %9s %7d %9.3f ms %8.1fMi\n", s.name, n, r.rate, r.p50, r.p90, r.p99, r.errors,
				r.cpuPerAdmission.Seconds()*1000, float64(r.peakRSS)/(1<<20))
		}
	}
	for _, n := range cs {
		ours, fl := results[serve.name][n], results[floor.name][n]
		fmt.Printf("c=%d: ours/floor p50 %.2fx, p99 %.2fx, CPU per admission %.2fx, throughput %.2f of the floor's\n", n,
			ratio(ours.p50, fl.p50), ratio(ours.p99, fl.p99), ratio(ours.cpuPerAdmission, fl.cpuPerAdmission), ours.rate/fl.rate)
		if o.baseline != "" {
			b := results["baseline"][n]
			fmt.Printf("c=%d: baseline/floor p50 %.2fx, CPU per admission %.2fx; ours/baseline CPU per admission %.2fx\n", n,
				ratio(b.p50, fl.p50), ratio(b.cpuPerAdmission, fl.cpuPerAdmission), ratio(ours.cpuPerAdmission, b.cpuPerAdmission))
		}
	}
	if o.pprofDir != "" {
		if err := profile(serve, tlsCfg, body, cs[len(cs)-1], o.pprofDir); err != nil {
			return err
		}
	}
	if o.pods > 0 {
		if err := podCreation(ctx, cluster, serve, ca.PEM(), body, o.pods); err != nil {
			return err
		}
	}
	if o.soak > 0 {
		soakRun(serve, tlsCfg, body, cs[len(cs)-1], o.soak)
	}
	return nil
}

// soakRun drives injector serve at concurrency n for d and reports its RSS
// every 10 s.
func soakRun(serve *server, tlsCfg *tls.Config, body []byte, n int, d time.Duration) {
	fmt.Printf("soak: injector serve at c=%d for %s, RSS every 10s:\n", n, d)
	var stop atomic.Bool
	done := make(chan result)
	go func() { done <- driveUntil(serve, tlsCfg, body, n, &stop) }()
	start := time.Now()
	var first, peak int64
	for time.Since(start) < d {
		time.Sleep(10 * time.Second)
		rss := rssOf(serve.cmd.Process.Pid)
		if first == 0 {
			first = rss
		}
		peak = max(peak, rss)
		fmt.Printf("  %4.0fs RSS %.1fMi\n", time.Since(start).Seconds(), float64(rss)/(1<<20))
	}
	stop.Store(true)
	r := <-done
	fmt.Printf("soak: %d admissions, %d errors, %.0f adm/s; RSS at 10s %.1fMi, peak %.1fMi, peak (VmHWM) %.1fMi\n",
		r.count, r.errors, r.rate, float64(first)/(1<<20), float64(peak)/(1<<20), float64(hwmOf(serve.cmd.Process.Pid))/(1<<20))
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

type result struct {
	count, errors   int
	rate            float64
	p50, p90, p99   time.Duration
	peakRSS         int64
	cpuPerAdmission time.Duration
}

func waitServing(url string, tlsCfg *tls.Config, body []byte, timeout time.Duration) error {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		err := framework.PostReview(client, url, body)
		if err == nil {
			return nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("not answering: %w", last)
}

func drive(s *server, tlsCfg *tls.Config, body []byte, n int, d time.Duration) result {
	var stop atomic.Bool
	done := make(chan result)
	pid := s.cmd.Process.Pid
	cpu0 := cpuOf(pid)
	go func() { done <- driveUntil(s, tlsCfg, body, n, &stop) }()
	var peak int64
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		peak = max(peak, rssOf(pid))
		time.Sleep(100 * time.Millisecond)
	}
	stop.Store(true)
	r := <-done
	if r.count > 0 {
		r.cpuPerAdmission = (cpuOf(pid) - cpu0) / time.Duration(r.count)
	}
	r.peakRSS = max(peak, rssOf(pid))
	return r
}

func driveUntil(s *server, tlsCfg *tls.Config, body []byte, n int, stop *atomic.Bool) result {
	var (
		mu     sync.Mutex
		lat    []time.Duration
		errs   int
		seq    atomic.Int64
		wg     sync.WaitGroup
		start  = time.Now()
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: n, ForceAttemptHTTP2: false}, Timeout: 10 * time.Second}
	)
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			var localErrs int
			for !stop.Load() {
				b := framework.NewReview(body, seq.Add(1))
				t0 := time.Now()
				if err := framework.PostReview(client, s.url, b); err == nil {
					local = append(local, time.Since(t0))
				} else {
					localErrs++
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += localErrs
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	p := percentiles(lat)
	return result{count: len(lat), errors: errs, rate: float64(len(lat)) / elapsed.Seconds(), p50: p[0], p90: p[1], p99: p[2]}
}

// medianOf is the median of each figure over the rounds rs; errors add up
// and the peak RSS is the highest.
func medianOf(rs []result) result {
	med := func(f func(r result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	dur := func(f func(r result) time.Duration) time.Duration {
		return time.Duration(med(func(r result) float64 { return float64(f(r)) })).Round(10 * time.Microsecond)
	}
	out := result{
		rate:            med(func(r result) float64 { return r.rate }),
		p50:             dur(func(r result) time.Duration { return r.p50 }),
		p90:             dur(func(r result) time.Duration { return r.p90 }),
		p99:             dur(func(r result) time.Duration { return r.p99 }),
		cpuPerAdmission: time.Duration(med(func(r result) float64 { return float64(r.cpuPerAdmission) })),
	}
	for _, r := range rs {
		out.count += r.count
		out.errors += r.errors
		out.peakRSS = max(out.peakRSS, r.peakRSS)
	}
	return out
}

// percentiles sorts lat and returns its 50th, 90th and 99th percentiles.
func percentiles(lat []time.Duration) [3]time.Duration {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	var out [3]time.Duration
	if len(lat) == 0 {
		return out
	}
	for i, p := range []float64{0.50, 0.90, 0.99} {
		out[i] = lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(10 * time.Microsecond)
	}
	return out
}

func rssOf(pid int) int64 {
	st, _ := framework.ReadProcStatus(pid)
	return st.RSS
}

func hwmOf(pid int) int64 {
	st, _ := framework.ReadProcStatus(pid)
	return st.HWM
}

// readReview decodes the AdmissionReview body.
func readReview(body []byte) (*admissionv1.AdmissionReview, error) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("the request is not an AdmissionReview: %w", err)
	}
	if review.Request == nil {
		return nil, fmt.Errorf("the AdmissionReview has no request")
	}
	return &review, nil
}

// enableInjection labels the review's namespace istio-injection=enabled.
func enableInjection(ctx context.Context, cluster *framework.Cluster, body []byte) error {
	review, err := readReview(body)
	if err != nil {
		return err
	}
	return cluster.CreateNamespace(ctx, review.Request.Namespace, map[string]string{"istio-injection": "enabled"})
}

// decodePod returns the pod of the AdmissionReview body.
func decodePod(body []byte) (*corev1.Pod, error) {
	review, err := readReview(body)
	if err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(review.Request.Object.Raw, pod); err != nil {
		return nil, fmt.Errorf("decoding the review's pod: %w", err)
	}
	return pod, nil
}

// objectMeta is the metadata of a new pod of namespace ns.
func objectMeta(ns string, from metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{GenerateName: "load-", Namespace: ns, Labels: from.Labels, Annotations: from.Annotations}
}
