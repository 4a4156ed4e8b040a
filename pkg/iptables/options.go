package iptables

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// flagName is one istio-iptables flag: its single-letter form (as the injected
// init container passes it) and its long form.
type flagName struct{ short, long string }

var (
	flagProxyPort            = flagName{"p", "envoy-port"}
	flagInboundCapturePort   = flagName{"z", "inbound-capture-port"}
	flagInboundTunnelPort    = flagName{"e", "inbound-tunnel-port"}
	flagProxyUID             = flagName{"u", "proxy-uid"}
	flagProxyGID             = flagName{"g", "proxy-gid"}
	flagMode                 = flagName{"m", "istio-inbound-interception-mode"}
	flagTProxyMark           = flagName{"t", "istio-inbound-tproxy-mark"}
	flagTProxyRouteTable     = flagName{"r", "istio-inbound-tproxy-route-table"}
	flagInboundPorts         = flagName{"b", "istio-inbound-ports"}
	flagInboundExcludePorts  = flagName{"d", "istio-local-exclude-ports"}
	flagOutboundPorts        = flagName{"q", "istio-outbound-ports"}
	flagOutboundExcludePorts = flagName{"o", "istio-local-outbound-ports-exclude"}
	flagOutboundCIDRs        = flagName{"i", "istio-service-cidr"}
	flagOutboundExcludeCIDRs = flagName{"x", "istio-service-exclude-cidr"}
	flagExcludeInterfaces    = flagName{"c", "exclude-interfaces"}
	flagVirtualInterfaces    = flagName{"k", "reroute-virtual-interfaces"}
	flagProbePort            = flagName{"", "iptables-probe-port"}
	flagProbeTimeout         = flagName{"", "probe-timeout"}
	flagLogOutputLevel       = flagName{"", "log_output_level"}
)

// String names the flag as users type it: "-x/--istio-service-exclude-cidr".
func (f flagName) String() string {
	if f.short == "" {
		return "--" + f.long
	}
	return "-" + f.short + "/--" + f.long
}

// flagPath is the field path errors about a flag's value carry.
func flagPath(f flagName) *field.Path { return field.NewPath(f.String()) }

// Options are the raw istio-iptables flag values, kept as the strings the
// command line carries so that errors can quote them. Config parses them.
type Options struct {
	// ProxyPort is -p/--envoy-port.
	ProxyPort string
	// InboundCapturePort is -z/--inbound-capture-port.
	InboundCapturePort string
	// InboundTunnelPort is -e/--inbound-tunnel-port.
	InboundTunnelPort string
	// ProxyUID is -u/--proxy-uid, a comma-separated list of UIDs.
	ProxyUID string
	// ProxyGID is -g/--proxy-gid, a comma-separated list of GIDs; empty means
	// the same as ProxyUID.
	ProxyGID string
	// Mode is -m/--istio-inbound-interception-mode: REDIRECT or TPROXY.
	Mode string
	// TProxyMark is -t/--istio-inbound-tproxy-mark.
	TProxyMark string
	// TProxyRouteTable is -r/--istio-inbound-tproxy-route-table.
	TProxyRouteTable string
	// InboundPorts is -b/--istio-inbound-ports: '*' or a port list.
	InboundPorts string
	// InboundExcludePorts is -d/--istio-local-exclude-ports.
	InboundExcludePorts string
	// OutboundPorts is -q/--istio-outbound-ports.
	OutboundPorts string
	// OutboundExcludePorts is -o/--istio-local-outbound-ports-exclude.
	OutboundExcludePorts string
	// OutboundCIDRs is -i/--istio-service-cidr: '*' or a CIDR list.
	OutboundCIDRs string
	// OutboundExcludeCIDRs is -x/--istio-service-exclude-cidr.
	OutboundExcludeCIDRs string
	// ExcludeInterfaces is -c/--exclude-interfaces.
	ExcludeInterfaces string
	// VirtualInterfaces is -k/--reroute-virtual-interfaces (also accepted as
	// --kube-virt-interfaces, its former name).
	VirtualInterfaces string

	// DryRun (-n/--dry-run) prints the rules and changes nothing.
	DryRun bool
	// DualStack (--dual-stack) programs ip6tables even when the pod has no
	// global IPv6 address.
	DualStack bool
	// SkipRuleApply (--skip-rule-apply) builds and validates but does not
	// apply the rules, for when the Istio CNI plugin has applied them.
	SkipRuleApply bool
	// RunValidation (--run-validation) checks that the capture rules are in
	// place, see ValidateCapture.
	RunValidation bool
	// ProbePort (--iptables-probe-port) is the port the validation probe dials.
	ProbePort string
	// ProbeTimeout (--probe-timeout) bounds the validation probe.
	ProbeTimeout time.Duration
	// LogOutputLevel (--log_output_level) is Istio's "scope:level,..." logging
	// flag; the "default" (or "all") scope sets the verbosity.
	LogOutputLevel string
}

