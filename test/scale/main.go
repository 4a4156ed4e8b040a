// Command scale measures the companion upgrade controller of `injector
// serve` at cluster scale, on this machine only:
//
//  1. it starts a real control plane (etcd and kube-apiserver from
//     KUBEBUILDER_ASSETS or ./bin/k8s, through test/e2e/framework);
//  2. creates -pods injected pods directly in the API server (they never
//     run): the Bookinfo reviews-v1 pod of testdata/bench injected by the
//     engine with the configuration below, owned by ReplicaSets of
//     -pods-per-replicaset, -bare-pods of them without an owner, spread over
//     -namespaces namespaces labelled istio-injection=enabled;
//  3. runs the built injector (or -injector PATH) as a process: `injector
//     serve --kubeconfig --config-dir --leader-elect=false`, the upgrade
//     controller reporting only, optionally in a memory cgroup limited to
//     -memory-limit;
//  4. measures the initial sync (process start until the controller has
//     evaluated every pod), then -changes times rewrites values.yaml with a
//     new proxy image (v2, v3, ...) and measures the time until
//     sum(remora_outdated_pods) is the number of pods, reverting to v1
//     after each (so that every change starts from no outdated pod); RSS
//     and peak RSS from /proc every 200 ms, heap and goroutines from
//     /metrics, and the webhook's admission latency under a small steady
//     load, in a quiet window and during the evaluations;
//  5. prints one table, and exits non-zero if the injector died.
//
// Run it with
//
//	make bench-controller N=20000 ARGS='-memory-limit 256Mi'
//	go run ./test/scale -pods 2000 -injector /tmp/injector-old
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/remora-mesh/remora/internal/configwatch"
	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

// options are the command's flags.
type options struct {
	pods, barePods, podsPerReplicaSet, namespaces, creators int
	injector                                                string
	memoryLimit                                             string
	limitBytes                                              int64
	changes                                                 int
	request, podFile                                        string
	loadClients                                             int
	loadRate                                                float64
	baseline, settle, phaseTimeout, timeout                 time.Duration
	keep                                                    bool
}

func (o *options) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&o.pods, "pods", 2000, "injected pods to create (owned by ReplicaSets, and -bare-pods of them bare)")
	fs.IntVar(&o.barePods, "bare-pods", 0, "how many of -pods have no owner (each its own workload, with its own Event on every change)")
	fs.IntVar(&o.podsPerReplicaSet, "pods-per-replicaset", 100, "pods per ReplicaSet")
	fs.IntVar(&o.namespaces, "namespaces", 10, "namespaces (labelled istio-injection=enabled) the pods are spread over")
	fs.IntVar(&o.creators, "creators", 16, "concurrent pod creators")
	fs.StringVar(&o.injector, "injector", "", "injector binary to measure (default: go build ./cmd/injector of this tree)")
	fs.StringVar(&o.memoryLimit, "memory-limit", "", "run the injector in a memory cgroup with this hard limit, such as 256Mi (the chart's), and report an OOM kill (root)")
	fs.IntVar(&o.changes, "changes", 3, "configuration changes to measure (proxy image v2, v3, ...)")
	fs.StringVar(&o.request, "request", testenv.ReviewFile, "the AdmissionReview the admission load sends")
	fs.StringVar(&o.podFile, "pod", "testdata/bench/reviews-v1-pod.yaml", "the application pod that is injected and created")
	fs.IntVar(&o.loadClients, "load-clients", 4, "concurrent clients of the admission load")
	fs.Float64Var(&o.loadRate, "load-rate", 100, "admissions per second the load sends, all clients together")
	fs.DurationVar(&o.baseline, "baseline", 10*time.Second, "the quiet window of admission load before the first change")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "pause after the sync and after each revert, before the next step")
	fs.DurationVar(&o.phaseTimeout, "phase-timeout", 5*time.Minute, "deadline of each wait: the sync, each change, each revert")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Minute, "deadline of the whole run")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs, kubeconfig) and print its path")
}

