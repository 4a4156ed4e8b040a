package iptables

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/internal/golden"
)

// goldenCases are istio-iptables argument sets, most of them the istio-init
// arguments of the injection goldens in conformance/istio-inject/inject/.
// Each writes testdata/<name>.golden: the --dry-run output for IPv4 and IPv6.
var goldenCases = []struct {
	name string
	args []string
}{
	{"defaults", nil},
	{"hello", injectedArgs},
	{"traffic-params", []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "127.0.0.1/24,10.96.0.1/24", "-x", "10.96.0.2/24,10.96.0.3/24", "-b", "*", "-d", "15090,15021,4,5,6"}},
	{"traffic-annotations", []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "127.0.0.1/24,10.96.0.1/24", "-x", "10.96.0.2/24,10.96.0.3/24", "-b", "1,2,3", "-d", "15090,15021,4,5,6,15020", "-o", "7,8,9"}},
	{"traffic-annotations-empty-includes", []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "", "-x", "10.96.0.2/24,10.96.0.3/24", "-b", "", "-d", "15090,15021,4,5,6,15020"}},
	{"hello-tproxy", []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY",
		"-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"}},
	{"tproxy-inbound-ports", []string{"-m", "TPROXY", "-u", "1234", "-i", "", "-b", "8080,9090", "-t", "0x100", "-r", "200"}},
	{"kubevirt-interfaces", []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "-k", "net1,net2"}},
	{"mysql-excluded", []string{"-i", "*", "-x", "10.0.0.12/32", "-b", "*", "-d", "15090,15021,15020"}},
	{"mixed-families", []string{"-i", "10.0.0.0/8,fd00:10::/64", "-x", "10.0.0.12/32,fd00:10::12/128", "-q", "443,8443",
		"-o", "3306", "-b", "*", "-d", "15090", "-c", "eth1", "-u", "1337", "-g", "1337,1338"}},
	{"outbound-ports-only", []string{"-i", "", "-q", "443", "-b", ""}},
}

func goldenOutput(t *testing.T, args []string) string {
	t.Helper()
	cfg, _, err := parseArgs(t, args...)
	if err != nil {
		t.Fatalf("Config(%q): %v", args, err)
	}
	var b strings.Builder
	b.WriteString(strings.TrimSpace("# istio-iptables "+shellQuote(args)) + "\n")
	for _, fam := range Families(false, true) {
		b.WriteString(Build(cfg, fam).String())
	}
	return b.String()
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, "* ") {
			a = "'" + a + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func TestBuildGolden(t *testing.T) {
	var want []string
	for _, tt := range goldenCases {
		file := filepath.Join("testdata", tt.name+".golden")
		want = append(want, file)
		t.Run(tt.name, func(t *testing.T) {
			golden.Assert(t, file, []byte(goldenOutput(t, tt.args)))
		})
	}
	// A golden file without a case is stale too.
	golden.CheckStale(t, filepath.Join("testdata", "*.golden"), want)
}

// TestBuildProperties checks, independently of the goldens, the rules every
// configuration must have.
func TestBuildProperties(t *testing.T) {
	for _, tt := range goldenCases {
		cfg, _, err := parseArgs(t, tt.args...)
		if err != nil {
			t.Fatal(err)
		}
		for _, fam := range []Family{IPv4, IPv6} {
			t.Run(tt.name+"/"+fam.String(), func(t *testing.T) {
				rs := Build(cfg, fam)
				for _, tbl := range rs.Tables {
					declared := map[string]bool{}
					for _, c := range tbl.Chains {
						if !owned(c) {
							t.Errorf("table %s declares %s, which is not an owned chain", tbl.Name, c)
						}
						declared[c] = true
					}
					used := map[string]bool{}
					for _, r := range tbl.Rules {
						if !builtinChains[r.Chain] && !declared[r.Chain] {
							t.Errorf("rule %q is in undeclared chain %s", r, r.Chain)
						}
						if builtinChains[r.Chain] && !owned(target(r.Args)) {
							t.Errorf("rule %q in a built-in chain does not jump to an owned chain", r)
						}
						tgt := target(r.Args)
						if owned(tgt) && !declared[tgt] {
							t.Errorf("rule %q jumps to undeclared chain %s", r, tgt)
						}
						used[tgt] = true
						for _, a := range r.Args {
							if strings.Contains(a, ".") && strings.Contains(a, "/") && fam == IPv6 {
								t.Errorf("IPv6 rule %q has an IPv4 CIDR", r)
							}
							if strings.Contains(a, "::") && strings.Contains(a, "/") && fam == IPv4 {
								t.Errorf("IPv4 rule %q has an IPv6 CIDR", r)
							}
						}
					}
					for c := range declared {
						if !used[c] {
							t.Errorf("chain %s in table %s is declared but nothing jumps to it", c, tbl.Name)
						}
					}
				}
				// The proxy's own traffic must return before anything is redirected.
				if cfg.OutboundAllCIDRs || len(cfg.OutboundPorts) > 0 {
					checkProxyReturnsFirst(t, rs, cfg)
				}
			})
		}
	}
}

func checkProxyReturnsFirst(t *testing.T, rs *Ruleset, cfg *Config) {
	t.Helper()
	for _, tbl := range rs.Tables {
		if tbl.Name != "nat" {
			continue
		}
		ownerReturn, firstRedirect := -1, -1
		for i, r := range tbl.Rules {
			if r.Chain != ChainOutput {
				continue
			}
			s := strings.Join(r.Args, " ")
			if ownerReturn < 0 && s == "-m owner --uid-owner "+itoa(cfg.ProxyUIDs[0])+" -j RETURN" {
				ownerReturn = i
			}
			if firstRedirect < 0 && target(r.Args) == ChainRedirect {
				firstRedirect = i
			}
		}
		if ownerReturn < 0 || firstRedirect < 0 || ownerReturn > firstRedirect {
			t.Errorf("the proxy UID's RETURN (rule %d) must come before the first redirect (rule %d)", ownerReturn, firstRedirect)
		}
	}
}
