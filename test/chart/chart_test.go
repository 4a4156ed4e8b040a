package chart_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

var systemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease", releaseNS}

func TestLint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"defaults", nil},
		{"values-ha.yaml", []string{"-f", "charts/remora/values-ha.yaml"}},
		{"self-managed certificates", []string{"--set", "certManager.enabled=false"}},
		{"own issuer", []string{"--set", "certManager.issuerRef.name=corp-ca", "--set", "certManager.issuerRef.kind=ClusterIssuer"}},
		{"everything on", []string{"--set", "metrics.serviceMonitor.enabled=true", "--set", "networkPolicy.enabled=true",
			"--set", "restartOutdated.enabled=true", "--set", "config.restartOnChange=true", "--set", "sidecarInjectorWebhook.enableNamespacesByDefault=true"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"lint", "--strict", "charts/remora", "--namespace", releaseNS}, tc.args...)
			out, stderr, err := runHelm(t, args...)
			if err != nil {
				t.Fatalf("helm lint: %v\n%s%s", err, out, stderr)
			}
		})
	}
}

// webhookSpec is what a webhook of the configuration must select.
type webhookSpec struct {
	namespace []metav1.LabelSelectorRequirement // besides the excluded namespaces
	object    []metav1.LabelSelectorRequirement
}

func req(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
}

func istioWebhooks(rev string) map[string]webhookSpec {
	notDisabled := req("sidecar.istio.io/inject", metav1.LabelSelectorOpNotIn, "false")
	return map[string]webhookSpec{
		"rev.namespace.sidecar-injector.remora.io": {
			namespace: []metav1.LabelSelectorRequirement{
				req("istio.io/rev", metav1.LabelSelectorOpIn, rev), req("istio-injection", metav1.LabelSelectorOpDoesNotExist)},
			object: []metav1.LabelSelectorRequirement{notDisabled},
		},
		"rev.object.sidecar-injector.remora.io": {
			namespace: []metav1.LabelSelectorRequirement{
				req("istio.io/rev", metav1.LabelSelectorOpDoesNotExist), req("istio-injection", metav1.LabelSelectorOpDoesNotExist)},
			object: []metav1.LabelSelectorRequirement{notDisabled, req("istio.io/rev", metav1.LabelSelectorOpIn, rev)},
		},
		"namespace.sidecar-injector.remora.io": {
			namespace: []metav1.LabelSelectorRequirement{req("istio-injection", metav1.LabelSelectorOpIn, "enabled")},
			object:    []metav1.LabelSelectorRequirement{notDisabled},
		},
		"object.sidecar-injector.remora.io": {
			namespace: []metav1.LabelSelectorRequirement{
				req("istio-injection", metav1.LabelSelectorOpDoesNotExist), req("istio.io/rev", metav1.LabelSelectorOpDoesNotExist)},
			object: []metav1.LabelSelectorRequirement{
				req("sidecar.istio.io/inject", metav1.LabelSelectorOpIn, "true"), req("istio.io/rev", metav1.LabelSelectorOpDoesNotExist)},
		},
	}
}

func TestWebhookConfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		args        []string
		want        []string // webhook names, in order
		excluded    []string
		rev         string
		failure     admissionregistrationv1.FailurePolicyType
		timeout     int32
		reinvoke    admissionregistrationv1.ReinvocationPolicyType
		certManager bool
	}{
		{
			name: "defaults",
			want: []string{"rev.namespace.sidecar-injector.remora.io", "rev.object.sidecar-injector.remora.io",
				"namespace.sidecar-injector.remora.io", "object.sidecar-injector.remora.io"},
			excluded: systemNamespaces, rev: "default", failure: admissionregistrationv1.Fail, timeout: 10,
			reinvoke: admissionregistrationv1.IfNeededReinvocationPolicy, certManager: true,
		},
		{
			name: "canary revision, no pod selectors, tuned",
			args: []string{"--set", "revision=canary", "--set", "webhook.podSelectors=false", "--set", "webhook.failurePolicy=Ignore",
				"--set", "webhook.timeoutSeconds=5", "--set", "webhook.reinvocationPolicy=Never", "--set", "webhook.excludedNamespaces={legacy,kube-system}",
				"--set", "certManager.enabled=false"},
			want:     []string{"rev.namespace.sidecar-injector.remora.io"},
			excluded: append(slices.Clone(systemNamespaces), "legacy"), rev: "canary", failure: admissionregistrationv1.Ignore, timeout: 5,
			reinvoke: admissionregistrationv1.NeverReinvocationPolicy,
		},
		{
			name:     "Istio's sidecarInjectorWebhook.reinvocationPolicy wins",
			args:     []string{"--set", "sidecarInjectorWebhook.reinvocationPolicy=Never", "--set", "webhook.podSelectors=false"},
			want:     []string{"rev.namespace.sidecar-injector.remora.io", "namespace.sidecar-injector.remora.io"},
			excluded: systemNamespaces, rev: "default", failure: admissionregistrationv1.Fail, timeout: 10,
			reinvoke: admissionregistrationv1.NeverReinvocationPolicy, certManager: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, tc.args...)
			mwc := one[admissionregistrationv1.MutatingWebhookConfiguration](t, m, "MutatingWebhookConfiguration")
			svc := one[corev1.Service](t, m, "Service")
			var names []string
			for _, w := range mwc.Webhooks {
				names = append(names, w.Name)
			}
			if !slices.Equal(names, tc.want) {
				t.Fatalf("webhooks %v, want %v", names, tc.want)
			}
			specs := istioWebhooks(tc.rev)
			for _, w := range mwc.Webhooks {
				t.Run(w.Name, func(t *testing.T) {
					spec := specs[w.Name]
					wantNS := append(slices.Clone(spec.namespace), req("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, tc.excluded...))
					assertSelector(t, "namespaceSelector", w.NamespaceSelector, wantNS)
					assertSelector(t, "objectSelector", w.ObjectSelector, spec.object)

					if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone {
						t.Errorf("sideEffects = %v, want None", w.SideEffects)
					}
					if !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
						t.Errorf("admissionReviewVersions = %v, want [v1]", w.AdmissionReviewVersions)
					}
					if w.FailurePolicy == nil || *w.FailurePolicy != tc.failure {
						t.Errorf("failurePolicy = %v, want %s", w.FailurePolicy, tc.failure)
					}
					if w.TimeoutSeconds == nil || *w.TimeoutSeconds != tc.timeout {
						t.Errorf("timeoutSeconds = %v, want %d", w.TimeoutSeconds, tc.timeout)
					}
					if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != tc.reinvoke {
						t.Errorf("reinvocationPolicy = %v, want %s", w.ReinvocationPolicy, tc.reinvoke)
					}
					if w.MatchPolicy == nil || *w.MatchPolicy != admissionregistrationv1.Equivalent {
						t.Errorf("matchPolicy = %v, want Equivalent", w.MatchPolicy)
					}
					s := w.ClientConfig.Service
					if s == nil || s.Name != svc.Name || s.Namespace != releaseNS || s.Path == nil || *s.Path != "/inject" || s.Port == nil || *s.Port != 443 {
						t.Errorf("clientConfig.service = %+v, want %s/%s:443/inject", s, releaseNS, svc.Name)
					}
					if w.ClientConfig.URL != nil || len(w.ClientConfig.CABundle) != 0 {
						t.Errorf("clientConfig has url %v / caBundle %q; want neither", w.ClientConfig.URL, w.ClientConfig.CABundle)
					}
					wantRule := admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}
					if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) ||
						!slices.Equal(w.Rules[0].APIGroups, wantRule.APIGroups) || !slices.Equal(w.Rules[0].APIVersions, wantRule.APIVersions) ||
						!slices.Equal(w.Rules[0].Resources, wantRule.Resources) {
						t.Errorf("rules = %+v, want CREATE of v1 pods only", w.Rules)
					}
				})
			}
			annotation := mwc.Annotations["cert-manager.io/inject-ca-from"]
			if wantAnn := releaseNS + "/remora-serving"; tc.certManager != (annotation == wantAnn) {
				t.Errorf("cert-manager.io/inject-ca-from = %q (cert-manager mode %v, want %q)", annotation, tc.certManager, wantAnn)
			}
		})
	}
}

func assertSelector(t *testing.T, what string, got *metav1.LabelSelector, want []metav1.LabelSelectorRequirement) {
	t.Helper()
	if got == nil {
		t.Errorf("%s missing", what)
		return
	}
	if len(got.MatchLabels) != 0 {
		t.Errorf("%s.matchLabels = %v, want none", what, got.MatchLabels)
	}
	key := func(r metav1.LabelSelectorRequirement) string {
		v := slices.Clone(r.Values)
		slices.Sort(v)
		return fmt.Sprintf("%s %s %v", r.Key, r.Operator, v)
	}
	var g, w []string
	for _, r := range got.MatchExpressions {
		g = append(g, key(r))
	}
	for _, r := range want {
		w = append(w, key(r))
	}
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Errorf("%s:\n got  %q\n want %q", what, g, w)
	}
}

