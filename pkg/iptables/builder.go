package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Family is an IP address family; each gets its own rules and its own
// iptables-restore run.
type Family int

const (
	// IPv4 is programmed with iptables-restore.
	IPv4 Family = 4
	// IPv6 is programmed with ip6tables-restore.
	IPv6 Family = 6
)

// String returns "IPv4" or "IPv6".
func (f Family) String() string { return "IPv" + strconv.Itoa(int(f)) }

// RestoreCommand is the program that applies this family's rules.
func (f Family) RestoreCommand() string {
	if f == IPv6 {
		return "ip6tables-restore"
	}
	return "iptables-restore"
}

// SaveCommand is the program that prints this family's current rules.
func (f Family) SaveCommand() string {
	if f == IPv6 {
		return "ip6tables-save"
	}
	return "iptables-save"
}

// ipFlag is the address-family flag of the ip command.
func (f Family) ipFlag() string {
	if f == IPv6 {
		return "-6"
	}
	return "-4"
}

func (f Family) has(p netip.Prefix) bool { return p.Addr().Is4() == (f == IPv4) }

// localhost is where the proxy's loopback traffic to itself goes and what is
// never captured: 127.0.0.1/32 or ::1/128.
func (f Family) localhost() string {
	if f == IPv6 {
		return "::1/128"
	}
	return "127.0.0.1/32"
}

// inboundPassthroughSource is the source address the proxy binds when it
// forwards an inbound connection to the application; such connections are
// never captured again.
func (f Family) inboundPassthroughSource() string {
	if f == IPv6 {
		return "::6/128"
	}
	return "127.0.0.6/32"
}

func (f Family) anyAddr() string {
	if f == IPv6 {
		return "::"
	}
	return "0.0.0.0"
}

// Chains Remora owns. Every chain whose name starts with OwnedChainPrefix is
// considered Remora's (or Istio's, which Remora replaces): it is flushed on
// every run and deleted when no longer needed.
const (
	// OwnedChainPrefix marks the chains Remora owns.
	OwnedChainPrefix = "ISTIO_"
	// ChainInbound selects inbound connections to capture (nat, or mangle in TPROXY mode).
	ChainInbound = "ISTIO_INBOUND"
	// ChainInRedirect redirects to the inbound capture port (nat).
	ChainInRedirect = "ISTIO_IN_REDIRECT"
	// ChainOutput selects outbound connections to capture (nat); in TPROXY mode
	// the mangle chain of the same name restores the connection mark.
	ChainOutput = "ISTIO_OUTPUT"
	// ChainRedirect redirects to the outbound proxy port (nat).
	ChainRedirect = "ISTIO_REDIRECT"
	// ChainDivert marks and accepts packets of intercepted connections (mangle, TPROXY).
	ChainDivert = "ISTIO_DIVERT"
	// ChainTProxy hands new inbound connections to the proxy (mangle, TPROXY).
	ChainTProxy = "ISTIO_TPROXY"
)

// builtinChains are the chains iptables creates; rules in them that jump to an
// owned chain are the only rules outside owned chains Remora writes.
var builtinChains = map[string]bool{
	"PREROUTING": true, "INPUT": true, "FORWARD": true, "OUTPUT": true, "POSTROUTING": true,
}

// tableOrder is the order tables are written in.
var tableOrder = []string{"raw", "mangle", "nat", "filter", "security"}

// Rule is one rule: the chain it is appended to and its match and target
// arguments, written in the canonical order iptables-save prints them in.
type Rule struct {
	// Chain is the chain the rule is appended to.
	Chain string
	// Args are the rule's arguments after "-A CHAIN".
	Args []string
}

// String renders the rule as an iptables-restore line.
func (r Rule) String() string { return "-A " + r.Chain + " " + strings.Join(r.Args, " ") }

