package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/remora-mesh/remora/test/images/internal/grpchealth"
)

// port is a probe port: a number, or a number in a string (Istio resolves
// named ports before it writes ISTIO_KUBE_APP_PROBERS).
type port int

func (p *port) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case float64:
		*p = port(v)
	case string:
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("named port %q was not resolved", v)
		}
		*p = port(n)
	default:
		return fmt.Errorf("port %s", b)
	}
	return nil
}

// prober is one entry of ISTIO_KUBE_APP_PROBERS: the application's original
// probe (or lifecycle hook) behind a rewritten status-port path.
type prober struct {
	HTTPGet *struct {
		Path        string `json:"path"`
		Port        port   `json:"port"`
		Host        string `json:"host"`
		Scheme      string `json:"scheme"`
		HTTPHeaders []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"httpHeaders"`
	} `json:"httpGet"`
	TCPSocket *struct {
		Port port   `json:"port"`
		Host string `json:"host"`
	} `json:"tcpSocket"`
	GRPC *struct {
		Port    port    `json:"port"`
		Service *string `json:"service"`
	} `json:"grpc"`
	TimeoutSeconds int `json:"timeoutSeconds"`
}

func parseProbers(s string) (map[string]prober, error) {
	m := map[string]prober{}
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("ISTIO_KUBE_APP_PROBERS: %w", err)
	}
	for path, p := range m {
		n := 0
		for _, set := range []bool{p.HTTPGet != nil, p.TCPSocket != nil, p.GRPC != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			return nil, fmt.Errorf("ISTIO_KUBE_APP_PROBERS: %s: want exactly one of httpGet, tcpSocket, grpc", path)
		}
	}
	return m, nil
}

// appHost is where the application's probes go.
const appHost = "127.0.0.1"

// run performs the probe against the application and returns nil when it
// passes: HTTP status 200-399, a TCP connection, or gRPC SERVING.
func (p prober) run(ctx context.Context) error {
	timeout := time.Duration(p.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Second // the kubelet's default
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		g := p.HTTPGet
		scheme := strings.ToLower(g.Scheme)
		if scheme == "" {
			scheme = "http"
		}
		host := g.Host
		if host == "" {
			host = appHost
		}
		path := g.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			scheme+"://"+net.JoinHostPort(host, strconv.Itoa(int(g.Port)))+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "kube-probe/remora-stand-in")
		for _, h := range g.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		client := &http.Client{
			Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // probes skip verification, as the kubelet's do
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("http status %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		host := p.TCPSocket.Host
		if host == "" {
			host = appHost
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(int(p.TCPSocket.Port))))
		if err != nil {
			return err
		}
		return c.Close()
	case p.GRPC != nil:
		service := ""
		if p.GRPC.Service != nil {
			service = *p.GRPC.Service
		}
		st, err := grpchealth.Check(ctx, net.JoinHostPort(appHost, strconv.Itoa(int(p.GRPC.Port))), service)
		if err != nil {
			return err
		}
		if st != grpchealth.StatusServing {
			return fmt.Errorf("grpc health status %d", st)
		}
		return nil
	}
	return errors.New("empty prober")
}

func (a *agent) statusMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz/ready", a.handleReady)
	mux.HandleFunc("/app-health/", a.handleAppProbe)
	mux.HandleFunc("/app-lifecycle/", a.handleAppProbe)
	mux.HandleFunc("/quitquitquit", a.localPost(func(w http.ResponseWriter) {
		_, _ = io.WriteString(w, "OK\n")
		select {
		case a.quit <- "POST /quitquitquit":
		default:
		}
	}))
	mux.HandleFunc("/drain", a.localPost(func(w http.ResponseWriter) {
		a.draining.Store(true)
		logf("drain requested: readiness now fails")
		_, _ = io.WriteString(w, "OK\n")
	}))
	mux.HandleFunc("/debug/conns", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, a.conns.snapshot())
	})
	mux.HandleFunc("/debug/info", func(w http.ResponseWriter, _ *http.Request) {
		paths := make([]string, 0, len(a.probers))
		for p := range a.probers {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		writeJSON(w, map[string]any{
			"args": a.args, "uid": os.Getuid(), "gid": os.Getgid(), "ready": a.ready(),
			"draining": a.draining.Load(), "started": a.start.UTC(), "probers": paths,
		})
	})
	mux.HandleFunc("/stats/prometheus", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = fmt.Fprintf(w, "# TYPE standin_connections_total counter\n")
		for _, d := range []string{"inbound", "outbound"} {
			_, _ = fmt.Fprintf(w, "standin_connections_total{direction=%q} %d\n", d, a.conns.count(d))
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (a *agent) handleReady(w http.ResponseWriter, _ *http.Request) {
	if !a.ready() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

func (a *agent) handleAppProbe(w http.ResponseWriter, r *http.Request) {
	p, ok := a.probers[r.URL.Path]
	if !ok {
		http.Error(w, "no prober for "+r.URL.Path, http.StatusNotFound)
		return
	}
	if err := p.run(r.Context()); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "OK\n")
}

// localPost allows only POST requests from a loopback address, like the
// agent's /quitquitquit and /drain.
func (a *agent) localPost(f func(http.ResponseWriter)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil || !ap.Addr().Unmap().IsLoopback() {
			http.Error(w, "only requests from localhost are allowed", http.StatusForbidden)
			return
		}
		f(w)
	}
}

// runRequest is `pilot-agent request [--debug-port=N] METHOD PATH [BODY]`.
func runRequest(args []string) error {
	portStr, args, ok := flagValue(args, "debug-port")
	if !ok {
		portStr = "15000"
	}
	if len(args) < 2 {
		return errors.New("usage: request [--debug-port=N] METHOD PATH [BODY]")
	}
	var body io.Reader
	if len(args) > 2 {
		body = bytes.NewBufferString(args[2])
	}
	url := "http://localhost:" + portStr + "/" + strings.TrimPrefix(args[1], "/")
	req, err := http.NewRequest(strings.ToUpper(args[0]), url, body) //nolint:gosec // G704: localhost, as the hook asks
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req) //nolint:gosec // G704: localhost, as the hook asks
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(os.Stdout, resp.Body)
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: status %d", args[0], url, resp.StatusCode)
	}
	return nil
}

// runWait is `pilot-agent wait`: poll the readiness URL until it answers 200
// or the timeout passes (Istio's defaults).
func runWait(args []string) error {
	timeout, period, url := 60*time.Second, 500*time.Millisecond, "http://localhost:15021/healthz/ready"
	if v, rest, ok := flagValue(args, "timeoutSeconds"); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("--timeoutSeconds=%q", v)
		}
		timeout, args = time.Duration(n)*time.Second, rest
	}
	if v, rest, ok := flagValue(args, "periodMillis"); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("--periodMillis=%q", v)
		}
		period, args = time.Duration(n)*time.Millisecond, rest
	}
	if v, _, ok := flagValue(args, "url"); ok {
		url = v
	}
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for attempt := 1; ; attempt++ {
		resp, err := client.Get(url) //nolint:gosec // G704: the readiness URL the hook names
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				logf("proxy ready after %d attempt(s)", attempt)
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().Add(period).After(deadline) {
			return fmt.Errorf("proxy not ready after %v: %w", timeout, err)
		}
		time.Sleep(period)
	}
}
