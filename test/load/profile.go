package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
)

// profile drives serve at concurrency n while it records a 15 s CPU profile
// and then reads its allocation profile, into dir as cpu.pprof and
// allocs.pprof (read them with go tool pprof -top).
func profile(serve *server, tlsCfg *tls.Config, body []byte, n int, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var stop atomic.Bool
	done := make(chan result)
	go func() { done <- driveUntil(serve, tlsCfg, body, n, &stop) }()
	defer func() {
		stop.Store(true)
		<-done
	}()
	for _, p := range []struct{ name, path string }{
		{"cpu.pprof", "/debug/pprof/profile?seconds=15"},
		{"allocs.pprof", "/debug/pprof/allocs"},
	} {
		if err := fetch("http://"+pprofAddr+p.path, filepath.Join(dir, p.name)); err != nil {
			return err
		}
	}
	fmt.Printf("profiles of injector serve at c=%d: %s/cpu.pprof, %s/allocs.pprof\n", n, dir, dir)
	return nil
}

func fetch(url, path string) error {
	resp, err := http.Get(url) //nolint:gosec,noctx // loopback, a fixed address
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
