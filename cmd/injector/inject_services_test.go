package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// excludingManifest is a Deployment whose pods exclude Services by name.
func excludingManifest(t *testing.T, namespace, services string) string {
	t.Helper()
	ns := ""
	if namespace != "" {
		ns = "\n  namespace: " + namespace
	}
	path := filepath.Join(t.TempDir(), "app.yaml")
	doc := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders` + ns + `
spec:
  selector:
    matchLabels: {app: orders}
  template:
    metadata:
      labels: {app: orders}
      annotations:
        traffic.remora.io/excludeOutboundServices: "` + services + `"
    spec:
      containers:
      - name: orders
        image: example.com/orders:1
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestInjectOfflineRefusesExcludedServices: without --kubeconfig there is no
// cluster to resolve Services in; the pod is refused, saying what to do, and
// nothing is written.
func TestInjectOfflineRefusesExcludedServices(t *testing.T) {
	out, _, err := runRoot(t, "inject", "-f", excludingManifest(t, "shop", "mysql.db"))
	if err == nil {
		t.Fatalf("inject succeeded offline:\n%s", out)
	}
	for _, want := range []string{`traffic.remora.io/excludeOutboundServices="mysql.db" is invalid`, "only against a cluster",
		"injector inject --kubeconfig", "traffic.sidecar.istio.io/excludeOutboundIPRanges"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if out != "" {
		t.Errorf("output despite the refusal:\n%s", out)
	}
	if _, _, err := runRoot(t, "inject", "-f", excludingManifest(t, "shop", "mysql.db"), "--context", "prod"); err == nil ||
		!strings.Contains(err.Error(), "--context needs --kubeconfig") {
		t.Errorf("--context without --kubeconfig: %v", err)
	}
}

// TestInjectResolvesExcludedServices runs `injector inject --kubeconfig`
// against a real API server: ClusterIP and headless Services are resolved
// with GETs, a bare name in the manifest's namespace or, without one, the
// kubeconfig context's; an ExternalName Service and a missing one are
// refused, named.
func TestInjectResolvesExcludedServices(t *testing.T) {
	log.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	env, restCfg := startControlPlane(t)
	scheme := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, ns := range []string{"db", "shop", "team"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	mysql := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "mysql"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 3306}}}}
	cache := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cache"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Port: 6379}}}}
	teamDB := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "cache"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 6379}}}}
	external := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "warehouse"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "warehouse.example.com"}}
	endpoints := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "cache-1", Labels: map[string]string{discoveryv1.LabelServiceName: "cache"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.3.12"}}, {Addresses: []string{"10.244.1.7"}}},
	}
	for _, o := range []client.Object{mysql, cache, teamDB, external, endpoints} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := contextKubeconfig(t, env, "team")

	out, stderr, err := runRoot(t, "inject", "-f", excludingManifest(t, "shop", "mysql.db,cache"), "--kubeconfig", kubeconfig)
	if err != nil {
		t.Fatalf("inject: %v\n%s", err, stderr)
	}
	ip := mysql.Spec.ClusterIP
	for _, want := range []string{
		"- " + ip + "/32,10.244.1.7/32,10.244.3.12/32\n",
		"traffic.remora.io/excludedServiceAddresses: mysql.db=" + ip + ";cache.shop=10.244.1.7,10.244.3.12\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// No namespace in the manifest: the kubeconfig context's.
	out, stderr, err = runRoot(t, "inject", "-f", excludingManifest(t, "", "cache"), "--kubeconfig", kubeconfig)
	if err != nil {
		t.Fatalf("inject: %v\n%s", err, stderr)
	}
	if want := "excludedServiceAddresses: cache.team=" + teamDB.Spec.ClusterIP + "\n"; !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}

	for _, tc := range []struct{ services, want string }{
		{"warehouse.db", "Service warehouse.db is an ExternalName Service (warehouse.example.com)"},
		{"mysql.db,nosuch", "Service nosuch.shop does not exist"},
	} {
		out, _, err := runRoot(t, "inject", "-f", excludingManifest(t, "shop", tc.services), "--kubeconfig", kubeconfig)
		if err == nil || !strings.Contains(err.Error(), tc.want) || out != "" {
			t.Errorf("inject of %s: %v (output %d bytes), want the refusal %q", tc.services, err, len(out), tc.want)
		}
	}
}

// contextKubeconfig writes a kubeconfig of an administrator whose context's
// namespace is ns.
func contextKubeconfig(t *testing.T, env *envtest.Environment, ns string) string {
	t.Helper()
	user, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Contexts[cfg.CurrentContext].Namespace = ns
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
