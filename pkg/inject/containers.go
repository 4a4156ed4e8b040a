package inject

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/remora-mesh/remora/pkg/config"
)

type proxyBuild struct {
	ns            string
	wl            Workload
	mode          string
	statusPort    int32
	native        bool
	hold          bool
	appContainers []string
	image         string
}

func ptr[T any](v T) *T { return &v }

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func resourceEnv(name, res string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
		Resource: res, Divisor: resource.MustParse("1"),
	}}}
}

// podPortsJSON is ISTIO_META_POD_PORTS, in the layout Istio's agent parses.
func podPortsJSON(pod *corev1.Pod) string {
	var b strings.Builder
	b.WriteString("[\n")
	first := true
	for _, c := range pod.Spec.Containers {
		if c.Name == ProxyContainerName {
			continue
		}
		for _, p := range c.Ports {
			if first {
				b.WriteString("    ")
				first = false
			} else {
				b.WriteString("\n    ,")
			}
			b.WriteString(mustJSON(p))
		}
	}
	if !first {
		b.WriteString("\n")
	}
	b.WriteString("]")
	return b.String()
}

// proxyConfigEnv is PROXY_CONFIG: the proxy config fields set by the user
// (mesh defaultConfig and the pod's proxy.istio.io/config), as JSON.
func proxyConfigEnv(pc config.ProxyConfig) string {
	return mustJSON(pc) + "\n"
}

