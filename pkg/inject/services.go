package inject

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Remora's own annotations for excluding a Service from the traffic capture.
const (
	// AnnotationExcludeOutboundServices lists Services, NAME.NAMESPACE or
	// NAME (the pod's namespace), whose addresses istio-init excludes from
	// the outbound capture, as excludeOutboundIPRanges does for addresses:
	// a connection to them goes straight to the backend, not through the
	// proxy (a MySQL or other server-first protocol). They are resolved at
	// admission, so the manifest never holds an address that goes stale.
	AnnotationExcludeOutboundServices = "traffic.remora.io/excludeOutboundServices"
	// AnnotationExcludedServiceAddresses records what the Services of
	// AnnotationExcludeOutboundServices resolved to at injection:
	// "NAME.NAMESPACE=ADDR,ADDR;NAME.NAMESPACE=..." (FormatExcludedServices),
	// so the companion controller can tell when a Service's addresses
	// changed under a running pod.
	AnnotationExcludedServiceAddresses = "traffic.remora.io/excludedServiceAddresses"
)

// MaxExcludedServices is the most Services one pod may exclude.
const MaxExcludedServices = 32

// ServiceRef names a Service.
type ServiceRef struct {
	Namespace, Name string
}

// String returns NAME.NAMESPACE, the annotation's spelling.
func (r ServiceRef) String() string { return r.Name + "." + r.Namespace }

// Compare orders refs by namespace, then name.
func (r ServiceRef) Compare(o ServiceRef) int {
	if c := strings.Compare(r.Namespace, o.Namespace); c != 0 {
		return c
	}
	return strings.Compare(r.Name, o.Name)
}

// ServiceResolver returns the addresses of a Service a pod excludes: its
// cluster IPs (every family), or, for a headless Service, the addresses of
// its endpoints. The webhook's reads its informer cache, offline injection's
// the API server; tests give a table.
//
// For a Service that cannot be excluded (it does not exist, or it is an
// ExternalName Service) it returns a *ServiceRefusal, which the engine
// reports as an invalid annotation naming the Service; any other error is
// the resolver's own failure and fails the injection as an internal error.
type ServiceResolver interface {
	ServiceAddresses(ref ServiceRef) ([]netip.Addr, error)
}

// ServiceRefusal says why a Service cannot be excluded and what to do.
type ServiceRefusal struct {
	Ref    ServiceRef
	Reason string
}

func (e *ServiceRefusal) Error() string { return "Service " + e.Ref.String() + " " + e.Reason }

// ServiceNotFound is the refusal of a Service that does not exist.
func ServiceNotFound(ref ServiceRef) *ServiceRefusal {
	return &ServiceRefusal{Ref: ref, Reason: "does not exist: create the Service before the pod " +
		"(its addresses are resolved when the pod is created), or correct the name (NAME.NAMESPACE, or NAME in the pod's namespace)"}
}

// ServiceExternalName is the refusal of an ExternalName Service, which has
// no address of its own to exclude.
func ServiceExternalName(ref ServiceRef, externalName string) *ServiceRefusal {
	return &ServiceRefusal{Ref: ref, Reason: fmt.Sprintf("is an ExternalName Service (%s): it has no cluster address to exclude, "+
		"and its external name's addresses are not resolved at admission; list them in %s instead", externalName, AnnotationExcludeOutboundCIDRs)}
}

// ExcludedService is a Service a pod excludes and the addresses it resolved
// to when the pod was injected, sorted.
type ExcludedService struct {
	Ref   ServiceRef
	Addrs []netip.Addr
}

// ParseServiceRefs parses the value of AnnotationExcludeOutboundServices:
// a comma-separated list of NAME.NAMESPACE or NAME, the name a DNS-1035
// label (as Service names are), the namespace a DNS-1123 label. A bare
// name's namespace is namespace. Duplicates are dropped; the order is kept.
func ParseServiceRefs(value, namespace string) ([]ServiceRef, error) {
	t := strings.TrimSpace(value)
	if t == "" {
		return nil, errors.New("no Service named")
	}
	var out []ServiceRef
	for i, e := range strings.Split(t, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			return nil, fmt.Errorf("empty entry at position %d", i+1)
		}
		name, ns, qualified := strings.Cut(e, ".")
		if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
			return nil, fmt.Errorf("entry %d %q: Service name %q is not a DNS-1035 label: %s", i+1, e, name, errs[0])
		}
		if qualified {
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return nil, fmt.Errorf("entry %d %q: namespace %q is not a DNS-1123 label: %s", i+1, e, ns, errs[0])
			}
		} else {
			ns = namespace
		}
		ref := ServiceRef{Namespace: ns, Name: name}
		if !slices.Contains(out, ref) {
			out = append(out, ref)
		}
	}
	if len(out) > MaxExcludedServices {
		return nil, fmt.Errorf("%d Services, at most %d", len(out), MaxExcludedServices)
	}
	return out, nil
}

