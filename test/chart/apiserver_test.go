package chart_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/remora-mesh/remora/internal/selfcert"
	"github.com/remora-mesh/remora/internal/testenv"
)

// TestChartOnAPIServer sends the rendered chart to a real API server: every built-in object is
// accepted (server-side validation), and in self-managed mode the chart's RBAC is exactly enough
// for the certificate manager, run as the chart's ServiceAccount, to set the webhook's caBundle.
func TestChartOnAPIServer(t *testing.T) {
	assets := testenv.AssetsDir(t)
	helmBinary(t)
	log.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	cluster, err := startControlPlane(t, assets, nil)
	if err != nil {
		t.Fatal(err)
	}
	env, cfg, admin, scheme := cluster.env, cluster.cfg, cluster.admin, cluster.scheme
	ctx := t.Context()
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNS}}); err != nil {
		t.Fatal(err)
	}

	t.Run("cert-manager and HA renderings, hooks included, pass server-side validation", func(t *testing.T) {
		for _, args := range [][]string{nil, {"-f", "charts/remora/values-ha.yaml", "--set", "networkPolicy.enabled=true", "--set", "restartOutdated.enabled=true"}} {
			m := render(t, args...)
			for _, o := range append(m.objects, m.hooks...) {
				if !builtIn(o) {
					continue // cert-manager and prometheus-operator kinds: no CRDs here
				}
				if err := admin.Create(ctx, o.u.DeepCopy(), client.DryRunAll); err != nil {
					t.Errorf("%v: %s/%s refused: %v", args, o.u.GetKind(), o.u.GetName(), err)
				}
			}
		}
	})

	t.Run("self-managed mode: helm install, RBAC suffices for the certificates, helm upgrade keeps the caBundle", func(t *testing.T) {
		user, err := env.AddUser(envtest.User{Name: "helm", Groups: []string{"system:masters"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		kubeconfig, err := user.KubeConfig()
		if err != nil {
			t.Fatal(err)
		}
		kubeconfigPath := filepath.Join(t.TempDir(), "kubeconfig")
		if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
			t.Fatal(err)
		}
		helmCluster := func(args ...string) string {
			t.Helper()
			args = append(args, "--kubeconfig", kubeconfigPath, "--namespace", releaseNS)
			out, stderr, err := runHelm(t, args...)
			if err != nil {
				t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
			}
			return out
		}
		out := helmCluster("install", releaseName, "charts/remora", "--set", "certManager.enabled=false")
		if !strings.Contains(out, "NOTES:") || !strings.Contains(out, "self-managed") || !strings.Contains(out, "istio-injection=enabled") {
			t.Errorf("helm install printed no useful NOTES:\n%s", out)
		}
		m := render(t, "--set", "certManager.enabled=false")
		for _, o := range m.objects {
			if !builtIn(o) {
				t.Fatalf("self-managed rendering has %s/%s", o.u.GetKind(), o.u.GetName())
			}
		}
		deploy := one[appsv1.Deployment](t, m, "Deployment")
		flags := map[string]string{}
		for _, a := range deploy.Spec.Template.Spec.Containers[0].Args {
			if k, v, ok := strings.Cut(a, "="); ok {
				flags[k] = v
			}
		}
		sa := deploy.Spec.Template.Spec.ServiceAccountName
		asSA := rest.CopyConfig(cfg)
		asSA.Impersonate = rest.ImpersonationConfig{
			UserName: "system:serviceaccount:" + releaseNS + ":" + sa,
			Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNS, "system:authenticated"},
		}
		injector, err := client.New(asSA, client.Options{Scheme: scheme})
		if err != nil {
			t.Fatal(err)
		}
		mgr, err := selfcert.New(injector, injector, selfcert.Options{
			Namespace:         releaseNS,
			SecretName:        flags["--cert-secret-name"],
			ServiceName:       flags["--service-name"],
			WebhookConfigName: flags["--webhook-config-name"],
			CertDir:           t.TempDir(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := mgr.Reconcile(ctx); err != nil {
			t.Fatalf("the certificate manager, as the chart's ServiceAccount: %v", err)
		}
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := admin.Get(ctx, client.ObjectKey{Name: flags["--webhook-config-name"]}, mwc); err != nil {
			t.Fatal(err)
		}
		serving, err := os.ReadFile(filepath.Join(mgr.Options().CertDir, "tls.crt"))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(serving)
		if block == nil {
			t.Fatal("tls.crt holds no PEM block")
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		svc := one[corev1.Service](t, m, "Service")
		for _, w := range mwc.Webhooks {
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(w.ClientConfig.CABundle) {
				t.Errorf("webhook %s: no caBundle", w.Name)
				continue
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: svc.Name + "." + releaseNS + ".svc"}); err != nil {
				t.Errorf("webhook %s: the caBundle does not verify the serving certificate: %v", w.Name, err)
			}
		}

		// A helm upgrade changes what the chart owns and keeps the caBundle the injector set.
		helmCluster("upgrade", releaseName, "charts/remora", "--set", "certManager.enabled=false", "--set", "webhook.timeoutSeconds=7")
		upgraded := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := admin.Get(ctx, client.ObjectKeyFromObject(mwc), upgraded); err != nil {
			t.Fatal(err)
		}
		for i, w := range upgraded.Webhooks {
			if w.TimeoutSeconds == nil || *w.TimeoutSeconds != 7 {
				t.Errorf("webhook %s timeoutSeconds = %v after the upgrade, want 7", w.Name, w.TimeoutSeconds)
			}
			if !bytes.Equal(w.ClientConfig.CABundle, mwc.Webhooks[i].ClientConfig.CABundle) {
				t.Errorf("webhook %s: helm upgrade changed the caBundle", w.Name)
			}
		}

		// Least privilege: nothing beyond its own Secret and webhook configuration.
		other := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "someone-elses"}}
		if err := admin.Create(ctx, other); err != nil {
			t.Fatal(err)
		}
		patched := other.DeepCopy()
		patched.Labels = map[string]string{"touched": "yes"}
		if err := injector.Patch(ctx, patched, client.MergeFrom(other)); !apierrors.IsForbidden(err) {
			t.Errorf("patching another MutatingWebhookConfiguration: err = %v, want Forbidden", err)
		}
		foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: releaseNS, Name: "not-ours"}}
		if err := admin.Create(ctx, foreign); err != nil {
			t.Fatal(err)
		}
		if err := injector.Get(ctx, client.ObjectKeyFromObject(foreign), &corev1.Secret{}); !apierrors.IsForbidden(err) {
			t.Errorf("reading another Secret: err = %v, want Forbidden", err)
		}
		if err := injector.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "anything"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
			t.Errorf("reading a Secret in kube-system: err = %v, want Forbidden", err)
		}
		// The companion controller may patch workloads (a rolling restart),
		// never delete them.
		if err := injector.Delete(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: releaseNS, Name: deploy.Name}}); !apierrors.IsForbidden(err) {
			t.Errorf("deleting a Deployment: err = %v, want Forbidden", err)
		}
		if !bytes.Contains(mwc.Webhooks[0].ClientConfig.CABundle, []byte("BEGIN CERTIFICATE")) {
			t.Error("caBundle is not PEM")
		}
	})
}

// builtIn reports whether the API server knows the object's kind without CRDs.
func builtIn(o object) bool {
	g := o.u.GroupVersionKind().Group
	return !strings.HasSuffix(g, "cert-manager.io") && g != "monitoring.coreos.com"
}