// Table is the desired content of one iptables table: the owned chains and, in
// order, the rules (jumps from built-in chains and the owned chains' rules).
type Table struct {
	// Name is the table, e.g. "nat".
	Name string
	// Chains are the owned chains, sorted.
	Chains []string
	// Rules are the table's rules in the order they are appended.
	Rules []Rule
}

// PolicyRoute is the routing TPROXY mode needs: packets carrying Mark are
// looked up in Table, which delivers everything locally.
type PolicyRoute struct {
	// Mark is the firewall mark of intercepted packets.
	Mark uint32
	// Table is the routing table holding the "local default dev lo" route.
	Table uint32
}

// Ruleset is everything one address family needs: the iptables tables and,
// in TPROXY mode, the policy routing.
type Ruleset struct {
	// Family is the address family.
	Family Family
	// Tables are the tables to program, in the order they are written.
	Tables []Table
	// PolicyRoute is set in TPROXY mode.
	PolicyRoute *PolicyRoute
}

// tableBuilder collects the rules of one table.
type tableBuilder struct {
	name  string
	rules []Rule
}

func (b *tableBuilder) add(chain string, args ...string) {
	b.rules = append(b.rules, Rule{Chain: chain, Args: args})
}

func (b *tableBuilder) has(chain string) bool {
	return slices.ContainsFunc(b.rules, func(r Rule) bool { return r.Chain == chain })
}

func (b *tableBuilder) jumpsTo(chain string) bool {
	return slices.ContainsFunc(b.rules, func(r Rule) bool { return target(r.Args) == chain })
}

// table orders the rules like iptables-save does: jumps from built-in chains
// first, then the owned chains by name; a chain's rules keep their order.
func (b *tableBuilder) table() (Table, bool) {
	if len(b.rules) == 0 {
		return Table{}, false
	}
	t := Table{Name: b.name}
	for _, r := range b.rules {
		if builtinChains[r.Chain] {
			t.Rules = append(t.Rules, r)
		} else if !slices.Contains(t.Chains, r.Chain) {
			t.Chains = append(t.Chains, r.Chain)
		}
	}
	slices.Sort(t.Chains)
	for _, c := range t.Chains {
		for _, r := range b.rules {
			if r.Chain == c {
				t.Rules = append(t.Rules, r)
			}
		}
	}
	return t, true
}

func itoa[T uint16 | uint32](v T) string { return strconv.FormatUint(uint64(v), 10) }

func hex(v uint32) string { return fmt.Sprintf("0x%x", v) }

// Build turns a validated Config into the rules of one address family. It is
// pure: it reads nothing from the system.
//
// Outbound (nat OUTPUT -> ISTIO_OUTPUT), in order: excluded interfaces return;
// connections the proxy forwards from 127.0.0.6 return; the proxy's own
// connections to a pod address over lo go to the inbound capture port; all
// other connections of the proxy's UIDs/GIDs return, as does everything else
// over lo; excluded ports (-o) return; included ports (-q) are redirected;
// excluded CIDRs (-x) return; included CIDRs (-i) are redirected to -p.
//
// Inbound (nat PREROUTING -> ISTIO_INBOUND, or mangle in TPROXY mode):
// excluded interfaces return; with -b '*' the tunnel port and -d ports return
// and everything else goes to -z, otherwise only the -b ports do.
func Build(cfg *Config, fam Family) *Ruleset {
	b := newRuleBuilder(cfg, fam)
	if b.outbound {
		b.virtualInterfaces()
	}
	if b.inbound && !b.tproxy {
		b.inboundRedirect()
	}
	if b.inbound || b.outbound {
		b.outboundChain()
	}
	b.redirectTargets()
	b.natJumps()

	rs := &Ruleset{Family: fam}
	if b.inbound && b.tproxy {
		b.inboundTProxy()
		rs.PolicyRoute = &PolicyRoute{Mark: cfg.TProxyMark, Table: cfg.TProxyRouteTable}
	}
	for _, tb := range []*tableBuilder{b.mangle, b.nat} {
		if t, ok := tb.table(); ok {
			rs.Tables = append(rs.Tables, t)
		}
	}
	return rs
}

