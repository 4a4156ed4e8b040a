package services

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/remora-mesh/remora/pkg/inject"
)

func service(ns, name string, spec corev1.ServiceSpec) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func slice(ns, name, svc string, family discoveryv1.AddressType, addrs ...[]string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc, "other": "x"}},
		AddressType: family,
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: a, Hostname: ptr("h")})
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// cluster is the Services and EndpointSlices the lookups read.
func cluster() []client.Object {
	return []client.Object{
		service("db", "mysql", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.10.5", ClusterIPs: []string{"10.96.10.5"}}),
		service("db", "dual", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "fd00::a", ClusterIPs: []string{"fd00::a", "10.96.10.6"}}),
		service("db", "legacy", corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.10.7"}),
		service("db", "headless", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: corev1.ClusterIPNone}),
		slice("db", "headless-v4", "headless", discoveryv1.AddressTypeIPv4, []string{"10.244.1.9"}, []string{"10.244.1.8"}),
		slice("db", "headless-v6", "headless", discoveryv1.AddressTypeIPv6, []string{"fd00:244::9"}),
		slice("db", "headless-fqdn", "headless", discoveryv1.AddressTypeFQDN, []string{"db.example.com"}),
		slice("db", "headless-dup", "headless", discoveryv1.AddressTypeIPv4, []string{"10.244.1.9"}),
		slice("db", "other-v4", "other", discoveryv1.AddressTypeIPv4, []string{"10.244.7.7"}),
		slice("elsewhere", "headless-v4", "headless", discoveryv1.AddressTypeIPv4, []string{"10.244.8.8"}),
		service("db", "lonely", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: corev1.ClusterIPNone}),
		service("db", "external", corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com"}),
	}
}

// TestLookup resolves each kind of Service, from a reader holding what
// CacheOptions keeps of them (as the webhook's cache does).
func TestLookup(t *testing.T) {
	var stripped []client.Object
	for _, o := range cluster() {
		out, err := transform(o)
		if err != nil {
			t.Fatal(err)
		}
		stripped = append(stripped, out.(client.Object))
	}
	r := &Resolver{Reader: fake.NewClientBuilder().WithObjects(stripped...).Build()}
	tests := []struct {
		ref     inject.ServiceRef
		want    []string
		refused string
	}{
		{ref: inject.ServiceRef{Namespace: "db", Name: "mysql"}, want: []string{"10.96.10.5"}},
		{ref: inject.ServiceRef{Namespace: "db", Name: "dual"}, want: []string{"10.96.10.6", "fd00::a"}},
		{ref: inject.ServiceRef{Namespace: "db", Name: "legacy"}, want: []string{"10.96.10.7"}},
		{ref: inject.ServiceRef{Namespace: "db", Name: "headless"}, want: []string{"10.244.1.8", "10.244.1.9", "fd00:244::9"}},
		{ref: inject.ServiceRef{Namespace: "db", Name: "lonely"}, want: []string{}},
		{ref: inject.ServiceRef{Namespace: "db", Name: "external"}, refused: "Service external.db is an ExternalName Service (db.example.com)"},
		{ref: inject.ServiceRef{Namespace: "db", Name: "nosuch"}, refused: "Service nosuch.db does not exist"},
		{ref: inject.ServiceRef{Namespace: "elsewhere", Name: "mysql"}, refused: "Service mysql.elsewhere does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.ref.String(), func(t *testing.T) {
			got, err := r.For(t.Context()).ServiceAddresses(tt.ref)
			if tt.refused != "" {
				var sr *inject.ServiceRefusal
				if !errors.As(err, &sr) || sr.Ref != tt.ref || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("Lookup: %v, %v; want a refusal %q", got, err, tt.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if s := strs(got); !slices.Equal(s, tt.want) {
				t.Errorf("Lookup = %v, want %v", s, tt.want)
			}
		})
	}
}

func strs(addrs []netip.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

// TestLookupCacheMiss: a Service the cache has not seen yet is read from
// the API server; a failure of either reader is the resolver's error, not a
// refusal.
func TestLookupCacheMiss(t *testing.T) {
	ref := inject.ServiceRef{Namespace: "db", Name: "mysql"}
	empty := fake.NewClientBuilder().Build()
	live := fake.NewClientBuilder().WithObjects(cluster()...).Build()
	got, err := (&Resolver{Reader: empty, Uncached: live}).Lookup(t.Context(), ref)
	if err != nil || !slices.Equal(strs(got), []string{"10.96.10.5"}) {
		t.Errorf("Lookup through Uncached = %v, %v; want 10.96.10.5", got, err)
	}
	if _, err := (&Resolver{Reader: empty, Uncached: empty}).Lookup(t.Context(), ref); !isRefusal(err) {
		t.Errorf("Lookup missing from both = %v, want a refusal", err)
	}
	failing := fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return errors.New("timed out waiting for the cache to sync")
		},
	}).Build()
	_, err = (&Resolver{Reader: failing}).Lookup(t.Context(), ref)
	if err == nil || isRefusal(err) || !strings.Contains(err.Error(), "reading Service mysql.db: timed out") {
		t.Errorf("Lookup with a failing reader = %v, want the reader's error, not a refusal", err)
	}
}

func isRefusal(err error) bool {
	var sr *inject.ServiceRefusal
	return errors.As(err, &sr)
}

// TestTransform: the cache keeps of a Service and an EndpointSlice only
// what Lookup reads.
func TestTransform(t *testing.T) {
	svc := service("db", "mysql", corev1.ServiceSpec{
		Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.10.5", ClusterIPs: []string{"10.96.10.5"},
		Selector: map[string]string{"app": "mysql"}, Ports: []corev1.ServicePort{{Port: 3306}},
	})
	svc.Annotations = map[string]string{corev1.LastAppliedConfigAnnotation: strings.Repeat("x", 4096)}
	svc.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	svc.Labels = map[string]string{"app": "mysql"}
	out, err := transform(svc)
	if err != nil {
		t.Fatal(err)
	}
	want := service("db", "mysql", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.10.5", ClusterIPs: []string{"10.96.10.5"}})
	if got := out.(*corev1.Service); !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("transformed Service %+v, want %+v", got, want)
	}

	es := slice("db", "mysql-1", "mysql", discoveryv1.AddressTypeIPv4, []string{"10.244.1.9"})
	es.Ports = []discoveryv1.EndpointPort{{Port: ptr(int32(3306))}}
	es.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: "mysql-0"}
	es.Endpoints[0].Conditions.Ready = ptr(true)
	out, err = transform(es)
	if err != nil {
		t.Fatal(err)
	}
	wantES := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "db", Name: "mysql-1", Labels: map[string]string{discoveryv1.LabelServiceName: "mysql"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.9"}}},
	}
	if got := out.(*discoveryv1.EndpointSlice); !equality.Semantic.DeepEqual(got, wantES) {
		t.Errorf("transformed EndpointSlice %+v, want %+v", got, wantES)
	}
	if len(CacheOptions()) != len(Objects()) {
		t.Errorf("CacheOptions has %d kinds, Objects %d", len(CacheOptions()), len(Objects()))
	}
}
