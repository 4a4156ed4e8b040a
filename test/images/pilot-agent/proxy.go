package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// inboundPassthroughSource is the source address Envoy uses when it forwards
// an inbound connection to the application (Istio's
// InboundPassthroughClusterIpv4). The capture rules return traffic from it
// on lo before the proxy-UID rule, which would otherwise send a connection
// to the pod's own address straight back to the inbound port.
var inboundPassthroughSource = netip.MustParseAddr("127.0.0.6")

// maxConns bounds the connection log.
const maxConns = 1000

// Conn is one captured connection, as /debug/conns returns it.
type Conn struct {
	// Direction is "inbound" (arrived on the inbound port) or "outbound".
	Direction string `json:"direction"`
	// Orig is the original destination, read with SO_ORIGINAL_DST.
	Orig string `json:"orig"`
	// From is the peer that opened the captured connection.
	From string `json:"from"`
	// Upstream is the local address of the proxy's connection to Orig.
	Upstream string `json:"upstream,omitempty"`
	// Error says why the connection was not forwarded.
	Error string    `json:"error,omitempty"`
	Time  time.Time `json:"time"`
}

// connLog is the bounded, concurrency-safe list of captured connections.
type connLog struct {
	mu      sync.Mutex
	conns   []Conn
	dropped int
	counts  map[string]int
}

func (l *connLog) add(c Conn) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[string]int{}
	}
	l.counts[c.Direction]++
	if len(l.conns) == maxConns {
		l.conns = l.conns[1:]
		l.dropped++
	}
	l.conns = append(l.conns, c)
	return l.dropped + len(l.conns) - 1
}

func (l *connLog) update(id int, f func(*Conn)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := id - l.dropped; i >= 0 && i < len(l.conns) {
		f(&l.conns[i])
	}
}

func (l *connLog) snapshot() []Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Conn{}, l.conns...)
}

func (l *connLog) count(direction string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[direction]
}

// agent is the running sidecar.
type agent struct {
	args       []string
	start      time.Time
	readyDelay time.Duration
	draining   atomic.Bool
	conns      connLog
	probers    map[string]prober
	quit       chan string
}

func (a *agent) ready() bool {
	return !a.draining.Load() && time.Since(a.start) >= a.readyDelay
}

func envPort(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func runProxy(args []string) error {
	a := &agent{args: args, start: time.Now(), quit: make(chan string, 1)}
	if v := os.Getenv("READY_DELAY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("READY_DELAY=%q: %w", v, err)
		}
		a.readyDelay = d
	}
	probers, err := parseProbers(os.Getenv("ISTIO_KUBE_APP_PROBERS"))
	if err != nil {
		return err
	}
	a.probers = probers

	statusPort := envPort("STATUS_PORT", 15020)
	if v, _, ok := flagValue(args, "statusPort"); ok {
		if p, err := strconv.Atoi(v); err == nil {
			statusPort = p
		}
	}
	outbound, inbound := envPort("OUTBOUND_PORT", 15001), envPort("INBOUND_PORT", 15006)
	readyPort := envPort("READY_PORT", 15021)

	var listeners []net.Listener
	for _, l := range []struct {
		port      int
		direction string
	}{{outbound, "outbound"}, {inbound, "inbound"}} {
		ln, err := net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(l.port)))
		if err != nil {
			return err
		}
		listeners = append(listeners, ln)
		go a.accept(ln, l.direction, outbound, inbound)
	}
	servers := []*http.Server{
		{Addr: ":" + strconv.Itoa(statusPort), Handler: a.statusMux(), ReadHeaderTimeout: 10 * time.Second},
		{Addr: ":" + strconv.Itoa(readyPort), Handler: http.HandlerFunc(a.handleReady), ReadHeaderTimeout: 10 * time.Second},
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		ln, err := net.Listen("tcp", s.Addr)
		if err != nil {
			return err
		}
		go func() { errc <- s.Serve(ln) }()
	}
	logf("pilot-agent stand-in started: args=%q uid=%d outbound=%d inbound=%d status=%d ready=%d ready-delay=%v probers=%d",
		args, os.Getuid(), outbound, inbound, statusPort, readyPort, a.readyDelay, len(a.probers))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		logf("got %v, exiting", s)
	case why := <-a.quit:
		logf("%s, exiting", why)
	case err := <-errc:
		return err
	}
	for _, ln := range listeners {
		_ = ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(ctx)
	}
	return nil
}

func logf(format string, args ...any) {
	_, _ = fmt.Fprintf(os.Stdout, time.Now().UTC().Format("2006-01-02T15:04:05.000Z")+" "+format+"\n", args...)
}

func (a *agent) accept(ln net.Listener, direction string, ownPorts ...int) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				logf("accept %s: %v", direction, err)
			}
			return
		}
		go a.handle(c.(*net.TCPConn), direction, ownPorts)
	}
}

// handle records a captured connection and forwards it to its original
// destination.
func (a *agent) handle(c *net.TCPConn, direction string, ownPorts []int) {
	defer func() { _ = c.Close() }()
	rec := Conn{Direction: direction, From: c.RemoteAddr().String(), Time: time.Now().UTC()}
	orig, err := originalDst(c)
	if err == nil {
		rec.Orig = orig.String()
		for _, p := range ownPorts {
			if int(orig.Port()) == p {
				err = fmt.Errorf("original destination %s is the proxy itself (not a redirected connection)", orig)
			}
		}
	}
	if err != nil {
		rec.Error = err.Error()
		a.conns.add(rec)
		logf("conn %s orig=%s from=%s error=%q", direction, rec.Orig, rec.From, rec.Error)
		return
	}
	id := a.conns.add(rec)
	logf("conn %s orig=%s from=%s", direction, rec.Orig, rec.From)

	d := net.Dialer{Timeout: 5 * time.Second}
	if direction == "inbound" {
		d.LocalAddr = &net.TCPAddr{IP: inboundPassthroughSource.AsSlice()}
	}
	up, err := d.Dial("tcp", orig.String())
	if err != nil {
		a.conns.update(id, func(r *Conn) { r.Error = err.Error() })
		logf("conn %s orig=%s from=%s error=%q", direction, rec.Orig, rec.From, err.Error())
		return
	}
	upstream := up.(*net.TCPConn)
	defer func() { _ = upstream.Close() }()
	a.conns.update(id, func(r *Conn) { r.Upstream = upstream.LocalAddr().String() })
	pipe(c, upstream)
}

// pipe copies both ways until both sides are done, passing half-closes on.
func pipe(a, b *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src *net.TCPConn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		_ = dst.CloseWrite()
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}

// originalDst reads the destination a connection had before iptables
// REDIRECT rewrote it (SO_ORIGINAL_DST, IPv4).
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var (
		mreq   *unix.IPv6Mreq
		sysErr error
	)
	// The kernel writes a struct sockaddr_in (16 bytes); IPv6Mreq is a 20-byte
	// buffer that holds it.
	if err := raw.Control(func(fd uintptr) {
		mreq, sysErr = unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, unix.SO_ORIGINAL_DST)
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if sysErr != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", sysErr)
	}
	b := mreq.Multiaddr // sa_family (2), port (2, big endian), address (4)
	port := binary.BigEndian.Uint16(b[2:4])
	addr := netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]})
	return netip.AddrPortFrom(addr, port), nil
}
