package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

// What the upgrade controller reads and writes (docs/upgrades.md), spelled
// out rather than imported: they are the product's API.
const (
	annotationRestartOutdated = "remora.io/restart-outdated"
	annotationRestartedFor    = "remora.io/restarted-for"
	annotationRestartedAt     = "kubectl.kubernetes.io/restartedAt"
	annotationInjectionHash   = "remora.io/injection-hash"
	leaderLease               = "remora-injector-leader"

	// upgradeRevision is the Istio revision the upgrade test's injectors
	// serve. The shared injector serves the default revision and runs its
	// own upgrade controller cluster-wide without leader election; pods of
	// another revision are invisible to it (and the shared injector's pods
	// to these), so the two never act on each other's workloads, and the
	// shared configuration directory, which other tests rewrite, is not
	// touched.
	upgradeRevision = "upgrade-e2e"

	// podStartTime is how long the fake kubelet takes to report a new pod
	// Ready, so that a rollout of two pods or more spans more than one of
	// the controller's evaluations (at most one a second), as any real
	// rollout does. FastRollout shows what happens to faster ones.
	podStartTime = 1500 * time.Millisecond
)

// upgradeEnv is the upgrade test's own injectors, configuration and webhook.
type upgradeEnv struct {
	configDir string
	leaseNS   string
	balancer  *framework.Balancer
	kubelet   *framework.FakeKubelet
	// a is the first injector, b the standby started for the leader
	// election step.
	a, b *framework.Injector
	// failures are the failures errorAtEnd recorded, reported when the
	// test ends.
	failures []string
	// top is the test the processes live as long as.
	top *testing.T
}

// revLabels select a namespace for the upgrade revision.
var revLabels = map[string]string{"istio.io/rev": upgradeRevision}

func proxyValues(image string) framework.Files {
	return framework.Files{"values.yaml": []byte("global:\n  proxy:\n    image: " + image + "\n")}
}

