package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/configwatch"
	"github.com/remora-mesh/remora/pkg/templates"
	"github.com/remora-mesh/remora/pkg/upgrade"
)

func init() {
	subcommands = append(subcommands, newStatusCmd)
}

// statusOptions are the flags of injector status.
type statusOptions struct {
	kubeconfig      string
	kubeContext     string
	namespace       string
	configNamespace string
	configMap       string
	configDir       string
	revision        string
	nativeSidecars  string
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
			return o.run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty: $KUBECONFIG, the in-cluster config, then ~/.kube/config")
	f.StringVar(&o.kubeContext, "context", "", "kubeconfig context to use")
	f.StringVarP(&o.namespace, "namespace", "n", "", "only this namespace (default: every namespace)")
	f.StringVar(&o.configNamespace, "config-namespace", "remora-system", "namespace of the injector's configuration ConfigMap")
	f.StringVar(&o.configMap, "configmap", "remora", "the injector's configuration ConfigMap (values.yaml, mesh.yaml, *.tmpl)")
	f.StringVar(&o.configDir, "config-dir", "", "read the configuration from this directory instead of the ConfigMap")
	f.StringVar(&o.revision, "revision", "", "the injector's --revision: overrides the values' revision when set")
	f.StringVar(&o.nativeSidecars, "native-sidecars", "auto", "the injector's --native-sidecars: true and false override the values' global.nativeSidecars")
	return cmd
}

func (o *statusOptions) restConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: o.kubeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	return cfg, nil
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
	cfg, err := o.loadConfig(ctx, c)
	if err != nil {
		return err
	}
	snap, err := o.snapshot(ctx, c, cfg)
	if err != nil {
		return err
	}
	return printStatus(out, upgrade.Evaluate(snap))
}

// loadConfig computes the configuration the injector serves: the same
// directory loading and command-line overrides as the serve command, so that
// the hash matches the one injected pods carry.
func (o *statusOptions) loadConfig(ctx context.Context, c client.Client) (*config.Config, error) {
	dir := o.configDir
	if dir == "" {
		cm := &corev1.ConfigMap{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: o.configNamespace, Name: o.configMap}, cm); err != nil {
			return nil, fmt.Errorf("reading the injector's ConfigMap %s/%s (see --config-namespace, --configmap, --config-dir): %w",
				o.configNamespace, o.configMap, err)
		}
		tmp, err := os.MkdirTemp("", "remora-status-")
		if err != nil {
			return nil, fmt.Errorf("materialising the ConfigMap: %w", err)
		}
		defer func() { _ = os.RemoveAll(tmp) }()
		if err := writeConfigDir(tmp, cm); err != nil {
			return nil, fmt.Errorf("materialising ConfigMap %s/%s: %w", o.configNamespace, o.configMap, err)
		}
		dir = tmp
	}
	w, err := configwatch.New(configwatch.Options{
		Dir:       dir,
		Overrides: configwatch.Overrides{Revision: o.revision, NativeSidecars: o.nativeSidecars},
	})
	if err != nil {
		return nil, fmt.Errorf("loading the injection configuration: %w", err)
	}
	return w.Current(), nil
}

// writeConfigDir writes the ConfigMap's configuration keys as the kubelet
// mounts them for the injector.
func writeConfigDir(dir string, cm *corev1.ConfigMap) error {
	for name, data := range cm.Data {
		if name != config.ValuesFile && name != config.MeshFile && !strings.HasSuffix(name, templates.Suffix) {
			continue
		}
		if filepath.Base(name) != name || strings.HasPrefix(name, ".") {
			return fmt.Errorf("key %q is not a plain file name", name)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// snapshot reads what upgrade.Evaluate needs from the API server: in one
// namespace, or in all.
func (o *statusOptions) snapshot(ctx context.Context, c client.Client, cfg *config.Config) (*upgrade.Snapshot, error) {
	s := &upgrade.Snapshot{Config: cfg, Revision: o.revision}
	var opts []client.ListOption
	if o.namespace != "" {
		opts = append(opts, client.InNamespace(o.namespace))
		ns := &metav1.PartialObjectMetadata{}
		ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
		if err := c.Get(ctx, client.ObjectKey{Name: o.namespace}, ns); err != nil {
			return nil, fmt.Errorf("reading namespace %s: %w", o.namespace, err)
		}
		s.Namespaces = []metav1.PartialObjectMetadata{*ns}
	} else {
		nss := &metav1.PartialObjectMetadataList{}
		nss.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
		if err := c.List(ctx, nss); err != nil {
			return nil, fmt.Errorf("listing namespaces: %w", err)
		}
		s.Namespaces = nss.Items
	}
	pods := &corev1.PodList{}
	deps := &appsv1.DeploymentList{}
	sts := &appsv1.StatefulSetList{}
	dss := &appsv1.DaemonSetList{}
	rss := &metav1.PartialObjectMetadataList{}
	rss.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ReplicaSetList"))
	jobs := &metav1.PartialObjectMetadataList{}
	jobs.SetGroupVersionKind(batchv1.SchemeGroupVersion.WithKind("JobList"))
	for _, l := range []struct {
		what string
		list client.ObjectList
	}{{"pods", pods}, {"Deployments", deps}, {"StatefulSets", sts}, {"DaemonSets", dss}, {"ReplicaSets", rss}, {"Jobs", jobs}} {
		if err := c.List(ctx, l.list, opts...); err != nil {
			return nil, fmt.Errorf("listing %s: %w", l.what, err)
		}
	}
	for i := range pods.Items {
		if info := upgrade.PodInfoFromPod(&pods.Items[i]); info != nil {
			s.Pods = append(s.Pods, info)
		}
	}
	s.Deployments, s.StatefulSets, s.DaemonSets = deps.Items, sts.Items, dss.Items
	s.ReplicaSets, s.Jobs = rss.Items, jobs.Items
	return s, nil
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
