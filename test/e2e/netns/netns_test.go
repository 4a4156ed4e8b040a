// Package netns_test proves the traffic-capture rules of `injector
// istio-iptables` on real network namespaces: a "pod" namespace with the rules,
// a stand-in proxy and an application, and a "backend" namespace across a veth
// pair. It needs root, ip(8) and iptables-restore; it skips without them unless
// CI=true, where it fails instead.
//
// Every namespace, veth and address the test uses is its own: the namespaces
// get random names, the veth pair is created inside them, and the addresses
// (10.250.0.0/24 and fd00:250::/64) exist only on that pair. Nothing in the
// host namespace is touched.
package netns_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/remora-mesh/remora/internal/testenv"
)

// The helper roles this test binary plays when re-executed inside a namespace.
const (
	envRole = "REMORA_NETNS_HELPER" // server, proxy, client or exec
	envUID  = "REMORA_NETNS_UID"    // drop to this UID (and GID) first
)

const (
	proxyUID = 1337
	appUID   = 1000

	podIP      = "10.250.0.1"
	backendIP  = "10.250.0.2"
	mysqlIP    = "10.250.0.3" // excluded with -x, like a MySQL server outside the mesh
	podIP6     = "fd00:250::1"
	backendIP6 = "fd00:250::2"

	excludedOutboundPort = "9000" // excluded with -o
)

// captureArgs are the typical istio-init arguments, with the MySQL address
// excluded by CIDR and one outbound port excluded.
var captureArgs = []string{"istio-iptables", "-p", "15001", "-z", "15006", "-u", strconv.Itoa(proxyUID), "-m", "REDIRECT",
	"-i", "*", "-x", mysqlIP + "/32", "-b", "*", "-d", "15090,15021,15020", "-o", excludedOutboundPort,
	"--log_output_level=default:info"}

func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runHelper(role, os.Args[1:]))
	}
	code := m.Run()
	if injector.dir != "" {
		_ = os.RemoveAll(injector.dir)
	}
	os.Exit(code)
}

