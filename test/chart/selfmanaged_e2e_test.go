package chart_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

// Lifetimes given to the injector in TestSelfManagedModeEndToEnd. The serving certificate is
// renewed when a third of its lifetime remains (at 20 s) and the CA likewise (at 40 s), so one run
// sees a serving certificate rotated under the same CA, then a CA rotation; the re-check period is
// a quarter of the serving certificate's renew-before, 2.5 s.
const (
	e2eCertValidity = 30 * time.Second
	e2eCAValidity   = 60 * time.Second
	// podInterval paces the pods created while the certificates rotate.
	podInterval = 200 * time.Millisecond
)

// TestSelfManagedModeEndToEnd installs the chart with certManager.enabled=false on a real
// kube-apiserver and runs the injector, built from source, as a separate process with the
// Deployment's own arguments and the chart's ServiceAccount's token (so with the chart's RBAC and
// nothing more). The API server reaches it the way it reaches a webhook in a cluster: through the
// chart's Service (clientConfig.service, port 443, /inject), resolved to an EndpointSlice
// (--enable-aggregator-routing) that points at this host, over TLS for <svc>.<ns>.svc, verified
// with the caBundle the injector patched in. While pods are created continuously, the serving
// certificate rotates, then the CA does; no pod creation may fail and every pod must be injected.
func TestSelfManagedModeEndToEnd(t *testing.T) {
	assets := testenv.AssetsDir(t)
	helmBinary(t)
	hostIP := hostAddress(t)
	log.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	start := time.Now()
	work := t.TempDir()

	cluster := startChartCluster(t, assets, work)
	admin, cfg := cluster.admin, cluster.cfg
	ctx := t.Context()

	// 1. The chart, rendered and applied as it is.
	m := render(t, append([]string{"--set", "certManager.enabled=false"}, scraperValues()...)...)
	for _, o := range m.objects {
		if !builtIn(o) {
			t.Fatalf("the self-managed rendering has %s/%s", o.u.GetKind(), o.u.GetName())
		}
	}
	cluster.applyChart(t, m)
	deploy := one[appsv1.Deployment](t, m, "Deployment")
	chartMWC := one[admissionregistrationv1.MutatingWebhookConfiguration](t, m, "MutatingWebhookConfiguration")
	svc := &corev1.Service{}
	ref := chartMWC.Webhooks[0].ClientConfig.Service
	if ref == nil {
		t.Fatalf("webhook %s has no clientConfig.service", chartMWC.Webhooks[0].Name)
	}
	for _, w := range chartMWC.Webhooks {
		if !equality.Semantic.DeepEqual(w.ClientConfig.Service, ref) || w.ClientConfig.URL != nil || len(w.ClientConfig.CABundle) != 0 {
			t.Fatalf("webhook %s: clientConfig %+v, want the Service %+v and no caBundle", w.Name, w.ClientConfig, *ref)
		}
	}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, svc); err != nil {
		t.Fatalf("the webhook's Service: %v", err)
	}
	svcPort := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == ptr.Deref(ref.Port, 443) })
	if svcPort < 0 {
		t.Fatalf("Service %s has no port %d", svc.Name, ptr.Deref(ref.Port, 443))
	}
	dnsName := svc.Name + "." + svc.Namespace + ".svc" // the API server's TLS ServerName

	// 2. The injector's command line: the Deployment's arguments, with its ports, paths and
	// downward-API variable replaced for a process on this host.
	args, opts, configMapName := injectorArgs(t, deploy, work)
	cluster.mountConfigMap(t, configMapName, opts.ConfigDir)
	secretName, configName := flagValue(t, args, "cert-secret-name"), flagValue(t, args, "webhook-config-name")
	if configName != chartMWC.Name || flagValue(t, args, "service-name") != svc.Name {
		t.Fatalf("the Deployment's --webhook-config-name/--service-name do not name the chart's objects: %v", args)
	}

	// The Service's endpoint is this host: what the EndpointSlice controller would publish for a
	// ready injector pod, with the port the injector listens on.
	addrType := discoveryv1.AddressTypeIPv4
	if hostIP.To4() == nil {
		addrType = discoveryv1.AddressTypeIPv6
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace, Name: svc.Name + "-host",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "remora-e2e"},
		},
		AddressType: addrType,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{hostIP.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		}},
		Ports: []discoveryv1.EndpointPort{{
			Name: ptr.To(svc.Spec.Ports[svcPort].Name), Port: ptr.To(int32(opts.Port)), Protocol: ptr.To(corev1.ProtocolTCP),
		}},
	}
	if err := admin.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}

	// 3. Credentials of the chart's ServiceAccount only: a token from the TokenRequest API.
	kubeconfig := serviceAccountKubeconfig(t, admin, cfg, releaseNS, deploy.Spec.Template.Spec.ServiceAccountName, work)
	args = append(args, "--kubeconfig="+kubeconfig,
		"--self-managed-cert-validity="+e2eCertValidity.String(), "--self-managed-ca-validity="+e2eCAValidity.String(),
		"--shutdown-delay=1s")
	if err := admin.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: secretName}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("Secret %s before the injector ran: %v, want NotFound", secretName, err)
	}
	inj := cluster.startInjector(t, work, args, opts)
	t.Logf("control plane, chart and injector ready in %v; injector: %s", time.Since(start).Round(time.Millisecond), strings.Join(args, " "))

	// 4a. The Secret, created by the injector, holds a CA and a serving certificate for the Service.
	secret := &corev1.Secret{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: secretName}, secret); err != nil {
		t.Fatalf("the certificate Secret: %v", err)
	}
	if mf := secret.ManagedFields; len(mf) == 0 || !strings.HasPrefix(mf[0].Manager, "remora-injector") {
		t.Errorf("Secret %s was not written by the injector: managedFields %+v", secretName, mf)
	}
	leaf := firstCert(t, secret.Data[corev1.TLSCertKey])
	wantNames := []string{svc.Name, svc.Name + "." + svc.Namespace, dnsName, dnsName + ".cluster.local"}
	if !slices.Equal(slices.Sorted(slices.Values(leaf.DNSNames)), slices.Sorted(slices.Values(wantNames))) {
		t.Errorf("serving certificate DNS names %v, want %v", leaf.DNSNames, wantNames)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got > e2eCertValidity+2*time.Minute {
		t.Errorf("serving certificate valid for %v: --self-managed-cert-validity=%v not applied", got, e2eCertValidity)
	}

	// 4b. The caBundle of every webhook of the chart's configuration is the Secret's bundle and
	// verifies what the injector serves, for the name the API server asks for.
	certDir := opts.CertDir
	assertBundle(ctx, t, admin, configName, secret, 1)
	served := waitServed(t, inj, hostIP, dnsName, readBundle(ctx, t, admin, configName), readCertFile(t, certDir).SerialNumber)
	t.Logf("serving certificate %s (CA %q) served and verified for %s", served, leaf.Issuer.CommonName, dnsName)

	// 4c. A pod in an istio-injection=enabled namespace, created through the API server, is injected:
	// the API server called the injector through the Service, over TLS.
	ns := "selfmanaged-app"
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"istio-injection": "enabled"}}}); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}); err != nil {
		t.Fatal(err)
	}
	// The API server may not have seen the caBundle yet: retry a dry run for a while.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		err := admin.Create(ctx, framework.ProbePod(ns), client.DryRunAll)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API server does not reach the injector through Service %s/%s: %v", svc.Namespace, svc.Name, err)
		}
	}
	first := framework.ProbePod(ns)
	if err := admin.Create(ctx, first); err != nil {
		t.Fatalf("creating a pod: %v", err)
	}
	if !testenv.HasProxy(first) {
		t.Fatalf("pod %s/%s was not injected: init containers %v, containers %v", ns, first.Name, first.Spec.InitContainers, first.Spec.Containers)
	}
	if err := admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: releaseNS, Name: "default"}}); err != nil {
		t.Fatal(err)
	}
	plain := framework.ProbePod(releaseNS) // labelled nowhere, and the chart's selectors exclude the release namespace
	if err := admin.Create(ctx, plain); err != nil || testenv.HasProxy(plain) {
		t.Errorf("pod in %s: err %v, injected %v; want created and not injected", releaseNS, err, testenv.HasProxy(plain))
	}

	// 4d. Rotation under load: pods keep being created while the serving certificate rotates (same
	// CA), then the CA rotates. Not one creation may fail.
	loadCtx, stopLoad := context.WithCancel(ctx)
	results := make(chan podResult, 1024)
	var loadDone sync.WaitGroup
	loadDone.Add(1)
	go func() {
		defer loadDone.Done()
		createPodsUntil(loadCtx, admin, ns, results)
	}()
	var all []podResult
	var collectedN atomic.Int64 // results collected so far
	var collected sync.WaitGroup
	collected.Add(1)
	go func() {
		defer collected.Done()
		for r := range results {
			all = append(all, r)
			collectedN.Add(1)
		}
	}()
	t.Cleanup(func() { stopLoad(); loadDone.Wait() })

	rotations := watchRotations(ctx, t, admin, inj, hostIP, dnsName, certDir, secretName, configName, leaf)
	// Pods after the last rotation, on fresh connections: 20 more creations.
	after := collectedN.Load() + 20
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return collectedN.Load() >= after, nil
	}); err != nil {
		t.Fatalf("20 pod creations after the last rotation: %d of them in a minute: %v", 20-(after-collectedN.Load()), err)
	}
	stopLoad()
	loadDone.Wait()
	close(results)
	collected.Wait()

	var failures []string
	var latencies []time.Duration
	for _, r := range all {
		switch {
		case r.err != nil:
			failures = append(failures, fmt.Sprintf("%s: %v", r.at.Format("15:04:05.000"), r.err))
		case !r.injected:
			failures = append(failures, fmt.Sprintf("%s: pod %s created without istio-proxy", r.at.Format("15:04:05.000"), r.name))
		default:
			latencies = append(latencies, r.took)
		}
	}
	if len(all) < 50 {
		t.Errorf("only %d pods created during the rotations", len(all))
	}
	for _, f := range failures {
		t.Error(f)
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	quantile := func(q float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(q*float64(len(latencies)-1))].Round(100 * time.Microsecond)
	}
	for _, r := range rotations {
		t.Logf("rotation at +%v: serving certificate %s -> %s, %s; served %v after the file changed",
			r.at.Sub(start).Round(time.Millisecond), r.from, r.to, r.kind, r.servedAfter.Round(time.Millisecond))
	}
	t.Logf("%d pods created through the API server during the rotations, %d failed or not injected; creation p50 %v, p99 %v, max %v",
		len(all), len(failures), quantile(0.5), quantile(0.99), quantile(1))

	// The injector counted every admission it injected: /metrics over HTTPS, with the serving
	// certificate, read with the token of the ServiceAccount bound to the metrics-reader ClusterRole.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(readBundle(ctx, t, admin, configName))
	inj.Opts.MetricsToken = serviceAccountToken(t, admin, releaseNS, "scraper", true)
	inj.Opts.MetricsRoots, inj.Opts.MetricsServerName = roots, dnsName
	text, err := inj.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	samples, err := framework.ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	if injected := framework.Sum(samples, "remora_injections_total", map[string]string{"result": "injected"}); injected < float64(len(latencies)+1) {
		t.Errorf("remora_injections_total{result=injected} = %v, want at least the %d pods injected", injected, len(latencies)+1)
	}
	// certwatcher re-reads on each of the two renames (key, then certificate); in between, key and
	// certificate do not match, it logs an error and keeps the previous certificate.
	logText, _ := os.ReadFile(inj.LogPath)
	t.Logf("certwatcher: %d certificate reloads, %d transient re-read errors",
		bytes.Count(logText, []byte("Updated current TLS certificate")), bytes.Count(logText, []byte("error re-reading certificate")))

	// Stop: SIGTERM, a clean exit.
	if err := inj.Stop(15 * time.Second); err != nil {
		t.Errorf("the injector did not exit cleanly on SIGTERM: %v", err)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// injectorArgs returns the arguments of the Deployment's injector container for a process on this
// host: --port and the bind addresses on free ports, --cert-dir an empty directory (where the
// caller writes cert-manager's certificate in cert-manager mode), --config-dir a directory for the
// ConfigMap mounted there (whose name is returned), and $(VAR) references to the downward API
// expanded. Every other argument is kept as the chart renders it.
func injectorArgs(t *testing.T, deploy *appsv1.Deployment, work string) ([]string, framework.InjectorOptions, string) {
	t.Helper()
	spec := deploy.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("the Deployment has %d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("the injector's args %v do not start with serve", c.Args)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env[e.Name] = releaseNS
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = deploy.Name + "-e2e"
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		}
	}
	mounts := map[string]string{} // mount path -> volume name
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm.Name
	}
	volume := func(path string) corev1.Volume {
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == mounts[path] })
		if i < 0 {
			t.Fatalf("no volume is mounted at %s", path)
		}
		return spec.Volumes[i]
	}
	opts := framework.InjectorOptions{CertDir: filepath.Join(work, "certs"), ConfigDir: filepath.Join(work, "config"), Namespace: releaseNS}
	for _, p := range []*int{&opts.Port, &opts.MetricsPort, &opts.ProbePort} {
		port, err := framework.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		*p = port
	}
	if err := os.Mkdir(opts.CertDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var configMap string
	args := []string{"serve"}
	seen := map[string]bool{}
	for _, a := range c.Args[1:] {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		seen[name] = true
		switch name {
		case "port":
			i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return strconv.Itoa(int(p.ContainerPort)) == value })
			if i < 0 || c.Ports[i].Name != "webhook" {
				t.Fatalf("--port=%s is not the container port named webhook (ports %+v)", value, c.Ports)
			}
			a = "--port=" + strconv.Itoa(opts.Port)
		case "metrics-bind-address":
			a = "--metrics-bind-address=127.0.0.1:" + strconv.Itoa(opts.MetricsPort)
		case "metrics-cert-dir":
			if i := slices.Index(c.Args, "--cert-dir="+value); i < 0 {
				t.Fatalf("--metrics-cert-dir=%s is not the webhook's --cert-dir: %v", value, c.Args)
			}
			a = "--metrics-cert-dir=" + opts.CertDir
		case "health-probe-bind-address":
			a = "--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(opts.ProbePort)
		case "cert-dir":
			v := volume(value)
			if selfManaged := slices.Contains(c.Args, "--self-managed-certs"); (selfManaged && v.EmptyDir == nil) || (!selfManaged && v.Secret == nil) {
				t.Fatalf("--cert-dir=%s is not an emptyDir in self-managed mode or a Secret in cert-manager mode: %+v", value, v)
			}
			a = "--cert-dir=" + opts.CertDir
		case "config-dir":
			v := volume(value)
			if v.ConfigMap == nil {
				t.Fatalf("--config-dir=%s is not a ConfigMap: %+v", value, v)
			}
			configMap = v.ConfigMap.Name
			a = "--config-dir=" + opts.ConfigDir
		default:
			a = os.Expand(strings.ReplaceAll(strings.ReplaceAll(a, "$(", "${"), ")", "}"), func(k string) string {
				v, ok := env[k]
				if !ok {
					t.Fatalf("argument %q refers to $(%s), which the container does not define", a, k)
				}
				return v
			})
		}
		args = append(args, a)
	}
	want := []string{"port", "cert-dir", "config-dir", "namespace", "metrics-bind-address", "health-probe-bind-address"}
	if seen["self-managed-certs"] {
		want = append(want, "cert-secret-name", "webhook-config-name", "service-name")
	}
	for _, want := range want {
		if !seen[want] {
			t.Fatalf("the Deployment does not pass --%s: %v", want, c.Args)
		}
	}
	if v := flagValue(t, args, "namespace"); v != releaseNS {
		t.Fatalf("--namespace expands to %q, want %q", v, releaseNS)
	}
	return args, opts, configMap
}

