package main

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/manifest"
	"github.com/remora-mesh/remora/internal/services"
	"github.com/remora-mesh/remora/pkg/inject"
)

// webhookPath is where the injector serves admissions (and below it).
const webhookPath = "/inject"

// explainOptions are the flags of injector explain.
type explainOptions struct {
	injectorConfigOptions
	namespace        string
	namespaceSet     bool
	file             string
	service          string
	serviceNamespace string
	pod              string
}

func newExplainCmd() *cobra.Command {
	o := &explainOptions{}
	cmd := &cobra.Command{
		Use:   "explain (-n NAMESPACE POD | -n NAMESPACE -f FILE|-)",
		Short: "Explain why a pod was (or would be) injected, or not",
		Long: `Explain answers "why does (or doesn't) my pod have a sidecar?" for a running
pod, or for the pods of a manifest about to be applied (a Pod, or the pod
template of a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob).

It reads the live MutatingWebhookConfigurations whose webhooks call the
injector's Service (--service in --service-namespace, path /inject), evaluates
each webhook's namespaceSelector against the namespace's labels and its
objectSelector against the pod's labels as the API server does, then runs the
injector's own policy with its configuration (its ConfigMap, or --config-dir,
with the same --revision and --native-sidecars as serve). It prints the
verdict and the chain of reasons, each naming the label, annotation or setting
that decided; for an injected pod, whether its remora.io/injection-hash is the
current configuration's.`,
		Example: `  # A running pod:
  injector explain -n shop web-7d9c6-abcde

  # The pods of a manifest, before applying it:
  injector explain -n shop -f deployment.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.pod = args[0]
			}
			o.namespaceSet = cmd.Flags().Changed("namespace")
			if err := o.Validate(); err != nil {
				return err
			}
			return o.run(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd)
	return cmd
}

// AddFlags registers the flags.
func (o *explainOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	o.addFlags(f)
	f.StringVarP(&o.namespace, "namespace", "n", "default", "the pod's namespace")
	f.StringVarP(&o.file, "filename", "f", "", "explain the pods of this manifest file (or - for standard input) instead of a running pod")
	f.StringVar(&o.service, "service", "remora", "the injector's Service, which its webhooks call")
	f.StringVar(&o.serviceNamespace, "service-namespace", "", "the namespace of the injector's Service (default: --config-namespace)")
}

// Validate checks the flags and the argument.
func (o *explainOptions) Validate() error {
	root := field.NewPath("explain")
	errs := o.validate(root)
	switch {
	case o.pod == "" && o.file == "":
		errs = append(errs, field.Required(root.Child("pod"), "give a pod's name, or -f FILE"))
	case o.pod != "" && o.file != "":
		errs = append(errs, field.Invalid(root.Child("filename"), o.file, "give a pod's name or -f FILE, not both"))
	}
	if o.namespace == "" {
		errs = append(errs, field.Required(root.Child("namespace"), "-n must name a namespace"))
	}
	if o.service == "" {
		errs = append(errs, field.Required(root.Child("service"), "--service must name the injector's Service"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid flags: %w", errs.ToAggregate())
	}
	return nil
}

// explainTarget is a pod to explain and how to name it.
type explainTarget struct {
	name string
	pod  *corev1.Pod
}

func (o *explainOptions) run(ctx context.Context, stdin io.Reader, out io.Writer) error {
	c, restCfg, err := o.client()
	if err != nil {
		return err
	}
	targets, err := o.targets(ctx, c, stdin)
	if err != nil {
		return err
	}
	cfg, from, err := o.loadConfig(ctx, c, restCfg)
	if err != nil {
		return err
	}
	mwcs := &admissionregistrationv1.MutatingWebhookConfigurationList{}
	if err := c.List(ctx, mwcs); err != nil {
		return fmt.Errorf("listing MutatingWebhookConfigurations: %w", err)
	}
	svcNamespace := o.serviceNamespace
	if svcNamespace == "" {
		svcNamespace = o.configNamespace
	}
	webhooks := webhooksFor(mwcs.Items, svcNamespace, o.service, webhookPath)
	nsLabels := map[string]map[string]string{}
	for i, t := range targets {
		labels, ok := nsLabels[t.pod.Namespace]
		if !ok {
			ns := &corev1.Namespace{}
			if err := c.Get(ctx, client.ObjectKey{Name: t.pod.Namespace}, ns); err != nil {
				return fmt.Errorf("reading namespace %q of %s: %w", t.pod.Namespace, t.name, err)
			}
			labels = ns.Labels
			nsLabels[t.pod.Namespace] = labels
		}
		e := explainPod(&explainInput{
			Pod: t.pod, Namespace: t.pod.Namespace, NamespaceLabels: labels,
			Webhooks: webhooks, Service: svcNamespace + "/" + o.service + " at " + webhookPath,
			OwnNamespace: svcNamespace, Config: cfg, ConfigFrom: from,
			Services: (&services.Resolver{Reader: c}).For(ctx),
		})
		if i > 0 {
			if _, err := fmt.Fprintln(out); err != nil {
				return err
			}
		}
		if err := printExplanation(out, t.name, e); err != nil {
			return err
		}
	}
	return nil
}

// targets returns the running pod, or the pods of the manifest.
func (o *explainOptions) targets(ctx context.Context, c client.Reader, stdin io.Reader) ([]explainTarget, error) {
	if o.pod != "" {
		pod := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: o.namespace, Name: o.pod}, pod); err != nil {
			return nil, fmt.Errorf("reading pod %s/%s: %w", o.namespace, o.pod, err)
		}
		return []explainTarget{{name: "Pod " + o.namespace + "/" + o.pod, pod: pod}}, nil
	}
	in, err := readInputs(o.file, stdin)
	if err != nil {
		return nil, fmt.Errorf("-f %s: %w", o.file, err)
	}
	var targets []explainTarget
	var nsErr error
	_, _, err = manifest.Process(bytes.NewReader(in), func(pod *corev1.Pod, wl inject.Workload) (*corev1.Pod, bool, string, string, error) {
		kind, name := "Pod", pod.Name
		if wl.Kind != "" {
			kind, name = wl.Kind, wl.Name
		}
		switch {
		case pod.Namespace == "":
			pod.Namespace = o.namespace
		case o.namespaceSet && pod.Namespace != o.namespace && nsErr == nil:
			nsErr = fmt.Errorf("-f %s: %s %s is in namespace %q, not -n %q", o.file, kind, name, pod.Namespace, o.namespace)
		}
		targets = append(targets, explainTarget{name: kind + " " + pod.Namespace + "/" + name, pod: pod})
		return pod, false, "", "", nil
	})
	if err != nil {
		return nil, fmt.Errorf("-f %s: %w", o.file, err)
	}
	if nsErr != nil {
		return nil, nsErr
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("-f %s: no Pod or workload with a pod template", o.file)
	}
	return targets, nil
}

// printExplanation writes the verdict and its numbered reasons.
func printExplanation(out io.Writer, name string, e explanation) error {
	if _, err := fmt.Fprintf(out, "%s: %s\n", name, e.Verdict); err != nil {
		return err
	}
	for i, r := range e.Reasons {
		if _, err := fmt.Fprintf(out, "  %d. %s\n", i+1, r); err != nil {
			return err
		}
	}
	return nil
}
