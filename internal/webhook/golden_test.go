package webhook

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/diff"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// cliTestdata holds the CLI's golden files: `injector inject` of each input.
const cliTestdata = "../../cmd/injector/testdata"

// TestHandlerMatchesCLIGolden sends the CLI's golden pod inputs through the
// webhook path (an AdmissionReview, the handler, the JSON patch applied to
// the raw pod) and checks the result is the CLI's golden output: both paths
// run the same engine, and a stale golden file fails here too. Workload
// inputs are covered by the e2e tests, where their controllers create the
// pods.
func TestHandlerMatchesCLIGolden(t *testing.T) {
	for _, name := range []string{"tproxy-pod"} {
		t.Run(name, func(t *testing.T) {
			in := readPod(t, filepath.Join(cliTestdata, name+".yaml"))
			want := readPod(t, filepath.Join(cliTestdata, name+".golden.yaml"))

			srv := newTestWebhook(t, func(o *Options) { o.Config = config.MustDefault }, // offline "auto" means native, as in the CLI's golden
				namespace("default", map[string]string{inject.LabelNamespaceInject: "enabled"}))
			body := loadReview(t, func(req *admissionv1.AdmissionRequest, pod map[string]any) {
				raw, err := json.Marshal(in)
				if err != nil {
					t.Fatal(err)
				}
				clear(pod)
				if err := json.Unmarshal(raw, &pod); err != nil {
					t.Fatal(err)
				}
				req.Name = in.Name
			})
			got := patched(t, body, post(t, srv, body))
			if !equality.Semantic.DeepEqual(got, want) {
				t.Errorf("the webhook's pod differs from %s.golden.yaml (-want +got):\n%s", name, diff.Diff(want, got))
			}
		})
	}
}

func readPod(t *testing.T, path string) *corev1.Pod {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(b, pod); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pod
}
