package upgrade

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// addrTable resolves Services for injection and lookups in these tests.
type addrTable map[inject.ServiceRef][]string

func (a addrTable) addrs(ref inject.ServiceRef) ([]netip.Addr, error) {
	s, ok := a[ref]
	if !ok {
		return nil, inject.ServiceNotFound(ref)
	}
	out := make([]netip.Addr, len(s))
	for i, v := range s {
		out[i] = netip.MustParseAddr(v)
	}
	return inject.NormalizeAddrs(out), nil
}

func (a addrTable) ServiceAddresses(ref inject.ServiceRef) ([]netip.Addr, error) { return a.addrs(ref) }

func (a addrTable) lookup(_ context.Context, ref inject.ServiceRef) ([]netip.Addr, error) {
	return a.addrs(ref)
}

var (
	mysqlRef = inject.ServiceRef{Namespace: "db", Name: "mysql"}
	cacheRef = inject.ServiceRef{Namespace: "app", Name: "cache"}
)

// excludingPod is a pod of ReplicaSet rs injected with cfg that excludes
// services, resolved with at.
func excludingPod(t *testing.T, cfg *config.Config, name, rs, services string, at addrTable) corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name,
			Annotations: map[string]string{inject.AnnotationExcludeOutboundServices: services}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
	res, err := inject.Inject(inject.Request{Pod: pod, Namespace: "app", NamespaceLabels: enabled, Config: cfg, Services: at})
	if err != nil || !res.Injected {
		t.Fatalf("injecting: %v (%s)", err, res.Message)
	}
	return owned(*res.Pod, "apps/v1", KindReplicaSet, rs)
}

