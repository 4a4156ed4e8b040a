package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/remora-mesh/remora/pkg/inject"
)

func runExplain(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"explain"}, args...))
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// TestExplainCommand runs injector explain end to end against a real API
// server: the status fixture's namespaces, pods and ConfigMap, and the
// chart's MutatingWebhookConfiguration, created after the pods (so that no
// admission calls the absent injector).
func TestExplainCommand(t *testing.T) {
	f, kubeconfig := newStatusFixture(t)
	f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}})
	f.create(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "bare", Labels: map[string]string{"app": "bare"},
			Annotations: map[string]string{inject.AnnotationInject: "false"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	})

	t.Run("no webhook configuration", func(t *testing.T) {
		out, err := runExplain(t, "", "--kubeconfig", kubeconfig, "-n", "shop", "cart-abc-1")
		if err != nil {
			t.Fatalf("explain: %v\n%s", err, out)
		}
		t.Logf("\n%s", out)
		for _, want := range []string{
			"Pod shop/cart-abc-1: " + verdictUpToDate,
			"1. no MutatingWebhookConfiguration has a webhook calling service remora-system/remora at /inject",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("no %q in:\n%s", want, out)
			}
		}
	})

	f.create(chartConfiguration())

	deployment := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
spec:
  selector:
    matchLabels: {app: checkout}
  template:
    metadata:
      labels: {app: checkout}
    spec:
      containers:
        - name: app
          image: example.com/checkout:1
---
apiVersion: v1
kind: Pod
metadata:
  name: tool
  labels: {sidecar.istio.io/inject: "false"}
spec:
  containers:
    - name: tool
      image: example.com/tool:1
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
spec:
  schedule: "0 1 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {traffic.sidecar.istio.io/includeInboundPorts: "http"}
        spec:
          restartPolicy: Never
          containers:
            - name: report
              image: example.com/report:1
`
	manifestFile := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(manifestFile, []byte(deployment), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		args  []string
		stdin string
		want  []string
	}{
		{name: "up to date", args: []string{"-n", "shop", "cart-abc-1"}, want: []string{
			"Pod shop/cart-abc-1: " + verdictUpToDate,
			"1. webhook namespace.sidecar-injector.remora.io (MutatingWebhookConfiguration remora-sidecar-injector) is called",
			"2. engine skips the pod (already-injected)",
			`3. up to date: remora.io/injection-hash="` + f.v2Hash + `", the configuration (ConfigMap remora-system/remora) has "` + f.v2Hash + `"`,
		}},
		{name: "outdated", args: []string{"-n", "shop", "web-abc-1"}, want: []string{
			"Pod shop/web-abc-1: " + verdictOutdated + " (image)",
			"3. outdated, recreate the pod to refresh its sidecar",
		}},
		{name: "no longer selected", args: []string{"-n", "legacy", "old-abc-1"}, want: []string{
			"Pod legacy/old-abc-1: " + verdictUnselected,
			`its namespaceSelector excludes namespace "legacy": requirement "istio-injection in (enabled)" fails (not set)`,
			`namespace "legacy" is no longer labelled istio-injection=enabled`,
		}},
		{name: "annotation opt-out", args: []string{"-n", "shop", "bare"}, want: []string{
			"Pod shop/bare: " + verdictNotInjected,
			"engine skips the pod (pod-opt-out): the pod sets sidecar.istio.io/inject=false",
		}},
		{name: "manifest", args: []string{"-n", "shop", "-f", manifestFile}, want: []string{
			"Deployment shop/checkout: " + verdictWouldInject,
			`engine injects (revision "default"): injected istio-proxy`,
			"Pod shop/tool: " + verdictNotInjected,
			`its objectSelector excludes the pod: requirement "sidecar.istio.io/inject notin (false)" fails (sidecar.istio.io/inject=false)`,
			"CronJob shop/report: " + verdictRefused,
			`engine refuses the pod: annotation traffic.sidecar.istio.io/includeInboundPorts="http" is invalid`,
		}},
		{name: "manifest from stdin, namespace not enabled", args: []string{"-n", "plain", "-f", "-"}, stdin: deployment, want: []string{
			"Deployment plain/checkout: " + verdictNotInjected,
			"no webhook of the injector selects the pod:",
			`engine skips the pod (namespace-not-enabled): namespace "plain" is not labelled istio-injection=enabled or istio.io/rev=default`,
		}},
		{name: "another revision", args: []string{"-n", "shop", "-f", manifestFile, "--revision", "canary"}, want: []string{
			"Deployment shop/checkout: " + verdictNotInjected,
			`engine skips the pod (other-revision): namespace "shop" is enabled for the default revision, this injector serves "canary"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runExplain(t, tt.stdin, append([]string{"--kubeconfig", kubeconfig}, tt.args...)...)
			if err != nil {
				t.Fatalf("explain: %v\n%s", err, out)
			}
			t.Logf("\n%s", out)
			rest := out
			for _, want := range tt.want {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("no %q (in order) in:\n%s", want, out)
				}
				rest = rest[i+len(want):]
			}
		})
	}

	errTests := []struct {
		name string
		args []string
		want string
	}{
		{name: "missing pod", args: []string{"-n", "shop", "nope"}, want: `reading pod shop/nope`},
		{name: "neither pod nor file", args: []string{"-n", "shop"}, want: "explain.pod: Required value: give a pod's name, or -f FILE"},
		{name: "pod and file", args: []string{"-n", "shop", "web", "-f", manifestFile}, want: "give a pod's name or -f FILE, not both"},
		{name: "bad native sidecars", args: []string{"-n", "shop", "web", "--native-sidecars", "maybe"}, want: `explain.native-sidecars: Unsupported value: "maybe"`},
		{name: "missing ConfigMap", args: []string{"-n", "shop", "cart-abc-1", "--configmap", "nope"}, want: "remora-system/nope"},
		{name: "missing namespace", args: []string{"-n", "ghost", "-f", manifestFile}, want: `reading namespace "ghost" of Deployment ghost/checkout`},
		{name: "manifest in another namespace", args: []string{"-n", "shop", "-f", "-"}, want: `-f -: Pod x is in namespace "legacy", not -n "shop"`},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			stdin := "apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: legacy}\nspec: {containers: [{name: a, image: b}]}\n"
			out, err := runExplain(t, stdin, append([]string{"--kubeconfig", kubeconfig}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q\n%s", err, tt.want, out)
			}
		})
	}
}
