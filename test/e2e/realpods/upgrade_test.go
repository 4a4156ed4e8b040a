package realpods_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/node"
)

// TestUpgradeRestart is scenario 5: a new proxy image in the injector's
// configuration (values.yaml's global.proxy.image, changed on disk as a
// ConfigMap update would) makes the companion controller roll the
// Deployment that opted in with remora.io/restart-outdated: "true"; the
// rollout progresses on the new pods' real readiness (maxUnavailable 0: an
// old pod goes only once a new one is Ready), and every new pod runs the
// new image, injected by the webhook. A Deployment that did not opt in is
// left alone. The previous configuration is restored afterwards.
func TestUpgradeRestart(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	oldHash, err := waitServing(ctx, node.ProxyImage)
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the namespace, so it runs after the namespace is
	// gone: nothing opted in is left to restart back.
	t.Cleanup(func() {
		if err := writeConfig(); err != nil {
			t.Errorf("restoring the injector's configuration: %v", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := waitServing(ctx, node.ProxyImage); err != nil {
			t.Errorf("restoring the injector's configuration: %v", err)
		}
	})
	ns := namespace(t, "upgrade", true)

	const replicas = 3
	api := newDeployment(ns, "api", replicas, fast())
	api.Annotations = map[string]string{annotationRestartOutdated: "true"}
	api.Spec.Strategy = appsv1.DeploymentStrategy{
		Type: appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{
			MaxUnavailable: ptr.To(intstr.FromInt32(0)),
			MaxSurge:       ptr.To(intstr.FromInt32(1)),
		},
	}
	create(t, api)
	create(t, newDeployment(ns, "bystander", 1, fast()))
	old, err := waitPods(ctx, ns, "api", replicas, podTimeout, nil)
	if err != nil {
		t.Fatal(err)
	}
	bystander, err := waitPods(ctx, ns, "bystander", 1, podTimeout, nil)
	if err != nil {
		t.Fatal(err)
	}
	oldImageIDs := map[string]bool{}
	var oldNames []string
	for i := range old {
		requireInjected(t, &old[i], true)
		if img := testenv.ProxyContainer(&old[i]).Image; img != node.ProxyImage || old[i].Annotations[annotationHash] != oldHash {
			t.Fatalf("pod %s: proxy %s, hash %s; want %s, %s", old[i].Name, img, old[i].Annotations[annotationHash], node.ProxyImage, oldHash)
		}
		oldImageIDs[status(&old[i], "istio-proxy").ImageID] = true
		oldNames = append(oldNames, old[i].Name)
	}

	// The new proxy release.
	if err := writeConfig("values.global.proxy.image=" + proxyImageV2); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	newHash, err := waitServing(ctx, proxyImageV2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the webhook injects %s (configuration %s, was %s) %s after the write", proxyImageV2, newHash, oldHash, time.Since(changed).Round(time.Millisecond))

	// Watch the rollout's availability while it runs.
	samples := sampleDeployment(ctx, ns, "api")
	pods, err := waitPods(ctx, ns, "api", replicas, 4*time.Minute, func(pods []corev1.Pod) bool {
		for i := range pods {
			if testenv.ProxyContainer(&pods[i]).Image != proxyImageV2 {
				return false
			}
		}
		var dep appsv1.Deployment
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "api"}, &dep); err != nil {
			return false
		}
		return rolledOut(&dep)
	})
	rolled := time.Since(changed)
	s := samples.stop()
	if err != nil {
		t.Fatalf("the rollout to %s did not finish: %v", proxyImageV2, err)
	}

	var dep appsv1.Deployment
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "api"}, &dep); err != nil {
		t.Fatal(err)
	}
	restartedAt := dep.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"]
	if restartedAt == "" || dep.Spec.Template.Annotations[annotationRestartedFor] != newHash || dep.Annotations[annotationRestartedFor] != newHash {
		t.Errorf("the controller did not restart api for %s: template annotations %v, annotations %v", newHash, dep.Spec.Template.Annotations, dep.Annotations)
	}
	t.Logf("restart patched at %s; rollout finished %s after the configuration change; during it: %d samples, available replicas min %d, pods max %d",
		restartedAt, rolled.Round(time.Millisecond), s.n, s.minAvailable, s.maxReplicas)
	if s.minAvailable < replicas {
		t.Errorf("available replicas fell to %d during the rollout (maxUnavailable 0, want %d throughout)", s.minAvailable, replicas)
	}
	if s.maxReplicas <= replicas {
		t.Errorf("the rollout never surged above %d pods: did it happen while the test watched?", replicas)
	}

	for i := range pods {
		p := &pods[i]
		requireInjected(t, p, true)
		if slices.Contains(oldNames, p.Name) {
			t.Errorf("pod %s was not replaced", p.Name)
		}
		if p.Annotations[annotationHash] != newHash {
			t.Errorf("pod %s: injection hash %s, want %s", p.Name, p.Annotations[annotationHash], newHash)
		}
		ps := status(p, "istio-proxy")
		if ps == nil || ps.State.Running == nil || !ps.Ready || oldImageIDs[ps.ImageID] || !strings.Contains(ps.Image, "proxyv2:test2") {
			t.Errorf("pod %s: istio-proxy should run %s (not the old image %v): %+v", p.Name, proxyImageV2, oldImageIDs, ps)
		}
		t.Logf("new pod %s Ready, istio-proxy image %s (%s)", p.Name, ps.Image, ps.ImageID)
	}

	// Not opted in: reported, never restarted.
	var by appsv1.Deployment
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "bystander"}, &by); err != nil {
		t.Fatal(err)
	}
	if by.Spec.Template.Annotations[annotationRestartedFor] != "" {
		t.Errorf("the bystander Deployment was restarted: %v", by.Spec.Template.Annotations)
	}
	var still corev1.Pod
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(&bystander[0]), &still); err != nil || still.UID != bystander[0].UID ||
		testenv.ProxyContainer(&still).Image != node.ProxyImage {
		t.Errorf("the bystander's pod %s changed: %v", bystander[0].Name, err)
	}
}

// rolledOut reports a Deployment's rollout finished the way the controller
// judges it (docs/upgrades.md).
func rolledOut(d *appsv1.Deployment) bool {
	want := ptr.Deref(d.Spec.Replicas, 1)
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want
}

// rolloutStats summarise a Deployment's status sampled during a rollout.
type rolloutStats struct {
	n            int   // samples
	minAvailable int32 // lowest status.availableReplicas
	maxReplicas  int32 // highest status.replicas (the surge)
}

// sampler records a Deployment's availability every 100 ms until stopped.
type sampler struct {
	mu       sync.Mutex
	stats    rolloutStats
	done     chan struct{}
	finished chan struct{}
}

func sampleDeployment(ctx context.Context, ns, name string) *sampler {
	s := &sampler{stats: rolloutStats{minAvailable: 1 << 30}, done: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(s.finished)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			var d appsv1.Deployment
			if err := suite.cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &d); err == nil {
				s.mu.Lock()
				s.stats.n++
				s.stats.minAvailable = min(s.stats.minAvailable, d.Status.AvailableReplicas)
				s.stats.maxReplicas = max(s.stats.maxReplicas, d.Status.Replicas)
				s.mu.Unlock()
			}
			select {
			case <-s.done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and returns what it saw.
func (s *sampler) stop() rolloutStats {
	close(s.done)
	<-s.finished
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}
