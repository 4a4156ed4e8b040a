package inject

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/remora-mesh/remora/pkg/config"
)

// buildProxy returns the istio-proxy container, from the resolved settings.
func buildProxy(req Request, r *resolved) *corev1.Container {
	s := &req.Config.Settings
	c := &corev1.Container{
		Name:            ProxyContainerName,
		Image:           r.image,
		ImagePullPolicy: s.ImagePullPolicy,
		Args:            proxyArgs(s, r),
		Env:             proxyEnv(req, r),
		Ports: []corev1.ContainerPort{{
			Name: "http-envoy-prom", ContainerPort: EnvoyPrometheusPort, Protocol: corev1.ProtocolTCP,
		}},
		ReadinessProbe:  readinessProbe(r),
		StartupProbe:    startupProbe(s, r),
		Lifecycle:       proxyLifecycle(s, r),
		Resources:       r.resources,
		SecurityContext: proxySecurityContext(s, r.mode),
		VolumeMounts:    proxyMounts(r.ann),
	}
	if r.native {
		c.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
	}
	return c
}

// proxyArgs are the arguments of pilot-agent.
func proxyArgs(s *config.Settings, r *resolved) []string {
	args := []string{
		"proxy", "sidecar",
		"--domain", "$(POD_NAMESPACE).svc." + s.ClusterDomain,
		"--proxyLogLevel=" + r.logLevel,
		"--proxyComponentLogLevel=" + r.componentLogLevel,
		"--log_output_level=" + r.agentLogLevel,
	}
	if s.LogAsJSON {
		args = append(args, "--log_as_json")
	}
	if pc := r.proxyConfig; pc.Concurrency != nil && *pc.Concurrency > 0 {
		args = append(args, "--concurrency", strconv.Itoa(int(*pc.Concurrency)))
	}
	return args
}

// proxyEnv is the agent's environment, in Istio's order.
func proxyEnv(req Request, r *resolved) []corev1.EnvVar {
	cfg, pod := req.Config, req.Pod
	s := &cfg.Settings
	meshID, trustDomain := meshIdentity(cfg)
	env := []corev1.EnvVar{
		{Name: "PILOT_CERT_PROVIDER", Value: s.PilotCertProvider},
		{Name: "CA_ADDR", Value: caAddress(cfg)},
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("INSTANCE_IP", "status.podIP"),
		fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
		fieldEnv("HOST_IP", "status.hostIP"),
		resourceEnv("ISTIO_CPU_LIMIT", "limits.cpu"),
		{Name: "PROXY_CONFIG", Value: proxyConfigEnv(r.userProxyConfig)},
		{Name: "ISTIO_META_POD_PORTS", Value: podPortsJSON(pod)},
		{Name: "ISTIO_META_APP_CONTAINERS", Value: appContainers(pod)},
		resourceEnv("GOMEMLIMIT", "limits.memory"),
		{Name: "ISTIO_META_CLUSTER_ID", Value: s.ClusterID},
		fieldEnv("ISTIO_META_NODE_NAME", "spec.nodeName"),
		{Name: "ISTIO_META_INTERCEPTION_MODE", Value: r.mode},
		{Name: "ISTIO_META_WORKLOAD_NAME", Value: r.workload.Name},
		{Name: "ISTIO_META_OWNER", Value: ownerURI(r.workload, r.ns)},
		{Name: "ISTIO_META_MESH_ID", Value: meshID},
		{Name: "TRUST_DOMAIN", Value: trustDomain},
	}
	if itp := cfg.Mesh.InboundTrafficPolicy; itp != nil && itp.Mode == "LOCALHOST" {
		// The agent then sends rewritten probes to localhost, where the
		// app listens under this policy; Istio puts it first.
		env = append([]corev1.EnvVar{{Name: "REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION", Value: "true"}}, env...)
	}
	if s.Network != "" {
		env = append(env, corev1.EnvVar{Name: "ISTIO_META_NETWORK", Value: s.Network})
	}
	if r.ann.bootstrapOverride != "" {
		env = append(env, corev1.EnvVar{Name: "ISTIO_BOOTSTRAP_OVERRIDE", Value: "/etc/istio/custom-bootstrap/custom_bootstrap.json"})
	}
	return metadataEnv(env, r.proxyConfig.ProxyMetadata)
}

// caAddress is where the agent asks for certificates: the configured
// address, else istiod of this revision, as Istio's template computes it.
func caAddress(cfg *config.Config) string {
	if cfg.Settings.CAAddress != "" {
		return cfg.Settings.CAAddress
	}
	istiod := "istiod"
	if rev := cfg.Revision(); rev != config.DefaultRevision {
		istiod += "-" + rev
	}
	return istiod + "." + cfg.Settings.IstioNamespace + ".svc:15012"
}

// meshIdentity returns the mesh ID and the trust domain, each defaulted as
// Istio does (the trust domain to cluster.local, the mesh ID to the trust
// domain).
func meshIdentity(cfg *config.Config) (meshID, trustDomain string) {
	trustDomain = cfg.Mesh.TrustDomain
	if trustDomain == "" {
		trustDomain = "cluster.local"
	}
	meshID = cfg.Settings.MeshID
	if meshID == "" {
		meshID = trustDomain
	}
	return meshID, trustDomain
}

// appContainers is ISTIO_META_APP_CONTAINERS: the pod's containers other
// than its own istio-proxy, comma-separated.
func appContainers(pod *corev1.Pod) string {
	names := make([]string, 0, len(pod.Spec.Containers))
	for _, c := range pod.Spec.Containers {
		if c.Name != ProxyContainerName {
			names = append(names, c.Name)
		}
	}
	return strings.Join(names, ",")
}

