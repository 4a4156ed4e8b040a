package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/remora-mesh/remora/test/images/internal/grpchealth"
)

// connInfo describes who connected where.
type connInfo struct {
	Name  string    `json:"name,omitempty"`
	Peer  string    `json:"peer"`
	Local string    `json:"local"`
	Time  time.Time `json:"time"`
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func localAddr(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a.String()
	}
	return ""
}

func serve(addr string, h http.Handler) chan error {
	errc := make(chan error, 1)
	s := &http.Server{Addr: addr, Handler: h, Protocols: grpchealth.Protocols(), ReadHeaderTimeout: 10 * time.Second}
	go func() { errc <- s.ListenAndServe() }()
	return errc
}

// runServer is the application: HTTP, TCP and gRPC health.
func runServer() error {
	name := os.Getenv("NAME")
	if name == "" {
		name = hostname()
	}
	var failing atomic.Bool
	failing.Store(os.Getenv("START_FAILING") == "true")
	httpPort, tcpPort, grpcPort := envInt("HTTP_PORT", 8080), envInt("TCP_PORT", 9090), envInt("GRPC_PORT", 9091)
	logf("app start: sidecar %s", sidecarReady())

	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			http.Error(w, "failing", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	toggle := func(fail bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				http.Error(w, "POST only", http.StatusMethodNotAllowed)
				return
			}
			failing.Store(fail)
			logf("health set to failing=%v by %s", fail, r.RemoteAddr)
			_, _ = io.WriteString(w, "OK\n")
		}
	}
	mux.HandleFunc("/fail", toggle(true))
	mux.HandleFunc("/recover", toggle(false))
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, connInfo{Name: name, Peer: r.RemoteAddr, Local: localAddr(r), Time: time.Now().UTC()})
	})
	mux.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		res := dial(r.Context(), q.Get("target"), q.Get("mode"), q.Get("path"))
		if res.err != nil {
			w.WriteHeader(http.StatusBadGateway)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, res.String()+"\n") //nolint:gosec // G705: plain text for tests
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		logf("http %s %s from=%s local=%s", r.Method, r.URL.Path, r.RemoteAddr, localAddr(r))
		_, _ = fmt.Fprintf(w, "hello from %s path=%s peer=%s local=%s\n", name, r.URL.Path, r.RemoteAddr, localAddr(r)) //nolint:gosec // G705: plain text for tests
	})
	httpErr := serve(":"+strconv.Itoa(httpPort), mux)
	grpcErr := serve(":"+strconv.Itoa(grpcPort), grpchealth.Handler(func() bool { return !failing.Load() }))

	ln, err := net.Listen("tcp", ":"+strconv.Itoa(tcpPort))
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			logf("tcp from=%s local=%s", c.RemoteAddr(), c.LocalAddr())
			_, _ = fmt.Fprintf(c, "tcp hello from %s peer=%s local=%s\n", name, c.RemoteAddr(), c.LocalAddr())
			_ = c.Close()
		}
	}()
	logf("server %s: http=%d tcp=%d grpc=%d failing=%v", name, httpPort, tcpPort, grpcPort, failing.Load())
	select {
	case err := <-httpErr:
		return err
	case err := <-grpcErr:
		return err
	}
}

// sidecarReady says whether a sidecar proxy in the pod answers its
// readiness endpoint: a native sidecar gated on readiness is ready before the
// application starts.
func sidecarReady() string {
	resp, err := (&http.Client{Timeout: time.Second}).Get("http://127.0.0.1:15021/healthz/ready")
	if err != nil {
		return fmt.Sprintf("ready=false (%v)", err)
	}
	_ = resp.Body.Close()
	return fmt.Sprintf("ready=%v (status %d)", resp.StatusCode == http.StatusOK, resp.StatusCode)
}

// dialResult is one client attempt.
type dialResult struct {
	target, local, reply string
	err                  error
}

func (r dialResult) String() string {
	if r.err != nil {
		return fmt.Sprintf("fail target=%s local=%s err=%q", r.target, r.local, r.err.Error())
	}
	return fmt.Sprintf("ok target=%s local=%s reply=%q", r.target, r.local, r.reply)
}

// dial connects to target and reads the first line (tcp) or GETs path (http).
func dial(ctx context.Context, target, mode, path string) dialResult {
	res := dialResult{target: target}
	if target == "" {
		res.err = errors.New("no target")
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		res.err = err
		return res
	}
	defer func() { _ = c.Close() }()
	res.local = c.LocalAddr().String()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	switch mode {
	case "", "tcp":
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil && (!errors.Is(err, io.EOF) || line == "") {
			res.err = fmt.Errorf("read: %w", err)
			return res
		}
		res.reply = strings.TrimSpace(line)
	case "http":
		if path == "" {
			path = "/"
		}
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, target); err != nil {
			res.err = err
			return res
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			res.err = err
			return res
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		res.reply = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		if resp.StatusCode >= 400 {
			res.err = fmt.Errorf("http status %d", resp.StatusCode)
		}
	default:
		res.err = fmt.Errorf("unknown mode %q", mode)
	}
	return res
}

// runClient connects to the target COUNT times.
func runClient(args []string) error {
	target := os.Getenv("TARGET")
	if len(args) > 0 {
		target = args[0]
	}
	count, interval := envInt("COUNT", 1), envDuration("INTERVAL", time.Second)
	var last dialResult
	for i := 0; count == 0 || i < count; i++ {
		if i > 0 {
			time.Sleep(interval)
		}
		last = dial(context.Background(), target, os.Getenv("MODE"), os.Getenv("HTTP_PATH"))
		fmt.Println(last.String())
	}
	return last.err
}

// runJob is a batch job that ends by itself.
func runJob(args []string) error {
	secs := envInt("JOB_SECONDS", 3)
	if len(args) > 0 {
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return fmt.Errorf("seconds %q: %w", args[0], err)
		}
		secs = n
	}
	logf("job start: work for %ds", secs)
	if target := os.Getenv("TARGET"); target != "" {
		res := dial(context.Background(), target, os.Getenv("MODE"), os.Getenv("HTTP_PATH"))
		logf("job %s", res)
		if res.err != nil {
			return res.err
		}
	}
	time.Sleep(time.Duration(secs) * time.Second)
	logf("job done")
	if os.Getenv("QUIT_PROXY") == "true" {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Post("http://127.0.0.1:15020/quitquitquit", "text/plain", nil)
		if err != nil {
			logf("quitquitquit: %v", err)
		} else {
			_ = resp.Body.Close()
			logf("quitquitquit: status %d", resp.StatusCode)
		}
	}
	return nil
}

// runMySQL records who connects to the MySQL port.
func runMySQL() error {
	mysqlPort, httpPort := envInt("MYSQL_PORT", 3306), envInt("HTTP_PORT", 8080)
	var (
		mu    sync.Mutex
		conns []connInfo
	)
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(mysqlPort))
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ci := connInfo{Peer: c.RemoteAddr().String(), Local: c.LocalAddr().String(), Time: time.Now().UTC()}
			mu.Lock()
			if len(conns) == 1000 {
				conns = conns[1:]
			}
			conns = append(conns, ci)
			mu.Unlock()
			logf("mysql from=%s local=%s", ci.Peer, ci.Local)
			_, _ = fmt.Fprintf(c, "mysql stand-in peer=%s\n", ci.Peer)
			_ = c.Close()
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("/conns", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		writeJSON(w, append([]connInfo{}, conns...))
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	logf("mysql stand-in: mysql=%d http=%d", mysqlPort, httpPort)
	return <-serve(":"+strconv.Itoa(httpPort), mux)
}