func (o *options) validate() error {
	var errs []error
	if o.pods < 1 || o.pods > 200000 {
		errs = append(errs, fmt.Errorf("-pods %d: want 1-200000", o.pods))
	}
	if o.barePods < 0 || o.barePods > o.pods {
		errs = append(errs, fmt.Errorf("-bare-pods %d: want 0-%d (-pods)", o.barePods, o.pods))
	}
	for name, v := range map[string]int{"-pods-per-replicaset": o.podsPerReplicaSet, "-namespaces": o.namespaces, "-creators": o.creators, "-changes": o.changes, "-load-clients": o.loadClients} {
		if v < 1 || v > 10000 {
			errs = append(errs, fmt.Errorf("%s %d: want 1-10000", name, v))
		}
	}
	if o.loadRate <= 0 || o.loadRate > 5000 {
		errs = append(errs, fmt.Errorf("-load-rate %v: want (0, 5000]", o.loadRate))
	}
	if o.memoryLimit != "" {
		q, err := resource.ParseQuantity(o.memoryLimit)
		if err != nil || q.Value() < 16<<20 {
			errs = append(errs, fmt.Errorf("-memory-limit %q: want a quantity of at least 16Mi, such as 256Mi", o.memoryLimit))
		} else {
			o.limitBytes = q.Value()
		}
	}
	for name, d := range map[string]time.Duration{"-baseline": o.baseline, "-settle": o.settle, "-phase-timeout": o.phaseTimeout, "-timeout": o.timeout} {
		if d <= 0 || d > 3*time.Hour {
			errs = append(errs, fmt.Errorf("%s %v: want (0, 3h]", name, d))
		}
	}
	return errors.Join(errs...)
}

func main() {
	o := &options{}
	o.addFlags(flag.CommandLine)
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(2)
	}
	// envtest logs through controller-runtime's logger; the injector's
	// own log is a file.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	r, err := run(ctx, o)
	stop()
	if r != nil {
		r.print(os.Stdout)
	}
	switch {
	case err != nil:
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	case r.died:
		fmt.Fprintln(os.Stderr, "scale: the injector died:", r.exit)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05.0"), fmt.Sprintf(format, args...))
}

// values returns a values.yaml whose only change from the defaults is the
// proxy image's tag.
func values(tag string) framework.Files {
	return framework.Files{config.ValuesFile: []byte("global:\n  proxy:\n    image: docker.io/istio/proxyv2:" + tag + "\n")}
}

// errDied says the injector exited while a step waited on it.
var errDied = errors.New("the injector exited")

