package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// modulePath is the module whose root RepoRoot finds.
const modulePath = "github.com/remora-mesh/remora"

// RepoRoot returns the repository's root directory: two levels above this
// source file, or, in a binary built with -trimpath (where the file's path is
// not a path on this machine), the directory of the module's go.mod at or
// above the working directory.
func RepoRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		if isModuleRoot(root) {
			return root, nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isModuleRoot(dir) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the " + modulePath + " module")
		}
		dir = parent
	}
}

func isModuleRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod")) //nolint:gosec // G304: go.mod of a directory we look at
	return err == nil && strings.Contains(string(b), "module "+modulePath+"\n")
}

// MustRepoRoot is RepoRoot for tests: it fails t when there is none.
func MustRepoRoot(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// K8sBinDir returns the directory of the control-plane binaries (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
// kubectl): $KUBEBUILDER_ASSETS, else bin/k8s under repoRoot.
func K8sBinDir(repoRoot string) string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	return filepath.Join(repoRoot, "bin", "k8s")
}

// AssetsDir returns the absolute directory holding every binary named
// (kube-apiserver and etcd when none is named), or skips or fails t.
func AssetsDir(t testing.TB, binaries ...string) string {
	t.Helper()
	if len(binaries) == 0 {
		binaries = []string{"kube-apiserver", "etcd"}
	}
	dir := K8sBinDir(MustRepoRoot(t))
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

// CorpusDir returns the directory of Istio's injection corpus
// (conformance/istio-inject of the shared test data), which CI and
// developers keep beside the repository: its cases.tsv lists the cases, its
// inject/ directory holds the inputs and Istio's outputs.
func CorpusDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(root), "shared", "conformance", "istio-inject"), nil
}

// Corpus returns CorpusDir, or skips or fails t (SkipOrFail) when the corpus
// is not there.
func Corpus(t testing.TB) string {
	t.Helper()
	dir, err := CorpusDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cases.tsv")); err != nil {
		SkipOrFail(t, "conformance corpus missing at %s: %v", dir, err)
	}
	return dir
}

// ReviewFile is the reference AdmissionReview, relative to the repository's
// root: a Bookinfo reviews-v1 pod created by a ReplicaSet, as a 1.37 API
// server sends it to the webhook. The webhook's tests, the guard's fuzzer,
// the benchmarks, test/load and test/scale all send it.
const ReviewFile = "testdata/bench/admissionreview-reviews-v1.json"
