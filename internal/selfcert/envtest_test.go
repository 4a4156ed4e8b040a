package selfcert

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/remora-mesh/remora/internal/testenv"
)

// assetsDir returns the directory with kube-apiserver and etcd.
func assetsDir(t *testing.T) string { return testenv.AssetsDir(t) }

func startControlPlane(t *testing.T) *rest.Config {
	t.Helper()
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assetsDir(t),
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	return cfg
}

// TestEnvtestReplicas runs two Managers at once against a real API server, as two injector
// replicas would.
func TestEnvtestReplicas(t *testing.T) {
	// certwatcher logs through the global logger.
	log.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	cfg := startControlPlane(t)
	c, err := client.New(cfg, client.Options{Scheme: testScheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := log.IntoContext(t.Context(), zap.New(zap.UseDevMode(true), zap.WriteTo(testWriter{t})))

	t.Run("one Secret, same certificate, caBundle verifies it", func(t *testing.T) {
		ns, whName := setupNamespace(ctx, t, c, "remora-a")
		opts := Options{Namespace: ns, SecretName: testSecret, ServiceName: testService, WebhookConfigName: whName}
		managers := runReplicas(ctx, t, c, opts, 2)

		secrets := &corev1.SecretList{}
		if err := c.List(ctx, secrets, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		if len(secrets.Items) != 1 {
			t.Fatalf("%d Secrets in %s, want 1", len(secrets.Items), ns)
		}
		secret := &secrets.Items[0]
		for _, m := range managers {
			assertCertDir(t, m.opts.CertDir, secret)
		}
		bundle := webhookBundle(ctx, t, c, whName)
		if !bytes.Equal(bundle, secret.Data[CABundleKey]) {
			t.Error("caBundle differs from the Secret's bundle")
		}
		cert := parseCerts(secret.Data[TLSCertKey])[0]
		verifyServing(t, cert, parseCerts(bundle), time.Now(), testService+"."+ns+".svc")
	})

	t.Run("short validity rotates the certificate and the CA on every replica", func(t *testing.T) {
		ns, whName := setupNamespace(ctx, t, c, "remora-b")
		opts := Options{
			Namespace: ns, SecretName: testSecret, ServiceName: testService, WebhookConfigName: whName,
			// The CA is renewed ~15s after creation and stays trusted 25s more; the serving
			// certificate is re-issued every ~4s; replicas check every 2s.
			CAValidity: 40 * time.Second, CARenewBefore: 25 * time.Second,
			CertValidity: 12 * time.Second, RenewBefore: 8 * time.Second,
		}
		managers := runReplicas(ctx, t, c, opts, 2)
		first := getSecretIn(ctx, t, c, ns)
		firstCA := parseCerts(first.Data[CACertKey])[0]

		// certwatcher, as used by the webhook server, follows the files.
		cw, err := certwatcher.New(filepath.Join(managers[0].opts.CertDir, TLSCertKey), filepath.Join(managers[0].opts.CertDir, TLSKeyKey))
		if err != nil {
			t.Fatal(err)
		}
		cwCtx, stopCW := context.WithCancel(ctx)
		defer stopCW()
		go func() { _ = cw.Start(cwCtx) }()

		eventually(t, 45*time.Second, "both CertDirs hold the same renewed serving certificate", func() bool {
			s := getSecretIn(ctx, t, c, ns)
			if bytes.Equal(s.Data[TLSCertKey], first.Data[TLSCertKey]) {
				return false
			}
			for _, m := range managers {
				got, err := os.ReadFile(filepath.Join(m.opts.CertDir, TLSCertKey))
				if err != nil || !bytes.Equal(got, s.Data[TLSCertKey]) {
					return false
				}
			}
			return true
		})

		eventually(t, 60*time.Second, "the CA rotated and the caBundle holds the new and the old CA", func() bool {
			s := getSecretIn(ctx, t, c, ns)
			ca := parseCerts(s.Data[CACertKey])
			if len(ca) != 1 || ca[0].Equal(firstCA) {
				return false
			}
			bundle := parseCerts(webhookBundle(ctx, t, c, whName))
			return len(bundle) == 2 && bundle[0].Equal(ca[0]) && bundle[1].Equal(firstCA)
		})

		eventually(t, 30*time.Second, "every replica serves a certificate of the new CA that the caBundle verifies", func() bool {
			s := getSecretIn(ctx, t, c, ns)
			ca := parseCerts(s.Data[CACertKey])[0]
			roots := x509.NewCertPool()
			for _, b := range parseCerts(webhookBundle(ctx, t, c, whName)) {
				roots.AddCert(b)
			}
			for _, m := range managers {
				got, err := os.ReadFile(filepath.Join(m.opts.CertDir, TLSCertKey))
				if err != nil {
					return false
				}
				certs := parseCerts(got)
				if len(certs) != 1 || certs[0].CheckSignatureFrom(ca) != nil {
					return false
				}
				if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: testService + "." + ns + ".svc"}); err != nil {
					return false
				}
			}
			loaded, err := cw.GetCertificate(nil)
			if err != nil || loaded == nil || len(loaded.Certificate) == 0 {
				return false
			}
			leaf, err := x509.ParseCertificate(loaded.Certificate[0])
			return err == nil && leaf.CheckSignatureFrom(ca) == nil
		})

		secrets := &corev1.SecretList{}
		if err := c.List(ctx, secrets, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		if len(secrets.Items) != 1 {
			t.Errorf("%d Secrets in %s after rotations, want 1", len(secrets.Items), ns)
		}
	})
}

// setupNamespace creates a namespace and, first, the webhook configuration the managers patch.
func setupNamespace(ctx context.Context, t *testing.T, c client.Client, ns string) (string, string) {
	t.Helper()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	wh := webhookConfig(ns + "-injector")
	for i := range wh.Webhooks {
		wh.Webhooks[i].ClientConfig.Service.Namespace = ns
		wh.Webhooks[i].FailurePolicy = ptr.To(admissionregistrationv1.Ignore)
		// Select nothing: this API server has no webhook behind the configuration.
		wh.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"remora.io/test": "never"}}
	}
	if err := c.Create(ctx, wh); err != nil {
		t.Fatal(err)
	}
	return ns, wh.Name
}

