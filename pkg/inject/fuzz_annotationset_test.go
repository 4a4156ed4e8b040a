package inject_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"

	"github.com/remora-mesh/remora/internal/testenv"
)

// FuzzAnnotationSet sets several annotations the engine reads at once
// (FuzzAnnotations sets one), so that their interactions are explored: a
// limit against its request, a status port against the app's ports, a
// userVolumeMount against userVolume, templates with proxy config. The
// input is "key=value" lines; keys are taken modulo the list. The engine
// either injects a pod the API server would accept (unique container and
// volume names, every mount has its volume) or refuses it with a one-line
// message (an *AnnotationError naming only annotations that were set, or a
// *PodError); it never panics or fails otherwise. Its warnings are each one
// line of at most MaxWarningLength characters.
func FuzzAnnotationSet(f *testing.F) {
	keys := []string{
		inject.AnnotationIncludeOutboundCIDRs, inject.AnnotationExcludeOutboundCIDRs, inject.AnnotationIncludeInboundPorts,
		inject.AnnotationExcludeInboundPorts, inject.AnnotationIncludeOutboundPorts, inject.AnnotationExcludeOutboundPorts,
		inject.AnnotationExcludeInterfaces, inject.AnnotationKubevirtInterfaces, inject.AnnotationRerouteVirtualIfaces,
		inject.AnnotationInterceptionMode, inject.AnnotationStatusPort, inject.AnnotationProxyImage,
		inject.AnnotationProxyCPU, inject.AnnotationProxyMemory, inject.AnnotationProxyCPULimit, inject.AnnotationProxyMemoryLimit,
		inject.AnnotationLogLevel, inject.AnnotationComponentLogLevel, inject.AnnotationAgentLogLevel,
		inject.AnnotationReadinessDelay, inject.AnnotationReadinessPeriod, inject.AnnotationReadinessFailures,
		inject.AnnotationUserVolume, inject.AnnotationUserVolumeMount, inject.AnnotationBootstrapOverride,
		inject.AnnotationNativeSidecar, inject.AnnotationRewriteProbes, inject.AnnotationScrapeTargets, inject.AnnotationMergeMetrics,
		inject.AnnotationProxyConfig, inject.AnnotationTemplates, inject.AnnotationInject,
	}
	index := map[string]int{}
	for i, k := range keys {
		index[k] = i
	}
	seed := func(kv ...string) {
		var b strings.Builder
		for i := 0; i+1 < len(kv); i += 2 {
			fmt.Fprintf(&b, "%d=%s\n", index[kv[i]], kv[i+1])
		}
		f.Add(b.String(), false)
		f.Add(b.String(), true)
	}
	seed(inject.AnnotationProxyCPU, "200m", inject.AnnotationProxyCPULimit, "100m")
	seed(inject.AnnotationProxyMemory, "1Gi", inject.AnnotationProxyMemoryLimit, "2Gi")
	seed(inject.AnnotationStatusPort, "8080")
	seed(inject.AnnotationStatusPort, "0", inject.AnnotationRewriteProbes, "true")
	seed(inject.AnnotationUserVolume, `{"data":{"emptyDir":{}}}`, inject.AnnotationUserVolumeMount, `{"data":{"mountPath":"/data"}}`)
	seed(inject.AnnotationUserVolumeMount, `{"missing":{"mountPath":"/m"}}`)
	seed(inject.AnnotationUserVolume, `{"istio-envoy":{"emptyDir":{}}}`)
	seed(inject.AnnotationTemplates, "sidecar", inject.AnnotationProxyConfig, "concurrency: 2")
	seed(inject.AnnotationInterceptionMode, "TPROXY", inject.AnnotationIncludeInboundPorts, "*", inject.AnnotationExcludeOutboundCIDRs, "10.0.0.1,::1")
	seed(inject.AnnotationNativeSidecar, "maybe", inject.AnnotationLogLevel, "verbose", inject.AnnotationIncludeInboundPorts, "80,,x")
	cfgs := map[bool]*config.Config{true: testenv.DefaultConfig(true), false: testenv.DefaultConfig(false)}
	f.Fuzz(func(t *testing.T, lines string, native bool) {
		ann := map[string]string{}
		for _, line := range strings.Split(lines, "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			var i int
			if _, err := fmt.Sscan(k, &i); err != nil || i < 0 {
				continue
			}
			ann[keys[i%len(keys)]] = v
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default", Annotations: ann},
			Spec: corev1.PodSpec{
				Containers: []corev1.Container{{
					Name: "app", Image: "example.com/app:1",
					Ports:          []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready"}}},
				}},
			},
		}
		res, err := inject.Inject(inject.Request{Pod: pod, Namespace: "default", Config: cfgs[native]})
		if err != nil {
			if !inject.IsRefused(err) {
				t.Fatalf("%v: an error that is not a refusal: %v", ann, err)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("the refusal is not on one line: %q", msg)
			}
			var ae *inject.AnnotationError
			if errors.As(err, &ae) {
				for _, fe := range ae.Errors {
					if _, set := ann[fe.Annotation]; !set {
						t.Fatalf("the refusal names %s, which was not set: %v", fe.Annotation, err)
					}
				}
			}
			return
		}
		for _, w := range res.Warnings {
			if len(w) > inject.MaxWarningLength || strings.ContainsAny(w, "\r\n") {
				t.Fatalf("%v: a warning longer than %d characters or not on one line: %q", ann, inject.MaxWarningLength, w)
			}
		}
		if !res.Injected {
			if v := ann[inject.AnnotationInject]; v != "false" {
				t.Fatalf("%v: neither injected nor refused: %s", ann, res.Reason)
			}
			return
		}
		names := map[string]bool{}
		for _, c := range append(append([]corev1.Container{}, res.Pod.Spec.InitContainers...), res.Pod.Spec.Containers...) {
			if names[c.Name] {
				t.Fatalf("%v: two containers named %q", ann, c.Name)
			}
			names[c.Name] = true
		}
		vols := map[string]bool{}
		for _, v := range res.Pod.Spec.Volumes {
			if vols[v.Name] {
				t.Fatalf("%v: two volumes named %q", ann, v.Name)
			}
			vols[v.Name] = true
		}
		for _, c := range append(append([]corev1.Container{}, res.Pod.Spec.InitContainers...), res.Pod.Spec.Containers...) {
			for _, m := range c.VolumeMounts {
				if !vols[m.Name] {
					t.Fatalf("%v: container %s mounts %q, which the pod does not have", ann, c.Name, m.Name)
				}
			}
		}
	})
}
