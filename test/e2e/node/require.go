package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"

	"github.com/remora-mesh/remora/internal/testenv"
)

// Environment variables that decide whether the real-pod tests run.
const (
	// EnvEnable set to 1 runs the tests on a developer machine (as root).
	EnvEnable = "REMORA_NODE_E2E"
	// EnvCI set to true (as CI systems do) runs them, and turns a missing
	// prerequisite into a failure instead of a skip.
	EnvCI = "CI"
)

// Wanted reports whether the real-pod tests should run here: always when
// CI=true; with REMORA_NODE_E2E=1 when running as root. The reason says why
// not.
func Wanted() (bool, string) {
	if os.Getenv(EnvCI) == "true" {
		return true, ""
	}
	if os.Getenv(EnvEnable) != "1" {
		return false, "real-pod e2e tests are off: set " + EnvEnable + "=1 (as root) to run them; CI=true always runs them"
	}
	if os.Geteuid() != 0 {
		return false, "real-pod e2e tests need root"
	}
	return true, ""
}

// Check reports the prerequisites of Start that are missing on this machine.
func Check(opts Options) error {
	if err := opts.setDefaults(); err != nil {
		return err
	}
	var errs []error
	if runtime.GOOS != "linux" {
		errs = append(errs, fmt.Errorf("needs Linux, not %s", runtime.GOOS))
	}
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("needs root"))
	}
	// containerd, ctr and runc: apt-get install containerd runc; the CNI
	// plugins: containernetworking-plugins; iptables for the init image; ip,
	// unshare, nsenter, mount and ldd come with every Debian.
	for _, cmd := range []string{"containerd", "ctr", "runc", "ip", "unshare", "nsenter", "mount", "ldd",
		"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		if _, err := exec.LookPath(cmd); err != nil {
			errs = append(errs, fmt.Errorf("%s not found in PATH", cmd))
		}
	}
	if _, err := os.Stat(goTool()); err != nil {
		errs = append(errs, errors.New("the go command is needed to build the test images"))
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(opts.CNIBinDir, p)); err != nil {
			errs = append(errs, fmt.Errorf("CNI plugin %s not in %s (apt-get install containernetworking-plugins)", p, opts.CNIBinDir))
		}
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"} {
		if _, err := os.Stat(filepath.Join(opts.K8sBinDir, b)); err != nil {
			errs = append(errs, fmt.Errorf("%s not in %s (build bin/k8s with hack/k8sbins, or set KUBEBUILDER_ASSETS)", b, opts.K8sBinDir))
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		errs = append(errs, errors.New("no /sys/fs/cgroup"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("the real-pod e2e node cannot run here (apt-get install -y --no-install-recommends containerd runc containernetworking-plugins iptables): %w", errors.Join(errs...))
	}
	return nil
}

// Require skips the test unless Wanted, and fails it when a prerequisite is
// missing (so a CI machine without them fails rather than passing
// vacuously).
func Require(t testing.TB, opts Options) {
	t.Helper()
	if ok, why := Wanted(); !ok {
		testenv.Skip(t, why)
	}
	if err := Check(opts); err != nil {
		t.Fatal(err)
	}
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// StartForTest is Require plus Start for one test: the node logs through
// t.Logf, stops in t.Cleanup, and, when the test failed, leaves its logs and
// a dump of the pods in test/e2e/_artifacts/node/TEST (or
// opts.ArtifactsDir).
func StartForTest(t testing.TB, opts Options) *Cluster {
	t.Helper()
	Require(t, opts)
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	if opts.ArtifactsDir == "" {
		if root, err := testenv.RepoRoot(); err == nil {
			opts.ArtifactsDir = filepath.Join(root, "test", "e2e", "_artifacts", "node", unsafeName.ReplaceAllString(t.Name(), "_"))
		}
	}
	c, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start the e2e node: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.SetFailed()
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop the e2e node: %v", err)
		}
	})
	return c
}
