package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

const (
	// ownNamespace is the injector's namespace, excluded from injection.
	ownNamespace = "remora-system"
	// probeNamespace is labelled for injection; InstallWebhook's probe pods
	// go there.
	probeNamespace = "e2e-probe"
	// cronNamespace holds the CronJob created at start-up, so that its
	// first run (at the next minute) overlaps with the other tests.
	cronNamespace = "e2e-cron"
	cronJobName   = "every-minute"
	// webhookConfigName names the MutatingWebhookConfiguration.
	webhookConfigName = "remora-injector"
	// Paths of the two webhooks: the namespace webhook uses /inject, the
	// revision webhook Istio's trailing path parameters, so that both
	// routes are exercised through the API server.
	namespacePath = "/inject"
	revisionPath  = "/inject/cluster/Kubernetes/net/network1"
)

// env is the state the tests share, built once by TestMain.
var env struct {
	dir        string
	cluster    *framework.Cluster
	ca         *framework.CA
	binary     string
	kubeconfig string // the injector's
	certDir    string
	configDir  string

	// injector is the shared injector; TestWebhookDown replaces it.
	mu       sync.Mutex
	injector *framework.Injector
}

// shared returns the shared injector.
func shared() *framework.Injector {
	env.mu.Lock()
	defer env.mu.Unlock()
	return env.injector
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" && os.Getenv("CI") != "true" {
		fmt.Println("e2e: skipped: set KUBEBUILDER_ASSETS to the control-plane binaries (make test-e2e uses bin/k8s), or CI=true")
		return 0
	}
	start := time.Now()
	if err := setUp(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: setting up:", err)
		tearDown(true)
		return 1
	}
	fmt.Printf("e2e: control plane, kube-controller-manager and injector ready in %v\n", time.Since(start).Round(time.Millisecond))
	code := m.Run()
	tearDown(code != 0)
	return code
}

func setUp() error {
	repo, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	if env.dir, err = os.MkdirTemp("", "remora-webhook-e2e-"); err != nil {
		return fmt.Errorf("creating the work directory: %w", err)
	}

	// Build the injector while the control plane starts.
	built := make(chan error, 1)
	go func() {
		var err error
		env.binary, err = framework.BuildInjector(repo, env.dir)
		built <- err
	}()
	env.cluster, err = framework.StartCluster(framework.ClusterOptions{
		Assets: testenv.K8sBinDir(repo), Dir: env.dir, ControllerManager: true, DualStackServices: true,
	})
	if buildErr := <-built; buildErr != nil {
		return errors.Join(buildErr, err)
	}
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if env.ca, err = framework.NewCA(); err != nil {
		return err
	}
	cert, err := env.ca.Issue()
	if err != nil {
		return err
	}
	env.certDir = filepath.Join(env.dir, "certs")
	if err := framework.WriteAtomically(env.certDir, cert.ServingFiles()); err != nil {
		return err
	}
	// An empty ConfigMap: the embedded defaults, until a test writes one.
	env.configDir = filepath.Join(env.dir, "config")
	if err := framework.WriteAtomically(env.configDir, framework.Files{}); err != nil {
		return err
	}
	if env.kubeconfig, err = env.cluster.WriteKubeconfig("remora-injector", filepath.Join(env.dir, "injector.kubeconfig")); err != nil {
		return err
	}
	for ns, labels := range map[string]map[string]string{
		ownNamespace:   {"istio-injection": "enabled"}, // labelled, yet never injected
		probeNamespace: {"istio-injection": "enabled"},
		cronNamespace:  {"istio-injection": "enabled"},
	} {
		if err := env.cluster.CreateNamespace(ctx, ns, labels); err != nil {
			return err
		}
	}
	if err := startSharedInjector(ctx); err != nil {
		return err
	}
	inj := shared()
	if err := env.cluster.InstallWebhook(ctx, framework.WebhookConfiguration(framework.WebhookOptions{
		Name:         webhookConfigName,
		NamespaceURL: inj.WebhookURL(namespacePath),
		RevisionURL:  inj.WebhookURL(revisionPath),
		CABundle:     env.ca.PEM(),
		OwnNamespace: ownNamespace,
	}), probeNamespace); err != nil {
		return err
	}
	return createCronJob(ctx)
}

// startSharedInjector starts the shared injector, on the ports of the
// previous one if there was one.
func startSharedInjector(ctx context.Context) error {
	opts := framework.InjectorOptions{
		Binary:     env.binary,
		Kubeconfig: env.kubeconfig,
		CertDir:    env.certDir,
		ConfigDir:  env.configDir,
		Namespace:  ownNamespace,
		LogPath:    filepath.Join(env.dir, "injector.log"),
		// Services named in traffic.remora.io/excludeOutboundServices are
		// resolved (TestExcludeOutboundServices).
		ExtraArgs: []string{"--exclude-services"},
	}
	if prev := shared(); prev != nil {
		opts = prev.Opts
	}
	inj, err := framework.StartInjector(ctx, opts)
	if err != nil {
		return err
	}
	env.mu.Lock()
	env.injector = inj
	env.mu.Unlock()
	return nil
}

