package install_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
	"github.com/remora-mesh/remora/test/e2e/node"
)

// figures are the journey's measurements, logged together at the end.
var figures []string

func record(t *testing.T, format string, args ...any) {
	t.Helper()
	s := fmt.Sprintf(format, args...)
	figures = append(figures, s)
	t.Log(s)
}

// TestInstallJourney is the user's install, step by step; a step that fails stops the journey
// (the later steps need its state).
func TestInstallJourney(t *testing.T) {
	cluster(t)
	start := time.Now()
	t.Cleanup(func() {
		t.Logf("journey figures (%s in all):\n  %s", time.Since(start).Round(time.Second), strings.Join(figures, "\n  "))
	})
	steps := []struct {
		name string
		run  func(*testing.T)
	}{
		{"1-install-with-cert-manager", func(t *testing.T) { stepInstall(t, true, "first") }},
		{"2-label-and-apply-examples", func(t *testing.T) { stepApps(t, "shop") }},
		{"3-upgrade-restarts-opted-in", stepUpgrade},
		{"4-leader-failover", stepFailover},
		{"5-certificate-renewal", stepRenewal},
		{"7-uninstall", func(t *testing.T) { stepUninstall(t, true, "shop") }},
		{"6-self-managed", func(t *testing.T) {
			stepInstall(t, false, "first-sm")
			stepApps(t, "shop-sm")
			stepUninstall(t, false, "shop-sm")
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			t.Fatalf("step %s failed; the later steps depend on it", s.name)
		}
	}
}

// stepInstall is step 1: helm install, then the first injected pod in firstNS (labelled before
// the install), the certificate and caBundle, two Ready replicas and the PDB.
func stepInstall(t *testing.T, certManager bool, firstNS string) {
	c := cluster(t)
	ctx := t.Context()
	mode := "cert-manager"
	args := []string{"install", releaseName, chartPath, "-n", releaseNS, "--create-namespace", "-f", suite.values}
	if !certManager {
		mode = "self-managed"
		args = append(args, "--set", "certManager.enabled=false")
	}
	must(t, c.CreateNamespace(ctx, firstNS, map[string]string{"istio-injection": "enabled"}))

	t0 := time.Now()
	if _, err := helm(ctx, args...); err != nil {
		t.Fatal(err)
	}
	helmTook := time.Since(t0)

	// The first injected pod: until a replica is Ready behind the Service with a caBundle that
	// verifies it, the API server cannot call the webhook and refuses the pod (failurePolicy
	// Fail). Try every 250 ms; the first pod accepted must carry the sidecar.
	var pod *corev1.Pod
	attempts, lastErr := 0, ""
	must(t, waitFor(ctx, 4*time.Minute, 250*time.Millisecond, "the first pod admitted", func(ctx context.Context) (bool, string, error) {
		attempts++
		p := appPod(firstNS, "first-pod")
		if err := c.Client.Create(ctx, p); err != nil {
			lastErr = err.Error()
			return false, lastErr, nil
		}
		pod = p
		return true, "", nil
	}))
	admitted := time.Since(t0)
	if !testenv.HasProxy(pod) {
		t.Fatalf("the first pod admitted after the install was not injected: init containers %d, containers %d", len(pod.Spec.InitContainers), len(pod.Spec.Containers))
	}
	if _, err := c.WaitPodReady(ctx, firstNS, pod.Name, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(t0)
	record(t, "%s install: helm install %s; first injected pod admitted %s after it (%d attempts refused before, the last with: %s), Running and Ready %s after it",
		mode, helmTook.Round(time.Millisecond), admitted.Round(time.Millisecond), attempts-1, lastErr, ready.Round(time.Millisecond))

	// Two replicas Ready, PDB present and honoured.
	var dep appsv1.Deployment
	must(t, waitFor(ctx, 2*time.Minute, 250*time.Millisecond, "the injector Deployment 2/2 Ready", func(ctx context.Context) (bool, string, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: releaseName}, &dep); err != nil {
			return false, err.Error(), nil
		}
		return dep.Status.ReadyReplicas == 2 && dep.Status.UpdatedReplicas == 2 && dep.Status.Replicas == 2,
			fmt.Sprintf("replicas %d, ready %d", dep.Status.Replicas, dep.Status.ReadyReplicas), nil
	}))
	pods, err := injectorPods(ctx, c.Client)
	must(t, err)
	if len(pods) != 2 {
		t.Fatalf("%d injector pods, want 2", len(pods))
	}
	for _, p := range pods {
		if testenv.HasProxy(&p) {
			t.Errorf("injector pod %s was injected", p.Name)
		}
		if img := p.Spec.Containers[0].Image; img != node.InjectorImage {
			t.Errorf("injector pod %s runs %s, want the image built here, %s", p.Name, img, node.InjectorImage)
		}
	}
	var pdb policyv1.PodDisruptionBudget
	must(t, waitFor(ctx, time.Minute, 250*time.Millisecond, "the PDB counting 2 healthy injector pods", func(ctx context.Context) (bool, string, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: releaseName}, &pdb); err != nil {
			return false, err.Error(), nil
		}
		return pdb.Status.CurrentHealthy == 2 && pdb.Status.DisruptionsAllowed == 1,
			fmt.Sprintf("healthy %d, disruptions allowed %d", pdb.Status.CurrentHealthy, pdb.Status.DisruptionsAllowed), nil
	}))
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PDB minAvailable %v, want 1", pdb.Spec.MinAvailable)
	}

	// The certificate and the caBundle.
	mwc, err := webhookConfig(ctx, c.Client)
	must(t, err)
	dnsName, err := serviceDNSName(mwc)
	must(t, err)
	secret := &corev1.Secret{}
	var wantBundle []byte
	if certManager {
		from := mwc.Annotations[annotationInjectCAFrom]
		ns, name, ok := strings.Cut(from, "/")
		if !ok || ns != releaseNS {
			t.Fatalf("webhook configuration annotation %s=%q, want %s/<Certificate>", annotationInjectCAFrom, from, releaseNS)
		}
		var certs unstructured.UnstructuredList
		certs.SetGroupVersionKind(certificateGVK.GroupVersion().WithKind("CertificateList"))
		must(t, c.Client.List(ctx, &certs, client.InNamespace(releaseNS)))
		if len(certs.Items) != 2 {
			t.Errorf("%d Certificates in %s, want 2 (the chart's CA and the serving certificate)", len(certs.Items), releaseNS)
		}
		for _, cert := range certs.Items {
			if s, r := condition(&cert, "Ready"); s != "True" {
				t.Errorf("Certificate %s: Ready=%s (%s)", cert.GetName(), s, r)
			}
		}
		cert, err := certificate(ctx, c.Client, releaseNS, name)
		must(t, err)
		secretName, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
		must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: secretName}, secret))
		if !strings.HasPrefix(secret.Annotations["cert-manager.io/certificate-name"], name) {
			t.Errorf("Secret %s was not issued by cert-manager for %s: annotations %v", secretName, name, secret.Annotations)
		}
		wantBundle = secret.Data["ca.crt"]
	} else {
		var secretName string
		for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
			if v, ok := strings.CutPrefix(a, "--cert-secret-name="); ok {
				secretName = v
			}
		}
		if secretName == "" {
			t.Fatalf("the self-managed Deployment passes no --cert-secret-name: %v", dep.Spec.Template.Spec.Containers[0].Args)
		}
		must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: secretName}, secret))
		if mf := secret.ManagedFields; len(mf) == 0 || !strings.HasPrefix(mf[0].Manager, "remora-injector") {
			t.Errorf("Secret %s was not written by the injector: managedFields %+v", secretName, mf)
		}
		wantBundle = secret.Data["ca-bundle.crt"]
	}
	leaf, err := framework.LeafOf(secret.Data[corev1.TLSCertKey])
	must(t, err)
	if !slices.Contains(leaf.DNSNames, dnsName) {
		t.Errorf("serving certificate names %v, not %s", leaf.DNSNames, dnsName)
	}
	for _, w := range mwc.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 || !bytes.Equal(w.ClientConfig.CABundle, wantBundle) {
			t.Errorf("webhook %s: caBundle (%d bytes) is not the CA of Secret %s (%d bytes)", w.Name, len(w.ClientConfig.CABundle), secret.Name, len(wantBundle))
		}
	}
	must(t, waitServed(ctx, c.Client, dnsName, mwc.Webhooks[0].ClientConfig.CABundle, leaf.SerialNumber.String(), time.Minute))
	t.Logf("%s: serving certificate %s (issuer %q) verified by the caBundle and served by both replicas", mode, leaf.SerialNumber, leaf.Issuer.CommonName)
}

