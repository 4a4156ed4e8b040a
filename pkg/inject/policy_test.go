package inject

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/pkg/config"

	"github.com/remora-mesh/remora/internal/testenv"
)

func TestPolicy(t *testing.T) {
	cfg := config.MustDefault()
	enabled := map[string]string{LabelNamespaceInject: "enabled"}
	tests := []struct {
		name      string
		ns        string
		nsLabels  map[string]string
		podLabels map[string]string
		podAnn    map[string]string
		host      bool
		want      Reason
	}{
		{name: "enabled namespace", ns: "shop", nsLabels: enabled, want: ReasonInjected},
		{name: "unlabelled namespace", ns: "shop", nsLabels: map[string]string{}, want: ReasonNamespaceNotLabel},
		{name: "disabled namespace", ns: "shop", nsLabels: map[string]string{LabelNamespaceInject: "disabled"}, want: ReasonNamespaceDisabled},
		{name: "revision namespace", ns: "shop", nsLabels: map[string]string{LabelRevision: "default"}, want: ReasonInjected},
		{name: "other revision", ns: "shop", nsLabels: map[string]string{LabelRevision: "canary"}, want: ReasonOtherRevision},
		{name: "pod label opt-out", ns: "shop", nsLabels: enabled, podLabels: map[string]string{LabelInject: "false"}, want: ReasonPodOptOut},
		{name: "pod annotation opt-out", ns: "shop", nsLabels: enabled, podAnn: map[string]string{AnnotationInject: "false"}, want: ReasonPodOptOut},
		{name: "label wins over annotation", ns: "shop", nsLabels: enabled, podLabels: map[string]string{LabelInject: "true"}, podAnn: map[string]string{AnnotationInject: "false"}, want: ReasonInjected},
		{name: "pod opt-in in unlabelled namespace", ns: "shop", nsLabels: map[string]string{}, podLabels: map[string]string{LabelInject: "true"}, want: ReasonInjected},
		{name: "kube-system", ns: "kube-system", nsLabels: enabled, want: ReasonIgnoredNamespace},
		{name: "kube-public", ns: "kube-public", nsLabels: enabled, want: ReasonIgnoredNamespace},
		{name: "own namespace", ns: "remora-system", nsLabels: enabled, want: ReasonIgnoredNamespace},
		{name: "host network", ns: "shop", nsLabels: enabled, host: true, want: ReasonHostNetwork},
		{name: "already injected", ns: "shop", nsLabels: enabled, podAnn: map[string]string{AnnotationStatus: "{}"}, want: ReasonAlreadyInjected},
		{name: "offline ignores namespace labels", ns: "shop", nsLabels: nil, want: ReasonInjected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testPod(tt.podAnn)
			for k, v := range tt.podLabels {
				pod.Labels[k] = v
			}
			pod.Spec.HostNetwork = tt.host
			res, err := Inject(Request{Pod: pod, Namespace: tt.ns, NamespaceLabels: tt.nsLabels, OwnNamespace: "remora-system", Config: cfg})
			if err != nil {
				t.Fatalf("Inject: %v", err)
			}
			if res.Reason != tt.want {
				t.Fatalf("reason %q (%s), want %q", res.Reason, res.Message, tt.want)
			}
			if res.Injected != (tt.want == ReasonInjected) {
				t.Fatalf("injected=%v for reason %q", res.Injected, res.Reason)
			}
			if res.Message == "" {
				t.Errorf("no message for %q", res.Reason)
			}
		})
	}
}

