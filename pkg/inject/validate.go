package inject

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// validator reads the pod's annotations, each with the parser for its
// kind of value, and collects every invalid one rather than stopping at the
// first.
type validator struct {
	ann  map[string]string
	errs []FieldError
}

func (v *validator) fail(name, value, allowed string) {
	v.errs = append(v.errs, FieldError{Annotation: name, Value: value, Allowed: allowed})
}

func (v *validator) get(name string) (string, bool) {
	s, ok := v.ann[name]
	return s, ok
}

func (v *validator) boolean(name string) *bool {
	s, ok := v.get(name)
	if !ok {
		return nil
	}
	b, err := parseBool(s)
	if err != nil {
		v.fail(name, s, "must be true or false")
		return nil
	}
	return &b
}

func parseBool(s string) (bool, error) {
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean: %q", s)
}

// portList validates a comma-separated list of ports (1-65535); with
// wildcard, "*" is allowed alone. It returns the normalised list.
func (v *validator) portList(name string, wildcard bool) *string {
	return v.list(name, wildcard, ParsePortList, "must be a comma-separated list of ports 1-65535")
}

// cidrList validates a comma-separated list of CIDRs; with wildcard, "*" is
// allowed alone. It returns the normalised list.
func (v *validator) cidrList(name string, wildcard bool) *string {
	return v.list(name, wildcard, ParseCIDRList, "must be a comma-separated list of CIDRs such as 10.0.0.0/8")
}

// list reads annotation name with parse, recording a failure that says
// what is allowed.
func (v *validator) list(name string, wildcard bool, parse func(string, bool) (string, error), allowed string) *string {
	s, ok := v.get(name)
	if !ok {
		return nil
	}
	out, err := parse(s, wildcard)
	if err != nil {
		if wildcard {
			allowed += ", or *"
		}
		v.fail(name, s, allowed+": "+err.Error())
		return nil
	}
	return &out
}

// ParsePortList validates a comma-separated port list and returns it
// normalised (spaces removed). An empty list is allowed.
func ParsePortList(s string, wildcard bool) (string, error) {
	return parseList(s, wildcard, func(p string) (string, error) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q is not a port 1-65535", p)
		}
		return strconv.Itoa(n), nil
	})
}

// ParseCIDRList validates a comma-separated list of CIDRs (IPv4 or IPv6;
// bare IPs are taken as a single address); with wildcard "*" is allowed
// alone. It returns the list normalised for istio-iptables.
func ParseCIDRList(s string, wildcard bool) (string, error) {
	return parseList(s, wildcard, func(p string) (string, error) {
		if strings.Contains(p, "/") {
			if _, err := netip.ParsePrefix(p); err != nil {
				return "", fmt.Errorf("%q is not a CIDR", p)
			}
			return p, nil
		}
		addr, err := netip.ParseAddr(p)
		if err != nil || addr.Zone() != "" {
			return "", fmt.Errorf("%q is not an IP address or CIDR", p)
		}
		return netip.PrefixFrom(addr, addr.BitLen()).String(), nil
	})
}

// parseList walks a comma-separated list: empty is allowed, "*" alone when
// wildcard, and every other entry must pass item, which returns it
// normalised.
func parseList(s string, wildcard bool, item func(string) (string, error)) (string, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return "", nil
	}
	if t == "*" {
		if !wildcard {
			return "", fmt.Errorf("* is not allowed here")
		}
		return "*", nil
	}
	parts := strings.Split(t, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return "", fmt.Errorf("empty entry at position %d", i+1)
		}
		norm, err := item(p)
		if err != nil {
			return "", err
		}
		parts[i] = norm
	}
	return strings.Join(parts, ","), nil
}

var ifaceName = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,15}$`)

func (v *validator) interfaceList(name string) *string {
	s, ok := v.get(name)
	if !ok {
		return nil
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return &t
	}
	parts := strings.Split(t, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !ifaceName.MatchString(p) {
			v.fail(name, s, "must be a comma-separated list of interface names (1-15 characters of letters, digits, _ . : @ -)")
			return nil
		}
		parts[i] = p
	}
	out := strings.Join(parts, ",")
	return &out
}

func (v *validator) int32Range(name string, min, max int64) *int32 {
	s, ok := v.get(name)
	if !ok {
		return nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
	if err != nil || n < min || n > max {
		v.fail(name, s, fmt.Sprintf("must be a whole number from %d to %d", min, max))
		return nil
	}
	r := int32(n)
	return &r
}

func (v *validator) quantity(name string) *resource.Quantity {
	s, ok := v.get(name)
	if !ok {
		return nil
	}
	q, err := resource.ParseQuantity(strings.TrimSpace(s))
	if err != nil {
		v.fail(name, s, "must be a Kubernetes quantity such as 100m, 1, 128Mi or 1Gi")
		return nil
	}
	if q.Sign() < 0 {
		v.fail(name, s, "must not be negative")
		return nil
	}
	return &q
}

// Envoy's log levels.
var envoyLevels = map[string]bool{
	"trace": true, "debug": true, "info": true, "warning": true, "warn": true,
	"error": true, "critical": true, "off": true,
}

// The agent's (Istio's logging scopes) levels.
var agentLevels = map[string]bool{
	"debug": true, "info": true, "warn": true, "error": true, "fatal": true, "none": true,
}

func (v *validator) level(name string) string {
	s, ok := v.get(name)
	if !ok {
		return ""
	}
	if !envoyLevels[s] {
		v.fail(name, s, "must be one of trace, debug, info, warning, warn, error, critical, off")
		return ""
	}
	return s
}

var componentName = regexp.MustCompile(`^[a-z0-9_]+$`)

// scopedLevels validates "name:level,name:level" (and, with bareAllowed, a
// bare level that applies to the default scope).
func (v *validator) scopedLevels(name string, levels map[string]bool, bareAllowed bool, allowedText string) string {
	s, ok := v.get(name)
	if !ok {
		return ""
	}
	t := strings.TrimSpace(s)
	if t == "" {
		v.fail(name, s, allowedText)
		return ""
	}
	for _, part := range strings.Split(t, ",") {
		comp, lvl, found := strings.Cut(strings.TrimSpace(part), ":")
		if !found {
			if bareAllowed && levels[comp] {
				continue
			}
			v.fail(name, s, allowedText)
			return ""
		}
		if !componentName.MatchString(comp) || !levels[lvl] {
			v.fail(name, s, allowedText)
			return ""
		}
	}
	return t
}
