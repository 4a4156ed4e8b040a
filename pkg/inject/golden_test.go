package inject_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/internal/golden"
	"github.com/remora-mesh/remora/internal/manifest"
	"github.com/remora-mesh/remora/pkg/inject"

	"github.com/remora-mesh/remora/internal/testenv"
)

// goldenDir holds the engine's golden cases: NAME.yaml in (a pod or a
// workload; its first comment says what it shows), NAME.golden.yaml out.
// A case whose name contains "classic" runs with native sidecars off, every
// other with them on (what offline injection and a 1.29+ API server use).
const goldenDir = "testdata/golden"

// goldenInputs returns the inputs of the golden corpus.
func goldenInputs(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var inputs []string
	for _, f := range files {
		if !strings.HasSuffix(f, ".golden.yaml") {
			inputs = append(inputs, f)
		}
	}
	return inputs
}

// goldenOutput injects every pod template of the input with the embedded
// defaults and returns what a reader needs to review: one comment line per
// object with the engine's decision and reason, then the manifests as the
// engine leaves them; or the error that refuses the input.
func goldenOutput(t *testing.T, file string, native bool) []byte {
	t.Helper()
	in, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.DefaultConfig(native)
	out, reports, err := manifest.Process(bytes.NewReader(in), func(pod *corev1.Pod, wl inject.Workload) (*corev1.Pod, bool, string, string, error) {
		res, err := inject.Inject(inject.Request{Pod: pod, Namespace: pod.Namespace, Config: cfg, Workload: wl, Services: goldenServices})
		if err != nil {
			return nil, false, "", "", err
		}
		return res.Pod, res.Injected, string(res.Reason), res.Message, nil
	})
	var b bytes.Buffer
	fmt.Fprintf(&b, "# native sidecars: %v\n", native)
	if err != nil {
		fmt.Fprintf(&b, "# refused: %v\n", err)
		return b.Bytes()
	}
	for _, r := range reports {
		fmt.Fprintf(&b, "# %s\n", r)
	}
	b.Write(out)
	return b.Bytes()
}

// goldenServices are the Services the golden cases exclude: a dual-stack
// ClusterIP Service, a headless one and an ExternalName one.
var goldenServices = goldenServiceTable{
	{Namespace: "db", Name: "mysql"}:   {"10.96.10.5", "fd00:10:96::1f4"},
	{Namespace: "shop", Name: "cache"}: {"10.244.3.12", "10.244.1.7"},
}

type goldenServiceTable map[inject.ServiceRef][]string

func (g goldenServiceTable) ServiceAddresses(ref inject.ServiceRef) ([]netip.Addr, error) {
	if ref == (inject.ServiceRef{Namespace: "db", Name: "warehouse"}) {
		return nil, inject.ServiceExternalName(ref, "warehouse.example.com")
	}
	addrs, ok := g[ref]
	if !ok {
		return nil, inject.ServiceNotFound(ref)
	}
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = netip.MustParseAddr(a)
	}
	return out, nil
}

// TestGolden runs the engine on every case of testdata/golden and compares
// the result with its golden file, printing a diff when they differ (go test
// ./pkg/inject -update rewrites them; review the diff). A golden file
// without an input is stale and fails too.
func TestGolden(t *testing.T) {
	inputs := goldenInputs(t)
	if len(inputs) < 20 {
		t.Fatalf("%d golden cases in %s, want at least 20", len(inputs), goldenDir)
	}
	var goldens []string
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		path := filepath.Join(goldenDir, name+".golden.yaml")
		goldens = append(goldens, path)
		t.Run(name, func(t *testing.T) {
			got := goldenOutput(t, in, !strings.Contains(name, "classic"))
			golden.Assert(t, path, got)
			// Injection is idempotent: the golden output, injected again, is
			// unchanged.
			if !bytes.Contains(got, []byte("# refused:")) {
				again := filepath.Join(t.TempDir(), "again.yaml")
				if err := os.WriteFile(again, got, 0o600); err != nil {
					t.Fatal(err)
				}
				second := goldenOutput(t, again, !strings.Contains(name, "classic"))
				if d := golden.Diff(stripReports(got), stripReports(second)); d != "" {
					t.Errorf("injecting the output again changed it (-first +second):\n%s", d)
				}
			}
		})
	}
	golden.CheckStale(t, filepath.Join(goldenDir, "*.golden.yaml"), goldens)
}

// stripReports drops the comment lines goldenOutput adds.
func stripReports(b []byte) string {
	var keep []string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasPrefix(l, "# ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}
