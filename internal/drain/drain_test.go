package drain

import (
	"context"
	"net/http"
	"testing"
	"time"
)

func TestDrainerTurnsReadinessOffBeforeItReturns(t *testing.T) {
	d := New(300 * time.Millisecond)
	if err := d.Checker(&http.Request{}); err != nil {
		t.Fatalf("not ready before shutdown: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- d.Start(ctx) }()
	cancel()
	// Readiness fails while the drainer still holds the shutdown.
	for d.Checker(&http.Request{}) == nil {
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("the drainer returned (%v) before its delay", err)
	default:
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if held := time.Since(start); held < d.delay {
		t.Fatalf("held the shutdown for %v, want at least %v", held, d.delay)
	}
}

func TestDrainerRunsOnEveryReplica(t *testing.T) {
	if New(time.Second).NeedLeaderElection() {
		t.Fatal("the drainer waits for leadership; every replica must drain")
	}
}

func TestGracePeriod(t *testing.T) {
	if got, want := GracePeriod(5*time.Second), 25*time.Second; got != want {
		t.Fatalf("GracePeriod(5s) = %v, want %v", got, want)
	}
}