// TestWebhookSelection evaluates the rendered selectors against namespaces and pods: a pod is
// matched by the webhook Istio would inject it with, by at most one, and never in excluded
// namespaces.
func TestWebhookSelection(t *testing.T) {
	t.Parallel()
	defaults := render(t)
	enableAll := render(t, "--set", "sidecarInjectorWebhook.enableNamespacesByDefault=true")
	canary := render(t, "--set", "revision=canary")
	deploy := one[appsv1.Deployment](t, defaults, "Deployment")

	ns := func(name string, kv ...string) map[string]string {
		l := map[string]string{"kubernetes.io/metadata.name": name}
		for i := 0; i+1 < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return l
	}
	pod := func(kv ...string) map[string]string {
		l := map[string]string{"app": "demo"}
		for i := 0; i+1 < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return l
	}
	tests := []struct {
		name   string
		m      *manifests
		nsL    map[string]string
		podL   map[string]string
		wanted string // the one matching webhook; empty: none
	}{
		{"istio-injection=enabled", defaults, ns("app", "istio-injection", "enabled"), pod(), "namespace.sidecar-injector.remora.io"},
		{"istio-injection=enabled, pod opts out", defaults, ns("app", "istio-injection", "enabled"), pod("sidecar.istio.io/inject", "false"), ""},
		{"istio-injection=enabled beats istio.io/rev", defaults, ns("app", "istio-injection", "enabled", "istio.io/rev", "default"), pod(), "namespace.sidecar-injector.remora.io"},
		{"istio-injection=disabled, pod opts in", defaults, ns("app", "istio-injection", "disabled"), pod("sidecar.istio.io/inject", "true"), ""},
		{"istio.io/rev=default", defaults, ns("app", "istio.io/rev", "default"), pod(), "rev.namespace.sidecar-injector.remora.io"},
		{"istio.io/rev=default, pod opts out", defaults, ns("app", "istio.io/rev", "default"), pod("sidecar.istio.io/inject", "false"), ""},
		{"istio.io/rev of another revision", defaults, ns("app", "istio.io/rev", "canary"), pod(), ""},
		{"unlabelled namespace", defaults, ns("app"), pod(), ""},
		{"unlabelled namespace, pod opts in", defaults, ns("app"), pod("sidecar.istio.io/inject", "true"), "object.sidecar-injector.remora.io"},
		{"unlabelled namespace, pod istio.io/rev=default", defaults, ns("app"), pod("istio.io/rev", "default"), "rev.object.sidecar-injector.remora.io"},
		{"unlabelled namespace, pod of another revision", defaults, ns("app"), pod("sidecar.istio.io/inject", "true", "istio.io/rev", "canary"), ""},
		{"kube-system labelled", defaults, ns("kube-system", "istio-injection", "enabled"), pod(), ""},
		{"kube-public labelled", defaults, ns("kube-public", "istio.io/rev", "default"), pod(), ""},
		{"kube-node-lease, pod opts in", defaults, ns("kube-node-lease"), pod("sidecar.istio.io/inject", "true"), ""},
		{"release namespace labelled", defaults, ns(releaseNS, "istio-injection", "enabled"), pod(), ""},
		{"the injector's own pods, labelled namespace", defaults, ns(releaseNS, "istio-injection", "enabled"), deploy.Spec.Template.Labels, ""},
		{"the injector's own pod labels elsewhere", defaults, ns("app", "istio-injection", "enabled"), deploy.Spec.Template.Labels, ""},
		{"enableNamespacesByDefault: unlabelled", enableAll, ns("app"), pod(), "auto.sidecar-injector.remora.io"},
		{"enableNamespacesByDefault: disabled namespace", enableAll, ns("app", "istio-injection", "disabled"), pod(), ""},
		{"enableNamespacesByDefault: kube-system", enableAll, ns("kube-system"), pod(), ""},
		{"canary: istio.io/rev=canary", canary, ns("app", "istio.io/rev", "canary"), pod(), "rev.namespace.sidecar-injector.remora.io"},
		{"canary: istio-injection=enabled is the default revision's", canary, ns("app", "istio-injection", "enabled"), pod(), ""},
		{"canary: pod istio.io/rev=canary", canary, ns("app"), pod("istio.io/rev", "canary"), "rev.object.sidecar-injector.remora.io"},
		{"canary: pod opts in without revision", canary, ns("app"), pod("sidecar.istio.io/inject", "true"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mwc := one[admissionregistrationv1.MutatingWebhookConfiguration](t, tc.m, "MutatingWebhookConfiguration")
			var matched []string
			for _, w := range mwc.Webhooks {
				if selects(t, w.NamespaceSelector, tc.nsL) && selects(t, w.ObjectSelector, tc.podL) {
					matched = append(matched, w.Name)
				}
			}
			var want []string
			if tc.wanted != "" {
				want = []string{tc.wanted}
			}
			if !slices.Equal(matched, want) {
				t.Errorf("matched by %v, want %v", matched, want)
			}
		})
	}
}

func selects(t *testing.T, s *metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatalf("invalid selector %+v: %v", s, err)
	}
	return sel.Matches(labels.Set(l))
}

