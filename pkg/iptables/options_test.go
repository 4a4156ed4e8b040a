package iptables

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// parseArgs parses args the way the command line does and returns the Config.
func parseArgs(t *testing.T, args ...string) (*Config, *Options, error) {
	t.Helper()
	opts := NewOptions()
	fs := pflag.NewFlagSet("istio-iptables", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, opts, err
	}
	cfg, errs := opts.Config()
	return cfg, opts, errs.ToAggregate()
}

// injectedArgs are the istio-init arguments of the injected goldens
// (conformance/istio-inject/inject/hello.yaml.injected).
var injectedArgs = []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
	"-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"}

func TestOptionsConfig(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want func(c *Config)
	}{
		{
			name: "defaults capture nothing",
			want: func(c *Config) {},
		},
		{
			name: "injected istio-init arguments",
			args: injectedArgs,
			want: func(c *Config) {
				c.OutboundAllCIDRs = true
				c.InboundAllPorts = true
				c.InboundExcludePorts = []uint16{15090, 15021, 15020}
			},
		},
		{
			name: "traffic annotations, host bits cleared, long flags",
			args: []string{"--istio-service-cidr", "127.0.0.1/24,10.96.0.1/24", "-x", "10.96.0.2/24,10.96.0.3/24",
				"-b", "1,2,3", "-d", "15090,15021,4,5,6,15020", "-o", "7,8,9", "-q", "443", "--envoy-port=15101"},
			want: func(c *Config) {
				c.ProxyPort = 15101
				c.OutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/24"), netip.MustParsePrefix("10.96.0.0/24")}
				// 10.96.0.2/24 and 10.96.0.3/24 are the same network.
				c.OutboundExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24")}
				c.InboundPorts = []uint16{1, 2, 3}
				c.InboundExcludePorts = []uint16{15090, 15021, 4, 5, 6, 15020}
				c.OutboundExcludePorts = []uint16{7, 8, 9}
				c.OutboundPorts = []uint16{443}
			},
		},
		{
			name: "mixed families, spaces and empty items",
			args: []string{"-i", " 10.0.0.0/8 , fd00::/8,", "-x", "10.0.0.12/32,fd00::12/128"},
			want: func(c *Config) {
				c.OutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
				c.OutboundExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.12/32"), netip.MustParsePrefix("fd00::12/128")}
			},
		},
		{
			name: "TPROXY with its mark and table, separate GID, interfaces",
			args: []string{"-m", "TPROXY", "-t", "0x100", "-r", "200", "-u", "1234", "-g", "1235,1236", "-c", "eth1", "-k", "net1,net2", "-e", "0"},
			want: func(c *Config) {
				c.Mode = ModeTProxy
				c.TProxyMark = 0x100
				c.TProxyRouteTable = 200
				c.ProxyUIDs = []uint32{1234}
				c.ProxyGIDs = []uint32{1235, 1236}
				c.ExcludeInterfaces = []string{"eth1"}
				c.VirtualInterfaces = []string{"net1", "net2"}
				c.InboundTunnelPort = 0
			},
		},
		{
			name: "GID defaults to the UID, former -k name, validation flags",
			args: []string{"-u", "1000629999", "--kube-virt-interfaces", "net0ps2", "--run-validation", "--skip-rule-apply"},
			want: func(c *Config) {
				c.ProxyUIDs = []uint32{1000629999}
				c.ProxyGIDs = []uint32{1000629999}
				c.VirtualInterfaces = []string{"net0ps2"}
			},
		},
		{
			name: "duplicate ports are dropped",
			args: []string{"-b", "*", "-d", "15090,15090,15021"},
			want: func(c *Config) {
				c.InboundAllPorts = true
				c.InboundExcludePorts = []uint16{15090, 15021}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := parseArgs(t, tt.args...)
			if err != nil {
				t.Fatalf("Config(%q): %v", tt.args, err)
			}
			want := DefaultConfig()
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Config(%q) =\n%+v\nwant\n%+v", tt.args, got, want)
			}
		})
	}
}

func TestOptionsConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		// wantIn must all appear in the error: the flag and the value.
		wantIn []string
	}{
		{"bad CIDR", []string{"-x", "10.0.0.300/32"}, []string{"-x/--istio-service-exclude-cidr", `"10.0.0.300/32"`}},
		{"not a CIDR", []string{"-i", "10.0.0.1"}, []string{"-i/--istio-service-cidr", `"10.0.0.1"`}},
		{"star among CIDRs", []string{"-i", "*,10.0.0.0/8"}, []string{"-i/--istio-service-cidr", `"*,10.0.0.0/8"`}},
		{"star excluded", []string{"-x", "*"}, []string{"-x/--istio-service-exclude-cidr", `"*"`}},
		{"zoned address", []string{"-x", "fe80::1%eth0/128"}, []string{"-x/", "fe80::1%eth0/128"}},
		{"bad port in list", []string{"-d", "15090,abc"}, []string{"-d/--istio-local-exclude-ports", `"15090,abc"`, `"abc"`}},
		{"port out of range", []string{"-p", "70000"}, []string{"-p/--envoy-port", `"70000"`, "between 1 and 65535"}},
		{"port zero", []string{"-z", "0"}, []string{"-z/--inbound-capture-port", `"0"`}},
		{"negative port", []string{"-o", "-1"}, []string{"-o/--istio-local-outbound-ports-exclude", `"-1"`}},
		{"outbound port out of range", []string{"-q", "65536"}, []string{"-q/--istio-outbound-ports", `"65536"`}},
		{"star in exclude ports", []string{"-d", "*"}, []string{"-d/--istio-local-exclude-ports", `"*"`}},
		{"unknown mode", []string{"-m", "FOO"}, []string{"-m/--istio-inbound-interception-mode", `"FOO"`, "REDIRECT", "TPROXY"}},
		{"lower-case mode", []string{"-m", "redirect"}, []string{"-m/", `"redirect"`}},
		{"bad UID", []string{"-u", "istio-proxy"}, []string{"-u/--proxy-uid", `"istio-proxy"`}},
		{"no UID or GID", []string{"-u", ""}, []string{"-u/--proxy-uid", "Required"}},
		{"bad TPROXY mark", []string{"-m", "TPROXY", "-t", "x"}, []string{"-t/--istio-inbound-tproxy-mark", `"x"`}},
		{"reserved route table", []string{"-m", "TPROXY", "-r", "254"}, []string{"-r/--istio-inbound-tproxy-route-table", "254"}},
		{"same proxy ports", []string{"-p", "15001", "-z", "15001"}, []string{"-z/--inbound-capture-port", "15001"}},
		{"bad interface", []string{"-c", "eth0/1"}, []string{"-c/--exclude-interfaces", `"eth0/1"`}},
		{"long interface", []string{"-k", "averyveryverylongname"}, []string{"-k/--reroute-virtual-interfaces", "averyveryverylongname"}},
		{"bad log level", []string{"--log_output_level=default:loud"}, []string{"--log_output_level", `"default:loud"`}},
		{"bad probe port", []string{"--iptables-probe-port", "0"}, []string{"--iptables-probe-port", `"0"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := parseArgs(t, tt.args...)
			if err == nil {
				t.Fatalf("Config(%q) = %+v, want an error", tt.args, cfg)
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Config(%q) error %q does not contain %q", tt.args, err, s)
				}
			}
		})
	}
}

func TestLogOutputLevel(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"default:info", 0},
		{"default:debug", 1},
		{"all:error", -1},
		{"all:debug,default:info", 0},
		{"ads:debug", 0},
		{"debug", 1},
		{"", 0},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			o := NewOptions()
			o.LogOutputLevel = tt.in
			if got := o.Verbosity(); got != tt.want {
				t.Errorf("Verbosity(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestProbeAddress(t *testing.T) {
	_, opts, err := parseArgs(t, "--iptables-probe-port", "15099")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := opts.ProbeAddress(), netip.MustParseAddrPort("127.0.0.2:15099"); got != want {
		t.Errorf("ProbeAddress() = %s, want %s", got, want)
	}
}

// FuzzConfig feeds arbitrary flag values through parsing, building and
// rendering: nothing may panic, and whatever is accepted must render to
// restore lines whose arguments cannot break out of their line or rule.
func FuzzConfig(f *testing.F) {
	f.Add("15001", "*", "", "*", "15090,15021,15020", "", "", "", "", "REDIRECT")
	f.Add("15001", "127.0.0.1/24,10.96.0.1/24", "10.96.0.2/24,fd00::/8", "1,2,3", "4,5", "7,8", "443", "eth1", "net1", "TPROXY")
	f.Add("70000", "10.0.0.300/32", "*", "x", "-1", "0", "65536", "eth0/1", "a b", "FOO")
	f.Fuzz(func(t *testing.T, p, i, x, b, d, o, q, c, k, m string) {
		opts := NewOptions()
		opts.ProxyPort, opts.OutboundCIDRs, opts.OutboundExcludeCIDRs = p, i, x
		opts.InboundPorts, opts.InboundExcludePorts, opts.OutboundExcludePorts, opts.OutboundPorts = b, d, o, q
		opts.ExcludeInterfaces, opts.VirtualInterfaces, opts.Mode = c, k, m
		cfg, errs := opts.Config()
		if len(errs) > 0 {
			if cfg != nil {
				t.Fatalf("Config returned both a config and errors: %v", errs)
			}
			return
		}
		for _, fam := range []Family{IPv4, IPv6} {
			rs := Build(cfg, fam)
			for _, tbl := range rs.Tables {
				for _, r := range tbl.Rules {
					for _, a := range r.Args {
						if a == "" || strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == '"' || r == '\'' }) {
							t.Fatalf("rule %q has an unsafe argument %q", r, a)
						}
					}
				}
			}
			text, err := rs.Render("")
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if again, _ := rs.Render(asSaved(text)); strings.Contains(again, "-D ") {
				t.Fatalf("rendering against its own result deletes rules:\n%s", again)
			}
		}
	})
}
