package main

import (
	"context"
	"fmt"
	"io"

	"github.com/go-logr/logr/funcr"
	"github.com/spf13/cobra"

	"github.com/remora-mesh/remora/pkg/iptables"
)

// iptablesDeps are what the istio-iptables command needs from the system,
// replaceable in tests.
type iptablesDeps struct {
	exec       iptables.Executor
	podHasIPv6 func() (bool, error)
}

func newIptablesCmd() *cobra.Command {
	return newIptablesCmdWith(iptablesDeps{exec: iptables.OSExecutor{}, podHasIPv6: iptables.PodHasIPv6})
}

func newIptablesCmdWith(deps iptablesDeps) *cobra.Command {
	opts := iptables.NewOptions()
	cmd := &cobra.Command{
		Use:     "istio-iptables",
		Aliases: []string{"iptables"},
		Short:   "Set up the pod's traffic capture (what the istio-init container runs)",
		Long: `Set up the iptables rules that send a pod's TCP traffic through its proxy,
accepting Istio's istio-iptables flags with the same meaning. Run it in the
pod's network namespace as root with NET_ADMIN and NET_RAW.

Outbound connections go to the proxy port (-p) unless they come from the proxy
(-u/-g), go to an excluded port (-o) or CIDR (-x), or are not in -i; ports in
-q are always captured. Inbound connections to -b ports ('*' for all but -d)
go to the inbound capture port (-z). IPv6 gets the same rules through
ip6tables when the pod has a global IPv6 address (or with --dual-stack).

Each family's rules are applied with one iptables-restore run (all or
nothing); re-running replaces them instead of adding duplicates. Invalid flags
are reported, naming the flag, before anything is changed.`,
		Example: `  # What the injected istio-init container runs
  injector istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020

  # Print the rules for a pod whose MySQL server at 10.0.0.12 must be reached directly
  injector istio-iptables --dry-run -i '*' -x 10.0.0.12/32 -b '*' -d 15090,15021,15020`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runIptables(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), opts, deps)
		},
	}
	opts.AddFlags(cmd.Flags())
	return cmd
}

func runIptables(ctx context.Context, out, errOut io.Writer, opts *iptables.Options, deps iptablesDeps) error {
	cfg, errs := opts.Config()
	if len(errs) > 0 {
		return fmt.Errorf("invalid istio-iptables flags, nothing was changed: %w", errs.ToAggregate())
	}
	log := funcr.New(func(prefix, args string) {
		if prefix != "" {
			_, _ = fmt.Fprintln(errOut, prefix, args)
			return
		}
		_, _ = fmt.Fprintln(errOut, args)
	}, funcr.Options{Verbosity: opts.Verbosity()}).WithName("istio-iptables")

	hasIPv6, err := deps.podHasIPv6()
	if err != nil {
		return fmt.Errorf("detecting the pod's IPv6 addresses: %w", err)
	}
	var rulesets []*iptables.Ruleset
	for _, fam := range iptables.Families(hasIPv6, opts.DualStack) {
		rulesets = append(rulesets, iptables.Build(cfg, fam))
	}

	switch {
	case opts.DryRun:
		for _, rs := range rulesets {
			if _, err := fmt.Fprint(out, rs.String()); err != nil {
				return fmt.Errorf("writing the rules: %w", err)
			}
		}
		return nil
	case opts.SkipRuleApply:
		log.Info("--skip-rule-apply: not applying the rules")
	default:
		applier := &iptables.Applier{Exec: deps.exec, Log: log}
		if err := applier.Apply(ctx, rulesets); err != nil {
			return fmt.Errorf("applying the traffic capture rules: %w", err)
		}
	}
	if opts.RunValidation {
		if err := iptables.ValidateCapture(ctx, cfg, opts.ProbeAddress(), opts.ProbeTimeout, log); err != nil {
			return fmt.Errorf("validating the traffic capture: %w", err)
		}
	}
	return nil
}