// TestUpgrade proves docs/upgrades.md with the real webhook: pods injected
// by injector serve, its configuration changed on disk, its companion
// controller reporting and, where opted in, rolling the workloads, whose
// new pods the webhook injects with the new configuration. The steps build
// on each other.
func TestUpgrade(t *testing.T) {
	start := time.Now()
	u := &upgradeEnv{top: t}
	t.Cleanup(func() {
		for _, f := range u.failures {
			t.Error(f)
		}
	})
	var err error
	if u.configDir, err = framework.Dir(env.dir, "upgrade-config"); err != nil {
		t.Fatal(err)
	}
	if err := framework.WriteAtomically(u.configDir, proxyValues("example.com/proxy:v1")); err != nil {
		t.Fatal(err)
	}
	u.leaseNS = newNamespace(t, "upgrade-system", nil)
	u.a = u.startInjector(t, "a")
	if u.balancer, err = framework.StartBalancer(webhookAddr(u.a)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.balancer.Close() })

	ns1 := newNamespace(t, "upgrade", revLabels)
	u.kubelet = framework.StartFakeKubelet(env.cluster.Client, 100*time.Millisecond, podStartTime, ns1)
	t.Cleanup(u.kubelet.Stop)
	hook := framework.RevisionWebhookConfiguration(framework.WebhookOptions{
		Name:         "remora-upgrade-e2e",
		RevisionURL:  u.balancer.URL(revisionPath),
		CABundle:     env.ca.PEM(),
		OwnNamespace: u.leaseNS,
	}, upgradeRevision)
	if err := env.cluster.InstallWebhook(t.Context(), hook, ns1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := env.cluster.Client.Delete(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: hook.Name},
		}); err != nil {
			t.Errorf("deleting the upgrade webhook: %v", err)
		}
	})
	h1 := configHash(t, u.a)
	t.Logf("set up in %v: injector %s, revision %s, configuration %s", time.Since(start).Round(time.Millisecond),
		u.a.Opts.LogPath, upgradeRevision, h1)

	var h2 string
	step := time.Now()
	ok := t.Run("ReportOnly", func(t *testing.T) {
		createDeployment(t, ns1, "web", 3)
		waitRolledOut(t, ns1, "web", 3, h1, "example.com/proxy:v1", 60*time.Second)
		assertStatusRow(t, u.status(t, ns1), "web", "0/3", "-", "up to date")

		h2 = u.setProxyImage(t, "example.com/proxy:v2", h1)
		waitUntil(t, "remora_outdated_pods for "+ns1, 30*time.Second, func() bool {
			return injectorMetric(t, u.a, "remora_outdated_pods", map[string]string{"namespace": ns1}) == 3
		})
		note := waitEvent(t, ns1, "Deployment", "web", "OutdatedSidecars", "")
		t.Logf("OutdatedSidecars: %s", note)
		if !strings.Contains(note, "3 of 3 pods") || !strings.Contains(note, "image changed") || !strings.Contains(note, "not opted in") {
			t.Errorf("OutdatedSidecars note %q does not say 3 of 3 pods, image changed, not opted in", note)
		}
		out := u.status(t, ns1)
		t.Logf("injector status after the change:\n%s", out)
		assertStatusRow(t, out, "web", "3/3", "image", "needs restart")
		if !strings.Contains(out, "configuration "+h2) {
			t.Errorf("injector status does not name configuration %s", h2)
		}

		// Not opted in: reported only, never patched.
		started := injectorMetric(t, u.a, "remora_restarts_total", map[string]string{"result": "started"})
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			d := getDeployment(t, ns1, "web")
			if a := d.Spec.Template.Annotations; a[annotationRestartedAt] != "" || a[annotationRestartedFor] != "" {
				t.Fatalf("a Deployment that did not opt in was restarted: template annotations %v", a)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if got := injectorMetric(t, u.a, "remora_restarts_total", map[string]string{"result": "started"}); got != started {
			t.Errorf("remora_restarts_total{result=started} went from %v to %v without opt-in", started, got)
		}
	})
	t.Logf("step 1 (report only) took %v", time.Since(step).Round(time.Millisecond))
	if !ok {
		return
	}

	step = time.Now()
	ok = t.Run("OptedIn", func(t *testing.T) {
		started := injectorMetric(t, u.a, "remora_restarts_total", map[string]string{"result": "started"})
		finished := injectorMetric(t, u.a, "remora_restarts_total", map[string]string{"result": "finished"})
		injected := injectorMetric(t, u.a, "remora_injections_total", map[string]string{"result": "injected"})
		oldTemplates := podTemplateHashes(t, ns1, "web")
		sharedFinished := metric(t, "remora_restarts_total", map[string]string{"result": "finished"})

		annotateObject(t, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns1, Name: "web"}}, annotationRestartOutdated, "true")
		var d *appsv1.Deployment
		waitUntil(t, "the controller to restart the Deployment", 30*time.Second, func() bool {
			d = getDeployment(t, ns1, "web")
			return d.Spec.Template.Annotations[annotationRestartedFor] == h2
		})
		if d.Spec.Template.Annotations[annotationRestartedAt] == "" || d.Annotations[annotationRestartedFor] != h2 {
			t.Errorf("restart patch: template annotations %v, annotations %v", d.Spec.Template.Annotations, d.Annotations)
		}
		if testenv.HasProxy(&corev1.Pod{Spec: d.Spec.Template.Spec}) {
			t.Fatal("the Deployment's template carries the sidecar: the new pods would not prove the webhook")
		}
		pods := waitRolledOut(t, ns1, "web", 3, h2, "example.com/proxy:v2", 60*time.Second)
		for _, pod := range pods {
			if oldTemplates[pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]] {
				t.Errorf("pod %s is of an old ReplicaSet", pod.Name)
			}
		}
		if got := injectorMetric(t, u.a, "remora_injections_total", map[string]string{"result": "injected"}); got < injected+3 {
			t.Errorf("remora_injections_total{result=injected} went from %v to %v, want at least 3 more: the new pods went through the webhook", injected, got)
		}
		waitUntil(t, "remora_restarts_total{result=finished}", 40*time.Second, func() bool {
			return injectorMetric(t, u.a, "remora_restarts_total", map[string]string{"result": "finished"}) == finished+1
		})
		if got := injectorMetric(t, u.a, "remora_restarts_total", map[string]string{"result": "started"}); got != started+1 {
			t.Errorf("remora_restarts_total{result=started} went from %v to %v, want one restart", started, got)
		}
		waitUntil(t, "the outdated gauge of "+ns1+" to go", 30*time.Second, func() bool {
			return !hasSeries(t, u.a, "remora_outdated_pods", map[string]string{"namespace": ns1})
		})
		t.Logf("RestartingOutdatedSidecars: %s", waitEvent(t, ns1, "Deployment", "web", "RestartingOutdatedSidecars", ""))
		// The end of the restart says whether the new pods are up to date.
		t.Logf("RestartFinished: %s", waitEvent(t, ns1, "Deployment", "web", "RestartFinished", "3 of 3 injected pods up to date"))
		// Only the controller of the revision that restarted it reports it.
		if notes := eventNotes(t, ns1, "Deployment", "web", "RestartFinished"); len(notes) != 1 {
			u.errorAtEnd(t, "%d RestartFinished Events on the Deployment, want 1: %q", len(notes), notes)
		}
		if got := metric(t, "remora_restarts_total", map[string]string{"result": "finished"}); got != sharedFinished {
			u.errorAtEnd(t, "the shared injector (revision default) counted the restart of revision %s's Deployment: "+
				"its remora_restarts_total{result=finished} went from %v to %v", upgradeRevision, sharedFinished, got)
		}
		out := u.status(t, ns1)
		t.Logf("injector status after the restart:\n%s", out)
		assertStatusRow(t, out, "web", "0/3", "-", "up to date")
	})
	t.Logf("step 2 (opted in, restarted) took %v", time.Since(step).Round(time.Millisecond))
	if !ok {
		return
	}

	var h3 string
	step = time.Now()
	ok = t.Run("RateLimit", func(t *testing.T) {
		// web (still opted in) and three Deployments of a namespace that
		// opted in: four restarts, at most one at a time.
		ns2 := newNamespace(t, "upgrade-rate", revLabels)
		annotateObject(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns2}}, annotationRestartOutdated, "true")
		u.kubelet.AddNamespace(ns2)
		workloads := []types.NamespacedName{{Namespace: ns1, Name: "web"}}
		for _, name := range []string{"rate-a", "rate-b", "rate-c"} {
			createDeployment(t, ns2, name, 2)
			workloads = append(workloads, types.NamespacedName{Namespace: ns2, Name: name})
		}
		for _, w := range workloads[1:] {
			waitRolledOut(t, w.Namespace, w.Name, 2, h2, "example.com/proxy:v2", 60*time.Second)
		}
		started := injectorMetric(t, u.a, "remora_restarts_total", map[string]string{"result": "started"})

		s := sampleRolling(workloads)
		h3 = u.setProxyImage(t, "example.com/proxy:v3", h2)
		for _, w := range workloads {
			waitUntil(t, "the restart of "+w.String(), 90*time.Second, func() bool {
				return getDeployment(t, w.Namespace, w.Name).Spec.Template.Annotations[annotationRestartedFor] == h3
			})
			waitRolledOut(t, w.Namespace, w.Name, int(ptr.Deref(getDeployment(t, w.Namespace, w.Name).Spec.Replicas, 1)), h3,
				"example.com/proxy:v3", 60*time.Second)
		}
		samples, most, order, seen := s.stop()
		t.Logf("%d samples of the cluster; restarts in the order %v; at most %d rolling at once", samples, order, most)
		if most > 1 {
			t.Errorf("%d Deployments were rolling at once with --max-concurrent-restarts=1", most)
		}
		for _, w := range workloads {
			if !seen[w] {
				t.Errorf("%s was never seen rolling: the sampling proves nothing", w)
			}
		}
		if got := injectorMetric(t, u.a, "remora_restarts_total", map[string]string{"result": "started"}); got != started+4 {
			t.Errorf("remora_restarts_total{result=started} went from %v to %v, want 4 restarts", started, got)
		}
	})
	t.Logf("step 3 (rate limit) took %v", time.Since(step).Round(time.Millisecond))
	if !ok {
		return
	}

	var h4 string
	step = time.Now()
	ok = t.Run("LeaderElection", func(t *testing.T) { h4 = u.leaderElection(t, ns1, h3) })
	t.Logf("step 4 (leader election) took %v; the whole test %v", time.Since(step).Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond))
	if !ok {
		return
	}
	t.Run("FastRollout", func(t *testing.T) { u.fastRollout(t, h4) })
}

