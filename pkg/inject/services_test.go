package inject

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/pkg/config"
)

// serviceTable is a ServiceResolver for tests: each Service's addresses,
// or the error its lookup returns; a Service not in the table does not
// exist.
type serviceTable map[ServiceRef]any

func (s serviceTable) ServiceAddresses(ref ServiceRef) ([]netip.Addr, error) {
	switch v := s[ref].(type) {
	case nil:
		return nil, ServiceNotFound(ref)
	case error:
		return nil, v
	case []string:
		out := make([]netip.Addr, 0, len(v))
		for _, a := range v {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, nil
	}
	panic("serviceTable: bad entry")
}

// testServices are the Services the engine's tests resolve: a ClusterIP
// Service, a dual-stack one, a headless one with two endpoints and one
// without, an ExternalName Service, and one whose lookup fails.
var testServices = serviceTable{
	{"db", "mysql"}:            []string{"10.96.10.5"},
	{"shop", "postgres"}:       []string{"10.96.0.7"},
	{"db", "dual"}:             []string{"fd00:10:96::a", "10.96.10.6"},
	{"db", "headless"}:         []string{"10.244.1.9", "10.244.1.8", "10.244.1.9"},
	{"db", "empty"}:            []string{},
	{"db", "external"}:         ServiceExternalName(ServiceRef{"db", "external"}, "db.example.com"),
	{"db", "broken"}:           errors.New("the cache is not synced"),
	{"shop", "in-ip-range"}:    []string{"10.96.10.200"},
	{"kube-system", "coredns"}: []string{"10.96.0.10"},
}

func TestParseServiceRefs(t *testing.T) {
	tests := []struct {
		value   string
		want    []ServiceRef
		wantErr string
	}{
		{value: "mysql.db", want: []ServiceRef{{"db", "mysql"}}},
		{value: "postgres", want: []ServiceRef{{"shop", "postgres"}}},
		{value: " mysql.db , postgres ,mysql.db", want: []ServiceRef{{"db", "mysql"}, {"shop", "postgres"}}},
		{value: "a.b", want: []ServiceRef{{"b", "a"}}},
		{value: "svc-1.ns-2", want: []ServiceRef{{"ns-2", "svc-1"}}},
		{value: "", wantErr: "no Service named"},
		{value: "  ", wantErr: "no Service named"},
		{value: "mysql.db,,postgres", wantErr: "empty entry at position 2"},
		{value: "MySQL.db", wantErr: `Service name "MySQL" is not a DNS-1035 label`},
		{value: "1mysql.db", wantErr: `Service name "1mysql" is not a DNS-1035 label`},
		{value: "my_sql", wantErr: `Service name "my_sql" is not a DNS-1035 label`},
		{value: ".db", wantErr: `Service name "" is not a DNS-1035 label`},
		{value: strings.Repeat("a", 64) + ".db", wantErr: "is not a DNS-1035 label"},
		{value: "mysql.DB", wantErr: `namespace "DB" is not a DNS-1123 label`},
		{value: "mysql.", wantErr: `namespace "" is not a DNS-1123 label`},
		{value: "mysql.db.svc.cluster.local", wantErr: `namespace "db.svc.cluster.local" is not a DNS-1123 label`},
		{value: "10.96.10.5", wantErr: `Service name "10" is not a DNS-1035 label`},
		{value: "mysql.db/x", wantErr: `namespace "db/x" is not a DNS-1123 label`},
		{value: manyServices(MaxExcludedServices + 1), wantErr: "33 Services, at most 32"},
		{value: manyServices(MaxExcludedServices), want: nil}, // checked by length below
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, err := ParseServiceRefs(tt.value, "shop")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseServiceRefs(%q) = %v, %v; want an error containing %q", tt.value, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseServiceRefs(%q): %v", tt.value, err)
			}
			if tt.want == nil {
				if len(got) != MaxExcludedServices {
					t.Fatalf("got %d Services, want %d", len(got), MaxExcludedServices)
				}
				return
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ParseServiceRefs(%q) = %v, want %v", tt.value, got, tt.want)
			}
		})
	}
}

func manyServices(n int) string {
	names := make([]string, n)
	for i := range names {
		names[i] = "s" + strings.Repeat("x", i)
	}
	return strings.Join(names, ",")
}