// TestEvaluateExcludedServices: a pod whose excluded Service has an address
// it does not exclude is outdated (services), however the addresses
// changed; one whose Service lost addresses, no longer exists or is not
// compared is not. A workload outdated by the configuration too reports
// that change, and is restarted for the configuration's hash; one outdated
// by its Services only, for a key of their current addresses.
func TestEvaluateExcludedServices(t *testing.T) {
	v1, v2 := loadConfig(t, "example.com/proxy:v1"), loadConfig(t, "example.com/proxy:v2")
	then := addrTable{mysqlRef: {"10.96.10.5"}, cacheRef: {"10.244.1.7", "10.244.1.8"}}
	pods := podInfos(
		excludingPod(t, v2, "web-1", "web-rs", "mysql.db", then),
		excludingPod(t, v2, "web-2", "web-rs", "mysql.db", then),
		excludingPod(t, v2, "cache-user-1", "cache-user-rs", "cache", then),
		excludingPod(t, v1, "old-1", "old-rs", "mysql.db", then),
		excludingPod(t, v2, "plain-1", "plain-rs", "cache", then),
	)
	snapshot := func(now addrTable) *Snapshot {
		s := &Snapshot{
			Config:     v2,
			Namespaces: []metav1.PartialObjectMetadata{{ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: enabled}}},
			Pods:       pods,
		}
		if now != nil {
			var err error
			if s.Services, err = ResolveServices(t.Context(), pods, now.lookup); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	type row struct {
		outdated, stale int
		change          Change
		staleServices   string
	}
	byRS := func(rep *Report) map[string]row {
		out := map[string]row{}
		for _, w := range rep.Workloads {
			var names []string
			for _, r := range w.ChangedServices {
				names = append(names, r.String())
			}
			out[w.Ref.Name] = row{w.Outdated, w.StaleServices, w.Change, strings.Join(names, ",")}
		}
		return out
	}
	tests := []struct {
		name string
		now  addrTable
		want map[string]row
	}{
		{name: "nothing changed", now: then, want: map[string]row{
			"web-rs": {}, "cache-user-rs": {}, "plain-rs": {}, "old-rs": {1, 0, ChangeImage, ""},
		}},
		{name: "Services not compared (no ExcludeServices)", now: nil, want: map[string]row{
			"web-rs": {}, "cache-user-rs": {}, "plain-rs": {}, "old-rs": {1, 0, ChangeImage, ""},
		}},
		{name: "mysql recreated with another cluster IP", now: addrTable{mysqlRef: {"10.96.10.99"}, cacheRef: then[cacheRef]}, want: map[string]row{
			"web-rs": {2, 2, ChangeServices, "mysql.db"}, "cache-user-rs": {}, "plain-rs": {},
			"old-rs": {1, 1, ChangeImage, "mysql.db"},
		}},
		{name: "mysql became dual-stack: its new IPv6 address is not excluded", now: addrTable{mysqlRef: {"10.96.10.5", "fd00::5"}, cacheRef: then[cacheRef]}, want: map[string]row{
			"web-rs": {2, 2, ChangeServices, "mysql.db"}, "cache-user-rs": {}, "plain-rs": {},
			"old-rs": {1, 1, ChangeImage, "mysql.db"},
		}},
		{name: "a headless Service's endpoint moved", now: addrTable{mysqlRef: then[mysqlRef], cacheRef: {"10.244.1.7", "10.244.2.2"}}, want: map[string]row{
			"web-rs": {}, "cache-user-rs": {1, 1, ChangeServices, "cache.app"}, "plain-rs": {1, 1, ChangeServices, "cache.app"},
			"old-rs": {1, 0, ChangeImage, ""},
		}},
		{name: "a headless Service lost an endpoint: nothing new to exclude", now: addrTable{mysqlRef: then[mysqlRef], cacheRef: {"10.244.1.8"}}, want: map[string]row{
			"web-rs": {}, "cache-user-rs": {}, "plain-rs": {}, "old-rs": {1, 0, ChangeImage, ""},
		}},
		{name: "mysql deleted: not compared (its pods would be refused)", now: addrTable{cacheRef: then[cacheRef]}, want: map[string]row{
			"web-rs": {}, "cache-user-rs": {}, "plain-rs": {}, "old-rs": {1, 0, ChangeImage, ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := Evaluate(snapshot(tt.now))
			got := byRS(rep)
			for rs, want := range tt.want {
				if got[rs] != want {
					t.Errorf("%s: %+v, want %+v", rs, got[rs], want)
				}
			}
			wantStale := 0
			for _, w := range tt.want {
				wantStale += w.stale
			}
			if rep.Pods.StaleServices != wantStale || rep.Namespaces["app"].StaleServices != wantStale {
				t.Errorf("stale pods: %d (namespace %d), want %d", rep.Pods.StaleServices, rep.Namespaces["app"].StaleServices, wantStale)
			}
			for _, w := range rep.Workloads {
				onlyServices := w.Change == ChangeServices
				if onlyServices == (w.RestartKey == rep.Hash) || !strings.HasPrefix(w.RestartKey, rep.Hash) {
					t.Errorf("%s (%s): restart key %q, hash %q", w.Ref.Name, w.Change, w.RestartKey, rep.Hash)
				}
			}
		})
	}

	// The key of a restart for Services follows their addresses: the same
	// addresses, the same key (restarted once); new ones, a new key.
	key := func(now addrTable) string {
		for _, w := range Evaluate(snapshot(now)).Workloads {
			if w.Ref.Name == "web-rs" {
				return w.RestartKey
			}
		}
		return ""
	}
	moved := addrTable{mysqlRef: {"10.96.10.99"}, cacheRef: then[cacheRef]}
	movedAgain := addrTable{mysqlRef: {"10.96.10.100"}, cacheRef: then[cacheRef]}
	if a, b, c := key(moved), key(moved), key(movedAgain); a != b || a == c {
		t.Errorf("restart keys %q, %q (same addresses), %q (new ones): want the first two equal, the third different", a, b, c)
	}
}

// TestResolveServices: each excluded Service is looked up once, however
// many pods exclude it; a Service that cannot be excluded is left out; a
// lookup's own failure fails the snapshot.
func TestResolveServices(t *testing.T) {
	cfg := loadConfig(t, "example.com/proxy:v1")
	then := addrTable{mysqlRef: {"10.96.10.5"}, cacheRef: {"10.244.1.7"}}
	var all []corev1.Pod
	for i := range 100 {
		all = append(all, excludingPod(t, cfg, "web-"+string(rune('a'+i%26))+strings.Repeat("x", i/26), "web-rs", "mysql.db,cache", then))
	}
	all = append(all, excludingPod(t, cfg, "other", "other-rs", "cache,mysql.db", then))
	pods := podInfos(all...)
	calls := map[inject.ServiceRef]int{}
	now := addrTable{mysqlRef: {"10.96.10.6"}}
	got, err := ResolveServices(t.Context(), pods, func(ctx context.Context, ref inject.ServiceRef) ([]netip.Addr, error) {
		calls[ref]++
		return now.lookup(ctx, ref)
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls[mysqlRef] != 1 || calls[cacheRef] != 1 || len(calls) != 2 {
		t.Errorf("lookups %v, want one per Service", calls)
	}
	if len(got) != 1 || !slices.Equal(got[mysqlRef], []netip.Addr{netip.MustParseAddr("10.96.10.6")}) {
		t.Errorf("resolved %v, want mysql.db only (cache.app no longer exists)", got)
	}
	_, err = ResolveServices(t.Context(), pods, func(context.Context, inject.ServiceRef) ([]netip.Addr, error) {
		return nil, errors.New("cache not synced")
	})
	if err == nil || !strings.Contains(err.Error(), "cache not synced") {
		t.Errorf("a failing lookup: %v, want its error", err)
	}
	// Pods of a workload share their record.
	if pods[0].excluded != pods[1].excluded || pods[0].ExcludedServices() == "" {
		t.Errorf("records %q and %q are not shared", pods[0].ExcludedServices(), pods[1].ExcludedServices())
	}
}

// TestServicePredicate: only the Services injected pods exclude, and only
// changes of their addresses, cost an evaluation.
func TestServicePredicate(t *testing.T) {
	cfg := loadConfig(t, "example.com/proxy:v1")
	var e excludedRefs
	p := e.servicePredicate()
	svc := func(ns, name string, ips ...string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{ClusterIPs: ips}}
	}
	es := func(ns, svc string, ready bool, addrs ...string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			Endpoints:  []discoveryv1.Endpoint{{Addresses: addrs, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		}
	}
	if p.Create(event.CreateEvent{Object: svc("db", "mysql", "10.96.10.5")}) {
		t.Error("an event passed before any pod excludes a Service")
	}
	e.store(podInfos(excludingPod(t, cfg, "web-1", "web-rs", "mysql.db,cache", addrTable{mysqlRef: {"10.96.10.5"}, cacheRef: {"10.244.1.7"}})))
	for _, tc := range []struct {
		name string
		pass bool
		got  bool
	}{
		{"an excluded Service created", true, p.Create(event.CreateEvent{Object: svc("db", "mysql", "10.96.10.5")})},
		{"an excluded Service deleted", true, p.Delete(event.DeleteEvent{Object: svc("db", "mysql", "10.96.10.5")})},
		{"its cluster IPs changed", true, p.Update(event.UpdateEvent{ObjectOld: svc("db", "mysql", "10.96.10.5"), ObjectNew: svc("db", "mysql", "10.96.10.5", "fd00::5")})},
		{"its resourceVersion only", false, p.Update(event.UpdateEvent{ObjectOld: svc("db", "mysql", "10.96.10.5"), ObjectNew: svc("db", "mysql", "10.96.10.5")})},
		{"another Service", false, p.Create(event.CreateEvent{Object: svc("db", "postgres", "10.96.10.6")})},
		{"the same name elsewhere", false, p.Create(event.CreateEvent{Object: svc("app", "mysql", "10.96.10.6")})},
		{"an excluded headless Service's endpoint moved", true, p.Update(event.UpdateEvent{ObjectOld: es("app", "cache", true, "10.244.1.7"), ObjectNew: es("app", "cache", true, "10.244.1.9")})},
		{"its endpoint's readiness only", false, p.Update(event.UpdateEvent{ObjectOld: es("app", "cache", true, "10.244.1.7"), ObjectNew: es("app", "cache", false, "10.244.1.7")})},
		{"a new EndpointSlice of it", true, p.Create(event.CreateEvent{Object: es("app", "cache", true, "10.244.1.8")})},
		{"an EndpointSlice of another Service", false, p.Create(event.CreateEvent{Object: es("app", "web", true, "10.244.1.8")})},
	} {
		if tc.got != tc.pass {
			t.Errorf("%s: passed %v, want %v", tc.name, tc.got, tc.pass)
		}
	}
}
