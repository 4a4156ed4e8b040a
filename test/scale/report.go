package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/remora-mesh/remora/test/e2e/framework"
)

// change is the measurement of one configuration change.
type change struct {
	tag string
	at  time.Time
	// reload is when /metrics first showed the new configuration's hash,
	// found when sum(remora_outdated_pods) reached the pod count, logged
	// when the controller logged its evaluation (0: not logged).
	reload, found, logged time.Duration
	// window is the span whose admissions count as during the evaluation:
	// from the change until found, at least 5 s.
	window  window
	peakRSS int64
}

// memorySnapshot is the process's memory at one moment.
type memorySnapshot struct {
	rss              rssSample
	heap, goroutines float64
}

// result is everything measured.
type result struct {
	opts     *options
	injector string
	version  string
	built    string
	cgroup   string
	pop      *population

	ready, sync    time.Duration
	syncSignal     string
	afterSync      memorySnapshot
	baselineWindow window
	changes        []change
	reverts        []time.Duration
	load           *admissionLoad

	// Filled by finish.
	hwm, peakRSS           int64
	peakHeap, peakRoutines float64
	cgroupPeak             int64
	oomKills               int64
	oomErr                 error
	died                   bool
	exit                   string
	notes                  []string
}

// finish stops the injector and the observer and records how the injector
// ended: still running (stopped here), or dead on its own.
func (r *result) finish(inj *framework.Injector, obs *observer, load *admissionLoad, cg *memoryCgroup) {
	exitedAlready, exitErr := inj.Exited()
	if !exitedAlready {
		// A last sample of everything before stopping it.
		obs.stop()
		if err := inj.Stop(10 * time.Second); err != nil {
			r.notes = append(r.notes, fmt.Sprintf("stopping the injector: %v", err))
		}
		r.exit = "running until stopped"
	} else {
		obs.stop()
		r.died = true
		r.exit = describeExit(exitErr)
		if r.opts.keep {
			r.notes = append(r.notes, "the injector's log: "+inj.LogPath)
		}
	}
	_, r.hwm, r.peakRSS = obs.memory(time.Time{}, time.Time{})
	r.peakHeap, r.peakRoutines = obs.peaks()
	if cg != nil {
		r.cgroupPeak = cg.peak()
		r.oomKills, r.oomErr = cg.oomKills()
	}
	if load != nil {
		r.load = load
	}
}

func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Sprintf("died: signal %d (%s)", int(ws.Signal()), ws.Signal())
		}
		return fmt.Sprintf("died: exit status %d", ee.ExitCode())
	}
	if err == nil {
		return "died: exit status 0"
	}
	return err.Error()
}

// injectorVersion asks the binary its version, for the table's header.
func injectorVersion(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version").Output() //nolint:gosec // the binary being measured
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

func mib(b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MiB", b/(1<<20))
}

func secs(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func count(n float64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", n)
}

// print writes the table.
func (r *result) print(w io.Writer) {
	o := r.opts
	_, _ = fmt.Fprintf(w, "\nupgrade controller at scale: %s (%s) %s\n", r.injector, r.version, r.built)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		_, _ = fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...))
	}
	if p := r.pop; p != nil {
		row("pods", "%d injected: %d in %d ReplicaSets, %d bare; %d namespaces; %.1f kB of JSON each",
			o.pods, p.ownedPods, p.replicaSets, p.barePods, p.namespaces, float64(p.podBytes)/1000)
		row("creation", "%s (%.0f pods/s, %d creators)", secs(p.created), float64(o.pods)/p.created.Seconds(), o.creators)
	}
	row("ready (/readyz)", "%s after start", secs(r.ready))
	row("initial sync", "%s after start (%s)", secs(r.sync), r.syncSignal)
	var found []time.Duration
	for _, c := range r.changes {
		if c.found > 0 {
			found = append(found, c.found)
		}
		if c.found == 0 {
			row("change to "+c.tag, "not all outdated: the run ended first (reload seen %s)", secs(c.reload))
			continue
		}
		row("change to "+c.tag, "all outdated after %s (reload seen %s, evaluation logged %s); peak RSS since %s",
			secs(c.found), secs(c.reload), secs(c.logged), mib(float64(c.peakRSS)))
	}
	if len(found) > 0 {
		row("change -> all outdated", "median %s of %d", secs(median(found)), len(found))
	}
	if len(r.reverts) > 0 {
		var parts []string
		for _, d := range r.reverts {
			parts = append(parts, secs(d))
		}
		row("revert -> none outdated", "%s", strings.Join(parts, ", "))
	}
	row("RSS after sync", "%s", mib(float64(r.afterSync.rss.RSS)))
	row("peak RSS (VmHWM)", "%s (highest sampled VmRSS %s)", mib(float64(r.hwm)), mib(float64(r.peakRSS)))
	row("heap in use", "after sync %s, peak %s", mib(r.afterSync.heap), mib(r.peakHeap))
	row("goroutines", "after sync %s, peak %s", count(r.afterSync.goroutines), count(r.peakRoutines))
	if r.load != nil {
		base := r.load.stats(r.baselineWindow)
		var ws []window
		for _, c := range r.changes {
			if !c.window.from.IsZero() {
				ws = append(ws, c.window)
			}
		}
		during := r.load.stats(ws...)
		failed, total, first := r.load.errors()
		if first != nil {
			r.notes = append(r.notes, "first admission error: "+first.Error())
		}
		row("admission baseline", "p50 %s, p99 %s, max %s (%d requests, %d errors; %d clients, %.0f/s)",
			ms(base.p50), ms(base.p99), ms(base.max), base.count, base.errors, o.loadClients, o.loadRate)
		row("admission during evaluations", "p50 %s, p99 %s, max %s (%d requests, %d errors)",
			ms(during.p50), ms(during.p99), ms(during.max), during.count, during.errors)
		row("admission errors", "%d of %d over the whole run", failed, total)
	}
	if o.limitBytes > 0 {
		oom := "no"
		if r.oomKills > 0 {
			oom = fmt.Sprintf("YES (oom_kill %d)", r.oomKills)
		}
		if r.oomErr != nil {
			oom = "unknown: " + r.oomErr.Error()
		}
		row("memory limit", "%s (%s); cgroup peak usage %s", o.memoryLimit, r.cgroup, mib(float64(r.cgroupPeak)))
		row("OOM-killed", "%s", oom)
	} else {
		row("OOM-killed", "no limit set")
	}
	row("injector", "%s", r.exit)
	_ = tw.Flush()
	for _, n := range r.notes {
		_, _ = fmt.Fprintln(w, "note:", n)
	}
}