func TestDeployment(t *testing.T) {
	t.Parallel()
	m := render(t)
	d := one[appsv1.Deployment](t, m, "Deployment")
	spec := d.Spec.Template.Spec
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
	}
	if got := d.Spec.Template.Labels["sidecar.istio.io/inject"]; got != "false" {
		t.Errorf("pod label sidecar.istio.io/inject = %q, want \"false\"", got)
	}
	for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
		if d.Labels[k] == "" {
			t.Errorf("Deployment label %s missing", k)
		}
	}
	if _, ok := d.Spec.Template.Annotations["checksum/config"]; ok {
		t.Error("checksum/config annotation present by default: a ConfigMap change would restart the injector although it hot-reloads")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	wantArgs := []string{"serve", "--port=9443", "--cert-dir=/etc/remora/certs", "--config-dir=/etc/remora/config",
		"--metrics-bind-address=:8080", "--metrics-secure=true", "--metrics-cert-dir=/etc/remora/certs",
		"--health-probe-bind-address=:8081", "--namespace=$(POD_NAMESPACE)",
		"--revision=default", "--native-sidecars=auto", "--leader-elect=true", "--exclude-services=false", "--upgrade-controller=true", "--allow-restarts=false",
		"--workload-events=true", "--workload-event-interval=10m"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args:\n got  %q\n want %q", c.Args, wantArgs)
	}
	if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "POD_NAMESPACE" }); i < 0 ||
		c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Error("POD_NAMESPACE does not come from the downward API (metadata.namespace)")
	}

	// Hardening.
	sc := c.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || (sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("container securityContext not hardened: %+v", sc)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod securityContext not hardened: %+v", psc)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Error("host namespaces used")
	}

	// Probes on the health port.
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		wantPath := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[name]
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != wantPath || p.HTTPGet.Port.String() != "health" {
			t.Errorf("%s probe = %+v, want GET %s on health", name, p, wantPath)
		}
	}
	if i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "health" }); i < 0 || c.Ports[i].ContainerPort != 8081 {
		t.Error("port health is not 8081")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want requests and a memory limit", c.Resources)
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds != 30 {
		t.Errorf("terminationGracePeriodSeconds = %v", spec.TerminationGracePeriodSeconds)
	}

	// Preferred anti-affinity by hostname on the pod's own labels.
	aa := spec.Affinity
	if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Fatalf("affinity = %+v, want one preferred pod anti-affinity term", aa)
	}
	term := aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
	if term.TopologyKey != "kubernetes.io/hostname" || !selects(t, term.LabelSelector, d.Spec.Template.Labels) {
		t.Errorf("anti-affinity term %+v does not spread the injector's pods by hostname", term)
	}

	// Volumes: the ConfigMap and the cert-manager Secret.
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	cm := one[corev1.ConfigMap](t, m, "ConfigMap")
	if mounts["config"].MountPath != "/etc/remora/config" || vols["config"].ConfigMap == nil || vols["config"].ConfigMap.Name != cm.Name {
		t.Errorf("config volume %+v mounted %+v, want ConfigMap %s at /etc/remora/config", vols["config"], mounts["config"], cm.Name)
	}
	if mounts["certs"].MountPath != "/etc/remora/certs" || vols["certs"].Secret == nil || vols["certs"].Secret.SecretName != "remora-tls" {
		t.Errorf("certs volume %+v mounted %+v, want Secret remora-tls at /etc/remora/certs", vols["certs"], mounts["certs"])
	}
	if spec.PriorityClassName != "" {
		t.Errorf("priorityClassName = %q by default", spec.PriorityClassName)
	}
	if sa := one[corev1.ServiceAccount](t, m, "ServiceAccount"); spec.ServiceAccountName != sa.Name {
		t.Errorf("serviceAccountName %q, ServiceAccount %q", spec.ServiceAccountName, sa.Name)
	}

	t.Run("restartOnChange adds the config checksum", func(t *testing.T) {
		d := one[appsv1.Deployment](t, render(t, "--set", "config.restartOnChange=true"), "Deployment")
		if len(d.Spec.Template.Annotations["checksum/config"]) != 64 {
			t.Errorf("checksum/config = %q, want a sha256", d.Spec.Template.Annotations["checksum/config"])
		}
	})
	t.Run("excludeServices reaches the flags", func(t *testing.T) {
		d := one[appsv1.Deployment](t, render(t, "--set", "excludeServices.enabled=true"), "Deployment")
		if args := d.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--exclude-services=true") {
			t.Errorf("args %q lack --exclude-services=true", args)
		}
	})
	t.Run("maintenance window reaches the flags", func(t *testing.T) {
		d := one[appsv1.Deployment](t, render(t, "--set", "upgradeController.maintenanceWindow=02:00-04:00", "--set", "restartOutdated.enabled=true"), "Deployment")
		if args := d.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--maintenance-window=02:00-04:00") || slices.Contains(args, "--restart-outdated") {
			t.Errorf("args %q", args)
		}
	})
	t.Run("workload Events reach the flags", func(t *testing.T) {
		for _, tc := range []struct {
			set  []string
			want []string
		}{
			{[]string{"--set", "workloadEvents.interval=30m"}, []string{"--workload-events=true", "--workload-event-interval=30m"}},
			{[]string{"--set", "workloadEvents.enabled=false"}, []string{"--workload-events=false"}},
		} {
			args := one[appsv1.Deployment](t, render(t, tc.set...), "Deployment").Spec.Template.Spec.Containers[0].Args
			got := slices.DeleteFunc(slices.Clone(args), func(a string) bool { return !strings.HasPrefix(a, "--workload-event") })
			if !slices.Equal(got, tc.want) {
				t.Errorf("%v: workload Event flags %q, want %q", tc.set, got, tc.want)
			}
		}
	})
	t.Run("restartOutdated and a revision reach the flags", func(t *testing.T) {
		d := one[appsv1.Deployment](t, render(t, "--set", "restartOutdated.enabled=true", "--set", "restartOutdated.allWorkloads=true",
			"--set", "restartOutdated.maxConcurrentRestarts=3", "--set", "restartOutdated.namespaces={shop,billing}",
			"--set", "revision=canary", "--set", "nativeSidecars=false", "--set", "leaderElection.enabled=false"), "Deployment")
		args := d.Spec.Template.Spec.Containers[0].Args
		for _, a := range []string{"--allow-restarts=true", "--restart-outdated", "--max-concurrent-restarts=3", "--restart-namespaces=shop,billing",
			"--revision=canary", "--native-sidecars=false", "--leader-elect=false", "--upgrade-controller=true"} {
			if !slices.Contains(args, a) {
				t.Errorf("args %q lack %s", args, a)
			}
		}
	})
	t.Run("no upgrade controller: no leader election, no restart flags", func(t *testing.T) {
		d := one[appsv1.Deployment](t, render(t, "--set", "upgradeController.enabled=false", "--set", "restartOutdated.enabled=true"), "Deployment")
		args := d.Spec.Template.Spec.Containers[0].Args
		if !slices.Contains(args, "--leader-elect=false") || !slices.Contains(args, "--upgrade-controller=false") ||
			slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, "restart") }) {
			t.Errorf("args %q", args)
		}
	})
}

