package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

// TestNamespaceSelection creates a pod in namespaces labelled in each way
// that matters and checks which come back injected, as Istio selects them.
func TestNamespaceSelection(t *testing.T) {
	tests := []struct {
		name     string
		labels   map[string]string
		ns       string // an existing namespace instead of a new one
		podLabel map[string]string
		podAnn   map[string]string
		injected bool
	}{
		{name: "istio-injection=enabled", labels: enabled, injected: true},
		{name: "unlabelled", labels: nil, injected: false},
		{name: "istio-injection=disabled", labels: map[string]string{"istio-injection": "disabled"}, injected: false},
		{name: "istio.io/rev=default (through /inject/cluster/.../net/...)", labels: map[string]string{"istio.io/rev": "default"}, injected: true},
		{name: "istio.io/rev=canary is another revision's", labels: map[string]string{"istio.io/rev": "canary"}, injected: false},
		{name: "istio-injection=disabled wins over istio.io/rev", labels: map[string]string{"istio-injection": "disabled", "istio.io/rev": "default"}, injected: false},
		{name: "the injector's own namespace", ns: ownNamespace, injected: false},
		{name: "pod label sidecar.istio.io/inject=false", labels: enabled, podLabel: map[string]string{"sidecar.istio.io/inject": "false"}, injected: false},
		{name: "pod annotation sidecar.istio.io/inject=false", labels: enabled, podAnn: map[string]string{"sidecar.istio.io/inject": "false"}, injected: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := tt.ns
			if ns == "" {
				ns = newNamespace(t, "sel", tt.labels)
			}
			pod := newPod(ns, "")
			pod.Labels, pod.Annotations = tt.podLabel, tt.podAnn
			mustCreatePod(t, pod)
			if got := testenv.HasProxy(pod); got != tt.injected {
				t.Fatalf("injected=%v, want %v; containers %v, init containers %v",
					got, tt.injected, names(pod.Spec.Containers), names(pod.Spec.InitContainers))
			}
			if tt.injected {
				if container(pod.Spec.InitContainers, "istio-init") == nil {
					t.Errorf("no istio-init init container: %v", names(pod.Spec.InitContainers))
				}
				if pod.Annotations["sidecar.istio.io/status"] == "" {
					t.Error("no sidecar.istio.io/status annotation")
				}
			}
		})
	}
}

// TestDeploymentPodsAreInjected checks every pod a Deployment's ReplicaSet
// creates (with no name or namespace in the admitted object).
func TestDeploymentPodsAreInjected(t *testing.T) {
	ns := newNamespace(t, "deploy", enabled)
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.com/web:1"}}},
			},
		},
	}
	if err := env.cluster.Client.Create(t.Context(), dep); err != nil {
		t.Fatal(err)
	}
	pods := waitForPods(t, ns, labels, 3, 30*time.Second)
	for _, pod := range pods {
		p := testenv.ProxyContainer(&pod)
		if p == nil {
			t.Errorf("pod %s is not injected: %v", pod.Name, names(pod.Spec.Containers))
			continue
		}
		// The pod arrived from the ReplicaSet; the engine named its
		// workload after the Deployment.
		if got := envValue(p, "ISTIO_META_WORKLOAD_NAME"); got != "web" {
			t.Errorf("pod %s: ISTIO_META_WORKLOAD_NAME=%q, want web", pod.Name, got)
		}
	}
}

// TestJobPodsGetNativeSidecars checks a Job's pod: the API server is 1.37, so
// --native-sidecars=auto injects istio-proxy as a native sidecar, which lets
// the Job complete when its app container exits.
func TestJobPodsGetNativeSidecars(t *testing.T) {
	ns := newNamespace(t, "job", enabled)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "migrate", Namespace: ns},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "migrate", Image: "example.com/migrate:1"}},
		}}},
	}
	if err := env.cluster.Client.Create(t.Context(), job); err != nil {
		t.Fatal(err)
	}
	pods := waitForPods(t, ns, client.MatchingLabels{"batch.kubernetes.io/job-name": "migrate"}, 1, 30*time.Second)
	assertNativeSidecar(t, &pods[0])
	if got := names(pods[0].Spec.Containers); !slices.Equal(got, []string{"migrate"}) {
		t.Errorf("app containers %v, want [migrate]", got)
	}
}

