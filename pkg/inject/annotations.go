package inject

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/pkg/config"
)

// Pod annotations and labels that Istio defines and Remora reads.
const (
	AnnotationInject               = "sidecar.istio.io/inject"
	AnnotationStatus               = "sidecar.istio.io/status"
	AnnotationTemplates            = "inject.istio.io/templates"
	AnnotationIncludeOutboundCIDRs = "traffic.sidecar.istio.io/includeOutboundIPRanges"
	AnnotationExcludeOutboundCIDRs = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
	AnnotationIncludeInboundPorts  = "traffic.sidecar.istio.io/includeInboundPorts"
	AnnotationExcludeInboundPorts  = "traffic.sidecar.istio.io/excludeInboundPorts"
	AnnotationIncludeOutboundPorts = "traffic.sidecar.istio.io/includeOutboundPorts"
	AnnotationExcludeOutboundPorts = "traffic.sidecar.istio.io/excludeOutboundPorts"
	AnnotationExcludeInterfaces    = "traffic.sidecar.istio.io/excludeInterfaces"
	AnnotationKubevirtInterfaces   = "traffic.sidecar.istio.io/kubevirtInterfaces"
	AnnotationRerouteVirtualIfaces = "istio.io/reroute-virtual-interfaces"
	AnnotationInterceptionMode     = "sidecar.istio.io/interceptionMode"
	AnnotationStatusPort           = "status.sidecar.istio.io/port"
	AnnotationProxyImage           = "sidecar.istio.io/proxyImage"
	AnnotationProxyCPU             = "sidecar.istio.io/proxyCPU"
	AnnotationProxyMemory          = "sidecar.istio.io/proxyMemory"
	AnnotationProxyCPULimit        = "sidecar.istio.io/proxyCPULimit"
	AnnotationProxyMemoryLimit     = "sidecar.istio.io/proxyMemoryLimit"
	AnnotationLogLevel             = "sidecar.istio.io/logLevel"
	AnnotationComponentLogLevel    = "sidecar.istio.io/componentLogLevel"
	AnnotationAgentLogLevel        = "sidecar.istio.io/agentLogLevel"
	AnnotationReadinessDelay       = "readiness.status.sidecar.istio.io/initialDelaySeconds"
	AnnotationReadinessPeriod      = "readiness.status.sidecar.istio.io/periodSeconds"
	AnnotationReadinessFailures    = "readiness.status.sidecar.istio.io/failureThreshold"
	AnnotationUserVolume           = "sidecar.istio.io/userVolume"
	AnnotationUserVolumeMount      = "sidecar.istio.io/userVolumeMount"
	AnnotationBootstrapOverride    = "sidecar.istio.io/bootstrapOverride"
	AnnotationNativeSidecar        = "sidecar.istio.io/nativeSidecar"
	AnnotationRewriteProbes        = "sidecar.istio.io/rewriteAppHTTPProbers"
	AnnotationMergeMetrics         = "prometheus.istio.io/merge-metrics"
	AnnotationScrapeTargets        = "prometheus.istio.io/scrape-targets"
	AnnotationProxyConfig          = "proxy.istio.io/config"
	AnnotationProxyOverrides       = "proxy.istio.io/overrides"
	AnnotationConfigHash           = "remora.io/injection-hash"
	// AnnotationInjectedImage records the proxy image a pod was injected
	// with, so that the companion controller, which watches pods as
	// metadata only, can tell an image change from a configuration change.
	AnnotationInjectedImage        = "remora.io/proxy-image"
	AnnotationDefaultContainer     = "kubectl.kubernetes.io/default-container"
	AnnotationDefaultLogsContainer = "kubectl.kubernetes.io/default-logs-container"

	LabelInject            = "sidecar.istio.io/inject"
	LabelRevision          = "istio.io/rev"
	LabelNamespaceInject   = "istio-injection"
	LabelTLSMode           = "security.istio.io/tlsMode"
	LabelCanonicalName     = "service.istio.io/canonical-name"
	LabelCanonicalRevision = "service.istio.io/canonical-revision"
)