func TestTrafficCapture(t *testing.T) {
	requirePrivileges(t)
	bin := buildInjector(t)
	pod, backend := newTopology(t)

	// The backend answers with the address it was reached at; so does the app.
	startHelper(t, backend, 0, "server", "backend", "0.0.0.0:8080", "0.0.0.0:3306", "0.0.0.0:"+excludedOutboundPort, "[::]:8080")
	startHelper(t, pod, appUID, "server", "app", "0.0.0.0:8080", "0.0.0.0:15020", "[::]:8080")

	if got := mustDial(t, pod, appUID, backendIP+":8080", ""); got != "backend "+backendIP+":8080" {
		t.Fatalf("before any rules the app reached %q, want the backend directly", got)
	}
	empty := saveNAT(t, pod)

	t.Run("invalid arguments change nothing", func(t *testing.T) {
		checkInvalidArgs(t, bin, pod, empty)
	})
	t.Run("validation fails without rules", func(t *testing.T) {
		out, err := runInjector(t, pod, proxyUID, bin, validationArgs()...)
		if err == nil {
			t.Fatalf("--run-validation succeeded in a namespace without rules:\n%s", out)
		}
		if !strings.Contains(out, "traffic capture is not in place") {
			t.Errorf("validation failure does not say why:\n%s", out)
		}
	})

	out, err := runInjector(t, pod, 0, bin, captureArgs...)
	if err != nil {
		t.Fatalf("applying the rules: %v\n%s", err, out)
	}
	first := saveNAT(t, pod)
	for _, want := range []string{
		"-A OUTPUT -p tcp -j ISTIO_OUTPUT",
		"-A ISTIO_OUTPUT -d " + mysqlIP + "/32 -j RETURN",
		"-A ISTIO_OUTPUT -p tcp -m tcp --dport " + excludedOutboundPort + " -j RETURN",
		"-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
		"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
		"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
		// The pod has a global IPv6 address, so ip6tables got rules too.
		"-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN",
	} {
		if !strings.Contains(first, want+"\n") {
			t.Errorf("iptables-save after the first run lacks %q:\n%s", want, first)
		}
	}

	t.Run("second run converges", func(t *testing.T) {
		out, err := runInjector(t, pod, 0, bin, captureArgs...)
		if err != nil {
			t.Fatalf("second run: %v\n%s", err, out)
		}
		if second := saveNAT(t, pod); second != first {
			t.Errorf("iptables-save differs after the second run.\nfirst:\n%s\nsecond:\n%s", first, second)
		}
	})
	t.Run("validation passes with the rules", func(t *testing.T) {
		// Before the proxy listens on the inbound capture port, as in a real pod.
		out, err := runInjector(t, pod, proxyUID, bin, validationArgs()...)
		if err != nil {
			t.Fatalf("--run-validation failed with the rules in place: %v\n%s", err, out)
		}
	})

	startHelper(t, pod, proxyUID, "proxy")

	t.Run("outbound", func(t *testing.T) {
		tests := []struct {
			name     string
			uid      int
			addr     string
			src      string
			wantResp string
		}{
			{"captured to the proxy", appUID, backendIP + ":8080", "", "proxy 15001 " + backendIP + ":8080"},
			{"captured over IPv6", appUID, "[" + backendIP6 + "]:8080", "", "proxy 15001 [" + backendIP6 + "]:8080"},
			{"excluded CIDR (MySQL) goes direct", appUID, mysqlIP + ":3306", "", "backend " + mysqlIP + ":3306"},
			{"same port on a captured address is captured", appUID, backendIP + ":3306", "", "proxy 15001 " + backendIP + ":3306"},
			{"excluded port goes direct", appUID, backendIP + ":" + excludedOutboundPort, "", "backend " + backendIP + ":" + excludedOutboundPort},
			{"the proxy's own connection goes direct", proxyUID, backendIP + ":8080", "", "backend " + backendIP + ":8080"},
			{"the proxy's own IPv6 connection goes direct", proxyUID, "[" + backendIP6 + "]:8080", "", "backend [" + backendIP6 + "]:8080"},
			{"localhost is never captured", appUID, "127.0.0.1:8080", "", "app 127.0.0.1:8080"},
			{"the app calling its own pod IP over lo is not captured", appUID, podIP + ":8080", "", "app " + podIP + ":8080"},
			{"the proxy calling its pod IP over lo goes to the inbound port", proxyUID, podIP + ":8080", "", "proxy 15006 " + podIP + ":8080"},
			{"the proxy's passthrough from 127.0.0.6 reaches the app", proxyUID, podIP + ":8080", "127.0.0.6", "app " + podIP + ":8080"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := mustDial(t, pod, tt.uid, tt.addr, tt.src); got != tt.wantResp {
					t.Errorf("uid %d dialing %s reached %q, want %q", tt.uid, tt.addr, got, tt.wantResp)
				}
			})
		}
	})

	t.Run("inbound", func(t *testing.T) {
		tests := []struct {
			name     string
			addr     string
			wantResp string
		}{
			{"app port is redirected to the inbound port", podIP + ":8080", "proxy 15006 " + podIP + ":8080"},
			{"app port over IPv6 is redirected", "[" + podIP6 + "]:8080", "proxy 15006 [" + podIP6 + "]:8080"},
			{"excluded inbound port reaches the app", podIP + ":15020", "app " + podIP + ":15020"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := mustDial(t, backend, 0, tt.addr, ""); got != tt.wantResp {
					t.Errorf("the backend dialing %s reached %q, want %q", tt.addr, got, tt.wantResp)
				}
			})
		}
	})

	t.Run("invalid arguments leave the rules unchanged", func(t *testing.T) {
		checkInvalidArgs(t, bin, pod, first)
	})
}

