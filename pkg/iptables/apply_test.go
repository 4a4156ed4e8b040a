package iptables

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// fakeExec records the commands it is asked to run and answers from a table
// keyed by the command line.
type fakeExec struct {
	calls  []string
	stdins map[string][]string
	output map[string]string
	fail   map[string]error
}

func (f *fakeExec) Run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := strings.Join(append([]string{name}, args...), " ")
	f.calls = append(f.calls, cmd)
	if f.stdins == nil {
		f.stdins = map[string][]string{}
	}
	f.stdins[cmd] = append(f.stdins[cmd], string(stdin))
	if err := f.fail[cmd]; err != nil {
		return nil, err
	}
	return []byte(f.output[cmd]), nil
}

func rulesets(t *testing.T, args ...string) []*Ruleset {
	t.Helper()
	cfg, _, err := parseArgs(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	var out []*Ruleset
	for _, fam := range Families(true, false) {
		out = append(out, Build(cfg, fam))
	}
	return out
}

func TestApply(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		output    map[string]string
		fail      map[string]error
		wantCalls []string
		wantErr   string
	}{
		{
			name: "both families, one restore each",
			args: injectedArgs,
			wantCalls: []string{
				"iptables-save", "iptables-restore --noflush --wait=10",
				"ip6tables-save", "ip6tables-restore --noflush --wait=10",
			},
		},
		{
			name: "IPv6 failing rolls IPv4 back",
			args: injectedArgs,
			fail: map[string]error{"ip6tables-restore --noflush --wait=10": errors.New("exit status 2")},
			wantCalls: []string{
				"iptables-save", "iptables-restore --noflush --wait=10",
				"ip6tables-save", "ip6tables-restore --noflush --wait=10",
				"iptables-restore --wait=10",
			},
			wantErr: "applying the IPv6 rules (none of them were applied)",
		},
		{
			name:      "unreadable state changes nothing",
			args:      injectedArgs,
			fail:      map[string]error{"iptables-save": errors.New("permission denied")},
			wantCalls: []string{"iptables-save"},
			wantErr:   "reading the current IPv4 rules: permission denied",
		},
		{
			name: "TPROXY adds the policy rule when missing",
			args: []string{"-m", "TPROXY", "-b", "*"},
			wantCalls: []string{
				"iptables-save", "iptables-restore --noflush --wait=10",
				"ip -4 rule show fwmark 0x539 lookup 133",
				"ip -4 rule add fwmark 0x539 lookup 133",
				"ip -4 route replace local 0.0.0.0/0 dev lo table 133",
				"ip6tables-save", "ip6tables-restore --noflush --wait=10",
				"ip -6 rule show fwmark 0x539 lookup 133",
				"ip -6 rule add fwmark 0x539 lookup 133",
				"ip -6 route replace local ::/0 dev lo table 133",
			},
		},
		{
			name: "TPROXY keeps an existing policy rule",
			args: []string{"-m", "TPROXY", "-b", "*"},
			output: map[string]string{
				"ip -4 rule show fwmark 0x539 lookup 133": "32765:	from all fwmark 0x539 lookup 133\n",
				"ip -6 rule show fwmark 0x539 lookup 133": "32765:	from all fwmark 0x539 lookup 133\n",
			},
			wantCalls: []string{
				"iptables-save", "iptables-restore --noflush --wait=10",
				"ip -4 rule show fwmark 0x539 lookup 133",
				"ip -4 route replace local 0.0.0.0/0 dev lo table 133",
				"ip6tables-save", "ip6tables-restore --noflush --wait=10",
				"ip -6 rule show fwmark 0x539 lookup 133",
				"ip -6 route replace local ::/0 dev lo table 133",
			},
		},
		{
			name:      "nothing to capture and nothing to clean up runs no restore",
			args:      []string{"-i", "", "-b", ""},
			wantCalls: []string{"iptables-save", "ip6tables-save"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ex := &fakeExec{output: tt.output, fail: tt.fail}
			a := &Applier{Exec: ex, Log: logr.Discard()}
			err := a.Apply(t.Context(), rulesets(t, tt.args...))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Apply: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Apply error = %v, want one containing %q", err, tt.wantErr)
			}
			if got, want := strings.Join(ex.calls, "\n"), strings.Join(tt.wantCalls, "\n"); got != want {
				t.Errorf("commands run:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestApplyRollbackRestoresSavedTables(t *testing.T) {
	saved := asSaved("*nat\n:KUBE-X - [0:0]\n-A OUTPUT -j KUBE-X\nCOMMIT\n")
	ex := &fakeExec{
		output: map[string]string{"iptables-save": saved},
		fail:   map[string]error{"ip6tables-restore --noflush --wait=10": errors.New("exit status 1")},
	}
	a := &Applier{Exec: ex, Log: logr.Discard()}
	if err := a.Apply(t.Context(), rulesets(t, injectedArgs...)); err == nil {
		t.Fatal("Apply succeeded, want an error")
	}
	rollback := ex.stdins["iptables-restore --wait=10"]
	if len(rollback) != 1 {
		t.Fatalf("rollback restores = %d, want 1", len(rollback))
	}
	if want := "*nat\n:PREROUTING ACCEPT [12:720]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [3:180]\n:POSTROUTING ACCEPT [0:0]\n" +
		":KUBE-X - [0:0]\n-A OUTPUT -j KUBE-X\nCOMMIT\n"; rollback[0] != want {
		t.Errorf("rollback input =\n%s\nwant\n%s", rollback[0], want)
	}
}

func TestIsGlobalIPv6(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"2001:db8::1", true},
		{"fd00:250::1", true},
		{"fe80::1", false},
		{"::1", false},
		{"::ffff:10.0.0.1", false},
		{"10.0.0.1", false},
		{"ff02::1", false},
	}
	for _, tt := range tests {
		if got := IsGlobalIPv6(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("IsGlobalIPv6(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

func TestFamilies(t *testing.T) {
	tests := []struct {
		ipv6, dualStack bool
		want            int
	}{{false, false, 1}, {true, false, 2}, {false, true, 2}}
	for _, tt := range tests {
		if got := Families(tt.ipv6, tt.dualStack); len(got) != tt.want || got[0] != IPv4 {
			t.Errorf("Families(%v, %v) = %v, want %d families starting with IPv4", tt.ipv6, tt.dualStack, got, tt.want)
		}
	}
}

func TestValidateCaptureRefusals(t *testing.T) {
	probe := netip.MustParseAddrPort("127.0.0.2:15002")
	t.Run("nothing to validate without inbound capture", func(t *testing.T) {
		cfg := DefaultConfig()
		if err := ValidateCapture(t.Context(), cfg, probe, time.Second, logr.Discard()); err != nil {
			t.Errorf("ValidateCapture: %v", err)
		}
	})
	t.Run("must run as the proxy", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.InboundAllPorts = true
		id := uint32(os.Getuid()) + 1
		cfg.ProxyUIDs, cfg.ProxyGIDs = []uint32{id}, []uint32{uint32(os.Getgid()) + 1}
		err := ValidateCapture(t.Context(), cfg, probe, time.Second, logr.Discard())
		if err == nil || !strings.Contains(err.Error(), "must run as the proxy's UID") {
			t.Errorf("ValidateCapture error = %v, want it to ask for the proxy's UID", err)
		}
	})
}