// stepApps is step 2 in namespace ns: labelled with kubectl, examples/ applied, every pod
// Running with the sidecar, the CronJob's Job complete, an opted-out pod left alone, a
// malformed annotation refused.
func stepApps(t *testing.T, ns string) {
	c := cluster(t)
	ctx := t.Context()
	must(t, c.CreateNamespace(ctx, ns, nil))
	if _, err := c.Kubectl(ctx, "label", "namespace", ns, "istio-injection=enabled"); err != nil {
		t.Fatal(err)
	}
	manifests, err := exampleManifests(suite.root)
	must(t, err)
	file := filepath.Join(suite.dir, "examples-"+ns+".yaml")
	must(t, os.WriteFile(file, manifests, 0o600))
	t0 := time.Now()
	if _, err := c.Kubectl(ctx, "apply", "-n", ns, "-f", file); err != nil {
		t.Fatal(err)
	}

	// The reviews Deployment: available, every pod Running with istio-init and the proxy.
	podsOf := func(ctx context.Context, sel map[string]string) ([]corev1.Pod, error) {
		var pods corev1.PodList
		err := c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(sel))
		return pods.Items, err
	}
	must(t, waitFor(ctx, 4*time.Minute, 500*time.Millisecond, "reviews-v1 Running and Ready", func(ctx context.Context) (bool, string, error) {
		pods, err := podsOf(ctx, map[string]string{"app": "reviews"})
		if err != nil || len(pods) == 0 {
			return false, fmt.Sprintf("%d pods, %v", len(pods), err), nil
		}
		for _, p := range pods {
			if p.Status.Phase != corev1.PodRunning || !testenv.PodReady(&p) {
				return false, p.Name + ": " + string(p.Status.Phase) + " " + node.DescribeStatus(&p), nil
			}
		}
		return true, "", nil
	}))
	pods, err := podsOf(ctx, map[string]string{"app": "reviews"})
	must(t, err)
	for _, p := range pods {
		px := testenv.ProxyContainer(&p)
		if px == nil || px.Image != node.ProxyImage {
			t.Errorf("pod %s: istio-proxy %+v, want the proxy %s", p.Name, px, node.ProxyImage)
		}
		if !slices.ContainsFunc(p.Spec.InitContainers, func(ct corev1.Container) bool { return ct.Name == "istio-init" }) {
			t.Errorf("pod %s has no istio-init", p.Name)
		}
	}
	t.Logf("reviews-v1 Running and Ready with the sidecar %s after kubectl apply", time.Since(t0).Round(time.Millisecond))

	// The erasure CronJob, run now as `kubectl create job --from=cronjob/...` does.
	if _, err := c.Kubectl(ctx, "create", "job", "-n", ns, "erase-now", "--from=cronjob/erase-expired-reviews"); err != nil {
		t.Fatal(err)
	}
	var job batchv1.Job
	must(t, waitFor(ctx, 3*time.Minute, 500*time.Millisecond, "Job erase-now complete", func(ctx context.Context) (bool, string, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "erase-now"}, &job); err != nil {
			return false, err.Error(), nil
		}
		for _, cond := range job.Status.Conditions {
			if cond.Type == batchv1.JobFailed && cond.Status == corev1.ConditionTrue {
				return false, "", fmt.Errorf("job failed: %s", cond.Message)
			}
			if cond.Type == batchv1.JobComplete && cond.Status == corev1.ConditionTrue {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("active %d, succeeded %d, failed %d", job.Status.Active, job.Status.Succeeded, job.Status.Failed), nil
	}))
	jobPods, err := podsOf(ctx, map[string]string{"job-name": "erase-now"})
	must(t, err)
	if len(jobPods) == 0 || !slices.ContainsFunc(jobPods, func(p corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded && testenv.HasProxy(&p) }) {
		t.Errorf("Job erase-now has no Succeeded pod with the sidecar: %d pods", len(jobPods))
	}

	// Opted out: created as sent, runs.
	opted := appPod(ns, "opted-out")
	opted.Labels = map[string]string{annotationInject: "false"}
	must(t, c.Client.Create(ctx, opted))
	if testenv.HasProxy(opted) || len(opted.Spec.InitContainers) != 0 {
		t.Errorf("opted-out pod was injected: init containers %d, containers %d", len(opted.Spec.InitContainers), len(opted.Spec.Containers))
	}
	if _, err := c.WaitPodReady(ctx, ns, opted.Name, 2*time.Minute); err != nil {
		t.Error(err)
	}

	// A malformed annotation: refused, the API server's error naming it.
	bad := appPod(ns, "malformed")
	bad.Annotations["traffic.sidecar.istio.io/includeInboundPorts"] = "80,,x"
	err = c.Client.Create(ctx, bad)
	switch {
	case err == nil:
		t.Errorf("pod with includeInboundPorts=\"80,,x\" was created (injected: %v)", testenv.HasProxy(bad))
	case !strings.Contains(err.Error(), "denied the request") || !strings.Contains(err.Error(), "traffic.sidecar.istio.io/includeInboundPorts") || !strings.Contains(err.Error(), "80,,x"):
		t.Errorf("refusal does not come from the webhook naming the annotation and its value: %v", err)
	default:
		t.Logf("malformed annotation refused: %v", err)
	}
}

