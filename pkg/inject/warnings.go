package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/pkg/config"
)

// MaxWarningLength is the longest warning the engine returns: the length
// Kubernetes recommends for an admission warning, which kubectl prints on a
// line of its own. Every warning is one line and names the annotation (or
// label) it is about; none carries an annotation's value.
const MaxWarningLength = 120

// maxNoEffect is how many "has no effect" warnings one cause gets; the rest
// are counted in one more.
const maxNoEffect = 3

// warnings are the admission warnings of one pod, in the order they were
// found. They stay nil until the first, so that a pod without any costs no
// allocation: every check below is a map lookup or a comparison.
type warnings []string

func (w *warnings) add(format string, args ...any) {
	*w = append(*w, fmt.Sprintf(format, args...))
}

// deprecatedAnnotations are the pod annotations Istio deprecates
// (deprecated: true in istio.io/api's annotation/annotations.yaml, 1.32),
// with what to use instead. Remora reads only the first two; the others are
// read by the proxy from the pod's annotations.
var deprecatedAnnotations = [...]struct{ name, instead string }{
	{AnnotationInject, "use the label " + LabelInject},
	{AnnotationKubevirtInterfaces, "use " + AnnotationRerouteVirtualIfaces},
	{"sidecar.istio.io/discoveryAddress", "use discoveryAddress in " + AnnotationProxyConfig},
	{"sidecar.istio.io/statsInclusionPrefixes", "use proxyStatsMatcher in " + AnnotationProxyConfig},
	{"sidecar.istio.io/statsInclusionSuffixes", "use proxyStatsMatcher in " + AnnotationProxyConfig},
	{"sidecar.istio.io/statsInclusionRegexps", "use proxyStatsMatcher in " + AnnotationProxyConfig},
	{"sidecar.istio.io/extraStatTags", "use extraStatTags in " + AnnotationProxyConfig},
	{"sidecar.istio.io/statsCompression", "Istio names no replacement"},
}

// deprecationWarnings warns of each deprecated annotation the pod sets, or,
// when what replaces it is set too, that it is ignored.
func deprecationWarnings(w *warnings, ann, lbl map[string]string) {
	for _, d := range deprecatedAnnotations {
		if _, ok := ann[d.name]; !ok {
			continue
		}
		switch _, label := lbl[LabelInject]; {
		case d.name == AnnotationInject && label:
			w.add("annotation %s is ignored: the pod has the label of that name", d.name)
		case d.name == AnnotationKubevirtInterfaces && has(ann, AnnotationRerouteVirtualIfaces):
			w.add("annotation %s is ignored: %s is set", d.name, AnnotationRerouteVirtualIfaces)
		default:
			w.add("annotation %s is deprecated: %s", d.name, d.instead)
		}
	}
}

