package selfcert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Keys of the Secret's data.
const (
	// CACertKey holds the current CA certificate (PEM).
	CACertKey = "ca.crt"
	// CAKeyKey holds the current CA private key (PKCS#8 PEM).
	CAKeyKey = "ca.key"
	// CABundleKey holds the trust bundle (PEM): the current CA first, then every previous CA that
	// has not expired yet. It is what the webhook's caBundle is set to.
	CABundleKey = "ca-bundle.crt"
	// TLSCertKey holds the serving certificate (PEM).
	TLSCertKey = corev1.TLSCertKey
	// TLSKeyKey holds the serving certificate's private key (PKCS#8 PEM).
	TLSKeyKey = corev1.TLSPrivateKeyKey
)

// backdate is subtracted from NotBefore so that a certificate is usable at once by peers whose
// clocks are slightly behind ours.
const backdate = time.Minute

// material is the parsed content of the Secret. A nil field is missing or unparseable.
type material struct {
	caCert  *x509.Certificate
	caKey   crypto.Signer
	trust   []*x509.Certificate
	cert    *x509.Certificate
	certKey crypto.Signer
}

// parseMaterial parses the Secret's data; missing or broken entries are left nil.
func parseMaterial(data map[string][]byte) material {
	var m material
	if certs := parseCerts(data[CACertKey]); len(certs) > 0 {
		m.caCert = certs[0]
	}
	m.caKey = parseKey(data[CAKeyKey])
	m.trust = parseCerts(data[CABundleKey])
	if certs := parseCerts(data[TLSCertKey]); len(certs) > 0 {
		m.cert = certs[0]
	}
	m.certKey = parseKey(data[TLSKeyKey])
	return m
}

// plan says what a reconcile has to change in the Secret and why.
type plan struct {
	newCA     bool
	newCert   bool
	newBundle bool
	reasons   []string
}

func (p plan) empty() bool { return !p.newCA && !p.newCert && !p.newBundle }

// decide is the rotation policy: given the Secret's material at now, what must be regenerated.
// A new CA always implies a new serving certificate and a new bundle.
func decide(now time.Time, m material, o Options) plan {
	var p plan
	switch {
	case m.caCert == nil || m.caKey == nil:
		p.newCA, p.reasons = true, append(p.reasons, "CA missing")
	case !m.caCert.IsCA:
		p.newCA, p.reasons = true, append(p.reasons, "CA certificate is not a CA")
	case !publicKeyMatches(m.caCert, m.caKey):
		p.newCA, p.reasons = true, append(p.reasons, "CA key does not match the CA certificate")
	case !now.Before(m.caCert.NotAfter.Add(-o.CARenewBefore)):
		p.newCA, p.reasons = true, append(p.reasons, "CA due for renewal")
	}
	if p.newCA {
		p.newCert, p.newBundle = true, true
		return p
	}
	switch {
	case m.cert == nil || m.certKey == nil:
		p.newCert, p.reasons = true, append(p.reasons, "serving certificate missing")
	case !publicKeyMatches(m.cert, m.certKey):
		p.newCert, p.reasons = true, append(p.reasons, "serving key does not match the certificate")
	case m.cert.CheckSignatureFrom(m.caCert) != nil:
		p.newCert, p.reasons = true, append(p.reasons, "serving certificate not signed by the current CA")
	case !sameNames(m.cert.DNSNames, o.DNSNames()):
		p.newCert, p.reasons = true, append(p.reasons, "serving certificate DNS names changed")
	case !now.Before(m.cert.NotAfter.Add(-o.RenewBefore)):
		p.newCert, p.reasons = true, append(p.reasons, "serving certificate due for renewal")
	}
	if !sameCerts(m.trust, buildBundle(now, m.caCert, m.trust)) {
		p.newBundle, p.reasons = true, append(p.reasons, "CA bundle out of date")
	}
	return p
}

