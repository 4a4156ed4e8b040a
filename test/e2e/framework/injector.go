package framework

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/remora-mesh/remora/internal/testenv"
)

// BuildInjector builds the injector binary from the repository into dir.
func BuildInjector(repoRoot, dir string) (string, error) {
	out := filepath.Join(dir, "injector")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/injector") //nolint:gosec // the harness's own build directory
	cmd.Dir = repoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/injector: %w\n%s", err, b)
	}
	return out, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// InjectorOptions configure StartInjector.
type InjectorOptions struct {
	// Binary is the injector executable.
	Binary string
	// Kubeconfig is the kubeconfig file the injector uses.
	Kubeconfig string
	// CertDir holds tls.crt and tls.key.
	CertDir string
	// ConfigDir is the configuration directory; empty for the defaults.
	ConfigDir string
	// Namespace is the injector's own namespace.
	Namespace string
	// LogPath receives the injector's output.
	LogPath string
	// Port, MetricsPort and ProbePort are the listening ports; zero picks
	// free ones.
	Port, MetricsPort, ProbePort int
	// ShutdownDelay is --shutdown-delay (zero: one second).
	ShutdownDelay time.Duration
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
	// Wrapper, when set, is a command the injector runs under: the process
	// started is Wrapper[0] with Wrapper[1:], the binary and its arguments.
	// It must exec the injector in its own process (keeping the pid), such
	// as a shell that enters a cgroup first.
	Wrapper []string
	// MetricsToken, when set, is the bearer token Metrics sends to the
	// HTTPS /metrics endpoint (--metrics-secure); MetricsRoots verify its
	// certificate. Without it StartInjector passes --metrics-secure=false:
	// tests not about the endpoint's protection read it over plain HTTP.
	MetricsToken string
	MetricsRoots *x509.CertPool
	// MetricsServerName is the name the metrics certificate is verified
	// for (default 127.0.0.1).
	MetricsServerName string
}

// Injector is a running "injector serve" process.
type Injector struct {
	*testenv.Process
	// Opts are the options it was started with, ports filled in.
	Opts InjectorOptions
}

// StartInjector starts "injector serve" and waits until /readyz passes.
func StartInjector(ctx context.Context, opts InjectorOptions) (*Injector, error) {
	inj, err := LaunchInjector(opts)
	if err != nil {
		return nil, err
	}
	if err := inj.WaitReady(ctx, 60*time.Second); err != nil {
		_ = inj.Stop(5 * time.Second)
		return nil, err
	}
	return inj, nil
}

// LaunchInjector starts "injector serve" and returns at once, for callers
// that measure its start-up; WaitReady waits for it.
func LaunchInjector(opts InjectorOptions) (*Injector, error) {
	for _, port := range []*int{&opts.Port, &opts.MetricsPort, &opts.ProbePort} {
		if *port == 0 {
			p, err := FreePort()
			if err != nil {
				return nil, err
			}
			*port = p
		}
	}
	if opts.ShutdownDelay == 0 {
		opts.ShutdownDelay = time.Second
	}
	args := []string{"serve",
		"--kubeconfig=" + opts.Kubeconfig,
		"--port=" + strconv.Itoa(opts.Port),
		"--cert-dir=" + opts.CertDir,
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(opts.MetricsPort),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(opts.ProbePort),
		"--namespace=" + opts.Namespace,
		"--shutdown-delay=" + opts.ShutdownDelay.String(),
		"--zap-log-level=debug",
	}
	if opts.ConfigDir != "" {
		args = append(args, "--config-dir="+opts.ConfigDir)
	}
	if opts.MetricsToken == "" {
		args = append(args, "--metrics-secure=false")
	}
	args = append(args, opts.ExtraArgs...)
	path := opts.Binary
	if len(opts.Wrapper) > 0 {
		path = opts.Wrapper[0]
		args = append(append(append([]string{}, opts.Wrapper[1:]...), opts.Binary), args...)
	}
	p, err := testenv.StartProcess("injector", opts.LogPath, path, args...)
	if err != nil {
		return nil, err
	}
	return &Injector{Process: p, Opts: opts}, nil
}

// WebhookURL returns the URL of path on the webhook server.
func (i *Injector) WebhookURL(path string) string {
	return fmt.Sprintf("https://127.0.0.1:%d%s", i.Opts.Port, path)
}

// MetricsURL returns the URL of /metrics: https when the injector was given
// a MetricsToken.
func (i *Injector) MetricsURL() string {
	scheme := "http"
	if i.Opts.MetricsToken != "" {
		scheme = "https"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d/metrics", scheme, i.Opts.MetricsPort)
}

// ReadyzURL returns the URL of /readyz.
func (i *Injector) ReadyzURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/readyz", i.Opts.ProbePort)
}

// WaitReady polls /readyz until it answers 200, the process exits or the
// timeout passes.
func (i *Injector) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		if exited, err := i.Exited(); exited {
			return fmt.Errorf("the injector exited before becoming ready: %w\n%s", err, i.LogTail(40))
		}
		code, body, err := Get(ctx, i.ReadyzURL()+"?verbose")
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("%d %s %v", code, body, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("the injector was not ready within %v (last /readyz: %s)\n%s", timeout, last, i.LogTail(40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Readyz returns the status code of /readyz.
func (i *Injector) Readyz(ctx context.Context) (int, error) {
	code, _, err := Get(ctx, i.ReadyzURL())
	return code, err
}

// Metrics returns the Prometheus text exposition of /metrics, read with
// Opts.MetricsToken over HTTPS when it is set.
func (i *Injector) Metrics(ctx context.Context) (string, error) {
	code, body, err := i.MetricsAs(ctx, i.Opts.MetricsToken)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d: %s", i.MetricsURL(), code, body)
	}
	return body, nil
}

// MetricsAs sends GET /metrics with token as the bearer token (none when
// empty) and returns the status code and the body.
func (i *Injector) MetricsAs(ctx context.Context, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, i.MetricsURL(), nil)
	if err != nil {
		return 0, "", fmt.Errorf("building the /metrics request: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	serverName := i.Opts.MetricsServerName
	if serverName == "" {
		serverName = "127.0.0.1"
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: i.Opts.MetricsRoots, ServerName: serverName, MinVersion: tls.VersionTLS12},
	}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", i.MetricsURL(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// ServingCertSerial dials the webhook port and returns the serial number of
// the certificate it presents, verified against roots.
func (i *Injector) ServingCertSerial(roots *x509.CertPool) (string, error) {
	serial, err := ServedSerial(fmt.Sprintf("127.0.0.1:%d", i.Opts.Port), "127.0.0.1", roots)
	if err != nil {
		return "", fmt.Errorf("TLS dial of the webhook: %w", err)
	}
	return serial, nil
}

// Get GETs url and returns the status code and the body.
func Get(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Dir returns a new directory under parent, for a component's files.
func Dir(parent, name string) (string, error) {
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	return dir, nil
}