// TestTProxyRulesConverge applies TPROXY mode to a namespace twice, checks the
// rules and the policy routing converge, then switches to REDIRECT mode and
// checks that the mangle chains TPROXY needed are removed. (It does not send
// traffic: a TPROXY listener needs IP_TRANSPARENT, hence NET_ADMIN, in the
// stand-in proxy.)
func TestTProxyRulesConverge(t *testing.T) {
	requirePrivileges(t)
	bin := buildInjector(t)
	ns := "remora-e2e-tproxy-" + randomSuffix(t)
	ip(t, "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("deleting namespace %s: %v: %s", ns, err, out)
		}
	})
	ip(t, "-n", ns, "link", "set", "lo", "up")

	tproxyArgs := []string{"istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY",
		"-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--dual-stack"}
	var saves []string
	for run := 1; run <= 2; run++ {
		if out, err := runInjector(t, ns, 0, bin, tproxyArgs...); err != nil {
			t.Fatalf("TPROXY run %d: %v\n%s", run, err, out)
		}
		saves = append(saves, saveTables(t, ns, "mangle", "nat")+policyRules(t, ns))
	}
	if saves[0] != saves[1] {
		t.Errorf("state differs after the second TPROXY run.\nfirst:\n%s\nsecond:\n%s", saves[0], saves[1])
	}
	for _, want := range []string{
		"-A PREROUTING -p tcp -j ISTIO_INBOUND",
		"-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff",
		"-A ISTIO_TPROXY ! -d ::1/128 -p tcp -j TPROXY --on-port 15006 --on-ip :: --tproxy-mark 0x539/0xffffffff",
		"-4 from all fwmark 0x539 lookup 133",
		"-6 from all fwmark 0x539 lookup 133",
	} {
		if !strings.Contains(saves[0], want+"\n") {
			t.Errorf("state after the TPROXY run lacks %q:\n%s", want, saves[0])
		}
	}

	redirectArgs := append(append([]string{}, tproxyArgs[:8]...), append([]string{"REDIRECT"}, tproxyArgs[9:]...)...)
	if out, err := runInjector(t, ns, 0, bin, redirectArgs...); err != nil {
		t.Fatalf("switching to REDIRECT: %v\n%s", err, out)
	}
	if got := saveTables(t, ns, "mangle"); strings.Contains(got, "ISTIO_") {
		t.Errorf("mangle still has Remora's chains after switching to REDIRECT:\n%s", got)
	}
	if got := saveTables(t, ns, "nat"); !strings.Contains(got, "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n") {
		t.Errorf("nat lacks the REDIRECT inbound rules after switching:\n%s", got)
	}
}

// policyRules lists the ip rules of both families, one per line, prefixed
// with the family flag.
func policyRules(t *testing.T, ns string) string {
	t.Helper()
	var b strings.Builder
	for _, fam := range []string{"-4", "-6"} {
		out, err := exec.Command("ip", "-n", ns, fam, "rule", "show").CombinedOutput()
		if err != nil {
			t.Fatalf("ip rule show: %v\n%s", err, out)
		}
		for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
			_, rule, _ := strings.Cut(line, ":")
			b.WriteString(fam + " " + strings.Join(strings.Fields(rule), " ") + "\n")
		}
	}
	return b.String()
}

func validationArgs() []string {
	return []string{"istio-iptables", "-u", strconv.Itoa(proxyUID), "-i", "*", "-b", "*", "-d", "15090,15021,15020",
		"--run-validation", "--skip-rule-apply", "--probe-timeout=2s"}
}

// checkInvalidArgs runs the injector with invalid flags and checks that each
// run fails, names the flag and value, and leaves iptables as want.
func checkInvalidArgs(t *testing.T, bin, ns, want string) {
	t.Helper()
	tests := []struct {
		name   string
		flag   string
		value  string
		wantIn string
	}{
		{"bad CIDR", "-x", "10.250.0.300/32", "-x/--istio-service-exclude-cidr"},
		{"bad port", "-d", "15090,abc", "-d/--istio-local-exclude-ports"},
		{"port out of range", "-p", "70000", "-p/--envoy-port"},
		{"unknown mode", "-m", "FOO", "-m/--istio-inbound-interception-mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{}, captureArgs...), tt.flag, tt.value)
			out, err := runInjector(t, ns, 0, bin, args...)
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) || exitErr.ExitCode() == 0 {
				t.Fatalf("%s %s: err = %v, want a non-zero exit\n%s", tt.flag, tt.value, err, out)
			}
			if !strings.Contains(out, tt.wantIn) || !strings.Contains(out, tt.value) {
				t.Errorf("%s %s: message does not name %q and %q:\n%s", tt.flag, tt.value, tt.wantIn, tt.value, out)
			}
			if got := saveNAT(t, ns); got != want {
				t.Errorf("%s %s changed the rules:\n%s\nwant:\n%s", tt.flag, tt.value, got, want)
			}
		})
	}
}

// requirePrivileges skips the test when it cannot create namespaces and
// rules, or fails it when CI=true.
func requirePrivileges(t *testing.T) {
	t.Helper()
	stop := func(format string, args ...any) { testenv.SkipOrFail(t, format, args...) }
	if runtime.GOOS != "linux" {
		stop("network namespaces need Linux")
	}
	if os.Geteuid() != 0 {
		stop("needs root to create network namespaces and iptables rules")
	}
	for _, tool := range []string{"ip", "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			stop("needs %s: %v (apt-get install iptables iproute2)", tool, err)
		}
	}
}

