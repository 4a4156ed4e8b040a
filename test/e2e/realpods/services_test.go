package realpods_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestExcludedServiceRecreated: pods exclude a MySQL-style backend from the
// capture by its Service's name (traffic.remora.io/excludeOutboundServices:
// "mysql"), not its address. The Service is headless, so its address is
// its endpoint's, a real pod IP (the node runs no kube-proxy: cluster IPs do
// not route here; a ClusterIP Service's recreation is proven on a real API
// server by internal/upgrade's TestExcludedServiceRecreated and test/e2e's
// TestExcludeOutboundServices).
//
// The webhook resolves it at admission: web's connection reaches the
// database directly, not through the proxy. Then the backend moves: a new
// database pod, and the Service deleted and created again selecting it, so
// that its address is another. The companion controller reports web and
// the bystander (an OutdatedSidecars Event naming the Service) and restarts
// web, which opted in; its new pod, injected with the new address, reaches
// the new database directly again. The bystander, not opted in, is left
// alone, and its connection to the new address goes through its proxy:
// what the restart repaired for web.
func TestExcludedServiceRecreated(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	ns := namespace(t, "svc-recreated", true)

	oldDB := startMySQL(t, ns)
	createService(t, ns, "mysql")
	waitEndpoint(t, ns, "mysql", oldDB.Status.PodIP)

	web := newDeployment(ns, "web", 1, fast(annotationExcludeServices, "mysql"))
	web.Annotations = map[string]string{annotationRestartOutdated: "true"}
	create(t, web)
	create(t, newDeployment(ns, "bystander", 1, fast(annotationExcludeServices, "mysql")))
	before := waitApp(ctx, t, ns, "web")
	bystander := waitApp(ctx, t, ns, "bystander")
	for _, p := range []*corev1.Pod{before, bystander} {
		requireInjected(t, p, true)
		if got, want := p.Annotations[annotationExcludedRecord], "mysql."+ns+"="+oldDB.Status.PodIP; got != want {
			t.Fatalf("pod %s: %s=%q, want %q", p.Name, annotationExcludedRecord, got, want)
		}
	}
	requireNatReturn(ctx, t, before, oldDB.Status.PodIP)
	requireDirect(t, before, oldDB)

	// The backend moves: a new database pod, and the Service recreated to
	// select it.
	newDB := startMySQLAs(t, ns, "mysql-b")
	deleteObject(ctx, t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mysql"}})
	deleteObject(ctx, t, oldDB)
	moved := time.Now()
	svc := createService(t, ns, "mysql-b")
	t.Logf("Service mysql recreated (uid %s) selecting %s at %s; was %s", svc.UID, newDB.Name, newDB.Status.PodIP, oldDB.Status.PodIP)

	// web is restarted; its new pod is injected with the new address.
	want := "mysql." + ns + "=" + newDB.Status.PodIP
	pods, err := waitPods(ctx, ns, "web", 1, 3*time.Minute, func(pods []corev1.Pod) bool {
		return pods[0].UID != before.UID && pods[0].Annotations[annotationExcludedRecord] == want
	})
	if err != nil {
		t.Fatalf("web was not replaced by a pod excluding %s: %v", newDB.Status.PodIP, err)
	}
	after := &pods[0]
	t.Logf("web's new pod %s Ready %s after the Service moved", after.Name, time.Since(moved).Round(time.Millisecond))
	var d appsv1.Deployment
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &d); err != nil {
		t.Fatal(err)
	}
	if rf := d.Spec.Template.Annotations[annotationRestartedFor]; !strings.Contains(rf, "+services-") {
		t.Errorf("web's template restarted-for %q, want a restart for its Services", rf)
	}
	for _, name := range []string{"web", "bystander"} {
		note := waitOutdatedEvent(ctx, t, ns, name)
		if !strings.Contains(note, "exclude Services from the capture whose addresses changed") || !strings.Contains(note, "mysql."+ns) {
			t.Errorf("%s: OutdatedSidecars note %q does not name the Service", name, note)
		}
	}
	requireNatReturn(ctx, t, after, newDB.Status.PodIP)
	requireDirect(t, after, newDB)

	// The bystander was not opted in: the same pod, still excluding the old
	// address, and its connection to the new one goes through the proxy.
	var still corev1.Pod
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(bystander), &still); err != nil || still.UID != bystander.UID {
		t.Fatalf("the bystander's pod %s was replaced or is gone: %v", bystander.Name, err)
	}
	target := net.JoinHostPort(newDB.Status.PodIP, "3306")
	res := call(t, bystander.Status.PodIP, target)
	if !res.OK {
		t.Fatalf("bystander -> new mysql: %s", res.Line)
	}
	if out := conns(proxyConns(t, bystander.Status.PodIP), "outbound", target); len(out) != 1 || out[0].From != res.Local {
		t.Errorf("the bystander's proxy recorded %+v to %s, want its app's connection from %s: it still excludes only the old address", out, target, res.Local)
	}
}

