package inject

import (
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/pkg/config"

	"github.com/remora-mesh/remora/internal/testenv"
)

// effect is one documented setting (a value or a pod annotation), set on
// top of a baseline, and what it must do to the injected pod.
type effect struct {
	// key is the value path (as in values.yaml) or the annotation name
	// the row covers; a value row covers every value under its path.
	key string
	// set are --set expressions (without "values."), values a YAML values
	// file; both apply to this row only.
	set    []string
	values string
	// ann are pod annotations for this row only.
	ann map[string]string
	// base are --set expressions applied to the baseline and the row.
	base []string
	// baseValues is a values file applied to the baseline and the row.
	baseValues string
	// pod changes the pod of the baseline and the row; rowPod the row's.
	pod, rowPod func(*corev1.Pod)
	// classic injects in classic mode (no native sidecars).
	classic bool
	// nsLabels are the namespace's labels (nil: offline, as the CLI).
	nsLabels map[string]string
	// check asserts the effect on the injected pod.
	check func(t *testing.T, res Result)
}

func probed(p *corev1.Pod) {
	p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8080)},
	}}
}

func initArg(t *testing.T, pod *corev1.Pod, flag string) string {
	t.Helper()
	c := container(pod, InitContainerName)
	if c == nil {
		t.Fatalf("no %s", InitContainerName)
	}
	for i := 0; i+1 < len(c.Args); i++ {
		if c.Args[i] == flag {
			return c.Args[i+1]
		}
	}
	return ""
}

func container(pod *corev1.Pod, name string) *corev1.Container {
	for _, l := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range l {
			if l[i].Name == name {
				return &l[i]
			}
		}
	}
	return nil
}

func proxyOf(t *testing.T, res Result) *corev1.Container {
	t.Helper()
	if !res.Injected {
		t.Fatalf("not injected: %s %s", res.Reason, res.Message)
	}
	c := findProxy(res.Pod)
	if c == nil {
		t.Fatal("no istio-proxy")
	}
	return c
}

func envOf(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return "(unset)"
}

func hasArg(c *corev1.Container, arg string) bool {
	for _, a := range c.Args {
		if a == arg {
			return true
		}
	}
	return false
}

func want[T comparable](t *testing.T, what string, got, wantV T) {
	t.Helper()
	if got != wantV {
		t.Errorf("%s = %v, want %v", what, got, wantV)
	}
}

// customTemplate reads a value, to show values that only custom templates
// read reach them.
const customTemplate = `
sidecarInjectorWebhook:
  defaultTemplates: [sidecar, show]
  templates:
    show: |
      metadata:
        annotations:
          shown: {{ toJSON (printf "%v/%v/%v" .Values.global.variant .Values.global.jwtPolicy .Values.global.podDNSSearchNamespaces) }}
`

