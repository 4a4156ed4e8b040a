package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/test/images/internal/grpchealth"
)

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAppProbes runs each kind of rewritten probe through the status server
// against real listeners on 127.0.0.1, as ISTIO_KUBE_APP_PROBERS describes
// them.
func TestAppProbes(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" || !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(app.Close)
	u, _ := url.Parse(app.URL)
	httpPort := u.Port()

	grpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	grpcSrv := &http.Server{Handler: grpchealth.Handler(healthy.Load), Protocols: grpchealth.Protocols(), ReadHeaderTimeout: time.Second}
	go func() { _ = grpcSrv.Serve(grpcLn) }()
	t.Cleanup(func() { _ = grpcSrv.Close() })
	grpcPort := portOf(t, grpcLn.Addr().String())

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := portOf(t, closed.Addr().String())
	_ = closed.Close()

	probers, err := parseProbers(`{
		"/app-health/app/livez":{"httpGet":{"path":"/health","port":` + httpPort + `}},
		"/app-health/app/readyz":{"httpGet":{"path":"/other","port":"` + httpPort + `"},"timeoutSeconds":2},
		"/app-health/app/startupz":{"tcpSocket":{"port":` + httpPort + `}},
		"/app-health/db/livez":{"tcpSocket":{"port":` + closedPort + `}},
		"/app-health/grpc/readyz":{"grpc":{"port":` + grpcPort + `,"service":null}},
		"/app-lifecycle/app/prestopz":{"httpGet":{"path":"health","port":` + httpPort + `}}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{probers: probers, start: time.Now(), quit: make(chan string, 1)}
	status := httptest.NewServer(a.statusMux())
	t.Cleanup(status.Close)

	get := func(path string) int {
		t.Helper()
		resp, err := http.Get(status.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for path, want := range map[string]int{
		"/app-health/app/livez":       200,
		"/app-health/app/readyz":      503, // the app answers 503 on /other
		"/app-health/app/startupz":    200,
		"/app-health/db/livez":        503, // nothing listens
		"/app-health/grpc/readyz":     200,
		"/app-lifecycle/app/prestopz": 200,
		"/app-health/unknown/livez":   404,
		"/healthz/ready":              200,
	} {
		if got := get(path); got != want {
			t.Errorf("GET %s = %d, want %d", path, got, want)
		}
	}
	healthy.Store(false)
	for _, path := range []string{"/app-health/app/livez", "/app-health/grpc/readyz"} {
		if got := get(path); got != 503 {
			t.Errorf("unhealthy app: GET %s = %d, want 503", path, got)
		}
	}

	// /drain and /quitquitquit take POST from localhost only.
	if resp, err := http.Get(status.URL + "/quitquitquit"); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /quitquitquit: %v %v", resp, err)
	}
	for _, p := range []string{"/drain", "/quitquitquit"} {
		resp, err := http.Post(status.URL+p, "text/plain", nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST %s: %v %v", p, resp, err)
		}
	}
	if got := get("/healthz/ready"); got != 503 {
		t.Errorf("after drain /healthz/ready = %d, want 503", got)
	}
	select {
	case <-a.quit:
	default:
		t.Error("POST /quitquitquit did not ask the agent to exit")
	}
}

func TestParseProbersRejects(t *testing.T) {
	for _, s := range []string{
		`{"/app-health/a/livez":{}}`,
		`{"/app-health/a/livez":{"httpGet":{"port":80},"tcpSocket":{"port":80}}}`,
		`{"/app-health/a/livez":{"httpGet":{"port":"http"}}}`,
		`not json`,
	} {
		if _, err := parseProbers(s); err == nil {
			t.Errorf("parseProbers(%s) succeeded", s)
		}
	}
}

func TestReadyDelay(t *testing.T) {
	a := &agent{start: time.Now(), readyDelay: time.Hour}
	if a.ready() {
		t.Error("ready before the delay")
	}
	a.start = time.Now().Add(-2 * time.Hour)
	if !a.ready() {
		t.Error("not ready after the delay")
	}
}

func TestFlagValue(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
		rest string
	}{
		{[]string{"--debug-port=15020", "POST", "drain"}, "15020", "POST drain"},
		{[]string{"POST", "--debug-port", "15020", "drain"}, "15020", "POST drain"},
		{[]string{"-debug-port=1", "POST"}, "1", "POST"},
	} {
		got, rest, ok := flagValue(tc.args, "debug-port")
		if !ok || got != tc.want || strings.Join(rest, " ") != tc.rest {
			t.Errorf("flagValue(%q) = %q %q %v", tc.args, got, rest, ok)
		}
	}
	if _, _, ok := flagValue([]string{"POST", "drain"}, "debug-port"); ok {
		t.Error("found a flag that is not there")
	}
}