func TestService(t *testing.T) {
	t.Parallel()
	m := render(t)
	svc := one[corev1.Service](t, m, "Service")
	d := one[appsv1.Deployment](t, m, "Deployment")
	if !selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, d.Spec.Template.Labels) {
		t.Errorf("Service selector %v does not select the injector pods", svc.Spec.Selector)
	}
	want := map[string][2]string{"https-webhook": {"443", "webhook"}, "https-metrics": {"8080", "https-metrics"}}
	for _, p := range svc.Spec.Ports {
		w, ok := want[p.Name]
		if !ok || fmt.Sprint(p.Port) != w[0] || p.TargetPort.String() != w[1] {
			t.Errorf("port %s %d -> %s unexpected", p.Name, p.Port, p.TargetPort.String())
		}
		delete(want, p.Name)
	}
	if len(want) > 0 {
		t.Errorf("ports missing: %v", want)
	}
	container := d.Spec.Template.Spec.Containers[0]
	if i := slices.IndexFunc(container.Ports, func(p corev1.ContainerPort) bool { return p.Name == "webhook" }); i < 0 || container.Ports[i].ContainerPort != 9443 {
		t.Error("container port webhook is not 9443")
	}
}

func TestCertificates(t *testing.T) {
	t.Parallel()
	type ref struct{ Name, Kind, Group string }
	type certificate struct {
		Spec struct {
			IsCA       bool     `json:"isCA"`
			SecretName string   `json:"secretName"`
			DNSNames   []string `json:"dnsNames"`
			IssuerRef  ref      `json:"issuerRef"`
		} `json:"spec"`
	}
	certManagerObjects := func(m *manifests) []string {
		var out []string
		for _, o := range m.objects {
			if strings.HasPrefix(o.u.GetAPIVersion(), "cert-manager.io/") {
				out = append(out, o.u.GetKind()+"/"+o.u.GetName())
			}
		}
		slices.Sort(out)
		return out
	}
	dnsNames := []string{"remora", "remora.remora-system", "remora.remora-system.svc", "remora.remora-system.svc.cluster.local"}

	t.Run("cert-manager with the chart's own CA", func(t *testing.T) {
		t.Parallel()
		m := render(t)
		want := []string{"Certificate/remora-ca", "Certificate/remora-serving", "Issuer/remora-ca", "Issuer/remora-selfsigned"}
		if got := certManagerObjects(m); !slices.Equal(got, want) {
			t.Fatalf("cert-manager objects %v, want %v", got, want)
		}
		certs := map[string]*certificate{}
		for _, o := range m.all("Certificate") {
			c := &certificate{}
			if err := yaml.Unmarshal(o.raw, c); err != nil {
				t.Fatal(err)
			}
			certs[o.u.GetName()] = c
		}
		ca, serving := certs["remora-ca"], certs["remora-serving"]
		if !ca.Spec.IsCA || ca.Spec.IssuerRef != (ref{"remora-selfsigned", "Issuer", "cert-manager.io"}) {
			t.Errorf("CA certificate %+v", ca.Spec)
		}
		if serving.Spec.IsCA || serving.Spec.IssuerRef != (ref{"remora-ca", "Issuer", "cert-manager.io"}) || !slices.Equal(serving.Spec.DNSNames, dnsNames) {
			t.Errorf("serving certificate %+v", serving.Spec)
		}
		for _, o := range m.all("Issuer") {
			if o.u.GetNamespace() != releaseNS {
				t.Errorf("Issuer %s in namespace %q", o.u.GetName(), o.u.GetNamespace())
			}
		}
		d := one[appsv1.Deployment](t, m, "Deployment")
		if got := volumeSecret(d); got != serving.Spec.SecretName {
			t.Errorf("Deployment mounts Secret %q, the serving Certificate writes %q", got, serving.Spec.SecretName)
		}
		if args := d.Spec.Template.Spec.Containers[0].Args; slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--self-managed-certs") }) {
			t.Errorf("cert-manager mode passes %q", args)
		}
		mwc := one[admissionregistrationv1.MutatingWebhookConfiguration](t, m, "MutatingWebhookConfiguration")
		if got := mwc.Annotations["cert-manager.io/inject-ca-from"]; got != releaseNS+"/remora-serving" {
			t.Errorf("inject-ca-from = %q", got)
		}
	})

	t.Run("cert-manager with the user's issuer", func(t *testing.T) {
		t.Parallel()
		m := render(t, "--set", "certManager.issuerRef.name=corp-ca", "--set", "certManager.issuerRef.kind=ClusterIssuer")
		if got := certManagerObjects(m); !slices.Equal(got, []string{"Certificate/remora-serving"}) {
			t.Fatalf("cert-manager objects %v, want only the serving Certificate", got)
		}
		c := &certificate{}
		if err := yaml.Unmarshal(m.all("Certificate")[0].raw, c); err != nil {
			t.Fatal(err)
		}
		if c.Spec.IssuerRef != (ref{"corp-ca", "ClusterIssuer", "cert-manager.io"}) {
			t.Errorf("issuerRef = %+v", c.Spec.IssuerRef)
		}
	})

	t.Run("self-managed", func(t *testing.T) {
		t.Parallel()
		m := render(t, "--set", "certManager.enabled=false")
		if got := certManagerObjects(m); len(got) != 0 {
			t.Fatalf("cert-manager objects rendered: %v", got)
		}
		mwc := one[admissionregistrationv1.MutatingWebhookConfiguration](t, m, "MutatingWebhookConfiguration")
		if _, ok := mwc.Annotations["cert-manager.io/inject-ca-from"]; ok {
			t.Error("inject-ca-from annotation in self-managed mode")
		}
		svc := one[corev1.Service](t, m, "Service")
		d := one[appsv1.Deployment](t, m, "Deployment")
		args := d.Spec.Template.Spec.Containers[0].Args
		for _, a := range []string{"--self-managed-certs", "--cert-secret-name=remora-self-managed-tls",
			"--webhook-config-name=" + mwc.Name, "--service-name=" + svc.Name} {
			if !slices.Contains(args, a) {
				t.Errorf("args %q lack %s", args, a)
			}
		}
		var certs *corev1.Volume
		for i := range d.Spec.Template.Spec.Volumes {
			if d.Spec.Template.Spec.Volumes[i].Name == "certs" {
				certs = &d.Spec.Template.Spec.Volumes[i]
			}
		}
		if certs == nil || certs.EmptyDir == nil || certs.Secret != nil {
			t.Errorf("certs volume = %+v, want an emptyDir", certs)
		}
		for _, vm := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
			if vm.Name == "certs" && (vm.ReadOnly || vm.MountPath != "/etc/remora/certs") {
				t.Errorf("certs mount %+v, want writable /etc/remora/certs", vm)
			}
		}
	})
}