// createService creates the headless Service "mysql" selecting app=selector
// on the MySQL port.
func createService(t *testing.T, ns, selector string) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mysql"},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{"app": selector},
			Ports:     []corev1.ServicePort{{Name: "mysql", Port: mysqlPort}},
		},
	}
	create(t, svc)
	return svc
}

// waitEndpoint waits until an EndpointSlice of Service ns/svc lists addr.
func waitEndpoint(t *testing.T, ns, svc, addr string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var slices discoveryv1.EndpointSliceList
		if err := suite.cluster.Client.List(ctx, &slices, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: svc}); err != nil {
			return false, err
		}
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				for _, a := range e.Addresses {
					if a == addr {
						return true, nil
					}
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("waiting for Service %s/%s's endpoint %s: %v", ns, svc, addr, err)
	}
}

// waitApp waits for the one Ready pod of app=name.
func waitApp(ctx context.Context, t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	pods, err := waitPods(ctx, ns, name, 1, podTimeout, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &pods[0]
}

// deleteObject deletes obj and waits until it is gone.
func deleteObject(ctx context.Context, t *testing.T, obj client.Object) {
	t.Helper()
	c := suite.cluster.Client
	if err := c.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if err != nil {
		t.Fatalf("waiting for %T %s/%s to be deleted: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
}

// requireNatReturn checks that istio-init excluded addr in the pod's own
// network namespace.
func requireNatReturn(ctx context.Context, t *testing.T, pod *corev1.Pod, addr string) {
	t.Helper()
	rules, err := suite.cluster.NetnsExec(ctx, pod, "iptables-save", "-t", "nat")
	if err != nil {
		t.Fatal(err)
	}
	if want := "-A ISTIO_OUTPUT -d " + addr + "/32 -j RETURN\n"; !strings.Contains(rules, want) {
		t.Errorf("pod %s's nat table lacks %q:\n%s", pod.Name, want, rules)
	}
}

// requireDirect checks that the app in pod reaches the database directly:
// the database sees the app's own socket, and the proxy recorded nothing.
func requireDirect(t *testing.T, pod, db *corev1.Pod) {
	t.Helper()
	target := net.JoinHostPort(db.Status.PodIP, "3306")
	res := call(t, pod.Status.PodIP, target)
	if !res.OK {
		t.Fatalf("%s -> %s: %s", pod.Name, db.Name, res.Line)
	}
	if !strings.Contains(res.Reply, "peer="+res.Local) || !hasPeer(mysqlPeers(t, db.Status.PodIP), res.Local) {
		t.Errorf("%s greeted %q, want peer=%s (the app's own socket: no proxy in between)", db.Name, res.Reply, res.Local)
	}
	if out := conns(proxyConns(t, pod.Status.PodIP), "outbound", target); len(out) != 0 {
		t.Errorf("%s's proxy recorded the excluded connection to %s: %+v", pod.Name, target, out)
	}
}

// waitOutdatedEvent waits for the companion controller's OutdatedSidecars
// Event on Deployment ns/name and returns its note.
func waitOutdatedEvent(ctx context.Context, t *testing.T, ns, name string) string {
	t.Helper()
	var note string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var events eventsv1.EventList
		if err := suite.cluster.Client.List(ctx, &events, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.Reason == "OutdatedSidecars" && e.Regarding.Kind == "Deployment" && e.Regarding.Name == name &&
				strings.Contains(e.Note, "Services") {
				note = e.Note
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("waiting for the OutdatedSidecars Event on Deployment %s/%s: %v", ns, name, err)
	}
	return note
}
