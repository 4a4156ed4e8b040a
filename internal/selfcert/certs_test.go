package selfcert

import (
	"crypto/rand"
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func testOptions() Options {
	return Options{
		Namespace:    "remora-system",
		SecretName:   "remora-certs",
		ServiceName:  "remora",
		CertDir:      "/tmp/certs",
		CAValidity:   300 * time.Hour,
		CertValidity: 30 * time.Hour,
	}.Default()
}

// fresh returns valid material issued at at.
func fresh(t *testing.T, at time.Time, o Options) material {
	t.Helper()
	p := decide(at, material{}, o)
	data, err := apply(at, rand.Reader, material{}, p, o)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return parseMaterial(data)
}

func TestOptionsDefaultAndValidate(t *testing.T) {
	d := Options{Namespace: "ns", SecretName: "s", ServiceName: "svc", CertDir: "/c"}.Default()
	if d.CARenewBefore != DefaultCAValidity/3 || d.RenewBefore != DefaultCertValidity/3 {
		t.Errorf("renewBefore defaults: CA %v, cert %v", d.CARenewBefore, d.RenewBefore)
	}
	if d.CheckInterval != time.Minute {
		t.Errorf("CheckInterval default = %v, want 1m", d.CheckInterval)
	}
	if short := (Options{CertValidity: 8 * time.Second, CAValidity: time.Hour}).Default(); short.CheckInterval != (8*time.Second/3)/4 {
		t.Errorf("CheckInterval for a short validity = %v", short.CheckInterval)
	}
	if got := d.DNSNames(); !slices.Equal(got, []string{"svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local"}) {
		t.Errorf("DNSNames = %v", got)
	}

	tests := []struct {
		name    string
		mutate  func(*Options)
		wantErr string // substring of the aggregate; empty means valid
	}{
		{"defaults", func(*Options) {}, ""},
		{"no namespace", func(o *Options) { o.Namespace = "" }, "selfcert.namespace: Required"},
		{"bad service", func(o *Options) { o.ServiceName = "Bad_Name" }, "selfcert.serviceName: Invalid"},
		{"relative certDir", func(o *Options) { o.CertDir = "certs" }, "absolute path"},
		{"renewBefore >= validity", func(o *Options) { o.RenewBefore = o.CertValidity }, "shorter than certValidity"},
		{"renewBefore >= caRenewBefore", func(o *Options) { o.CARenewBefore = o.RenewBefore }, "shorter than caRenewBefore"},
		{"caRenewBefore >= caValidity", func(o *Options) { o.CARenewBefore = o.CAValidity }, "shorter than caValidity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := d
			tc.mutate(&o)
			errs := o.Validate()
			switch {
			case tc.wantErr == "" && len(errs) > 0:
				t.Fatalf("unexpected errors: %v", errs.ToAggregate())
			case tc.wantErr != "" && (len(errs) == 0 || !strings.Contains(errs.ToAggregate().Error(), tc.wantErr)):
				t.Fatalf("errors %v, want one containing %q", errs.ToAggregate(), tc.wantErr)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	o := testOptions() // CA 300h (renew at 100h left), cert 30h (renew at 10h left)
	base := fresh(t, t0, o)
	other := fresh(t, t0, o)
	otherNames := o
	otherNames.ServiceName = "other"

	tests := []struct {
		name      string
		m         func() material
		at        time.Time
		want      plan
		wantMatch string
	}{
		{name: "empty", m: func() material { return material{} }, at: t0,
			want: plan{newCA: true, newCert: true, newBundle: true}, wantMatch: "CA missing"},
		{name: "fresh", m: func() material { return base }, at: t0.Add(time.Hour), want: plan{}},
		{name: "cert just before renewal", m: func() material { return base }, at: t0.Add(20*time.Hour - time.Second), want: plan{}},
		{name: "cert due", m: func() material { return base }, at: t0.Add(20 * time.Hour),
			want: plan{newCert: true}, wantMatch: "serving certificate due"},
		{name: "cert expired", m: func() material { return base }, at: t0.Add(31 * time.Hour),
			want: plan{newCert: true}, wantMatch: "serving certificate due"},
		{name: "CA due", m: func() material { return base }, at: t0.Add(200 * time.Hour),
			want: plan{newCA: true, newCert: true, newBundle: true}, wantMatch: "CA due"},
		{name: "CA expired", m: func() material { return base }, at: t0.Add(301 * time.Hour),
			want: plan{newCA: true, newCert: true, newBundle: true}, wantMatch: "CA due"},
		{name: "CA key mismatch", m: func() material { m := base; m.caKey = other.caKey; return m }, at: t0,
			want: plan{newCA: true, newCert: true, newBundle: true}, wantMatch: "CA key does not match"},
		{name: "CA is a leaf", m: func() material { m := base; m.caCert, m.caKey = base.cert, base.certKey; return m }, at: t0,
			want: plan{newCA: true, newCert: true, newBundle: true}, wantMatch: "not a CA"},
		{name: "cert missing", m: func() material { m := base; m.cert = nil; return m }, at: t0,
			want: plan{newCert: true}, wantMatch: "serving certificate missing"},
		{name: "cert key mismatch", m: func() material { m := base; m.certKey = other.certKey; return m }, at: t0,
			want: plan{newCert: true}, wantMatch: "serving key does not match"},
		{name: "cert from another CA", m: func() material { m := base; m.cert, m.certKey = other.cert, other.certKey; return m }, at: t0,
			want: plan{newCert: true}, wantMatch: "not signed by the current CA"},
		{name: "DNS names changed", m: func() material {
			m := base
			c, k, err := newServingCert(t0, rand.Reader, base.caCert, base.caKey, otherNames)
			if err != nil {
				t.Fatal(err)
			}
			m.cert, m.certKey = c, k
			return m
		}, at: t0,
			want: plan{newCert: true}, wantMatch: "DNS names changed"},
		{name: "bundle missing", m: func() material { m := base; m.trust = nil; return m }, at: t0,
			want: plan{newBundle: true}, wantMatch: "CA bundle out of date"},
		{name: "bundle with expired old CA", m: func() material {
			m := base
			old := fresh(t, t0.Add(-299*time.Hour), o) // expires at t0+1h
			m.trust = []*x509.Certificate{m.caCert, old.caCert}
			return m
		}, at: t0.Add(2 * time.Hour), want: plan{newBundle: true}, wantMatch: "CA bundle out of date"},
		{name: "bundle with valid old CA", m: func() material {
			m := base
			old := fresh(t, t0.Add(-299*time.Hour), o)
			m.trust = []*x509.Certificate{m.caCert, old.caCert}
			return m
		}, at: t0.Add(30 * time.Minute), want: plan{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := decide(tc.at, tc.m(), o)
			if got.newCA != tc.want.newCA || got.newCert != tc.want.newCert || got.newBundle != tc.want.newBundle {
				t.Fatalf("decide = %+v, want newCA=%v newCert=%v newBundle=%v", got, tc.want.newCA, tc.want.newCert, tc.want.newBundle)
			}
			if tc.wantMatch != "" && !slices.ContainsFunc(got.reasons, func(r string) bool { return strings.Contains(r, tc.wantMatch) }) {
				t.Errorf("reasons %q, want one containing %q", got.reasons, tc.wantMatch)
			}
		})
	}
}

func TestApplyIssuesVerifiableMaterial(t *testing.T) {
	o := testOptions()
	m := fresh(t, t0, o)
	if p := decide(t0, m, o); !p.empty() {
		t.Fatalf("fresh material needs work: %+v", p)
	}
	if m.caCert.PublicKeyAlgorithm != x509.ECDSA || m.cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("want ECDSA keys")
	}
	if !m.caCert.IsCA || !m.caCert.MaxPathLenZero {
		t.Errorf("CA constraints: IsCA=%v MaxPathLenZero=%v", m.caCert.IsCA, m.caCert.MaxPathLenZero)
	}
	if !m.cert.NotAfter.Equal(t0.Add(o.CertValidity)) {
		t.Errorf("cert NotAfter = %v, want %v", m.cert.NotAfter, t0.Add(o.CertValidity))
	}
	if m.cert.NotBefore.After(t0) {
		t.Errorf("cert NotBefore %v is after issuance", m.cert.NotBefore)
	}
	verifyServing(t, m.cert, m.trust, t0, "remora.remora-system.svc")
	verifyServing(t, m.cert, m.trust, t0, "remora.remora-system.svc.cluster.local")
}

func TestApplyCARotationKeepsPreviousCA(t *testing.T) {
	o := testOptions()
	o.CertValidity, o.RenewBefore = 90*time.Hour, 30*time.Hour
	first := fresh(t, t0, o)
	at := t0.Add(250 * time.Hour) // CA due (50h left), old CA valid until t0+300h
	p := decide(at, first, o)
	if !p.newCA {
		t.Fatalf("CA not rotated: %+v", p)
	}
	data, err := apply(at, rand.Reader, first, p, o)
	if err != nil {
		t.Fatal(err)
	}
	second := parseMaterial(data)
	if second.caCert.Equal(first.caCert) {
		t.Fatal("CA unchanged")
	}
	if len(second.trust) != 2 || !second.trust[0].Equal(second.caCert) || !second.trust[1].Equal(first.caCert) {
		t.Fatalf("bundle = %d certs, want [new CA, old CA]", len(second.trust))
	}
	// The old serving certificate (still served by replicas that have not reloaded) verifies
	// against the new bundle, and so does the new one.
	verifyServing(t, first.cert, second.trust, at.Add(-230*time.Hour), "remora.remora-system.svc")
	verifyServing(t, second.cert, second.trust, at, "remora.remora-system.svc")
	if p := decide(at, second, o); !p.empty() {
		t.Errorf("rotated material needs work: %+v", p)
	}

	// Once the old CA expires, the next decision drops it from the bundle.
	later := t0.Add(301 * time.Hour)
	p = decide(later, second, o)
	if !p.newBundle || p.newCA {
		t.Fatalf("after old CA expiry: %+v, want only a new bundle", p)
	}
	data, err = apply(later, rand.Reader, second, p, o)
	if err != nil {
		t.Fatal(err)
	}
	third := parseMaterial(data)
	if len(third.trust) != 1 || !third.trust[0].Equal(second.caCert) {
		t.Errorf("bundle after expiry has %d certs, want only the current CA", len(third.trust))
	}
	if !third.cert.Equal(second.cert) {
		t.Errorf("serving certificate changed on a bundle-only update")
	}
}

func TestServingCertNeverOutlivesCA(t *testing.T) {
	o := testOptions()
	o.CertValidity = 290 * time.Hour
	o.RenewBefore = 10 * time.Hour
	first := fresh(t, t0, o)
	at := t0.Add(150 * time.Hour) // CA has 150h left: not due (100h), cert has 140h left
	p := decide(at, first, o)
	p.newCert = true // force a re-issue
	data, err := apply(at, rand.Reader, first, p, o)
	if err != nil {
		t.Fatal(err)
	}
	m := parseMaterial(data)
	if !m.cert.NotAfter.Equal(m.caCert.NotAfter) {
		t.Errorf("cert NotAfter %v, want clamped to CA NotAfter %v", m.cert.NotAfter, m.caCert.NotAfter)
	}
	if p := decide(at.Add(time.Minute), m, o); !p.empty() {
		t.Errorf("clamped certificate is re-issued at once: %+v", p)
	}
}

func TestBundleSupersedes(t *testing.T) {
	o := testOptions()
	a := fresh(t, t0, o).caCert
	b := fresh(t, t0, o).caCert
	expired := fresh(t, t0.Add(-400*time.Hour), o).caCert
	tests := []struct {
		name             string
		current, desired []*x509.Certificate
		want             bool
	}{
		{"empty webhook", nil, []*x509.Certificate{a}, false},
		{"equal", []*x509.Certificate{a}, []*x509.Certificate{a}, false},
		{"stale read during rotation", []*x509.Certificate{b, a}, []*x509.Certificate{a}, true},
		{"rotation to apply", []*x509.Certificate{a}, []*x509.Certificate{b, a}, false},
		{"prune expired", []*x509.Certificate{a, expired}, []*x509.Certificate{a}, false},
		{"reset to an unrelated CA", []*x509.Certificate{a}, []*x509.Certificate{b}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := bundleSupersedes(t0, tc.current, tc.desired); got != tc.want {
				t.Errorf("bundleSupersedes = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseMaterialToleratesGarbage(t *testing.T) {
	m := parseMaterial(map[string][]byte{
		CACertKey:  []byte("not pem"),
		CAKeyKey:   []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
		TLSCertKey: nil,
	})
	if m.caCert != nil || m.caKey != nil || m.cert != nil || m.certKey != nil || m.trust != nil {
		t.Errorf("garbage parsed as material: %+v", m)
	}
	if p := decide(t0, m, testOptions()); !p.newCA {
		t.Errorf("garbage not replaced: %+v", p)
	}
}

func verifyServing(t *testing.T, cert *x509.Certificate, bundle []*x509.Certificate, at time.Time, name string) {
	t.Helper()
	roots := x509.NewCertPool()
	for _, c := range bundle {
		roots.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		DNSName:     name,
		Roots:       roots,
		CurrentTime: at,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Errorf("serving certificate does not verify for %s at %v: %v", name, at, err)
	}
}