// injector is the binary under test, built once for all tests.
var injector struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// buildInjector builds the injector into a directory the proxy UID can read,
// since the validation step runs it as that UID. TestMain removes it.
func buildInjector(t *testing.T) string {
	t.Helper()
	injector.once.Do(func() {
		injector.dir, injector.err = os.MkdirTemp("", "remora-netns-e2e-")
		if injector.err != nil {
			return
		}
		if injector.err = os.Chmod(injector.dir, 0o755); injector.err != nil {
			return
		}
		bin := filepath.Join(injector.dir, "injector")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/remora-mesh/remora/cmd/injector")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			injector.err = fmt.Errorf("go build ./cmd/injector: %w\n%s", err, out)
			return
		}
		injector.path = bin
	})
	if injector.err != nil {
		t.Fatal(injector.err)
	}
	return injector.path
}

// newTopology creates the pod and backend namespaces joined by a veth pair
// that is created inside them, and deletes both when the test ends.
func newTopology(t *testing.T) (pod, backend string) {
	t.Helper()
	suffix := randomSuffix(t)
	pod, backend = "remora-e2e-pod-"+suffix, "remora-e2e-be-"+suffix
	podIf, backendIf := "rmp"+suffix, "rmb"+suffix
	for _, ns := range []string{pod, backend} {
		ip(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("deleting namespace %s: %v: %s", ns, err, out)
			}
		})
	}
	ip(t, "-n", pod, "link", "add", podIf, "type", "veth", "peer", "name", backendIf, "netns", backend)
	for _, step := range [][]string{
		{"-n", pod, "addr", "add", podIP + "/24", "dev", podIf},
		{"-n", pod, "addr", "add", podIP6 + "/64", "dev", podIf, "nodad"},
		{"-n", backend, "addr", "add", backendIP + "/24", "dev", backendIf},
		{"-n", backend, "addr", "add", mysqlIP + "/24", "dev", backendIf},
		{"-n", backend, "addr", "add", backendIP6 + "/64", "dev", backendIf, "nodad"},
		{"-n", pod, "link", "set", "lo", "up"},
		{"-n", pod, "link", "set", podIf, "up"},
		{"-n", backend, "link", "set", "lo", "up"},
		{"-n", backend, "link", "set", backendIf, "up"},
	} {
		ip(t, step...)
	}
	return pod, backend
}

func randomSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// saveNAT returns the nat tables of both families in ns, without comments and
// packet counters.
func saveNAT(t *testing.T, ns string) string {
	t.Helper()
	return saveTables(t, ns, "nat")
}

// saveTables returns the named tables of both families in ns, without
// comments and packet counters.
func saveTables(t *testing.T, ns string, tables ...string) string {
	t.Helper()
	var b strings.Builder
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		for _, table := range tables {
			out, err := exec.Command("ip", "netns", "exec", ns, save, "-t", table).CombinedOutput()
			if err != nil {
				t.Fatalf("%s -t %s in %s: %v\n%s", save, table, ns, err, out)
			}
			for line := range strings.SplitSeq(string(out), "\n") {
				if line != "" && !strings.HasPrefix(line, "#") {
					b.WriteString(counters.ReplaceAllString(line, "[0:0]") + "\n")
				}
			}
		}
	}
	return b.String()
}

// runInjector runs the injector in ns as uid (0 for root) and returns its
// combined output.
func runInjector(t *testing.T, ns string, uid int, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := helperCommand(ctx, ns, uid, "exec", append([]string{bin}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// helperCommand runs this test binary in ns, playing role as uid.
func helperCommand(ctx context.Context, ns string, uid int, role string, args ...string) *exec.Cmd {
	self, _ := os.Executable()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, self}, args...)...)
	cmd.Env = append(os.Environ(), envRole+"="+role, envUID+"="+strconv.Itoa(uid))
	return cmd
}

// startHelper starts a long-running helper and waits until it listens.
func startHelper(t *testing.T, ns string, uid int, role string, args ...string) {
	t.Helper()
	cmd := helperCommand(context.Background(), ns, uid, role, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the %s helper in %s: %v", role, ns, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("%s helper in %s said:\n%s", role, ns, stderr.String())
		}
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "READY\n" {
			err = fmt.Errorf("unexpected first line %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("%s helper in %s did not start: %v\n%s", role, ns, err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s helper in %s did not get ready\n%s", role, ns, stderr.String())
	}
}

