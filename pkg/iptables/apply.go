package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/go-logr/logr"
)

// Executor runs a program with stdin and returns its standard output. It is
// the Applier's only way to touch the system, so tests can replace it.
type Executor interface {
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// OSExecutor runs programs with os/exec; a failure's error carries the
// program's standard error.
type OSExecutor struct{}

// Run implements Executor.
func (OSExecutor) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	//nolint:gosec // G204: the Applier only runs iptables-save/-restore, ip6tables-save/-restore and ip.
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Applier programs rulesets into the current network namespace with
// iptables-save, iptables-restore and, for TPROXY, ip.
type Applier struct {
	// Exec runs the programs; nil means OSExecutor.
	Exec Executor
	// Log receives progress; the restore input is logged at V(1).
	Log logr.Logger
}

// applied remembers what to put back if a later step fails.
type applied struct {
	family Family
	save   string
	tables []string
}

// Apply programs each ruleset in turn. Each family's rules go in with one
// iptables-restore --noflush run, which applies all of them or none; if a
// later family (or TPROXY's routing) fails, the families already done are put
// back as they were, so Apply changes everything or nothing.
func (a *Applier) Apply(ctx context.Context, rulesets []*Ruleset) error {
	ex := a.Exec
	if ex == nil {
		ex = OSExecutor{}
	}
	var done []applied
	fail := func(err error) error {
		return errors.Join(err, a.rollback(ctx, ex, done))
	}
	for _, rs := range rulesets {
		save, err := ex.Run(ctx, nil, rs.Family.SaveCommand())
		if err != nil {
			return fail(fmt.Errorf("reading the current %s rules: %w", rs.Family, err))
		}
		input, err := rs.Render(string(save))
		if err != nil {
			return fail(fmt.Errorf("rendering the %s rules: %w", rs.Family, err))
		}
		if input == "" {
			a.Log.Info("nothing to capture and nothing to clean up", "family", rs.Family)
		} else {
			a.Log.V(1).Info("applying rules", "family", rs.Family, "command", rs.Family.RestoreCommand(), "input", strings.Split(strings.TrimSpace(input), "\n"))
			if _, err := ex.Run(ctx, []byte(input), rs.Family.RestoreCommand(), "--noflush", "--wait=10"); err != nil {
				return fail(fmt.Errorf("applying the %s rules (none of them were applied): %w", rs.Family, err))
			}
			done = append(done, applied{family: rs.Family, save: string(save), tables: renderedTables(input)})
		}
		if err := a.route(ctx, ex, rs); err != nil {
			return fail(fmt.Errorf("setting up %s policy routing for TPROXY: %w", rs.Family, err))
		}
		a.Log.Info("applied traffic capture rules", "family", rs.Family, "tables", len(rs.Tables))
	}
	return nil
}

// route sets up TPROXY's policy routing, adding the rule only when missing and
// replacing the route, so re-running converges.
func (a *Applier) route(ctx context.Context, ex Executor, rs *Ruleset) error {
	if rs.PolicyRoute == nil {
		return nil
	}
	cmds := rs.routeCommands()
	mark, table := hex(rs.PolicyRoute.Mark), itoa(rs.PolicyRoute.Table)
	out, err := ex.Run(ctx, nil, "ip", rs.Family.ipFlag(), "rule", "show", "fwmark", mark, "lookup", table)
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(out)) != "" {
		cmds = cmds[1:]
	}
	for _, c := range cmds {
		if _, err := ex.Run(ctx, nil, "ip", c...); err != nil {
			return err
		}
	}
	return nil
}

// rollback restores the tables each applied family touched, newest first.
func (a *Applier) rollback(ctx context.Context, ex Executor, done []applied) error {
	var errs []error
	for i := len(done) - 1; i >= 0; i-- {
		d := done[i]
		input, err := rollbackInput(d.save, d.tables)
		if err == nil {
			_, err = ex.Run(ctx, []byte(input), d.family.RestoreCommand(), "--wait=10")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rolling back the %s rules: %w", d.family, err))
			continue
		}
		a.Log.Info("rolled back", "family", d.family)
	}
	return errors.Join(errs...)
}

// PodHasIPv6 reports whether an interface of the current network namespace
// other than loopback has a global IPv6 address (not link-local); only then
// are ip6tables rules needed, unless forced with --dual-stack.
func PodHasIPv6() (bool, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return false, fmt.Errorf("listing network interfaces: %w", err)
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			return false, fmt.Errorf("listing the addresses of %s: %w", iface.Name, err)
		}
		for _, addr := range addrs {
			if ipnet, ok := addr.(*net.IPNet); ok {
				if a, ok := netip.AddrFromSlice(ipnet.IP); ok && IsGlobalIPv6(a) {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// IsGlobalIPv6 reports whether a is an IPv6 address a pod can be reached at
// from outside: global unicast (unique-local included), not link-local, not
// loopback and not an IPv4-mapped address.
func IsGlobalIPv6(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.IsGlobalUnicast()
}