// NewOptions returns Options holding istio-iptables' defaults.
func NewOptions() *Options {
	return &Options{
		ProxyPort:          strconv.Itoa(int(DefaultProxyPort)),
		InboundCapturePort: strconv.Itoa(int(DefaultInboundCapturePort)),
		InboundTunnelPort:  strconv.Itoa(int(DefaultInboundTunnelPort)),
		ProxyUID:           strconv.Itoa(int(DefaultProxyUID)),
		Mode:               string(ModeRedirect),
		TProxyMark:         strconv.Itoa(int(DefaultTProxyMark)),
		TProxyRouteTable:   strconv.Itoa(int(DefaultTProxyRouteTable)),
		ProbePort:          strconv.Itoa(int(DefaultProbePort)),
		ProbeTimeout:       5 * time.Second,
		LogOutputLevel:     "default:info",
	}
}

// AddFlags registers the istio-iptables flags, with Istio's single-letter
// shorthands, on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	str := func(p *string, f flagName, usage string) {
		if f.short == "" {
			fs.StringVar(p, f.long, *p, usage)
			return
		}
		fs.StringVarP(p, f.long, f.short, *p, usage)
	}
	str(&o.ProxyPort, flagProxyPort, "port outbound TCP connections are redirected to (the proxy's outbound listener)")
	str(&o.InboundCapturePort, flagInboundCapturePort, "port inbound TCP connections are redirected to (the proxy's inbound listener)")
	str(&o.InboundTunnelPort, flagInboundTunnelPort, "inbound port that is never captured (the proxy's HBONE tunnel); 0 disables")
	str(&o.ProxyUID, flagProxyUID, "comma-separated UIDs whose traffic is never captured (the proxy's)")
	str(&o.ProxyGID, flagProxyGID, "comma-separated GIDs whose traffic is never captured (default: the -u values)")
	str(&o.Mode, flagMode, "inbound interception mode: REDIRECT or TPROXY")
	str(&o.TProxyMark, flagTProxyMark, "packet mark for TPROXY mode")
	str(&o.TProxyRouteTable, flagTProxyRouteTable, "routing table for TPROXY mode")
	str(&o.InboundPorts, flagInboundPorts, "inbound ports to capture: '*' for all, a comma-separated list, or empty for none")
	str(&o.InboundExcludePorts, flagInboundExcludePorts, "inbound ports never captured, when -b is '*'")
	str(&o.OutboundPorts, flagOutboundPorts, "outbound destination ports always captured, whatever the destination address")
	str(&o.OutboundExcludePorts, flagOutboundExcludePorts, "outbound destination ports never captured")
	str(&o.OutboundCIDRs, flagOutboundCIDRs, "outbound destination CIDRs to capture: '*' for all, a comma-separated IPv4/IPv6 list, or empty for none")
	str(&o.OutboundExcludeCIDRs, flagOutboundExcludeCIDRs, "outbound destination CIDRs never captured (IPv4 and IPv6 may be mixed)")
	str(&o.ExcludeInterfaces, flagExcludeInterfaces, "comma-separated interfaces whose traffic is never captured")
	str(&o.VirtualInterfaces, flagVirtualInterfaces, "comma-separated virtual interfaces (KubeVirt) whose incoming traffic is sent to the outbound proxy port")
	fs.StringVar(&o.VirtualInterfaces, "kube-virt-interfaces", o.VirtualInterfaces, "former name of --reroute-virtual-interfaces")
	_ = fs.MarkHidden("kube-virt-interfaces")
	fs.BoolVarP(&o.DryRun, "dry-run", "n", o.DryRun, "print the iptables-restore input and change nothing")
	fs.BoolVar(&o.DualStack, "dual-stack", o.DualStack, "also program ip6tables when the pod has no global IPv6 address")
	fs.BoolVar(&o.SkipRuleApply, "skip-rule-apply", o.SkipRuleApply, "do not apply the rules (the Istio CNI plugin applied them)")
	fs.BoolVar(&o.RunValidation, "run-validation", o.RunValidation,
		"check that capture works: as the proxy UID, dial a loopback probe address and expect it on the inbound capture port")
	str(&o.ProbePort, flagProbePort, "destination port of the --run-validation probe")
	fs.DurationVar(&o.ProbeTimeout, flagProbeTimeout.long, o.ProbeTimeout, "how long --run-validation retries before failing")
	str(&o.LogOutputLevel, flagLogOutputLevel, "Istio-style logging levels, scope:level[,scope:level]; the default scope is used")
}

