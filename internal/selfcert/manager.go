// Package selfcert runs the injector's self-managed certificate mode, the alternative to
// cert-manager: it keeps a CA and a webhook serving certificate in one Secret of the injector's
// namespace, rotates both before they expire, keeps the webhook configuration's caBundle in
// sync, and writes the serving certificate into a directory that controller-runtime's
// certwatcher reloads.
//
// Every replica runs a Manager; they coordinate only through the Secret's resourceVersion
// (create, or update with optimistic concurrency, and re-read on conflict), so no leader is
// needed. Keys are ECDSA P-256 and everything is done with the Go standard library's crypto.
package selfcert

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// ManagedByLabel marks the Secret as written by this package.
const ManagedByLabel = "app.kubernetes.io/managed-by"

// managedByValue is the value of ManagedByLabel on the Secret.
const managedByValue = "remora-selfcert"

// maxAttempts bounds the read-modify-write retries of one reconcile; a reconcile that runs out
// is retried by the loop.
const maxAttempts = 5

// Manager keeps the self-managed certificates. It implements manager.Runnable and
// manager.LeaderElectionRunnable (every replica runs it).
type Manager struct {
	opts   Options
	client client.Client
	reader client.Reader

	now  func() time.Time
	rand io.Reader

	readyOnce sync.Once
	ready     chan struct{}
}

var (
	_ manager.Runnable               = (*Manager)(nil)
	_ manager.LeaderElectionRunnable = (*Manager)(nil)
)

// New returns a Manager that writes through c and reads the Secret and the webhook configuration
// through reader (use the manager's GetAPIReader, so no cache or list/watch permission is
// needed; nil means c). The options are defaulted and validated.
func New(c client.Client, reader client.Reader, opts Options) (*Manager, error) {
	if c == nil {
		return nil, errors.New("selfcert: a client is required")
	}
	opts = opts.Default()
	if errs := opts.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("selfcert: invalid options: %w", errs.ToAggregate())
	}
	if reader == nil {
		reader = c
	}
	return &Manager{
		opts:   opts,
		client: c,
		reader: reader,
		now:    time.Now,
		rand:   rand.Reader,
		ready:  make(chan struct{}),
	}, nil
}

// Options returns the defaulted options the Manager runs with.
func (m *Manager) Options() Options { return m.opts }

// NeedLeaderElection returns false: every replica needs the certificate in its own CertDir.
func (m *Manager) NeedLeaderElection() bool { return false }

// Ready is closed once CertDir holds a serving certificate and key from the Secret.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Checker is a healthz checker (for /readyz) that fails until Ready is closed.
func (m *Manager) Checker(_ *http.Request) error {
	select {
	case <-m.ready:
		return nil
	default:
		return errors.New("self-managed serving certificate not written yet")
	}
}

