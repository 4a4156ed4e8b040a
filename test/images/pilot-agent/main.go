// Command pilot-agent is a test-only stand-in for Istio's proxy (the
// pilot-agent + Envoy pair in the proxyv2 image). It speaks the part of that
// interface an injected pod uses, so pods injected by Remora run on the e2e
// node with real traffic capture but without Istio. It is never shipped.
//
//	pilot-agent proxy sidecar [flags ignored]   the sidecar (the injected container's args)
//	pilot-agent request [--debug-port=N] METHOD PATH [BODY]
//	                                            the preStop hook: METHOD http://localhost:N/PATH, exit 0 on 2xx
//	pilot-agent wait [--timeoutSeconds=60] [--periodMillis=500] [--url=URL]
//	                                            the classic-mode postStart hook: block until the proxy is ready
//	pilot-agent version
//
// The sidecar:
//   - accepts captured connections on 15001 (outbound) and 15006 (inbound),
//     reads each one's original destination with SO_ORIGINAL_DST (what
//     iptables REDIRECT rewrote), logs "conn inbound|outbound orig=IP:PORT
//     from=IP:PORT" to standard output, records it, and forwards the bytes to
//     the original destination. It runs as UID 1337, so its own connections
//     are not captured again; inbound connections are dialed from 127.0.0.6,
//     as Envoy's inbound passthrough does, which the capture rules let
//     through (the UID rule alone would send a connection to the pod's own
//     address back to 15006).
//   - serves /healthz/ready on 15021 (Envoy's readiness port) and on the
//     status port, 503 until READY_DELAY (e.g. "2s") has passed and after a
//     drain.
//   - runs the agent's status server on the status port (15020; --statusPort
//     or STATUS_PORT): the rewritten application probes and lifecycle hooks
//     (/app-health/CONTAINER/livez|readyz|startupz, /app-lifecycle/...), run
//     from the ISTIO_KUBE_APP_PROBERS JSON against 127.0.0.1; POST
//     /quitquitquit (exit 0) and POST /drain, from localhost only, as Istio
//     allows; /debug/conns (JSON of the recorded connections); /debug/info;
//     /stats/prometheus.
//   - exits 0 on SIGTERM or SIGINT.
//
// Ports: OUTBOUND_PORT (15001), INBOUND_PORT (15006), READY_PORT (15021).
// Only IPv4 and REDIRECT interception are forwarded; TPROXY is not
// implemented.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		usage()
	}
	var err error
	switch args[0] {
	case "proxy":
		err = runProxy(args[1:])
	case "request":
		err = runRequest(args[1:])
	case "wait":
		err = runWait(args[1:])
	case "version":
		fmt.Println("pilot-agent stand-in (remora test image)")
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pilot-agent:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s proxy sidecar|request [--debug-port=N] METHOD PATH|wait [--timeoutSeconds=N]|version\n",
		filepath.Base(os.Args[0]))
	os.Exit(2)
}

// flagValue finds --name=value or --name value (or a single dash) in args and
// returns the value and the args without the flag.
func flagValue(args []string, name string) (string, []string, bool) {
	for i, a := range args {
		trimmed := strings.TrimLeft(a, "-")
		if len(trimmed) == len(a) {
			continue
		}
		if v, ok := strings.CutPrefix(trimmed, name+"="); ok {
			return v, append(append([]string(nil), args[:i]...), args[i+1:]...), true
		}
		if trimmed == name && i+1 < len(args) {
			return args[i+1], append(append([]string(nil), args[:i]...), args[i+2:]...), true
		}
	}
	return "", args, false
}
