package selfcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

const (
	testNS      = "remora-system"
	testSecret  = "remora-certs"
	testService = "remora"
	testWebhook = "remora-sidecar-injector"
)

func webhookConfig(name string) *admissionregistrationv1.MutatingWebhookConfiguration {
	hook := func(n string) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name: n,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service: &admissionregistrationv1.ServiceReference{Namespace: testNS, Name: testService, Path: ptr.To("/inject")},
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
		}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook("rev.namespace.sidecar-injector.remora.io"),
			hook("namespace.sidecar-injector.remora.io"),
		},
	}
}

func newTestManager(t *testing.T, c client.Client, o Options) *Manager {
	t.Helper()
	m, err := New(c, c, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func baseOptions(t *testing.T) Options {
	return Options{
		Namespace:         testNS,
		SecretName:        testSecret,
		ServiceName:       testService,
		WebhookConfigName: testWebhook,
		CertDir:           t.TempDir(),
	}
}

func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewRejectsInvalidOptions(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).Build()
	if _, err := New(c, nil, Options{Namespace: testNS}); err == nil || !strings.Contains(err.Error(), "secretName") {
		t.Errorf("New with missing fields: err = %v", err)
	}
	if _, err := New(nil, nil, baseOptions(t)); err == nil {
		t.Error("New without a client: no error")
	}
	m, err := New(c, nil, baseOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.NeedLeaderElection() {
		t.Error("NeedLeaderElection = true, want false: every replica needs its certificate")
	}
}

// TestReplicasConverge runs several managers' first reconcile at once against one (fake) API:
// exactly one Secret is written, every CertDir gets the same certificate, the caBundle is set.
func TestReplicasConverge(t *testing.T) {
	ctx := t.Context()
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(webhookConfig(testWebhook)).Build()
	const replicas = 4
	managers := make([]*Manager, replicas)
	for i := range managers {
		managers[i] = newTestManager(t, c, baseOptions(t))
		if managers[i].Checker(nil) == nil {
			t.Fatal("Checker passes before any reconcile")
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	for i, m := range managers {
		wg.Go(func() { errs[i] = m.Reconcile(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}

	secret := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: testNS, Name: testSecret}, secret); err != nil {
		t.Fatal(err)
	}
	if secret.Labels[ManagedByLabel] != managedByValue || secret.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret labels %v, type %q", secret.Labels, secret.Type)
	}
	for i, m := range managers {
		select {
		case <-m.Ready():
		default:
			t.Errorf("replica %d not ready", i)
		}
		if err := m.Checker(nil); err != nil {
			t.Errorf("replica %d Checker: %v", i, err)
		}
		assertCertDir(t, m.opts.CertDir, secret)
	}
	assertCABundle(ctx, t, c, secret.Data[CABundleKey])

	// A second pass changes nothing.
	rv := secret.ResourceVersion
	if err := managers[0].Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
		t.Fatal(err)
	}
	if secret.ResourceVersion != rv {
		t.Errorf("idempotent reconcile wrote the Secret (resourceVersion %s -> %s)", rv, secret.ResourceVersion)
	}
}

// TestRotationReachesEveryReplica advances one replica's clock past the renewal points: it
// rotates the Secret, and the other replica follows on its next pass.
func TestRotationReachesEveryReplica(t *testing.T) {
	ctx := t.Context()
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(webhookConfig(testWebhook)).Build()
	a := newTestManager(t, c, baseOptions(t))
	b := newTestManager(t, c, baseOptions(t))
	for _, m := range []*Manager{a, b} {
		if err := m.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	before := getSecret(ctx, t, c)

	steps := []struct {
		name           string
		advance        time.Duration
		wantCA         bool
		wantBundleLen  int
		wantCertChange bool
	}{
		{"serving certificate renewal", DefaultCertValidity - DefaultCertValidity/3 + time.Hour, false, 1, true},
		{"CA renewal keeps the old CA", DefaultCAValidity - DefaultCAValidity/3 + time.Hour, true, 2, true},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			now := time.Now().Add(step.advance)
			a.now = func() time.Time { return now }
			b.now = a.now
			if err := a.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			after := getSecret(ctx, t, c)
			if got := !bytes.Equal(before.Data[CACertKey], after.Data[CACertKey]); got != step.wantCA {
				t.Errorf("CA changed = %v, want %v", got, step.wantCA)
			}
			if got := len(parseCerts(after.Data[CABundleKey])); got != step.wantBundleLen {
				t.Errorf("bundle has %d certificates, want %d", got, step.wantBundleLen)
			}
			if got := !bytes.Equal(before.Data[TLSCertKey], after.Data[TLSCertKey]); got != step.wantCertChange {
				t.Errorf("serving certificate changed = %v, want %v", got, step.wantCertChange)
			}
			if err := b.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			assertCertDir(t, a.opts.CertDir, after)
			assertCertDir(t, b.opts.CertDir, after)
			assertCABundle(ctx, t, c, after.Data[CABundleKey])
			before = after
		})
	}
}

// TestMissingWebhookConfiguration: the error names the configuration, but a first certificate is
// written all the same, so the webhook server can start; once a certificate is served, a new one
// waits until the caBundle can be patched.
func TestMissingWebhookConfiguration(t *testing.T) {
	ctx := t.Context()
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).Build()
	m := newTestManager(t, c, baseOptions(t))
	err := m.Reconcile(ctx)
	if err == nil || !strings.Contains(err.Error(), "MutatingWebhookConfiguration "+testWebhook) {
		t.Fatalf("err = %v, want one naming the webhook configuration", err)
	}
	if m.Checker(nil) != nil {
		t.Error("not ready although the first certificate was written")
	}
	first := getSecret(ctx, t, c)
	assertCertDir(t, m.opts.CertDir, first)

	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := m.Bootstrap(bctx); err != nil {
		t.Errorf("Bootstrap with a certificate in CertDir: %v", err)
	}

	// Rotation while the configuration is missing: the Secret rotates, CertDir keeps the old pair.
	later := time.Now().Add(DefaultCertValidity)
	m.now = func() time.Time { return later }
	if err := m.Reconcile(ctx); err == nil {
		t.Fatal("no error without the webhook configuration")
	}
	rotated := getSecret(ctx, t, c)
	if bytes.Equal(rotated.Data[TLSCertKey], first.Data[TLSCertKey]) {
		t.Fatal("the Secret was not rotated")
	}
	assertCertDir(t, m.opts.CertDir, first)

	// Once the configuration exists, the caBundle is patched and then the new pair written.
	if err := c.Create(ctx, webhookConfig(testWebhook)); err != nil {
		t.Fatal(err)
	}
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	assertCABundle(ctx, t, c, rotated.Data[CABundleKey])
	assertCertDir(t, m.opts.CertDir, rotated)
}

func TestStartStopsWithContext(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(webhookConfig(testWebhook)).Build()
	m := newTestManager(t, c, baseOptions(t))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	select {
	case <-m.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not ready within 10s")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Start returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after cancel")
	}
}

