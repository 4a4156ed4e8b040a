package upgrade

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// The control plane is shared by the package's envtest tests: kube-apiserver
// and etcd from envtest, and kube-controller-manager (Deployments,
// ReplicaSets, StatefulSets, DaemonSets, Jobs, garbage collection and
// namespace deletion) run against it, so that workloads really roll. There is
// no kubelet: a goroutine marks pods Ready through the status subresource,
// as a kubelet would.

var (
	clusterOnce sync.Once
	cluster     *testCluster
	clusterErr  error
	clusterStop = func() {}
)

func TestMain(m *testing.M) {
	code := m.Run()
	clusterStop()
	os.Exit(code)
}

type testCluster struct {
	env    *envtest.Environment
	cfg    *rest.Config
	client client.Client
	scheme *k8sruntime.Scheme
	// kubeconfig is an admin kubeconfig file for the API server.
	kubeconfig string
	// held are namespaces whose pods the fake kubelet leaves unready.
	held sync.Map
}

// assetsDir returns the directory with kube-apiserver, etcd and
// kube-controller-manager.
func assetsDir(t testing.TB) string {
	return testenv.AssetsDir(t, "kube-apiserver", "etcd", "kube-controller-manager")
}

// startCluster returns the shared control plane, starting it on first use.
func startCluster(t *testing.T) *testCluster {
	t.Helper()
	assets := assetsDir(t)
	clusterOnce.Do(func() {
		log.SetLogger(zap.New(zap.WriteTo(io.Discard)))
		cluster, clusterErr = newCluster(assets)
	})
	if clusterErr != nil {
		t.Fatalf("starting the control plane: %v", clusterErr)
	}
	return cluster
}

func newCluster(assets string) (*testCluster, error) {
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, err
	}
	c := &testCluster{env: env, cfg: cfg}
	clusterStop = c.stop
	c.scheme = k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(c.scheme); err != nil {
		return nil, err
	}
	if c.client, err = client.New(cfg, client.Options{Scheme: c.scheme}); err != nil {
		return nil, err
	}
	user, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding the admin user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "remora-upgrade-test-")
	if err != nil {
		return nil, err
	}
	c.kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(c.kubeconfig, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *testCluster) stop() {
	_ = c.env.Stop()
	_ = os.RemoveAll(filepath.Dir(c.kubeconfig))
}

// startControllers starts kube-controller-manager and a fake kubelet for
// the test's lifetime. They stop with the test, so that a test that does not
// start them (the scale test) has pods that no controller touches.
func (c *testCluster) startControllers(t *testing.T) {
	t.Helper()
	logFile := filepath.Join(filepath.Dir(c.kubeconfig), "kube-controller-manager.log")
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	kcm := exec.Command(filepath.Join(assetsDir(t), "kube-controller-manager"),
		"--kubeconfig="+c.kubeconfig,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
		"--controllers=deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,"+
			"job-controller,garbage-collector-controller,namespace-controller",
		"--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10")
	kcm.Stdout, kcm.Stderr = out, out
	if err := kcm.Start(); err != nil {
		t.Fatalf("starting kube-controller-manager: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.kubelet(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = kcm.Process.Kill()
		_ = kcm.Wait()
		_ = out.Close()
	})
}

// kubelet marks every pending pod Running and Ready, as a kubelet would
// once its containers started, so that rollouts progress.
func (c *testCluster) kubelet(ctx context.Context) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pods := &corev1.PodList{}
		if err := c.client.List(ctx, pods); err != nil {
			continue
		}
		for i := range pods.Items {
			pod := &pods.Items[i]
			if _, held := c.held.Load(pod.Namespace); held || pod.DeletionTimestamp != nil || podReady(pod) {
				continue
			}
			now := metav1.Now()
			pod.Status.Phase = corev1.PodRunning
			pod.Status.StartTime = &now
			pod.Status.Conditions = nil
			for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
				pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: ct, Status: corev1.ConditionTrue, LastTransitionTime: now})
			}
			_ = c.client.Status().Update(ctx, pod)
		}
	}
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// manager starts a manager for one controller instance; it stops with the
// test, or earlier through the returned function.
type testManager struct {
	mgr    manager.Manager
	r      *reconciler
	cancel context.CancelFunc
	done   chan struct{}
}

type managerOptions struct {
	leaderElection bool
	name           string
}

func (c *testCluster) startManager(t *testing.T, mo managerOptions, opts Options) *testManager {
	t.Helper()
	cfg := rest.CopyConfig(c.cfg)
	cfg.UserAgent = "remora-upgrade-test/" + mo.name
	mopts := manager.Options{
		Scheme:                 c.scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 zap.New(zap.WriteTo(testWriter{t}), zap.UseDevMode(true)).WithName(mo.name),
		// Several managers run one after another (and two at once) in
		// this process; in the injector there is one.
		Controller: crconfig.Controller{SkipNameValidation: ptr.To(true)},
	}
	if mo.leaderElection {
		mopts.LeaderElection = true
		mopts.LeaderElectionID = "remora-upgrade-test"
		mopts.LeaderElectionNamespace = metav1.NamespaceDefault
		mopts.LeaderElectionReleaseOnCancel = true
		mopts.LeaseDuration = ptr.To(3 * time.Second)
		mopts.RenewDeadline = ptr.To(2 * time.Second)
		mopts.RetryPeriod = ptr.To(250 * time.Millisecond)
	}
	mgr, err := manager.New(cfg, mopts)
	if err != nil {
		t.Fatal(err)
	}
	r, err := setup(mgr, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tm := &testManager{mgr: mgr, r: r, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tm.done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager %s: %v", mo.name, err)
		}
	}()
	t.Cleanup(tm.stop)
	return tm
}