// parsed holds the validated pod annotations. Pointers and empty strings
// mean "not set".
type parsed struct {
	includeCIDRs, excludeCIDRs                      *string
	includeInPorts, excludeInPorts                  *string
	includeOutPorts, excludeOutPorts                *string
	excludeInterfaces, rerouteInterfaces            *string
	interceptionMode                                string
	statusPort                                      *int32
	proxyImage                                      string
	cpu, memory, cpuLimit, memoryLimit              *resource.Quantity
	logLevel, componentLogLevel, agentLogLevel      string
	readinessDelay, readinessPeriod, readinessFails *int32
	userVolumes                                     []corev1.Volume
	userMounts                                      []corev1.VolumeMount
	bootstrapOverride                               string
	nativeSidecar, rewriteProbes, mergeMetrics      *bool
	scrapeTargets                                   []scrapeTarget
	proxyConfig                                     *config.ProxyConfig
	templates                                       []string
	// excludeServices are the Services of excludeOutboundServices; a bare
	// name's namespace is empty until resolve knows the pod's.
	excludeServices []ServiceRef
}

// parseAnnotations validates every annotation the engine reads and returns
// them typed, or an *AnnotationError naming each bad one.
func parseAnnotations(ann map[string]string, cfg *config.Config) (*parsed, error) {
	v := &validator{ann: ann}
	p := &parsed{}
	p.includeCIDRs = v.cidrList(AnnotationIncludeOutboundCIDRs, true)
	p.excludeCIDRs = v.cidrList(AnnotationExcludeOutboundCIDRs, false)
	if s, ok := v.get(AnnotationExcludeOutboundServices); ok {
		refs, err := ParseServiceRefs(s, "")
		if err != nil {
			v.fail(AnnotationExcludeOutboundServices, s, "must be a comma-separated list of Services, NAME.NAMESPACE or NAME "+
				"(in the pod's namespace), such as mysql.db,postgres: "+err.Error())
		}
		p.excludeServices = refs
	}
	p.includeInPorts = v.portList(AnnotationIncludeInboundPorts, true)
	p.excludeInPorts = v.portList(AnnotationExcludeInboundPorts, false)
	p.includeOutPorts = v.portList(AnnotationIncludeOutboundPorts, false)
	p.excludeOutPorts = v.portList(AnnotationExcludeOutboundPorts, false)
	p.excludeInterfaces = v.interfaceList(AnnotationExcludeInterfaces)
	if p.rerouteInterfaces = v.interfaceList(AnnotationRerouteVirtualIfaces); p.rerouteInterfaces == nil {
		p.rerouteInterfaces = v.interfaceList(AnnotationKubevirtInterfaces)
	}
	if s, ok := v.get(AnnotationInterceptionMode); ok {
		switch s {
		case "REDIRECT", "TPROXY", "NONE":
			p.interceptionMode = s
		default:
			v.fail(AnnotationInterceptionMode, s, "must be one of REDIRECT, TPROXY, NONE")
		}
	}
	p.statusPort = v.int32Range(AnnotationStatusPort, 0, 65535)
	if s, ok := v.get(AnnotationProxyImage); ok {
		if strings.TrimSpace(s) == "" || strings.ContainsAny(s, " \t\n") {
			v.fail(AnnotationProxyImage, s, "must be a container image reference without spaces")
		} else {
			p.proxyImage = s
		}
	}
	p.cpu = v.quantity(AnnotationProxyCPU)
	p.memory = v.quantity(AnnotationProxyMemory)
	p.cpuLimit = v.quantity(AnnotationProxyCPULimit)
	p.memoryLimit = v.quantity(AnnotationProxyMemoryLimit)
	if p.cpu != nil && p.cpuLimit != nil && p.cpuLimit.Cmp(*p.cpu) < 0 {
		v.fail(AnnotationProxyCPULimit, ann[AnnotationProxyCPULimit], "must not be below "+AnnotationProxyCPU+"="+ann[AnnotationProxyCPU])
	}
	if p.memory != nil && p.memoryLimit != nil && p.memoryLimit.Cmp(*p.memory) < 0 {
		v.fail(AnnotationProxyMemoryLimit, ann[AnnotationProxyMemoryLimit], "must not be below "+AnnotationProxyMemory+"="+ann[AnnotationProxyMemory])
	}
	p.logLevel = v.level(AnnotationLogLevel)
	p.componentLogLevel = v.scopedLevels(AnnotationComponentLogLevel, envoyLevels, false,
		"must be a comma-separated list of component:level, levels trace, debug, info, warning, warn, error, critical, off")
	p.agentLogLevel = v.scopedLevels(AnnotationAgentLogLevel, agentLevels, true,
		"must be a level or a comma-separated list of scope:level, levels debug, info, warn, error, fatal, none")
	p.readinessDelay = v.int32Range(AnnotationReadinessDelay, 0, 1<<31-1)
	p.readinessPeriod = v.int32Range(AnnotationReadinessPeriod, 1, 1<<31-1)
	p.readinessFails = v.int32Range(AnnotationReadinessFailures, 1, 1<<31-1)
	p.userVolumes = parseUserVolumes(v)
	p.userMounts = parseUserMounts(v)
	if s, ok := v.get(AnnotationBootstrapOverride); ok {
		if !dns1123.MatchString(s) {
			v.fail(AnnotationBootstrapOverride, s, "must be the name of a ConfigMap (a DNS-1123 subdomain)")
		} else {
			p.bootstrapOverride = s
		}
	}
	p.nativeSidecar = v.boolean(AnnotationNativeSidecar)
	p.rewriteProbes = v.boolean(AnnotationRewriteProbes)
	p.mergeMetrics = v.boolean(AnnotationMergeMetrics)
	p.scrapeTargets = parseScrapeTargets(v)
	if s, ok := v.get(AnnotationProxyConfig); ok {
		pc, err := config.ParseProxyConfig([]byte(s))
		if err != nil {
			v.fail(AnnotationProxyConfig, s, "must be a ProxyConfig in YAML or JSON with known fields of the right types: "+err.Error())
		} else {
			p.proxyConfig = &pc
		}
	}
	if s, ok := v.get(AnnotationTemplates); ok {
		for _, name := range strings.Split(s, ",") {
			name = strings.TrimSpace(name)
			if _, exists := cfg.Templates[name]; !exists {
				names := make([]string, 0, len(cfg.Templates))
				for n := range cfg.Templates {
					names = append(names, n)
				}
				sort.Strings(names)
				v.fail(AnnotationTemplates, s, fmt.Sprintf("template %q does not exist; known templates: %s", name, strings.Join(names, ", ")))
				break
			}
			p.templates = append(p.templates, name)
		}
	}
	if s, ok := v.get(AnnotationInject); ok {
		if _, err := parseBool(s); err != nil {
			v.fail(AnnotationInject, s, "must be true or false")
		}
	}
	if len(v.errs) > 0 {
		return nil, &AnnotationError{Errors: v.errs}
	}
	return p, nil
}