// leaderElection: a standby replica does nothing while the leader lives;
// the leader is killed (SIGKILL: it cannot release the Lease, so the standby
// takes over when the Lease expires) while a restart holds the only slot
// and another workload waits; the standby takes over, waits for that
// rollout, restarts the other workload, and not the first one again.
func (u *upgradeEnv) leaderElection(t *testing.T, ns1, hash string) string {
	// Only the namespace of this step is opted in from now on.
	annotateObject(t, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns1, Name: "web"}}, annotationRestartOutdated, "false")
	for _, ns := range namespacesWithPrefix(t, "upgrade-rate-") {
		annotateObject(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, annotationRestartOutdated, "false")
	}

	u.b = u.startInjector(t, "b")
	u.balancer.SetBackends(webhookAddr(u.a), webhookAddr(u.b))
	holderA := leaseHolder(t, u.leaseNS)
	if holderA == "" {
		t.Fatal("no Lease holder with one replica running")
	}
	if leading(t, u.a) != 1 || leading(t, u.b) != 0 {
		t.Fatalf("leader_election_master_status: a %v, b %v; want a leading", leading(t, u.a), leading(t, u.b))
	}
	t.Logf("Lease %s/%s held by %s (replica a)", u.leaseNS, leaderLease, holderA)

	ns3 := newNamespace(t, "upgrade-ha", revLabels)
	annotateObject(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns3}}, annotationRestartOutdated, "true")
	u.kubelet.AddNamespace(ns3)
	for _, name := range []string{"ha-1", "ha-2"} {
		createDeployment(t, ns3, name, 2)
	}
	for _, name := range []string{"ha-1", "ha-2"} {
		waitRolledOut(t, ns3, name, 2, hash, "example.com/proxy:v3", 60*time.Second)
	}
	startedA := injectorMetric(t, u.a, "remora_restarts_total", map[string]string{"result": "started"})

	// ha-1 comes first (namespace, kind, name order); its new pods stay
	// pending, so its rollout holds the only slot.
	u.kubelet.Hold(ns3, map[string]string{"app": "ha-1"})
	h4 := u.setProxyImage(t, "example.com/proxy:v4", hash)
	waitUntil(t, "the leader to restart ha-1", 30*time.Second, func() bool {
		return getDeployment(t, ns3, "ha-1").Spec.Template.Annotations[annotationRestartedFor] == h4
	})
	restartedAt := getDeployment(t, ns3, "ha-1").Spec.Template.Annotations[annotationRestartedAt]
	// The leader evaluates again on ha-1's changes: ha-2 must wait.
	waitEvaluations(t, u.a, evaluations(u.a)+2)
	if a := getDeployment(t, ns3, "ha-2").Spec.Template.Annotations; a[annotationRestartedFor] == h4 {
		t.Fatal("ha-2 was restarted while ha-1 held the only slot")
	}
	if got := injectorMetric(t, u.a, "remora_restarts_total", map[string]string{"result": "started"}); got != startedA+1 {
		t.Errorf("leader: remora_restarts_total{result=started} went from %v to %v, want one restart", startedA, got)
	}
	if got := injectorMetric(t, u.b, "remora_restarts_total", nil); got != 0 {
		t.Errorf("standby: remora_restarts_total %v, want 0", got)
	}
	if hasSeries(t, u.b, "remora_outdated_pods", nil) {
		t.Error("standby: exports remora_outdated_pods: its controller runs")
	}
	if logHas(t, u.b, "Restarting a workload") || logHas(t, u.b, "Outdated sidecars") {
		t.Error("standby: logs restarts or reports")
	}
	if !logHas(t, u.a, "Restarting a workload") {
		t.Error("leader: does not log its restarts")
	}

	// SIGKILL: the leader cannot release the Lease (it releases it on a
	// clean shutdown), so the standby waits for it to expire.
	killed := time.Now()
	if err := u.a.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = u.a.Wait(10 * time.Second)
	u.balancer.SetBackends(webhookAddr(u.b))
	var holderB string
	waitUntil(t, "replica b to take the Lease", 60*time.Second, func() bool {
		holderB = leaseHolder(t, u.leaseNS)
		return holderB != "" && holderB != holderA && leading(t, u.b) == 1
	})
	t.Logf("replica b (%s) took the Lease %v after the leader was killed", holderB, time.Since(killed).Round(time.Millisecond))

	// The new leader evaluates, and waits for ha-1's rollout: the evaluation that reports ns3 has
	// decided about ha-2 once it has finished (its restarts come after the gauges).
	evalsB := evaluations(u.b)
	waitUntil(t, "replica b to report "+ns3, 30*time.Second, func() bool {
		return injectorMetric(t, u.b, "remora_outdated_pods", map[string]string{"namespace": ns3}) > 0
	})
	waitEvaluations(t, u.b, evalsB+1)
	if a := getDeployment(t, ns3, "ha-2").Spec.Template.Annotations; a[annotationRestartedFor] == h4 {
		t.Fatal("the new leader restarted ha-2 while ha-1's rollout held the only slot")
	}

	u.kubelet.Release(ns3)
	waitRolledOut(t, ns3, "ha-1", 2, h4, "example.com/proxy:v4", 60*time.Second)
	waitUntil(t, "the new leader to restart ha-2", 30*time.Second, func() bool {
		return getDeployment(t, ns3, "ha-2").Spec.Template.Annotations[annotationRestartedFor] == h4
	})
	waitRolledOut(t, ns3, "ha-2", 2, h4, "example.com/proxy:v4", 60*time.Second)
	if got := getDeployment(t, ns3, "ha-1").Spec.Template.Annotations[annotationRestartedAt]; got != restartedAt {
		t.Errorf("ha-1 restarted again: restartedAt %s, then %s", restartedAt, got)
	}
	// The new leader saw both rollouts in progress: it counts both ends.
	waitUntil(t, "the new leader to count both restarts finished", 30*time.Second, func() bool {
		return injectorMetric(t, u.b, "remora_restarts_total", map[string]string{"result": "finished"}) == 2
	})
	if got := injectorMetric(t, u.b, "remora_restarts_total", map[string]string{"result": "started"}); got != 1 {
		t.Errorf("new leader: remora_restarts_total{result=started} %v, want 1 (ha-2)", got)
	}
	t.Logf("new leader: 1 restart started, 2 finished (ha-1 and ha-2); it injected %v pods",
		injectorMetric(t, u.b, "remora_injections_total", map[string]string{"result": "injected"}))
	return h4
}