// ruleBuilder builds one address family's rules from one Config. Its inputs
// are resolved once, in newRuleBuilder; each step appends one part of the
// rules, and Build runs the steps in the order the rules are appended in.
type ruleBuilder struct {
	cfg         *Config
	fam         Family
	nat, mangle *tableBuilder

	// tproxy is set in TPROXY mode.
	tproxy bool
	// inbound is set when any inbound connection is captured.
	inbound bool
	// outbound is set when any outbound connection is captured.
	outbound bool
	// include and exclude are the outbound CIDRs (-i, -x) of this family.
	include, exclude []string
}

func newRuleBuilder(cfg *Config, fam Family) *ruleBuilder {
	b := &ruleBuilder{
		cfg:     cfg,
		fam:     fam,
		nat:     &tableBuilder{name: "nat"},
		mangle:  &tableBuilder{name: "mangle"},
		tproxy:  cfg.Mode == ModeTProxy,
		inbound: cfg.CapturesInbound(),
		include: familyCIDRs(cfg.OutboundCIDRs, fam),
		exclude: familyCIDRs(cfg.OutboundExcludeCIDRs, fam),
	}
	b.outbound = cfg.OutboundAllCIDRs || len(b.include) > 0 || len(cfg.OutboundPorts) > 0
	return b
}

// familyCIDRs are the prefixes of family fam, as strings.
func familyCIDRs(prefixes []netip.Prefix, fam Family) []string {
	var cidrs []string
	for _, p := range prefixes {
		if fam.has(p) {
			cidrs = append(cidrs, p.String())
		}
	}
	return cidrs
}

// selectOutbound appends the outbound port and CIDR selection to the nat
// chain; in, when set, restricts it to packets arriving on that interface.
func (b *ruleBuilder) selectOutbound(chain, in string) {
	cfg, nat := b.cfg, b.nat
	iface := func(args ...string) []string {
		if in == "" {
			return args
		}
		return append([]string{"-i", in}, args...)
	}
	for _, p := range cfg.OutboundExcludePorts {
		nat.add(chain, iface("-p", "tcp", "-m", "tcp", "--dport", itoa(p), "-j", "RETURN")...)
	}
	for _, p := range cfg.OutboundPorts {
		nat.add(chain, iface("-p", "tcp", "-m", "tcp", "--dport", itoa(p), "-j", ChainRedirect)...)
	}
	for _, c := range b.exclude {
		nat.add(chain, append([]string{"-d", c}, iface("-j", "RETURN")...)...)
	}
	if cfg.OutboundAllCIDRs {
		nat.add(chain, iface("-j", ChainRedirect)...)
		return
	}
	for _, c := range b.include {
		nat.add(chain, append([]string{"-d", c}, iface("-j", ChainRedirect)...)...)
	}
}

// virtualInterfaces selects, on each virtual (KubeVirt) interface, what a VM
// sends as the pod's outbound traffic.
func (b *ruleBuilder) virtualInterfaces() {
	for _, vif := range b.cfg.VirtualInterfaces {
		b.selectOutbound(ChainInbound, vif)
	}
}

// inboundRedirect selects the inbound connections REDIRECT mode captures
// (nat ISTIO_INBOUND).
func (b *ruleBuilder) inboundRedirect() {
	cfg, nat := b.cfg, b.nat
	for _, c := range cfg.ExcludeInterfaces {
		nat.add(ChainInbound, "-i", c, "-j", "RETURN")
	}
	if cfg.InboundAllPorts {
		for _, p := range inboundExcludes(cfg) {
			nat.add(ChainInbound, "-p", "tcp", "-m", "tcp", "--dport", itoa(p), "-j", "RETURN")
		}
		nat.add(ChainInbound, "-p", "tcp", "-j", ChainInRedirect)
		return
	}
	for _, p := range cfg.InboundPorts {
		nat.add(ChainInbound, "-p", "tcp", "-m", "tcp", "--dport", itoa(p), "-j", ChainInRedirect)
	}
}