func volumeSecret(d *appsv1.Deployment) string {
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "certs" && v.Secret != nil {
			return v.Secret.SecretName
		}
	}
	return ""
}

func TestHAValues(t *testing.T) {
	t.Parallel()
	m := render(t, "-f", "charts/remora/values-ha.yaml")
	d := one[appsv1.Deployment](t, m, "Deployment")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas = %v, want 3", d.Spec.Replicas)
	}
	if d.Spec.Template.Spec.PriorityClassName != "system-cluster-critical" {
		t.Errorf("priorityClassName = %q", d.Spec.Template.Spec.PriorityClassName)
	}
	mwc := one[admissionregistrationv1.MutatingWebhookConfiguration](t, m, "MutatingWebhookConfiguration")
	for _, w := range mwc.Webhooks {
		if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail {
			t.Errorf("%s failurePolicy = %v, want Fail", w.Name, w.FailurePolicy)
		}
	}
	pdb := one[policyv1.PodDisruptionBudget](t, m, "PodDisruptionBudget")
	okMin := pdb.Spec.MinAvailable != nil && pdb.Spec.MinAvailable.IntValue() == 2 && pdb.Spec.MaxUnavailable == nil
	okMax := pdb.Spec.MaxUnavailable != nil && pdb.Spec.MaxUnavailable.IntValue() == 1 && pdb.Spec.MinAvailable == nil
	if !okMin && !okMax {
		t.Errorf("PDB minAvailable %v maxUnavailable %v, want minAvailable 2 or maxUnavailable 1", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
	}
	if !selects(t, pdb.Spec.Selector, d.Spec.Template.Labels) {
		t.Error("PDB does not select the injector pods")
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantPDB bool
		wantMin string
		wantMax string
	}{
		{"defaults: 2 replicas", nil, true, "1", ""},
		{"one replica: none", []string{"--set", "replicaCount=1"}, false, "", ""},
		{"disabled", []string{"--set", "podDisruptionBudget.enabled=false"}, false, "", ""},
		{"maxUnavailable wins", []string{"--set", "podDisruptionBudget.maxUnavailable=1"}, true, "", "1"},
		{"percentage", []string{"--set", "replicaCount=4", "--set", "podDisruptionBudget.minAvailable=50%"}, true, "50%", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, tc.args...)
			pdbs := m.all("PodDisruptionBudget")
			if (len(pdbs) == 1) != tc.wantPDB || len(pdbs) > 1 {
				t.Fatalf("%d PodDisruptionBudgets, want PDB=%v", len(pdbs), tc.wantPDB)
			}
			if !tc.wantPDB {
				return
			}
			pdb := decode[policyv1.PodDisruptionBudget](t, pdbs[0])
			str := func(v fmt.Stringer, isNil bool) string {
				if isNil {
					return ""
				}
				return v.String()
			}
			if got := str(pdb.Spec.MinAvailable, pdb.Spec.MinAvailable == nil); got != tc.wantMin {
				t.Errorf("minAvailable = %q, want %q", got, tc.wantMin)
			}
			if got := str(pdb.Spec.MaxUnavailable, pdb.Spec.MaxUnavailable == nil); got != tc.wantMax {
				t.Errorf("maxUnavailable = %q, want %q", got, tc.wantMax)
			}
		})
	}
}

func TestSchemaRefusesBadValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"replicaCount not a number", []string{"--set", "replicaCount=abc"}, "replicaCount"},
		{"replicaCount zero", []string{"--set", "replicaCount=0"}, "replicaCount"},
		{"unknown top-level key", []string{"--set", "replicas=3"}, "replicas"},
		{"unknown nested key", []string{"--set", "global.proxy.imageName=x"}, "imageName"},
		{"unknown webhook key", []string{"--set", "webhook.failure=Fail"}, "failure"},
		{"failurePolicy enum", []string{"--set", "webhook.failurePolicy=Sometimes"}, "failurePolicy"},
		{"timeout above 30", []string{"--set", "webhook.timeoutSeconds=31"}, "timeoutSeconds"},
		{"reinvocationPolicy enum", []string{"--set", "webhook.reinvocationPolicy=Always"}, "reinvocationPolicy"},
		{"nativeSidecars enum", []string{"--set", "nativeSidecars=yes"}, "nativeSidecars"},
		{"issuer kind", []string{"--set", "certManager.issuerRef.kind=Vault"}, "kind"},
		{"bad duration", []string{"--set", "certManager.duration=90d"}, "duration"},
		{"bad workload Event interval", []string{"--set", "workloadEvents.interval=hourly"}, "interval"},
		{"proxy log level", []string{"--set", "global.proxy.logLevel=loud"}, "logLevel"},
		{"template name", []string{"--set-string", "sidecarInjectorWebhook.templates.bad/name=x"}, "bad/name"},
		{"revision not a label", []string{"--set", "revision=Canary_1"}, "revision"},
		{"boolean as string", []string{"--set-string", "certManager.enabled=false"}, "enabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"template", releaseName, "charts/remora", "--namespace", releaseNS}, tc.args...)
			_, stderr, err := runHelm(t, args...)
			if err == nil {
				t.Fatalf("helm accepted %v", tc.args)
			}
			if !strings.Contains(stderr, "schema") || !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("error does not name the schema and %q:\n%s", tc.wantErr, stderr)
			}
		})
	}
}

