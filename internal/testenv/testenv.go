// Package testenv finds the control-plane binaries that tests start with
// controller-runtime's envtest: $KUBEBUILDER_ASSETS, or the repository's
// bin/k8s (make envtest-bins). Without them a test is skipped on a
// developer's machine and fails in CI (CI=true), where they must be built.
//
// Every test that cannot run here for want of a prerequisite (root, a
// binary, a corpus) stops through SkipOrFail, so that no suite passes
// vacuously: in CI the test fails, elsewhere it is skipped and the reason is
// recorded in $REMORA_SKIP_LOG, which `make test` summarises at the end.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Environment variables read by SkipOrFail.
const (
	// EnvCI set to true (as CI systems do) turns every missing prerequisite
	// into a failure.
	EnvCI = "CI"
	// EnvSkipLog names a file to which each skip appends one line,
	// "TestName<TAB>reason" (hack/suite.sh sets it for `make test`).
	EnvSkipLog = "REMORA_SKIP_LOG"
)

// InCI reports whether CI=true.
func InCI() bool { return os.Getenv(EnvCI) == "true" }

// SkipOrFail stops t because a prerequisite is missing: with CI=true it
// fails t, otherwise it records the reason in $REMORA_SKIP_LOG and skips t.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatal(msg + " (CI=true: a test that cannot run fails)")
	}
	Skip(t, msg)
}

// Skip records the reason in $REMORA_SKIP_LOG and skips t, in CI too: for
// a test that does not apply here, not one that lacks a prerequisite.
func Skip(t testing.TB, msg string) {
	t.Helper()
	if path := os.Getenv(EnvSkipLog); path != "" {
		line := t.Name() + "\t" + strings.ReplaceAll(msg, "\n", " ") + "\n"
		// One small O_APPEND write per line: test binaries running in
		// parallel do not interleave their lines.
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatalf("recording the skip in %s=%s: %v", EnvSkipLog, path, err)
		}
		_, werr := f.WriteString(line)
		cerr := f.Close()
		if werr != nil || cerr != nil {
			t.Fatalf("recording the skip in %s=%s: %v %v", EnvSkipLog, path, werr, cerr)
		}
	}
	t.Skip(msg)
}

// AssetsDir returns the absolute directory holding every binary named
// (kube-apiserver and etcd when none is named), or skips or fails t.
func AssetsDir(t testing.TB, binaries ...string) string {
	t.Helper()
	if len(binaries) == 0 {
		binaries = []string{"kube-apiserver", "etcd"}
	}
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), "bin", "k8s")
	}
	for _, bin := range binaries {
		if fi, err := os.Stat(filepath.Join(dir, bin)); err != nil || fi.IsDir() {
			SkipOrFail(t, "no control plane: %s is not in %s; set KUBEBUILDER_ASSETS to a directory with the control-plane binaries (make envtest-bins builds bin/k8s)", bin, dir)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// RepoRoot is the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
