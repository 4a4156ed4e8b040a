package upgrade

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"unique"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/remora-mesh/remora/pkg/inject"
)

// A pod that excludes Services from the traffic capture by name
// (traffic.remora.io/excludeOutboundServices) records what they resolved to
// when it was injected (traffic.remora.io/excludedServiceAddresses). When a
// Service's addresses change under it (the Service was deleted and recreated
// with another cluster IP, a headless Service's endpoints moved), its
// connections to the new addresses go through the proxy: the pod is outdated
// (ChangeServices) until it is recreated, when the webhook resolves the
// Service again.
//
// Only a new address makes a pod outdated: an address the pod still
// excludes but the Service no longer has costs nothing. A Service that no
// longer exists, or became an ExternalName Service, is not compared:
// recreating the pod would only have the webhook refuse it.

// ServiceSource returns the current addresses of a Service, sorted
// (services.Resolver.Lookup); an *inject.ServiceRefusal for one that does not
// exist or is an ExternalName Service.
type ServiceSource func(ctx context.Context, ref inject.ServiceRef) ([]netip.Addr, error)

// ServiceAddrs are the current addresses of the Services the snapshot's pods
// exclude. A Service that cannot be excluded now is absent.
type ServiceAddrs map[inject.ServiceRef][]netip.Addr

// ResolveServices looks up, once each, the Services the pods exclude.
func ResolveServices(ctx context.Context, pods []*PodInfo, lookup ServiceSource) (ServiceAddrs, error) {
	out := ServiceAddrs{}
	records := map[unique.Handle[string]]bool{}
	tried := map[inject.ServiceRef]bool{}
	for _, p := range pods {
		if p.excluded == (unique.Handle[string]{}) || records[p.excluded] {
			continue
		}
		records[p.excluded] = true
		excluded, err := inject.ParseExcludedServices(p.excluded.Value())
		if err != nil {
			continue // not the injector's record: nothing to compare with
		}
		for _, e := range excluded {
			if tried[e.Ref] {
				continue
			}
			tried[e.Ref] = true
			addrs, err := lookup(ctx, e.Ref)
			var refused *inject.ServiceRefusal
			switch {
			case errors.As(err, &refused):
				continue
			case err != nil:
				return nil, fmt.Errorf("looking up Service %s: %w", e.Ref, err)
			}
			out[e.Ref] = addrs
		}
	}
	return out, nil
}

// serviceCheck compares pods' records with the current addresses, once per
// distinct record (the pods of a workload share theirs).
type serviceCheck struct {
	current ServiceAddrs
	memo    map[unique.Handle[string]][]inject.ServiceRef
}

// stale returns the Services whose current addresses include one the pod
// does not exclude.
func (c *serviceCheck) stale(p *PodInfo) []inject.ServiceRef {
	if c.current == nil || p.excluded == (unique.Handle[string]{}) {
		return nil
	}
	if s, ok := c.memo[p.excluded]; ok {
		return s
	}
	var out []inject.ServiceRef
	excluded, err := inject.ParseExcludedServices(p.excluded.Value())
	if err == nil {
		for _, e := range excluded {
			cur, ok := c.current[e.Ref]
			if ok && slices.ContainsFunc(cur, func(a netip.Addr) bool { return !slices.Contains(e.Addrs, a) }) {
				out = append(out, e.Ref)
			}
		}
	}
	if c.memo == nil {
		c.memo = map[unique.Handle[string]][]inject.ServiceRef{}
	}
	c.memo[p.excluded] = out
	return out
}

// ChangedServices returns the Services pod excludes whose current
// addresses include one it does not exclude, as Evaluate decides.
func ChangedServices(pod *PodInfo, current ServiceAddrs) []inject.ServiceRef {
	c := serviceCheck{current: current}
	return c.stale(pod)
}