// flagValue returns the value of --name=value in args.
func flagValue(t *testing.T, args []string, name string) string {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	t.Fatalf("no --%s in %v", name, args)
	return ""
}

// hostAddress puts an address of the test's own on a bridge the
// test creates (and removes at cleanup), so that the API server can be
// routed to the injector: EndpointSlices refuse loopback addresses, and the
// test must not send traffic to any address it did not create. It needs
// root and iproute2; without them the test is skipped, or fails when
// CI=true.
func hostAddress(t *testing.T) net.IP {
	t.Helper()
	fail := func(msg string) { testenv.SkipOrFail(t, "%s", msg) }
	if os.Geteuid() != 0 {
		fail("needs root to create a bridge for the webhook's endpoint address")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		fail("needs ip (iproute2) to create a bridge for the webhook's endpoint address")
	}
	// A name and a /32 from a test-only range, unique per process.
	link := fmt.Sprintf("rsm%d", os.Getpid()%100000)
	ip := net.IPv4(10, 253, byte(os.Getpid()>>8), byte(os.Getpid()))
	run := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("link", "add", link, "type", "bridge"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run("link", "del", link); err != nil {
			t.Errorf("removing the test bridge: %v", err)
		}
	})
	for _, args := range [][]string{{"addr", "add", ip.String() + "/32", "dev", link}, {"link", "set", link, "up"}} {
		if err := run(args...); err != nil {
			t.Fatal(err)
		}
	}
	return ip.To4()
}