// stepUpgrade is step 3: helm upgrade to a new proxy tag with restarts allowed in the namespace
// shop (restartOutdated.enabled and .namespaces) and the namespace opted in; the leader restarts reviews-v1 onto the new image; injector status reports the rest (the
// bare pod of step 1, which nothing restarts).
func stepUpgrade(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	const ns = "shop"
	newProxy := node.ImageHub + "/proxyv2:" + proxyTagV2
	if _, err := c.Kubectl(ctx, "annotate", "namespace", ns, annotationRestartOutdated+"=true"); err != nil {
		t.Fatal(err)
	}
	var before corev1.PodList
	must(t, c.Client.List(ctx, &before, client.InNamespace(ns), client.MatchingLabels{"app": "reviews"}))
	t0 := time.Now()
	// Restarts are off by default: allow them, only in shop (the chart then
	// grants the patch right there alone), and opt the namespace in.
	if _, err := helm(ctx, "upgrade", releaseName, chartPath, "-n", releaseNS, "-f", suite.values, "--set", "global.tag="+proxyTagV2,
		"--set", "restartOutdated.enabled=true", "--set", "restartOutdated.namespaces={"+ns+"}"); err != nil {
		t.Fatal(err)
	}
	var dep appsv1.Deployment
	var restartedAt time.Duration
	must(t, waitFor(ctx, 5*time.Minute, 500*time.Millisecond, "reviews-v1 restarted onto "+newProxy, func(ctx context.Context) (bool, string, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "reviews-v1"}, &dep); err != nil {
			return false, err.Error(), nil
		}
		if dep.Spec.Template.Annotations[annotationRestartedFor] == "" {
			return false, "not restarted yet", nil
		}
		if restartedAt == 0 {
			restartedAt = time.Since(t0)
		}
		var pods corev1.PodList
		if err := c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app": "reviews"}); err != nil {
			return false, err.Error(), nil
		}
		var states []string
		done := len(pods.Items) == int(*dep.Spec.Replicas)
		for _, p := range pods.Items {
			px := testenv.ProxyContainer(&p)
			img := ""
			if px != nil {
				img = px.Image
			}
			ok := img == newProxy && testenv.PodReady(&p) && p.DeletionTimestamp == nil
			done = done && ok
			states = append(states, fmt.Sprintf("%s %s ready=%v", p.Name, img, testenv.PodReady(&p)))
		}
		return done, strings.Join(states, "; "), nil
	}))
	record(t, "upgrade: helm upgrade to proxy tag %s; reviews-v1 restarted by the leader %s after it, rolled out %s after it",
		proxyTagV2, restartedAt.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	var after corev1.PodList
	must(t, c.Client.List(ctx, &after, client.InNamespace(ns), client.MatchingLabels{"app": "reviews"}))
	for _, p := range after.Items {
		if slices.ContainsFunc(before.Items, func(b corev1.Pod) bool { return b.UID == p.UID }) {
			t.Errorf("pod %s survived the restart", p.Name)
		}
	}

	// injector status, against the cluster, as a user runs it.
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "injector"), "status", "--kubeconfig", c.Kubeconfig) //nolint:gosec // G204: the injector the node built
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("injector status: %v\n%s", err, out)
	}
	t.Logf("injector status:\n%s", out)
	row := func(ns, name string) string {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == ns && f[1] == name {
				return line
			}
		}
		return ""
	}
	if r := row(ns, "reviews-v1"); !strings.Contains(r, "up to date") {
		t.Errorf("injector status row for %s/reviews-v1 %q, want up to date", ns, r)
	}
	if r := row("first", "first-pod"); !strings.Contains(r, "needs restart") || !strings.Contains(r, "image") {
		t.Errorf("injector status row for the bare pod first/first-pod %q, want needs restart (image)", r)
	}
}