var valueEffects = []effect{
	{key: "revision", set: []string{"revision=canary"}, check: func(t *testing.T, r Result) {
		want(t, "istio.io/rev", r.Pod.Annotations[LabelRevision], "canary")
		want(t, "CA_ADDR", envOf(proxyOf(t, r), "CA_ADDR"), "istiod-canary.istio-system.svc:15012")
	}},
	{key: "global.hub", set: []string{"global.hub=mirror.example.com/istio"}, check: func(t *testing.T, r Result) {
		want(t, "proxy image", proxyOf(t, r).Image, "mirror.example.com/istio/proxyv2:1.28.0")
		want(t, "init image", container(r.Pod, InitContainerName).Image, "mirror.example.com/istio/proxyv2:1.28.0")
	}},
	{key: "global.tag", set: []string{"global.tag=1.29.1"}, check: func(t *testing.T, r Result) {
		want(t, "proxy image", proxyOf(t, r).Image, "docker.io/istio/proxyv2:1.29.1")
	}},
	{key: "global.imagePullPolicy", set: []string{"global.imagePullPolicy=Always"}, check: func(t *testing.T, r Result) {
		want(t, "proxy pull policy", proxyOf(t, r).ImagePullPolicy, corev1.PullAlways)
		want(t, "init pull policy", container(r.Pod, InitContainerName).ImagePullPolicy, corev1.PullAlways)
	}},
	{key: "global.imagePullSecrets", values: "global: {imagePullSecrets: [regcred]}", check: func(t *testing.T, r Result) {
		want(t, "pull secrets", len(r.Pod.Spec.ImagePullSecrets) == 1 && r.Pod.Spec.ImagePullSecrets[0].Name == "regcred", true)
	}},
	{key: "global.meshID", set: []string{"global.meshID=mesh-a"}, check: func(t *testing.T, r Result) {
		want(t, "ISTIO_META_MESH_ID", envOf(proxyOf(t, r), "ISTIO_META_MESH_ID"), "mesh-a")
	}},
	{key: "global.network", set: []string{"global.network=net-a"}, check: func(t *testing.T, r Result) {
		want(t, "ISTIO_META_NETWORK", envOf(proxyOf(t, r), "ISTIO_META_NETWORK"), "net-a")
		want(t, "network label", r.Pod.Labels["topology.istio.io/network"], "net-a")
	}},
	{key: "global.multiCluster.clusterName", set: []string{"global.multiCluster.clusterName=east"}, check: func(t *testing.T, r Result) {
		want(t, "ISTIO_META_CLUSTER_ID", envOf(proxyOf(t, r), "ISTIO_META_CLUSTER_ID"), "east")
	}},
	{key: "global.caAddress", set: []string{"global.caAddress=ca.example.com:443"}, check: func(t *testing.T, r Result) {
		want(t, "CA_ADDR", envOf(proxyOf(t, r), "CA_ADDR"), "ca.example.com:443")
	}},
	{key: "global.pilotCertProvider", set: []string{"global.pilotCertProvider=kubernetes"}, check: func(t *testing.T, r Result) {
		want(t, "PILOT_CERT_PROVIDER", envOf(proxyOf(t, r), "PILOT_CERT_PROVIDER"), "kubernetes")
	}},
	{key: "global.istioNamespace", set: []string{"global.istioNamespace=mesh-system"}, check: func(t *testing.T, r Result) {
		want(t, "CA_ADDR", envOf(proxyOf(t, r), "CA_ADDR"), "istiod.mesh-system.svc:15012")
	}},
	{key: "global.logging.level", set: []string{"global.logging.level=default:debug"}, check: func(t *testing.T, r Result) {
		want(t, "proxy --log_output_level", hasArg(proxyOf(t, r), "--log_output_level=default:debug"), true)
		want(t, "init --log_output_level", hasArg(container(r.Pod, InitContainerName), "--log_output_level=default:debug"), true)
	}},
	{key: "global.logAsJson", set: []string{"global.logAsJson=true"}, check: func(t *testing.T, r Result) {
		want(t, "--log_as_json", hasArg(proxyOf(t, r), "--log_as_json"), true)
	}},
	{key: "global.mountMtlsCerts", set: []string{"global.mountMtlsCerts=true"}, check: func(t *testing.T, r Result) {
		want(t, "istio-certs mount", hasMount(proxyOf(t, r), "istio-certs", "/etc/certs/"), true)
	}},
	{key: "global.variant", baseValues: customTemplate, set: []string{"global.variant=distroless"}, base: []string{"global.variant=debug"}, check: func(t *testing.T, r Result) {
		want(t, "custom template's view", strings.HasPrefix(r.Pod.Annotations["shown"], "distroless/"), true)
	}},
	{key: "global.jwtPolicy", baseValues: customTemplate, set: []string{"global.jwtPolicy=first-party-jwt"}, base: []string{"global.jwtPolicy=third-party-jwt"}, check: func(t *testing.T, r Result) {
		want(t, "custom template's view", strings.Contains(r.Pod.Annotations["shown"], "/first-party-jwt/"), true)
	}},
	{key: "global.podDNSSearchNamespaces", baseValues: customTemplate, set: []string{"global.podDNSSearchNamespaces=global"}, check: func(t *testing.T, r Result) {
		want(t, "custom template's view", strings.HasSuffix(r.Pod.Annotations["shown"], "/global"), true)
		want(t, "dnsConfig (Istio's template adds none)", r.Pod.Spec.DNSConfig == nil, true)
	}},
	{key: "global.proxy.image", set: []string{"global.proxy.image=proxyv2-custom"}, check: func(t *testing.T, r Result) {
		want(t, "proxy image", proxyOf(t, r).Image, "docker.io/istio/proxyv2-custom:1.28.0")
	}},
	{key: "global.proxy.clusterDomain", set: []string{"global.proxy.clusterDomain=corp.local"}, check: func(t *testing.T, r Result) {
		want(t, "--domain", hasArg(proxyOf(t, r), "$(POD_NAMESPACE).svc.corp.local"), true)
	}},
	{key: "global.proxy.resources", values: "global: {proxy: {resources: {requests: {cpu: 300m, memory: 200Mi}, limits: {cpu: '3', memory: 2Gi}}}}", check: func(t *testing.T, r Result) {
		res := proxyOf(t, r).Resources
		want(t, "requests", res.Requests.Cpu().String()+"/"+res.Requests.Memory().String(), "300m/200Mi")
		want(t, "limits", res.Limits.Cpu().String()+"/"+res.Limits.Memory().String(), "3/2Gi")
		want(t, "istio-init gets them too", container(r.Pod, InitContainerName).Resources.Requests.Cpu().String(), "300m")
	}},
	{key: "global.proxy.statusPort", set: []string{"global.proxy.statusPort=15099"}, pod: probed, check: func(t *testing.T, r Result) {
		want(t, "-d", initArg(t, r.Pod, "-d"), "15090,15021,15099")
		want(t, "rewritten probe port", r.Pod.Spec.Containers[0].ReadinessProbe.HTTPGet.Port.IntValue(), 15099)
	}},
	{key: "global.proxy.readinessInitialDelaySeconds", set: []string{"global.proxy.readinessInitialDelaySeconds=7"}, check: func(t *testing.T, r Result) {
		want(t, "initialDelaySeconds", proxyOf(t, r).ReadinessProbe.InitialDelaySeconds, int32(7))
	}},
	{key: "global.proxy.readinessPeriodSeconds", set: []string{"global.proxy.readinessPeriodSeconds=9"}, check: func(t *testing.T, r Result) {
		want(t, "periodSeconds", proxyOf(t, r).ReadinessProbe.PeriodSeconds, int32(9))
	}},
	{key: "global.proxy.readinessFailureThreshold", set: []string{"global.proxy.readinessFailureThreshold=11"}, check: func(t *testing.T, r Result) {
		want(t, "failureThreshold", proxyOf(t, r).ReadinessProbe.FailureThreshold, int32(11))
	}},
	{key: "global.proxy.startupProbe.enabled", set: []string{"global.proxy.startupProbe.enabled=false"}, check: func(t *testing.T, r Result) {
		want(t, "startup probe", proxyOf(t, r).StartupProbe == nil, true)
	}},
	{key: "global.proxy.startupProbe.failureThreshold", set: []string{"global.proxy.startupProbe.failureThreshold=60"}, check: func(t *testing.T, r Result) {
		want(t, "startup failureThreshold", proxyOf(t, r).StartupProbe.FailureThreshold, int32(60))
	}},
	{key: "global.proxy.includeIPRanges", set: []string{"global.proxy.includeIPRanges=10.0.0.0/8"}, check: func(t *testing.T, r Result) {
		want(t, "-i", initArg(t, r.Pod, "-i"), "10.0.0.0/8")
	}},
	{key: "global.proxy.excludeIPRanges", set: []string{"global.proxy.excludeIPRanges=10.96.0.0/12"}, check: func(t *testing.T, r Result) {
		want(t, "-x", initArg(t, r.Pod, "-x"), "10.96.0.0/12")
	}},
	{key: "global.proxy.includeOutboundPorts", set: []string{"global.proxy.includeOutboundPorts=443"}, check: func(t *testing.T, r Result) {
		want(t, "-q", initArg(t, r.Pod, "-q"), "443")
	}},
	{key: "global.proxy.excludeOutboundPorts", set: []string{"global.proxy.excludeOutboundPorts=3306"}, check: func(t *testing.T, r Result) {
		want(t, "-o", initArg(t, r.Pod, "-o"), "3306")
	}},
	{key: "global.proxy.includeInboundPorts", set: []string{"global.proxy.includeInboundPorts=8080"}, check: func(t *testing.T, r Result) {
		want(t, "-b", initArg(t, r.Pod, "-b"), "8080")
	}},
	{key: "global.proxy.excludeInboundPorts", set: []string{"global.proxy.excludeInboundPorts=9000"}, check: func(t *testing.T, r Result) {
		want(t, "-d", initArg(t, r.Pod, "-d"), "15090,15021,9000,15020")
	}},
	{key: "global.proxy.excludeInterfaces", set: []string{"global.proxy.excludeInterfaces=eth1"}, check: func(t *testing.T, r Result) {
		want(t, "-c", initArg(t, r.Pod, "-c"), "eth1")
	}},
	{key: "global.proxy.logLevel", set: []string{"global.proxy.logLevel=debug"}, check: func(t *testing.T, r Result) {
		want(t, "--proxyLogLevel", hasArg(proxyOf(t, r), "--proxyLogLevel=debug"), true)
	}},
	{key: "global.proxy.componentLogLevel", set: []string{"global.proxy.componentLogLevel=upstream:debug"}, check: func(t *testing.T, r Result) {
		want(t, "--proxyComponentLogLevel", hasArg(proxyOf(t, r), "--proxyComponentLogLevel=upstream:debug"), true)
	}},
	{key: "global.proxy.holdApplicationUntilProxyStarts", classic: true, set: []string{"global.proxy.holdApplicationUntilProxyStarts=true"}, check: func(t *testing.T, r Result) {
		want(t, "first container", r.Pod.Spec.Containers[0].Name, ProxyContainerName)
		p := proxyOf(t, r)
		want(t, "postStart", p.Lifecycle != nil && p.Lifecycle.PostStart != nil && p.Lifecycle.PostStart.Exec.Command[1] == "wait", true)
	}},
	{key: "global.proxy.privileged", set: []string{"global.proxy.privileged=true"}, check: func(t *testing.T, r Result) {
		want(t, "privileged", *proxyOf(t, r).SecurityContext.Privileged, true)
	}},
	{key: "global.proxy.lifecycle", values: "global: {proxy: {lifecycle: {preStop: {exec: {command: [sleep, '5']}}}}}", check: func(t *testing.T, r Result) {
		l := proxyOf(t, r).Lifecycle
		want(t, "preStop", l != nil && l.PreStop != nil && strings.Join(l.PreStop.Exec.Command, " ") == "sleep 5", true)
	}},
	{key: "global.proxy.uid", set: []string{"global.proxy.uid=2000"}, check: func(t *testing.T, r Result) {
		want(t, "runAsUser", *proxyOf(t, r).SecurityContext.RunAsUser, int64(2000))
		want(t, "-u", initArg(t, r.Pod, "-u"), "2000")
	}},
	{key: "global.proxy.gid", set: []string{"global.proxy.gid=2001"}, check: func(t *testing.T, r Result) {
		want(t, "runAsGroup", *proxyOf(t, r).SecurityContext.RunAsGroup, int64(2001))
	}},
	{key: "global.proxy_init.image", set: []string{"global.proxy_init.image=registry.example.com/remora/injector:1"}, check: func(t *testing.T, r Result) {
		want(t, "init image", container(r.Pod, InitContainerName).Image, "registry.example.com/remora/injector:1")
	}},
	{key: "global.proxy_init.resources", values: "global: {proxy_init: {resources: {requests: {cpu: 10m, memory: 10Mi}}}}", check: func(t *testing.T, r Result) {
		res := container(r.Pod, InitContainerName).Resources
		want(t, "init requests", res.Requests.Cpu().String()+"/"+res.Requests.Memory().String(), "10m/10Mi")
		want(t, "init limits", len(res.Limits), 0)
		want(t, "proxy keeps its own", proxyOf(t, r).Resources.Requests.Cpu().String(), "100m")
	}},
	{key: "global.nativeSidecars", set: []string{"global.nativeSidecars=false"}, check: func(t *testing.T, r Result) {
		want(t, "proxy in containers", findContainer(r.Pod.Spec.Containers, ProxyContainerName) != nil, true)
	}},
	{key: "sidecarInjectorWebhook.rewriteAppHTTPProbe", set: []string{"sidecarInjectorWebhook.rewriteAppHTTPProbe=false"}, pod: probed, check: func(t *testing.T, r Result) {
		want(t, "probe path", r.Pod.Spec.Containers[0].ReadinessProbe.HTTPGet.Path, "/ready")
	}},
	{key: "sidecarInjectorWebhook.enableNamespacesByDefault", nsLabels: map[string]string{}, set: []string{"sidecarInjectorWebhook.enableNamespacesByDefault=true"}, check: func(t *testing.T, r Result) {
		want(t, "injected", r.Injected, true)
	}},
	{key: "sidecarInjectorWebhook.neverInjectSelector", values: "sidecarInjectorWebhook: {neverInjectSelector: [{matchLabels: {app: shop}}]}", check: func(t *testing.T, r Result) {
		want(t, "reason", r.Reason, ReasonNeverInjectLabel)
	}},
	{key: "sidecarInjectorWebhook.alwaysInjectSelector", baseValues: "sidecarInjectorWebhook: {neverInjectSelector: [{matchLabels: {app: shop}}]}",
		values: "sidecarInjectorWebhook: {neverInjectSelector: [{matchLabels: {app: shop}}], alwaysInjectSelector: [{matchExpressions: [{key: app, operator: Exists}]}]}",
		check: func(t *testing.T, r Result) {
			want(t, "injected", r.Injected, true)
		}},
	{key: "sidecarInjectorWebhook.injectedAnnotations", values: "sidecarInjectorWebhook: {injectedAnnotations: {team: payments}}", check: func(t *testing.T, r Result) {
		want(t, "annotation", r.Pod.Annotations["team"], "payments")
	}},
	{key: "sidecarInjectorWebhook.defaultTemplates", values: "sidecarInjectorWebhook: {defaultTemplates: [gateway]}", check: func(t *testing.T, r Result) {
		want(t, "router", hasArg(proxyOf(t, r), "router"), true)
	}},
	{key: "sidecarInjectorWebhook.templates", values: "sidecarInjectorWebhook: {defaultTemplates: [sidecar, extra], templates: {extra: 'metadata: {annotations: {extra: \"yes\"}}'}}", check: func(t *testing.T, r Result) {
		want(t, "annotation from the extra template", r.Pod.Annotations["extra"], "yes")
	}},
	{key: "pilot.cni.enabled", set: []string{"pilot.cni.enabled=true"}, check: func(t *testing.T, r Result) {
		want(t, "validation container", container(r.Pod, ValidationContainerName) != nil && container(r.Pod, InitContainerName) == nil, true)
	}},
	{key: "pilot.cni.provider", base: []string{"pilot.cni.enabled=true"}, set: []string{"pilot.cni.provider=multus"}, check: func(t *testing.T, r Result) {
		want(t, "multus networks", r.Pod.Annotations["k8s.v1.cni.cncf.io/networks"], "default/istio-cni")
	}},
	{key: "istio_cni.enabled", set: []string{"istio_cni.enabled=true"}, check: func(t *testing.T, r Result) {
		want(t, "validation container", container(r.Pod, ValidationContainerName) != nil, true)
	}},
	{key: "istio_cni.provider", base: []string{"istio_cni.enabled=true"}, set: []string{"istio_cni.provider=multus"}, check: func(t *testing.T, r Result) {
		want(t, "multus networks", r.Pod.Annotations["k8s.v1.cni.cncf.io/networks"], "default/istio-cni")
	}},
	{key: "meshConfig", values: "meshConfig: {defaultConfig: {concurrency: 3}}", check: func(t *testing.T, r Result) {
		want(t, "--concurrency 3", strings.Contains(strings.Join(proxyOf(t, r).Args, " "), "--concurrency 3"), true)
	}},
}