func TestConfigMap(t *testing.T) {
	t.Parallel()
	m := render(t,
		"--set", "global.hub=registry.example/istio", "--set", "global.proxy.holdApplicationUntilProxyStarts=true",
		"--set", "meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true",
		"--set-string", "sidecarInjectorWebhook.templates.custom=metadata:\n  labels:\n    hello: world\n",
		"--set", "sidecarInjectorWebhook.defaultTemplates={sidecar,custom}",
		"--set", "revision=canary")
	cm := one[corev1.ConfigMap](t, m, "ConfigMap")
	var keys []string
	for k := range cm.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"custom.tmpl", "mesh.yaml", "values.yaml"}; !slices.Equal(keys, want) {
		t.Fatalf("ConfigMap keys %v, want %v", keys, want)
	}
	var values map[string]any
	if err := yaml.UnmarshalStrict([]byte(cm.Data["values.yaml"]), &values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	lookup := func(v any, path ...string) any {
		for _, p := range path {
			mm, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = mm[p]
		}
		return v
	}
	checks := []struct {
		path []string
		want any
	}{
		{[]string{"global", "hub"}, "registry.example/istio"},
		{[]string{"global", "tag"}, "1.28.0"},
		{[]string{"global", "proxy", "holdApplicationUntilProxyStarts"}, true},
		{[]string{"global", "proxy", "statusPort"}, float64(15020)},
		{[]string{"global", "proxy_init", "image"}, "proxyv2"},
		{[]string{"sidecarInjectorWebhook", "rewriteAppHTTPProbe"}, true},
		{[]string{"revision"}, "canary"},
		{[]string{"sidecarInjectorWebhook", "templates"}, nil},
		{[]string{"sidecarInjectorWebhook", "reinvocationPolicy"}, nil},
	}
	for _, c := range checks {
		if got := lookup(values, c.path...); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("values.yaml %s = %v, want %v", strings.Join(c.path, "."), got, c.want)
		}
	}
	if got := fmt.Sprint(lookup(values, "sidecarInjectorWebhook", "defaultTemplates")); got != "[sidecar custom]" {
		t.Errorf("defaultTemplates = %s", got)
	}
	var mesh map[string]any
	if err := yaml.UnmarshalStrict([]byte(cm.Data["mesh.yaml"]), &mesh); err != nil {
		t.Fatalf("mesh.yaml: %v", err)
	}
	if got := lookup(mesh, "defaultConfig", "holdApplicationUntilProxyStarts"); got != true {
		t.Errorf("mesh.yaml defaultConfig.holdApplicationUntilProxyStarts = %v", got)
	}
	if got := cm.Data["custom.tmpl"]; got != "metadata:\n  labels:\n    hello: world\n" {
		t.Errorf("custom.tmpl = %q", got)
	}
	if got := one[corev1.ConfigMap](t, render(t), "ConfigMap").Data["mesh.yaml"]; strings.TrimSpace(got) != "{}" {
		t.Errorf("default mesh.yaml = %q, want {}", got)
	}
}

