package main

import (
	"net/netip"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// chartWebhooks are the webhooks the chart renders for the default revision
// (rev.namespace., namespace. and object.), in the injector's namespace
// remora-system, service remora.
func chartWebhooks() []admissionregistrationv1.MutatingWebhook {
	excluded := metav1.LabelSelectorRequirement{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn,
		Values: []string{"kube-system", "kube-public", "kube-node-lease", "remora-system"}}
	notFalse := metav1.LabelSelectorRequirement{Key: inject.LabelInject, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"false"}}
	req := func(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
	}
	wh := func(name string, ns, obj []metav1.LabelSelectorRequirement) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name: name,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
				Namespace: "remora-system", Name: "remora", Path: ptr.To("/inject"), Port: ptr.To[int32](443),
			}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			NamespaceSelector:       &metav1.LabelSelector{MatchExpressions: ns},
			ObjectSelector:          &metav1.LabelSelector{MatchExpressions: obj},
		}
	}
	return []admissionregistrationv1.MutatingWebhook{
		wh("rev.namespace.sidecar-injector.remora.io",
			[]metav1.LabelSelectorRequirement{req(inject.LabelRevision, metav1.LabelSelectorOpIn, "default"), req(inject.LabelNamespaceInject, metav1.LabelSelectorOpDoesNotExist), excluded},
			[]metav1.LabelSelectorRequirement{notFalse}),
		wh("namespace.sidecar-injector.remora.io",
			[]metav1.LabelSelectorRequirement{req(inject.LabelNamespaceInject, metav1.LabelSelectorOpIn, "enabled"), excluded},
			[]metav1.LabelSelectorRequirement{notFalse}),
		wh("object.sidecar-injector.remora.io",
			[]metav1.LabelSelectorRequirement{req(inject.LabelNamespaceInject, metav1.LabelSelectorOpDoesNotExist), req(inject.LabelRevision, metav1.LabelSelectorOpDoesNotExist), excluded},
			[]metav1.LabelSelectorRequirement{req(inject.LabelInject, metav1.LabelSelectorOpIn, "true"), req(inject.LabelRevision, metav1.LabelSelectorOpDoesNotExist)}),
	}
}

// chartConfiguration is the chart's MutatingWebhookConfiguration.
func chartConfiguration() *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "remora-sidecar-injector"},
		Webhooks:   chartWebhooks(),
	}
}