func findContainer(l []corev1.Container, name string) *corev1.Container {
	for i := range l {
		if l[i].Name == name {
			return &l[i]
		}
	}
	return nil
}

func hasMount(c *corev1.Container, name, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == name && m.MountPath == path {
			return true
		}
	}
	return false
}

var annotationEffects = []effect{
	{key: AnnotationInject, ann: map[string]string{AnnotationInject: "false"}, check: func(t *testing.T, r Result) {
		want(t, "reason", r.Reason, ReasonPodOptOut)
	}},
	{key: AnnotationStatus, ann: map[string]string{AnnotationStatus: "{}"}, check: func(t *testing.T, r Result) {
		want(t, "reason", r.Reason, ReasonAlreadyInjected)
	}},
	{key: AnnotationTemplates, ann: map[string]string{AnnotationTemplates: "gateway"}, check: func(t *testing.T, r Result) {
		want(t, "router", hasArg(proxyOf(t, r), "router"), true)
	}},
	{key: AnnotationIncludeOutboundCIDRs, ann: map[string]string{AnnotationIncludeOutboundCIDRs: "10.0.0.0/8"}, check: func(t *testing.T, r Result) {
		want(t, "-i", initArg(t, r.Pod, "-i"), "10.0.0.0/8")
	}},
	{key: AnnotationExcludeOutboundCIDRs, ann: map[string]string{AnnotationExcludeOutboundCIDRs: "10.96.10.5/32"}, check: func(t *testing.T, r Result) {
		want(t, "-x", initArg(t, r.Pod, "-x"), "10.96.10.5/32")
	}},
	{key: AnnotationExcludeOutboundServices, ann: map[string]string{AnnotationExcludeOutboundServices: "mysql.db"}, check: func(t *testing.T, r Result) {
		want(t, "-x", initArg(t, r.Pod, "-x"), "10.96.10.5/32")
		want(t, "record", r.Pod.Annotations[AnnotationExcludedServiceAddresses], "mysql.db=10.96.10.5")
	}},
	{key: AnnotationIncludeInboundPorts, ann: map[string]string{AnnotationIncludeInboundPorts: "8080"}, check: func(t *testing.T, r Result) {
		want(t, "-b", initArg(t, r.Pod, "-b"), "8080")
	}},
	{key: AnnotationExcludeInboundPorts, ann: map[string]string{AnnotationExcludeInboundPorts: "9000"}, check: func(t *testing.T, r Result) {
		want(t, "-d", initArg(t, r.Pod, "-d"), "15090,15021,9000,15020")
	}},
	{key: AnnotationIncludeOutboundPorts, ann: map[string]string{AnnotationIncludeOutboundPorts: "443"}, check: func(t *testing.T, r Result) {
		want(t, "-q", initArg(t, r.Pod, "-q"), "443")
	}},
	{key: AnnotationExcludeOutboundPorts, ann: map[string]string{AnnotationExcludeOutboundPorts: "3306"}, check: func(t *testing.T, r Result) {
		want(t, "-o", initArg(t, r.Pod, "-o"), "3306")
	}},
	{key: AnnotationExcludeInterfaces, ann: map[string]string{AnnotationExcludeInterfaces: "eth1"}, check: func(t *testing.T, r Result) {
		want(t, "-c", initArg(t, r.Pod, "-c"), "eth1")
	}},
	{key: AnnotationKubevirtInterfaces, ann: map[string]string{AnnotationKubevirtInterfaces: "net1"}, check: func(t *testing.T, r Result) {
		want(t, "-k", initArg(t, r.Pod, "-k"), "net1")
	}},
	{key: AnnotationRerouteVirtualIfaces, ann: map[string]string{AnnotationRerouteVirtualIfaces: "net2"}, check: func(t *testing.T, r Result) {
		want(t, "-k", initArg(t, r.Pod, "-k"), "net2")
	}},
	{key: AnnotationInterceptionMode, ann: map[string]string{AnnotationInterceptionMode: "TPROXY"}, check: func(t *testing.T, r Result) {
		want(t, "-m", initArg(t, r.Pod, "-m"), "TPROXY")
		want(t, "proxy runAsUser", *proxyOf(t, r).SecurityContext.RunAsUser, int64(0))
	}},
	{key: AnnotationStatusPort, ann: map[string]string{AnnotationStatusPort: "15099"}, pod: probed, check: func(t *testing.T, r Result) {
		want(t, "-d", initArg(t, r.Pod, "-d"), "15090,15021,15099")
		want(t, "rewritten probe port", r.Pod.Spec.Containers[0].ReadinessProbe.HTTPGet.Port.IntValue(), 15099)
	}},
	{key: AnnotationProxyImage, ann: map[string]string{AnnotationProxyImage: "example.com/proxy:9"}, check: func(t *testing.T, r Result) {
		want(t, "proxy image", proxyOf(t, r).Image, "example.com/proxy:9")
	}},
	{key: AnnotationProxyCPU, ann: map[string]string{AnnotationProxyCPU: "250m"}, check: func(t *testing.T, r Result) {
		want(t, "cpu request", proxyOf(t, r).Resources.Requests.Cpu().String(), "250m")
	}},
	{key: AnnotationProxyMemory, ann: map[string]string{AnnotationProxyMemory: "300Mi"}, check: func(t *testing.T, r Result) {
		want(t, "memory request", proxyOf(t, r).Resources.Requests.Memory().String(), "300Mi")
	}},
	{key: AnnotationProxyCPULimit, ann: map[string]string{AnnotationProxyCPULimit: "1500m"}, check: func(t *testing.T, r Result) {
		want(t, "cpu limit", proxyOf(t, r).Resources.Limits.Cpu().String(), "1500m")
	}},
	{key: AnnotationProxyMemoryLimit, ann: map[string]string{AnnotationProxyMemoryLimit: "700Mi"}, check: func(t *testing.T, r Result) {
		want(t, "memory limit", proxyOf(t, r).Resources.Limits.Memory().String(), "700Mi")
	}},
	{key: AnnotationLogLevel, ann: map[string]string{AnnotationLogLevel: "debug"}, check: func(t *testing.T, r Result) {
		want(t, "--proxyLogLevel", hasArg(proxyOf(t, r), "--proxyLogLevel=debug"), true)
	}},
	{key: AnnotationComponentLogLevel, ann: map[string]string{AnnotationComponentLogLevel: "upstream:debug"}, check: func(t *testing.T, r Result) {
		want(t, "--proxyComponentLogLevel", hasArg(proxyOf(t, r), "--proxyComponentLogLevel=upstream:debug"), true)
	}},
	{key: AnnotationAgentLogLevel, ann: map[string]string{AnnotationAgentLogLevel: "default:debug"}, check: func(t *testing.T, r Result) {
		want(t, "proxy --log_output_level", hasArg(proxyOf(t, r), "--log_output_level=default:debug"), true)
		want(t, "init --log_output_level", hasArg(container(r.Pod, InitContainerName), "--log_output_level=default:debug"), true)
	}},
	{key: AnnotationReadinessDelay, ann: map[string]string{AnnotationReadinessDelay: "7"}, check: func(t *testing.T, r Result) {
		want(t, "initialDelaySeconds", proxyOf(t, r).ReadinessProbe.InitialDelaySeconds, int32(7))
	}},
	{key: AnnotationReadinessPeriod, ann: map[string]string{AnnotationReadinessPeriod: "9"}, check: func(t *testing.T, r Result) {
		want(t, "periodSeconds", proxyOf(t, r).ReadinessProbe.PeriodSeconds, int32(9))
	}},
	{key: AnnotationReadinessFailures, ann: map[string]string{AnnotationReadinessFailures: "11"}, check: func(t *testing.T, r Result) {
		want(t, "failureThreshold", proxyOf(t, r).ReadinessProbe.FailureThreshold, int32(11))
	}},
	{key: AnnotationUserVolume, ann: map[string]string{AnnotationUserVolume: `[{"name":"data","emptyDir":{}}]`}, check: func(t *testing.T, r Result) {
		want(t, "volume", slicesIndexVolume(r.Pod.Spec.Volumes, "data") >= 0, true)
	}},
	{key: AnnotationUserVolumeMount, ann: map[string]string{AnnotationUserVolume: `{"data":{"emptyDir":{}}}`, AnnotationUserVolumeMount: `{"data":{"mountPath":"/data"}}`}, check: func(t *testing.T, r Result) {
		want(t, "mount", hasMount(proxyOf(t, r), "data", "/data"), true)
	}},
	{key: AnnotationBootstrapOverride, ann: map[string]string{AnnotationBootstrapOverride: "my-bootstrap"}, check: func(t *testing.T, r Result) {
		want(t, "ISTIO_BOOTSTRAP_OVERRIDE", envOf(proxyOf(t, r), "ISTIO_BOOTSTRAP_OVERRIDE"), "/etc/istio/custom-bootstrap/custom_bootstrap.json")
		want(t, "volume", slicesIndexVolume(r.Pod.Spec.Volumes, "custom-bootstrap-volume") >= 0, true)
	}},
	{key: AnnotationNativeSidecar, ann: map[string]string{AnnotationNativeSidecar: "false"}, check: func(t *testing.T, r Result) {
		want(t, "proxy in containers", findContainer(r.Pod.Spec.Containers, ProxyContainerName) != nil, true)
	}},
	{key: AnnotationRewriteProbes, ann: map[string]string{AnnotationRewriteProbes: "false"}, pod: probed, check: func(t *testing.T, r Result) {
		want(t, "probe path", r.Pod.Spec.Containers[0].ReadinessProbe.HTTPGet.Path, "/ready")
	}},
	{key: AnnotationMergeMetrics, ann: map[string]string{AnnotationMergeMetrics: "false"}, check: func(t *testing.T, r Result) {
		_, ok := r.Pod.Annotations["prometheus.io/port"]
		want(t, "prometheus.io/port set", ok, false)
	}},
	{key: AnnotationScrapeTargets, ann: map[string]string{AnnotationScrapeTargets: "8080:/metrics,9100:/m2"}, check: func(t *testing.T, r Result) {
		want(t, "ISTIO_PROMETHEUS_ANNOTATIONS", envOf(proxyOf(t, r), "ISTIO_PROMETHEUS_ANNOTATIONS"),
			`{"path":"/metrics","port":"8080","targets":[{"port":"8080","path":"/metrics"},{"port":"9100","path":"/m2"}]}`)
		_, ok := r.Pod.Annotations[AnnotationScrapeTargets]
		want(t, "scrape-targets left on the pod", ok, false)
	}},
	{key: AnnotationProxyConfig, ann: map[string]string{AnnotationProxyConfig: `{"concurrency": 3, "proxyMetadata": {"FOO": "bar"}}`}, check: func(t *testing.T, r Result) {
		want(t, "--concurrency 3", strings.Contains(strings.Join(proxyOf(t, r).Args, " "), "--concurrency 3"), true)
		want(t, "proxy FOO", envOf(proxyOf(t, r), "FOO"), "bar")
		want(t, "istio-init FOO", envOf(container(r.Pod, InitContainerName), "FOO"), "bar")
	}},
	{key: AnnotationProxyOverrides, rowPod: func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ProxyContainerName, Image: "auto",
			SecurityContext: &corev1.SecurityContext{RunAsUser: ptr(int64(1234))}})
	}, check: func(t *testing.T, r Result) {
		want(t, "overrides", r.Pod.Annotations[AnnotationProxyOverrides],
			`{"initContainers":[{"name":"istio-proxy","resources":{},"securityContext":{"runAsUser":1234}}]}`)
		want(t, "user's runAsUser kept", *proxyOf(t, r).SecurityContext.RunAsUser, int64(1234))
		want(t, "istio-init exempts it", initArg(t, r.Pod, "-u"), "1234")
	}},
	{key: AnnotationDefaultContainer, ann: map[string]string{AnnotationDefaultContainer: "other"}, check: func(t *testing.T, r Result) {
		want(t, "default-logs-container follows", r.Pod.Annotations[AnnotationDefaultLogsContainer], "other")
	}},
	{key: AnnotationConfigHash, set: []string{"global.proxy.logLevel=debug"}, check: func(t *testing.T, r Result) {
		want(t, "hash recorded", r.Pod.Annotations[AnnotationConfigHash] != "" && r.Pod.Annotations[AnnotationConfigHash] != config.MustDefault().Hash, true)
	}},
}

