package inject_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/internal/manifest"
	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/pkg/inject"
)

// TestBuiltinPlacementEqualsRendering proves that placing the built-in
// sidecar template's fragment directly gives exactly the pod that rendering
// the template and strategic-merging it gives, on every input of the Istio
// corpus and of our goldens (the engine's and the CLI's), native and classic.
func TestBuiltinPlacementEqualsRendering(t *testing.T) {
	corpus, err := testenv.CorpusDir()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, pattern := range []string{filepath.Join(corpus, "inject", "*.yaml"), filepath.Join(goldenDir, "*.yaml"), "../../cmd/injector/testdata/*.yaml"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 5 {
		t.Fatalf("found only %d inputs", len(files))
	}
	var compared int
	for _, f := range files {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, native := range []bool{true, false} {
			run := func(render bool) ([]byte, error) {
				out, _, err := manifest.Process(bytes.NewReader(in), func(pod *corev1.Pod, wl inject.Workload) (*corev1.Pod, bool, string, string, error) {
					res, err := inject.Inject(inject.Request{Pod: pod, Config: testenv.DefaultConfig(native), Workload: wl, AlwaysRender: render})
					if err != nil {
						return nil, false, "", "", err
					}
					if res.Injected {
						compared++
					}
					return res.Pod, res.Injected, string(res.Reason), res.Message, nil
				})
				return out, err
			}
			rendered, errR := run(true)
			placed, errP := run(false)
			if (errR == nil) != (errP == nil) {
				t.Errorf("%s native=%v: errors differ: %v vs %v", f, native, errR, errP)
				continue
			}
			if !bytes.Equal(rendered, placed) {
				t.Errorf("%s native=%v: direct placement differs from rendering", filepath.Base(f), native)
			}
		}
	}
	t.Logf("compared %d injected objects", compared/2)
}
