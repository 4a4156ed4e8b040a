package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/test/e2e/framework"
)

// What a pod names and what the injector records, spelled out: they are
// the product's API (README, "Keeping non-HTTP backends such as MySQL out of
// the proxy").
const (
	annotationExcludeServices  = "traffic.remora.io/excludeOutboundServices"
	annotationExcludedServices = "traffic.remora.io/excludedServiceAddresses"
)

// TestExcludeOutboundServices: the shared injector runs with
// --exclude-services and resolves, through its informer cache, the Services a
// pod names to istio-init's -x: a dual-stack ClusterIP Service in another
// namespace (both families), a headless Service in the pod's own (its
// EndpointSlices' addresses, followed when they change), merged after the
// pod's excludeOutboundIPRanges and recorded on the pod. The API server
// refuses a pod naming an ExternalName Service, a missing one or a malformed
// name with the webhook's message. Admissions read the cache: creating pods
// that name cached Services costs the injector no API request.
func TestExcludeOutboundServices(t *testing.T) {
	ctx := t.Context()
	c := env.cluster.Client
	ns := newNamespace(t, "svc", enabled)
	dbNS := newNamespace(t, "svcdb", nil)

	mysql := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: dbNS, Name: "mysql"},
		Spec: corev1.ServiceSpec{
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack),
			Selector:       map[string]string{"app": "mysql"},
			Ports:          []corev1.ServicePort{{Port: 3306}},
		},
	}
	cache := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cache"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Port: 6379}}},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cache-1", Labels: map[string]string{
			discoveryv1.LabelServiceName: "cache", discoveryv1.LabelManagedBy: "e2e",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.3.12"}}, {Addresses: []string{"10.244.1.7"}}},
	}
	warehouse := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: dbNS, Name: "warehouse"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "warehouse.example.com"},
	}
	for _, o := range []client.Object{mysql, cache, slice, warehouse} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if len(mysql.Spec.ClusterIPs) != 2 {
		t.Fatalf("Service mysql has cluster IPs %v, want one of each family (%s)", mysql.Spec.ClusterIPs, framework.DualStackServiceCIDRs)
	}
	v4, v6 := mysql.Spec.ClusterIPs[0], mysql.Spec.ClusterIPs[1]
	mysqlRef := "mysql." + dbNS

	t.Run("resolved to istio-init's -x and recorded", func(t *testing.T) {
		pod := newPod(ns, "orders")
		pod.Annotations = map[string]string{
			annotationExcludeServices:                          mysqlRef + ", cache",
			"traffic.sidecar.istio.io/excludeOutboundIPRanges": "192.168.0.0/16",
		}
		mustCreatePod(t, pod)
		wantX := "192.168.0.0/16," + v4 + "/32," + v6 + "/128,10.244.1.7/32,10.244.3.12/32"
		if got := excludeArg(t, pod); got != wantX {
			t.Errorf("-x %q, want %q", got, wantX)
		}
		wantRecord := mysqlRef + "=" + v4 + "," + v6 + ";cache." + ns + "=10.244.1.7,10.244.3.12"
		if got := pod.Annotations[annotationExcludedServices]; got != wantRecord {
			t.Errorf("%s=%q, want %q", annotationExcludedServices, got, wantRecord)
		}
	})

	t.Run("a headless Service's moved endpoints are followed", func(t *testing.T) {
		slice.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.244.9.9"}}}
		if err := c.Update(ctx, slice); err != nil {
			t.Fatal(err)
		}
		var last string
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			pod := newPod(ns, "")
			pod.Annotations = map[string]string{annotationExcludeServices: "cache"}
			if err := createPod(t, pod, client.DryRunAll); err != nil {
				return false, err
			}
			last = excludeArg(t, pod)
			return last == "10.244.9.9/32", nil
		})
		if err != nil {
			t.Fatalf("the webhook's -x for cache stayed %q after its endpoints moved: %v", last, err)
		}
	})

	t.Run("refused with the webhook's message", func(t *testing.T) {
		for _, tc := range []struct{ value, want string }{
			{"warehouse." + dbNS, "Service warehouse." + dbNS + " is an ExternalName Service (warehouse.example.com)"},
			{mysqlRef + ",nosuch", "Service nosuch." + ns + " does not exist: create the Service before the pod"},
			{"Bad_Name." + dbNS, `Service name "Bad_Name" is not a DNS-1035 label`},
			{"mysql.Db", `namespace "Db" is not a DNS-1123 label`},
		} {
			pod := newPod(ns, "")
			pod.Annotations = map[string]string{annotationExcludeServices: tc.value}
			err := createPod(t, pod)
			errorContains(t, err, `admission webhook "`+framework.NamespaceWebhookName+`" denied the request`,
				annotationExcludeServices, tc.value, tc.want)
			if !apierrors.IsForbidden(err) {
				t.Errorf("%s: status %v, want Forbidden", tc.value, apierrors.ReasonForError(err))
			}
		}
	})

	t.Run("admissions read the cache, not the API server", func(t *testing.T) {
		gets := func() float64 {
			return metric(t, "rest_client_requests_total", map[string]string{"method": "GET"})
		}
		before := gets()
		const n = 5
		for range n {
			pod := newPod(ns, "")
			pod.Annotations = map[string]string{annotationExcludeServices: mysqlRef + ",cache"}
			mustCreatePod(t, pod)
			if !slices.Contains(strings.Split(excludeArg(t, pod), ","), v4+"/32") {
				t.Fatalf("-x %q lacks %s/32", excludeArg(t, pod), v4)
			}
		}
		after := gets()
		if d := after - before; d > 0 {
			t.Errorf("the injector sent %v GET requests to the API server for %d admissions of pods naming cached Services, want none", d, n)
		}
		// The counter does count the resolver's reads: a Service the cache
		// does not have is read from the API server once before the pod is
		// refused.
		pod := newPod(ns, "")
		pod.Annotations = map[string]string{annotationExcludeServices: "not-created"}
		errorContains(t, createPod(t, pod), "Service not-created."+ns+" does not exist")
		if d := gets() - after; d < 1 {
			t.Errorf("a cache miss sent %v GET requests, want at least 1: the metric does not count the resolver's reads", d)
		}
	})
}

// excludeArg returns istio-init's -x of an injected pod.
func excludeArg(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	init := container(pod.Spec.InitContainers, "istio-init")
	if init == nil {
		t.Fatalf("pod %s/%s has no istio-init: %v", pod.Namespace, pod.Name, names(pod.Spec.InitContainers))
	}
	i := slices.Index(init.Args, "-x")
	if i < 0 || i+1 >= len(init.Args) {
		t.Fatalf("istio-init args %q have no -x", init.Args)
	}
	return init.Args[i+1]
}