func buildProxy(req Request, p *parsed, pc, userPC config.ProxyConfig, b proxyBuild) (*corev1.Container, error) {
	s := &req.Config.Settings
	pod := req.Pod

	logLevel := s.LogLevel
	if p.logLevel != "" {
		logLevel = p.logLevel
	}
	componentLevel := s.ComponentLogLevel
	if p.componentLogLevel != "" {
		componentLevel = p.componentLogLevel
	}
	agentLevel := s.AgentLogLevel
	if p.agentLogLevel != "" {
		agentLevel = p.agentLogLevel
	}
	args := []string{
		"proxy", "sidecar",
		"--domain", "$(POD_NAMESPACE).svc." + s.ClusterDomain,
		"--proxyLogLevel=" + logLevel,
		"--proxyComponentLogLevel=" + componentLevel,
		"--log_output_level=" + agentLevel,
	}
	if s.LogAsJSON {
		args = append(args, "--log_as_json")
	}
	if pc.Concurrency != nil && *pc.Concurrency > 0 {
		args = append(args, "--concurrency", strconv.Itoa(int(*pc.Concurrency)))
	}

	caAddr := s.CAAddress
	if caAddr == "" {
		// istiod of this revision, as Istio's template computes it.
		istiod := "istiod"
		if rev := req.Config.Revision(); rev != config.DefaultRevision {
			istiod += "-" + rev
		}
		caAddr = istiod + "." + s.IstioNamespace + ".svc:15012"
	}
	meshID := s.MeshID
	trustDomain := req.Config.Mesh.TrustDomain
	if trustDomain == "" {
		trustDomain = "cluster.local"
	}
	if meshID == "" {
		meshID = trustDomain
	}
	env := []corev1.EnvVar{
		{Name: "PILOT_CERT_PROVIDER", Value: s.PilotCertProvider},
		{Name: "CA_ADDR", Value: caAddr},
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("INSTANCE_IP", "status.podIP"),
		fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
		fieldEnv("HOST_IP", "status.hostIP"),
		resourceEnv("ISTIO_CPU_LIMIT", "limits.cpu"),
		{Name: "PROXY_CONFIG", Value: proxyConfigEnv(userPC)},
		{Name: "ISTIO_META_POD_PORTS", Value: podPortsJSON(pod)},
		{Name: "ISTIO_META_APP_CONTAINERS", Value: strings.Join(b.appContainers, ",")},
		resourceEnv("GOMEMLIMIT", "limits.memory"),
		{Name: "ISTIO_META_CLUSTER_ID", Value: s.ClusterID},
		fieldEnv("ISTIO_META_NODE_NAME", "spec.nodeName"),
		{Name: "ISTIO_META_INTERCEPTION_MODE", Value: b.mode},
		{Name: "ISTIO_META_WORKLOAD_NAME", Value: b.wl.Name},
		{Name: "ISTIO_META_OWNER", Value: ownerURI(b.wl, b.ns)},
		{Name: "ISTIO_META_MESH_ID", Value: meshID},
		{Name: "TRUST_DOMAIN", Value: trustDomain},
	}
	if itp := req.Config.Mesh.InboundTrafficPolicy; itp != nil && itp.Mode == "LOCALHOST" {
		// The agent then sends rewritten probes to localhost, where the
		// app listens under this policy; Istio puts it first.
		env = append([]corev1.EnvVar{{Name: "REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION", Value: "true"}}, env...)
	}
	if s.Network != "" {
		env = append(env, corev1.EnvVar{Name: "ISTIO_META_NETWORK", Value: s.Network})
	}
	if p.bootstrapOverride != "" {
		env = append(env, corev1.EnvVar{Name: "ISTIO_BOOTSTRAP_OVERRIDE", Value: "/etc/istio/custom-bootstrap/custom_bootstrap.json"})
	}
	for _, k := range sortedKeys(pc.ProxyMetadata) {
		env = append(env, corev1.EnvVar{Name: k, Value: pc.ProxyMetadata[k]})
	}

	readiness := &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/healthz/ready", Port: intstr.FromInt32(EnvoyReadinessPort),
		}},
		InitialDelaySeconds: s.ReadinessInitialDelay,
		PeriodSeconds:       s.ReadinessPeriod,
		TimeoutSeconds:      3,
		FailureThreshold:    s.ReadinessFailureThreshold,
	}
	if p.readinessDelay != nil {
		readiness.InitialDelaySeconds = *p.readinessDelay
	}
	if p.readinessPeriod != nil {
		readiness.PeriodSeconds = *p.readinessPeriod
	}
	if p.readinessFails != nil {
		readiness.FailureThreshold = *p.readinessFails
	}

	c := &corev1.Container{
		Name:            ProxyContainerName,
		Image:           b.image,
		ImagePullPolicy: s.ImagePullPolicy,
		Args:            args,
		Env:             env,
		Ports: []corev1.ContainerPort{{
			Name: "http-envoy-prom", ContainerPort: EnvoyPrometheusPort, Protocol: corev1.ProtocolTCP,
		}},
		ReadinessProbe: readiness,
		Resources:      proxyResources(s, p),
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr(s.Privileged),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			Privileged:               ptr(s.Privileged),
			ReadOnlyRootFilesystem:   ptr(true),
			RunAsGroup:               ptr(s.ProxyGID),
			RunAsNonRoot:             ptr(true),
			RunAsUser:                ptr(s.ProxyUID),
		},
		VolumeMounts: proxyMounts(p),
	}
	if b.mode == "TPROXY" {
		c.SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		c.SecurityContext.RunAsUser = ptr(int64(0))
		c.SecurityContext.RunAsNonRoot = ptr(false)
	}
	if b.statusPort == 0 {
		// Without the agent's status server Istio sets no proxy probes.
		c.ReadinessProbe = nil
	}
	if s.StartupProbeEnabled && b.statusPort != 0 {
		c.StartupProbe = &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz/ready", Port: intstr.FromInt32(EnvoyReadinessPort),
			}},
			PeriodSeconds:    1,
			TimeoutSeconds:   3,
			FailureThreshold: s.StartupFailureThreshold,
		}
	}
	if b.native {
		c.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
	}
	switch {
	case s.ProxyLifecycle != nil:
		c.Lifecycle = s.ProxyLifecycle.DeepCopy()
	case b.native:
		c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
			Command: []string{"pilot-agent", "request", fmt.Sprintf("--debug-port=%d", b.statusPort), "POST", "drain"},
		}}}
	case b.hold:
		c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
			Command: []string{"pilot-agent", "wait"},
		}}}
	}
	return c, nil
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

func proxyMounts(p *parsed) []corev1.VolumeMount {
	m := []corev1.VolumeMount{
		{Name: "workload-socket", MountPath: "/var/run/secrets/workload-spiffe-uds"},
		{Name: "credential-socket", MountPath: "/var/run/secrets/credential-uds"},
		{Name: "workload-certs", MountPath: "/var/run/secrets/workload-spiffe-credentials"},
		{Name: "istiod-ca-cert", MountPath: "/var/run/secrets/istio"},
		{Name: "istio-ca-crl", MountPath: "/var/run/secrets/istio/crl"},
		{Name: "istio-data", MountPath: "/var/lib/istio/data"},
		{Name: "istio-envoy", MountPath: "/etc/istio/proxy"},
		{Name: "istio-token", MountPath: "/var/run/secrets/tokens"},
		{Name: "istio-podinfo", MountPath: "/etc/istio/pod"},
	}
	if p.bootstrapOverride != "" {
		m = append(m, corev1.VolumeMount{Name: "custom-bootstrap-volume", MountPath: "/etc/istio/custom-bootstrap"})
	}
	m = append(m, p.userMounts...)
	return m
}