// servicesRestartKey is what a restart for stale Services is for: the
// configuration hash and a digest of the Services' current addresses. The
// workload is restarted once for it (AnnotationRestartedFor), and again only
// when the addresses change again.
func servicesRestartKey(hash string, stale []inject.ServiceRef, current ServiceAddrs) string {
	h := sha256.New()
	for _, ref := range stale {
		addrs := make([]string, len(current[ref]))
		for i, a := range current[ref] {
			addrs[i] = a.String()
		}
		h.Write([]byte(ref.String() + "=" + strings.Join(addrs, ",") + ";"))
	}
	return hash + "+services-" + hex.EncodeToString(h.Sum(nil))[:16]
}

// serviceNames lists refs for a message, at most a few.
func serviceNames(refs []inject.ServiceRef) string {
	const most = 5
	names := make([]string, 0, min(len(refs), most))
	for i, r := range refs {
		if i == most {
			names = append(names, fmt.Sprintf("and %d more", len(refs)-most))
			break
		}
		names = append(names, r.String())
	}
	return strings.Join(names, ", ")
}

// excludedRefs is the set of Services injected pods exclude, as the last
// evaluation found them: Service and EndpointSlice events of other
// Services do not cost an evaluation.
type excludedRefs struct {
	set atomic.Pointer[map[inject.ServiceRef]bool]
}

func (e *excludedRefs) store(pods []*PodInfo) {
	m := map[inject.ServiceRef]bool{}
	seen := map[unique.Handle[string]]bool{}
	for _, p := range pods {
		if p.excluded == (unique.Handle[string]{}) || seen[p.excluded] {
			continue
		}
		seen[p.excluded] = true
		excluded, _ := inject.ParseExcludedServices(p.excluded.Value())
		for _, s := range excluded {
			m[s.Ref] = true
		}
	}
	e.set.Store(&m)
}

func (e *excludedRefs) has(ref inject.ServiceRef) bool {
	m := e.set.Load()
	return m != nil && (*m)[ref]
}

// serviceOf names the Service of a Service or of an EndpointSlice.
func serviceOf(obj client.Object) inject.ServiceRef {
	if _, ok := obj.(*discoveryv1.EndpointSlice); ok {
		return inject.ServiceRef{Namespace: obj.GetNamespace(), Name: obj.GetLabels()[discoveryv1.LabelServiceName]}
	}
	return inject.ServiceRef{Namespace: obj.GetNamespace(), Name: obj.GetName()}
}

// addressesChanged reports whether an update changed what the resolver
// reads: a Service's type or cluster IPs, an EndpointSlice's addresses (not
// its endpoints' conditions, which change far more often).
func addressesChanged(e event.UpdateEvent) bool {
	switch o := e.ObjectOld.(type) {
	case *corev1.Service:
		n, ok := e.ObjectNew.(*corev1.Service)
		return !ok || o.Spec.Type != n.Spec.Type || o.Spec.ClusterIP != n.Spec.ClusterIP || !slices.Equal(o.Spec.ClusterIPs, n.Spec.ClusterIPs)
	case *discoveryv1.EndpointSlice:
		n, ok := e.ObjectNew.(*discoveryv1.EndpointSlice)
		if !ok || len(o.Endpoints) != len(n.Endpoints) {
			return true
		}
		for i := range o.Endpoints {
			if !equality.Semantic.DeepEqual(o.Endpoints[i].Addresses, n.Endpoints[i].Addresses) {
				return true
			}
		}
		return false
	}
	return true
}

// servicePredicate passes the events of Services (and their EndpointSlices)
// that injected pods exclude, and of those only the changes of addresses.
func (e *excludedRefs) servicePredicate() predicate.Funcs {
	return predicate.Funcs{
		CreateFunc:  func(ev event.CreateEvent) bool { return e.has(serviceOf(ev.Object)) },
		DeleteFunc:  func(ev event.DeleteEvent) bool { return e.has(serviceOf(ev.Object)) },
		UpdateFunc:  func(ev event.UpdateEvent) bool { return e.has(serviceOf(ev.ObjectNew)) && addressesChanged(ev) },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