func TestWriteFileAtomicLeavesNoTemporaries(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tls.key")
	for _, content := range []string{"one", "two"} {
		if err := writeFileAtomic(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("content = %q, %v; want %q", got, err, content)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only tls.key", len(entries))
	}
}

func getSecret(ctx context.Context, t *testing.T, c client.Reader) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: testNS, Name: testSecret}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func assertCertDir(t *testing.T, dir string, secret *corev1.Secret) {
	t.Helper()
	crt, err := os.ReadFile(filepath.Join(dir, TLSCertKey))
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(dir, TLSKeyKey))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(crt, secret.Data[TLSCertKey]) || !bytes.Equal(key, secret.Data[TLSKeyKey]) {
		t.Errorf("%s does not hold the Secret's serving certificate", dir)
	}
	if _, err := tls.X509KeyPair(crt, key); err != nil {
		t.Errorf("%s: certificate and key do not load as a pair: %v", dir, err)
	}
}

func assertCABundle(ctx context.Context, t *testing.T, c client.Reader, want []byte) {
	t.Helper()
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKey{Name: testWebhook}, cfg); err != nil {
		t.Fatal(err)
	}
	for _, w := range cfg.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, want) {
			t.Errorf("webhook %s caBundle differs from the Secret's bundle", w.Name)
		}
	}
}