// TestExcludedServices injects pods that name Services in
// traffic.remora.io/excludeOutboundServices and checks istio-init's -x,
// the record the controller reads, and the refusals.
func TestExcludedServices(t *testing.T) {
	tests := []struct {
		name string
		ann  map[string]string
		// services is the resolver (testServices when nil and not
		// noResolver).
		noResolver bool
		wantX      string
		wantRecord string
		// wantRefused lists what the refusal must say; wantInternal is an
		// error that is not the pod's fault.
		wantRefused  []string
		wantInternal string
	}{
		{
			name:       "ClusterIP Service in another namespace",
			ann:        map[string]string{AnnotationExcludeOutboundServices: "mysql.db"},
			wantX:      "10.96.10.5/32",
			wantRecord: "mysql.db=10.96.10.5",
		},
		{
			name:       "bare name: the pod's namespace",
			ann:        map[string]string{AnnotationExcludeOutboundServices: "postgres"},
			wantX:      "10.96.0.7/32",
			wantRecord: "postgres.shop=10.96.0.7",
		},
		{
			name:       "bare name and its qualified spelling are one Service",
			ann:        map[string]string{AnnotationExcludeOutboundServices: "postgres,postgres.shop"},
			wantX:      "10.96.0.7/32",
			wantRecord: "postgres.shop=10.96.0.7",
		},
		{
			name:       "dual-stack: both families, /32 and /128",
			ann:        map[string]string{AnnotationExcludeOutboundServices: "dual.db"},
			wantX:      "10.96.10.6/32,fd00:10:96::a/128",
			wantRecord: "dual.db=10.96.10.6,fd00:10:96::a",
		},
		{
			name:       "headless: its endpoints' addresses, sorted, once each",
			ann:        map[string]string{AnnotationExcludeOutboundServices: "headless.db"},
			wantX:      "10.244.1.8/32,10.244.1.9/32",
			wantRecord: "headless.db=10.244.1.8,10.244.1.9",
		},
		{
			name:       "headless without endpoints: nothing to exclude yet, recorded empty",
			ann:        map[string]string{AnnotationExcludeOutboundServices: "empty.db"},
			wantX:      "",
			wantRecord: "empty.db=",
		},
		{
			name: "merged with excludeOutboundIPRanges, after it",
			ann: map[string]string{
				AnnotationExcludeOutboundServices: "mysql.db,postgres",
				AnnotationExcludeOutboundCIDRs:    "192.168.0.0/16",
			},
			wantX:      "192.168.0.0/16,10.96.10.5/32,10.96.0.7/32",
			wantRecord: "mysql.db=10.96.10.5;postgres.shop=10.96.0.7",
		},
		{
			name: "an address a range already covers is not added again",
			ann: map[string]string{
				AnnotationExcludeOutboundServices: "in-ip-range,mysql.db",
				AnnotationExcludeOutboundCIDRs:    "10.96.10.0/24",
			},
			wantX:      "10.96.10.0/24",
			wantRecord: "in-ip-range.shop=10.96.10.200;mysql.db=10.96.10.5",
		},
		{
			name:        "a Service that does not exist is refused, named",
			ann:         map[string]string{AnnotationExcludeOutboundServices: "mysql.db,nosuch.db"},
			wantRefused: []string{AnnotationExcludeOutboundServices, `"mysql.db,nosuch.db"`, "Service nosuch.db does not exist", "create the Service before the pod"},
		},
		{
			name:        "an ExternalName Service is refused: nothing to exclude",
			ann:         map[string]string{AnnotationExcludeOutboundServices: "external.db"},
			wantRefused: []string{"Service external.db is an ExternalName Service (db.example.com)", AnnotationExcludeOutboundCIDRs},
		},
		{
			name:        "every refused Service is named in one message",
			ann:         map[string]string{AnnotationExcludeOutboundServices: "nosuch,external.db"},
			wantRefused: []string{"Service nosuch.shop does not exist", "Service external.db is an ExternalName"},
		},
		{
			name:        "an invalid name is refused before anything is resolved",
			ann:         map[string]string{AnnotationExcludeOutboundServices: "mysql.db,Bad_Name"},
			wantRefused: []string{AnnotationExcludeOutboundServices, `"mysql.db,Bad_Name"`, "NAME.NAMESPACE", `Service name "Bad_Name" is not a DNS-1035 label`},
		},
		{
			name:        "an invalid name is reported with the pod's other invalid annotations",
			ann:         map[string]string{AnnotationExcludeOutboundServices: "a.B", AnnotationLogLevel: "loud"},
			wantRefused: []string{`namespace "B" is not a DNS-1123 label`, AnnotationLogLevel},
		},
		{
			name:        "no resolver (offline, no cluster): refused, saying what to do",
			ann:         map[string]string{AnnotationExcludeOutboundServices: "mysql.db"},
			noResolver:  true,
			wantRefused: []string{AnnotationExcludeOutboundServices, "only against a cluster", "--kubeconfig", AnnotationExcludeOutboundCIDRs},
		},
		{
			name:         "the resolver's own failure is an internal error, not the pod's",
			ann:          map[string]string{AnnotationExcludeOutboundServices: "broken.db"},
			wantInternal: "resolving Service broken.db of traffic.remora.io/excludeOutboundServices: the cache is not synced",
		},
		{
			name:       "a record in the manifest is not trusted: it is replaced",
			ann:        map[string]string{AnnotationExcludeOutboundServices: "mysql.db", AnnotationExcludedServiceAddresses: "mysql.db=1.2.3.4"},
			wantX:      "10.96.10.5/32",
			wantRecord: "mysql.db=10.96.10.5",
		},
		{
			name:       "and dropped when the pod excludes no Service",
			ann:        map[string]string{AnnotationExcludedServiceAddresses: "mysql.db=1.2.3.4"},
			wantX:      "",
			wantRecord: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testPod(tt.ann)
			req := Request{Pod: pod, Config: config.MustDefault()}
			if !tt.noResolver {
				req.Services = testServices
			}
			res, err := Inject(req)
			switch {
			case tt.wantInternal != "":
				if err == nil || IsRefused(err) || err.Error() != tt.wantInternal {
					t.Fatalf("Inject: %v (refused: %v), want the internal error %q", err, IsRefused(err), tt.wantInternal)
				}
				return
			case tt.wantRefused != nil:
				var ae *AnnotationError
				if !errors.As(err, &ae) {
					t.Fatalf("Inject: %v, want an *AnnotationError", err)
				}
				for _, s := range tt.wantRefused {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("refusal %q does not contain %q", err, s)
					}
				}
				if res.Injected || res.Pod != pod {
					t.Error("a refused pod was injected")
				}
				return
			case err != nil:
				t.Fatalf("Inject: %v", err)
			}
			if got := initArg(t, res.Pod, "-x"); got != tt.wantX {
				t.Errorf("-x %q, want %q", got, tt.wantX)
			}
			got, ok := res.Pod.Annotations[AnnotationExcludedServiceAddresses]
			if got != tt.wantRecord || ok != (tt.wantRecord != "") {
				t.Errorf("%s=%q (set: %v), want %q", AnnotationExcludedServiceAddresses, got, ok, tt.wantRecord)
			}
			if ok {
				parsed, err := ParseExcludedServices(got)
				if err != nil || FormatExcludedServices(parsed) != got {
					t.Errorf("the record does not parse back: %v, %v", parsed, err)
				}
			}
			if _, ok := pod.Annotations[AnnotationExcludedServiceAddresses]; ok != (tt.ann[AnnotationExcludedServiceAddresses] != "") {
				t.Error("the input pod was modified")
			}
			un, changed, err := Uninject(res.Pod)
			if err != nil || !changed {
				t.Fatalf("Uninject: %v, %v", changed, err)
			}
			if _, ok := un.Annotations[AnnotationExcludedServiceAddresses]; ok {
				t.Errorf("Uninject left %s", AnnotationExcludedServiceAddresses)
			}
		})
	}
}

