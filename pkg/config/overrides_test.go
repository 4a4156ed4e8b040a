package config

import (
	"strings"
	"testing"
)

func TestNativeSidecarsSupported(t *testing.T) {
	tests := []struct {
		version string
		want    bool
		wantErr bool
	}{
		{version: "v1.37.2", want: true},
		{version: "v1.29.0", want: true},
		{version: "v1.29.0-eks-1234", want: true},
		{version: "v1.28.15", want: false},
		{version: "v1.27.3+k3s1", want: false},
		{version: "v2.0.0", want: true},
		{version: "garbage", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			got, err := NativeSidecarsSupported(tt.version)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestOverridesAndTheHash loads configurations written in different ways
// and checks that the ones that inject the same way (the same effective
// revision, native sidecars resolved the same) hash the same, and that the
// others do not: the hash the upgrade controller compares changes only when
// what injection does changes.
func TestOverridesAndTheHash(t *testing.T) {
	type load struct {
		name   string
		values string
		o      Overrides
	}
	groups := []struct {
		name         string
		revision     string
		native       bool
		valuesNative any // what templates see as .Values.global.nativeSidecars
		loads        []load
	}{
		{name: "native", revision: "default", native: true, loads: []load{
			{name: "defaults offline", o: Overrides{}},
			{name: "defaults, auto on 1.37", o: Overrides{NativeSidecars: "auto", ServerVersion: "v1.37.2"}},
			{name: "defaults on 1.29", o: Overrides{ServerVersion: "v1.29.0"}},
			{name: "--native-sidecars true", o: Overrides{NativeSidecars: "true"}},
			{name: "--native-sidecars true on 1.28", o: Overrides{NativeSidecars: "true", ServerVersion: "v1.28.0"}},
			{name: "values true", values: "global:\n  nativeSidecars: true\n", o: Overrides{ServerVersion: "v1.28.0"}},
			{name: "values \"true\"", values: "global:\n  nativeSidecars: \"true\"\n"},
			{name: "--revision default", o: Overrides{Revision: "default"}},
			{name: "values revision default", values: "revision: default\n"},
		}},
		{name: "classic", revision: "default", native: false, loads: []load{
			{name: "defaults, auto on 1.28", o: Overrides{ServerVersion: "v1.28.15"}},
			{name: "--native-sidecars false", o: Overrides{NativeSidecars: "false"}},
			{name: "--native-sidecars false on 1.37", o: Overrides{NativeSidecars: "false", ServerVersion: "v1.37.2"}},
			{name: "values false", values: "global:\n  nativeSidecars: \"false\"\n"},
			{name: "values false, --native-sidecars auto on 1.37", values: "global:\n  nativeSidecars: \"false\"\n", o: Overrides{NativeSidecars: "auto", ServerVersion: "v1.37.2"}},
			{name: "values true, --native-sidecars false", values: "global:\n  nativeSidecars: \"true\"\n", o: Overrides{NativeSidecars: "false"}},
		}},
		{name: "canary", revision: "canary", native: true, loads: []load{
			{name: "values canary", values: "revision: canary\n"},
			{name: "--revision canary", o: Overrides{Revision: "canary"}},
			{name: "values stable, --revision canary", values: "revision: stable\n", o: Overrides{Revision: "canary"}},
			{name: "values canary, --native-sidecars true", values: "revision: canary\n", o: Overrides{NativeSidecars: "true"}},
		}},
	}
	seen := map[string]string{} // hash -> group
	for _, g := range groups {
		hash := ""
		for _, l := range g.loads {
			t.Run(g.name+"/"+l.name, func(t *testing.T) {
				cfg, err := Load(Sources{Values: []byte(l.values)}, l.o)
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Revision() != g.revision || cfg.Settings.NativeSidecars != g.native {
					t.Errorf("revision %q, native sidecars %v; want %q, %v", cfg.Revision(), cfg.Settings.NativeSidecars, g.revision, g.native)
				}
				if hash == "" {
					hash = cfg.Hash
				} else if cfg.Hash != hash {
					t.Errorf("hash %s, want %s: the same effective configuration as %s", cfg.Hash, hash, g.loads[0].name)
				}
			})
		}
		if other, ok := seen[hash]; ok {
			t.Errorf("%s and %s inject differently but share the hash %s", g.name, other, hash)
		}
		seen[hash] = g.name
	}
}

// TestOverridesWinAndTemplatesSeeThem checks that flags win over the values
// and that templates see the values with the flags applied.
func TestOverridesWinAndTemplatesSeeThem(t *testing.T) {
	cfg, err := Load(Sources{Values: []byte("revision: canary\nglobal:\n  nativeSidecars: \"false\"\n")},
		Overrides{Revision: "stable", NativeSidecars: "true"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Settings.Revision != "stable" || !cfg.Settings.NativeSidecars {
		t.Errorf("revision %q, native sidecars %v; want stable, true", cfg.Settings.Revision, cfg.Settings.NativeSidecars)
	}
	if got := cfg.Values["revision"]; got != "stable" {
		t.Errorf("values revision %v, want stable", got)
	}
	if got := cfg.Values["global"].(map[string]any)["nativeSidecars"]; got != "true" {
		t.Errorf("values global.nativeSidecars %v, want true", got)
	}
	// auto is resolved for the engine and the hash, not written into the
	// values: templates see what the operator wrote.
	def := MustDefault()
	if got := def.Values["global"].(map[string]any)["nativeSidecars"]; got != "auto" {
		t.Errorf("values global.nativeSidecars %v, want auto", got)
	}
}

func TestOverridesRefuseInvalidInput(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    Overrides
		want string
	}{
		{"native sidecars", Overrides{NativeSidecars: "maybe"}, "--native-sidecars"},
		{"server version", Overrides{ServerVersion: "garbage"}, "API server's version"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Load(Sources{}, tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error containing %q, got %v", tt.want, err)
			}
		})
	}
}