// fastRollout restarts a Deployment whose rollout finishes within a second
// (one pod, Ready at once): the restart must be counted finished and
// evented like any other.
func (u *upgradeEnv) fastRollout(t *testing.T, hash string) {
	leader := u.b
	for _, ns := range namespacesWithPrefix(t, "upgrade-ha-") {
		annotateObject(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, annotationRestartOutdated, "false")
	}
	ns := newNamespace(t, "upgrade-fast", revLabels)
	annotateObject(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, annotationRestartOutdated, "true")
	u.kubelet.AddNamespace(ns)
	createDeployment(t, ns, "fast", 1)
	waitRolledOut(t, ns, "fast", 1, hash, "example.com/proxy:v4", 30*time.Second)
	u.kubelet.SetReadyDelay(0)
	defer u.kubelet.SetReadyDelay(podStartTime)
	finished := injectorMetric(t, leader, "remora_restarts_total", map[string]string{"result": "finished"})

	h5 := u.setProxyImage(t, "example.com/proxy:v5", hash)
	waitUntil(t, "the restart of fast", 30*time.Second, func() bool {
		return getDeployment(t, ns, "fast").Spec.Template.Annotations[annotationRestartedFor] == h5
	})
	waitRolledOut(t, ns, "fast", 1, h5, "example.com/proxy:v5", 30*time.Second)
	waitUntil(t, "remora_restarts_total{result=finished} to count the fast rollout", 15*time.Second, func() bool {
		return injectorMetric(t, leader, "remora_restarts_total", map[string]string{"result": "finished"}) == finished+1
	})
	waitEvent(t, ns, "Deployment", "fast", "RestartFinished", "")
}