func slicesIndexVolume(vs []corev1.Volume, name string) int {
	for i, v := range vs {
		if v.Name == name {
			return i
		}
	}
	return -1
}

func loadEffectConfig(t *testing.T, values string, sets []string, native bool) *config.Config {
	t.Helper()
	src := config.Sources{Values: []byte(values)}
	o := config.Overrides{ServerVersion: testenv.ServerVersion(native)}
	for _, s := range sets {
		if err := o.Set("values." + s); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(src, o)
	if err != nil {
		t.Fatalf("loading values %q %v: %v", values, sets, err)
	}
	return cfg
}

// withoutBookkeeping strips what every configuration change alters
// anyway, and the row's own annotations.
func withoutBookkeeping(r Result, ignore map[string]string) Result {
	p := r.Pod.DeepCopy()
	delete(p.Annotations, AnnotationConfigHash)
	for k := range ignore {
		delete(p.Annotations, k)
	}
	r.Pod, r.Message = p, ""
	return r
}

func runEffects(t *testing.T, rows []effect) {
	for _, e := range rows {
		t.Run(e.key, func(t *testing.T) {
			run := func(values string, sets []string, ann map[string]string, row bool) Result {
				cfg := loadEffectConfig(t, values, sets, !e.classic)
				pod := testPod(ann)
				if e.pod != nil {
					e.pod(pod)
				}
				if row && e.rowPod != nil {
					e.rowPod(pod)
				}
				res, err := Inject(Request{Pod: pod, Namespace: "shop", NamespaceLabels: e.nsLabels, Config: cfg, Services: testServices})
				if err != nil {
					t.Fatalf("Inject: %v", err)
				}
				return res
			}
			// The row's values file replaces the baseline's when it has one.
			base := run(e.baseValues, e.base, nil, false)
			values := e.values
			if values == "" {
				values = e.baseValues
			}
			res := run(values, append(append([]string{}, e.base...), e.set...), e.ann, true)
			if e.key != AnnotationConfigHash && reflect.DeepEqual(withoutBookkeeping(base, e.ann), withoutBookkeeping(res, e.ann)) {
				t.Fatalf("%s has no effect on the injected pod", e.key)
			}
			e.check(t, res)
		})
	}
}

// TestEveryValueHasAnEffect sets each injector value on its own and checks
// what it does to the injected pod.
func TestEveryValueHasAnEffect(t *testing.T) { runEffects(t, valueEffects) }

// TestEveryAnnotationHasAnEffect sets each pod annotation the engine reads
// on its own and checks what it does to the injected pod.
func TestEveryAnnotationHasAnEffect(t *testing.T) { runEffects(t, annotationEffects) }

// valueLeaves returns the leaf paths of a values map.
func valueLeaves(prefix string, v any, out map[string]bool) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		out[prefix] = true
		return
	}
	for k, sub := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		valueLeaves(p, sub, out)
	}
}