// metadataEnv appends the proxy metadata to env, sorted by name.
func metadataEnv(env []corev1.EnvVar, metadata map[string]string) []corev1.EnvVar {
	for _, k := range sortedKeys(metadata) {
		env = append(env, corev1.EnvVar{Name: k, Value: metadata[k]})
	}
	return env
}

// readinessProbe asks Envoy whether it is ready; without the agent's
// status server Istio sets no proxy probes.
func readinessProbe(r *resolved) *corev1.Probe {
	if r.statusPort == 0 {
		return nil
	}
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/healthz/ready", Port: intstr.FromInt32(EnvoyReadinessPort),
		}},
		InitialDelaySeconds: r.readiness.initialDelay,
		PeriodSeconds:       r.readiness.period,
		TimeoutSeconds:      3,
		FailureThreshold:    r.readiness.failureThreshold,
	}
}

// startupProbe is the proxy's startup probe, when the values enable it.
func startupProbe(s *config.Settings, r *resolved) *corev1.Probe {
	if !s.StartupProbeEnabled || r.statusPort == 0 {
		return nil
	}
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/healthz/ready", Port: intstr.FromInt32(EnvoyReadinessPort),
		}},
		PeriodSeconds:    1,
		TimeoutSeconds:   3,
		FailureThreshold: s.StartupFailureThreshold,
	}
}

// proxyLifecycle is the values' lifecycle, else a native proxy's drain
// before it stops, else, when the app waits for the proxy, a wait for it
// to start.
func proxyLifecycle(s *config.Settings, r *resolved) *corev1.Lifecycle {
	switch {
	case s.ProxyLifecycle != nil:
		return s.ProxyLifecycle.DeepCopy()
	case r.native:
		return &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
			Command: []string{"pilot-agent", "request", fmt.Sprintf("--debug-port=%d", r.statusPort), "POST", "drain"},
		}}}
	case r.hold:
		return &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
			Command: []string{"pilot-agent", "wait"},
		}}}
	}
	return nil
}

// proxySecurityContext runs the proxy unprivileged, except that TPROXY
// needs it to run as root with NET_ADMIN.
func proxySecurityContext(s *config.Settings, mode string) *corev1.SecurityContext {
	sc := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr(s.Privileged),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		Privileged:               ptr(s.Privileged),
		ReadOnlyRootFilesystem:   ptr(true),
		RunAsGroup:               ptr(s.ProxyGID),
		RunAsNonRoot:             ptr(true),
		RunAsUser:                ptr(s.ProxyUID),
	}
	if mode == "TPROXY" {
		sc.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		sc.RunAsUser = ptr(int64(0))
		sc.RunAsNonRoot = ptr(false)
	}
	return sc
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

// captures reports whether the pod's traffic is captured: always with the
// Istio CNI plugin (istio-validation checks its rules), else unless the
// interception mode is NONE, which gets no istio-init.
func captures(s *config.Settings, mode string) bool {
	return mode != "NONE" || s.CNIEnabled
}

// buildInit returns the istio-init container (or istio-validation when the
// Istio CNI plugin programs the rules), or nil for interception mode NONE.
func buildInit(s *config.Settings, r *resolved) *corev1.Container {
	if !captures(s, r.mode) {
		return nil
	}
	c := &corev1.Container{
		Name:            InitContainerName,
		Image:           s.ProxyInitImage,
		ImagePullPolicy: s.ImagePullPolicy,
		Args:            captureArgs(r),
		Env:             metadataEnv(nil, r.proxyConfig.ProxyMetadata),
		Resources:       initResources(s, r),
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
		c.SecurityContext.RunAsGroup = ptr(r.captureGID)
		c.SecurityContext.RunAsNonRoot = ptr(true)
		c.SecurityContext.RunAsUser = ptr(r.captureUID)
	}
	return c
}

// captureArgs are the arguments of istio-iptables.
func captureArgs(r *resolved) []string {
	excludeIn := []string{strconv.Itoa(EnvoyPrometheusPort), strconv.Itoa(EnvoyReadinessPort)}
	if e := r.capture.excludeInPorts; e != "" {
		excludeIn = append(excludeIn, e)
	}
	if r.statusPort != 0 {
		excludeIn = append(excludeIn, strconv.Itoa(int(r.statusPort)))
	}
	args := []string{
		"istio-iptables",
		"-p", "15001",
		"-z", "15006",
		"-u", strconv.FormatInt(r.captureUID, 10),
		"-m", r.mode,
		"-i", r.capture.includeCIDRs,
		"-x", r.capture.excludeCIDRs,
		"-b", r.capture.includeInPorts,
		"-d", strings.Join(excludeIn, ","),
	}
	for _, opt := range []struct{ flag, value string }{
		{"-q", r.capture.includeOutPorts},
		{"-o", r.capture.excludeOutPorts},
		{"-c", r.capture.excludeInterfaces},
		{"-k", r.capture.rerouteInterfaces},
	} {
		if opt.value != "" {
			args = append(args, opt.flag, opt.value)
		}
	}
	return append(args, "--log_output_level="+r.agentLogLevel)
}

// initResources are the values' init container resources when set, else
// the proxy's.
func initResources(s *config.Settings, r *resolved) corev1.ResourceRequirements {
	if len(s.InitResources.Requests) > 0 || len(s.InitResources.Limits) > 0 {
		return *s.InitResources.DeepCopy()
	}
	return *r.resources.DeepCopy()
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

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// mustJSON marshals values that cannot fail to marshal (plain structs).
func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "{}"
	}
	return string(b)
}