func explainConfig(t *testing.T, values string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Sources{Values: []byte(values)}, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func explainTestPod(mutate func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

// injectedWith returns the pod as the injector injected it with cfg.
// nsLabels are its namespace's labels then.
func injectedWith(t *testing.T, cfg *config.Config, nsLabels map[string]string) *corev1.Pod {
	t.Helper()
	res, err := inject.Inject(inject.Request{Pod: explainTestPod(nil), Namespace: "shop",
		NamespaceLabels: nsLabels, Config: cfg})
	if err != nil || !res.Injected {
		t.Fatalf("injecting: %v (%s)", err, res.Message)
	}
	res.Pod.UID = "uid-1"
	return res.Pod
}

// explainServices is a ServiceResolver of a table: Service name in
// namespace db to its address; any other Service does not exist.
type explainServices map[string]string

func (e explainServices) ServiceAddresses(ref inject.ServiceRef) ([]netip.Addr, error) {
	a, ok := e[ref.Name]
	if !ok || ref.Namespace != "db" {
		return nil, inject.ServiceNotFound(ref)
	}
	return []netip.Addr{netip.MustParseAddr(a)}, nil
}

// injectedExcluding returns the pod as the injector injected it with cfg
// when Service mysql.db had the address at.
func injectedExcluding(t *testing.T, cfg *config.Config, at string) *corev1.Pod {
	t.Helper()
	pod := explainTestPod(func(p *corev1.Pod) {
		p.Annotations = map[string]string{inject.AnnotationExcludeOutboundServices: "mysql.db"}
	})
	res, err := inject.Inject(inject.Request{Pod: pod, Namespace: "shop", NamespaceLabels: nsLabels(inject.LabelNamespaceInject, "enabled"),
		Config: cfg, Services: explainServices{"mysql": at}})
	if err != nil || !res.Injected {
		t.Fatalf("injecting: %v (%s)", err, res.Message)
	}
	res.Pod.UID = "uid-1"
	return res.Pod
}

func nsLabels(kv ...string) map[string]string {
	m := map[string]string{"kubernetes.io/metadata.name": "shop"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// TestExplainPod proves each rule of explain: which webhook the API server
// calls, the engine's policy, and the state of an injected pod.
func TestExplainPod(t *testing.T) {
	v1 := explainConfig(t, valuesV1)
	v2 := explainConfig(t, valuesV2)
	chart := []injectorWebhook{}
	for _, wh := range chartWebhooks() {
		chart = append(chart, injectorWebhook{Configuration: "remora-sidecar-injector", Webhook: wh})
	}
	// everything is a webhook without selectors, so that the engine's own
	// checks (its defence in depth) decide.
	everything := []injectorWebhook{{Configuration: "custom", Webhook: admissionregistrationv1.MutatingWebhook{Name: "all.example.com"}}}
	enabled := nsLabels(inject.LabelNamespaceInject, "enabled")

	tests := []struct {
		name     string
		webhooks []injectorWebhook
		ns       map[string]string
		pod      *corev1.Pod
		verdict  string
		reasons  []string // each is in some reason, in this order
	}{
		{name: "names an excluded Service: resolved", webhooks: chart, ns: enabled,
			pod: explainTestPod(func(p *corev1.Pod) {
				p.Annotations = map[string]string{inject.AnnotationExcludeOutboundServices: "mysql.db"}
			}),
			verdict: verdictWouldInject, reasons: []string{"is called", "engine injects"}},
		{name: "names a Service that does not exist", webhooks: chart, ns: enabled,
			pod: explainTestPod(func(p *corev1.Pod) {
				p.Annotations = map[string]string{inject.AnnotationExcludeOutboundServices: "nosuch"}
			}),
			verdict: verdictRefused, reasons: []string{"engine refuses the pod", "Service nosuch.shop does not exist"}},
		{name: "already injected, its excluded Service unchanged", webhooks: chart, ns: enabled, pod: injectedExcluding(t, v2, "10.96.10.5"),
			verdict: verdictUpToDate, reasons: []string{"(already-injected)", "up to date"}},
		{name: "already injected, its excluded Service recreated with another address", webhooks: chart, ns: enabled,
			pod:     injectedExcluding(t, v2, "10.96.10.4"),
			verdict: verdictOutdated + " (services)",
			reasons: []string{"(already-injected)", `outdated, recreate the pod so that the Services it excludes from the capture are resolved again: ` +
				`Service mysql.db now has 10.96.10.5 (traffic.remora.io/excludedServiceAddresses="mysql.db=10.96.10.4")`}},
		{name: "no webhook configuration", ns: enabled, pod: explainTestPod(nil),
			verdict: verdictNotInjected,
			reasons: []string{"no MutatingWebhookConfiguration has a webhook calling service remora-system/remora at /inject",
				"engine injects", "no webhook calls the injector for this pod"}},
		{name: "namespace selector excludes", webhooks: chart, ns: nsLabels(), pod: explainTestPod(nil),
			verdict: verdictNotInjected,
			reasons: []string{"no webhook of the injector selects the pod",
				`webhook rev.namespace.sidecar-injector.remora.io (MutatingWebhookConfiguration remora-sidecar-injector): its namespaceSelector excludes namespace "shop": requirement "istio.io/rev in (default)" fails (not set)`,
				`webhook namespace.sidecar-injector.remora.io (MutatingWebhookConfiguration remora-sidecar-injector): its namespaceSelector excludes namespace "shop": requirement "istio-injection in (enabled)" fails (not set)`,
				`webhook object.sidecar-injector.remora.io (MutatingWebhookConfiguration remora-sidecar-injector): its objectSelector excludes the pod: requirement "sidecar.istio.io/inject in (true)" fails (not set)`,
				"engine skips the pod (namespace-not-enabled)"}},
		{name: "object selector excludes", webhooks: chart, ns: enabled,
			pod:     explainTestPod(func(p *corev1.Pod) { p.Labels[inject.LabelInject] = "false" }),
			verdict: verdictNotInjected,
			reasons: []string{`webhook namespace.sidecar-injector.remora.io (MutatingWebhookConfiguration remora-sidecar-injector): its objectSelector excludes the pod: requirement "sidecar.istio.io/inject notin (false)" fails (sidecar.istio.io/inject=false)`,
				"engine skips the pod (pod-opt-out): the pod sets sidecar.istio.io/inject=false"}},
		{name: "namespace disabled", webhooks: everything, ns: nsLabels(inject.LabelNamespaceInject, "disabled"), pod: explainTestPod(nil),
			verdict: verdictNotInjected,
			reasons: []string{"webhook all.example.com (MutatingWebhookConfiguration custom) is called",
				`engine skips the pod (namespace-disabled): namespace "shop" has istio-injection=disabled`}},
		{name: "namespace disabled, the pod asks for a sidecar: a warning", webhooks: everything, ns: nsLabels(inject.LabelNamespaceInject, "disabled"),
			pod:     explainTestPod(func(p *corev1.Pod) { p.Labels[inject.LabelInject] = "true" }),
			verdict: verdictNotInjected,
			reasons: []string{"(namespace-disabled)", "warning: sidecar.istio.io/inject=true has no effect: not injected (namespace istio-injection=disabled)"}},
		{name: "a deprecated annotation: a warning", webhooks: chart, ns: enabled,
			pod: explainTestPod(func(p *corev1.Pod) {
				p.Annotations = map[string]string{inject.AnnotationKubevirtInterfaces: "k6t-eth0"}
			}),
			verdict: verdictWouldInject,
			reasons: []string{"engine injects", "warning: annotation traffic.sidecar.istio.io/kubevirtInterfaces is deprecated: use istio.io/reroute-virtual-interfaces"}},
		{name: "revision mismatch", webhooks: everything, ns: nsLabels(inject.LabelRevision, "canary"), pod: explainTestPod(nil),
			verdict: verdictNotInjected,
			reasons: []string{"is called", `engine skips the pod (other-revision): namespace "shop" selects revision "canary", this injector serves "default"`}},
		{name: "revision mismatch: chart selectors", webhooks: chart, ns: nsLabels(inject.LabelRevision, "canary"), pod: explainTestPod(nil),
			verdict: verdictNotInjected,
			reasons: []string{`requirement "istio.io/rev in (default)" fails (istio.io/rev=canary)`, "(other-revision)"}},
		{name: "pod annotation opt-out", webhooks: chart, ns: enabled,
			pod:     explainTestPod(func(p *corev1.Pod) { p.Annotations = map[string]string{inject.AnnotationInject: "false"} }),
			verdict: verdictNotInjected,
			reasons: []string{"webhook namespace.sidecar-injector.remora.io (MutatingWebhookConfiguration remora-sidecar-injector) is called",
				"engine skips the pod (pod-opt-out): the pod sets sidecar.istio.io/inject=false"}},
		{name: "hostNetwork", webhooks: chart, ns: enabled, pod: explainTestPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
			verdict: verdictNotInjected,
			reasons: []string{"is called", "engine skips the pod (host-network): pods with hostNetwork share the node's network"}},
		{name: "injected", webhooks: chart, ns: enabled, pod: explainTestPod(nil),
			verdict: verdictWouldInject,
			reasons: []string{`webhook namespace.sidecar-injector.remora.io (MutatingWebhookConfiguration remora-sidecar-injector) is called: namespace "shop" [istio-injection=enabled,kubernetes.io/metadata.name=shop]`,
				`engine injects (revision "default"): injected istio-proxy`}},
		{name: "pod opts in, namespace unlabelled", webhooks: chart, ns: nsLabels(),
			pod:     explainTestPod(func(p *corev1.Pod) { p.Labels[inject.LabelInject] = "true" }),
			verdict: verdictWouldInject,
			reasons: []string{"webhook object.sidecar-injector.remora.io (MutatingWebhookConfiguration remora-sidecar-injector) is called", "engine injects"}},
		{name: "running pod not injected, would be now", webhooks: chart, ns: enabled, pod: explainTestPod(func(p *corev1.Pod) { p.UID = "uid-2" }),
			verdict: verdictWouldInjectIf, reasons: []string{"is called", "engine injects"}},
		{name: "already injected and up to date", webhooks: chart, ns: enabled, pod: injectedWith(t, v2, enabled),
			verdict: verdictUpToDate,
			reasons: []string{"is called", "engine skips the pod (already-injected)",
				`up to date: remora.io/injection-hash="` + v2.Hash + `", the configuration (ConfigMap remora-system/remora) has "` + v2.Hash + `"`}},
		{name: "already injected and outdated", webhooks: chart, ns: enabled, pod: injectedWith(t, v1, enabled),
			verdict: verdictOutdated + " (image)",
			reasons: []string{"(already-injected)",
				`outdated, recreate the pod to refresh its sidecar: remora.io/injection-hash="` + v1.Hash + `", the configuration (ConfigMap remora-system/remora) has "` + v2.Hash + `"`}},
		{name: "already injected, namespace no longer enabled", webhooks: chart, ns: nsLabels(), pod: injectedWith(t, v2, enabled),
			verdict: verdictUnselected,
			reasons: []string{"no webhook of the injector selects the pod", "(already-injected)",
				`no longer selected, recreating the pod removes its sidecar: namespace "shop" is no longer labelled istio-injection=enabled`}},
		{name: "already injected by another revision", webhooks: chart, ns: enabled,
			pod:     injectedWith(t, explainConfig(t, valuesV2+"revision: canary\n"), nsLabels(inject.LabelRevision, "canary")),
			verdict: verdictOtherRevision,
			reasons: []string{"(already-injected)", `the pod was injected by revision "canary", this injector serves "default"`}},
		{name: "invalid annotation", webhooks: chart, ns: enabled,
			pod:     explainTestPod(func(p *corev1.Pod) { p.Annotations = map[string]string{inject.AnnotationInject: "maybe"} }),
			verdict: verdictRefused,
			reasons: []string{"is called", `engine refuses the pod: annotation sidecar.istio.io/inject="maybe" is invalid: must be true or false`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := explainPod(&explainInput{
				Pod: tt.pod, Namespace: "shop", NamespaceLabels: tt.ns, Webhooks: tt.webhooks,
				Service: "remora-system/remora at /inject", OwnNamespace: "remora-system",
				Config: v2, ConfigFrom: "ConfigMap remora-system/remora", Services: explainServices{"mysql": "10.96.10.5"},
			})
			if e.Verdict != tt.verdict {
				t.Errorf("verdict %q, want %q\n%s", e.Verdict, tt.verdict, strings.Join(e.Reasons, "\n"))
			}
			i := 0
			for _, want := range tt.reasons {
				for i < len(e.Reasons) && !strings.Contains(e.Reasons[i], want) {
					i++
				}
				if i == len(e.Reasons) {
					t.Fatalf("no reason containing %q (in order) among:\n%s", want, strings.Join(e.Reasons, "\n"))
				}
			}
		})
	}
}

// TestWebhooksFor proves that only the webhooks calling the injector's
// service at /inject (or below) for the creation of pods are the injector's.
func TestWebhooksFor(t *testing.T) {
	other := chartConfiguration()
	other.Name = "other"
	other.Webhooks = other.Webhooks[:2]
	other.Webhooks[0].ClientConfig.Service.Name = "istiod"
	other.Webhooks[1].ClientConfig.Service.Path = ptr.To("/validate")
	sub := chartConfiguration()
	sub.Name = "sub"
	sub.Webhooks = sub.Webhooks[:1]
	sub.Webhooks[0].ClientConfig.Service.Path = ptr.To("/inject/cluster/x/net/y")
	update := chartConfiguration()
	update.Name = "update"
	update.Webhooks = update.Webhooks[:1]
	update.Webhooks[0].Rules[0].Operations = []admissionregistrationv1.OperationType{admissionregistrationv1.Update}
	star := chartConfiguration()
	star.Name = "star"
	star.Webhooks = star.Webhooks[:1]
	star.Webhooks[0].Rules[0].Operations = []admissionregistrationv1.OperationType{admissionregistrationv1.OperationAll}
	star.Webhooks[0].Rules[0].Resources = []string{"*"}
	url := chartConfiguration()
	url.Name = "url"
	url.Webhooks = url.Webhooks[:1]
	url.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://example.com/inject")}

	got := webhooksFor([]admissionregistrationv1.MutatingWebhookConfiguration{*url, *other, *chartConfiguration(), *sub, *update, *star}, "remora-system", "remora", webhookPath)
	var names []string
	for _, wh := range got {
		names = append(names, wh.Configuration+"/"+wh.Webhook.Name)
	}
	want := []string{
		"remora-sidecar-injector/namespace.sidecar-injector.remora.io",
		"remora-sidecar-injector/object.sidecar-injector.remora.io",
		"remora-sidecar-injector/rev.namespace.sidecar-injector.remora.io",
		"star/rev.namespace.sidecar-injector.remora.io",
		"sub/rev.namespace.sidecar-injector.remora.io",
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("webhooks %v, want %v", names, want)
	}
}