// serviceAccountToken returns a token of ServiceAccount ns/name from the TokenRequest API,
// creating the ServiceAccount first when create is set.
func serviceAccountToken(t *testing.T, admin client.Client, ns, name string, create bool) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if create {
		if err := admin.Create(t.Context(), sa); err != nil {
			t.Fatalf("creating ServiceAccount %s/%s: %v", ns, name, err)
		}
	} else if err := admin.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, sa); err != nil {
		t.Fatalf("ServiceAccount %s/%s: %v", ns, name, err)
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	if err := admin.SubResource("token").Create(t.Context(), sa, tr); err != nil {
		t.Fatalf("requesting a token for ServiceAccount %s/%s: %v", ns, name, err)
	}
	if tr.Status.Token == "" {
		t.Fatal("the TokenRequest returned no token")
	}
	return tr.Status.Token
}

// scraperValues are the chart values that bind the metrics-reader ClusterRole to ServiceAccount
// releaseNS/scraper, whose token then reads the injector's metrics.
func scraperValues() []string {
	return []string{"--set", "metrics.readers[0].kind=ServiceAccount", "--set", "metrics.readers[0].name=scraper",
		"--set", "metrics.readers[0].namespace=" + releaseNS}
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as ServiceAccount ns/name with
// a token from the TokenRequest API, and returns its path.
func serviceAccountKubeconfig(t *testing.T, admin client.Client, cfg *rest.Config, ns, name, dir string) string {
	t.Helper()
	token := serviceAccountToken(t, admin, ns, name, false)
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["sa"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: name, Namespace: ns}
	kc.CurrentContext = "sa"
	path := filepath.Join(dir, "serviceaccount.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseCerts returns the certificates of a PEM bundle.
func parseCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	certs, err := framework.ParseCerts(data)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func firstCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	leaf, err := framework.LeafOf(data)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// readCertFile returns the certificate in certDir/tls.crt.
func readCertFile(t *testing.T, certDir string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(certDir, corev1.TLSCertKey))
	if err != nil {
		t.Fatal(err)
	}
	return firstCert(t, b)
}

// readBundle returns the caBundle of the first webhook of the configuration.
func readBundle(ctx context.Context, t *testing.T, c client.Client, configName string) []byte {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKey{Name: configName}, mwc); err != nil {
		t.Fatal(err)
	}
	return mwc.Webhooks[0].ClientConfig.CABundle
}

// assertBundle checks that every webhook's caBundle is the Secret's ca-bundle.crt, holds
// wantCAs CAs with the Secret's current CA first, and verifies the Secret's serving certificate.
func assertBundle(ctx context.Context, t *testing.T, c client.Client, configName string, secret *corev1.Secret, wantCAs int) {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKey{Name: configName}, mwc); err != nil {
		t.Fatal(err)
	}
	bundle := secret.Data["ca-bundle.crt"]
	cas := parseCerts(t, bundle)
	if len(cas) != wantCAs {
		t.Errorf("the Secret's ca-bundle.crt holds %d CAs, want %d", len(cas), wantCAs)
	}
	if len(cas) > 0 && !cas[0].Equal(firstCert(t, secret.Data["ca.crt"])) {
		t.Error("the bundle does not start with the Secret's current CA")
	}
	leaf := firstCert(t, secret.Data[corev1.TLSCertKey])
	for _, w := range mwc.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
			t.Errorf("webhook %s: caBundle (%d bytes) is not the Secret's bundle (%d bytes)", w.Name, len(w.ClientConfig.CABundle), len(bundle))
			continue
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(w.ClientConfig.CABundle)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: leaf.DNSNames[2]}); err != nil {
			t.Errorf("webhook %s: the caBundle does not verify the serving certificate: %v", w.Name, err)
		}
	}
}

