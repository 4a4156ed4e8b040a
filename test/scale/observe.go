package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/remora-mesh/remora/test/e2e/framework"
)

// Metrics and log lines the benchmark reads.
const (
	metricOutdated   = "remora_outdated_pods"
	metricInjected   = "remora_upgrade_injected_pods" // total pods of the last evaluation, when the build has it
	metricConfigInfo = "remora_config_info"
	metricHeapInuse  = "go_memstats_heap_inuse_bytes"
	metricGoroutines = "go_goroutines"
	// msgEvaluating is the controller's line when it evaluates a
	// configuration for the first time (pods= the total).
	msgEvaluating = "Evaluating injected pods against the configuration"
)

// metricsSnapshot is what one scrape of /metrics said.
type metricsSnapshot struct {
	at time.Time
	// outdated is sum(remora_outdated_pods).
	outdated float64
	// injected is sum(remora_upgrade_injected_pods); hasInjected says
	// whether the build exports it.
	injected    float64
	hasInjected bool
	// configHash is the hash label of remora_config_info.
	configHash string
	heapInuse  float64
	goroutines float64
}

// evaluation is one "Evaluating injected pods" log line.
type evaluation struct {
	at             time.Time
	hash           string
	pods, outdated int
}

// rssSample is one read of /proc/PID/status.
type rssSample struct {
	at time.Time
	framework.ProcStatus
}

// observer samples the injector while it runs: /proc/PID/status every
// 200 ms, /metrics every 200 ms, and the evaluations it logs.
type observer struct {
	inj *framework.Injector

	mu          sync.Mutex
	rss         []rssSample
	metrics     metricsSnapshot
	scraped     bool
	peakHeap    float64
	peakRoutine float64
	evaluations []evaluation
	logOffset   int64

	cancel context.CancelFunc
	done   sync.WaitGroup
}

func observe(inj *framework.Injector) *observer {
	ctx, cancel := context.WithCancel(context.Background())
	o := &observer{inj: inj, cancel: cancel}
	for _, loop := range []func(context.Context){o.sampleRSS, o.scrape, o.followLog} {
		o.done.Add(1)
		go func() {
			defer o.done.Done()
			loop(ctx)
		}()
	}
	return o
}

// stop ends the sampling, after a last read of each source.
func (o *observer) stop() {
	o.cancel()
	o.done.Wait()
}

// every runs f every interval until ctx ends or the injector exits, and
// once more at the end (a last sample before the process is gone, if it
// is still there).
func (o *observer) every(ctx context.Context, interval time.Duration, f func(context.Context)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		f(ctx)
		select {
		case <-ctx.Done():
			f(context.Background())
			return
		case <-o.inj.Done():
			return
		case <-tick.C:
		}
	}
}

func (o *observer) sampleRSS(ctx context.Context) {
	o.every(ctx, 200*time.Millisecond, func(context.Context) {
		st, err := framework.ReadProcStatus(o.inj.Pid())
		if err != nil {
			return // exited
		}
		o.mu.Lock()
		o.rss = append(o.rss, rssSample{at: time.Now(), ProcStatus: st})
		o.mu.Unlock()
	})
}

func (o *observer) scrape(ctx context.Context) {
	o.every(ctx, 200*time.Millisecond, func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		// A value first seen in this scrape was set after the previous
		// one: date it by the request, not by the slower answer.
		at := time.Now()
		text, err := o.inj.Metrics(ctx)
		if err != nil {
			return
		}
		samples, err := framework.ParseMetrics(text)
		if err != nil {
			return
		}
		s := metricsSnapshot{at: at}
		for _, m := range samples {
			switch m.Name {
			case metricOutdated:
				s.outdated += m.Value
			case metricInjected:
				s.injected += m.Value
				s.hasInjected = true
			case metricConfigInfo:
				if m.Value == 1 {
					s.configHash = m.Labels["hash"]
				}
			case metricHeapInuse:
				s.heapInuse = m.Value
			case metricGoroutines:
				s.goroutines = m.Value
			}
		}
		o.mu.Lock()
		o.metrics, o.scraped = s, true
		o.peakHeap = max(o.peakHeap, s.heapInuse)
		o.peakRoutine = max(o.peakRoutine, s.goroutines)
		o.mu.Unlock()
	})
}

// followLog reads the injector's JSON log as it grows and keeps the
// controller's evaluation lines.
func (o *observer) followLog(ctx context.Context) {
	o.every(ctx, 100*time.Millisecond, func(context.Context) {
		evs, err := o.readLog()
		if err != nil || len(evs) == 0 {
			return
		}
		o.mu.Lock()
		o.evaluations = append(o.evaluations, evs...)
		o.mu.Unlock()
	})
}

func (o *observer) readLog() ([]evaluation, error) {
	f, err := os.Open(o.inj.LogPath)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Seek(o.logOffset, io.SeekStart); err != nil {
		return nil, err
	}
	var evs []evaluation
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return evs, nil // an incomplete last line is read next time
		}
		if err != nil {
			return evs, err
		}
		o.logOffset += int64(len(line))
		if ev, ok := parseEvaluation(line); ok {
			evs = append(evs, ev)
		}
	}
}

// parseEvaluation reads a zap JSON line of the controller's evaluation
// message; ts is Unix seconds or RFC 3339 with a fraction; otherwise (RFC
// 3339 in whole seconds, what injector serve writes) the line is dated by
// when it was read.
func parseEvaluation(line []byte) (evaluation, bool) {
	var l struct {
		Msg      string          `json:"msg"`
		TS       json.RawMessage `json:"ts"`
		Hash     string          `json:"hash"`
		Pods     int             `json:"pods"`
		Outdated int             `json:"outdated"`
	}
	if json.Unmarshal(line, &l) != nil || l.Msg != msgEvaluating {
		return evaluation{}, false
	}
	ev := evaluation{hash: l.Hash, pods: l.Pods, outdated: l.Outdated, at: time.Now()}
	var secs float64
	var text string
	switch {
	case json.Unmarshal(l.TS, &secs) == nil:
		ev.at = time.Unix(0, int64(secs*1e9))
	case json.Unmarshal(l.TS, &text) == nil:
		// The injector's default encoder writes whole seconds; the time
		// the line was read (every 100 ms) is then the closer one.
		if t, err := time.Parse(time.RFC3339Nano, text); err == nil && strings.Contains(text, ".") {
			ev.at = t
		}
	}
	return ev, true
}

// latest returns the last scrape of /metrics and whether there was one.
func (o *observer) latest() (metricsSnapshot, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.metrics, o.scraped
}

// evaluationsSince returns the evaluation lines logged at or after t.
func (o *observer) evaluationsSince(t time.Time) []evaluation {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []evaluation
	for _, ev := range o.evaluations {
		if !ev.at.Before(t) {
			out = append(out, ev)
		}
	}
	return out
}

// memory returns the last RSS sample, the highest VmHWM seen, and the
// highest RSS sampled between from and to (zero times: all).
func (o *observer) memory(from, to time.Time) (last rssSample, hwm, peak int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.rss {
		hwm = max(hwm, s.HWM)
		if (from.IsZero() || !s.at.Before(from)) && (to.IsZero() || !s.at.After(to)) {
			peak = max(peak, s.RSS)
		}
	}
	if len(o.rss) > 0 {
		last = o.rss[len(o.rss)-1]
	}
	return last, hwm, peak
}

// peaks returns the highest heap in use and goroutine count scraped.
func (o *observer) peaks() (heap, goroutines float64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.peakHeap, o.peakRoutine
}
