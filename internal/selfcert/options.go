package selfcert

import (
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Defaults applied by Options.Default to fields left zero.
const (
	// DefaultCAValidity is how long a generated CA certificate is valid.
	DefaultCAValidity = 5 * 365 * 24 * time.Hour
	// DefaultCertValidity is how long a generated serving certificate is valid.
	DefaultCertValidity = 365 * 24 * time.Hour
	// DefaultClusterDomain is the DNS suffix of in-cluster Service names.
	DefaultClusterDomain = "cluster.local"
	// MaxCheckInterval caps the default re-check period.
	MaxCheckInterval = time.Minute
)

// Options configure a Manager. Namespace, SecretName, ServiceName and CertDir are required.
type Options struct {
	// Namespace is the injector's own namespace: it holds the Secret and the Service.
	Namespace string
	// SecretName names the Secret that holds the CA and the serving certificate.
	SecretName string
	// ServiceName is the webhook Service; the serving certificate is valid for
	// NAME, NAME.NS, NAME.NS.svc and NAME.NS.svc.<ClusterDomain>.
	ServiceName string
	// WebhookConfigName is the MutatingWebhookConfiguration whose webhooks' caBundle is kept
	// in sync with the CA bundle. Empty: no webhook configuration is patched.
	WebhookConfigName string
	// CertDir receives tls.crt and tls.key, written atomically whenever they change.
	CertDir string
	// ClusterDomain is the cluster's DNS domain (default cluster.local).
	ClusterDomain string

	// CAValidity is the lifetime of a new CA certificate (default DefaultCAValidity).
	CAValidity time.Duration
	// CARenewBefore rotates the CA once less than this remains (default CAValidity/3).
	// The previous CA stays in the bundle until it expires.
	CARenewBefore time.Duration
	// CertValidity is the lifetime of a new serving certificate (default DefaultCertValidity).
	// A serving certificate never outlives the CA that signed it.
	CertValidity time.Duration
	// RenewBefore re-issues the serving certificate once less than this remains
	// (default CertValidity/3). It must be shorter than CARenewBefore.
	RenewBefore time.Duration
	// CheckInterval is the period of the re-check loop (default min(RenewBefore/4, 1m)).
	CheckInterval time.Duration
}

// Default returns a copy of o with zero fields set to their defaults.
func (o Options) Default() Options {
	if o.ClusterDomain == "" {
		o.ClusterDomain = DefaultClusterDomain
	}
	if o.CAValidity == 0 {
		o.CAValidity = DefaultCAValidity
	}
	if o.CARenewBefore == 0 {
		o.CARenewBefore = o.CAValidity / 3
	}
	if o.CertValidity == 0 {
		o.CertValidity = DefaultCertValidity
	}
	if o.RenewBefore == 0 {
		o.RenewBefore = o.CertValidity / 3
	}
	if o.CheckInterval == 0 {
		o.CheckInterval = min(o.RenewBefore/4, MaxCheckInterval)
	}
	return o
}

// Validate reports every invalid field of already-defaulted options.
func (o Options) Validate() field.ErrorList {
	var errs field.ErrorList
	root := field.NewPath("selfcert")
	for _, f := range []struct {
		name, value string
	}{{"namespace", o.Namespace}, {"secretName", o.SecretName}, {"serviceName", o.ServiceName}} {
		if f.value == "" {
			errs = append(errs, field.Required(root.Child(f.name), ""))
		}
	}
	if o.Namespace != "" {
		for _, msg := range validation.IsDNS1123Label(o.Namespace) {
			errs = append(errs, field.Invalid(root.Child("namespace"), o.Namespace, msg))
		}
	}
	if o.ServiceName != "" {
		for _, msg := range validation.IsDNS1035Label(o.ServiceName) {
			errs = append(errs, field.Invalid(root.Child("serviceName"), o.ServiceName, msg))
		}
	}
	if o.SecretName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(o.SecretName) {
			errs = append(errs, field.Invalid(root.Child("secretName"), o.SecretName, msg))
		}
	}
	if o.CertDir == "" {
		errs = append(errs, field.Required(root.Child("certDir"), ""))
	} else if !filepath.IsAbs(o.CertDir) {
		errs = append(errs, field.Invalid(root.Child("certDir"), o.CertDir, "must be an absolute path"))
	}
	if o.CAValidity <= 0 {
		errs = append(errs, field.Invalid(root.Child("caValidity"), o.CAValidity.String(), "must be positive"))
	}
	if o.CARenewBefore <= 0 || o.CARenewBefore >= o.CAValidity {
		errs = append(errs, field.Invalid(root.Child("caRenewBefore"), o.CARenewBefore.String(), "must be positive and shorter than caValidity"))
	}
	if o.CertValidity <= 0 {
		errs = append(errs, field.Invalid(root.Child("certValidity"), o.CertValidity.String(), "must be positive"))
	}
	if o.RenewBefore <= 0 || o.RenewBefore >= o.CertValidity {
		errs = append(errs, field.Invalid(root.Child("renewBefore"), o.RenewBefore.String(), "must be positive and shorter than certValidity"))
	}
	if o.RenewBefore >= o.CARenewBefore {
		// Otherwise a serving certificate clamped to the CA's expiry would be re-issued on every check.
		errs = append(errs, field.Invalid(root.Child("renewBefore"), o.RenewBefore.String(), "must be shorter than caRenewBefore"))
	}
	if o.CheckInterval <= 0 {
		errs = append(errs, field.Invalid(root.Child("checkInterval"), o.CheckInterval.String(), "must be positive"))
	}
	return errs
}

// DNSNames returns the names the serving certificate is valid for.
func (o Options) DNSNames() []string {
	svc := o.ServiceName
	ns := o.Namespace
	return []string{
		svc,
		svc + "." + ns,
		svc + "." + ns + ".svc",
		svc + "." + ns + ".svc." + o.ClusterDomain,
	}
}