// waitServed waits until the injector presents the certificate with the serial want, verified
// against bundle for dnsName, and returns its serial.
func waitServed(t *testing.T, inj *framework.Injector, host net.IP, dnsName string, bundle []byte, want fmt.Stringer) string {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("the caBundle holds no certificate")
	}
	var got string
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		got, err = framework.ServedSerial(net.JoinHostPort(host.String(), strconv.Itoa(inj.Opts.Port)), dnsName, roots)
		if err == nil && got == want.String() {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the injector does not serve certificate %s verified by the caBundle for %s: got %q, %v", want, dnsName, got, err)
	return ""
}

// podResult is the outcome of one pod creation.
type podResult struct {
	at       time.Time
	took     time.Duration
	name     string
	err      error
	injected bool
}

// createPodsUntil creates a pod every podInterval (one at a time) until ctx ends.
func createPodsUntil(ctx context.Context, c client.Client, ns string, out chan<- podResult) {
	tick := time.NewTicker(podInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pod := framework.ProbePod(ns)
		reqCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		began := time.Now()
		err := c.Create(reqCtx, pod)
		cancel()
		out <- podResult{at: began, took: time.Since(began), name: pod.Name, err: err, injected: err == nil && testenv.HasProxy(pod)}
	}
}

// rotation is a change of the serving certificate in the cert directory.
type rotation struct {
	at          time.Time
	from, to    string
	kind        string
	servedAfter time.Duration
}