// TestServicesResolvedOnlyWhenNamed: a pod that names no Service never
// reaches the resolver (the webhook's hot path costs nothing more).
func TestServicesResolvedOnlyWhenNamed(t *testing.T) {
	calls := 0
	res, err := Inject(Request{Pod: testPod(nil), Config: config.MustDefault(), Services: countingResolver{&calls}})
	if err != nil || !res.Injected {
		t.Fatalf("Inject: %v, %v", res.Injected, err)
	}
	if calls != 0 {
		t.Errorf("the resolver was called %d times for a pod that names no Service", calls)
	}
	if _, ok := res.Pod.Annotations[AnnotationExcludedServiceAddresses]; ok {
		t.Errorf("%s set on a pod that names no Service", AnnotationExcludedServiceAddresses)
	}
}

type countingResolver struct{ calls *int }

func (c countingResolver) ServiceAddresses(ServiceRef) ([]netip.Addr, error) {
	*c.calls++
	return nil, nil
}

func TestParseExcludedServices(t *testing.T) {
	for _, good := range []string{"", "a.b=", "mysql.db=10.0.0.1,fd00::1;postgres.shop=10.0.0.2"} {
		s, err := ParseExcludedServices(good)
		if err != nil || FormatExcludedServices(s) != good {
			t.Errorf("ParseExcludedServices(%q) = %v, %v; want it to format back", good, s, err)
		}
	}
	for _, bad := range []string{"mysql=10.0.0.1", "mysql.db", "mysql.db=10.0.0", "mysql.db=10.0.0.1;", ".db=10.0.0.1"} {
		if s, err := ParseExcludedServices(bad); err == nil {
			t.Errorf("ParseExcludedServices(%q) = %v, want an error", bad, s)
		}
	}
}

// TestExcludedServicesWithoutCapture: interception mode NONE captures
// nothing, so the Services are not resolved (a missing one is not
// refused), nothing is recorded, and a warning says the annotation has no
// effect.
func TestExcludedServicesWithoutCapture(t *testing.T) {
	calls := 0
	pod := testPod(map[string]string{AnnotationInterceptionMode: "NONE", AnnotationExcludeOutboundServices: "nosuch.db"})
	res, err := Inject(Request{Pod: pod, Config: config.MustDefault(), Services: countingResolver{&calls}})
	if err != nil || !res.Injected {
		t.Fatalf("Inject: %v, %v", res.Injected, err)
	}
	if calls != 0 {
		t.Errorf("the resolver was called %d times for a pod whose traffic is not captured", calls)
	}
	if _, ok := res.Pod.Annotations[AnnotationExcludedServiceAddresses]; ok {
		t.Errorf("%s recorded for a pod whose traffic is not captured", AnnotationExcludedServiceAddresses)
	}
	if !slices.ContainsFunc(res.Warnings, func(w string) bool {
		return strings.Contains(w, AnnotationExcludeOutboundServices+" has no effect")
	}) {
		t.Errorf("warnings %q do not say %s has no effect", res.Warnings, AnnotationExcludeOutboundServices)
	}
}
