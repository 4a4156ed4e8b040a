package inject

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/remora-mesh/remora/pkg/config"
)

func testPod(ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "shop", Annotations: ann, Labels: map[string]string{"app": "shop"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "example/app:1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}
}

// TestInvalidAnnotationsAreRefused checks that every annotation the engine
// reads refuses a bad value with an error naming the annotation and the
// value, and that nothing is injected.
func TestInvalidAnnotationsAreRefused(t *testing.T) {
	cfg := config.MustDefault()
	tests := []struct {
		annotation, value, allowed string
	}{
		{AnnotationIncludeOutboundCIDRs, "10.0.0.0/33", "CIDR"},
		{AnnotationIncludeOutboundCIDRs, "bad", "CIDR"},
		{AnnotationExcludeOutboundCIDRs, "*", "not allowed"},
		{AnnotationExcludeOutboundCIDRs, "10.0.0.1/8,,10.1.0.0/16", "empty entry"},
		{AnnotationIncludeInboundPorts, "notaport", "ports 1-65535"},
		{AnnotationIncludeInboundPorts, "80,,x", "empty entry"},
		{AnnotationExcludeInboundPorts, "70000", "ports 1-65535"},
		{AnnotationIncludeOutboundPorts, "0", "ports 1-65535"},
		{AnnotationExcludeOutboundPorts, "3306,*", "ports 1-65535"},
		{AnnotationExcludeInterfaces, "eth0,bad iface", "interface names"},
		{AnnotationRerouteVirtualIfaces, "a-very-long-interface-name", "interface names"},
		{AnnotationKubevirtInterfaces, "net/1", "interface names"},
		{AnnotationInterceptionMode, "MAGIC", "REDIRECT, TPROXY, NONE"},
		{AnnotationStatusPort, "-1", "0 to 65535"},
		{AnnotationStatusPort, "15021", "proxy's own ports"},
		{AnnotationStatusPort, "8080", "collides with port 8080"},
		{AnnotationProxyImage, "bad image", "without spaces"},
		{AnnotationProxyCPU, "lots", "quantity"},
		{AnnotationProxyMemory, "-128Mi", "must not be negative"},
		{AnnotationProxyCPULimit, "abc", "quantity"},
		{AnnotationProxyMemoryLimit, "-1Gi", "must not be negative"},
		{AnnotationLogLevel, "verbose", "trace, debug"},
		{AnnotationComponentLogLevel, "misc", "component:level"},
		{AnnotationComponentLogLevel, "misc:loud", "component:level"},
		{AnnotationAgentLogLevel, "default:trace", "scope:level"},
		{AnnotationReadinessDelay, "-5", "whole number"},
		{AnnotationReadinessPeriod, "0", "whole number from 1"},
		{AnnotationReadinessFailures, "many", "whole number"},
		{AnnotationUserVolume, "{not json", "JSON object"},
		{AnnotationUserVolume, `{"Bad_Name":{"emptyDir":{}}}`, "DNS-1123"},
		{AnnotationUserVolumeMount, `{"data":{"mountPath":"relative"}}`, "absolute mountPath"},
		{AnnotationUserVolumeMount, `{"data":{"mountPath":"/d","bogus":1}}`, "JSON object"},
		{AnnotationUserVolumeMount, `[{"name":"data","mountPath":"relative"}]`, "absolute mountPath"},
		{AnnotationUserVolumeMount, `[{"mountPath":"/d"}]`, "needs a name"},
		{AnnotationUserVolume, `[{"name":"data"}]`, "exactly one source"},
		{AnnotationUserVolume, `[{"name":"Bad_Name","emptyDir":{}}]`, "DNS-1123"},
		{AnnotationScrapeTargets, "8080", "port:/path"},
		{AnnotationScrapeTargets, "x:/metrics", "port 1-65535"},
		{AnnotationScrapeTargets, "8080:metrics", "absolute path"},
		{AnnotationScrapeTargets, "8080:/m,", "port 1-65535"},
		{AnnotationBootstrapOverride, "Not_A_Name", "ConfigMap"},
		{AnnotationNativeSidecar, "maybe", "true or false"},
		{AnnotationRewriteProbes, "yes", "true or false"},
		{AnnotationMergeMetrics, "TRUE", "true or false"},
		{AnnotationInject, "enabled", "true or false"},
		{AnnotationProxyConfig, "{", "ProxyConfig"},
		{AnnotationProxyConfig, `{"unknownField": 1}`, "unknown field"},
		{AnnotationProxyConfig, `{"concurrency": "two"}`, "ProxyConfig"},
		{AnnotationProxyConfig, `{"interceptionMode": "MAGIC"}`, "interceptionMode"},
		{AnnotationTemplates, "sidecar,nosuch", `template "nosuch" does not exist`},
	}
	for _, tt := range tests {
		t.Run(tt.annotation+"="+tt.value, func(t *testing.T) {
			pod := testPod(map[string]string{tt.annotation: tt.value})
			res, err := Inject(Request{Pod: pod, Config: cfg})
			var ae *AnnotationError
			if !errors.As(err, &ae) {
				t.Fatalf("want *AnnotationError, got %v", err)
			}
			msg := err.Error()
			for _, want := range []string{tt.annotation, tt.allowed} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			if !strings.Contains(msg, strconv.Quote(tt.value)) {
				t.Errorf("error %q does not quote the value %q", msg, tt.value)
			}
			if res.Injected || res.Pod != pod {
				t.Errorf("pod was injected despite the error")
			}
			if len(pod.Spec.InitContainers) != 0 || len(pod.Spec.Containers) != 1 {
				t.Errorf("input pod was modified")
			}
		})
	}
}

func TestAllBadAnnotationsReportedTogether(t *testing.T) {
	pod := testPod(map[string]string{
		AnnotationLogLevel:            "loud",
		AnnotationNativeSidecar:       "maybe",
		AnnotationProxyMemoryLimit:    "-1Gi",
		AnnotationIncludeInboundPorts: "80,,x",
	})
	_, err := Inject(Request{Pod: pod, Config: config.MustDefault()})
	var ae *AnnotationError
	if !errors.As(err, &ae) {
		t.Fatalf("want *AnnotationError, got %v", err)
	}
	if len(ae.Errors) != 4 {
		t.Fatalf("want 4 errors in one message, got %d: %v", len(ae.Errors), err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("message must be one line: %q", err)
	}
}

func TestLimitBelowRequestRefused(t *testing.T) {
	pod := testPod(map[string]string{AnnotationProxyCPU: "2", AnnotationProxyCPULimit: "500m"})
	_, err := Inject(Request{Pod: pod, Config: config.MustDefault()})
	if err == nil || !strings.Contains(err.Error(), AnnotationProxyCPULimit) || !strings.Contains(err.Error(), "must not be below") {
		t.Fatalf("want a limit-below-request error, got %v", err)
	}
}

func TestValidAnnotationsAccepted(t *testing.T) {
	pod := testPod(map[string]string{
		AnnotationIncludeOutboundCIDRs: "10.0.0.0/8, fd00::/8",
		AnnotationExcludeOutboundCIDRs: "10.96.10.5",
		AnnotationIncludeInboundPorts:  "8080",
		AnnotationExcludeOutboundPorts: "3306,5432",
		AnnotationComponentLogLevel:    "misc:error,upstream:debug",
		AnnotationAgentLogLevel:        "default:debug,ads:warn",
		AnnotationProxyConfig:          "holdApplicationUntilProxyStarts: true\nconcurrency: 2",
		AnnotationUserVolume:           `{"extra":{"emptyDir":{}}}`,
		AnnotationUserVolumeMount:      `{"extra":{"mountPath":"/extra"}}`,
	})
	res, err := Inject(Request{Pod: pod, Config: config.MustDefault()})
	if err != nil {
		t.Fatalf("Inject: %v", err)
	}
	init := res.Pod.Spec.InitContainers[0]
	args := strings.Join(init.Args, " ")
	for _, want := range []string{"-i 10.0.0.0/8,fd00::/8", "-x 10.96.10.5/32", "-b 8080", "-o 3306,5432"} {
		if !strings.Contains(args, want) {
			t.Errorf("istio-init args %q lack %q", args, want)
		}
	}
	proxy := findProxy(res.Pod)
	if !strings.Contains(strings.Join(proxy.Args, " "), "--concurrency 2") {
		t.Errorf("proxy args %v lack --concurrency 2", proxy.Args)
	}
}