// mustDial connects from ns as uid to addr (from src, if set) and returns the
// line the other end answered with.
func mustDial(t *testing.T, ns string, uid int, addr, src string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	args := []string{addr}
	if src != "" {
		args = append(args, src)
	}
	cmd := helperCommand(ctx, ns, uid, "client", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dialing %s from %s as uid %d: %v\n%s", addr, ns, uid, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// runHelper is the entry point of the re-executed test binary.
func runHelper(role string, args []string) int {
	if role == "exec" {
		return execAs(args)
	}
	if err := dropPrivileges(); err != nil {
		fmt.Fprintln(os.Stderr, "dropping privileges:", err)
		return 2
	}
	var err error
	switch role {
	case "server":
		err = serve(args[0], args[1:])
	case "proxy":
		err = proxy()
	case "client":
		err = client(args)
	default:
		err = fmt.Errorf("unknown helper role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, role+":", err)
		return 1
	}
	return 0
}

// execAs runs args as the UID (and the same GID) in envUID, through
// SysProcAttr.Credential, and returns its exit code.
func execAs(args []string) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if uid, err := strconv.Atoi(os.Getenv(envUID)); err == nil && uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
	}
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		return exitErr.ExitCode()
	default:
		fmt.Fprintln(os.Stderr, "exec:", err)
		return 127
	}
}

// dropPrivileges switches to the UID (and the same GID) in envUID. Go applies
// it to every thread of the process.
func dropPrivileges() error {
	uid, err := strconv.Atoi(os.Getenv(envUID))
	if err != nil || uid == 0 {
		return nil
	}
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setgid(uid); err != nil {
		return err
	}
	return syscall.Setuid(uid)
}

// serve answers every connection on addrs with "name <local address>".
func serve(name string, addrs []string) error {
	return listenAll(addrs, func(c net.Conn) string { return name + " " + c.LocalAddr().String() })
}

// proxy stands in for the sidecar: it listens on the outbound and inbound
// capture ports and answers with the port and the connection's original
// destination.
func proxy() error {
	return listenAll([]string{"0.0.0.0:15001", "0.0.0.0:15006", "[::]:15001", "[::]:15006"}, func(c net.Conn) string {
		local := c.LocalAddr().(*net.TCPAddr)
		dst, err := originalDst(c.(*net.TCPConn))
		if err != nil {
			return "proxy " + strconv.Itoa(local.Port) + " error: " + err.Error()
		}
		return "proxy " + strconv.Itoa(local.Port) + " " + dst.String()
	})
}

func listenAll(addrs []string, answer func(net.Conn) string) error {
	var lns []net.Listener
	for _, a := range addrs {
		network := "tcp4"
		if strings.HasPrefix(a, "[") {
			network = "tcp6"
		}
		ln, err := net.Listen(network, a)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	fmt.Println("READY")
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					errs <- err
					return
				}
				go func() {
					defer func() { _ = c.Close() }()
					_, _ = fmt.Fprintln(c, answer(c))
				}()
			}
		}()
	}
	return <-errs
}

// client dials args[0], from args[1] if given, and prints the answer.
func client(args []string) error {
	d := net.Dialer{Timeout: 5 * time.Second}
	if len(args) > 1 {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(args[1])}
	}
	c, err := d.Dial("tcp", args[0])
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading the answer from %s: %w", args[0], err)
	}
	fmt.Print(line)
	return nil
}

// originalDst reads SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6, the
// same option number at SOL_IPV6). It is written independently of the code
// under test on purpose.
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	is4 := c.LocalAddr().(*net.TCPAddr).IP.To4() != nil
	var dst netip.AddrPort
	var sockErr error
	err = raw.Control(func(fd uintptr) {
		if is4 {
			m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if err != nil {
				sockErr = err
				return
			}
			a := m.Multiaddr // struct sockaddr_in
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[2:4]))
			return
		}
		info, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, unix.SO_ORIGINAL_DST)
		if err != nil {
			sockErr = err
			return
		}
		sa := info.Addr // struct sockaddr_in6; the port is in network order
		var port [2]byte
		binary.NativeEndian.PutUint16(port[:], sa.Port)
		dst = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), binary.BigEndian.Uint16(port[:]))
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	return dst, sockErr
}