// FormatExcludedServices is the value of AnnotationExcludedServiceAddresses:
// "NAME.NAMESPACE=ADDR,ADDR" per Service, joined by ";", in the given order;
// a Service that resolved to no address (a headless Service without
// endpoints) has none after "=".
func FormatExcludedServices(services []ExcludedService) string {
	var b strings.Builder
	for i, s := range services {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(s.Ref.String())
		b.WriteByte('=')
		for j, a := range s.Addrs {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(a.String())
		}
	}
	return b.String()
}

// ParseExcludedServices parses the value of
// AnnotationExcludedServiceAddresses (FormatExcludedServices's output).
func ParseExcludedServices(value string) ([]ExcludedService, error) {
	if value == "" {
		return nil, nil
	}
	var out []ExcludedService
	for _, e := range strings.Split(value, ";") {
		ref, addrs, ok := strings.Cut(e, "=")
		name, ns, qualified := strings.Cut(ref, ".")
		if !ok || !qualified || name == "" || ns == "" {
			return nil, fmt.Errorf("entry %q is not NAME.NAMESPACE=ADDRESSES", e)
		}
		s := ExcludedService{Ref: ServiceRef{Namespace: ns, Name: name}}
		if addrs != "" {
			for _, a := range strings.Split(addrs, ",") {
				addr, err := netip.ParseAddr(a)
				if err != nil {
					return nil, fmt.Errorf("entry %q: %w", e, err)
				}
				s.Addrs = append(s.Addrs, addr)
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// NormalizeAddrs sorts addrs and drops duplicates and invalid ones, in
// place; resolvers return their addresses through it.
func NormalizeAddrs(addrs []netip.Addr) []netip.Addr {
	addrs = slices.DeleteFunc(addrs, func(a netip.Addr) bool { return !a.IsValid() })
	slices.SortFunc(addrs, netip.Addr.Compare)
	return slices.Compact(addrs)
}

// noResolverReason is the refusal of a pod that names Services when the
// caller gave the engine no resolver (offline injection without a cluster).
const noResolverReason = "names Services, which are resolved to their addresses only against a cluster: " +
	"inject with access to the cluster (injector inject --kubeconfig), " +
	"or list the addresses in " + AnnotationExcludeOutboundCIDRs + " instead"

// resolveExcludedServices resolves the Services the pod excludes (their
// bare names already in the pod's namespace) with req.Services. A Service
// that cannot be excluded is an invalid annotation, listed with every other
// such Service; a resolver's own failure is returned as it is.
func resolveExcludedServices(req Request, refs []ServiceRef) ([]ExcludedService, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	value := req.Pod.Annotations[AnnotationExcludeOutboundServices]
	if req.Services == nil {
		return nil, &AnnotationError{Errors: []FieldError{{
			Annotation: AnnotationExcludeOutboundServices, Value: value, Allowed: noResolverReason,
		}}}
	}
	out := make([]ExcludedService, 0, len(refs))
	var refused []FieldError
	for _, ref := range refs {
		addrs, err := req.Services.ServiceAddresses(ref)
		var sr *ServiceRefusal
		switch {
		case errors.As(err, &sr):
			refused = append(refused, FieldError{Annotation: AnnotationExcludeOutboundServices, Value: value, Allowed: sr.Error()})
			continue
		case err != nil:
			return nil, fmt.Errorf("resolving Service %s of %s: %w", ref, AnnotationExcludeOutboundServices, err)
		}
		out = append(out, ExcludedService{Ref: ref, Addrs: NormalizeAddrs(slices.Clone(addrs))})
	}
	if len(refused) > 0 {
		return nil, &AnnotationError{Errors: refused}
	}
	return out, nil
}

// excludeServiceCIDRs adds the Services' addresses, as /32 or /128, to the
// comma-separated CIDR list cidrs (istio-init's -x), skipping an address a
// CIDR of the list already covers.
func excludeServiceCIDRs(cidrs string, services []ExcludedService) string {
	if len(services) == 0 {
		return cidrs
	}
	var have []netip.Prefix
	for _, c := range strings.Split(cidrs, ",") {
		if p, err := netip.ParsePrefix(strings.TrimSpace(c)); err == nil {
			have = append(have, p)
		}
	}
	var b strings.Builder
	b.WriteString(cidrs)
	for _, s := range services {
		for _, a := range s.Addrs {
			if slices.ContainsFunc(have, func(p netip.Prefix) bool { return p.Contains(a) }) {
				continue
			}
			p := netip.PrefixFrom(a, a.BitLen())
			have = append(have, p)
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(p.String())
		}
	}
	return b.String()
}

// inNamespace puts the bare names of refs (no namespace yet) in namespace
// ns, dropping what becomes a duplicate.
func inNamespace(refs []ServiceRef, ns string) []ServiceRef {
	if len(refs) == 0 {
		return nil
	}
	out := make([]ServiceRef, 0, len(refs))
	for _, r := range refs {
		if r.Namespace == "" {
			r.Namespace = ns
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}
