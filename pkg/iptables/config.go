package iptables

import (
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Mode is how inbound connections are handed to the proxy.
type Mode string

const (
	// ModeRedirect rewrites the destination of inbound connections to the inbound
	// capture port with the nat REDIRECT target; the proxy reads the original
	// destination with SO_ORIGINAL_DST.
	ModeRedirect Mode = "REDIRECT"
	// ModeTProxy delivers inbound connections to the inbound capture port
	// unchanged with the mangle TPROXY target and policy routing, so the proxy
	// sees the original destination (and can keep the client's source address).
	ModeTProxy Mode = "TPROXY"
)

// Defaults, the same as Istio's.
const (
	// DefaultProxyPort is the proxy's outbound listener (-p).
	DefaultProxyPort uint16 = 15001
	// DefaultInboundCapturePort is the proxy's inbound listener (-z).
	DefaultInboundCapturePort uint16 = 15006
	// DefaultInboundTunnelPort is the proxy's HBONE tunnel port (-e); inbound
	// connections to it are never captured.
	DefaultInboundTunnelPort uint16 = 15008
	// DefaultProxyUID is the UID the proxy runs as (-u).
	DefaultProxyUID uint32 = 1337
	// DefaultTProxyMark is the packet mark used in TPROXY mode (-t).
	DefaultTProxyMark uint32 = 1337
	// DefaultTProxyRouteTable is the routing table used in TPROXY mode (-r).
	DefaultTProxyRouteTable uint32 = 133
	// DefaultProbePort is the destination port the --run-validation probe dials.
	DefaultProbePort uint16 = 15002
)

// Config is the validated, typed form of the istio-iptables flags. Build turns
// it into rules. The zero value captures nothing; start from DefaultConfig.
type Config struct {
	// ProxyPort is the port outbound connections are redirected to (-p).
	ProxyPort uint16
	// InboundCapturePort is the port inbound connections are redirected to (-z).
	InboundCapturePort uint16
	// InboundTunnelPort is never captured inbound (-e); 0 disables the exception.
	InboundTunnelPort uint16
	// ProxyUIDs are the UIDs whose traffic is never captured (-u), so the
	// proxy's own connections do not loop back into it.
	ProxyUIDs []uint32
	// ProxyGIDs are the GIDs whose traffic is never captured (-g).
	ProxyGIDs []uint32
	// Mode is the inbound interception mode (-m).
	Mode Mode
	// TProxyMark is the packet mark used in TPROXY mode (-t).
	TProxyMark uint32
	// TProxyRouteTable is the policy-routing table used in TPROXY mode (-r).
	TProxyRouteTable uint32

	// InboundAllPorts captures inbound connections to every port except
	// InboundExcludePorts (-b '*').
	InboundAllPorts bool
	// InboundPorts are the inbound ports captured when InboundAllPorts is false
	// (-b 80,443); empty captures nothing inbound.
	InboundPorts []uint16
	// InboundExcludePorts are never captured inbound when InboundAllPorts is set (-d).
	InboundExcludePorts []uint16

	// OutboundAllCIDRs captures outbound connections to every destination
	// (-i '*').
	OutboundAllCIDRs bool
	// OutboundCIDRs are the destinations captured when OutboundAllCIDRs is false
	// (-i 10.96.0.0/12); empty captures no destination.
	OutboundCIDRs []netip.Prefix
	// OutboundExcludeCIDRs are destinations never captured (-x).
	OutboundExcludeCIDRs []netip.Prefix
	// OutboundPorts are destination ports always captured, whatever the
	// destination address (-q).
	OutboundPorts []uint16
	// OutboundExcludePorts are destination ports never captured outbound (-o).
	OutboundExcludePorts []uint16

	// ExcludeInterfaces are interfaces whose traffic is never captured (-c).
	ExcludeInterfaces []string
	// VirtualInterfaces are interfaces (KubeVirt VMs) whose incoming traffic is
	// treated as the pod's outbound traffic and sent to the proxy port (-k).
	VirtualInterfaces []string
}

// DefaultConfig returns the configuration istio-iptables uses with no flags:
// the default ports and UID, REDIRECT mode and nothing captured.
func DefaultConfig() *Config {
	return &Config{
		ProxyPort:          DefaultProxyPort,
		InboundCapturePort: DefaultInboundCapturePort,
		InboundTunnelPort:  DefaultInboundTunnelPort,
		ProxyUIDs:          []uint32{DefaultProxyUID},
		ProxyGIDs:          []uint32{DefaultProxyUID},
		Mode:               ModeRedirect,
		TProxyMark:         DefaultTProxyMark,
		TProxyRouteTable:   DefaultTProxyRouteTable,
	}
}

// CapturesInbound reports whether any inbound connection is captured.
func (c *Config) CapturesInbound() bool {
	return c.InboundAllPorts || len(c.InboundPorts) > 0
}

// Validate checks the typed values. Each error's path is the istio-iptables
// flag the value comes from, so a message names the flag and the value.
func (c *Config) Validate() field.ErrorList {
	var errs field.ErrorList
	port := func(p *field.Path, v uint16) {
		if v == 0 {
			errs = append(errs, field.Invalid(p, v, "must be a port number between 1 and 65535"))
		}
	}
	ports := func(p *field.Path, vs []uint16) {
		for i, v := range vs {
			port(p.Index(i), v)
		}
	}
	port(flagPath(flagProxyPort), c.ProxyPort)
	port(flagPath(flagInboundCapturePort), c.InboundCapturePort)
	ports(flagPath(flagInboundPorts), c.InboundPorts)
	ports(flagPath(flagInboundExcludePorts), c.InboundExcludePorts)
	ports(flagPath(flagOutboundPorts), c.OutboundPorts)
	ports(flagPath(flagOutboundExcludePorts), c.OutboundExcludePorts)
	if c.InboundAllPorts && len(c.InboundPorts) > 0 {
		errs = append(errs, field.Invalid(flagPath(flagInboundPorts), c.InboundPorts, "cannot list ports together with '*'"))
	}
	if c.OutboundAllCIDRs && len(c.OutboundCIDRs) > 0 {
		errs = append(errs, field.Invalid(flagPath(flagOutboundCIDRs), c.OutboundCIDRs, "cannot list CIDRs together with '*'"))
	}
	if c.ProxyPort == c.InboundCapturePort && c.ProxyPort != 0 {
		errs = append(errs, field.Invalid(flagPath(flagInboundCapturePort), c.InboundCapturePort,
			fmt.Sprintf("must differ from the outbound proxy port (%s)", flagProxyPort.short)))
	}
	if len(c.ProxyUIDs) == 0 && len(c.ProxyGIDs) == 0 {
		errs = append(errs, field.Required(flagPath(flagProxyUID), "the proxy's UID or GID is needed, or its own traffic would be captured"))
	}
	switch c.Mode {
	case ModeRedirect:
	case ModeTProxy:
		if c.TProxyMark == 0 {
			errs = append(errs, field.Invalid(flagPath(flagTProxyMark), c.TProxyMark, "must not be 0"))
		}
		if c.TProxyRouteTable == 0 || (c.TProxyRouteTable >= 253 && c.TProxyRouteTable <= 255) {
			errs = append(errs, field.Invalid(flagPath(flagTProxyRouteTable), c.TProxyRouteTable,
				"must be a routing table other than 0 (unspec), 253 (default), 254 (main) and 255 (local)"))
		}
	default:
		errs = append(errs, field.NotSupported(flagPath(flagMode), c.Mode, []Mode{ModeRedirect, ModeTProxy}))
	}
	for _, f := range []struct {
		flag  flagName
		cidrs []netip.Prefix
	}{{flagOutboundCIDRs, c.OutboundCIDRs}, {flagOutboundExcludeCIDRs, c.OutboundExcludeCIDRs}} {
		for i, p := range f.cidrs {
			if !p.IsValid() {
				errs = append(errs, field.Invalid(flagPath(f.flag).Index(i), p.String(), "not a valid CIDR"))
			}
		}
	}
	for _, f := range []struct {
		flag   flagName
		ifaces []string
	}{{flagExcludeInterfaces, c.ExcludeInterfaces}, {flagVirtualInterfaces, c.VirtualInterfaces}} {
		for i, name := range f.ifaces {
			if msg := checkInterfaceName(name); msg != "" {
				errs = append(errs, field.Invalid(flagPath(f.flag).Index(i), name, msg))
			}
		}
	}
	return errs
}

// checkInterfaceName returns why name cannot be an interface name in an
// iptables rule, or "" when it can. A trailing "+" is iptables' wildcard.
func checkInterfaceName(name string) string {
	switch {
	case name == "":
		return "must not be empty"
	case len(name) > 15:
		return "must be at most 15 characters (IFNAMSIZ)"
	case name == "." || name == "..":
		return "is not an interface name"
	case strings.ContainsAny(name, "/:!\"'\\"):
		return `must not contain '/', ':', '!', quotes or backslashes`
	}
	for _, r := range name {
		if r <= ' ' || r >= 0x7f {
			return "must be printable ASCII without spaces"
		}
	}
	return ""
}
