// Package testenv finds the control-plane binaries that tests start with
// controller-runtime's envtest: $KUBEBUILDER_ASSETS, or the repository's
// bin/k8s (make envtest-bins). Without them a test is skipped on a
// developer's machine and fails in CI (CI=true), where they must be built.
package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

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
			msg := "no control plane: " + bin + " is not in " + dir +
				"; set KUBEBUILDER_ASSETS to a directory with the control-plane binaries (make envtest-bins builds bin/k8s)"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
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