// TestCronJobPodsGetNativeSidecars waits for the first run of the CronJob
// created at start-up (the next minute boundary) and checks its pod. It
// runs in parallel, after the other tests, to overlap the wait.
func TestCronJobPodsGetNativeSidecars(t *testing.T) {
	t.Parallel()
	var pods corev1.PodList
	err := wait.PollUntilContextTimeout(t.Context(), 500*time.Millisecond, 100*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := env.cluster.Client.List(ctx, &pods, client.InNamespace(cronNamespace)); err != nil {
			return false, err
		}
		return len(pods.Items) > 0, nil
	})
	if err != nil {
		t.Fatalf("the CronJob made no pod: %v", err)
	}
	pod := &pods.Items[0]
	assertNativeSidecar(t, pod)
	// The Job is named <cronjob>-<scheduled minute>: the engine traced the
	// pod to the CronJob.
	if got := envValue(testenv.ProxyContainer(pod), "ISTIO_META_WORKLOAD_NAME"); got != cronJobName {
		t.Errorf("ISTIO_META_WORKLOAD_NAME=%q, want %s", got, cronJobName)
	}
}

// TestExcludeOutboundIPRanges checks that the annotation reaches istio-init.
func TestExcludeOutboundIPRanges(t *testing.T) {
	ns := newNamespace(t, "exclude", enabled)
	pod := newPod(ns, "db-client")
	pod.Annotations = map[string]string{"traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.10.5/32"}
	mustCreatePod(t, pod)
	initC := container(pod.Spec.InitContainers, "istio-init")
	if initC == nil {
		t.Fatalf("no istio-init: %v", names(pod.Spec.InitContainers))
	}
	i := slices.Index(initC.Args, "-x")
	if i < 0 || i+1 >= len(initC.Args) || initC.Args[i+1] != "10.96.10.5/32" {
		t.Fatalf("istio-init args %q lack -x 10.96.10.5/32", initC.Args)
	}
}

// TestInvalidAnnotationsAreRefused checks that the API server refuses the
// pod with the webhook's message, which names the annotation.
func TestInvalidAnnotationsAreRefused(t *testing.T) {
	ns := newNamespace(t, "invalid", enabled)
	tests := []struct{ annotation, value string }{
		{"traffic.sidecar.istio.io/includeInboundPorts", "80,,x"},
		{"sidecar.istio.io/proxyCPU", "lots"},
		{"traffic.sidecar.istio.io/excludeOutboundIPRanges", "10.0.0.0/33"},
	}
	for _, tt := range tests {
		t.Run(tt.annotation, func(t *testing.T) {
			pod := newPod(ns, "")
			pod.Annotations = map[string]string{tt.annotation: tt.value}
			err := createPod(t, pod)
			errorContains(t, err, `admission webhook "`+framework.NamespaceWebhookName+`" denied the request`, tt.annotation, tt.value)
			if !apierrors.IsForbidden(err) {
				t.Errorf("status %v, want Forbidden", apierrors.ReasonForError(err))
			}
		})
	}
}

// TestDryRunIsInjected checks that a server-side dry run is answered like a
// real creation, and nothing is stored.
func TestDryRunIsInjected(t *testing.T) {
	ns := newNamespace(t, "dryrun", enabled)
	pod := newPod(ns, "dry")
	if err := createPod(t, pod, client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	if !testenv.HasProxy(pod) {
		t.Fatalf("the dry-run pod is not injected: %v", names(pod.Spec.Containers))
	}
	err := env.cluster.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), &corev1.Pod{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("after a dry run, Get returned %v, want NotFound", err)
	}
}

// TestInjectedPodIsNotInjectedAgain re-creates an injected pod under a new
// name (as kubectl apply of an injected manifest does) and checks that the
// webhook leaves it as it is.
func TestInjectedPodIsNotInjectedAgain(t *testing.T) {
	ns := newNamespace(t, "again", enabled)
	first := mustCreatePod(t, newPod(ns, "first"))
	if !testenv.HasProxy(first) {
		t.Fatal("the first pod is not injected")
	}
	second := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "second", Namespace: ns,
			Labels: first.Labels, Annotations: first.Annotations,
		},
		Spec: *first.Spec.DeepCopy(),
	}
	mustCreatePod(t, second)
	for _, list := range []struct {
		name          string
		before, after []corev1.Container
	}{
		{"containers", first.Spec.Containers, second.Spec.Containers},
		{"init containers", first.Spec.InitContainers, second.Spec.InitContainers},
	} {
		if !slices.EqualFunc(list.before, list.after, func(a, b corev1.Container) bool {
			return a.Name == b.Name && a.Image == b.Image && slices.Equal(a.Args, b.Args) && len(a.Env) == len(b.Env)
		}) {
			t.Errorf("%s changed: %v -> %v", list.name, names(list.before), names(list.after))
		}
	}
	if len(first.Spec.Volumes) != len(second.Spec.Volumes) {
		t.Errorf("volumes: %d -> %d", len(first.Spec.Volumes), len(second.Spec.Volumes))
	}
}
