package upgrade

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
)

// The controller watches pods through a client-go Reflector of its own, as
// metadata only (the API server sends no spec or status), into podStore,
// which keeps a PodInfo per injected pod and nothing of the others.
//
// Why not controller-runtime's cache: its informers store objects that
// must be metav1.Objects; even stripped to a few fields, a
// PartialObjectMetadata with its maps costs about 1 kB a pod, and a typed
// pod several. PodInfo interns what pods share and costs a few hundred
// bytes. With the API server's streaming list (WatchListClient, on by
// default), the Reflector hands pods to the store's transformer one at a
// time, so the initial list is never held whole either.

// activePods selects the pods Evaluate considers: finished pods leave the
// watch (as a deletion) when their phase changes.
const activePods = "status.phase!=Succeeded,status.phase!=Failed"

// podKey names a pod.
type podKey struct{ namespace, name string }

// podStore is the Reflector's store: a PodInfo per injected pod. It is safe
// for concurrent use; PodInfos are immutable, so List hands out the
// pointers.
type podStore struct {
	mu   sync.RWMutex
	pods map[podKey]*PodInfo

	// changed receives a value (without blocking) when an injected pod
	// was added, changed or removed.
	changed chan struct{}
	// synced is closed by the first Replace: the initial list is in.
	synced     chan struct{}
	syncedOnce sync.Once
}

var _ toolscache.TransformingStore = (*podStore)(nil)

func newPodStore() *podStore {
	return &podStore{
		pods:    map[podKey]*PodInfo{},
		changed: make(chan struct{}, 1),
		synced:  make(chan struct{}),
	}
}

// Transformer returns transform: the Reflector applies it to each object
// of the initial streaming list as it arrives.
func (s *podStore) Transformer() toolscache.TransformFunc { return s.transform }

// transform reduces a pod's metadata to its PodInfo (nil for a pod that was
// not injected); a PodInfo passes unchanged.
func (s *podStore) transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *PodInfo:
		return o, nil
	case *metav1.PartialObjectMetadata:
		if info := PodInfoFromMeta(&o.ObjectMeta); info != nil {
			return info, nil
		}
		return nil, nil
	}
	return nil, fmt.Errorf("upgrade: the pod store got %T, want *v1.PartialObjectMetadata", obj)
}

// keyed returns the pod's key and PodInfo (nil when not injected).
func (s *podStore) keyed(obj any) (podKey, *PodInfo, error) {
	if info, ok := obj.(*PodInfo); ok {
		return podKey{info.Namespace, info.Name}, info, nil
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return podKey{}, nil, fmt.Errorf("upgrade: the pod store got %T: %w", obj, err)
	}
	info, err := s.transform(obj)
	if err != nil {
		return podKey{}, nil, err
	}
	p, _ := info.(*PodInfo)
	return podKey{m.GetNamespace(), m.GetName()}, p, nil
}

// Add stores a pod.
func (s *podStore) Add(obj any) error { return s.Update(obj) }

// Update stores a pod; a pod that is no longer injected is forgotten.
func (s *podStore) Update(obj any) error {
	key, info, err := s.keyed(obj)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old, had := s.pods[key]
	switch {
	case info != nil:
		s.pods[key] = info
	case had:
		delete(s.pods, key)
	}
	s.mu.Unlock()
	if (info == nil) != (old == nil) || (info != nil && *info != *old) {
		s.notify()
	}
	return nil
}

// Delete forgets a pod.
func (s *podStore) Delete(obj any) error {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	key, _, err := s.keyed(obj)
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, had := s.pods[key]
	delete(s.pods, key)
	s.mu.Unlock()
	if had {
		s.notify()
	}
	return nil
}

// Replace swaps in a whole list: the initial one, or after a watch could
// not resume.
func (s *podStore) Replace(list []any, _ string) error {
	pods := make(map[podKey]*PodInfo, len(list))
	for _, obj := range list {
		if obj == nil {
			continue // a pod that was not injected
		}
		key, info, err := s.keyed(obj)
		if err != nil {
			return err
		}
		if info != nil {
			pods[key] = info
		}
	}
	s.mu.Lock()
	s.pods = pods
	s.mu.Unlock()
	s.syncedOnce.Do(func() { close(s.synced) })
	s.notify()
	return nil
}

// Resync does nothing: there are no handlers to replay to.
func (s *podStore) Resync() error { return nil }

func (s *podStore) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// List returns the injected pods, in no order.
func (s *podStore) List() []*PodInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*PodInfo, 0, len(s.pods))
	for _, p := range s.pods {
		out = append(out, p)
	}
	return out
}

// Len returns the number of injected pods stored.
func (s *podStore) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.pods)
}

// newPodReflector returns a Reflector that keeps store up to date with the
// metadata of every pod that is neither Succeeded nor Failed.
func newPodReflector(cfg *rest.Config, httpClient *http.Client, store *podStore) (*toolscache.Reflector, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.NegotiatedSerializer = nil // the metadata client sets its own
	mc, err := metadata.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("creating the metadata client: %w", err)
	}
	pods := mc.Resource(corev1.SchemeGroupVersion.WithResource("pods"))
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = activePods
			return pods.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = activePods
			return pods.Watch(ctx, opts)
		},
	}
	return toolscache.NewReflectorWithOptions(lw, &metav1.PartialObjectMetadata{}, store,
		toolscache.ReflectorOptions{Name: ControllerName + "/pods", TypeDescription: "pod metadata"}), nil
}