// runReplicas starts n Managers (each with its own CertDir) and waits until all are ready.
func runReplicas(ctx context.Context, t *testing.T, c client.Client, opts Options, n int) []*Manager {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	managers := make([]*Manager, n)
	for i := range managers {
		o := opts
		o.CertDir = t.TempDir()
		m, err := New(c, c, o)
		if err != nil {
			t.Fatal(err)
		}
		managers[i] = m
	}
	for i, m := range managers {
		replicaCtx := log.IntoContext(ctx, log.FromContext(ctx).WithValues("replica", i))
		wg.Go(func() {
			if err := m.Start(replicaCtx); err != nil {
				t.Errorf("replica %d: Start: %v", i, err)
			}
		})
	}
	for i, m := range managers {
		select {
		case <-m.Ready():
		case <-time.After(60 * time.Second):
			t.Fatalf("replica %d not ready within 60s", i)
		}
	}
	return managers
}

func getSecretIn(ctx context.Context, t *testing.T, c client.Reader, ns string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: testSecret}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func webhookBundle(ctx context.Context, t *testing.T, c client.Reader, name string) []byte {
	t.Helper()
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, cfg); err != nil {
		t.Fatal(err)
	}
	for _, w := range cfg.Webhooks[1:] {
		if !bytes.Equal(w.ClientConfig.CABundle, cfg.Webhooks[0].ClientConfig.CABundle) {
			return nil // not all webhooks patched yet
		}
	}
	return cfg.Webhooks[0].ClientConfig.CABundle
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// testWriter sends the managers' logs to t.Log, so they show only for failing or -v runs.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