// startInjector starts a replica of the upgrade test's injector: the
// upgrade revision, the test's configuration directory, leader election in
// the test's namespace, one restart at a time. It is stopped at the end of
// TestUpgrade, not of the step that started it; on failure its log is
// shown.
func (u *upgradeEnv) startInjector(t *testing.T, name string) *framework.Injector {
	t.Helper()
	inj, err := framework.StartInjector(t.Context(), framework.InjectorOptions{
		Binary:     env.binary,
		Kubeconfig: env.kubeconfig,
		CertDir:    env.certDir,
		ConfigDir:  u.configDir,
		Namespace:  u.leaseNS,
		LogPath:    filepath.Join(env.dir, "upgrade-injector-"+name+".log"),
		ExtraArgs:  []string{"--revision=" + upgradeRevision, "--leader-elect", "--max-concurrent-restarts=1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	u.top.Cleanup(func() {
		if u.top.Failed() {
			t.Logf("--- upgrade injector %s (%s), last lines ---\n%s", name, inj.LogPath, inj.LogTail(40))
		}
		_ = inj.Stop(10 * time.Second)
	})
	return inj
}

// setProxyImage writes the configuration with image and waits until every
// running replica serves it; it returns the new configuration hash.
func (u *upgradeEnv) setProxyImage(t *testing.T, image, previous string) string {
	t.Helper()
	if err := framework.WriteAtomically(u.configDir, proxyValues(image)); err != nil {
		t.Fatal(err)
	}
	var hash string
	for _, inj := range []*framework.Injector{u.a, u.b} {
		if inj == nil {
			continue
		}
		if exited, _ := inj.Exited(); exited {
			continue
		}
		waitUntil(t, "the configuration with "+image, 15*time.Second, func() bool {
			hash = configHash(t, inj)
			return hash != previous
		})
	}
	return hash
}

// webhookAddr returns the host:port of the replica's webhook server.
func webhookAddr(inj *framework.Injector) string {
	return fmt.Sprintf("127.0.0.1:%d", inj.Opts.Port)
}

// status runs injector status for ns against the test's configuration.
func (u *upgradeEnv) status(t *testing.T, ns string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), env.binary, "status", //nolint:gosec // the binary the suite built
		"--kubeconfig="+env.kubeconfig, "--config-dir="+u.configDir, "--revision="+upgradeRevision, "-n", ns)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("injector status: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// assertStatusRow checks the status table's row of a Deployment.
func assertStatusRow(t *testing.T, out, workload, outdated, changed, status string) {
	t.Helper()
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != workload {
			continue
		}
		got := []string{f[2], f[3], f[4], strings.Join(f[5:], " ")}
		if want := []string{"Deployment", outdated, changed, status}; !slices.Equal(got, want) {
			t.Errorf("injector status row of %s: %q, want %q\n%s", workload, got, want, out)
		}
		return
	}
	t.Errorf("injector status has no row for %s:\n%s", workload, out)
}

