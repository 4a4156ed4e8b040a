package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/remora-mesh/remora/test/e2e/framework"
)

// admission is one request of the load: when it was sent, how long the
// answer took, whether it was an injected answer.
type admission struct {
	at      time.Time
	latency time.Duration
	ok      bool
}

// admissionLoad sends the reference AdmissionReview to the webhook at a
// steady rate from a few clients, as pods being created in a busy cluster
// would, and keeps every request's latency.
type admissionLoad struct {
	mu       sync.Mutex
	reqs     []admission
	firstErr error

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// startLoad starts workers clients that together send rate reviews per
// second to url (a client whose answer is late sends its next one at once,
// without catching up).
func startLoad(url string, roots *x509.CertPool, body []byte, workers int, rate float64) *admissionLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &admissionLoad{cancel: cancel}
	client := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: workers,
		},
		// The API server's default webhook timeout.
		Timeout: 10 * time.Second,
	}
	interval := time.Duration(float64(workers) / rate * float64(time.Second))
	var seq atomic.Int64
	for w := range workers {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			// Spread the workers over the interval.
			next := time.Now().Add(interval * time.Duration(w) / time.Duration(workers))
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(next)):
				}
				next = next.Add(interval)
				if now := time.Now(); next.Before(now) {
					next = now
				}
				start := time.Now()
				err := framework.PostReview(client, url, framework.NewReview(body, seq.Add(1)))
				l.mu.Lock()
				l.reqs = append(l.reqs, admission{at: start, latency: time.Since(start), ok: err == nil})
				if err != nil && l.firstErr == nil {
					l.firstErr = err
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *admissionLoad) stop() {
	l.cancel()
	l.done.Wait()
}

// window is a span of time.
type window struct{ from, to time.Time }

// latencyStats summarises the requests sent inside some windows.
type latencyStats struct {
	count, errors int
	p50, p99, max time.Duration
}

// stats returns the latency of the requests sent within any of windows.
func (l *admissionLoad) stats(windows ...window) latencyStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s latencyStats
	var lat []time.Duration
	for _, r := range l.reqs {
		if !slices.ContainsFunc(windows, func(w window) bool { return !r.at.Before(w.from) && r.at.Before(w.to) }) {
			continue
		}
		if !r.ok {
			s.errors++
			continue
		}
		lat = append(lat, r.latency)
	}
	s.count = len(lat) + s.errors
	if len(lat) == 0 {
		return s
	}
	slices.Sort(lat)
	s.p50, s.p99, s.max = percentile(lat, 0.50), percentile(lat, 0.99), lat[len(lat)-1]
	return s
}

// errors returns the number of failed requests over the whole run, and
// the first error.
func (l *admissionLoad) errors() (failed, total int, first error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	first = l.firstErr
	for _, r := range l.reqs {
		if !r.ok {
			failed++
		}
	}
	return failed, len(l.reqs), first
}

// percentile returns the nearest-rank p-quantile of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
