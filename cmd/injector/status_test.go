package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/internal/upgrade"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// statusAssets returns the directory with kube-apiserver and etcd.
func statusAssets(t *testing.T) string { return testenv.AssetsDir(t) }

const (
	valuesV1 = "global:\n  proxy:\n    image: example.com/proxy:v1\n"
	valuesV2 = "global:\n  proxy:\n    image: example.com/proxy:v2\n"
	// valuesV2Debug has v2's image and another setting: a config change.
	valuesV2Debug = valuesV2 + "  logging:\n    level: default:debug\n"
)

// statusFixture writes, straight into a real API server, the state the
// upgrade controller would find: Deployments (rolled out, rolling), a
// StatefulSet, a CronJob's Job and a bare pod, whose pods were injected with
// older or current configurations, in enabled and no longer enabled
// namespaces; and the injector's ConfigMap holding the current (v2)
// configuration.
type statusFixture struct {
	t      *testing.T
	c      client.Client
	v2     *config.Config
	v2Hash string
}

func (f *statusFixture) load(values string) *config.Config {
	f.t.Helper()
	cfg, err := config.Load(config.Sources{Values: []byte(values)}, config.Overrides{})
	if err != nil {
		f.t.Fatal(err)
	}
	return cfg
}

func (f *statusFixture) create(obj client.Object) {
	f.t.Helper()
	if err := f.c.Create(f.t.Context(), obj); err != nil {
		f.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// pod creates a pod injected with cfg, owned by owner (nil: a bare pod).
func (f *statusFixture) pod(cfg *config.Config, ns, name string, owner client.Object, apiVersion, kind string) {
	f.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName: "default",
			RestartPolicy:      corev1.RestartPolicyNever,
			Containers:         []corev1.Container{{Name: "app", Image: "example.com/app:1"}},
		},
	}
	res, err := inject.Inject(inject.Request{Pod: p, Namespace: ns, NamespaceLabels: map[string]string{inject.LabelNamespaceInject: "enabled"},
		Config: cfg})
	if err != nil || !res.Injected {
		f.t.Fatalf("injecting %s: %v (%s)", name, err, res.Message)
	}
	out := res.Pod
	if owner != nil {
		out.OwnerReferences = []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: owner.GetName(), UID: owner.GetUID(), Controller: ptr.To(true)}}
	}
	f.create(out)
}

func (f *statusFixture) deployment(ns, name string, rolledOut bool) *appsv1.ReplicaSet {
	f.t.Helper()
	labels := map[string]string{"app": name}
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl},
	}
	f.create(d)
	// No controller runs: set the status a Deployment controller would.
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}
	if !rolledOut {
		d.Status.UpdatedReplicas, d.Status.Replicas = 1, 3
	}
	if err := f.c.Status().Update(f.t.Context(), d); err != nil {
		f.t.Fatal(err)
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-abc", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "Deployment", Name: name, UID: d.UID, Controller: ptr.To(true),
		}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](2), Selector: d.Spec.Selector, Template: tmpl},
	}
	f.create(rs)
	return rs
}

func newStatusFixture(t *testing.T) (*statusFixture, string) {
	t.Helper()
	log.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	env, restCfg := startControlPlane(t)
	scheme := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	user, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}

	f := &statusFixture{t: t, c: c}
	v1, v2, v2debug := f.load(valuesV1), f.load(valuesV2), f.load(valuesV2Debug)
	f.v2, f.v2Hash = v2, v2.Hash

	for _, ns := range []struct {
		name   string
		labels map[string]string
	}{
		{"remora-system", nil},
		{"shop", map[string]string{inject.LabelNamespaceInject: "enabled"}},
		{"legacy", nil},
	} {
		f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.name, Labels: ns.labels}})
	}
	f.create(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "remora-system", Name: "remora"},
		Data:       map[string]string{config.ValuesFile: valuesV2, config.MeshFile: "{}\n", "README": "ignored"},
	})

	web := f.deployment("shop", "web", true)
	f.pod(v1, "shop", "web-abc-1", web, "apps/v1", "ReplicaSet")
	f.pod(v1, "shop", "web-abc-2", web, "apps/v1", "ReplicaSet")
	api := f.deployment("shop", "api", false)
	f.pod(v1, "shop", "api-abc-1", api, "apps/v1", "ReplicaSet")
	f.pod(v2, "shop", "api-abc-2", api, "apps/v1", "ReplicaSet")
	cart := f.deployment("shop", "cart", true)
	f.pod(v2, "shop", "cart-abc-1", cart, "apps/v1", "ReplicaSet")

	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"},
		Spec: appsv1.StatefulSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "example.com/db:1"}}},
			},
		},
	}
	f.create(sts)
	sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: sts.Generation, Replicas: 1, ReadyReplicas: 1, CurrentRevision: "db-1", UpdateRevision: "db-1"}
	if err := c.Status().Update(t.Context(), sts); err != nil {
		t.Fatal(err)
	}
	f.pod(v2debug, "shop", "db-0", sts, "apps/v1", "StatefulSet")

	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "nightly"},
		Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "c", Image: "example.com/job:1"}}}},
		}}},
	}
	f.create(cj)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "nightly-1", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "batch/v1", Kind: "CronJob", Name: "nightly", UID: cj.UID, Controller: ptr.To(true),
		}}},
		Spec: cj.Spec.JobTemplate.Spec,
	}
	f.create(job)
	f.pod(v1, "shop", "nightly-1-x", job, "batch/v1", "Job")
	f.pod(v1, "shop", "debug", nil, "", "")

	old := f.deployment("legacy", "old", true)
	f.pod(v1, "legacy", "old-abc-1", old, "apps/v1", "ReplicaSet")
	return f, kubeconfig
}

