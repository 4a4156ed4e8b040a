// Package testenv is the one test-support layer every suite and harness
// shares (the unit and chart tests, test/e2e/framework, the node suites under
// test/e2e, test/scale, test/load):
//
//   - paths: the repository's root, the control-plane binaries that tests
//     start with controller-runtime's envtest ($KUBEBUILDER_ASSETS, or the
//     repository's bin/k8s, which make envtest-bins builds), Istio's
//     conformance corpus and the reference AdmissionReview (paths.go);
//   - one process runner: a child in its own process group, signalled and
//     stopped as a group, its output in a log file (process.go);
//   - pod helpers: readiness, the istio-proxy container, namespaces
//     (pods.go).
//
// Without the control-plane binaries a test is skipped on a developer's
// machine and fails in CI (CI=true), where they must be built.
//
// Every test that cannot run here for want of a prerequisite (root, a
// binary, a corpus) stops through SkipOrFail, so that no suite passes
// vacuously: in CI the test fails, elsewhere it is skipped and the reason is
// recorded in $REMORA_SKIP_LOG, which `make test` summarises at the end.
package testenv

import (
	"fmt"
	"os"
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