// outboundChain writes nat ISTIO_OUTPUT: what never returns to the proxy
// (excluded interfaces, its passthrough and its own connections, lo), then
// the outbound selection.
func (b *ruleBuilder) outboundChain() {
	cfg, nat := b.cfg, b.nat
	for _, c := range cfg.ExcludeInterfaces {
		nat.add(ChainOutput, "-o", c, "-j", "RETURN")
	}
	if b.tproxy && b.inbound {
		// The proxy's transparent connections to the application carry the mark.
		nat.add(ChainOutput, "-p", "tcp", "-m", "mark", "--mark", hex(cfg.TProxyMark), "-j", "RETURN")
	}
	nat.add(ChainOutput, "-s", b.fam.inboundPassthroughSource(), "-o", "lo", "-j", "RETURN")
	if b.inbound {
		b.proxyToSelf()
	}
	for _, uid := range cfg.ProxyUIDs {
		nat.add(ChainOutput, "-m", "owner", "--uid-owner", itoa(uid), "-j", "RETURN")
	}
	for _, gid := range cfg.ProxyGIDs {
		nat.add(ChainOutput, "-m", "owner", "--gid-owner", itoa(gid), "-j", "RETURN")
	}
	nat.add(ChainOutput, "-o", "lo", "-j", "RETURN")
	b.selectOutbound(ChainOutput, "")
}

// proxyToSelf sends the proxy's own connections to a pod address over lo to
// the inbound capture port.
func (b *ruleBuilder) proxyToSelf() {
	cfg, nat, localhost := b.cfg, b.nat, b.fam.localhost()
	for _, uid := range cfg.ProxyUIDs {
		nat.add(ChainOutput, "!", "-d", localhost, "-o", "lo", "-p", "tcp", "-m", "owner", "--uid-owner", itoa(uid), "-j", ChainInRedirect)
	}
	for _, gid := range cfg.ProxyGIDs {
		nat.add(ChainOutput, "!", "-d", localhost, "-o", "lo", "-p", "tcp", "-m", "owner", "--gid-owner", itoa(gid), "-j", ChainInRedirect)
	}
}