func buildVolumes(p *parsed) []corev1.Volume {
	empty := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	v := []corev1.Volume{
		{Name: "workload-socket", VolumeSource: empty},
		{Name: "credential-socket", VolumeSource: empty},
		{Name: "workload-certs", VolumeSource: empty},
		{Name: "istio-envoy", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
		{Name: "istio-data", VolumeSource: empty},
		{Name: "istio-podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{
				{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
				{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
			},
		}}},
		{Name: "istio-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: "istio-ca", ExpirationSeconds: ptr(int64(43200)), Path: "istio-token",
			}}},
		}}},
		{Name: "istiod-ca-cert", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "istio-ca-root-cert"},
		}}},
		{Name: "istio-ca-crl", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "istio-ca-crl"}, Optional: ptr(true),
		}}},
	}
	if p.bootstrapOverride != "" {
		v = append(v, corev1.Volume{Name: "custom-bootstrap-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: p.bootstrapOverride},
		}}})
	}
	v = append(v, p.userVolumes...)
	return v
}

// pick returns the annotation's value when set, else the value's.
func pick(ann *string, value string) string {
	if ann != nil {
		return *ann
	}
	return value
}

// buildInit returns the istio-init container (or istio-validation when the
// Istio CNI plugin programs the rules), or nil for interception mode NONE.
func buildInit(s *config.Settings, p *parsed, pc config.ProxyConfig, mode string, statusPort int32) *corev1.Container {
	if mode == "NONE" && !s.CNIEnabled {
		return nil
	}
	excludeIn := []string{strconv.Itoa(EnvoyPrometheusPort), strconv.Itoa(EnvoyReadinessPort)}
	if e := pick(p.excludeInPorts, s.ExcludeInboundPorts); e != "" {
		excludeIn = append(excludeIn, e)
	}
	if statusPort != 0 {
		excludeIn = append(excludeIn, strconv.Itoa(int(statusPort)))
	}
	args := []string{
		"istio-iptables",
		"-p", "15001",
		"-z", "15006",
		"-u", strconv.FormatInt(s.ProxyUID, 10),
		"-m", mode,
		"-i", pick(p.includeCIDRs, s.IncludeIPRanges),
		"-x", pick(p.excludeCIDRs, s.ExcludeIPRanges),
		"-b", pick(p.includeInPorts, s.IncludeInboundPorts),
		"-d", strings.Join(excludeIn, ","),
	}
	if v := pick(p.includeOutPorts, s.IncludeOutboundPorts); v != "" {
		args = append(args, "-q", v)
	}
	if v := pick(p.excludeOutPorts, s.ExcludeOutboundPorts); v != "" {
		args = append(args, "-o", v)
	}
	if v := pick(p.excludeInterfaces, s.ExcludeInterfaces); v != "" {
		args = append(args, "-c", v)
	}
	if p.rerouteInterfaces != nil && *p.rerouteInterfaces != "" {
		args = append(args, "-k", *p.rerouteInterfaces)
	}
	agentLevel := s.AgentLogLevel
	if p.agentLogLevel != "" {
		agentLevel = p.agentLogLevel
	}
	args = append(args, "--log_output_level="+agentLevel)
	resources := proxyResources(s, p)
	if len(s.InitResources.Requests) > 0 || len(s.InitResources.Limits) > 0 {
		resources = *s.InitResources.DeepCopy()
	}
	var env []corev1.EnvVar
	for _, k := range sortedKeys(pc.ProxyMetadata) {
		env = append(env, corev1.EnvVar{Name: k, Value: pc.ProxyMetadata[k]})
	}
	c := &corev1.Container{
		Name:            InitContainerName,
		Image:           s.ProxyInitImage,
		ImagePullPolicy: s.ImagePullPolicy,
		Args:            args,
		Env:             env,
		Resources:       resources,
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			Privileged:             ptr(false),
			ReadOnlyRootFilesystem: ptr(false),
			RunAsGroup:             ptr(int64(0)),
			RunAsNonRoot:           ptr(false),
			RunAsUser:              ptr(int64(0)),
		},
	}
	if s.CNIEnabled {
		c.Name = ValidationContainerName
		c.Args = append(c.Args, "--run-validation", "--skip-rule-apply")
		c.SecurityContext.Capabilities.Add = nil
		c.SecurityContext.ReadOnlyRootFilesystem = ptr(true)
		c.SecurityContext.RunAsGroup = ptr(s.ProxyGID)
		c.SecurityContext.RunAsNonRoot = ptr(true)
		c.SecurityContext.RunAsUser = ptr(s.ProxyUID)
	}
	return c
}