// apply carries out p on m and returns the Secret's new data.
func apply(now time.Time, rnd io.Reader, m material, p plan, o Options) (map[string][]byte, error) {
	if p.newCA {
		caCert, caKey, err := newCA(now, rnd, o)
		if err != nil {
			return nil, err
		}
		// The previous CA (and the bundle it came with) stays trusted until it expires, so that
		// serving certificates it signed, still served by replicas that have not reloaded yet, verify.
		old := m.trust
		if m.caCert != nil {
			old = append([]*x509.Certificate{m.caCert}, old...)
		}
		m.caCert, m.caKey, m.trust = caCert, caKey, old
	}
	if p.newCert || p.newCA {
		cert, key, err := newServingCert(now, rnd, m.caCert, m.caKey, o)
		if err != nil {
			return nil, err
		}
		m.cert, m.certKey = cert, key
	}
	m.trust = buildBundle(now, m.caCert, m.trust)
	return encodeMaterial(m)
}

// encodeMaterial renders m as Secret data.
func encodeMaterial(m material) (map[string][]byte, error) {
	caKey, err := encodeKey(m.caKey)
	if err != nil {
		return nil, fmt.Errorf("encoding the CA key: %w", err)
	}
	certKey, err := encodeKey(m.certKey)
	if err != nil {
		return nil, fmt.Errorf("encoding the serving key: %w", err)
	}
	return map[string][]byte{
		CACertKey:   encodeCerts(m.caCert),
		CAKeyKey:    caKey,
		CABundleKey: encodeCerts(m.trust...),
		TLSCertKey:  encodeCerts(m.cert),
		TLSKeyKey:   certKey,
	}, nil
}

// buildBundle returns the trust bundle: current first, then the other certificates of previous
// that have not expired at now, without duplicates.
func buildBundle(now time.Time, current *x509.Certificate, previous []*x509.Certificate) []*x509.Certificate {
	bundle := []*x509.Certificate{current}
	for _, c := range previous {
		if c == nil || !now.Before(c.NotAfter) || !c.IsCA {
			continue
		}
		if slices.ContainsFunc(bundle, c.Equal) {
			continue
		}
		bundle = append(bundle, c)
	}
	return bundle
}

func newCA(now time.Time, rnd io.Reader, o Options) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the CA key: %w", err)
	}
	serial, err := serialNumber(rnd)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   fmt.Sprintf("%s.%s CA %d", o.ServiceName, o.Namespace, now.Unix()),
			Organization: []string{"remora"},
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(o.CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rnd, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the new CA certificate: %w", err)
	}
	return cert, key, nil
}

func newServingCert(now time.Time, rnd io.Reader, ca *x509.Certificate, caKey crypto.Signer, o Options) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the serving key: %w", err)
	}
	serial, err := serialNumber(rnd)
	if err != nil {
		return nil, nil, err
	}
	names := o.DNSNames()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[2], Organization: []string{"remora"}},
		DNSNames:     names,
		NotBefore:    now.Add(-backdate),
		// Never outlive the issuer: a chain with an expired CA does not verify.
		NotAfter:    minTime(now.Add(o.CertValidity), ca.NotAfter),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rnd, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing the serving certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the new serving certificate: %w", err)
	}
	return cert, key, nil
}

func serialNumber(rnd io.Reader) (*big.Int, error) {
	n, err := rand.Int(rnd, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	return n, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// parseCerts returns every CERTIFICATE block of data that parses; others are ignored.
func parseCerts(data []byte) []*x509.Certificate {
	var certs []*x509.Certificate
	for len(data) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			certs = append(certs, c)
		}
	}
	return certs
}

// parseKey returns the first private key of data (PKCS#8, SEC 1 or PKCS#1), or nil.
func parseKey(data []byte) crypto.Signer {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s
		}
		return nil
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k
	}
	return nil
}

func encodeCerts(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// pem.Encode into a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	if key == nil {
		return nil, errors.New("no key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshalling PKCS#8: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func publicKeyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

func sameNames(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}

// bundleSupersedes reports whether current holds every certificate of desired plus at least one
// more that is still valid at now. Since a CA leaves the bundle only once it has expired, that
// means desired was computed from a stale read of the Secret, and writing it would step back.
func bundleSupersedes(now time.Time, current, desired []*x509.Certificate) bool {
	for _, d := range desired {
		if !slices.ContainsFunc(current, d.Equal) {
			return false
		}
	}
	for _, c := range current {
		if !slices.ContainsFunc(desired, c.Equal) && now.Before(c.NotAfter) {
			return true
		}
	}
	return false
}