// stepFailover is step 4: the leader is evicted (the PDB allows one eviction and refuses the
// second) while a pod is created every 200 ms; the other replica leads within the lease
// duration and no admission fails.
func stepFailover(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	const ns = "failover"
	must(t, c.CreateNamespace(ctx, ns, map[string]string{"istio-injection": "enabled"}))

	var lease coordinationv1.Lease
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: leaseName}, &lease))
	holder := func(l *coordinationv1.Lease) string {
		id, _, _ := strings.Cut(ptr.Deref(l.Spec.HolderIdentity, ""), "_") // controller-runtime: hostname_uuid
		return id
	}
	leader := holder(&lease)
	pods, err := injectorPods(ctx, c.Client)
	must(t, err)
	var other string
	for _, p := range pods {
		if p.Name != leader {
			other = p.Name
		}
	}
	if len(pods) != 2 || other == "" || !slices.ContainsFunc(pods, func(p corev1.Pod) bool { return p.Name == leader }) {
		t.Fatalf("leader %q among injector pods %v: want one of two", leader, podNames(pods))
	}
	leaseDuration := time.Duration(ptr.Deref(lease.Spec.LeaseDurationSeconds, 0)) * time.Second

	l := startLoad(ctx, c.Client, ns)
	loadStart := time.Now()
	must(t, l.waitAfter(ctx, loadStart, 5))

	evicted := time.Now()
	must(t, c.Clientset.PolicyV1().Evictions(releaseNS).Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: releaseNS, Name: leader}}))
	if err := c.Clientset.PolicyV1().Evictions(releaseNS).Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: releaseNS, Name: other}}); !apierrors.IsTooManyRequests(err) {
		t.Errorf("evicting the second replica right after the first: %v, want 429 from the PodDisruptionBudget", err)
	}

	var gap time.Duration
	must(t, waitFor(ctx, leaseDuration+30*time.Second, 100*time.Millisecond, "a new leader", func(ctx context.Context) (bool, string, error) {
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(&lease), &lease); err != nil {
			return false, err.Error(), nil
		}
		h := holder(&lease)
		if h != "" && h != leader {
			gap = time.Since(evicted)
			return true, "", nil
		}
		return false, "holder " + ptr.Deref(lease.Spec.HolderIdentity, ""), nil
	}))
	// The evicted leader keeps serving for its shutdown delay, then releases the Lease; the
	// surviving replica or the replacement, whichever retries first, takes it.
	newLeader := holder(&lease)
	live, err := injectorPods(ctx, c.Client)
	must(t, err)
	if !slices.ContainsFunc(live, func(p corev1.Pod) bool { return p.Name == newLeader && p.DeletionTimestamp == nil }) {
		t.Errorf("new leader %s is not a live injector replica (%v)", newLeader, podNames(live))
	}
	who := "the surviving replica"
	if newLeader != other {
		who = "the replacement replica"
	}
	if gap > leaseDuration {
		t.Errorf("the other replica led %s after the eviction, more than the lease duration %s", gap.Round(time.Millisecond), leaseDuration)
	}
	// Keep creating pods until the replacement replica is Ready and the evicted one is gone, then
	// a few more.
	var replaced time.Duration
	must(t, waitFor(ctx, 3*time.Minute, 250*time.Millisecond, "the evicted replica replaced", func(ctx context.Context) (bool, string, error) {
		pods, err := injectorPods(ctx, c.Client)
		if err != nil {
			return false, err.Error(), nil
		}
		ready := 0
		for _, p := range pods {
			if p.Name == leader {
				return false, leader + " still there", nil
			}
			if testenv.PodReady(&p) {
				ready++
			}
		}
		replaced = time.Since(evicted)
		return ready == 2, fmt.Sprintf("%d ready of %v", ready, podNames(pods)), nil
	}))
	must(t, l.waitAfter(ctx, time.Now(), 10))
	total, failures, p50, p99, maxLat := l.stop()
	for _, f := range failures {
		t.Error(f)
	}
	record(t, "failover: leader %s evicted; %s (%s) led %s later (lease duration %s); replacement Ready %s after the eviction; %d pods created every %s during it, %d failed or not injected; admission p50 %s, p99 %s, max %s",
		leader, newLeader, who, gap.Round(time.Millisecond), leaseDuration, replaced.Round(time.Millisecond), total, loadInterval, len(failures), p50, p99, maxLat)
	must(t, deleteNamespace(ctx, c.Client, ns, 2*time.Minute))
}

