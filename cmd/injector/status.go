package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/remora-mesh/remora/internal/services"
	"github.com/remora-mesh/remora/internal/upgrade"
)

// statusOptions are the flags of injector status.
type statusOptions struct {
	injectorConfigOptions
	namespace string
}

func newStatusCmd() *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the workloads whose injected sidecars are outdated",
		Long: `List the injected pods of the cluster (or of one namespace), group them by
workload, and compare each with the injector's current configuration, read from
its ConfigMap (or --config-dir). For each workload it prints how many pods carry
a sidecar injected with another configuration, what changed (image: the proxy
image; config: anything else) and a status:

  up to date                       every pod was injected with the current configuration
  needs restart                    some pods are outdated; recreating them refreshes the sidecar
                                   (CHANGED services: a Service the pods exclude from the capture
                                   by name has new addresses, listed below the table)
  restarting                       some pods are outdated and a rollout is in progress
  injected but no longer selected  the namespace or the pod no longer selects injection;
                                   recreating the pods removes the sidecar

Pass the same --revision and --native-sidecars as the injector's serve command,
so that the configuration hash is the one the injector computes.`,
		Example: `  # Every namespace, configuration from the remora-system/remora ConfigMap (the Helm release "remora"):
  injector status

  # One namespace, with another kubeconfig context:
  injector status -n shop --context prod

  # Against a local configuration directory:
  injector status --config-dir ./config`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if errs := o.validate(field.NewPath("status")); len(errs) > 0 {
				return fmt.Errorf("invalid flags: %w", errs.ToAggregate())
			}
			return o.run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	o.addFlags(f)
	f.StringVarP(&o.namespace, "namespace", "n", "", "only this namespace (default: every namespace)")
	return cmd
}

func (o *statusOptions) run(ctx context.Context, out io.Writer) error {
	c, restCfg, err := o.client()
	if err != nil {
		return err
	}
	cfg, _, err := o.loadConfig(ctx, c, restCfg)
	if err != nil {
		return err
	}
	snap, err := upgrade.ListSnapshot(ctx, c, cfg, o.namespace, upgrade.ListPods(c, o.namespace), (&services.Resolver{Reader: c}).Lookup)
	if err != nil {
		return err
	}
	return printStatus(out, upgrade.Evaluate(snap))
}

// printStatus writes the table and a summary line.
func printStatus(out io.Writer, rep *upgrade.Report) error {
	if len(rep.Workloads) == 0 {
		_, err := fmt.Fprintf(out, "No injected pods of revision %q. Configuration %s.\n", rep.Revision, rep.Hash)
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if _, err := fmt.Fprintln(tw, "NAMESPACE\tWORKLOAD\tKIND\tOUTDATED/TOTAL\tCHANGED\tSTATUS"); err != nil {
		return err
	}
	needs := 0
	for _, w := range rep.Workloads {
		// A pod no longer selected is as stale as an outdated one: both
		// change when recreated.
		if _, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\n",
			w.Ref.Namespace, w.Ref.Name, w.Ref.Kind, w.Outdated+w.Unselected, w.Total, w.Change, w.Status); err != nil {
			return err
		}
		if w.Status != upgrade.StatusUpToDate {
			needs++
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := printChangedServices(out, rep); err != nil {
		return err
	}
	_, err := fmt.Fprintf(out, "\n%d of %d workloads not up to date; %d of %d injected pods outdated, %d no longer selected (configuration %s, revision %s).\n",
		needs, len(rep.Workloads), rep.Pods.Outdated, rep.Pods.Total, rep.Pods.Unselected, rep.Hash, rep.Revision)
	return err
}

// printChangedServices lists, after the table, the Services whose addresses
// changed under the workloads that exclude them.
func printChangedServices(out io.Writer, rep *upgrade.Report) error {
	sep := "\n"
	for _, w := range rep.Workloads {
		if len(w.ChangedServices) == 0 {
			continue
		}
		names := make([]string, len(w.ChangedServices))
		for i, r := range w.ChangedServices {
			names[i] = r.String()
		}
		if _, err := fmt.Fprintf(out, "%s%s %s/%s: excluded Services with new addresses (recreate its pods so they are resolved again): %s\n",
			sep, w.Ref.Kind, w.Ref.Namespace, w.Ref.Name, strings.Join(names, ", ")); err != nil {
			return err
		}
		sep = ""
	}
	return nil
}
