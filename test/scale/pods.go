package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

// population is what createPods made.
type population struct {
	replicaSets, ownedPods, barePods int
	namespaces                       int
	// podBytes is the JSON size of one injected pod as created.
	podBytes int
	created  time.Duration
}

// podCreation is one pod to create: its namespace and its JSON, shared by
// the pods of a ReplicaSet (the names come from generateName).
type podCreation struct {
	namespace string
	body      []byte
}

// basePod reads the application pod every created pod starts from, as the
// API server hands it to the webhook, reduced to what a creator sends.
func basePod(path string) (*corev1.Pod, error) {
	b, err := os.ReadFile(path) //nolint:gosec // the benchmark's own input
	if err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(b, pod); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pod.ObjectMeta = metav1.ObjectMeta{Labels: pod.Labels, Annotations: pod.Annotations}
	pod.Status = corev1.PodStatus{}
	return pod, nil
}

// createPods creates the namespaces (labelled for injection, with the
// service accounts the pod names), the ReplicaSets and the pods: o.pods
// injected by the engine with cfg, o.barePods of them without an owner,
// the others ReplicaSets' of o.podsPerReplicaSet, round-robin over the
// namespaces, o.creators at a time. Nothing runs them.
func createPods(ctx context.Context, c *framework.Cluster, o *options, cfg *config.Config) (*population, error) {
	base, err := basePod(o.podFile)
	if err != nil {
		return nil, err
	}
	nsLabels := map[string]string{inject.LabelNamespaceInject: "enabled"}
	// The admission load's reference review is for a pod in "default".
	def := &corev1.Namespace{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: metav1.NamespaceDefault}, def); err != nil {
		return nil, err
	}
	def.Labels = maps.Clone(def.Labels)
	if def.Labels == nil {
		def.Labels = map[string]string{}
	}
	maps.Copy(def.Labels, nsLabels)
	if err := c.Client.Update(ctx, def); err != nil {
		return nil, fmt.Errorf("labelling namespace default for injection: %w", err)
	}
	injected := make([]*corev1.Pod, o.namespaces)
	names := make([]string, o.namespaces)
	for i := range o.namespaces {
		names[i] = fmt.Sprintf("scale-%02d", i)
		if err := c.CreateNamespace(ctx, names[i], nsLabels); err != nil {
			return nil, err
		}
		if sa := base.Spec.ServiceAccountName; sa != "" && sa != "default" {
			obj := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: names[i], Name: sa}}
			if err := c.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
				return nil, fmt.Errorf("creating service account %s/%s: %w", names[i], sa, err)
			}
		}
		pod := base.DeepCopy()
		pod.Namespace = names[i]
		// What injector serve does on this API server (1.37: native
		// sidecars under --native-sidecars=auto).
		res, err := inject.Inject(inject.Request{Pod: pod, Namespace: names[i], NamespaceLabels: nsLabels, Config: cfg})
		if err != nil || !res.Injected {
			return nil, fmt.Errorf("injecting the pod for %s: %w (%s)", names[i], err, res.Message)
		}
		injected[i] = res.Pod
	}

	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	pop := &population{namespaces: o.namespaces, barePods: o.barePods, ownedPods: o.pods - o.barePods}
	jobs := make([]podCreation, 0, o.pods)
	for rs := 0; rs*o.podsPerReplicaSet < pop.ownedPods; rs++ {
		replicas := min(o.podsPerReplicaSet, pop.ownedPods-rs*o.podsPerReplicaSet)
		ns := names[rs%o.namespaces]
		body, err := replicaSetPods(ctx, c, injected[rs%o.namespaces], ns, fmt.Sprintf("app-%04d", rs), int32(replicas)) //nolint:gosec // at most -pods, a pod count

		if err != nil {
			return nil, err
		}
		for range replicas {
			jobs = append(jobs, podCreation{namespace: ns, body: body})
		}
		pop.replicaSets++
	}
	bare := make([][]byte, o.namespaces)
	for i := range o.barePods {
		ns := i % o.namespaces
		if bare[ns] == nil {
			pod := injected[ns].DeepCopy()
			pod.GenerateName = "bare-"
			pod.Labels = maps.Clone(pod.Labels)
			pod.Labels["app"] = "bare"
			if bare[ns], err = json.Marshal(pod); err != nil {
				return nil, err
			}
		}
		jobs = append(jobs, podCreation{namespace: names[ns], body: bare[ns]})
	}
	if len(jobs) > 0 {
		pop.podBytes = len(jobs[0].body)
	}

	start := time.Now()
	var (
		next     atomic.Int64
		created  atomic.Int64
		wg       sync.WaitGroup
		firstErr error
		errOnce  sync.Once
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-progress.C:
				n := created.Load()
				logf("created %d of %d pods (%.0f/s)", n, len(jobs), float64(n)/time.Since(start).Seconds())
			}
		}
	}()
	for range o.creators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(jobs) || ctx.Err() != nil {
					return
				}
				if err := createPod(ctx, cs, jobs[i]); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				created.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("creating pods (%d created): %w", created.Load(), firstErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("creating pods (%d created): %w", created.Load(), err)
	}
	pop.created = time.Since(start)
	return pop, nil
}

// replicaSetPods creates a ReplicaSet (which no controller reconciles) and
// returns the JSON of its pods: the injected pod, owned by it.
func replicaSetPods(ctx context.Context, c *framework.Cluster, injected *corev1.Pod, ns, name string, replicas int32) ([]byte, error) {
	selector := map[string]string{"app": name, "pod-template-hash": fmt.Sprintf("%x", len(ns)*7919+len(name))}
	// The injector's labels (service.istio.io/canonical-name, ...) stay.
	labels := maps.Clone(injected.Labels)
	maps.Copy(labels, selector)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: injected.Annotations},
				Spec:       injected.Spec,
			},
		},
	}
	if err := c.Client.Create(ctx, rs); err != nil {
		return nil, fmt.Errorf("creating ReplicaSet %s/%s: %w", ns, name, err)
	}
	pod := injected.DeepCopy()
	pod.GenerateName = name + "-"
	pod.Labels = labels
	pod.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name, UID: rs.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}}
	return json.Marshal(pod)
}

// createPod posts the pod's JSON; a generated name that collides is
// retried.
func createPod(ctx context.Context, cs kubernetes.Interface, p podCreation) error {
	var err error
	for range 5 {
		err = cs.CoreV1().RESTClient().Post().Namespace(p.namespace).Resource("pods").
			SetHeader("Content-Type", "application/json").Body(p.body).Do(ctx).Error()
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return err
}