// stepRenewal is step 5: the serving certificate is marked for reissue as `cmctl renew` does (the
// Issuing condition, reason ManuallyTriggered); cert-manager issues a new one, the kubelet
// updates the mounted Secret, and both replicas serve it without a restart while pods keep
// being created.
func stepRenewal(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	const ns = "renewal"
	must(t, c.CreateNamespace(ctx, ns, map[string]string{"istio-injection": "enabled"}))
	mwc, err := webhookConfig(ctx, c.Client)
	must(t, err)
	dnsName, err := serviceDNSName(mwc)
	must(t, err)
	_, certName, _ := strings.Cut(mwc.Annotations[annotationInjectCAFrom], "/")
	cert, err := certificate(ctx, c.Client, releaseNS, certName)
	must(t, err)
	secretName, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
	revision, _, _ := unstructured.NestedInt64(cert.Object, "status", "revision")
	readSerial := func(ctx context.Context) (string, error) {
		var s corev1.Secret
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: secretName}, &s); err != nil {
			return "", err
		}
		leaf, err := framework.LeafOf(s.Data[corev1.TLSCertKey])
		if err != nil {
			return "", err
		}
		return leaf.SerialNumber.String(), nil
	}
	oldSerial, err := readSerial(ctx)
	must(t, err)
	podsBefore, err := injectorPods(ctx, c.Client)
	must(t, err)

	l := startLoad(ctx, c.Client, ns)
	must(t, l.waitAfter(ctx, time.Now(), 5))

	// cmctl renew: the Issuing condition, True, reason ManuallyTriggered, on the status.
	t0 := time.Now()
	conds, _, _ := unstructured.NestedSlice(cert.Object, "status", "conditions")
	conds = append(conds, map[string]any{
		"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
		"message":            "Certificate re-issuance manually triggered",
		"lastTransitionTime": metav1.Now().UTC().Format(time.RFC3339),
		"observedGeneration": cert.GetGeneration(),
	})
	must(t, unstructured.SetNestedSlice(cert.Object, conds, "status", "conditions"))
	must(t, c.Client.Status().Update(ctx, cert))

	var newSerial string
	must(t, waitFor(ctx, 2*time.Minute, 250*time.Millisecond, "a new serving certificate in Secret "+secretName, func(ctx context.Context) (bool, string, error) {
		s, err := readSerial(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		newSerial = s
		return s != oldSerial, "serial " + s, nil
	}))
	issued := time.Since(t0)
	must(t, waitFor(ctx, time.Minute, 250*time.Millisecond, "Certificate "+certName+" Ready, no longer Issuing", func(ctx context.Context) (bool, string, error) {
		u, err := certificate(ctx, c.Client, releaseNS, certName)
		if err != nil {
			return false, err.Error(), nil
		}
		ready, _ := condition(u, "Ready")
		issuing, _ := condition(u, "Issuing")
		rev, _, _ := unstructured.NestedInt64(u.Object, "status", "revision")
		return ready == "True" && issuing == "" && rev == revision+1, fmt.Sprintf("Ready=%s Issuing=%s revision %d", ready, issuing, rev), nil
	}))
	mwc, err = webhookConfig(ctx, c.Client)
	must(t, err)
	must(t, waitServed(ctx, c.Client, dnsName, mwc.Webhooks[0].ClientConfig.CABundle, newSerial, 3*time.Minute))
	served := time.Since(t0)
	must(t, l.waitAfter(ctx, time.Now(), 10))
	total, failures, p50, p99, maxLat := l.stop()
	for _, f := range failures {
		t.Error(f)
	}
	podsAfter, err := injectorPods(ctx, c.Client)
	must(t, err)
	for _, b := range podsBefore {
		i := slices.IndexFunc(podsAfter, func(a corev1.Pod) bool { return a.UID == b.UID })
		if i < 0 {
			t.Errorf("injector pod %s was replaced during the renewal", b.Name)
			continue
		}
		if r0, r1 := restarts(&b), restarts(&podsAfter[i]); r1 != r0 {
			t.Errorf("injector pod %s restarted during the renewal (%d -> %d)", b.Name, r0, r1)
		}
	}
	record(t, "renewal: Certificate %s reissued (serial %s -> %s) %s after the Issuing condition was set; both replicas served it %s after, no restart; %d pods created every %s during it, %d failed or not injected; admission p50 %s, p99 %s, max %s",
		certName, short(oldSerial), short(newSerial), issued.Round(time.Millisecond), served.Round(time.Millisecond), total, loadInterval, len(failures), p50, p99, maxLat)
	must(t, deleteNamespace(ctx, c.Client, ns, 2*time.Minute))
}

