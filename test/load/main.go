// Command load drives `injector serve` over HTTPS with real AdmissionReview
// requests, side by side with the floor webhook (test/load/floor), and
// prints latency percentiles, admissions per second, errors and each
// server's peak RSS. It starts what it needs on this machine only: a real
// kube-apiserver and etcd (controller-runtime envtest, KUBEBUILDER_ASSETS),
// the two servers on 127.0.0.1, and self-signed certificates.
//
//	go run ./test/load -duration 20s -concurrency 1,16 -soak 60s
package main

import (
	"context"
	"crypto/tls"
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

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

func main() {
	duration := flag.Duration("duration", 20*time.Second, "how long each (server, concurrency) run lasts")
	concurrency := flag.String("concurrency", "1,16", "comma-separated concurrency levels")
	soak := flag.Duration("soak", 0, "after the runs, drive injector serve at the highest concurrency this long and report its RSS every 10s")
	request := flag.String("request", testenv.ReviewFile, "the AdmissionReview to send (each gets a fresh uid)")
	flag.Parse()
	if err := run(*duration, *concurrency, *soak, *request); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

type server struct {
	name string
	cmd  *exec.Cmd
	url  string
}

func run(duration time.Duration, levels string, soak time.Duration, request string) error {
	body, err := os.ReadFile(request)
	if err != nil {
		return err
	}
	var cs []int
	for _, s := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 256 {
			return fmt.Errorf("-concurrency %q: want numbers 1-256", levels)
		}
		cs = append(cs, n)
	}
	if duration <= 0 || duration > 10*time.Minute || soak < 0 || soak > 30*time.Minute {
		return fmt.Errorf("-duration must be in (0, 10m] and -soak in [0, 30m]")
	}
	tmp, err := os.MkdirTemp("", "remora-load-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()

	// A real API server for the injector's namespace cache.
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting kube-apiserver and etcd (KUBEBUILDER_ASSETS=%q): %w", os.Getenv("KUBEBUILDER_ASSETS"), err)
	}
	defer func() { _ = env.Stop() }()
	user, err := env.AddUser(envtest.User{Name: "load", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return err
	}
	kcPath := filepath.Join(tmp, "kubeconfig")
	if err := os.WriteFile(kcPath, kubeconfig, 0o600); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	ctx := context.Background()
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, ns); err != nil {
		return err
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	ns.Labels["istio-injection"] = "enabled"
	if err := c.Update(ctx, ns); err != nil {
		return err
	}
	_ = c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "remora-system"}})

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
	pool := ca.Pool()

	bin := filepath.Join(tmp, "injector")
	floorBin := filepath.Join(tmp, "floor")
	for out, pkg := range map[string]string{bin: "./cmd/injector", floorBin: "./test/load/floor"} {
		build := exec.Command("go", "build", "-o", out, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building %s: %w", pkg, err)
		}
	}
	serve := &server{name: "injector serve", url: "https://127.0.0.1:19443/inject", cmd: exec.Command(bin, "serve",
		"--port=19443", "--cert-dir="+certDir, "--kubeconfig="+kcPath, "--namespace=remora-system",
		"--metrics-bind-address=127.0.0.1:18080", "--health-probe-bind-address=127.0.0.1:18081")}
	floor := &server{name: "floor", url: "https://127.0.0.1:19444/inject", cmd: exec.Command(floorBin,
		"--port=19444", "--cert-dir="+certDir, "--request="+request)}
	for _, s := range []*server{serve, floor} {
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
	tlsCfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	for _, s := range []*server{serve, floor} {
		if err := waitServing(s.url, tlsCfg, body, 60*time.Second); err != nil {
			return fmt.Errorf("%s: %w (log in %s)", s.name, err, tmp)
		}
	}

	fmt.Printf("%-15s %4s %10s %9s %9s %9s %7s %10s\n", "server", "c", "adm/s", "p50", "p90", "p99", "errors", "peak RSS")
	results := map[string]map[int]result{}
	for _, n := range cs {
		for _, s := range []*server{serve, floor} {
			r := drive(s, tlsCfg, body, n, duration)
			if results[s.name] == nil {
				results[s.name] = map[int]result{}
			}
			results[s.name][n] = r
			fmt.Printf("%-15s %4d %10.0f %9s %9s %9s %7d %8.1fMi\n", s.name, n, r.rate, r.p50, r.p90, r.p99, r.errors, float64(r.peakRSS)/(1<<20))
		}
	}
	for _, n := range cs {
		o, f := results[serve.name][n], results[floor.name][n]
		fmt.Printf("c=%d: ours/floor p50 %.2fx, throughput %.2f of the floor's\n", n, ratio(o.p50, f.p50), o.rate/f.rate)
	}
	if soak > 0 {
		n := cs[len(cs)-1]
		fmt.Printf("soak: injector serve at c=%d for %s, RSS every 10s:\n", n, soak)
		var stop atomic.Bool
		done := make(chan result)
		go func() { done <- driveUntil(serve, tlsCfg, body, n, &stop) }()
		start := time.Now()
		var first, peak int64
		for time.Since(start) < soak {
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
	return nil
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

type result struct {
	count, errors int
	rate          float64
	p50, p90, p99 time.Duration
	peakRSS       int64
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
	go func() { done <- driveUntil(s, tlsCfg, body, n, &stop) }()
	var peak int64
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		peak = max(peak, rssOf(s.cmd.Process.Pid))
		time.Sleep(100 * time.Millisecond)
	}
	stop.Store(true)
	r := <-done
	r.peakRSS = max(peak, rssOf(s.cmd.Process.Pid))
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
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(10 * time.Microsecond)
	}
	return result{count: len(lat), errors: errs, rate: float64(len(lat)) / elapsed.Seconds(), p50: pct(0.50), p90: pct(0.90), p99: pct(0.99)}
}

func rssOf(pid int) int64 {
	st, _ := framework.ReadProcStatus(pid)
	return st.RSS
}

func hwmOf(pid int) int64 {
	st, _ := framework.ReadProcStatus(pid)
	return st.HWM
}
