package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/remora-mesh/remora/internal/upgrade"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// injectorWebhook is one webhook of a MutatingWebhookConfiguration that
// calls the injector.
type injectorWebhook struct {
	// Configuration is the MutatingWebhookConfiguration's name.
	Configuration string
	Webhook       admissionregistrationv1.MutatingWebhook
}

// explainInput is what decides a pod's injection: the injector's webhooks,
// the namespace's labels, the pod and the configuration.
type explainInput struct {
	// Pod is the pod (running, or a manifest's pod template).
	Pod *corev1.Pod
	// Namespace and NamespaceLabels are the pod's namespace and its labels.
	Namespace       string
	NamespaceLabels map[string]string
	// Webhooks are the webhooks that call the injector's service.
	Webhooks []injectorWebhook
	// Service names where the webhooks must point, for the message when
	// none does.
	Service string
	// OwnNamespace is the injector's namespace, never injected.
	OwnNamespace string
	// Config is the injector's configuration; ConfigFrom says where it
	// came from.
	Config     *config.Config
	ConfigFrom string
	// Services resolves the Services the pod excludes by name, as the
	// webhook would (nil: such a pod is refused).
	Services inject.ServiceResolver
}

// Verdicts of explain.
const (
	verdictWouldInject   = "would be injected"
	verdictNotInjected   = "not injected"
	verdictRefused       = "refused"
	verdictUpToDate      = "injected, up to date"
	verdictOutdated      = "injected, outdated"
	verdictUnselected    = "injected, but no longer selected"
	verdictWouldInjectIf = "not injected, but would be if recreated"
	verdictOtherRevision = "injected by another revision"
)

// explanation is the decision and the chain of reasons that made it.
type explanation struct {
	Verdict string
	Reasons []string
}

// explainPod decides as the API server and the injector would: which of the
// injector's webhooks the API server calls for the pod (their selectors),
// then the engine's own policy (inject.Inject), then, for an injected pod,
// whether it carries the current configuration's hash (upgrade.ClassifyPod).
func explainPod(in *explainInput) explanation {
	var e explanation
	called, webhookReasons := selectWebhook(in)
	e.Reasons = append(e.Reasons, webhookReasons...)

	nsLabels := in.NamespaceLabels
	if nsLabels == nil {
		nsLabels = map[string]string{} // nil would mean offline to the engine
	}
	res, err := inject.Inject(inject.Request{Pod: in.Pod, Namespace: in.Namespace, NamespaceLabels: nsLabels,
		OwnNamespace: in.OwnNamespace, Config: in.Config, Services: in.Services})
	switch {
	case err != nil && inject.IsRefused(err):
		e.Reasons = append(e.Reasons, "engine refuses the pod: "+err.Error())
		e.Verdict = verdictRefused
	case err != nil:
		e.Reasons = append(e.Reasons, "engine fails: "+err.Error())
		e.Verdict = verdictNotInjected
	case res.Injected:
		e.Reasons = append(e.Reasons, fmt.Sprintf("engine injects (revision %q): %s", in.Config.Revision(), res.Message))
		e.Verdict = verdictWouldInject
	default:
		e.Reasons = append(e.Reasons, fmt.Sprintf("engine skips the pod (%s): %s", res.Reason, res.Message))
		e.Verdict = verdictNotInjected
	}
	for _, w := range res.Warnings {
		// What kubectl would print as "Warning: ..." on the pod's creation.
		e.Reasons = append(e.Reasons, "warning: "+w)
	}
	if res.Reason == inject.ReasonAlreadyInjected {
		verdict, reason := injectedState(in, nsLabels)
		e.Verdict = verdict
		e.Reasons = append(e.Reasons, reason)
		return e
	}
	if !called && e.Verdict != verdictNotInjected {
		e.Verdict = verdictNotInjected
		e.Reasons = append(e.Reasons, "no webhook calls the injector for this pod, so the engine never sees it")
	}
	if e.Verdict == verdictWouldInject && in.Pod.UID != "" {
		// A running pod that was not injected: its namespace or labels
		// changed since, or the injector was not there yet.
		e.Verdict = verdictWouldInjectIf
	}
	return e
}

// injectedState says whether an injected pod carries the current
// configuration, as the status command and the upgrade controller decide.
func injectedState(in *explainInput, nsLabels map[string]string) (verdict, reason string) {
	info := upgrade.PodInfoFromPod(in.Pod)
	rev := in.Config.Revision()
	if info.Namespace == "" {
		info.Namespace = in.Namespace
	}
	if info.Revision != rev {
		return verdictOtherRevision, fmt.Sprintf("the pod was injected by revision %q, this injector serves %q", info.Revision, rev)
	}
	v := upgrade.ClassifyPod(info, nsLabels, in.Config, rev)
	hashes := fmt.Sprintf("%s=%q, the configuration (%s) has %q", inject.AnnotationConfigHash, info.Hash, in.ConfigFrom, in.Config.Hash)
	switch v.State {
	case upgrade.PodUpToDate:
		if changed := changedServices(in, info); changed != "" {
			return verdictOutdated + " (" + string(upgrade.ChangeServices) + ")", "outdated, recreate the pod so that the Services it excludes " +
				"from the capture are resolved again: " + changed
		}
		return verdictUpToDate, "up to date: " + hashes
	case upgrade.PodOutdated:
		return verdictOutdated + " (" + string(v.Change) + ")", "outdated, recreate the pod to refresh its sidecar: " + hashes
	default:
		return verdictUnselected, "no longer selected, recreating the pod removes its sidecar: " + v.Reason
	}
}

