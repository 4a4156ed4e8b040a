package framework

import (
	"context"
	"fmt"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
)

// Names of the two webhooks, as the Helm chart names them.
const (
	// NamespaceWebhookName selects namespaces labelled istio-injection=enabled.
	NamespaceWebhookName = "namespace.sidecar-injector.remora.io"
	// RevisionWebhookName selects namespaces labelled istio.io/rev=default
	// without an istio-injection label.
	RevisionWebhookName = "rev.namespace.sidecar-injector.remora.io"
)

// WebhookOptions describe the MutatingWebhookConfiguration to install.
type WebhookOptions struct {
	// Name of the configuration.
	Name string
	// NamespaceURL and RevisionURL are the clientConfig URLs of the two
	// webhooks.
	NamespaceURL, RevisionURL string
	// CABundle verifies the webhook's serving certificate.
	CABundle []byte
	// OwnNamespace is excluded from injection like the system namespaces.
	OwnNamespace string
}

// WebhookConfiguration returns the configuration the Helm chart installs:
// two webhooks, one for istio-injection=enabled namespaces and one for the
// default revision's istio.io/rev label, both excluding the system
// namespaces and the injector's own, skipping pods labelled
// sidecar.istio.io/inject=false, failing closed, reinvoked if needed.
func WebhookConfiguration(o WebhookOptions) *admissionregistrationv1.MutatingWebhookConfiguration {
	excluded := metav1.LabelSelectorRequirement{
		Key:      corev1.LabelMetadataName,
		Operator: metav1.LabelSelectorOpNotIn,
		Values:   []string{"kube-system", "kube-public", "kube-node-lease", o.OwnNamespace},
	}
	hook := func(name, url string, nsReqs ...metav1.LabelSelectorRequirement) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name:         name,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(url), CABundle: o.CABundle},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
				},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: append(nsReqs, excluded)},
			ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: "sidecar.istio.io/inject", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"false"},
			}}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			TimeoutSeconds:          ptr.To[int32](10),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
		}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook(NamespaceWebhookName, o.NamespaceURL, metav1.LabelSelectorRequirement{
				Key: "istio-injection", Operator: metav1.LabelSelectorOpIn, Values: []string{"enabled"},
			}),
			hook(RevisionWebhookName, o.RevisionURL,
				metav1.LabelSelectorRequirement{Key: "istio.io/rev", Operator: metav1.LabelSelectorOpIn, Values: []string{"default"}},
				metav1.LabelSelectorRequirement{Key: "istio-injection", Operator: metav1.LabelSelectorOpDoesNotExist},
			),
		},
	}
}

// InstallWebhook creates or replaces the configuration, then waits until
// the API server applies it: a dry-run pod in probeNamespace (labelled for
// injection) comes back with the istio-proxy container.
func (c *Cluster) InstallWebhook(ctx context.Context, cfg *admissionregistrationv1.MutatingWebhookConfiguration, probeNamespace string) error {
	existing := &admissionregistrationv1.MutatingWebhookConfiguration{}
	err := c.Client.Get(ctx, client.ObjectKeyFromObject(cfg), existing)
	switch {
	case apierrors.IsNotFound(err):
		err = c.Client.Create(ctx, cfg)
	case err == nil:
		cfg.ResourceVersion = existing.ResourceVersion
		err = c.Client.Update(ctx, cfg)
	}
	if err != nil {
		return fmt.Errorf("installing MutatingWebhookConfiguration %s: %w", cfg.Name, err)
	}
	var last error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		pod := ProbePod(probeNamespace)
		if last = c.Client.Create(ctx, pod, client.DryRunAll); last != nil {
			return false, nil // the webhook may not be reachable yet: retry
		}
		if !testenv.HasProxy(pod) {
			last = fmt.Errorf("the probe pod was not injected (containers %d, init containers %d)", len(pod.Spec.Containers), len(pod.Spec.InitContainers))
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the API server to call the webhook: %w (last: %w)", err, last)
	}
	return nil
}

// RevisionWebhookConfiguration returns the webhook the Helm chart installs
// for namespaces of a non-default revision: istio.io/rev=<revision> without
// an istio-injection label, the system namespaces and the injector's own
// excluded, pods labelled sidecar.istio.io/inject=false skipped. o's
// RevisionURL is its clientConfig URL; NamespaceURL is not used.
func RevisionWebhookConfiguration(o WebhookOptions, revision string) *admissionregistrationv1.MutatingWebhookConfiguration {
	cfg := WebhookConfiguration(o)
	i := slices.IndexFunc(cfg.Webhooks, func(w admissionregistrationv1.MutatingWebhook) bool { return w.Name == RevisionWebhookName })
	hook := cfg.Webhooks[i]
	for j, req := range hook.NamespaceSelector.MatchExpressions {
		if req.Key == "istio.io/rev" {
			hook.NamespaceSelector.MatchExpressions[j].Values = []string{revision}
		}
	}
	cfg.Webhooks = []admissionregistrationv1.MutatingWebhook{hook}
	return cfg
}

// ProbePod returns a minimal pod to create in namespace.
func ProbePod(namespace string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-", Namespace: namespace},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
}