// redirectTargets writes the nat chains that REDIRECT to the proxy's
// outbound and inbound ports, each only when something jumps to it.
func (b *ruleBuilder) redirectTargets() {
	if b.nat.jumpsTo(ChainRedirect) {
		b.nat.add(ChainRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", itoa(b.cfg.ProxyPort))
	}
	if b.nat.jumpsTo(ChainInRedirect) {
		b.nat.add(ChainInRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", itoa(b.cfg.InboundCapturePort))
	}
}

// natJumps hooks the nat chains that have rules into PREROUTING and OUTPUT.
func (b *ruleBuilder) natJumps() {
	if b.nat.has(ChainInbound) {
		b.nat.add("PREROUTING", "-p", "tcp", "-j", ChainInbound)
	}
	if b.nat.has(ChainOutput) {
		b.nat.add("OUTPUT", "-p", "tcp", "-j", ChainOutput)
	}
}

// inboundTProxy writes the mangle rules of TPROXY mode: the jumps, the
// inbound selection, the mark of intercepted connections and the TPROXY
// target.
func (b *ruleBuilder) inboundTProxy() {
	cfg, mangle := b.cfg, b.mangle
	mark := hex(cfg.TProxyMark)
	markMask := mark + "/0xffffffff"
	mangle.add("PREROUTING", "-p", "tcp", "-j", ChainInbound)
	mangle.add("OUTPUT", "-p", "tcp", "-j", ChainOutput)
	mangle.add(ChainDivert, "-j", "MARK", "--set-xmark", markMask)
	mangle.add(ChainDivert, "-j", "ACCEPT")
	mangle.add(ChainInbound, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "CONNMARK", "--save-mark", "--nfmask", "0xffffffff", "--ctmask", "0xffffffff")
	// Locally generated connections are the nat rules' business.
	mangle.add(ChainInbound, "-i", "lo", "-j", "RETURN")
	for _, c := range cfg.ExcludeInterfaces {
		mangle.add(ChainInbound, "-i", c, "-j", "RETURN")
	}
	b.tproxyInboundPorts()
	mangle.add(ChainOutput, "-p", "tcp", "-m", "connmark", "--mark", mark, "-j", "CONNMARK", "--restore-mark", "--nfmask", "0xffffffff", "--ctmask", "0xffffffff")
	mangle.add(ChainTProxy, "!", "-d", b.fam.localhost(), "-p", "tcp", "-j", "TPROXY",
		"--on-port", itoa(cfg.InboundCapturePort), "--on-ip", b.fam.anyAddr(), "--tproxy-mark", markMask)
}

// tproxyInboundPorts selects the inbound connections TPROXY mode captures
// (mangle ISTIO_INBOUND): packets of established connections are diverted,
// new connections go to ISTIO_TPROXY.
func (b *ruleBuilder) tproxyInboundPorts() {
	cfg, mangle := b.cfg, b.mangle
	if cfg.InboundAllPorts {
		for _, p := range inboundExcludes(cfg) {
			mangle.add(ChainInbound, "-p", "tcp", "-m", "tcp", "--dport", itoa(p), "-j", "RETURN")
		}
		mangle.add(ChainInbound, "-p", "tcp", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", ChainDivert)
		mangle.add(ChainInbound, "-p", "tcp", "-j", ChainTProxy)
		return
	}
	for _, p := range cfg.InboundPorts {
		mangle.add(ChainInbound, "-p", "tcp", "-m", "tcp", "--dport", itoa(p), "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", ChainDivert)
		mangle.add(ChainInbound, "-p", "tcp", "-m", "tcp", "--dport", itoa(p), "-j", ChainTProxy)
	}
}

// inboundExcludes are the ports never captured inbound when every port is:
// the tunnel port, then -d.
func inboundExcludes(cfg *Config) []uint16 {
	var ports []uint16
	if cfg.InboundTunnelPort != 0 {
		ports = append(ports, cfg.InboundTunnelPort)
	}
	for _, p := range cfg.InboundExcludePorts {
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports
}

// Families returns the address families to program: IPv4 always, IPv6 when
// the pod has a global IPv6 address or dual-stack is forced.
func Families(podHasIPv6, dualStack bool) []Family {
	if podHasIPv6 || dualStack {
		return []Family{IPv4, IPv6}
	}
	return []Family{IPv4}
}

// String renders the ruleset as a complete iptables-restore --noflush input
// for a namespace that has none of the rules yet, preceded by a comment naming
// the command; the policy routing of TPROXY mode follows as comments. It is
// what --dry-run prints.
func (rs *Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s: %s --noflush\n", rs.Family, rs.Family.RestoreCommand())
	if len(rs.Tables) == 0 {
		b.WriteString("# (no rules: nothing is captured)\n")
	}
	text, _ := rs.Render("") // rendering against an empty namespace cannot fail
	b.WriteString(text)
	for _, cmd := range rs.routeCommands() {
		fmt.Fprintf(&b, "# ip %s\n", strings.Join(cmd, " "))
	}
	return b.String()
}

// routeCommands are the ip commands (without "ip") that set up TPROXY's
// policy routing; "rule add" is only run when the rule is missing.
func (rs *Ruleset) routeCommands() [][]string {
	if rs.PolicyRoute == nil {
		return nil
	}
	mark, table := hex(rs.PolicyRoute.Mark), itoa(rs.PolicyRoute.Table)
	return [][]string{
		{rs.Family.ipFlag(), "rule", "add", "fwmark", mark, "lookup", table},
		{rs.Family.ipFlag(), "route", "replace", "local", rs.Family.anyAddr() + "/0", "dev", "lo", "table", table},
	}
}