// run does the whole measurement. The result is returned, partly filled,
// also when a step fails or the injector dies, so that what was measured is
// printed.
func run(ctx context.Context, o *options) (*result, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	for _, p := range []*string{&o.request, &o.podFile} {
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(root, *p)
		}
	}
	review, err := os.ReadFile(o.request)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "remora-scale-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if o.keep {
			logf("kept %s", tmp)
			return
		}
		_ = os.RemoveAll(tmp)
	}()
	res := &result{opts: o, injector: o.injector}

	if res.injector == "" {
		logf("building the injector")
		if res.injector, err = framework.BuildInjector(root, tmp); err != nil {
			return nil, err
		}
		if out, err := exec.CommandContext(ctx, "git", "-C", root, "describe", "--always", "--dirty").Output(); err == nil {
			res.built = "built from " + strings.TrimSpace(string(out))
		}
	}
	res.version = injectorVersion(ctx, res.injector)

	// The configuration, loaded as injector serve loads it, so that the
	// pods carry the hash it computes.
	cfgDir := filepath.Join(tmp, "config")
	if err := framework.WriteAtomically(cfgDir, values("v1")); err != nil {
		return nil, err
	}
	watcher, err := configwatch.New(configwatch.Options{Dir: cfgDir, Overrides: config.Overrides{}})
	if err != nil {
		return nil, fmt.Errorf("loading the v1 configuration: %w", err)
	}

	logf("starting etcd and kube-apiserver")
	cluster, err := framework.StartCluster(framework.ClusterOptions{Assets: testenv.K8sBinDir(root), Dir: tmp})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := cluster.Stop(); err != nil {
			logf("stopping the control plane: %v", err)
		}
	}()
	const ownNamespace = "remora-system"
	if err := cluster.CreateNamespace(ctx, ownNamespace, nil); err != nil {
		return nil, err
	}

	logf("creating %d injected pods (%d bare) in %d namespaces, %d creators", o.pods, o.barePods, o.namespaces, o.creators)
	if res.pop, err = createPods(ctx, cluster, o, watcher.Current()); err != nil {
		return res, err
	}
	logf("created %d pods in %s (%.0f/s)", o.pods, res.pop.created.Round(100*time.Millisecond), float64(o.pods)/res.pop.created.Seconds())

	ca, err := framework.NewCA()
	if err != nil {
		return res, err
	}
	serving, err := ca.Issue()
	if err != nil {
		return res, err
	}
	certDir := filepath.Join(tmp, "certs")
	if err := framework.WriteAtomically(certDir, serving.ServingFiles()); err != nil {
		return res, err
	}

	injOpts := framework.InjectorOptions{
		Binary: res.injector, Kubeconfig: cluster.AdminKubeconfig, CertDir: certDir, ConfigDir: cfgDir,
		Namespace: ownNamespace, LogPath: filepath.Join(tmp, "injector.log"),
		// As deployed: info logs, the controller on and reporting only.
		ExtraArgs: []string{"--leader-elect=false", "--upgrade-controller=true", "--restart-outdated=false", "--zap-log-level=info"},
	}
	var cg *memoryCgroup
	if o.limitBytes > 0 {
		if cg, err = newMemoryCgroup(fmt.Sprintf("remora-scale-%d", os.Getpid()), o.limitBytes); err != nil {
			return res, err
		}
		defer func() {
			if err := cg.remove(); err != nil {
				logf("%v", err)
			}
		}()
		injOpts.Wrapper = cg.wrapper()
		res.cgroup = cg.version()
	}

	logf("starting %s", res.injector)
	start := time.Now()
	inj, err := framework.LaunchInjector(injOpts)
	if err != nil {
		return res, err
	}
	obs := observe(inj)
	var load *admissionLoad
	defer func() {
		if load != nil {
			load.stop()
		}
		res.finish(inj, obs, load, cg)
	}()

	err = measure(ctx, o, res, inj, obs, start, cfgDir, review, ca, func(l *admissionLoad) { load = l })
	if errors.Is(err, errDied) {
		return res, nil // reported as died
	}
	return res, err
}

