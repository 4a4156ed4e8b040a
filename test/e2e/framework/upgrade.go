package framework

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RevisionWebhookConfiguration returns the webhook the Helm chart installs
// for namespaces of a non-default revision: istio.io/rev=<revision> without
// an istio-injection label, the system namespaces and the injector's own
// excluded, pods labelled sidecar.istio.io/inject=false skipped. o's
// RevisionURL is its clientConfig URL; NamespaceURL is not used.
func RevisionWebhookConfiguration(o WebhookOptions, revision string) *admissionregistrationv1.MutatingWebhookConfiguration {
	cfg := WebhookConfiguration(o)
	i := slices.IndexFunc(cfg.Webhooks, func(w admissionregistrationv1.MutatingWebhook) bool { return w.Name == RevisionWebhookName })
	hook := cfg.Webhooks[i]
	for j, req := range hook.NamespaceSelector.MatchExpressions {
		if req.Key == "istio.io/rev" {
			hook.NamespaceSelector.MatchExpressions[j].Values = []string{revision}
		}
	}
	cfg.Webhooks = []admissionregistrationv1.MutatingWebhook{hook}
	return cfg
}

// Balancer forwards TCP connections to a set of backends, as a Service
// does: each new connection goes to the next backend in turn, and to the
// one after it when a backend refuses the connection. TLS passes through.
type Balancer struct {
	listener net.Listener

	mu       sync.Mutex
	backends []string
	next     int
	conns    map[net.Conn]struct{}
	closed   bool
	wg       sync.WaitGroup
}

// StartBalancer listens on a free port of 127.0.0.1 and forwards to
// backends (host:port).
func StartBalancer(backends ...string) (*Balancer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}
	b := &Balancer{listener: l, backends: backends, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.serve()
	return b, nil
}

// Addr returns the address the balancer listens on.
func (b *Balancer) Addr() string { return b.listener.Addr().String() }

// URL returns an https URL of path through the balancer.
func (b *Balancer) URL(path string) string { return "https://" + b.Addr() + path }

// SetBackends replaces the backends for new connections.
func (b *Balancer) SetBackends(backends ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = slices.Clone(backends)
}

// Close stops listening and closes every forwarded connection.
func (b *Balancer) Close() error {
	err := b.listener.Close()
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
	return err
}

func (b *Balancer) serve() {
	defer b.wg.Done()
	for {
		in, err := b.listener.Accept()
		if err != nil {
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.forward(in)
		}()
	}
}

// track registers c to be closed by Close; false if Close already ran.
func (b *Balancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *Balancer) untrack(c net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.conns, c)
}

// dial connects to the next backend that accepts.
func (b *Balancer) dial() (net.Conn, error) {
	b.mu.Lock()
	backends, start := slices.Clone(b.backends), b.next
	b.next++
	b.mu.Unlock()
	var errs []error
	for i := range backends {
		addr := backends[(start+i)%len(backends)]
		out, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			return out, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no backend accepted the connection: %w", errors.Join(errs...))
}

func (b *Balancer) forward(in net.Conn) {
	defer func() { _ = in.Close() }()
	if !b.track(in) {
		return
	}
	defer b.untrack(in)
	out, err := b.dial()
	if err != nil {
		return
	}
	defer func() { _ = out.Close() }()
	if !b.track(out) {
		return
	}
	defer b.untrack(out)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Either side closing ends the connection.
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}

// Kubelet marks the pods of some namespaces Running and Ready through the
// status subresource, as a kubelet would once their containers started, so
// that Deployment rollouts progress on a control plane without nodes: a pod
// is marked once it has been seen for the ready delay (its containers
// starting, its readiness probe passing). Pods matching a held selector are
// left pending.
type Kubelet struct {
	client client.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	namespaces map[string]bool
	held       map[string]labels.Selector // namespace -> selector
	readyDelay time.Duration
	firstSeen  map[types.UID]time.Time
}

// StartKubelet looks at the pods of namespaces every interval until Stop,
// and marks those seen for readyDelay Ready.
func StartKubelet(c client.Client, interval, readyDelay time.Duration, namespaces ...string) *Kubelet {
	ctx, cancel := context.WithCancel(context.Background())
	k := &Kubelet{
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
func (k *Kubelet) AddNamespace(ns string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.namespaces[ns] = true
}

// Hold leaves the pods of ns matching sel pending until Release.
func (k *Kubelet) Hold(ns string, sel map[string]string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.held[ns] = labels.SelectorFromSet(sel)
}

// Release ends the Hold of ns.
func (k *Kubelet) Release(ns string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.held, ns)
}

// SetReadyDelay changes how long a pod stays pending once seen.
func (k *Kubelet) SetReadyDelay(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.readyDelay = d
}

// Stop stops marking pods and waits for the loop to end.
func (k *Kubelet) Stop() {
	k.cancel()
	<-k.done
}

func (k *Kubelet) run(ctx context.Context, interval time.Duration) {
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

func (k *Kubelet) markNamespace(ctx context.Context, ns string) {
	pods := &corev1.PodList{}
	if err := k.client.List(ctx, pods, client.InNamespace(ns)); err != nil {
		return
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.DeletionTimestamp != nil || PodReady(pod) {
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

// PodReady reports whether the pod's Ready condition is true.
func PodReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