func TestOptionalObjects(t *testing.T) {
	t.Parallel()
	defaults := render(t)
	for _, kind := range []string{"ServiceMonitor", "NetworkPolicy"} {
		if n := len(defaults.all(kind)); n != 0 {
			t.Errorf("%d %s rendered by default, want none", n, kind)
		}
	}
	m := render(t, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.labels.release=prom",
		"--set", "networkPolicy.enabled=true")
	d := one[appsv1.Deployment](t, m, "Deployment")

	sm := m.all("ServiceMonitor")
	if len(sm) != 1 || sm[0].u.GetAPIVersion() != "monitoring.coreos.com/v1" || sm[0].u.GetLabels()["release"] != "prom" {
		t.Fatalf("ServiceMonitor %v", sm)
	}
	type endpoint struct {
		Port            string `json:"port"`
		Path            string `json:"path"`
		Scheme          string `json:"scheme"`
		BearerTokenFile string `json:"bearerTokenFile"`
		TLSConfig       *struct {
			CA struct {
				Secret struct{ Name, Key string } `json:"secret"`
			} `json:"ca"`
			ServerName string `json:"serverName"`
		} `json:"tlsConfig"`
	}
	type smSpec struct {
		Spec struct {
			Selector  metav1.LabelSelector `json:"selector"`
			Endpoints []endpoint           `json:"endpoints"`
		} `json:"spec"`
	}
	s := &smSpec{}
	if err := yaml.Unmarshal(sm[0].raw, s); err != nil {
		t.Fatal(err)
	}
	svc := one[corev1.Service](t, m, "Service")
	if !selects(t, &s.Spec.Selector, svc.Labels) || len(s.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor spec %+v does not select the Service with one endpoint", s.Spec)
	}
	// Over TLS, verified with the serving certificate's CA for the Service's name, with a bearer token.
	e := s.Spec.Endpoints[0]
	if e.Port != "https-metrics" || e.Path != "/metrics" || e.Scheme != "https" || e.BearerTokenFile != "/var/run/secrets/kubernetes.io/serviceaccount/token" ||
		e.TLSConfig == nil || e.TLSConfig.CA.Secret.Name != volumeSecret(d) || e.TLSConfig.CA.Secret.Key != "ca.crt" ||
		e.TLSConfig.ServerName != svc.Name+"."+releaseNS+".svc" {
		t.Errorf("ServiceMonitor endpoint %+v: want https on https-metrics with the bearer token, verified with %s's ca.crt for %s.%s.svc",
			e, volumeSecret(d), svc.Name, releaseNS)
	}
	plain := render(t, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.secure=false")
	if args := one[appsv1.Deployment](t, plain, "Deployment").Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--metrics-secure=false") {
		t.Errorf("metrics.secure=false: args %q lack --metrics-secure=false", args)
	}
	if raw := string(plain.all("ServiceMonitor")[0].raw); !strings.Contains(raw, "port: http-metrics") || !strings.Contains(raw, "scheme: http\n") || strings.Contains(raw, "bearerTokenFile") {
		t.Errorf("metrics.secure=false: ServiceMonitor\n%s\nwant plain http on http-metrics", raw)
	}

	np := one[networkingv1.NetworkPolicy](t, m, "NetworkPolicy")
	if !selects(t, &np.Spec.PodSelector, d.Spec.Template.Labels) {
		t.Error("NetworkPolicy does not select the injector pods")
	}
	prometheus := []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{},
		PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "prometheus"}}}}
	// Defaults: the API server's addresses are unknown, so the webhook port and the egress ports are
	// open to any address; metrics only to Prometheus.
	assertNetworkPolicy(t, np, nil, []int{443, 6443}, prometheus)

	apiServer := []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.10/32"}}, {IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.11/32"}}}
	scraper := []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}}
	restricted := render(t, "--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServer[0].ipBlock.cidr=10.0.0.10/32",
		"--set", "networkPolicy.apiServer[1].ipBlock.cidr=10.0.0.11/32", "--set", "networkPolicy.apiServerPorts={6443}",
		"--set", "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring")
	assertNetworkPolicy(t, one[networkingv1.NetworkPolicy](t, restricted, "NetworkPolicy"), apiServer, []int{6443}, scraper)

	// No scrapers: nothing may reach metrics.
	closed := render(t, "--set", "networkPolicy.enabled=true", "--set", "networkPolicy.metricsFrom=null")
	assertNetworkPolicy(t, one[networkingv1.NetworkPolicy](t, closed, "NetworkPolicy"), nil, []int{443, 6443}, nil)
}

// assertNetworkPolicy checks that the policy allows exactly: the API server (apiServer; nil: any
// address) to the webhook port 9443, the scrapers (nil: none) to metrics on 8080, and the injector
// to the API server on apiServerPorts; nothing else in or out.
func assertNetworkPolicy(t *testing.T, np *networkingv1.NetworkPolicy, apiServer []networkingv1.NetworkPolicyPeer, apiServerPorts []int,
	scrapers []networkingv1.NetworkPolicyPeer) {
	t.Helper()
	tcp := corev1.ProtocolTCP
	ports := func(ns ...int) []networkingv1.NetworkPolicyPort {
		var out []networkingv1.NetworkPolicyPort
		for _, n := range ns {
			out = append(out, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(int32(n)))})
		}
		return out
	}
	want := networkingv1.NetworkPolicySpec{
		PodSelector: np.Spec.PodSelector,
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		Ingress:     []networkingv1.NetworkPolicyIngressRule{{Ports: ports(9443), From: apiServer}},
		Egress:      []networkingv1.NetworkPolicyEgressRule{{Ports: ports(apiServerPorts...), To: apiServer}},
	}
	if scrapers != nil {
		want.Ingress = append(want.Ingress, networkingv1.NetworkPolicyIngressRule{Ports: ports(8080), From: scrapers})
	}
	if !equality.Semantic.DeepEqual(np.Spec, want) {
		got, _ := yaml.Marshal(np.Spec)
		exp, _ := yaml.Marshal(want)
		t.Errorf("NetworkPolicy spec:\n%s\nwant:\n%s", got, exp)
	}
}

func TestNamesFollowOverrides(t *testing.T) {
	t.Parallel()
	m := render(t, "--set", "fullnameOverride=mesh-injector", "--set", "certManager.enabled=false")
	for _, o := range m.objects {
		if !strings.HasPrefix(o.u.GetName(), "mesh-injector") {
			t.Errorf("%s/%s does not use fullnameOverride", o.u.GetKind(), o.u.GetName())
		}
		if o.u.GetLabels()["app.kubernetes.io/instance"] != releaseName {
			t.Errorf("%s/%s lacks app.kubernetes.io/instance", o.u.GetKind(), o.u.GetName())
		}
	}
	args := one[appsv1.Deployment](t, m, "Deployment").Spec.Template.Spec.Containers[0].Args
	for _, a := range []string{"--webhook-config-name=mesh-injector-sidecar-injector", "--service-name=mesh-injector", "--cert-secret-name=mesh-injector-self-managed-tls"} {
		if !slices.Contains(args, a) {
			t.Errorf("args %q lack %s", args, a)
		}
	}
}