// Config parses and validates the options. The errors name the flag and the
// value at fault; nothing is applied when there are any.
func (o *Options) Config() (*Config, field.ErrorList) {
	var errs field.ErrorList
	c := DefaultConfig()

	c.ProxyPort = parsePort(&errs, flagProxyPort, o.ProxyPort)
	c.InboundCapturePort = parsePort(&errs, flagInboundCapturePort, o.InboundCapturePort)
	if strings.TrimSpace(o.InboundTunnelPort) == "0" {
		c.InboundTunnelPort = 0
	} else {
		c.InboundTunnelPort = parsePort(&errs, flagInboundTunnelPort, o.InboundTunnelPort)
	}
	c.ProxyUIDs = parseIDs(&errs, flagProxyUID, o.ProxyUID)
	if strings.TrimSpace(o.ProxyGID) == "" {
		c.ProxyGIDs = append([]uint32(nil), c.ProxyUIDs...)
	} else {
		c.ProxyGIDs = parseIDs(&errs, flagProxyGID, o.ProxyGID)
	}
	c.Mode = Mode(strings.TrimSpace(o.Mode))
	if c.Mode != ModeRedirect && c.Mode != ModeTProxy {
		errs = append(errs, field.NotSupported(flagPath(flagMode), o.Mode, []Mode{ModeRedirect, ModeTProxy}))
	}
	c.TProxyMark = parseUint32(&errs, flagTProxyMark, o.TProxyMark)
	c.TProxyRouteTable = parseUint32(&errs, flagTProxyRouteTable, o.TProxyRouteTable)
	c.InboundAllPorts, c.InboundPorts = parsePorts(&errs, flagInboundPorts, o.InboundPorts, true)
	_, c.InboundExcludePorts = parsePorts(&errs, flagInboundExcludePorts, o.InboundExcludePorts, false)
	_, c.OutboundPorts = parsePorts(&errs, flagOutboundPorts, o.OutboundPorts, false)
	_, c.OutboundExcludePorts = parsePorts(&errs, flagOutboundExcludePorts, o.OutboundExcludePorts, false)
	c.OutboundAllCIDRs, c.OutboundCIDRs = parseCIDRs(&errs, flagOutboundCIDRs, o.OutboundCIDRs, true)
	_, c.OutboundExcludeCIDRs = parseCIDRs(&errs, flagOutboundExcludeCIDRs, o.OutboundExcludeCIDRs, false)
	c.ExcludeInterfaces = splitList(o.ExcludeInterfaces)
	c.VirtualInterfaces = splitList(o.VirtualInterfaces)

	parsePort(&errs, flagProbePort, o.ProbePort)
	if o.ProbeTimeout <= 0 {
		errs = append(errs, field.Invalid(flagPath(flagProbeTimeout), o.ProbeTimeout.String(), "must be positive"))
	}
	if _, err := parseLogOutputLevel(o.LogOutputLevel); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		// Typed validation of half-parsed values would only repeat the errors.
		return nil, errs
	}
	if errs = c.Validate(); len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// ProbeAddress is the loopback address and port the --run-validation probe
// dials. Call it after Config succeeded.
func (o *Options) ProbeAddress() netip.AddrPort {
	p, err := strconv.ParseUint(strings.TrimSpace(o.ProbePort), 10, 16)
	if err != nil {
		p = uint64(DefaultProbePort)
	}
	return netip.AddrPortFrom(probeIP, uint16(p))
}

// Verbosity is the logr verbosity --log_output_level asks for: -1 for
// none/fatal/error/warn (errors only), 0 for info, 1 for debug.
func (o *Options) Verbosity() int {
	v, err := parseLogOutputLevel(o.LogOutputLevel)
	if err != nil {
		return 0
	}
	return v
}

