// Package drain holds a replica's shutdown open while its endpoints are
// removed: when the manager's context ends it turns readiness off at once,
// then keeps the manager from going on for a delay, during which the webhook
// keeps serving. The manager stops it first, before the caches and the
// webhook server, whose own shutdown then drains the admissions still in
// flight (for at most Timeout).
package drain

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Timeout bounds how long in-flight admissions may take to finish after the
// shutdown delay.
const Timeout = 20 * time.Second

// ReadyzCheck names the readiness check Setup adds.
const ReadyzCheck = "shutdown"

// GracePeriod is the manager's graceful shutdown timeout for a shutdown
// delay: the delay, then Timeout for the admissions in flight.
func GracePeriod(delay time.Duration) time.Duration { return delay + Timeout }

// Drainer turns readiness off as soon as shutdown begins and holds the
// shutdown for a delay. It is a manager.Runnable that runs on every replica.
type Drainer struct {
	delay    time.Duration
	draining atomic.Bool
}

var (
	_ manager.Runnable               = (*Drainer)(nil)
	_ manager.LeaderElectionRunnable = (*Drainer)(nil)
)

// New returns a Drainer that holds the shutdown for delay.
func New(delay time.Duration) *Drainer { return &Drainer{delay: delay} }

// Setup adds a Drainer holding the shutdown for delay to the manager, and its
// Checker as the readiness check ReadyzCheck.
func Setup(mgr manager.Manager, delay time.Duration) error {
	d := New(delay)
	if err := mgr.Add(d); err != nil {
		return fmt.Errorf("adding the shutdown drainer: %w", err)
	}
	if err := mgr.AddReadyzCheck(ReadyzCheck, d.Checker); err != nil {
		return fmt.Errorf("adding readiness check %s: %w", ReadyzCheck, err)
	}
	return nil
}

// Start waits for shutdown, then reports not-ready for the delay.
func (d *Drainer) Start(ctx context.Context) error {
	<-ctx.Done()
	d.draining.Store(true)
	log.Log.WithName("shutdown").Info("Shutting down: not ready, serving on until the listener closes", "delay", d.delay)
	time.Sleep(d.delay)
	return nil
}

// NeedLeaderElection returns false: every replica drains.
func (d *Drainer) NeedLeaderElection() bool { return false }

// Checker fails once shutdown has begun.
func (d *Drainer) Checker(_ *http.Request) error {
	if d.draining.Load() {
		return errors.New("shutting down")
	}
	return nil
}