func has(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// settingAnnotations are the annotations that configure an injected proxy:
// those parseAnnotations reads, but for sidecar.istio.io/inject, which
// decides, in the order they are reported.
var settingAnnotations = [...]string{
	AnnotationTemplates, AnnotationMergeMetrics, AnnotationScrapeTargets, AnnotationProxyConfig,
	AnnotationReadinessDelay, AnnotationReadinessFailures, AnnotationReadinessPeriod,
	AnnotationBootstrapOverride, AnnotationAgentLogLevel, AnnotationComponentLogLevel, AnnotationInterceptionMode,
	AnnotationLogLevel, AnnotationNativeSidecar, AnnotationProxyCPU, AnnotationProxyCPULimit, AnnotationProxyImage,
	AnnotationProxyMemory, AnnotationProxyMemoryLimit, AnnotationRewriteProbes, AnnotationUserVolume,
	AnnotationUserVolumeMount, AnnotationStatusPort, AnnotationRerouteVirtualIfaces,
	AnnotationExcludeInboundPorts, AnnotationExcludeInterfaces, AnnotationExcludeOutboundCIDRs,
	AnnotationExcludeOutboundPorts, AnnotationIncludeInboundPorts, AnnotationIncludeOutboundCIDRs,
	AnnotationIncludeOutboundPorts, AnnotationKubevirtInterfaces, AnnotationExcludeOutboundServices,
}

// captureAnnotations configure the traffic capture (istio-init, or the Istio
// CNI plugin).
var captureAnnotations = [...]string{
	AnnotationIncludeOutboundCIDRs, AnnotationExcludeOutboundCIDRs, AnnotationIncludeInboundPorts,
	AnnotationExcludeInboundPorts, AnnotationIncludeOutboundPorts, AnnotationExcludeOutboundPorts,
	AnnotationExcludeInterfaces, AnnotationRerouteVirtualIfaces, AnnotationKubevirtInterfaces, AnnotationExcludeOutboundServices,
}

// readinessAnnotations time the proxy's readiness probe.
var readinessAnnotations = [...]string{AnnotationReadinessDelay, AnnotationReadinessPeriod, AnnotationReadinessFailures}

// The causes of the "has no effect" warnings of a pod that is not injected.
const (
	notInjectedNamespace   = "not injected (namespace " + LabelNamespaceInject + "=disabled)"
	notInjectedHostNetwork = "not injected (hostNetwork)"
	notInjectedOptOut      = "not injected (" + LabelInject + "=false)"
	notInjectedSelector    = "not injected (neverInjectSelector)"
)

// noEffect warns that each of names the pod sets has no effect, and why:
// the first maxNoEffect in the order of names, the rest counted in one more
// warning.
func noEffect(w *warnings, ann map[string]string, names []string, why string) {
	n := 0
	for _, name := range names {
		if !has(ann, name) {
			continue
		}
		if n++; n <= maxNoEffect {
			w.add("%s has no effect: %s", name, why)
		}
	}
	if n > maxNoEffect {
		w.add("%d more sidecar annotations have no effect: %s", n-maxNoEffect, why)
	}
}

// skipWarnings are the warnings of a pod that is not injected for reason,
// and whether the pod asked for a sidecar itself (sidecar.istio.io/inject=
// true) and is not injected all the same. When the pod is skipped for a
// reason of its own or its namespace's, its request and the proxy settings
// it carries have no effect. A pod left to another revision or injector
// gets no such warning (its settings are that injector's), and an injected
// or never-injected one none at all.
func skipWarnings(pod *corev1.Pod, reason Reason) (warnings, bool) {
	var why string
	switch reason {
	case ReasonAlreadyInjected, ReasonIgnoredNamespace:
		return nil, false
	case ReasonNamespaceDisabled:
		why = notInjectedNamespace
	case ReasonHostNetwork:
		why = notInjectedHostNetwork
	case ReasonPodOptOut:
		why = notInjectedOptOut
	case ReasonNeverInjectLabel:
		why = notInjectedSelector
	}
	var w warnings
	deprecationWarnings(&w, pod.Annotations, pod.Labels)
	if why == "" {
		return w, false
	}
	v, set := explicitInject(pod)
	optIn := set && v == "true"
	if optIn {
		w.add("%s=true has no effect: %s", LabelInject, why)
	}
	noEffect(&w, pod.Annotations, settingAnnotations[:], why)
	return w, optIn
}

// modeWarnings are the warnings of a pod to be injected: annotations it
// sets that have no effect in its mode. Only what the pod sets is warned
// of, never what the configuration makes of it.
func modeWarnings(w *warnings, ann map[string]string, s *config.Settings, mesh *config.MeshConfig, r *resolved) {
	p := r.ann
	if !captures(s, r.mode) {
		noEffect(w, ann, captureAnnotations[:], "interception mode NONE captures no traffic")
	}
	if r.statusPort == 0 {
		noEffect(w, ann, readinessAnnotations[:], "the status port is 0 (no readiness probe)")
		if p.rewriteProbes != nil && *p.rewriteProbes {
			w.add("%s has no effect: the status port is 0", AnnotationRewriteProbes)
		}
	}
	if pc := p.proxyConfig; r.native && pc != nil && pc.HoldApplicationUntilProxyStarts != nil && *pc.HoldApplicationUntilProxyStarts {
		w.add("holdApplicationUntilProxyStarts in %s has no effect with native sidecars", AnnotationProxyConfig)
	}
	mergeOff := (p.mergeMetrics != nil && !*p.mergeMetrics) || (mesh.EnablePrometheusMerge != nil && !*mesh.EnablePrometheusMerge)
	if p.scrapeTargets != nil && mergeOff {
		w.add("%s has no effect: metrics merging is off", AnnotationScrapeTargets)
	}
}
