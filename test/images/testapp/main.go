// Command testapp is the test-only application image of the e2e suite: one
// static multi-call binary, the role chosen by the first argument (or by the
// name it is called as). It is never shipped.
//
//	testapp server   logs whether a sidecar answers 127.0.0.1:15021/healthz/ready
//	                 ("app start: sidecar ready=true"), then serves
//	                 HTTP on HTTP_PORT (8080): GET /health (200, or 503 after
//	                 POST /fail until POST /recover), GET / and /whoami (who
//	                 called, on which address), GET /call?target=IP:PORT
//	                 [&mode=tcp|http&path=/x] (the app opens a connection
//	                 itself: outbound traffic on demand); a TCP greeting on
//	                 TCP_PORT (9090); gRPC health (grpc.health.v1.Health/Check,
//	                 SERVING while /health is healthy) on GRPC_PORT (9091).
//	testapp client [TARGET]
//	                 connects to TARGET (or $TARGET, IP:PORT) with MODE tcp
//	                 (default) or http (HTTP_PATH, default /), prints one line per
//	                 attempt: "ok target=... local=... reply=..." or "fail
//	                 target=... err=...". COUNT attempts (1; 0 = until
//	                 SIGTERM) every INTERVAL (1s); exits 1 if the last failed.
//	testapp job [SECONDS]
//	                 a batch job: connects to $TARGET first if set (exits 1 if
//	                 that fails), works for SECONDS (or $JOB_SECONDS, 3), and,
//	                 with QUIT_PROXY=true, POSTs
//	                 http://127.0.0.1:15020/quitquitquit (classic sidecars
//	                 must be told to stop), then exits 0.
//	testapp mysql    a MySQL-port stand-in: TCP on MYSQL_PORT (3306) greets
//	                 and records each peer; HTTP on HTTP_PORT (8080) serves
//	                 GET /conns (JSON) and /health. A connection that bypassed
//	                 the proxy arrives from the client's own address and port
//	                 (compare with the client's "local=").
//	testapp sleep    does nothing until SIGTERM.
//
// Every role exits 0 on SIGTERM or SIGINT.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

func main() {
	role := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if role == "testapp" || role == "main" {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, "usage: testapp server|client|job|mysql|sleep [args]")
			os.Exit(2)
		}
		role, args = args[0], args[1:]
	}
	go exitOnSignal()
	var err error
	switch role {
	case "server":
		err = runServer()
	case "client":
		err = runClient(args)
	case "job":
		err = runJob(args)
	case "mysql":
		err = runMySQL()
	case "sleep":
		select {}
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		logf("error: %v", err)
		os.Exit(1)
	}
}

func exitOnSignal() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	s := <-c
	logf("got %v, exiting", s)
	os.Exit(0)
}

func logf(format string, args ...any) {
	_, _ = fmt.Fprintf(os.Stdout, time.Now().UTC().Format("2006-01-02T15:04:05.000Z")+" "+format+"\n", args...)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}