// changedServices says which Services the pod excludes have addresses it
// does not exclude ("" when none, or when they cannot be looked up).
func changedServices(in *explainInput, info *upgrade.PodInfo) string {
	if in.Services == nil || info.ExcludedServices() == "" {
		return ""
	}
	current, err := upgrade.ResolveServices(context.Background(), []*upgrade.PodInfo{info},
		func(_ context.Context, ref inject.ServiceRef) ([]netip.Addr, error) {
			return in.Services.ServiceAddresses(ref)
		})
	if err != nil {
		return ""
	}
	var parts []string
	for _, ref := range upgrade.ChangedServices(info, current) {
		addrs := make([]string, len(current[ref]))
		for i, a := range current[ref] {
			addrs[i] = a.String()
		}
		parts = append(parts, fmt.Sprintf("Service %s now has %s", ref, strings.Join(addrs, ",")))
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, "; ") + " (" + inject.AnnotationExcludedServiceAddresses + "=" + strconv.Quote(info.ExcludedServices()) + ")"
}

// selectWebhook evaluates the webhooks' namespaceSelector and
// objectSelector as the API server does, and returns whether one of them is
// called for the pod, and why (or, for each, which selector excludes it).
func selectWebhook(in *explainInput) (bool, []string) {
	if len(in.Webhooks) == 0 {
		return false, []string{fmt.Sprintf("no MutatingWebhookConfiguration has a webhook calling service %s: the API server never calls the injector", in.Service)}
	}
	nsSet := labels.Set(in.NamespaceLabels)
	podSet := labels.Set(in.Pod.Labels)
	var excluded []string
	for _, wh := range in.Webhooks {
		name := fmt.Sprintf("webhook %s (MutatingWebhookConfiguration %s)", wh.Webhook.Name, wh.Configuration)
		if why, ok := selectorMatches(wh.Webhook.NamespaceSelector, nsSet); !ok {
			excluded = append(excluded, fmt.Sprintf("%s: its namespaceSelector excludes namespace %q: %s", name, in.Namespace, why))
			continue
		}
		if why, ok := selectorMatches(wh.Webhook.ObjectSelector, podSet); !ok {
			excluded = append(excluded, fmt.Sprintf("%s: its objectSelector excludes the pod: %s", name, why))
			continue
		}
		return true, []string{fmt.Sprintf("%s is called: namespace %q [%s] and the pod's labels [%s] match its selectors",
			name, in.Namespace, nsSet, podSet)}
	}
	return false, append([]string{"no webhook of the injector selects the pod:"}, excluded...)
}

// selectorMatches reports whether the selector matches set and, if not,
// names the requirement that fails. A nil selector matches everything, as
// for the API server.
func selectorMatches(sel *metav1.LabelSelector, set labels.Set) (string, bool) {
	if sel == nil {
		return "", true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return fmt.Sprintf("the selector is invalid (%v)", err), false
	}
	reqs, _ := s.Requirements()
	for _, r := range reqs {
		if r.Matches(set) {
			continue
		}
		have := "not set"
		if set.Has(r.Key()) {
			have = fmt.Sprintf("%s=%s", r.Key(), set.Get(r.Key()))
		}
		return fmt.Sprintf("requirement %q fails (%s)", r.String(), have), false
	}
	return "", true
}

// webhooksFor returns the webhooks of the configurations that call service
// (namespace/name) at path or below it for the creation of pods.
func webhooksFor(mwcs []admissionregistrationv1.MutatingWebhookConfiguration, namespace, name, path string) []injectorWebhook {
	var out []injectorWebhook
	for i := range mwcs {
		for _, wh := range mwcs[i].Webhooks {
			svc := wh.ClientConfig.Service
			if svc == nil || svc.Namespace != namespace || svc.Name != name {
				continue
			}
			p := ""
			if svc.Path != nil {
				p = *svc.Path
			}
			if (p != path && !strings.HasPrefix(p, path+"/")) || !createsPods(wh.Rules) {
				continue
			}
			out = append(out, injectorWebhook{Configuration: mwcs[i].Name, Webhook: wh})
		}
	}
	slices.SortStableFunc(out, func(a, b injectorWebhook) int {
		return strings.Compare(a.Configuration+"/"+a.Webhook.Name, b.Configuration+"/"+b.Webhook.Name)
	})
	return out
}

// createsPods reports whether the rules send the creation of v1 pods.
func createsPods(rules []admissionregistrationv1.RuleWithOperations) bool {
	anyOf := func(list []string, want string) bool {
		return slices.Contains(list, want) || slices.Contains(list, "*")
	}
	for _, r := range rules {
		ops := make([]string, len(r.Operations))
		for i, op := range r.Operations {
			ops[i] = string(op)
		}
		if anyOf(ops, string(admissionregistrationv1.Create)) && anyOf(r.APIGroups, "") &&
			anyOf(r.APIVersions, "v1") && anyOf(r.Resources, "pods") {
			return true
		}
	}
	return false
}
