package framework

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// Balancer forwards TCP connections to a set of backends, as a Service
// does: each new connection goes to the next backend in turn, and to the
// one after it when a backend refuses the connection. TLS passes through.
type Balancer struct {
	listener net.Listener

	mu       sync.Mutex
	backends []string
	next     int
	conns    map[net.Conn]struct{}
	closed   bool
	wg       sync.WaitGroup
}

// StartBalancer listens on a free port of 127.0.0.1 and forwards to
// backends (host:port).
func StartBalancer(backends ...string) (*Balancer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}
	b := &Balancer{listener: l, backends: backends, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.serve()
	return b, nil
}

// Addr returns the address the balancer listens on.
func (b *Balancer) Addr() string { return b.listener.Addr().String() }

// URL returns an https URL of path through the balancer.
func (b *Balancer) URL(path string) string { return "https://" + b.Addr() + path }

// SetBackends replaces the backends for new connections.
func (b *Balancer) SetBackends(backends ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = slices.Clone(backends)
}

// Close stops listening and closes every forwarded connection.
func (b *Balancer) Close() error {
	err := b.listener.Close()
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
	return err
}

func (b *Balancer) serve() {
	defer b.wg.Done()
	for {
		in, err := b.listener.Accept()
		if err != nil {
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.forward(in)
		}()
	}
}

// track registers c to be closed by Close; false if Close already ran.
func (b *Balancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *Balancer) untrack(c net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.conns, c)
}

// dial connects to the next backend that accepts.
func (b *Balancer) dial() (net.Conn, error) {
	b.mu.Lock()
	backends, start := slices.Clone(b.backends), b.next
	b.next++
	b.mu.Unlock()
	var errs []error
	for i := range backends {
		addr := backends[(start+i)%len(backends)]
		out, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			return out, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no backend accepted the connection: %w", errors.Join(errs...))
}

func (b *Balancer) forward(in net.Conn) {
	defer func() { _ = in.Close() }()
	if !b.track(in) {
		return
	}
	defer b.untrack(in)
	out, err := b.dial()
	if err != nil {
		return
	}
	defer func() { _ = out.Close() }()
	if !b.track(out) {
		return
	}
	defer b.untrack(out)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Either side closing ends the connection.
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}