// notOnThePod are documented injector values whose effect is not on the
// injected pod, with the test that shows it.
var notOnThePod = map[string]string{
	"sidecarInjectorWebhook.reinvocationPolicy": "the MutatingWebhookConfiguration's reinvocationPolicy (test/chart TestWebhookConfiguration)",
}

// TestEffectTablesCoverEveryDocumentedSetting checks that every value of
// the embedded defaults and of the chart's injector sections, and every
// annotation the README names, has a row above.
func TestEffectTablesCoverEveryDocumentedSetting(t *testing.T) {
	leaves := map[string]bool{}
	valueLeaves("", config.MustDefault().Values, leaves)
	b, err := os.ReadFile("../../charts/remora/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var chart map[string]any
	if err := yaml.Unmarshal(b, &chart); err != nil {
		t.Fatal(err)
	}
	for _, section := range []string{"global", "sidecarInjectorWebhook", "pilot", "istio_cni", "meshConfig", "revision"} {
		valueLeaves(section, chart[section], leaves)
	}
	covered := func(rows []effect, key string) bool {
		for _, e := range rows {
			if key == e.key || strings.HasPrefix(key, e.key+".") {
				return true
			}
		}
		return false
	}
	var missing []string
	for leaf := range leaves {
		if _, ok := notOnThePod[leaf]; !ok && !covered(valueEffects, leaf) {
			missing = append(missing, leaf)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	annRe := regexp.MustCompile("`((?:[a-z.]+\\.)?istio\\.io/[A-Za-z-]+|remora\\.io/injection-hash)")
	var names []string
	for _, m := range annRe.FindAllStringSubmatch(string(readme), -1) {
		names = append(names, m[1])
		if m[1] != LabelRevision && !covered(annotationEffects, m[1]) {
			missing = append(missing, "annotation "+m[1])
		}
	}
	if len(names) < 5 {
		t.Fatalf("found only %d annotations in README.md: %v", len(names), names)
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("%s has no effect test", m)
	}
}
