package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/remora-mesh/remora/pkg/config"
)

// resolved is everything one pod's injection depends on, settled once by
// resolve: each setting of the configuration, overridden by the pod's
// annotation when it sets one. The later steps read it; none of them weighs
// a setting against its annotation again.
type resolved struct {
	// ann are the pod's validated annotations, for what no setting
	// provides (user volumes and mounts, bootstrap override, scrape
	// targets) and what a template may still change (probe rewriting).
	ann *parsed
	// ns is the pod's namespace, "default" when it has none.
	ns string
	// workload owns the pod.
	workload Workload
	// proxyConfig is the mesh's defaultConfig merged with the pod's
	// proxy.istio.io/config; userProxyConfig is the same for only the
	// fields the user set (PROXY_CONFIG).
	proxyConfig, userProxyConfig config.ProxyConfig
	// native: the proxy is a native sidecar (a restartable init container).
	native bool
	// mode is the interception mode: REDIRECT, TPROXY or NONE.
	mode string
	// statusPort is the agent's status port; 0 turns it, its probes and
	// probe rewriting off.
	statusPort int32
	// hold: the app's containers wait for the proxy to start.
	hold bool
	// rewriteProbes: the app's probes go through the agent.
	rewriteProbes bool
	// image is the proxy's image.
	image string
	// logLevel, componentLogLevel and agentLogLevel are the proxy's and
	// the agent's log levels.
	logLevel, componentLogLevel, agentLogLevel string
	// readiness is the proxy's readiness probe timing.
	readiness probeTiming
	// resources are the proxy's (the capture container's too, unless the
	// values give it its own).
	resources corev1.ResourceRequirements
	// capture is what the traffic capture includes and excludes.
	capture capture
	// captureUID and captureGID are the proxy's user and group as the
	// capture rules exempt them: a pod's own istio-proxy container may
	// run the proxy as another user.
	captureUID, captureGID int64
	// templates are the names of the templates to apply, in order.
	templates []string
	// promPort is where Prometheus scrapes the agent.
	promPort int32
	// excluded are the Services the pod excludes from the capture and
	// their addresses (also in capture.excludeCIDRs).
	excluded []ExcludedService
	// warnings are the pod's admission warnings (warnings.go).
	warnings warnings
}

// probeTiming is a probe's initialDelaySeconds, periodSeconds and
// failureThreshold.
type probeTiming struct {
	initialDelay, period, failureThreshold int32
}

// capture holds the comma-separated lists the traffic capture (istio-init,
// or the Istio CNI plugin) is given.
type capture struct {
	includeCIDRs, excludeCIDRs           string
	includeInPorts, excludeInPorts       string
	includeOutPorts, excludeOutPorts     string
	excludeInterfaces, rerouteInterfaces string
}

// resolve is the pipeline's second step: it validates the pod's
// annotations and settles every setting once. Each line of the table below
// is a setting, overridden by the pod's annotation (or, for some, by the
// mesh's proxy config) when that is set. It returns an *AnnotationError
// for an invalid annotation or a status port that collides with a port in
// use.
func resolve(req Request, ns string) (resolved, error) {
	cfg := req.Config
	s := &cfg.Settings
	p, err := parseAnnotations(req.Pod.Annotations, cfg)
	if err != nil {
		return resolved{}, err
	}
	pc, userPC, err := proxyConfigs(cfg, p)
	if err != nil {
		return resolved{}, err
	}
	statusPort := pick(p.statusPort, s.StatusPort)
	if err := checkPortCollisions(req.Pod, statusPort); err != nil {
		return resolved{}, err
	}
	r := resolved{
		ann:               p,
		ns:                ns,
		workload:          req.Workload,
		proxyConfig:       pc,
		userProxyConfig:   userPC,
		native:            pick(p.nativeSidecar, s.NativeSidecars),
		mode:              pickString(p.interceptionMode, pickString(pc.InterceptionMode, "REDIRECT")),
		statusPort:        statusPort,
		hold:              pick(pc.HoldApplicationUntilProxyStarts, s.HoldApplication),
		rewriteProbes:     pick(p.rewriteProbes, s.RewriteAppProbes) && statusPort != 0,
		image:             pickString(p.proxyImage, s.ProxyImage),
		logLevel:          pickString(p.logLevel, s.LogLevel),
		componentLogLevel: pickString(p.componentLogLevel, s.ComponentLogLevel),
		agentLogLevel:     pickString(p.agentLogLevel, s.AgentLogLevel),
		readiness: probeTiming{
			initialDelay:     pick(p.readinessDelay, s.ReadinessInitialDelay),
			period:           pick(p.readinessPeriod, s.ReadinessPeriod),
			failureThreshold: pick(p.readinessFails, s.ReadinessFailureThreshold),
		},
		resources: proxyResources(s, p),
		capture: capture{
			includeCIDRs:      pick(p.includeCIDRs, s.IncludeIPRanges),
			excludeCIDRs:      pick(p.excludeCIDRs, s.ExcludeIPRanges),
			includeInPorts:    pick(p.includeInPorts, s.IncludeInboundPorts),
			excludeInPorts:    pick(p.excludeInPorts, s.ExcludeInboundPorts),
			includeOutPorts:   pick(p.includeOutPorts, s.IncludeOutboundPorts),
			excludeOutPorts:   pick(p.excludeOutPorts, s.ExcludeOutboundPorts),
			excludeInterfaces: pick(p.excludeInterfaces, s.ExcludeInterfaces),
			rerouteInterfaces: pick(p.rerouteInterfaces, ""),
		},
		captureUID: s.ProxyUID,
		captureGID: s.ProxyGID,
		templates:  p.templates,
		promPort:   15020,
	}
	if r.ns == "" {
		r.ns = "default"
	}
	// Without a capture (interception mode NONE) there is nothing to
	// exclude Services from: they are not resolved (a warning says so).
	if captures(s, r.mode) {
		if r.excluded, err = resolveExcludedServices(req, inNamespace(p.excludeServices, r.ns)); err != nil {
			return resolved{}, err
		}
	}
	r.capture.excludeCIDRs = excludeServiceCIDRs(r.capture.excludeCIDRs, r.excluded)
	if r.workload.Name == "" {
		r.workload = deriveWorkload(req.Pod)
	}
	if len(r.templates) == 0 {
		r.templates = cfg.DefaultTemplates
	}
	if pc.StatusPort != nil && *pc.StatusPort != 0 {
		// Istio reads the scrape port from the proxy config, not from
		// the injector's values.
		r.promPort = *pc.StatusPort
	}
	for _, c := range req.Pod.Spec.Containers {
		if c.Name == ProxyContainerName && c.SecurityContext != nil {
			r.captureUID = pick(c.SecurityContext.RunAsUser, r.captureUID)
			r.captureGID = pick(c.SecurityContext.RunAsGroup, r.captureGID)
		}
	}
	deprecationWarnings(&r.warnings, req.Pod.Annotations, req.Pod.Labels)
	modeWarnings(&r.warnings, req.Pod.Annotations, s, &cfg.Mesh, &r)
	return r, nil
}