// stepUninstall is step 7: helm uninstall; the webhook configuration, RBAC, certificates and
// what the release made at run time (the chart's post-delete hook) are gone, leaving only the
// empty release namespace; a pod created in appNS afterwards is not injected; once the namespace
// is deleted nothing of ours remains.
func stepUninstall(t *testing.T, certManager bool, appNS string) {
	c := cluster(t)
	ctx := t.Context()
	// What the release made at run time, and Helm never owned, is there before: the uninstall
	// hook must delete it (so that "nothing left" below proves something).
	secrets := map[bool][]string{true: {releaseName + "-ca", releaseName + "-tls"}, false: {releaseName + "-self-managed-tls"}}[certManager]
	var lease coordinationv1.Lease
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: leaseName}, &lease))
	for _, name := range secrets {
		must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: name}, &corev1.Secret{}))
	}

	t0 := time.Now()
	out, err := helm(ctx, "uninstall", releaseName, "-n", releaseNS, "--wait", "--timeout", "4m")
	if err != nil {
		t.Fatalf("%v\nthe uninstall hook's pods:\n%s", err, hookLogs(ctx, c))
	}
	took := time.Since(t0)
	// Helm's objects, the run-time Lease and Secrets (the post-delete hook), the hook's own
	// objects: all go; only the namespace helm created (--create-namespace) stays, as helm
	// uninstall never deletes a namespace.
	var left []leftover
	must(t, waitFor(ctx, 2*time.Minute, 250*time.Millisecond, "nothing of ours left but the namespace", func(ctx context.Context) (bool, string, error) {
		var err error
		if left, err = leftovers(ctx, c); err != nil {
			return false, err.Error(), nil
		}
		var names []string
		for _, l := range left {
			if l.Resource != "namespaces" || l.Name != releaseNS {
				names = append(names, l.String())
			}
		}
		return len(names) == 0, strings.Join(names, ", "), nil
	}))
	cleaned := time.Since(t0)
	// The API server stops calling the webhook once its configuration is gone: a dry-run pod is
	// accepted and not injected within seconds, then a real one.
	var dry *corev1.Pod
	must(t, waitFor(ctx, 30*time.Second, 100*time.Millisecond, "a pod accepted after the uninstall", func(ctx context.Context) (bool, string, error) {
		dry = appPod(appNS, "after-uninstall")
		if err := c.Client.Create(ctx, dry, client.DryRunAll); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	}))
	after := appPod(appNS, "after-uninstall")
	must(t, c.Client.Create(ctx, after))
	if testenv.HasProxy(after) || testenv.HasProxy(dry) || after.Annotations["sidecar.istio.io/status"] != "" {
		t.Errorf("a pod created after the uninstall in %s (labelled istio-injection=enabled) was injected", appNS)
	}

	var names []string
	for _, l := range left {
		names = append(names, l.String())
	}
	mode := map[bool]string{true: "cert-manager", false: "self-managed"}[certManager]
	record(t, "%s uninstall: helm uninstall --wait %s (its post-delete hook deleted Lease %s and Secrets %s); everything of ours gone %s after the start; left cluster-wide: %s (empty; helm never deletes a namespace)",
		mode, took.Round(time.Millisecond), leaseName, strings.Join(secrets, ", "), cleaned.Round(time.Millisecond), strings.Join(names, ", "))
	if !strings.Contains(out, "uninstalled") {
		t.Errorf("helm uninstall printed %q", out)
	}
	must(t, deleteNamespace(ctx, c.Client, releaseNS, 2*time.Minute))
	left, err = leftovers(ctx, c)
	must(t, err)
	if len(left) != 0 {
		t.Errorf("left after deleting namespace %s too: %v", releaseNS, left)
	}
}

// hookLogs returns the status and log of every pod of the chart's uninstall hook, for a failure message.
func hookLogs(ctx context.Context, c *node.Cluster) string {
	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(releaseNS), client.MatchingLabels{"app.kubernetes.io/component": "uninstall-cleanup"}); err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		logs, err := c.Clientset.CoreV1().Pods(releaseNS).GetLogs(p.Name, &corev1.PodLogOptions{Container: "cleanup"}).DoRaw(ctx)
		if err != nil {
			logs = []byte(err.Error())
		}
		fmt.Fprintf(&b, "--- %s (%s):\n%s\n", p.Name, p.Status.Phase, logs)
	}
	return b.String()
}

func podNames(pods []corev1.Pod) []string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	return names
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, s := range p.Status.ContainerStatuses {
		n += s.RestartCount
	}
	return n
}

func short(serial string) string {
	if len(serial) > 12 {
		return serial[:6] + "..." + serial[len(serial)-4:]
	}
	return serial
}