// watchRotations polls the cert directory until it has seen the serving certificate re-issued by
// the same CA and then by a new CA. At each change it checks that the Secret holds that
// certificate, that the caBundle of every webhook is the Secret's bundle (after a CA rotation: the
// new CA and the previous one) and verifies it, and that the injector serves it.
func watchRotations(ctx context.Context, t *testing.T, c client.Client, inj *framework.Injector, host net.IP, dnsName, certDir, secretName, configName string,
	initial *x509.Certificate) []rotation {
	t.Helper()
	var out []rotation
	current := initial
	sameCA, newCA := false, false
	deadline := time.Now().Add(e2eCAValidity + 20*time.Second)
	for !sameCA || !newCA {
		if time.Now().After(deadline) {
			t.Fatalf("rotations not seen within %v (same CA: %v, new CA: %v); rotations so far: %+v", e2eCAValidity+20*time.Second, sameCA, newCA, out)
		}
		if exited, err := inj.Exited(); exited {
			t.Fatalf("the injector exited: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		b, err := os.ReadFile(filepath.Join(certDir, corev1.TLSCertKey))
		if err != nil {
			t.Fatal(err)
		}
		next := firstCert(t, b)
		if next.Equal(current) {
			continue
		}
		changed := time.Now()
		r := rotation{at: changed, from: current.SerialNumber.String(), to: next.SerialNumber.String()}
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: secretName}, secret); err != nil {
			t.Fatal(err)
		}
		if s := firstCert(t, secret.Data[corev1.TLSCertKey]); !s.Equal(next) {
			t.Errorf("the cert directory has serial %s, the Secret %s", next.SerialNumber, s.SerialNumber)
		}
		wantCAs := 1
		if bytes.Equal(next.RawIssuer, current.RawIssuer) {
			r.kind, sameCA = "same CA", true
		} else {
			r.kind, newCA, wantCAs = "new CA ("+next.Issuer.CommonName+"; bundle keeps "+current.Issuer.CommonName+")", true, 2
			if !sameCA {
				t.Errorf("the CA rotated before a serving certificate was renewed under the first CA")
			}
		}
		if next.NotAfter.Sub(next.NotBefore) > e2eCertValidity+2*time.Minute {
			t.Errorf("new serving certificate valid %v", next.NotAfter.Sub(next.NotBefore))
		}
		assertBundle(ctx, t, c, configName, secret, wantCAs)
		waitServed(t, inj, host, dnsName, readBundle(ctx, t, c, configName), next.SerialNumber)
		r.servedAfter = time.Since(changed)
		out = append(out, r)
		current = next
	}
	return out
}