// createCronJob creates a CronJob that runs every minute; TestCronJob checks
// the pods of its first Job.
func createCronJob(ctx context.Context) error {
	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: cronJobName, Namespace: cronNamespace},
		Spec: batchv1.CronJobSpec{
			Schedule:          "* * * * *",
			ConcurrencyPolicy: batchv1.ForbidConcurrent,
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "task", Image: "example.com/task:1", Command: []string{"true"}}},
			}}}},
		},
	}
	if err := env.cluster.Client.Create(ctx, cj); err != nil {
		return fmt.Errorf("creating the CronJob: %w", err)
	}
	return nil
}

func tearDown(failed bool) {
	if inj := shared(); inj != nil {
		if failed {
			fmt.Fprintf(os.Stderr, "--- injector log (last lines) ---\n%s\n", inj.LogTail(60))
		}
		_ = inj.Stop(10 * time.Second)
	}
	if env.cluster != nil {
		if failed && env.cluster.ControllerManager != nil {
			fmt.Fprintf(os.Stderr, "--- kube-controller-manager log (last lines) ---\n%s\n", env.cluster.ControllerManager.LogTail(20))
		}
		if err := env.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: stopping the control plane:", err)
		}
	}
	if env.dir != "" {
		if failed {
			fmt.Fprintln(os.Stderr, "e2e: logs kept in", env.dir)
			return
		}
		_ = os.RemoveAll(env.dir)
	}
}

// newNamespace creates a namespace with a unique name and the labels.
func newNamespace(t *testing.T, prefix string, labels map[string]string) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := prefix + "-" + hex.EncodeToString(b)
	if err := env.cluster.CreateNamespace(t.Context(), name, labels); err != nil {
		t.Fatal(err)
	}
	return name
}

// enabled are the labels of a namespace selected for injection.
var enabled = map[string]string{"istio-injection": "enabled"}

// newPod returns a one-container pod named name (generateName if empty).
func newPod(ns, name string) *corev1.Pod {
	pod := framework.ProbePod(ns)
	if name != "" {
		pod.GenerateName, pod.Name = "", name
	}
	pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	return pod
}

// newDeployment returns a Deployment of replicas one-container pods
// labelled app=name.
func newDeployment(ns, name string, replicas int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
			},
		},
	}
}

// createPod creates pod through the API server; on success pod holds what
// the API server stored.
func createPod(t *testing.T, pod *corev1.Pod, opts ...client.CreateOption) error {
	t.Helper()
	return env.cluster.Client.Create(t.Context(), pod, opts...)
}

// mustCreatePod creates pod and fails the test on error.
func mustCreatePod(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	if err := createPod(t, pod); err != nil {
		t.Fatalf("creating pod in %s: %v", pod.Namespace, err)
	}
	return pod
}

// container returns the named container of the list, or nil.
func container(cs []corev1.Container, name string) *corev1.Container {
	i := slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == name })
	if i < 0 {
		return nil
	}
	return &cs[i]
}

// names lists the containers' names.
func names(cs []corev1.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

// envValue returns the value of an environment variable of c.
func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// waitForPods waits until the namespace has at least n pods matching the
// selector and returns them.
func waitForPods(t *testing.T, ns string, selector client.MatchingLabels, n int, timeout time.Duration) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := env.cluster.Client.List(ctx, &pods, client.InNamespace(ns), selector); err != nil {
			return false, err
		}
		return len(pods.Items) >= n, nil
	})
	if err != nil {
		t.Fatalf("waiting for %d pods in %s (have %d): %v", n, ns, len(pods.Items), err)
	}
	return pods.Items
}

// assertNativeSidecar checks the native-sidecar layout: istio-init, then
// istio-proxy as an init container that keeps running (restartPolicy
// Always) and holds the app containers until its startup probe passes.
func assertNativeSidecar(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	got := names(pod.Spec.InitContainers)
	if len(got) < 2 || got[0] != "istio-init" || got[1] != "istio-proxy" {
		t.Fatalf("init containers %v, want istio-init then istio-proxy first", got)
	}
	p := &pod.Spec.InitContainers[1]
	if p.RestartPolicy == nil || *p.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("istio-proxy restartPolicy %v, want Always", p.RestartPolicy)
	}
	if p.StartupProbe == nil {
		t.Error("istio-proxy has no startup probe: the app containers would not wait for it")
	}
	if c := container(pod.Spec.Containers, "istio-proxy"); c != nil {
		t.Errorf("istio-proxy is also a regular container: %v", names(pod.Spec.Containers))
	}
}

// errorContains fails unless err is not nil and contains every substring.
func errorContains(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}