// createDeployment creates a Deployment of replicas one-container pods
// labelled app=name (newDeployment).
func createDeployment(t *testing.T, ns, name string, replicas int32) {
	t.Helper()
	if err := env.cluster.Client.Create(t.Context(), newDeployment(ns, name, replicas)); err != nil {
		t.Fatal(err)
	}
}

func getDeployment(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := env.cluster.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
		t.Fatal(err)
	}
	return d
}

// rolledOut is docs/upgrades.md's "rollout finished" for a Deployment.
func rolledOut(d *appsv1.Deployment) bool {
	replicas := ptr.Deref(d.Spec.Replicas, 1)
	st := d.Status
	return st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == replicas &&
		st.AvailableReplicas == replicas && st.Replicas == st.UpdatedReplicas
}

// waitRolledOut waits until the Deployment's rollout finished and its pods
// are exactly replicas pods, all injected with hash and image, and returns
// them.
func waitRolledOut(t *testing.T, ns, name string, replicas int, hash, image string, timeout time.Duration) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	var last string
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		d := getDeployment(t, ns, name)
		list := &corev1.PodList{}
		if err := env.cluster.Client.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{"app": name}); err != nil {
			return false, err
		}
		pods = list.Items
		var got []string
		for _, pod := range pods {
			img := "not injected"
			if p := testenv.ProxyContainer(&pod); p != nil {
				img = p.Image
			}
			got = append(got, fmt.Sprintf("%s %s ready=%v", img, pod.Annotations[annotationInjectionHash], testenv.PodReady(&pod)))
		}
		last = fmt.Sprintf("status %+v; pods %v", d.Status, got)
		if !rolledOut(d) || len(pods) != replicas {
			return false, nil
		}
		for _, pod := range pods {
			if p := testenv.ProxyContainer(&pod); p == nil || p.Image != image || pod.Annotations[annotationInjectionHash] != hash {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s/%s to roll out with %d pods injected with %s (%s): %v; last: %s", ns, name, replicas, image, hash, err, last)
	}
	return pods
}