// parseScrapeTargets reads prometheus.istio.io/scrape-targets:
// "port:/path,port:/path", the app's metrics endpoints the agent merges.
func parseScrapeTargets(v *validator) []scrapeTarget {
	s, ok := v.get(AnnotationScrapeTargets)
	if !ok {
		return nil
	}
	const allowed = "must be a comma-separated list of port:/path, such as 8080:/metrics,9100:/custom-metrics"
	var out []scrapeTarget
	for i, e := range strings.Split(s, ",") {
		port, path, found := strings.Cut(strings.TrimSpace(e), ":")
		n, err := strconv.Atoi(port)
		switch {
		case !found || err != nil || n < 1 || n > 65535:
			v.fail(AnnotationScrapeTargets, s, fmt.Sprintf("%s: entry %d %q needs a port 1-65535 before the colon", allowed, i+1, e))
			return nil
		case !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t"):
			v.fail(AnnotationScrapeTargets, s, fmt.Sprintf("%s: entry %d %q needs an absolute path without spaces", allowed, i+1, e))
			return nil
		}
		out = append(out, scrapeTarget{Port: strconv.Itoa(n), Path: path})
	}
	return out
}

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func decodeStrict(s string, into any) error {
	return yaml.UnmarshalStrict([]byte(s), into)
}

