package iptables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// probeIP is the loopback address the validation probe dials: not 127.0.0.1,
// which is never captured, and not 127.0.0.6, the proxy's passthrough source.
var probeIP = netip.AddrFrom4([4]byte{127, 0, 0, 2})

// ValidateCapture checks, from inside the pod's network namespace, that the
// capture rules are in place: it listens on the inbound capture port on
// 127.0.0.1, dials probe over loopback and expects the connection to arrive
// there with probe as its original destination. That is the path the rules
// give the proxy's own connections to a pod address over lo, so it must run
// as one of the proxy's UIDs or GIDs, as the injected istio-validation
// container does. It retries until timeout, for rules applied by the CNI
// plugin concurrently.
//
// It proves the nat OUTPUT hook and the inbound REDIRECT chain work; it cannot
// observe outbound capture, which exempts the proxy's UID. With inbound
// capture off there is nothing it can observe and it succeeds.
func ValidateCapture(ctx context.Context, cfg *Config, probe netip.AddrPort, timeout time.Duration, log logr.Logger) error {
	if !cfg.CapturesInbound() {
		log.Info("inbound capture is off (-b is empty): nothing to validate")
		return nil
	}
	uid, gid := os.Getuid(), os.Getgid()
	is := func(id int) func(uint32) bool { return func(v uint32) bool { return int64(v) == int64(id) } }
	if !slices.ContainsFunc(cfg.ProxyUIDs, is(uid)) && !slices.ContainsFunc(cfg.ProxyGIDs, is(gid)) {
		return fmt.Errorf("validation must run as the proxy's UID %v or GID %v (-u/-g), not uid %d gid %d: only the proxy's loopback connections are sent to the inbound capture port",
			cfg.ProxyUIDs, cfg.ProxyGIDs, uid, gid)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp4", net.JoinHostPort("127.0.0.1", itoa(cfg.InboundCapturePort)))
	if err != nil {
		return fmt.Errorf("listening on the inbound capture port: %w", err)
	}
	defer func() { _ = ln.Close() }()

	arrived := make(chan netip.AddrPort, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dst, err := originalDestination(c)
			_ = c.Close()
			if err == nil {
				arrived <- dst
			}
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastErr error
	for attempt := 1; ; attempt++ {
		lastErr = probeOnce(ctx, probe, arrived)
		if lastErr == nil {
			log.Info("traffic capture validated", "probe", probe.String(), "capturePort", cfg.InboundCapturePort, "attempts", attempt)
			return nil
		}
		log.V(1).Info("validation probe failed, retrying", "attempt", attempt, "error", lastErr.Error())
		select {
		case <-ctx.Done():
			return fmt.Errorf("traffic capture is not in place after %s: a connection to %s was not redirected to port %d: %w",
				timeout, probe, cfg.InboundCapturePort, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// probeOnce dials probe and waits for the connection on the capture listener.
func probeOnce(ctx context.Context, probe netip.AddrPort, arrived <-chan netip.AddrPort) error {
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "tcp4", probe.String())
	if err != nil {
		return fmt.Errorf("dialing the probe address: %w", err)
	}
	defer func() { _ = c.Close() }()
	for {
		select {
		case dst := <-arrived:
			if dst == probe {
				return nil
			}
			// A stale connection from an earlier attempt; keep waiting.
		case <-dctx.Done():
			return errors.New("connected, but not through the capture port: the rules are missing")
		}
	}
}

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h,
// which golang.org/x/sys/unix does not define.
const ip6tSoOriginalDst = 80

// originalDestination returns the destination a redirected TCP connection
// was addressed to before REDIRECT rewrote it (SO_ORIGINAL_DST, or
// IP6T_SO_ORIGINAL_DST for IPv6).
func originalDestination(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %T is not a socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	var dst netip.AddrPort
	var sockErr error
	err = raw.Control(func(fd uintptr) {
		if local.Addr().Unmap().Is4() {
			// struct sockaddr_in fits the 16 bytes of an IPv6Mreq.
			var m *unix.IPv6Mreq
			m, sockErr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if sockErr == nil {
				b := m.Multiaddr
				dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), binary.BigEndian.Uint16(b[2:4]))
			}
			return
		}
		// struct sockaddr_in6 fits the 32 bytes of an IPv6MTUInfo.
		var m *unix.IPv6MTUInfo
		m, sockErr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSoOriginalDst)
		if sockErr == nil {
			var port [2]byte
			binary.NativeEndian.PutUint16(port[:], m.Addr.Port)
			dst = netip.AddrPortFrom(netip.AddrFrom16(m.Addr.Addr), binary.BigEndian.Uint16(port[:]))
		}
	})
	if err == nil {
		err = sockErr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of the connection to %s: %w", c.LocalAddr(), err)
	}
	return dst, nil
}