// measure runs the timed steps: sync, baseline, the changes.
func measure(ctx context.Context, o *options, res *result, inj *framework.Injector, obs *observer, start time.Time,
	cfgDir string, review []byte, ca *framework.CA, setLoad func(*admissionLoad)) error {
	n := float64(o.pods)
	if err := inj.WaitReady(ctx, o.phaseTimeout); err != nil {
		if exited, _ := inj.Exited(); exited {
			return errDied
		}
		return err
	}
	res.ready = time.Since(start)

	// The initial sync: the controller has evaluated every pod.
	logf("ready after %s; waiting for the controller's first evaluation of %d pods", res.ready.Round(10*time.Millisecond), o.pods)
	var syncAt time.Time
	err := waitFor(ctx, inj, o.phaseTimeout, "the controller's first evaluation of every pod", func() (bool, string) {
		m, ok := obs.latest()
		if ok && m.hasInjected {
			res.syncSignal = "gauge " + metricInjected
			syncAt = m.at
			return m.injected >= n, fmt.Sprintf("%s %v", metricInjected, m.injected)
		}
		for _, ev := range obs.evaluationsSince(start) {
			if ev.pods >= o.pods {
				res.syncSignal = fmt.Sprintf("log %q pods=%d", msgEvaluating, ev.pods)
				syncAt = ev.at
				if ev.outdated != 0 {
					res.notes = append(res.notes, fmt.Sprintf("the first evaluation found %d pods outdated, want 0: the pods' hash is not the injector's", ev.outdated))
				}
				return true, ""
			}
		}
		return false, "no gauge " + metricInjected + " and no evaluation of every pod logged yet"
	})
	if err != nil {
		return err
	}
	res.sync = syncAt.Sub(start)
	logf("initial sync after %s (%s)", res.sync.Round(10*time.Millisecond), res.syncSignal)
	if err := sleep(ctx, inj, o.settle); err != nil {
		return err
	}
	if m, ok := obs.latest(); ok {
		if m.outdated != 0 {
			return fmt.Errorf("after the sync %v pods are outdated, want 0: the pods' hash is not the injector's", m.outdated)
		}
		res.afterSync.heap, res.afterSync.goroutines = m.heapInuse, m.goroutines
	}
	res.afterSync.rss, _, _ = obs.memory(time.Time{}, time.Time{})

	// A quiet window of admissions, then the changes with the load on.
	load := startLoad(inj.WebhookURL("/inject"), ca.Pool(), review, o.loadClients, o.loadRate)
	setLoad(load)
	res.load = load
	res.baselineWindow = window{from: time.Now().Add(time.Second)}
	if err := sleep(ctx, inj, o.baseline+time.Second); err != nil {
		return err
	}
	res.baselineWindow.to = time.Now()

	for i := range o.changes {
		tag := "v" + strconv.Itoa(i+2)
		c := change{tag: tag}
		logf("change %d/%d: proxy image %s", i+1, o.changes, tag)
		before, _ := obs.latest()
		c.at = time.Now()
		if err := framework.WriteAtomically(cfgDir, values(tag)); err != nil {
			return err
		}
		err := waitFor(ctx, inj, o.phaseTimeout, "every pod outdated after the change to "+tag, func() (bool, string) {
			m, _ := obs.latest()
			if c.reload == 0 && m.configHash != "" && m.configHash != before.configHash {
				c.reload = m.at.Sub(c.at)
			}
			if m.at.After(c.at) && m.outdated == n {
				c.found = m.at.Sub(c.at)
				return true, ""
			}
			return false, fmt.Sprintf("sum(%s) %v", metricOutdated, m.outdated)
		})
		if err != nil {
			res.changes = append(res.changes, c)
			return err
		}
		for _, ev := range obs.evaluationsSince(c.at) {
			if ev.outdated == o.pods {
				c.logged = ev.at.Sub(c.at)
				break
			}
		}
		c.window = window{from: c.at, to: c.at.Add(max(c.found, 5*time.Second))}
		_, _, c.peakRSS = obs.memory(c.at, time.Time{})
		res.changes = append(res.changes, c)
		logf("  %d outdated after %s (config reloaded after %s)", o.pods, c.found.Round(10*time.Millisecond), c.reload.Round(10*time.Millisecond))
		// Until the end of the window, then back to v1.
		if err := sleep(ctx, inj, time.Until(c.window.to)); err != nil {
			return err
		}
		revertAt := time.Now()
		if err := framework.WriteAtomically(cfgDir, values("v1")); err != nil {
			return err
		}
		err = waitFor(ctx, inj, o.phaseTimeout, "no pod outdated after the revert to v1", func() (bool, string) {
			m, _ := obs.latest()
			return m.at.After(revertAt) && m.outdated == 0, fmt.Sprintf("sum(%s) %v", metricOutdated, m.outdated)
		})
		if err != nil {
			return err
		}
		res.reverts = append(res.reverts, time.Since(revertAt))
		if err := sleep(ctx, inj, o.settle); err != nil {
			return err
		}
	}
	return nil
}

// waitFor polls cond every 100 ms until it holds, the injector exits, the
// timeout passes or ctx ends.
func waitFor(ctx context.Context, inj *framework.Injector, timeout time.Duration, what string, cond func() (bool, string)) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		ok, msg := cond()
		if ok {
			return nil
		}
		if msg != "" {
			last = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %s)", what, ctx.Err(), last)
		case <-inj.Done():
			return fmt.Errorf("waiting for %s: %w", what, errDied)
		case <-deadline.C:
			return fmt.Errorf("timed out after %s waiting for %s (last: %s)", timeout, what, last)
		case <-tick.C:
		}
	}
}

// sleep waits d, returning early if the injector exits or ctx ends.
func sleep(ctx context.Context, inj *framework.Injector, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-inj.Done():
		return errDied
	case <-time.After(d):
		return nil
	}
}

// median returns the median of ds (the lower middle of an even count).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