// parseLogOutputLevel reads Istio's "scope:level,scope:level" syntax, where a
// bare level applies to the default scope, and returns the verbosity of the
// "default" (or else "all") scope.
func parseLogOutputLevel(s string) (int, *field.Error) {
	levels := map[string]int{"debug": 1, "info": 0, "warn": -1, "error": -1, "fatal": -1, "none": -1}
	verbosity, found := 0, false
	for _, item := range splitList(s) {
		scope, level, ok := strings.Cut(item, ":")
		if !ok {
			scope, level = "default", item
		}
		v, known := levels[strings.TrimSpace(level)]
		if !known || strings.TrimSpace(scope) == "" {
			return 0, field.Invalid(flagPath(flagLogOutputLevel), s,
				"must be scope:level[,scope:level...] with level one of debug, info, warn, error, fatal, none")
		}
		switch strings.TrimSpace(scope) {
		case "default":
			verbosity, found = v, true
		case "all":
			if !found {
				verbosity = v
			}
		}
	}
	return verbosity, nil
}

// splitList splits a comma-separated value, trimming spaces and dropping empty
// items, so "", " " and "a,,b," are accepted.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func parsePort(errs *field.ErrorList, f flagName, s string) uint16 {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || v == 0 {
		*errs = append(*errs, field.Invalid(flagPath(f), s, "must be a port number between 1 and 65535"))
		return 0
	}
	return uint16(v)
}

func parseUint32(errs *field.ErrorList, f flagName, s string) uint32 {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 0, 32)
	if err != nil {
		*errs = append(*errs, field.Invalid(flagPath(f), s, "must be an unsigned 32-bit number"))
		return 0
	}
	return uint32(v)
}

// parsePorts parses a port list; with allowAll, "*" alone means every port.
// Duplicates are dropped, the first occurrence keeps its place.
func parsePorts(errs *field.ErrorList, f flagName, s string, allowAll bool) (all bool, ports []uint16) {
	items := splitList(s)
	if allowAll && len(items) == 1 && items[0] == "*" {
		return true, nil
	}
	seen := map[uint16]bool{}
	for _, item := range items {
		v, err := strconv.ParseUint(item, 10, 16)
		if err != nil || v == 0 {
			detail := "must be a comma-separated list of port numbers between 1 and 65535"
			if allowAll {
				detail = "must be '*' or " + detail
			}
			*errs = append(*errs, field.Invalid(flagPath(f), s, detail+"; bad item "+strconv.Quote(item)))
			return false, nil
		}
		if !seen[uint16(v)] {
			seen[uint16(v)] = true
			ports = append(ports, uint16(v))
		}
	}
	return false, ports
}

// parseCIDRs parses a CIDR list of either family; with allowAll, "*" alone
// means every destination. Host bits are cleared (10.0.0.12/24 is
// 10.0.0.0/24) as iptables would, and duplicates are dropped.
func parseCIDRs(errs *field.ErrorList, f flagName, s string, allowAll bool) (all bool, cidrs []netip.Prefix) {
	items := splitList(s)
	if allowAll && len(items) == 1 && items[0] == "*" {
		return true, nil
	}
	seen := map[netip.Prefix]bool{}
	for _, item := range items {
		p, err := netip.ParsePrefix(item)
		if err != nil || p.Addr().Zone() != "" {
			detail := "must be a comma-separated list of CIDRs such as 10.0.0.12/32 or fd00::/8"
			if allowAll {
				detail = "must be '*' or " + detail
			}
			*errs = append(*errs, field.Invalid(flagPath(f), s, detail+"; bad item "+strconv.Quote(item)))
			return false, nil
		}
		p = p.Masked()
		if !seen[p] {
			seen[p] = true
			cidrs = append(cidrs, p)
		}
	}
	return false, cidrs
}

// parseIDs parses a comma-separated list of UIDs or GIDs.
func parseIDs(errs *field.ErrorList, f flagName, s string) []uint32 {
	var ids []uint32
	for _, item := range splitList(s) {
		v, err := strconv.ParseUint(item, 10, 32)
		if err != nil {
			*errs = append(*errs, field.Invalid(flagPath(f), s, "must be a comma-separated list of numeric IDs; bad item "+strconv.Quote(item)))
			return nil
		}
		ids = append(ids, uint32(v))
	}
	return ids
}