// Bootstrap reconciles until CertDir holds a certificate, retrying with backoff, or until ctx
// ends. Call it before starting the controller-runtime manager: its webhook server reads the
// certificate when it starts, before runnables like this one are started. A caBundle that could
// not be patched yet does not hold it up; Start keeps retrying that.
func (m *Manager) Bootstrap(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("selfcert")
	backoff := 500 * time.Millisecond
	for {
		err := m.Reconcile(ctx)
		select {
		case <-m.ready:
			if err != nil {
				logger.Error(err, "Serving certificate written, but the self-managed certificates are not settled yet; retrying in the background")
			}
			return nil
		default:
		}
		logger.Error(err, "Bootstrapping the self-managed certificate failed; retrying", "in", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("bootstrapping the self-managed certificate: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, m.opts.CheckInterval)
	}
}

// Start runs the check loop until ctx ends: at once, then every CheckInterval (sooner, with
// backoff, after a failure). Failures are logged and retried; Start returns nil when ctx ends.
func (m *Manager) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("selfcert").WithValues("secret", m.opts.Namespace+"/"+m.opts.SecretName)
	ctx = log.IntoContext(ctx, logger)
	logger.Info("Starting self-managed certificates", "checkInterval", m.opts.CheckInterval,
		"webhookConfiguration", m.opts.WebhookConfigName, "certDir", m.opts.CertDir)
	backoff := time.Duration(0)
	for {
		wait := m.opts.CheckInterval
		if err := m.Reconcile(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = min(max(2*backoff, time.Second), m.opts.CheckInterval)
			wait = backoff
			logger.Error(err, "Self-managed certificate check failed; retrying", "in", wait)
		} else {
			backoff = 0
		}
		select {
		case <-ctx.Done():
			logger.Info("Stopping self-managed certificates")
			return nil
		case <-time.After(wait):
		}
	}
}

// Reconcile makes one pass: ensure the Secret holds valid material (creating or rotating it),
// patch the webhook configuration's caBundle, and write the serving certificate to CertDir.
//
// The certificate reaches CertDir only after the caBundle, so that a certificate from a new CA is
// served only once the API server can verify it; only when CertDir has no certificate yet is it
// written even though the caBundle could not be patched (the server can start; the error is
// returned and the next pass retries).
func (m *Manager) Reconcile(ctx context.Context) error {
	secret, err := m.ensureSecret(ctx)
	if err != nil {
		return err
	}
	var bundleErr error
	if m.opts.WebhookConfigName != "" {
		bundleErr = m.ensureCABundle(ctx, secret.Data[CABundleKey])
	}
	if bundleErr != nil && m.hasCertDir() {
		return bundleErr
	}
	if err := m.writeCertDir(ctx, secret.Data[TLSCertKey], secret.Data[TLSKeyKey]); err != nil {
		return errors.Join(bundleErr, err)
	}
	m.readyOnce.Do(func() { close(m.ready) })
	return bundleErr
}

// hasCertDir reports whether CertDir already holds a serving certificate and key.
func (m *Manager) hasCertDir() bool {
	for _, name := range []string{TLSCertKey, TLSKeyKey} {
		if _, err := os.Stat(filepath.Join(m.opts.CertDir, name)); err != nil {
			return false
		}
	}
	return true
}

// ensureSecret returns the Secret once it holds material that needs no change, creating or
// updating it first if needed. Concurrent managers converge: a lost create or update race is
// followed by a fresh read.
func (m *Manager) ensureSecret(ctx context.Context) (*corev1.Secret, error) {
	logger := log.FromContext(ctx)
	key := client.ObjectKey{Namespace: m.opts.Namespace, Name: m.opts.SecretName}
	for range maxAttempts {
		now := m.now()
		secret := &corev1.Secret{}
		err := m.reader.Get(ctx, key, secret)
		switch {
		case apierrors.IsNotFound(err):
			p := decide(now, material{}, m.opts)
			data, err := apply(now, m.rand, material{}, p, m.opts)
			if err != nil {
				return nil, fmt.Errorf("generating certificates for Secret %s: %w", key, err)
			}
			secret = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: key.Namespace,
					Name:      key.Name,
					Labels:    map[string]string{ManagedByLabel: managedByValue},
				},
				Type: corev1.SecretTypeTLS,
				Data: data,
			}
			err = m.client.Create(ctx, secret)
			if apierrors.IsAlreadyExists(err) {
				logger.V(1).Info("Secret created concurrently by another replica; re-reading")
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("creating Secret %s: %w", key, err)
			}
			logger.Info("Created the self-managed CA and serving certificate", "secret", key)
			return secret, nil
		case err != nil:
			return nil, fmt.Errorf("reading Secret %s: %w", key, err)
		}

		mat := parseMaterial(secret.Data)
		p := decide(now, mat, m.opts)
		if p.empty() {
			return secret, nil
		}
		data, err := apply(now, m.rand, mat, p, m.opts)
		if err != nil {
			return nil, fmt.Errorf("renewing certificates in Secret %s: %w", key, err)
		}
		updated := secret.DeepCopy()
		if updated.Data == nil {
			updated.Data = map[string][]byte{}
		}
		for k, v := range data {
			updated.Data[k] = v
		}
		if updated.Labels == nil {
			updated.Labels = map[string]string{}
		}
		updated.Labels[ManagedByLabel] = managedByValue
		// Update carries the resourceVersion we read: a concurrent writer makes it fail.
		err = m.client.Update(ctx, updated)
		if apierrors.IsConflict(err) {
			logger.V(1).Info("Secret changed concurrently by another replica; re-reading")
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("updating Secret %s: %w", key, err)
		}
		logger.Info("Rotated self-managed certificates", "secret", key, "reasons", p.reasons,
			"newCA", p.newCA, "newCert", p.newCert)
		return updated, nil
	}
	return nil, fmt.Errorf("updating Secret %s: still conflicting after %d attempts", key, maxAttempts)
}

