package chart_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/internal/testenv"
)

const (
	releaseName = "remora"
	releaseNS   = "remora-system"
)

// repoRoot is the repository's root directory.
func repoRoot(t *testing.T) string { return testenv.MustRepoRoot(t) }

func chartDir(t *testing.T) string { return filepath.Join(repoRoot(t), "charts", "remora") }

// helmBinary returns the pinned helm at bin/helm. Missing, it fails the test under CI=true and
// skips it otherwise.
func helmBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(repoRoot(t), "bin", "helm")
	if _, err := os.Stat(bin); err != nil {
		testenv.SkipOrFail(t, "bin/helm is missing: run `make helm` (installs the pinned helm into ./bin)")
	}
	return bin
}

// runHelm runs the pinned helm in the repository root with private helm home directories.
func runHelm(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), helmBinary(t), args...)
	cmd.Dir = repoRoot(t)
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// object is one rendered manifest.
type object struct {
	u   *unstructured.Unstructured
	raw []byte
}

// manifests are the objects of one `helm template`: the release's objects, and apart from them
// the hooks' (annotated helm.sh/hook), which Helm creates only around install, upgrade or delete.
type manifests struct {
	objects []object
	hooks   []object
}

// render runs `helm template remora charts/remora -n remora-system` with extra args (such as
// --set k=v or -f file) and decodes every document; it fails the test on a helm error.
func render(t *testing.T, extra ...string) *manifests {
	t.Helper()
	args := append([]string{"template", releaseName, "charts/remora", "--namespace", releaseNS}, extra...)
	out, stderr, err := runHelm(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return decodeManifests(t, out)
}

func decodeManifests(t *testing.T, out string) *manifests {
	t.Helper()
	m := &manifests{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading rendered YAML: %v", err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("decoding rendered YAML: %v\n%s", err, doc)
		}
		if len(u.Object) == 0 {
			continue
		}
		if _, ok := u.GetAnnotations()["helm.sh/hook"]; ok {
			m.hooks = append(m.hooks, object{u: u, raw: doc})
			continue
		}
		m.objects = append(m.objects, object{u: u, raw: doc})
	}
	return m
}

// all returns the objects of a kind.
func (m *manifests) all(kind string) []object {
	var out []object
	for _, o := range m.objects {
		if o.u.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// names lists "Kind/name" of every object, for messages.
func (m *manifests) names() []string {
	var out []string
	for _, o := range m.objects {
		out = append(out, o.u.GetKind()+"/"+o.u.GetName())
	}
	return out
}

// one decodes the only object of a kind into T, strictly: a field T does not know fails.
func one[T any](t *testing.T, m *manifests, kind string) *T {
	t.Helper()
	objs := m.all(kind)
	if len(objs) != 1 {
		t.Fatalf("%d %s objects rendered, want 1 (rendered: %v)", len(objs), kind, m.names())
	}
	return decode[T](t, objs[0])
}

func decode[T any](t *testing.T, o object) *T {
	t.Helper()
	v := new(T)
	if err := yaml.UnmarshalStrict(o.raw, v); err != nil {
		t.Fatalf("%s/%s does not decode as %T: %v", o.u.GetKind(), o.u.GetName(), v, err)
	}
	return v
}