func (tm *testManager) stop() {
	tm.cancel()
	<-tm.done
}

// testWriter sends logs to t.Log, and nowhere once the test ended.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	if os.Getenv("REMORA_TEST_LOGS") != "" {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Configurations: v1 injected the existing pods, v2 is current.
func loadConfig(t testing.TB, image string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Sources{Values: []byte("global:\n  proxy:\n    image: " + image + "\n")}, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// injectedTemplate is a pod template as the webhook would have injected it
// with cfg: the app container plus istio-init and the istio-proxy native
// sidecar, and the status and hash annotations.
func injectedTemplate(t testing.TB, cfg *config.Config, ns string, nsLabels, podLabels map[string]string, restartNever bool) corev1.PodTemplateSpec {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
		Spec: corev1.PodSpec{
			// The injected istio-token volume needs a service account
			// (envtest's API server has no ServiceAccount admission to set
			// it).
			ServiceAccountName: "default",
			Containers:         []corev1.Container{{Name: "app", Image: "example.com/app:1"}},
		},
	}
	if restartNever {
		pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	}
	res, err := inject.Inject(inject.Request{Pod: pod, Namespace: ns, NamespaceLabels: nsLabels, Config: cfg})
	if err != nil || !res.Injected {
		t.Fatalf("injecting the template: %v (%s)", err, res.Message)
	}
	return corev1.PodTemplateSpec{ObjectMeta: res.Pod.ObjectMeta, Spec: res.Pod.Spec}
}

var enabled = map[string]string{inject.LabelNamespaceInject: "enabled"}

// createNamespace creates a namespace with the labels and annotations and
// deletes it (and, through the garbage collector, its workloads) after the
// test.
func (c *testCluster) createNamespace(t *testing.T, name string, labels, annotations map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations}}
	if err := c.client.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.client.Delete(context.Background(), ns); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting namespace %s: %v", name, err)
		}
	})
}

func (c *testCluster) createDeployment(t *testing.T, cfg *config.Config, ns, name string, replicas int32, annotations map[string]string, mutate ...func(*appsv1.Deployment)) *appsv1.Deployment {
	t.Helper()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			// Injected when the namespace was enabled (it may no longer be).
			Template: injectedTemplate(t, cfg, ns, enabled, labels, false),
		},
	}
	for _, m := range mutate {
		m(d)
	}
	if err := c.client.Create(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	return d
}

// waitFor polls cond every 100ms until it returns true, failing the test
// after timeout with the last message.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if msg != "" {
			last = msg
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// gauge returns the value of a metric from controller-runtime's registry
// and whether the series exists.
func gauge(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// events returns the reasons of the Events regarding the object, with their
// notes.
func (c *testCluster) events(t *testing.T, ns, kind, name string) map[string]string {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := c.client.List(t.Context(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range list.Items {
		if e.Regarding.Kind == kind && e.Regarding.Name == name {
			out[e.Reason] = e.Note
		}
	}
	return out
}

func (c *testCluster) waitEvent(t *testing.T, ns, kind, name, reason string) string {
	t.Helper()
	var note string
	waitFor(t, 30*time.Second, fmt.Sprintf("Event %s on %s %s/%s", reason, kind, ns, name), func() (bool, string) {
		ev := c.events(t, ns, kind, name)
		n, ok := ev[reason]
		note = n
		return ok, fmt.Sprintf("events: %v", ev)
	})
	return note
}

func (c *testCluster) getDeployment(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := c.client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
		t.Fatal(err)
	}
	return d
}

// waitRolledOut waits until the Deployment's rollout finished with all its
// pods Ready.
func (c *testCluster) waitRolledOut(t *testing.T, ns, name string, timeout time.Duration) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	waitFor(t, timeout, "Deployment "+ns+"/"+name+" rolled out", func() (bool, string) {
		d = c.getDeployment(t, ns, name)
		return RolloutOf(d).Finished, fmt.Sprintf("generation %d, status %+v", d.Generation, d.Status)
	})
	return d
}

func (c *testCluster) countPods(t *testing.T, ns string) int {
	t.Helper()
	pods := &corev1.PodList{}
	if err := c.client.List(t.Context(), pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return len(pods.Items)
}

// jobOfCronJob creates a CronJob (suspended: no cronjob controller runs) and
// a Job it owns, whose pods the job controller creates.
func (c *testCluster) jobOfCronJob(t *testing.T, cfg *config.Config, ns, name string) {
	t.Helper()
	tmpl := injectedTemplate(t, cfg, ns, enabled, map[string]string{"job": name}, true)
	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: batchv1.CronJobSpec{
			Schedule: "0 0 1 1 *",
			Suspend:  ptr.To(true),
			JobTemplate: batchv1.JobTemplateSpec{
				Spec: batchv1.JobSpec{Template: tmpl},
			},
		},
	}
	if err := c.client.Create(t.Context(), cj); err != nil {
		t.Fatal(err)
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name + "-1",
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "batch/v1", Kind: KindCronJob, Name: name, UID: cj.UID, Controller: ptr.To(true),
			}},
		},
		Spec: batchv1.JobSpec{Template: tmpl},
	}
	if err := c.client.Create(t.Context(), job); err != nil {
		t.Fatal(err)
	}
}
