package chart_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/internal/upgrade"
	"github.com/remora-mesh/remora/internal/webhook"
	"github.com/remora-mesh/remora/pkg/inject"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

// Namespaces of the RBAC end-to-end test's workloads: restartOutdated.namespaces lists the first
// two when a case restricts restarts; the third is never listed.
const (
	shopNS      = "shop"
	billingNS   = "billing"
	elsewhereNS = "elsewhere"
)

// TestRBACEndToEnd runs the injector, built from source, with the Deployment's own arguments and
// nothing but a TokenRequest token of the chart's ServiceAccount, on a real kube-apiserver, for
// feature combinations that together switch every rule of the chart's RBAC on and off. Each
// feature is made to use its rules (the README's RBAC table says which), so a missing rule
// fails: the injector does not become ready, an Event or a restart does not happen, or the
// injector logs a Forbidden error. Rights a feature that is off would use are refused.
func TestRBACEndToEnd(t *testing.T) {
	assets := testenv.AssetsDir(t)
	helmBinary(t)
	log.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	tests := []struct {
		name string
		f    features
	}{
		{"defaults: cert-manager, upgrade controller reporting, leader election, workload Events",
			features{certManager: true, upgrade: true, leader: true, events: true}},
		{"self-managed certificates, restarts everywhere, excluded Services",
			features{upgrade: true, leader: true, restarts: true, events: true, excludeServices: true}},
		{"cert-manager, restarts in two namespaces, no leader election, no workload Events",
			features{certManager: true, upgrade: true, restarts: true, restartNamespaces: []string{shopNS, billingNS}}},
		{"self-managed certificates, webhook only with its workload Events, metrics over plain HTTP",
			features{insecureMetrics: true, events: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { runRBACCase(t, assets, tc.f) })
	}
}

func runRBACCase(t *testing.T, assets string, f features) {
	start := time.Now()
	work := t.TempDir()
	cluster := startChartCluster(t, assets, work)
	admin := cluster.admin
	ctx := t.Context()

	// Workloads with an injected pod before the injector starts: in each namespace a Deployment
	// whose rollout has finished, its ReplicaSet and a pod that carries a sidecar, in a namespace
	// that no longer selects injection but opts in to restarts explicitly (so the controller
	// reports it and, where allowed, restarts it).
	for _, ns := range []string{shopNS, elsewhereNS} {
		createInjectedWorkload(t, admin, ns)
	}
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: billingNS}}); err != nil {
		t.Fatal(err)
	}

	// Room for both workloads' restarts at once: a restart's rollout never finishes here (no
	// controller-manager), and holds its slot.
	m := render(t, append(append(f.args(), scraperValues()...), "--set", "restartOutdated.maxConcurrentRestarts=2")...)
	cluster.applyChart(t, m)
	deploy := one[appsv1.Deployment](t, m, "Deployment")
	args, opts, configMapName := injectorArgs(t, deploy, work)
	cluster.mountConfigMap(t, configMapName, opts.ConfigDir)
	var caPool *x509.CertPool // verifies the serving certificate, which /metrics serves too
	if f.certManager {
		// What cert-manager would write into the mounted Secret.
		ca, err := framework.NewCA()
		if err != nil {
			t.Fatal(err)
		}
		caPool = ca.Pool()
		serving, err := ca.Issue()
		if err != nil {
			t.Fatal(err)
		}
		if err := framework.WriteAtomically(opts.CertDir, serving.ServingFiles()); err != nil {
			t.Fatal(err)
		}
	}

	// The chart's ServiceAccount's credentials only.
	saName := deploy.Spec.Template.Spec.ServiceAccountName
	kubeconfig := serviceAccountKubeconfig(t, admin, cluster.cfg, releaseNS, saName, work)
	asInjector := kubeconfigClient(t, kubeconfig, cluster.scheme)
	args = append(args, "--kubeconfig="+kubeconfig, "--shutdown-delay=1s")
	// Ready: the namespace cache synced (namespaces list, watch), and in self-managed mode the
	// Secret was created and the caBundle patched.
	inj := cluster.startInjector(t, work, args, opts)
	t.Logf("%v: injector ready in %v: %s", f, time.Since(start).Round(time.Millisecond), strings.Join(args, " "))

	// namespaces get: a pod of a namespace the cache has not seen sends the webhook to the API
	// server, which answers NotFound, not Forbidden.
	if msg := admitPodIn(t, inj, "not-created-yet"); !strings.Contains(msg, "not found") || strings.Contains(strings.ToLower(msg), "forbidden") {
		t.Errorf("admission of a pod in an unknown namespace: %q, want the namespace reported not found", msg)
	}

	metricsServerName := "127.0.0.1" // the certificate written above
	if !f.certManager {
		metricsServerName = flagValue(t, args, "service-name") + "." + releaseNS + ".svc"
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		name := flagValue(t, args, "webhook-config-name")
		if err := admin.Get(ctx, client.ObjectKey{Name: name}, mwc); err != nil {
			t.Fatal(err)
		}
		for _, w := range mwc.Webhooks {
			if !bytes.Contains(w.ClientConfig.CABundle, []byte("BEGIN CERTIFICATE")) {
				t.Errorf("self-managed certificates: webhook %s has no caBundle", w.Name)
			}
		}
		caPool = x509.NewCertPool()
		caPool.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle)
	}
	checkMetricsAccess(t, admin, inj, f, caPool, metricsServerName)

	if f.upgrade && f.leader {
		lease := &coordinationv1.Lease{}
		waitFor(t, "the injector to hold the leader election Lease", func() (bool, error) {
			err := admin.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: "remora-injector-leader"}, lease)
			return err == nil && ptr.Deref(lease.Spec.HolderIdentity, "") != "", client.IgnoreNotFound(err)
		})
		waitFor(t, "the LeaderElection Event", func() (bool, error) {
			events := &corev1.EventList{}
			if err := admin.List(ctx, events, client.InNamespace(releaseNS)); err != nil {
				return false, err
			}
			for _, e := range events.Items {
				if e.Reason == "LeaderElection" && e.InvolvedObject.Kind == "Lease" {
					return true, nil
				}
			}
			return false, nil
		})
	}

	if f.events {
		checkWorkloadEvents(t, admin, inj)
	}

	restartAllowed := func(ns string) bool {
		return f.upgrade && f.restarts && (len(f.restartNamespaces) == 0 || slices.Contains(f.restartNamespaces, ns))
	}
	if f.upgrade {
		// The controller reports each outdated workload with an Event that says what it decided,
		// then restarts the ones it decided to restart.
		for _, ns := range []string{shopNS, elsewhereNS} {
			note := waitOutdatedEvent(t, admin, ns)
			restarted := func() bool {
				d := &appsv1.Deployment{}
				if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, d); err != nil {
					t.Fatal(err)
				}
				_, ok := d.Spec.Template.Annotations[upgrade.AnnotationRestartedAt]
				return ok
			}
			switch {
			case restartAllowed(ns):
				if !strings.Contains(note, "restarting now") {
					t.Errorf("%s: Event %q, want the decision to restart", ns, note)
				}
				waitFor(t, ns+"/app to be restarted", func() (bool, error) { return restarted(), nil })
			case !f.restarts && !strings.Contains(note, "restarts are off"):
				t.Errorf("%s: Event %q does not say that restarts are off", ns, note)
			case f.restarts && !strings.Contains(note, "not allowed in namespace "+ns):
				t.Errorf("%s: Event %q does not say that restarts are not allowed there", ns, note)
			case restarted():
				t.Errorf("%s/app was restarted although restarts are not allowed there", ns)
			}
		}
	}

	checkExcludedServices(t, admin, asInjector, inj, f)

	// Rights of features that are off are refused.
	for _, ns := range []string{shopNS, billingNS, elsewhereNS} {
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"rbac-probe":"x"}}}`))
		err := asInjector.Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}}, patch, client.DryRunAll)
		if ns == billingNS {
			err = client.IgnoreNotFound(err) // no workload there: allowed means NotFound
		}
		if restartAllowed(ns) != (err == nil) {
			t.Errorf("patching a Deployment in %s: %v; restarts allowed there: %v", ns, err, restartAllowed(ns))
		}
	}
	if !f.upgrade {
		if err := asInjector.List(ctx, &corev1.PodList{}); !apierrors.IsForbidden(err) {
			t.Errorf("listing pods without the upgrade controller: %v, want Forbidden", err)
		}
	}
	if !f.events {
		err := asInjector.Get(ctx, client.ObjectKey{Namespace: shopNS, Name: "app-1"}, &appsv1.ReplicaSet{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("reading a ReplicaSet without workload Events: %v, want Forbidden", err)
		}
	}
	if f.certManager {
		err := asInjector.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: "remora-self-managed-tls"}, &corev1.Secret{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("reading a Secret in cert-manager mode: %v, want Forbidden", err)
		}
	}
	if err := asInjector.List(ctx, &corev1.ConfigMapList{}, client.InNamespace(releaseNS)); !apierrors.IsForbidden(err) {
		t.Errorf("listing ConfigMaps: %v, want Forbidden (the configuration is mounted)", err)
	}

	// Nothing the injector did was refused.
	if err := inj.Stop(15 * time.Second); err != nil {
		t.Errorf("the injector did not exit cleanly on SIGTERM: %v", err)
	}
	logText, err := os.ReadFile(filepath.Join(work, "injector.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range forbiddenLine.FindAll(logText, 5) {
		t.Errorf("the injector was refused something: %s", l)
	}
	t.Logf("%v: passed in %v", f, time.Since(start).Round(time.Millisecond))
}

// checkMetricsAccess reads /metrics as the chart sets it up. Secure (the default): over HTTPS with
// the serving certificate, and the API server decides who may read: no token gets 401, the token
// of a ServiceAccount without the metrics-reader ClusterRole 403, the token of one bound to it by
// metrics.readers the metrics. With metrics.secure=false: plain HTTP, to anyone.
func checkMetricsAccess(t *testing.T, admin client.Client, inj *framework.Injector, f features, roots *x509.CertPool, serverName string) {
	t.Helper()
	ctx := t.Context()
	const metric = "remora_injections_total"
	if f.insecureMetrics {
		code, body, err := inj.MetricsAs(ctx, "")
		if err != nil || code != http.StatusOK || !strings.Contains(body, metric) {
			t.Errorf("plain HTTP /metrics: %d %v, want 200 with %s", code, err, metric)
		}
		t.Logf("metrics.secure=false: GET %s without a token: %d", inj.MetricsURL(), code)
		return
	}
	inj.Opts.MetricsToken = "set" // https
	inj.Opts.MetricsRoots, inj.Opts.MetricsServerName = roots, serverName
	cases := []struct {
		who   string
		token string
		want  int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a ServiceAccount without the metrics-reader ClusterRole", serviceAccountToken(t, admin, releaseNS, "nosy", true), http.StatusForbidden},
		{"the ServiceAccount in metrics.readers", serviceAccountToken(t, admin, releaseNS, "scraper", true), http.StatusOK},
	}
	for _, c := range cases {
		code, body, err := inj.MetricsAs(ctx, c.token)
		if err != nil {
			t.Errorf("GET /metrics as %s: %v", c.who, err)
			continue
		}
		if code != c.want || (c.want == http.StatusOK) != strings.Contains(body, metric) {
			t.Errorf("GET /metrics as %s: %d, %d bytes; want %d, with %s only on 200", c.who, code, len(body), c.want, metric)
		}
		t.Logf("GET %s as %s: %d (%d bytes, verified for %s)", inj.MetricsURL(), c.who, code, len(body), serverName)
	}
}

// forbiddenLine matches a log line about a request the API server refused.
var forbiddenLine = regexp.MustCompile(`(?mi)^.*(forbidden|cannot (get|list|watch|create|update|patch) resource).*$`)

// createInjectedWorkload creates namespace ns, opted in to restarts, with a Deployment "app"
// whose rollout has finished, its ReplicaSet and a pod injected with an older configuration.
func createInjectedWorkload(t *testing.T, c client.Client, ns string) {
	t.Helper()
	ctx := t.Context()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Annotations: map[string]string{upgrade.AnnotationRestartOutdated: "true"},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "app"}
	podSpec := corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec},
		},
	}
	if err := c.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1}
	if err := c.Status().Update(ctx, d); err != nil {
		t.Fatal(err)
	}
	controller := func(kind string, obj client.Object) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: obj.GetName(), UID: obj.GetUID(), Controller: ptr.To(true)}}
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-1", OwnerReferences: controller("Deployment", d)},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec},
		},
	}
	if err := c.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: "app-1-a", Labels: labels, OwnerReferences: controller("ReplicaSet", rs),
			Annotations: map[string]string{inject.AnnotationStatus: `{"containers":["istio-proxy"]}`, inject.AnnotationConfigHash: "an-older-configuration"},
		},
		Spec: *podSpec.DeepCopy(),
	}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: inject.ProxyContainerName, Image: "docker.io/istio/proxyv2:1.27.0"})
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// waitOutdatedEvent waits for the upgrade controller's OutdatedSidecars Event on Deployment ns/app
// (events.k8s.io) and returns its note.
func waitOutdatedEvent(t *testing.T, c client.Client, ns string) string {
	t.Helper()
	var note string
	waitFor(t, "the OutdatedSidecars Event in "+ns, func() (bool, error) {
		events := &eventsv1.EventList{}
		if err := c.List(t.Context(), events, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.Reason == upgrade.ReasonOutdatedSidecars && e.Regarding.Kind == "Deployment" && e.Regarding.Name == "app" {
				note = e.Note
				return true, nil
			}
		}
		return false, nil
	})
	return note
}

// waitFor polls cond until it holds (failing the test after a minute).
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return cond()
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// kubeconfigClient is a client with the credentials of a kubeconfig file.
func kubeconfigClient(t *testing.T, path string, scheme *runtime.Scheme) client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// admitPodIn sends the injector's webhook an AdmissionReview for a pod in namespace ns, as the
// API server would, and returns the response's status message.
func admitPodIn(t *testing.T, inj *framework.Injector, ns string) string {
	t.Helper()
	return admit(t, inj, probePod(ns, nil))
}

// checkExcludedServices: with excludeServices.enabled the webhook resolves the Services a pod
// names from its cache of Services (list, watch: the injector is not ready without them) and
// EndpointSlices (a headless Service), and reads a Service its cache has not seen (get: a missing
// Service is reported not found, not forbidden). Without it, such a pod is refused and the rights
// are not granted.
func checkExcludedServices(t *testing.T, admin, asInjector client.Client, inj *framework.Injector, f features) {
	t.Helper()
	ctx := t.Context()
	const ns = "excluding"
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{inject.LabelNamespaceInject: "enabled"}}}); err != nil {
		t.Fatal(err)
	}
	db := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 3306}}}}
	cache := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cache"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Port: 6379}}}}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "cache-1", Labels: map[string]string{discoveryv1.LabelServiceName: "cache"}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.9"}}},
	}
	for _, o := range []client.Object{db, cache, slice} {
		if err := admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	named := func(services string) map[string]string {
		return map[string]string{inject.AnnotationExcludeOutboundServices: services}
	}
	if !f.excludeServices {
		resp := admitPod(t, inj, ns, named("db"))
		if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, "runs without --exclude-services") {
			t.Errorf("a pod naming a Service without excludeServices.enabled: %+v, want it refused, saying so", resp.Result)
		}
		if err := asInjector.List(ctx, &corev1.ServiceList{}); !apierrors.IsForbidden(err) {
			t.Errorf("listing Services without excludeServices.enabled: %v, want Forbidden", err)
		}
		if err := asInjector.List(ctx, &discoveryv1.EndpointSliceList{}); !apierrors.IsForbidden(err) {
			t.Errorf("listing EndpointSlices without excludeServices.enabled: %v, want Forbidden", err)
		}
		return
	}
	// services list, watch and endpointslices list, watch: resolved from the cache, which follows
	// the Services created after the injector started.
	want := db.Spec.ClusterIP + "/32,10.244.0.9/32"
	waitFor(t, "the webhook to resolve db and cache", func() (bool, error) {
		resp := admitPod(t, inj, ns, named("db,cache"))
		return resp.Allowed && strings.Contains(string(resp.Patch), want), nil
	})
	// services get: a Service the cache does not have is read from the API server.
	resp := admitPod(t, inj, ns, named("nosuch"))
	if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, "Service nosuch."+ns+" does not exist") {
		t.Errorf("a pod naming a missing Service: %+v, want it refused as not existing", resp.Result)
	}
}

// admitPod sends the injector's webhook an AdmissionReview for a pod with the annotations in
// namespace ns, as the API server would, and returns the response.
func admitPod(t *testing.T, inj *framework.Injector, ns string, annotations map[string]string) *admissionv1.AdmissionResponse {
	t.Helper()
	return admitResponse(t, inj, probePod(ns, annotations))
}

// probePod is a one-container pod "probe" in namespace ns with the annotations.
func probePod(ns string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe", Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}
}

// checkWorkloadEvents makes the webhook refuse a pod of ReplicaSet shop/app-1 (of Deployment
// app) and one of a Job of CronJob shop/report, and waits for the InvalidSidecarAnnotation Event
// on the Deployment and on the CronJob: the injector reads the ReplicaSet and the Job (get) to find
// them, and writes the Events (events.k8s.io create). Without the reads, the Events would regard
// the ReplicaSet and the Job.
func checkWorkloadEvents(t *testing.T, admin client.Client, inj *framework.Injector) {
	t.Helper()
	ctx := t.Context()
	rs := &appsv1.ReplicaSet{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: shopNS, Name: "app-1"}, rs); err != nil {
		t.Fatal(err)
	}
	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: shopNS, Name: "report"},
		Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "report", Image: "registry.example/report:1"}}},
		}}}},
	}
	if err := admin.Create(ctx, cj); err != nil {
		t.Fatal(err)
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: shopNS, Name: "report-29000000", OwnerReferences: []metav1.OwnerReference{
			{APIVersion: "batch/v1", Kind: "CronJob", Name: cj.Name, UID: cj.UID, Controller: ptr.To(true)},
		}},
		Spec: cj.Spec.JobTemplate.Spec,
	}
	if err := admin.Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	for _, owner := range []metav1.OwnerReference{
		{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)},
		{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr.To(true)},
	} {
		// Asks for a sidecar in a namespace without injection labels, with an invalid annotation.
		msg := admit(t, inj, &corev1.Pod{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: shopNS, GenerateName: owner.Name + "-", OwnerReferences: []metav1.OwnerReference{owner},
				Labels: map[string]string{inject.LabelInject: "true"}, Annotations: map[string]string{inject.AnnotationProxyCPU: "lots"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
		})
		if !strings.Contains(msg, inject.AnnotationProxyCPU) {
			t.Fatalf("admission of a pod of %s %s: %q, want it refused for %s", owner.Kind, owner.Name, msg, inject.AnnotationProxyCPU)
		}
	}
	for _, want := range []struct{ kind, name string }{{"Deployment", "app"}, {"CronJob", "report"}} {
		waitFor(t, "the "+webhook.EventInvalidAnnotation+" Event on "+want.kind+" "+want.name, func() (bool, error) {
			events := &eventsv1.EventList{}
			if err := admin.List(ctx, events, client.InNamespace(shopNS)); err != nil {
				return false, err
			}
			return slices.ContainsFunc(events.Items, func(e eventsv1.Event) bool {
				return e.Reason == webhook.EventInvalidAnnotation && e.Regarding.Kind == want.kind && e.Regarding.Name == want.name
			}), nil
		})
	}
}

// admit sends the injector's webhook an AdmissionReview for the creation of pod, as the API
// server would, and returns the response's status message.
func admit(t *testing.T, inj *framework.Injector, pod *corev1.Pod) string {
	t.Helper()
	resp := admitResponse(t, inj, pod)
	if resp.Result == nil {
		return fmt.Sprintf("allowed=%v", resp.Allowed)
	}
	return resp.Result.Message
}

// admitResponse sends the injector's webhook an AdmissionReview for the creation of pod, as the
// API server would, and returns the response.
func admitResponse(t *testing.T, inj *framework.Injector, pod *corev1.Pod) *admissionv1.AdmissionResponse {
	t.Helper()
	ns, name := pod.Namespace, pod.Name
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "rbac-probe", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns, Name: name, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		},
	}
	body, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, inj.WebhookURL("/inject"), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	// The serving certificate is not what this test is about.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // see above
	}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	out := admissionv1.AdmissionReview{}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil {
		t.Fatalf("webhook answered %s: %v", resp.Status, err)
	}
	return out.Response
}
