package upgrade

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	scalePods        = 5000
	scaleReplicaSets = 50
)

// TestScale measures the controller with 5,000 injected pods (created
// directly in the API server; they never run): the heap its cache and state
// take, compared with an unstripped cache of the same pods, and the time of a
// full re-evaluation. It takes about 15 seconds on two cores (most of it
// creating the pods); -short skips it. The figures are in docs/upgrades.md:
//
//	go test -run TestScale -v ./internal/upgrade/
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the 5,000-pod measurement")
	}
	c := startCluster(t)
	v1, v2 := loadConfig(t, "example.com/proxy:v1"), loadConfig(t, "example.com/proxy:v2")
	ns := "scale"
	c.createNamespace(t, ns, enabled, nil)
	// Its pods never run: a later test's fake kubelet must not spend its
	// ticks marking 5,000 of them Ready while the namespace is deleted.
	c.held.Store(ns, true)

	fastCfg := rest.CopyConfig(c.cfg)
	fastCfg.QPS, fastCfg.Burst = 2000, 4000
	fastClient, err := client.New(fastCfg, client.Options{Scheme: c.scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	// 50 ReplicaSets of 100 pods each, owned by nothing (a Deployment would
	// be reconciled by kube-controller-manager if another test started it).
	tmpl := injectedTemplate(t, v1, ns, enabled, map[string]string{"app": "scale"}, false)
	rsUIDs := make([]metav1.OwnerReference, scaleReplicaSets)
	for i := range scaleReplicaSets {
		labels := map[string]string{"app": "scale", "rs": strconv.Itoa(i)}
		rs := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("rs-%02d", i)},
			Spec: appsv1.ReplicaSetSpec{
				Replicas: ptr.To[int32](scalePods / scaleReplicaSets),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: tmpl.Annotations}, Spec: tmpl.Spec},
			},
		}
		if err := fastClient.Create(ctx, rs); err != nil {
			t.Fatal(err)
		}
		rsUIDs[i] = metav1.OwnerReference{APIVersion: "apps/v1", Kind: KindReplicaSet, Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}
	}

	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= scalePods {
					return
				}
				rs := i % scaleReplicaSets
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{
						Namespace: ns, Name: fmt.Sprintf("pod-%04d", i),
						Labels:          map[string]string{"app": "scale", "rs": strconv.Itoa(rs)},
						Annotations:     tmpl.Annotations,
						OwnerReferences: []metav1.OwnerReference{rsUIDs[rs]},
					},
					Spec: tmpl.Spec,
				}
				if err := fastClient.Create(ctx, pod); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	created := time.Since(start)
	t.Logf("created %d injected pods in %s", scalePods, created.Round(100*time.Millisecond))

	baseline := heapInuse()
	start = time.Now()
	tm := c.startManager(t, managerOptions{name: "scale"}, fast(v2, Options{ResyncInterval: time.Hour}))
	waitFor(t, 2*time.Minute, "the first evaluation of all pods", func() (bool, string) {
		v, _ := gauge(t, "remora_outdated_pods", map[string]string{"namespace": ns})
		return v == scalePods, fmt.Sprintf("%v outdated", v)
	})
	firstEval := time.Since(start)
	controllerHeap := heapInuse() - baseline
	rss := rssBytes()

	// A full re-evaluation, as on a configuration change: list the cache,
	// classify and group every pod.
	var durations []time.Duration
	for range 20 {
		s := time.Now()
		snap, err := tm.r.snapshot(ctx, v1)
		if err != nil {
			t.Fatal(err)
		}
		rep := Evaluate(snap)
		durations = append(durations, time.Since(s))
		if n := rep.Namespaces[ns].Total; n != scalePods {
			t.Fatalf("evaluated %d pods in %s, want %d", n, ns, scalePods)
		}
	}
	slices.Sort(durations)
	tm.stop()

	// For comparison: the same pods in a cache without the transform.
	runtime.GC()
	baseline = heapInuse()
	plain, err := cache.New(c.cfg, cache.Options{Scheme: c.scheme, DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		t.Fatal(err)
	}
	plainCtx, stopPlain := context.WithCancel(ctx)
	defer stopPlain()
	if _, err := plain.GetInformer(plainCtx, &corev1.Pod{}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = plain.Start(plainCtx) }()
	plain.WaitForCacheSync(plainCtx)
	plainHeap := heapInuse() - baseline
	stopPlain()

	t.Logf("5,000 pods: controller heap (cache + state, after GC) %.1f MiB; the same pods cached unstripped %.1f MiB; process RSS %.0f MiB",
		mib(controllerHeap), mib(plainHeap), mib(rss))
	t.Logf("5,000 pods: first evaluation %s after start (cache sync included); full re-evaluation median %s, max %s (last in-controller Evaluate %s)",
		firstEval.Round(10*time.Millisecond), durations[len(durations)/2].Round(100*time.Microsecond),
		durations[len(durations)-1].Round(100*time.Microsecond), time.Duration(tm.r.lastDuration.Load()).Round(100*time.Microsecond))
	if controllerHeap*2 > plainHeap {
		t.Errorf("the controller's heap (%.1f MiB) is not under half the unstripped cache's (%.1f MiB)", mib(controllerHeap), mib(plainHeap))
	}
}

func heapInuse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
