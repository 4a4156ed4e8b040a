package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/upgrade"
	"github.com/remora-mesh/remora/pkg/config"
)

// statusOptions are the flags of injector status.
type statusOptions struct {
	clusterOptions
	namespace       string
	configNamespace string
	configMap       string
	configDir       string
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
	f.StringVar(&o.configNamespace, "config-namespace", "remora-system", "namespace of the injector's configuration ConfigMap")
	f.StringVar(&o.configMap, "configmap", "remora", "the injector's configuration ConfigMap (values.yaml, mesh.yaml, *.tmpl)")
	f.StringVar(&o.configDir, "config-dir", "", "read the configuration from this directory instead of the ConfigMap")
	return cmd
}

func (o *statusOptions) run(ctx context.Context, out io.Writer) error {
	restCfg, err := o.restConfig()
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return fmt.Errorf("building the scheme: %w", err)
	}
	c, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating the client: %w", err)
	}
	cfg, err := o.loadConfig(ctx, c, restCfg)
	if err != nil {
		return err
	}
	snap, err := upgrade.ListSnapshot(ctx, c, cfg, o.namespace, upgrade.ListPods(c, o.namespace))
	if err != nil {
		return err
	}
	return printStatus(out, upgrade.Evaluate(snap))
}

// loadConfig computes the configuration the injector serves: from its
// ConfigMap's data (or --config-dir), with the overrides serve applies (auto
// resolved by the API server's version), so that the hash matches the one
// injected pods carry.
func (o *statusOptions) loadConfig(ctx context.Context, c client.Reader, restCfg *rest.Config) (*config.Config, error) {
	overrides, err := o.overrides(restCfg, logr.Discard())
	if err != nil {
		return nil, err
	}
	var (
		src  config.Sources
		from string
	)
	if o.configDir != "" {
		if src, err = config.FromDir(o.configDir); err != nil {
			return nil, fmt.Errorf("loading the injection configuration: %w", err)
		}
		from = "directory " + o.configDir
	} else {
		cm := &corev1.ConfigMap{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: o.configNamespace, Name: o.configMap}, cm); err != nil {
			return nil, fmt.Errorf("reading the injector's ConfigMap %s/%s (see --config-namespace, --configmap, --config-dir): %w",
				o.configNamespace, o.configMap, err)
		}
		src = config.FromData(cm.Data)
		from = "ConfigMap " + o.configNamespace + "/" + o.configMap
	}
	cfg, err := config.Load(src, overrides)
	if err != nil {
		return nil, fmt.Errorf("loading the injection configuration from %s: %w", from, err)
	}
	return cfg, nil
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
	_, err := fmt.Fprintf(out, "\n%d of %d workloads not up to date; %d of %d injected pods outdated, %d no longer selected (configuration %s, revision %s).\n",
		needs, len(rep.Workloads), rep.Pods.Outdated, rep.Pods.Total, rep.Pods.Unselected, rep.Hash, rep.Revision)
	return err
}
