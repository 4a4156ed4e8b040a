package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// cleanupOptions are the flags of `injector cleanup`.
type cleanupOptions struct {
	kubeconfig, kubeContext string
	namespace               string
	// podSelector selects the injector's pods, which must be gone before anything is deleted:
	// a running replica would recreate its Lease or certificate Secret.
	podSelector  string
	leases       []string
	secrets      []string
	timeout      time.Duration
	pollInterval time.Duration
}

func newCleanupCmd() *cobra.Command {
	o := &cleanupOptions{pollInterval: time.Second}
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Delete what the injector and cert-manager made at run time, once the injector's pods are gone (the chart's uninstall hook)",
		Long: `cleanup deletes the objects of a release that Helm does not own because they were
made at run time: the leader election Lease (made by the injector), the self-managed
certificate Secret (made by the injector) and cert-manager's certificate Secrets
(cert-manager keeps a Secret when its Certificate is deleted). It first waits until no pod
matches --wait-for-pods, since a replica still running would make them again. Objects
already gone are fine. The chart runs it as a post-delete hook of helm uninstall.`,
		Example: `  injector cleanup --namespace remora-system \
    --wait-for-pods app.kubernetes.io/instance=remora,app.kubernetes.io/name=remora \
    --lease remora-injector-leader --secret remora-tls --secret remora-ca`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			restCfg, err := (&clusterOptions{kubeconfig: o.kubeconfig, kubeContext: o.kubeContext}).restConfig()
			if err != nil {
				return err
			}
			cs, err := kubernetes.NewForConfig(restCfg)
			if err != nil {
				return fmt.Errorf("creating a client: %w", err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			return o.run(ctx, cs, cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd)
	return cmd
}

// AddFlags registers the options' flags.
func (o *cleanupOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty: $KUBECONFIG, the in-cluster config, then ~/.kube/config")
	f.StringVar(&o.kubeContext, "context", "", "kubeconfig context to use")
	f.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the release namespace, where the objects are (default $POD_NAMESPACE)")
	f.StringVar(&o.podSelector, "wait-for-pods", "", "label selector of the injector's pods: wait until none is left before deleting")
	f.StringArrayVar(&o.leases, "lease", nil, "name of a Lease to delete (repeatable)")
	f.StringArrayVar(&o.secrets, "secret", nil, "name of a Secret to delete (repeatable)")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up after this long")
}

// Validate reports every invalid flag at once.
func (o *cleanupOptions) Validate() error {
	var errs field.ErrorList
	root := field.NewPath("cleanup")
	if o.namespace == "" {
		errs = append(errs, field.Required(root.Child("namespace"), "set --namespace or $POD_NAMESPACE"))
	}
	if len(o.leases)+len(o.secrets) == 0 {
		errs = append(errs, field.Required(root.Child("lease"), "name at least one --lease or --secret to delete"))
	}
	if o.podSelector != "" {
		if _, err := labels.Parse(o.podSelector); err != nil {
			errs = append(errs, field.Invalid(root.Child("wait-for-pods"), o.podSelector, err.Error()))
		}
	}
	if o.timeout <= 0 {
		errs = append(errs, field.Invalid(root.Child("timeout"), o.timeout.String(), "must be positive"))
	}
	return errs.ToAggregate()
}

// run waits for the pods to be gone, then deletes the named objects, reporting each on out.
func (o *cleanupOptions) run(ctx context.Context, cs kubernetes.Interface, out io.Writer) error {
	if o.podSelector != "" {
		if err := o.waitForPodsGone(ctx, cs, out); err != nil {
			return err
		}
	}
	var errs []error
	report := func(kind, name string, err error) {
		switch {
		case err == nil:
			_, _ = fmt.Fprintf(out, "deleted %s %s/%s\n", kind, o.namespace, name)
		case apierrors.IsNotFound(err):
			_, _ = fmt.Fprintf(out, "%s %s/%s: already gone\n", kind, o.namespace, name)
		default:
			errs = append(errs, fmt.Errorf("deleting %s %s/%s: %w", kind, o.namespace, name, err))
		}
	}
	for _, name := range o.leases {
		report("Lease", name, cs.CoordinationV1().Leases(o.namespace).Delete(ctx, name, metav1.DeleteOptions{}))
	}
	for _, name := range o.secrets {
		report("Secret", name, cs.CoreV1().Secrets(o.namespace).Delete(ctx, name, metav1.DeleteOptions{}))
	}
	return errors.Join(errs...)
}

// waitForPodsGone polls until no pod in the namespace matches the selector.
func (o *cleanupOptions) waitForPodsGone(ctx context.Context, cs kubernetes.Interface, out io.Writer) error {
	var left []string
	last := ""
	err := wait.PollUntilContextCancel(ctx, o.pollInterval, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(o.namespace).List(ctx, metav1.ListOptions{LabelSelector: o.podSelector})
		if err != nil {
			return false, fmt.Errorf("listing the pods %q in %s: %w", o.podSelector, o.namespace, err)
		}
		left = left[:0]
		for _, p := range pods.Items {
			left = append(left, p.Name)
		}
		if now := strings.Join(left, ", "); len(left) > 0 && now != last {
			_, _ = fmt.Fprintf(out, "waiting for %d pod(s) to be gone: %s\n", len(left), now)
			last = now
		}
		return len(left) == 0, nil
	})
	if err != nil && len(left) > 0 {
		return fmt.Errorf("pods %s in %s still there: %w", strings.Join(left, ", "), o.namespace, err)
	}
	return err
}
