package framework

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
)

// FakeKubelet marks the pods of some namespaces Running and Ready through the
// status subresource, as a kubelet would once their containers started, so
// that Deployment rollouts progress on a control plane without nodes: a pod
// is marked once it has been seen for the ready delay (its containers
// starting, its readiness probe passing). Pods matching a held selector are
// left pending.
type FakeKubelet struct {
	client client.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	namespaces map[string]bool
	held       map[string]labels.Selector // namespace -> selector
	readyDelay time.Duration
	firstSeen  map[types.UID]time.Time
}

// StartFakeKubelet looks at the pods of namespaces every interval until
// Stop, and marks those seen for readyDelay Ready.
func StartFakeKubelet(c client.Client, interval, readyDelay time.Duration, namespaces ...string) *FakeKubelet {
	ctx, cancel := context.WithCancel(context.Background())
	k := &FakeKubelet{
		client: c, cancel: cancel, done: make(chan struct{}),
		namespaces: map[string]bool{}, held: map[string]labels.Selector{},
		readyDelay: readyDelay, firstSeen: map[types.UID]time.Time{},
	}
	for _, ns := range namespaces {
		k.namespaces[ns] = true
	}
	go k.run(ctx, interval)
	return k
}

// AddNamespace marks the pods of ns Ready too.
func (k *FakeKubelet) AddNamespace(ns string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.namespaces[ns] = true
}

// Hold leaves the pods of ns matching sel pending until Release.
func (k *FakeKubelet) Hold(ns string, sel map[string]string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.held[ns] = labels.SelectorFromSet(sel)
}

// Release ends the Hold of ns.
func (k *FakeKubelet) Release(ns string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.held, ns)
}

// SetReadyDelay changes how long a pod stays pending once seen.
func (k *FakeKubelet) SetReadyDelay(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.readyDelay = d
}

// Stop stops marking pods and waits for the loop to end.
func (k *FakeKubelet) Stop() {
	k.cancel()
	<-k.done
}

func (k *FakeKubelet) run(ctx context.Context, interval time.Duration) {
	defer close(k.done)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		k.mu.Lock()
		namespaces := make([]string, 0, len(k.namespaces))
		for ns := range k.namespaces {
			namespaces = append(namespaces, ns)
		}
		k.mu.Unlock()
		for _, ns := range namespaces {
			k.markNamespace(ctx, ns)
		}
	}
}

func (k *FakeKubelet) markNamespace(ctx context.Context, ns string) {
	pods := &corev1.PodList{}
	if err := k.client.List(ctx, pods, client.InNamespace(ns)); err != nil {
		return
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.DeletionTimestamp != nil || testenv.PodReady(pod) {
			continue
		}
		k.mu.Lock()
		sel, held := k.held[ns]
		seen, ok := k.firstSeen[pod.UID]
		if !ok {
			seen = time.Now()
			k.firstSeen[pod.UID] = seen
		}
		early := time.Since(seen) < k.readyDelay
		k.mu.Unlock()
		if early || held && sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		setRunningAndReady(pod)
		// A conflict or a pod deleted meanwhile is retried at the next tick.
		if err := k.client.Status().Update(ctx, pod); err == nil {
			k.mu.Lock()
			delete(k.firstSeen, pod.UID)
			k.mu.Unlock()
		}
	}
}

// setRunningAndReady sets the status a kubelet reports once every container
// started: Running, the pod conditions true, init containers that run to
// completion terminated with 0, every other container running and ready.
func setRunningAndReady(pod *corev1.Pod) {
	now := metav1.Now()
	st := &pod.Status
	st.Phase = corev1.PodRunning
	st.StartTime = &now
	st.Conditions = nil
	for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: ct, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	running := func(c corev1.Container) corev1.ContainerStatus {
		return corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}
	}
	st.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			st.InitContainerStatuses = append(st.InitContainerStatuses, running(c)) // a native sidecar
			continue
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Started: ptr.To(false),
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}},
		})
	}
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, running(c))
	}
}