func TestNeverAndAlwaysInjectSelectors(t *testing.T) {
	src := config.Sources{Values: []byte(`
sidecarInjectorWebhook:
  neverInjectSelector:
  - matchExpressions:
    - {key: openshift.io/build.name, operator: Exists}
  alwaysInjectSelector:
  - matchLabels: {force: "yes"}
`)}
	cfg, err := config.Load(src, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	pod := testPod(nil)
	pod.Labels["openshift.io/build.name"] = "b1"
	res, err := Inject(Request{Pod: pod, Config: cfg, NamespaceLabels: map[string]string{LabelNamespaceInject: "enabled"}})
	if err != nil || res.Reason != ReasonNeverInjectLabel {
		t.Fatalf("want never-inject skip, got %v %v", res.Reason, err)
	}
	pod.Labels["force"] = "yes"
	res, err = Inject(Request{Pod: pod, Config: cfg, NamespaceLabels: map[string]string{LabelNamespaceInject: "enabled"}})
	if err != nil || !res.Injected {
		t.Fatalf("alwaysInjectSelector must win, got %v %v", res.Reason, err)
	}
}

func TestInjectIsIdempotentAndPure(t *testing.T) {
	cfg := config.MustDefault()
	pod := testPod(nil)
	before := pod.DeepCopy()
	res, err := Inject(Request{Pod: pod, Config: cfg})
	if err != nil || !res.Injected {
		t.Fatalf("Inject: %v %v", res.Reason, err)
	}
	if pod.String() != before.String() {
		t.Fatal("Inject modified its input pod")
	}
	again, err := Inject(Request{Pod: res.Pod, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if again.Injected || again.Reason != ReasonAlreadyInjected || again.Pod.String() != res.Pod.String() {
		t.Fatalf("second injection changed the pod (reason %q)", again.Reason)
	}
}

func TestNativeAndClassicLayouts(t *testing.T) {
	hold := `holdApplicationUntilProxyStarts: true`
	tests := []struct {
		name                  string
		native                bool
		ann                   map[string]string
		wantInit, wantConts   []string
		wantPostStartWaitHook bool
	}{
		{"native", true, nil, []string{"istio-init", "istio-proxy"}, []string{"app"}, false},
		{"native by annotation", false, map[string]string{AnnotationNativeSidecar: "true"}, []string{"istio-init", "istio-proxy"}, []string{"app"}, false},
		{"classic", false, nil, []string{"istio-init"}, []string{"app", "istio-proxy"}, false},
		{"classic hold", false, map[string]string{AnnotationProxyConfig: hold}, []string{"istio-init"}, []string{"istio-proxy", "app"}, true},
		{"interception NONE", true, map[string]string{AnnotationInterceptionMode: "NONE"}, []string{"istio-proxy"}, []string{"app"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Inject(Request{Pod: testPod(tt.ann), Config: testenv.DefaultConfig(tt.native)})
			if err != nil {
				t.Fatal(err)
			}
			gotInit := containerNames(res.Pod.Spec.InitContainers)
			gotConts := containerNames(res.Pod.Spec.Containers)
			if joined(gotInit) != joined(tt.wantInit) || joined(gotConts) != joined(tt.wantConts) {
				t.Fatalf("init %v containers %v, want %v %v", gotInit, gotConts, tt.wantInit, tt.wantConts)
			}
			proxy := findProxy(res.Pod)
			hasWait := proxy.Lifecycle != nil && proxy.Lifecycle.PostStart != nil
			if hasWait != tt.wantPostStartWaitHook {
				t.Errorf("postStart wait hook = %v, want %v", hasWait, tt.wantPostStartWaitHook)
			}
			if tt.native || tt.ann[AnnotationNativeSidecar] == "true" {
				if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
					t.Error("native proxy lacks restartPolicy Always")
				}
				if proxy.StartupProbe == nil || proxy.StartupProbe.HTTPGet.Path != "/healthz/ready" {
					t.Error("native proxy must hold the app with a startup probe on /healthz/ready")
				}
			}
		})
	}
}

func containerNames(cs []corev1.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

func joined(s []string) string { return fmt.Sprint(s) }

func TestPodsTheAPIServerWouldRefuseAreRefused(t *testing.T) {
	cfg := config.MustDefault()
	tests := []struct {
		name   string
		mutate func(*corev1.Pod)
		want   string
	}{
		{"volume named like an injected one", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "istio-envoy"})
		}, `volume "istio-envoy"`},
		{"user volume named like an injected one", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationUserVolume: `{"istio-data":{"emptyDir":{}}}`}
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "istio-data"})
		}, `volume "istio-data"`},
		{"mount without volume", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationUserVolumeMount: `{"missing":{"mountPath":"/m"}}`}
		}, `mounts volume "missing"`},
		{"app container named like the init container", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-init", Image: "x"})
		}, `two containers named "istio-init"`},
		{"annotations over the API server's limit", func(p *corev1.Pod) {
			p.Annotations = map[string]string{"big": string(make([]byte, 300*1024))}
		}, "annotations would total"},
		// Istio injects these; the API server then refuses the pod.
		{"only container is the proxy, which native mode moves to the init containers", func(p *corev1.Pod) {
			p.Spec.Containers = []corev1.Container{{Name: ProxyContainerName, Image: "auto"}}
		}, "the pod would have no container"},
		{"user volume with an absolute item path", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationUserVolume: `{"v":{"configMap":{"name":"c","items":[{"key":"k","path":"/abs"}]}}}`}
		}, `item path "/abs" must be relative`},
		{"user volume (list form) with an absolute item path", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationUserVolume: `[{"name":"v","configMap":{"name":"c","items":[{"key":"k","path":"/abs"}]}}]`}
		}, `item path "/abs" must be relative`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testPod(nil)
			tt.mutate(pod)
			_, err := Inject(Request{Pod: pod, Config: cfg})
			if err == nil || !IsRefused(err) {
				t.Fatalf("want a refusal, got %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

// TestUninjectRestoresWhatInjectionChanged injects and uninjects pods whose
// annotations and containers injection rewrites, and expects the original
// pod back.
func TestUninjectRestoresWhatInjectionChanged(t *testing.T) {
	cfg := config.MustDefault()
	tests := []struct {
		name   string
		mutate func(*corev1.Pod)
	}{
		{"prometheus annotations", func(p *corev1.Pod) {
			p.Annotations = map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9090", "prometheus.io/path": "/m"}
		}},
		{"scrape targets", func(p *corev1.Pod) {
			p.Annotations = map[string]string{"prometheus.io/scrape": "true", AnnotationScrapeTargets: "8080:/metrics,9100:/m2"}
		}},
		{"a user's own istio-proxy", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ProxyContainerName, Image: "auto",
				SecurityContext: &corev1.SecurityContext{RunAsUser: ptr(int64(1234))}})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testPod(nil)
			tt.mutate(pod)
			res, err := Inject(Request{Pod: pod, Config: cfg})
			if err != nil || !res.Injected {
				t.Fatalf("Inject: %v %v", res.Reason, err)
			}
			back, ok, err := Uninject(res.Pod)
			if err != nil || !ok {
				t.Fatalf("Uninject: %v %v", ok, err)
			}
			if back.String() != pod.String() {
				t.Errorf("uninjected pod differs from the original:\n got %s\nwant %s", back.String(), pod.String())
			}
		})
	}
}