// podTemplateHashes returns the pod-template-hash labels of the
// Deployment's current pods.
func podTemplateHashes(t *testing.T, ns, name string) map[string]bool {
	t.Helper()
	list := &corev1.PodList{}
	if err := env.cluster.Client.List(t.Context(), list, client.InNamespace(ns), client.MatchingLabels{"app": name}); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, pod := range list.Items {
		out[pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]] = true
	}
	return out
}

// annotateObject sets one annotation with a merge patch.
func annotateObject(t *testing.T, obj client.Object, key, value string) {
	t.Helper()
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, key, value)
	if err := env.cluster.Client.Patch(t.Context(), obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatalf("annotating %s: %v", obj.GetName(), err)
	}
}

// namespacesWithPrefix lists the namespaces whose name starts with prefix.
func namespacesWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	list := &corev1.NamespaceList{}
	if err := env.cluster.Client.List(t.Context(), list); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ns := range list.Items {
		if strings.HasPrefix(ns.Name, prefix) {
			out = append(out, ns.Name)
		}
	}
	return out
}

// eventNotes returns the notes of the Events with reason regarding the
// object.
func eventNotes(t *testing.T, ns, kind, name, reason string) []string {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := env.cluster.Client.List(t.Context(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Kind == kind && e.Regarding.Name == name && e.Reason == reason {
			out = append(out, e.Note)
		}
	}
	return out
}

// waitEvent waits for an Event with reason regarding the object whose note
// contains substring, and returns its note.
func waitEvent(t *testing.T, ns, kind, name, reason, substring string) string {
	t.Helper()
	var note string
	var notes []string
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		notes = eventNotes(t, ns, kind, name, reason)
		i := slices.IndexFunc(notes, func(n string) bool { return strings.Contains(n, substring) })
		if i >= 0 {
			note = notes[i]
		}
		return i >= 0, nil
	})
	if err != nil {
		t.Fatalf("waiting for Event %s on %s %s/%s with %q: %v (have %q)", reason, kind, ns, name, substring, err, notes)
	}
	return note
}

// errorAtEnd records a failure that does not stop the steps that follow:
// it is logged now, and TestUpgrade fails with it when it ends, after the
// later steps have run (a t.Error in a step would stop nothing either, but
// would be lost among the steps' output).
func (u *upgradeEnv) errorAtEnd(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := t.Name() + ": " + fmt.Sprintf(format, args...)
	t.Log("FAILED (reported when TestUpgrade ends): " + msg)
	u.failures = append(u.failures, msg)
}

// leaseHolder returns the holder of the leader-election Lease, or "".
func leaseHolder(t *testing.T, ns string) string {
	t.Helper()
	lease := &coordinationv1.Lease{}
	if err := env.cluster.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: leaderLease}, lease); err != nil {
		return ""
	}
	return ptr.Deref(lease.Spec.HolderIdentity, "")
}

// leading returns the replica's leader_election_master_status (0 when it
// exports none).
func leading(t *testing.T, inj *framework.Injector) float64 {
	t.Helper()
	return injectorMetric(t, inj, "leader_election_master_status", map[string]string{"name": leaderLease})
}