// pick returns the annotation's value when the pod sets it (ann is not
// nil), else the setting.
func pick[T any](ann *T, setting T) T {
	if ann != nil {
		return *ann
	}
	return setting
}

// pickString is pick for an annotation whose empty value means not set.
func pickString(ann, setting string) string {
	if ann != "" {
		return ann
	}
	return setting
}

// proxyConfigs merges the pod's proxy.istio.io/config over the mesh's
// defaultConfig and over the fields the user set.
func proxyConfigs(cfg *config.Config, p *parsed) (pc, userPC config.ProxyConfig, err error) {
	pc, userPC = cfg.Mesh.DefaultConfig, cfg.UserProxyConfig
	if p.proxyConfig == nil {
		return pc, userPC, nil
	}
	if pc, err = config.MergeProxyConfig(pc, *p.proxyConfig); err != nil {
		return pc, userPC, err
	}
	userPC, err = config.MergeProxyConfig(userPC, *p.proxyConfig)
	return pc, userPC, err
}

// proxyResources are the values' resources, or, when any resource
// annotation is set, exactly what the annotations say (as Istio does).
func proxyResources(s *config.Settings, p *parsed) corev1.ResourceRequirements {
	if p.cpu == nil && p.memory == nil && p.cpuLimit == nil && p.memoryLimit == nil {
		return *s.ProxyResources.DeepCopy()
	}
	rr := corev1.ResourceRequirements{}
	set := func(l *corev1.ResourceList, name corev1.ResourceName, q *resource.Quantity) {
		if q == nil {
			return
		}
		if *l == nil {
			*l = corev1.ResourceList{}
		}
		(*l)[name] = q.DeepCopy()
	}
	set(&rr.Requests, corev1.ResourceCPU, p.cpu)
	set(&rr.Requests, corev1.ResourceMemory, p.memory)
	set(&rr.Limits, corev1.ResourceCPU, p.cpuLimit)
	set(&rr.Limits, corev1.ResourceMemory, p.memoryLimit)
	return rr
}

// checkPortCollisions refuses a status port that an app container already
// uses, or one of the proxy's own ports.
func checkPortCollisions(pod *corev1.Pod, statusPort int32) error {
	if statusPort == 0 {
		return nil
	}
	if statusPort == EnvoyReadinessPort || statusPort == EnvoyPrometheusPort || statusPort == 15001 || statusPort == 15006 || statusPort == 15000 {
		return &AnnotationError{Errors: []FieldError{{
			Annotation: AnnotationStatusPort, Value: fmt.Sprint(statusPort),
			Allowed: "must not be one of the proxy's own ports 15000, 15001, 15006, 15021, 15090",
		}}}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == ProxyContainerName {
			continue
		}
		for _, cp := range c.Ports {
			if cp.ContainerPort == statusPort {
				return &AnnotationError{Errors: []FieldError{{
					Annotation: AnnotationStatusPort, Value: fmt.Sprint(statusPort),
					Allowed: fmt.Sprintf("collides with port %d of container %q; choose another status port", statusPort, c.Name),
				}}}
			}
		}
	}
	return nil
}
