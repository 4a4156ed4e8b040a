// Package services resolves the Services a pod excludes from the traffic
// capture (traffic.remora.io/excludeOutboundServices) to their addresses:
// a Service's cluster IPs (every family), or, for a headless Service, the
// addresses of its EndpointSlices' endpoints. An ExternalName Service, or
// one that does not exist, is refused (inject.ServiceRefusal): admission
// does not guess.
//
// One Resolver serves every caller, over a client.Reader: the webhook's
// reads the manager's informer cache (CacheOptions strips what is cached to
// what is read; Informers starts the informers), the companion controller
// reads the same cache, and the commands that run against a cluster
// (injector inject --kubeconfig, status, explain) read the API server.
package services

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/pkg/inject"
)

// Resolver looks up the addresses of Services.
type Resolver struct {
	// Reader reads Services and EndpointSlices: the manager's cache, or a
	// client of the API server.
	Reader client.Reader
	// Uncached, if not nil, is asked for a Service that Reader does not
	// have: one created an instant before its pod, not in the cache yet.
	// Only such misses (a pod about to be refused) reach it.
	Uncached client.Reader
}

// For returns the inject.ServiceResolver of one injection: its lookups end
// with ctx.
func (r *Resolver) For(ctx context.Context) inject.ServiceResolver {
	return bound{ctx: ctx, r: r}
}

type bound struct {
	ctx context.Context
	r   *Resolver
}

func (b bound) ServiceAddresses(ref inject.ServiceRef) ([]netip.Addr, error) {
	return b.r.Lookup(b.ctx, ref)
}

// Lookup returns the addresses of Service ref, sorted: its cluster IPs, or
// for a headless Service its endpoints' addresses (none when it has no
// endpoints yet). It returns an *inject.ServiceRefusal for a Service that
// does not exist or is an ExternalName Service.
func (r *Resolver) Lookup(ctx context.Context, ref inject.ServiceRef) ([]netip.Addr, error) {
	svc := &corev1.Service{}
	key := client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}
	err := r.Reader.Get(ctx, key, svc)
	if apierrors.IsNotFound(err) && r.Uncached != nil {
		err = r.Uncached.Get(ctx, key, svc)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, inject.ServiceNotFound(ref)
	case err != nil:
		return nil, fmt.Errorf("reading Service %s: %w", ref, err)
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		return nil, inject.ServiceExternalName(ref, svc.Spec.ExternalName)
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		return r.endpoints(ctx, ref)
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	addrs := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, fmt.Errorf("cluster IP %q of Service %s: %w", ip, ref, err)
		}
		addrs = append(addrs, a)
	}
	return inject.NormalizeAddrs(addrs), nil
}

// endpoints returns the addresses of the endpoints of headless Service ref,
// ready or not: an endpoint that is starting keeps its address when it
// becomes ready.
func (r *Resolver) endpoints(ctx context.Context, ref inject.ServiceRef) ([]netip.Addr, error) {
	list := &discoveryv1.EndpointSliceList{}
	if err := r.Reader.List(ctx, list, client.InNamespace(ref.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: ref.Name}); err != nil {
		return nil, fmt.Errorf("listing the EndpointSlices of Service %s: %w", ref, err)
	}
	var addrs []netip.Addr
	for i := range list.Items {
		s := &list.Items[i]
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN endpoints have no address to exclude
		}
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				if addr, err := netip.ParseAddr(a); err == nil {
					addrs = append(addrs, addr)
				}
			}
		}
	}
	return inject.NormalizeAddrs(addrs), nil
}

// CacheOptions are the cache settings of Services and EndpointSlices, for
// cache.Options.ByObject: each object is reduced to what Lookup reads
// before it is stored.
func CacheOptions() map[client.Object]cache.ByObject {
	return map[client.Object]cache.ByObject{
		&corev1.Service{}:            {Transform: transform},
		&discoveryv1.EndpointSlice{}: {Transform: transform},
	}
}

// Objects are the kinds Lookup reads, for informers to start.
func Objects() []client.Object {
	return []client.Object{&corev1.Service{}, &discoveryv1.EndpointSlice{}}
}

// transform keeps what Lookup reads of a Service (type, cluster IPs,
// external name) and of an EndpointSlice (its Service label, address type
// and endpoints' addresses).
func transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		return &corev1.Service{
			ObjectMeta: meta(&o.ObjectMeta, nil),
			Spec: corev1.ServiceSpec{
				Type: o.Spec.Type, ClusterIP: o.Spec.ClusterIP, ClusterIPs: o.Spec.ClusterIPs, ExternalName: o.Spec.ExternalName,
			},
		}, nil
	case *discoveryv1.EndpointSlice:
		out := &discoveryv1.EndpointSlice{
			ObjectMeta:  meta(&o.ObjectMeta, o.Labels),
			AddressType: o.AddressType,
			Endpoints:   make([]discoveryv1.Endpoint, len(o.Endpoints)),
		}
		for i := range o.Endpoints {
			out.Endpoints[i].Addresses = o.Endpoints[i].Addresses
		}
		return out, nil
	}
	return obj, nil
}

// meta keeps an object's identity and, of labels, only the Service's name.
func meta(m *metav1.ObjectMeta, labels map[string]string) metav1.ObjectMeta {
	out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion}
	if v, ok := labels[discoveryv1.LabelServiceName]; ok {
		out.Labels = map[string]string{discoveryv1.LabelServiceName: v}
	}
	return out
}
