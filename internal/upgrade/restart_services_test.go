package upgrade

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/services"
	"github.com/remora-mesh/remora/pkg/inject"
)

// TestExcludedServiceRecreated: a Deployment whose pods exclude a Service
// by name (injected with the current configuration, the Service resolved on
// the API server as the webhook would) is up to date until the Service is
// deleted and recreated with another cluster IP; then the controller, which
// watches the Service, reports it (the gauges, an OutdatedSidecars Event
// naming the Service) and restarts it once for the new address (its
// restarted-for is the hash and a digest of the addresses). The new pods
// still carry the template's record (no webhook here), so it is not
// restarted again, until the Service moves once more. (Its file sorts before
// scale_test.go: it runs before TestScale leaves 5,000 pods for the
// namespace controller to delete.)
func TestExcludedServiceRecreated(t *testing.T) {
	c := startCluster(t)
	c.startControllers(t)
	ctx := t.Context()
	cfg := loadConfig(t, "example.com/proxy:v1")
	ns, dbNS := "svc-recreated", "svc-recreated-db"
	c.createNamespace(t, ns, enabled, map[string]string{AnnotationRestartOutdated: "true"})
	c.createNamespace(t, dbNS, nil, nil)
	mysql := c.recreateService(t, dbNS, "mysql", "")
	first := mysql.Spec.ClusterIP

	resolver := &services.Resolver{Reader: c.client}
	labels := map[string]string{"app": "web"}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{inject.AnnotationExcludeOutboundServices: "mysql." + dbNS}},
		Spec:       corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
	res, err := inject.Inject(inject.Request{Pod: pod, Namespace: ns, NamespaceLabels: enabled, Config: cfg, Services: resolver.For(ctx)})
	if err != nil || !res.Injected {
		t.Fatalf("injecting the template: %v", err)
	}
	if got, want := res.Pod.Annotations[inject.AnnotationExcludedServiceAddresses], "mysql."+dbNS+"="+first; got != want {
		t.Fatalf("template record %q, want %q", got, want)
	}
	c.createDeployment(t, cfg, ns, "web", 2, nil, func(d *appsv1.Deployment) {
		d.Spec.Template = corev1.PodTemplateSpec{ObjectMeta: res.Pod.ObjectMeta, Spec: res.Pod.Spec}
	})
	c.waitRolledOut(t, ns, "web", time.Minute)
	started := counter(t, resultStarted)
	tm := c.startManager(t, managerOptions{name: "svc"}, fast(cfg, Options{ExcludeServices: true}))

	// Up to date while the Service keeps its address.
	evals := tm.r.evaluations.Load()
	waitFor(t, 10*time.Second, "three evaluations", func() (bool, string) { return tm.r.evaluations.Load() >= evals+3, "" })
	if v, ok := gauge(t, "remora_outdated_pods", map[string]string{"namespace": ns}); ok {
		t.Fatalf("remora_outdated_pods{namespace=%q} = %v before the Service changed", ns, v)
	}

	second := c.recreateService(t, dbNS, "mysql", first).Spec.ClusterIP
	t.Logf("Service mysql.%s recreated: %s, then %s", dbNS, first, second)
	waitGauge(t, "remora_stale_excluded_service_pods", ns, 2)
	waitGauge(t, "remora_outdated_pods", ns, 2)
	note := c.waitEvent(t, ns, KindDeployment, "web", ReasonOutdatedSidecars)
	for _, want := range []string{"2 of 2 pods exclude Services", "mysql." + dbNS, "restarting now"} {
		if !strings.Contains(note, want) {
			t.Errorf("OutdatedSidecars note %q lacks %q", note, want)
		}
	}
	c.waitEvent(t, ns, KindDeployment, "web", ReasonRestarting)
	d := c.getDeployment(t, ns, "web")
	key := d.Spec.Template.Annotations[AnnotationRestartedFor]
	if !strings.HasPrefix(key, cfg.Hash+"+services-") || d.Annotations[AnnotationRestartedFor] != key {
		t.Errorf("restarted-for %q (workload %q), want %s+services-<digest>", key, d.Annotations[AnnotationRestartedFor], cfg.Hash)
	}
	after := c.waitRolledOut(t, ns, "web", time.Minute)

	// The new pods carry the old record: still stale, not restarted again.
	evals = tm.r.evaluations.Load()
	waitFor(t, 10*time.Second, "three more evaluations", func() (bool, string) { return tm.r.evaluations.Load() >= evals+3, "" })
	if d := c.getDeployment(t, ns, "web"); d.Generation != after.Generation {
		t.Errorf("restarted again for the same addresses: generation %d, was %d", d.Generation, after.Generation)
	}
	if s := counter(t, resultStarted) - started; s != 1 {
		t.Errorf("%v restarts started, want 1", s)
	}

	// Moved once more: restarted once more, for the new address.
	third := c.recreateService(t, dbNS, "mysql", second).Spec.ClusterIP
	waitFor(t, 30*time.Second, "a restart for "+third, func() (bool, string) {
		got := c.getDeployment(t, ns, "web").Spec.Template.Annotations[AnnotationRestartedFor]
		return got != key && strings.HasPrefix(got, cfg.Hash+"+services-"), "restarted-for " + got
	})
	if s := counter(t, resultStarted) - started; s != 2 {
		t.Errorf("%v restarts started, want 2", s)
	}
}

// recreateService deletes Service ns/name if it exists, waits until it is
// gone and creates it again with a cluster IP other than not (the
// allocator's choice when not is empty).
func (c *testCluster) recreateService(t *testing.T, ns, name, not string) *corev1.Service {
	t.Helper()
	ctx := t.Context()
	old := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := c.client.Delete(ctx, old); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := c.client.Get(ctx, client.ObjectKeyFromObject(old), &corev1.Service{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	}); err != nil {
		t.Fatalf("waiting for Service %s/%s to be deleted: %v", ns, name, err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 3306}}}}
	if not != "" {
		// envtest's Service range is 10.0.0.0/24; .1 is the kubernetes
		// Service's.
		for i := 200; ; i++ {
			if ip := fmt.Sprintf("10.0.0.%d", i); ip != not {
				svc.Spec.ClusterIP = ip
				break
			}
		}
	}
	if err := c.client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	return svc
}