// ensureCABundle sets the caBundle of every webhook of the configuration to bundle, unless the
// configuration already carries a newer bundle (our read of the Secret was stale).
func (m *Manager) ensureCABundle(ctx context.Context, bundle []byte) error {
	logger := log.FromContext(ctx)
	key := client.ObjectKey{Name: m.opts.WebhookConfigName}
	desired := parseCerts(bundle)
	for range maxAttempts {
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := m.reader.Get(ctx, key, cfg); err != nil {
			return fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", key.Name, err)
		}
		patched := cfg.DeepCopy()
		changed := false
		for i := range patched.Webhooks {
			current := patched.Webhooks[i].ClientConfig.CABundle
			if bytes.Equal(current, bundle) {
				continue
			}
			if bundleSupersedes(m.now(), parseCerts(current), desired) {
				logger.V(1).Info("Webhook caBundle is newer than our read of the Secret; leaving it",
					"webhook", patched.Webhooks[i].Name)
				continue
			}
			patched.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
		if !changed {
			return nil
		}
		err := m.client.Patch(ctx, patched, client.MergeFromWithOptions(cfg, client.MergeFromWithOptimisticLock{}))
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("patching the caBundle of MutatingWebhookConfiguration %s: %w", key.Name, err)
		}
		logger.Info("Patched the webhook caBundle", "mutatingWebhookConfiguration", key.Name)
		return nil
	}
	return fmt.Errorf("patching the caBundle of MutatingWebhookConfiguration %s: still conflicting after %d attempts", key.Name, maxAttempts)
}

// writeCertDir writes tls.crt and tls.key into CertDir when they differ from what is there.
func (m *Manager) writeCertDir(ctx context.Context, cert, key []byte) error {
	if len(cert) == 0 || len(key) == 0 {
		return errors.New("the Secret holds no serving certificate")
	}
	if err := os.MkdirAll(m.opts.CertDir, 0o750); err != nil {
		return fmt.Errorf("creating the certificate directory: %w", err)
	}
	certPath := filepath.Join(m.opts.CertDir, TLSCertKey)
	keyPath := filepath.Join(m.opts.CertDir, TLSKeyKey)
	if fileEquals(certPath, cert) && fileEquals(keyPath, key) {
		return nil
	}
	// Key first: certwatcher reloads on either file, and a cert whose key is not there yet would
	// not load; after the second rename both match.
	if err := writeFileAtomic(keyPath, key, 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(certPath, cert, 0o644); err != nil {
		return err
	}
	log.FromContext(ctx).Info("Wrote the serving certificate", "dir", m.opts.CertDir)
	return nil
}

func fileEquals(path string, want []byte) bool {
	got, err := os.ReadFile(path) // #nosec G304 -- path is CertDir/tls.{crt,key}, from our options.
	return err == nil && bytes.Equal(got, want)
}

// writeFileAtomic writes data to a temporary file beside path and renames it over path, so a
// reader sees either the old or the new content, never a partial one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	cleanup := func() { _ = os.Remove(tmp.Name()) }
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		cleanup()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		cleanup()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		cleanup()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		cleanup()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		cleanup()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