func runStatus(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"status"}, args...))
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// tableRows parses the table: one slice of cells per row, header excluded.
func tableRows(t *testing.T, out string) [][]string {
	t.Helper()
	lines := strings.Split(out, "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "NAMESPACE") {
		t.Fatalf("no table header in:\n%s", out)
	}
	sep := regexp.MustCompile(`\s{2,}`)
	var rows [][]string
	for _, l := range lines[1:] {
		if strings.TrimSpace(l) == "" {
			break
		}
		rows = append(rows, sep.Split(strings.TrimSpace(l), -1))
	}
	return rows
}

// TestStatusCommand runs injector status against a real API server.
func TestStatusCommand(t *testing.T) {
	f, kubeconfig := newStatusFixture(t)
	all := [][]string{
		{"legacy", "old", "Deployment", "1/1", "-", string(upgrade.StatusUnselected)},
		{"shop", "nightly", "CronJob", "1/1", "image", string(upgrade.StatusNeedsRestart)},
		{"shop", "api", "Deployment", "1/2", "image", string(upgrade.StatusRestarting)},
		{"shop", "cart", "Deployment", "0/1", "-", string(upgrade.StatusUpToDate)},
		{"shop", "web", "Deployment", "2/2", "image", string(upgrade.StatusNeedsRestart)},
		{"shop", "debug", "Pod", "1/1", "image", string(upgrade.StatusNeedsRestart)},
		{"shop", "db", "StatefulSet", "1/1", "config", string(upgrade.StatusNeedsRestart)},
	}
	configDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, config.ValuesFile), []byte(valuesV2), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		args    []string
		rows    [][]string
		summary string
	}{
		{name: "every namespace, configuration from the ConfigMap", args: nil, rows: all,
			summary: "6 of 7 workloads not up to date; 6 of 9 injected pods outdated, 1 no longer selected (configuration " + f.v2Hash + ", revision default)."},
		{name: "one namespace", args: []string{"-n", "legacy"}, rows: all[:1],
			summary: "1 of 1 workloads not up to date; 0 of 1 injected pods outdated, 1 no longer selected"},
		{name: "configuration from a directory", args: []string{"--config-dir", configDir, "-n", "shop"}, rows: all[1:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runStatus(t, append([]string{"--kubeconfig", kubeconfig}, tt.args...)...)
			if err != nil {
				t.Fatalf("status: %v\n%s", err, out)
			}
			t.Logf("\n%s", out)
			rows := tableRows(t, out)
			if len(rows) != len(tt.rows) {
				t.Fatalf("%d rows, want %d:\n%s", len(rows), len(tt.rows), out)
			}
			for i := range rows {
				if strings.Join(rows[i], "|") != strings.Join(tt.rows[i], "|") {
					t.Errorf("row %d: %q, want %q", i, rows[i], tt.rows[i])
				}
			}
			if !strings.Contains(out, tt.summary) {
				t.Errorf("no summary %q in:\n%s", tt.summary, out)
			}
		})
	}

	t.Run("the injector's --revision", func(t *testing.T) {
		// The chart passes --revision=default: the same configuration.
		out, err := runStatus(t, "--kubeconfig", kubeconfig, "-n", "shop", "--revision", "default")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "configuration "+f.v2Hash) {
			t.Errorf("--revision default changed the configuration hash:\n%s", out)
		}
		// Another revision: another hash, and none of these pods are its.
		out, err = runStatus(t, "--kubeconfig", kubeconfig, "-n", "shop", "--revision", "canary")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, `No injected pods of revision "canary"`) || strings.Contains(out, f.v2Hash) {
			t.Errorf("--revision canary:\n%s", out)
		}
	})

	t.Run("missing ConfigMap", func(t *testing.T) {
		_, err := runStatus(t, "--kubeconfig", kubeconfig, "--configmap", "nope")
		if err == nil || !strings.Contains(err.Error(), "remora-system/nope") {
			t.Errorf("error %v, want one naming the ConfigMap", err)
		}
	})
}

func TestPrintStatusEmpty(t *testing.T) {
	var out bytes.Buffer
	if err := printStatus(&out, &upgrade.Report{Hash: "abc", Revision: "default"}); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, "No injected pods") || !strings.Contains(got, "abc") {
		t.Errorf("output %q", got)
	}
}

// TestPrintStatusServices: a workload whose excluded Services changed shows
// "services" as its change, and the Services are listed under the table.
func TestPrintStatusServices(t *testing.T) {
	var out bytes.Buffer
	rep := &upgrade.Report{Hash: "abc", Revision: "default", Workloads: []upgrade.WorkloadReport{{
		Ref:             upgrade.Ref{Kind: upgrade.KindDeployment, Namespace: "shop", Name: "orders"},
		Counts:          upgrade.Counts{Total: 2, Outdated: 2, StaleServices: 2},
		Change:          upgrade.ChangeServices,
		ChangedServices: []inject.ServiceRef{{Namespace: "db", Name: "mysql"}},
		Status:          upgrade.StatusNeedsRestart,
	}}, Pods: upgrade.Counts{Total: 2, Outdated: 2, StaleServices: 2}}
	if err := printStatus(&out, rep); err != nil {
		t.Fatal(err)
	}
	rows := tableRows(t, out.String())
	if len(rows) != 1 || !slices.Equal(rows[0], []string{"shop", "orders", "Deployment", "2/2", "services", "needs restart"}) {
		t.Errorf("rows %q", rows)
	}
	if want := "Deployment shop/orders: excluded Services with new addresses (recreate its pods so they are resolved again): mysql.db\n"; !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
}