func parseUserVolumes(v *validator) []corev1.Volume {
	s, ok := v.get(AnnotationUserVolume)
	if !ok {
		return nil
	}
	const allowed = `must be a JSON object of volume name to volume source, such as {"data":{"emptyDir":{}}}`
	var m map[string]corev1.VolumeSource
	var out []corev1.Volume
	if err := decodeStrict(s, &m); err != nil {
		// Istio also accepts a list of volumes; it gets the same checks.
		if err2 := decodeStrict(s, &out); err2 != nil {
			v.fail(AnnotationUserVolume, s, allowed+": "+err.Error())
			return nil
		}
	} else {
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		sort.Strings(names)
		out = make([]corev1.Volume, 0, len(m))
		for _, n := range names {
			out = append(out, corev1.Volume{Name: n, VolumeSource: m[n]})
		}
	}
	for _, vol := range out {
		if !dns1123Label(vol.Name) {
			v.fail(AnnotationUserVolume, s, fmt.Sprintf("volume name %q must be a DNS-1123 label", vol.Name))
			return nil
		}
	}
	for _, vol := range out {
		if msg := checkVolumeSource(vol); msg != "" {
			v.fail(AnnotationUserVolume, s, msg)
			return nil
		}
	}
	return out
}

// checkVolumeSource checks what the API server would refuse in a user
// volume: exactly one source, and item paths that are relative and do not
// climb out with "..".
func checkVolumeSource(vol corev1.Volume) string {
	b, err := json.Marshal(vol.VolumeSource)
	if err != nil {
		return err.Error()
	}
	var sources map[string]json.RawMessage
	if err := json.Unmarshal(b, &sources); err != nil {
		return err.Error()
	}
	if len(sources) != 1 {
		return fmt.Sprintf("volume %q must have exactly one source, has %d", vol.Name, len(sources))
	}
	var paths []string
	if c := vol.ConfigMap; c != nil {
		for _, it := range c.Items {
			paths = append(paths, it.Path)
		}
	}
	if c := vol.Secret; c != nil {
		for _, it := range c.Items {
			paths = append(paths, it.Path)
		}
	}
	if c := vol.DownwardAPI; c != nil {
		for _, it := range c.Items {
			paths = append(paths, it.Path)
		}
	}
	if c := vol.Projected; c != nil {
		for _, src := range c.Sources {
			if src.ConfigMap != nil {
				for _, it := range src.ConfigMap.Items {
					paths = append(paths, it.Path)
				}
			}
			if src.Secret != nil {
				for _, it := range src.Secret.Items {
					paths = append(paths, it.Path)
				}
			}
		}
	}
	for _, p := range paths {
		if p == "" || strings.HasPrefix(p, "/") || slices.Contains(strings.Split(p, "/"), "..") {
			return fmt.Sprintf("volume %q: item path %q must be relative and must not contain '..'", vol.Name, p)
		}
	}
	return ""
}

func parseUserMounts(v *validator) []corev1.VolumeMount {
	s, ok := v.get(AnnotationUserVolumeMount)
	if !ok {
		return nil
	}
	const allowed = `must be a JSON object of volume name to mount, such as {"data":{"mountPath":"/data"}}`
	var m map[string]corev1.VolumeMount
	var out []corev1.VolumeMount
	if err := decodeStrict(s, &m); err != nil {
		// Istio also accepts a list of mounts; it gets the same checks.
		if err2 := decodeStrict(s, &out); err2 != nil {
			v.fail(AnnotationUserVolumeMount, s, allowed+": "+err.Error())
			return nil
		}
	} else {
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		sort.Strings(names)
		out = make([]corev1.VolumeMount, 0, len(m))
		for _, n := range names {
			vm := m[n]
			if vm.Name == "" {
				vm.Name = n
			}
			out = append(out, vm)
		}
	}
	for i, vm := range out {
		if vm.Name == "" {
			v.fail(AnnotationUserVolumeMount, s, fmt.Sprintf("mount %d needs a name", i+1))
			return nil
		}
		if !strings.HasPrefix(vm.MountPath, "/") {
			v.fail(AnnotationUserVolumeMount, s, fmt.Sprintf("mount %q needs an absolute mountPath", vm.Name))
			return nil
		}
	}
	return out
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func dns1123Label(s string) bool { return len(s) <= 63 && dnsLabel.MatchString(s) }