func injectorSamples(t *testing.T, inj *framework.Injector) []framework.Sample {
	t.Helper()
	text, err := inj.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	samples, err := framework.ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	return samples
}

// injectorMetric returns the sum of a metric's series of one replica whose
// labels include labels.
func injectorMetric(t *testing.T, inj *framework.Injector, name string, labels map[string]string) float64 {
	t.Helper()
	return framework.Sum(injectorSamples(t, inj), name, labels)
}

// hasSeries reports whether the replica exports a series of the metric
// whose labels include labels.
func hasSeries(t *testing.T, inj *framework.Injector, name string, labels map[string]string) bool {
	t.Helper()
	return slices.ContainsFunc(injectorSamples(t, inj), func(s framework.Sample) bool {
		if s.Name != name {
			return false
		}
		for k, v := range labels {
			if s.Labels[k] != v {
				return false
			}
		}
		return true
	})
}

// configHash returns the hash of the configuration the replica serves.
func configHash(t *testing.T, inj *framework.Injector) string {
	t.Helper()
	for _, s := range injectorSamples(t, inj) {
		if s.Name == "remora_config_info" && s.Value == 1 {
			return s.Labels["hash"]
		}
	}
	t.Fatal("no remora_config_info")
	return ""
}

// logHas reports whether the replica's log contains s.
// evaluatedLine is the upgrade controller's debug log line at the end of each evaluation.
const evaluatedLine = `"msg":"Evaluated"`

// evaluations counts the evaluations the replica's upgrade controller has finished.
func evaluations(inj *framework.Injector) int {
	return strings.Count(inj.LogTail(1<<20), evaluatedLine)
}

// waitEvaluations waits until the replica's upgrade controller has finished n evaluations in all:
// a decision not to restart is then proven, not assumed after a sleep.
func waitEvaluations(t *testing.T, inj *framework.Injector, n int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d evaluations", n), time.Minute, func() bool {
		return evaluations(inj) >= n
	})
}

func logHas(t *testing.T, inj *framework.Injector, s string) bool {
	t.Helper()
	return strings.Contains(inj.LogTail(1<<20), s)
}

// rollingSampler lists the Deployments of the cluster in one request every
// 50 ms and counts those of the watched workloads that are rolling: their
// template carries remora's restarted-for annotation and their rollout has
// not finished.
type rollingSampler struct {
	stopCh chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	samples int
	most    int
	order   []string
	seen    map[types.NamespacedName]bool
}

func sampleRolling(workloads []types.NamespacedName) *rollingSampler {
	s := &rollingSampler{stopCh: make(chan struct{}), done: make(chan struct{}), seen: map[types.NamespacedName]bool{}}
	watched := map[types.NamespacedName]bool{}
	for _, w := range workloads {
		watched[w] = true
	}
	// The restarted-for values before the test's restarts: a workload
	// rolls for this test once its value changes.
	before := map[types.NamespacedName]string{}
	first := true
	go func() {
		defer close(s.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			list := &appsv1.DeploymentList{}
			// One list of every namespace: a consistent snapshot.
			if err := env.cluster.Client.List(context.Background(), list); err == nil {
				rolling := 0
				s.mu.Lock()
				for i := range list.Items {
					d := &list.Items[i]
					key := types.NamespacedName{Namespace: d.Namespace, Name: d.Name}
					if !watched[key] {
						continue
					}
					hash := d.Spec.Template.Annotations[annotationRestartedFor]
					if first {
						before[key] = hash
					}
					if hash == "" || rolledOut(d) {
						continue
					}
					rolling++
					if hash != before[key] && !s.seen[key] {
						s.seen[key] = true
						s.order = append(s.order, key.String())
					}
				}
				first = false
				s.samples++
				s.most = max(s.most, rolling)
				s.mu.Unlock()
			}
			select {
			case <-s.stopCh:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the number of samples, the most
// Deployments seen rolling at once, the order they were first seen rolling
// in, and which were.
func (s *rollingSampler) stop() (int, int, []string, map[types.NamespacedName]bool) {
	close(s.stopCh)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples, s.most, s.order, s.seen
}
