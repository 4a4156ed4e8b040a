package inject

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/templates"
)

// Names of what the default template injects.
const (
	ProxyContainerName      = "istio-proxy"
	InitContainerName       = "istio-init"
	ValidationContainerName = "istio-validation"
	// EnvoyReadinessPort is where Envoy reports readiness (/healthz/ready).
	EnvoyReadinessPort = 15021
	// EnvoyPrometheusPort is Envoy's own metrics port.
	EnvoyPrometheusPort = 15090
)

// Request is the input of Inject.
type Request struct {
	// Pod is the pod (or a workload's pod template as a pod). Inject does
	// not modify it.
	Pod *corev1.Pod
	// Namespace is the pod's namespace; pods created by controllers arrive
	// without one, so the webhook passes the request's namespace.
	Namespace string
	// NamespaceLabels are the namespace's labels. Nil means offline
	// injection (the CLI): the namespace's selection is not checked.
	NamespaceLabels map[string]string
	// OwnNamespace is the injector's own namespace, never injected.
	OwnNamespace string
	// Config is the loaded configuration. Whether the proxy is a native
	// sidecar is part of it (Settings.NativeSidecars, resolved by the API
	// server's version at load); the pod's annotation wins.
	Config *config.Config
	// Workload names the pod's owning workload; when empty it is derived
	// from the pod's owner references and generateName.
	Workload Workload
	// AlwaysRender renders even the unchanged built-in template through
	// text/template and the strategic merge instead of placing its fragment
	// directly. The result is the same (a test proves it); it is slower.
	AlwaysRender bool
}

// Inject decides whether the pod is to be injected and, if so, returns the
// injected copy. An *AnnotationError is returned when an annotation is
// invalid; nothing is injected then.
func Inject(req Request) (Result, error) {
	pod := req.Pod
	if pod == nil {
		return Result{}, fmt.Errorf("no pod")
	}
	if req.Config == nil {
		return Result{}, fmt.Errorf("no configuration")
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	if reason, msg, skip := policy(req, ns); skip {
		return Result{Pod: pod, Reason: reason, Message: msg}, nil
	}
	p, err := parseAnnotations(pod.Annotations, req.Config)
	if err != nil {
		return Result{Pod: pod, Reason: ReasonInvalidAnnotations, Message: err.Error()}, err
	}
	out, err := build(req, ns, p)
	if err != nil {
		return Result{Pod: pod, Reason: ReasonInvalidAnnotations, Message: err.Error()}, err
	}
	return Result{Pod: out, Injected: true, Reason: ReasonInjected, Message: "injected " + ProxyContainerName}, nil
}

// build computes the injected pod.
func build(req Request, ns string, p *parsed) (*corev1.Pod, error) {
	cfg := req.Config
	s := &cfg.Settings
	orig := req.Pod

	proxyCfg := cfg.Mesh.DefaultConfig
	userProxyCfg := cfg.UserProxyConfig
	if p.proxyConfig != nil {
		var err error
		if proxyCfg, err = config.MergeProxyConfig(proxyCfg, *p.proxyConfig); err != nil {
			return nil, err
		}
		if userProxyCfg, err = config.MergeProxyConfig(userProxyCfg, *p.proxyConfig); err != nil {
			return nil, err
		}
	}

	native := s.NativeSidecars
	if p.nativeSidecar != nil {
		native = *p.nativeSidecar
	}

	mode := "REDIRECT"
	if proxyCfg.InterceptionMode != "" {
		mode = proxyCfg.InterceptionMode
	}
	if p.interceptionMode != "" {
		mode = p.interceptionMode
	}

	statusPort := s.StatusPort
	if p.statusPort != nil {
		statusPort = *p.statusPort
	}
	if err := checkPortCollisions(orig, statusPort); err != nil {
		return nil, err
	}

	hold := s.HoldApplication
	if proxyCfg.HoldApplicationUntilProxyStarts != nil {
		hold = *proxyCfg.HoldApplicationUntilProxyStarts
	}

	wl := req.Workload
	if wl.Name == "" {
		wl = deriveWorkload(orig)
	}
	if ns == "" {
		ns = "default"
	}

	appContainers := make([]string, 0, len(orig.Spec.Containers))
	for _, c := range orig.Spec.Containers {
		if c.Name != ProxyContainerName {
			appContainers = append(appContainers, c.Name)
		}
	}

	rewrite := s.RewriteAppProbes
	if p.rewriteProbes != nil {
		rewrite = *p.rewriteProbes
	}
	if statusPort == 0 {
		rewrite = false
	}

	data := &TemplateData{
		TypeMeta:       metav1.TypeMeta{APIVersion: wl.APIVersion, Kind: wl.Kind},
		DeploymentMeta: WorkloadMeta{Name: wl.Name, Namespace: ns},
		ObjectMeta:     orig.ObjectMeta,
		Spec:           orig.Spec,
		ProxyConfig:    proxyCfg,
		MeshConfig:     cfg.Mesh,
		Values:         cfg.Values,
		Revision:       cfg.Revision(),
		NativeSidecar:  native,
		ProxyImage:     s.ProxyImage,
		ProxyUID:       s.ProxyUID,
		ProxyGID:       s.ProxyGID,
	}
	if p.proxyImage != "" {
		data.ProxyImage = p.proxyImage
	}

	proxy, err := buildProxy(req, p, proxyCfg, userProxyCfg, proxyBuild{
		ns: ns, wl: wl, mode: mode, statusPort: statusPort, native: native,
		hold: hold, appContainers: appContainers, image: data.ProxyImage,
	})
	if err != nil {
		return nil, err
	}
	data.Proxy = proxy
	// A user's own istio-proxy container may run the proxy as another
	// user; the capture rules must then exempt that UID.
	initSettings := *s
	for _, c := range orig.Spec.Containers {
		if c.Name == ProxyContainerName && c.SecurityContext != nil {
			if c.SecurityContext.RunAsUser != nil {
				initSettings.ProxyUID = *c.SecurityContext.RunAsUser
			}
			if c.SecurityContext.RunAsGroup != nil {
				initSettings.ProxyGID = *c.SecurityContext.RunAsGroup
			}
		}
	}
	data.Init = buildInit(&initSettings, p, proxyCfg, mode, statusPort)
	data.Volumes = buildVolumes(p)
	for _, name := range s.ImagePullSecrets {
		data.ImagePullSecrets = append(data.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
	data.Labels, data.Annotations = podMetadata(orig, cfg, wl, mode, p)
	if s.CNIEnabled && data.Init != nil {
		cniAnnotations(data.Annotations, orig, s, p, statusPort, data.Init.Args)
	}
	if s.MountMTLSCerts {
		data.Volumes = append(data.Volumes, corev1.Volume{Name: "istio-certs", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: "istio." + serviceAccountName(orig), Optional: ptr(true),
		}}})
		proxy.VolumeMounts = insertMountBefore(proxy.VolumeMounts, "istio-podinfo",
			corev1.VolumeMount{Name: "istio-certs", MountPath: "/etc/certs/", ReadOnly: true})
	}

	// Render the templates and merge each into the pod.
	names := p.templates
	if len(names) == 0 {
		names = cfg.DefaultTemplates
	}
	// The pod's own volumes must not take the names of the injected ones:
	// a merge would give one volume two sources.
	for _, v := range orig.Spec.Volumes {
		for _, iv := range data.Volumes {
			if v.Name == iv.Name {
				return nil, podErrorf("the pod's volume %q has the name of a volume the sidecar needs; rename it", v.Name)
			}
		}
	}
	var out *corev1.Pod
	// touched names the containers the templates wrote, for the status
	// annotation: those are what injection owns.
	var touched templateContainers
	if len(names) == 1 && cfg.IsBuiltin(names[0]) && names[0] == "sidecar" && !req.AlwaysRender {
		out = placeBuiltin(orig, data)
		touched.init = make([]string, 0, 2)
		if data.Init != nil {
			touched.add(true, data.Init.Name)
		}
		touched.add(native, data.Proxy.Name)
	} else {
		var err error
		if out, err = renderAndMerge(cfg, orig, data, names, &touched); err != nil {
			return nil, err
		}
	}

	reorder(out, orig, native, hold)
	reapplyOverrides(out, orig, native, data.Proxy.VolumeMounts)
	if mode == "TPROXY" {
		// TPROXY needs the proxy to run as root, whatever user the
		// pod's own istio-proxy names (istio-init exempts that UID).
		if proxy := findProxy(out); proxy != nil && proxy.SecurityContext != nil {
			proxy.SecurityContext.RunAsUser = ptr(int64(0))
		}
	}
	if err := recordOverrides(out, orig, touched); err != nil {
		return nil, err
	}
	// A template may set the probe-rewriting annotation (Istio's custom
	// templates do, to turn it off).
	if v, ok := out.Annotations[AnnotationRewriteProbes]; ok && p.rewriteProbes == nil {
		if b, err := parseBool(v); err == nil {
			rewrite = b && statusPort != 0
		}
	}
	if rewrite {
		rewriteProbes(out, statusPort)
	}
	// Prometheus scrapes the agent on the mesh's status port (Istio reads
	// it from the proxy config, not from the injector values).
	promPort := int32(15020)
	if proxyCfg.StatusPort != nil && *proxyCfg.StatusPort != 0 {
		promPort = *proxyCfg.StatusPort
	}
	if err := finish(out, orig, cfg, touched, promPort, p.scrapeTargets); err != nil {
		return nil, err
	}
	return out, nil
}

// renderAndMerge renders each template and merges its Pod fragment into the
// pod with Kubernetes' strategic merge rules, as Istio does.
// templateContainers are the names of the init containers and containers
// the templates wrote, in the templates' order.
type templateContainers struct {
	init, containers []string
}

// add records a container name, in the init containers when init.
func (t *templateContainers) add(init bool, name string) {
	l := &t.containers
	if init {
		l = &t.init
	}
	if !slices.Contains(*l, name) {
		*l = append(*l, name)
	}
}

// record adds the container names of a rendered Pod fragment.
func (t *templateContainers) record(fragment []byte) {
	var f struct {
		Spec struct {
			InitContainers []struct{ Name string } `json:"initContainers"`
			Containers     []struct{ Name string } `json:"containers"`
		} `json:"spec"`
	}
	if json.Unmarshal(fragment, &f) != nil {
		return
	}
	for _, c := range f.Spec.InitContainers {
		t.add(true, c.Name)
	}
	for _, c := range f.Spec.Containers {
		t.add(false, c.Name)
	}
}

func renderAndMerge(cfg *config.Config, orig *corev1.Pod, data *TemplateData, names []string, touched *templateContainers) (*corev1.Pod, error) {
	current, err := json.Marshal(orig)
	if err != nil {
		return nil, fmt.Errorf("encoding pod: %w", err)
	}
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		t, ok := cfg.Templates[name]
		if !ok {
			return nil, fmt.Errorf("no template named %q", name)
		}
		rendered, err := templates.Execute(t, data)
		if err != nil {
			return nil, err
		}
		patch, err := yaml.YAMLToJSON(rendered)
		if err != nil {
			return nil, fmt.Errorf("template %q produced invalid YAML: %w", name, err)
		}
		touched.record(patch)
		if current, err = strategicpatch.StrategicMergePatch(current, patch, corev1.Pod{}); err != nil {
			return nil, fmt.Errorf("merging template %q into the pod: %w", name, err)
		}
	}
	out := &corev1.Pod{}
	if err := json.Unmarshal(current, out); err != nil {
		return nil, fmt.Errorf("decoding injected pod: %w", err)
	}
	return out, nil
}

// placeBuiltin does what rendering and merging the built-in sidecar
// template does, without the text round trip: it adds the template's labels,
// annotations, containers, volumes and pull secrets to a copy of the pod,
// merging same-named items with the strategic merge rules.
func placeBuiltin(orig *corev1.Pod, data *TemplateData) *corev1.Pod {
	out := copyForInjection(orig)
	for k, v := range data.Labels {
		out.Labels[k] = v
	}
	for k, v := range data.Annotations {
		out.Annotations[k] = v
	}
	if data.Init != nil {
		out.Spec.InitContainers = mergeContainer(out.Spec.InitContainers, *data.Init)
	}
	if data.NativeSidecar {
		out.Spec.InitContainers = mergeContainer(out.Spec.InitContainers, *data.Proxy)
	} else {
		out.Spec.Containers = mergeContainer(out.Spec.Containers, *data.Proxy)
	}
	// As with the strategic merge, the template's new items come before
	// the pod's own.
	var newVols []corev1.Volume
	for _, v := range data.Volumes {
		if i := slices.IndexFunc(out.Spec.Volumes, func(o corev1.Volume) bool { return o.Name == v.Name }); i >= 0 {
			out.Spec.Volumes[i] = mergeVolume(out.Spec.Volumes[i], v)
			continue
		}
		newVols = append(newVols, *v.DeepCopy())
	}
	if len(newVols) > 0 {
		out.Spec.Volumes = append(newVols, out.Spec.Volumes...)
	}
	var newSecrets []corev1.LocalObjectReference
	for _, r := range data.ImagePullSecrets {
		if !slices.Contains(out.Spec.ImagePullSecrets, r) {
			newSecrets = append(newSecrets, r)
		}
	}
	if len(newSecrets) > 0 {
		out.Spec.ImagePullSecrets = append(newSecrets, out.Spec.ImagePullSecrets...)
	}
	return out
}

// copyForInjection copies what injection changes (labels, annotations,
// containers, init containers, volumes, pull secrets) and shares
// the rest (managed fields, owner references, tolerations, ...) with orig,
// which is never modified. The result is to be treated as read-only too.
func copyForInjection(orig *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{TypeMeta: orig.TypeMeta, ObjectMeta: orig.ObjectMeta, Spec: orig.Spec, Status: orig.Status}
	out.Labels = make(map[string]string, len(orig.Labels)+4)
	for k, v := range orig.Labels {
		out.Labels[k] = v
	}
	out.Annotations = make(map[string]string, len(orig.Annotations)+10)
	for k, v := range orig.Annotations {
		out.Annotations[k] = v
	}
	out.Spec.Containers = deepCopyContainers(orig.Spec.Containers, 1)
	out.Spec.InitContainers = deepCopyContainers(orig.Spec.InitContainers, 2)
	if orig.Spec.Volumes != nil {
		out.Spec.Volumes = append(make([]corev1.Volume, 0, len(orig.Spec.Volumes)+10), orig.Spec.Volumes...)
	}
	if orig.Spec.ImagePullSecrets != nil {
		out.Spec.ImagePullSecrets = append([]corev1.LocalObjectReference(nil), orig.Spec.ImagePullSecrets...)
	}
	return out
}

func deepCopyContainers(cs []corev1.Container, extra int) []corev1.Container {
	if cs == nil {
		return nil
	}
	out := make([]corev1.Container, len(cs), len(cs)+extra)
	for i := range cs {
		cs[i].DeepCopyInto(&out[i])
	}
	return out
}

// mergeContainer appends c, or strategic-merges it into the same-named one.
func mergeContainer(list []corev1.Container, c corev1.Container) []corev1.Container {
	for i := range list {
		if list[i].Name == c.Name {
			if merged, ok := overlay(list[i], c); ok {
				list[i] = merged
			}
			return list
		}
	}
	return append(list, *c.DeepCopy())
}

// mergeVolume strategic-merges the template's volume into the pod's
// same-named one.
func mergeVolume(existing, v corev1.Volume) corev1.Volume {
	base, err1 := json.Marshal(existing)
	patch, err2 := json.Marshal(v)
	if err1 != nil || err2 != nil {
		return existing
	}
	merged, err := strategicpatch.StrategicMergePatch(base, patch, corev1.Volume{})
	if err != nil {
		return existing
	}
	var nv corev1.Volume
	if json.Unmarshal(merged, &nv) != nil {
		return existing
	}
	return nv
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

// podMetadata returns the labels and annotations to add.
func podMetadata(pod *corev1.Pod, cfg *config.Config, wl Workload, mode string, p *parsed) (map[string]string, map[string]string) {
	s := &cfg.Settings
	lbl := map[string]string{
		LabelTLSMode:           "istio",
		LabelCanonicalName:     canonicalName(pod, wl),
		LabelCanonicalRevision: canonicalRevision(pod),
	}
	if v, ok := pod.Labels[LabelTLSMode]; ok {
		lbl[LabelTLSMode] = v
	}
	if s.Network != "" {
		lbl["topology.istio.io/network"] = s.Network
	}
	ann := map[string]string{
		LabelRevision: cfg.Revision(),
	}
	for k, v := range s.InjectedAnnotations {
		ann[k] = v
	}
	if s.CNIEnabled {
		ann[AnnotationInterceptionMode] = mode
	}
	return lbl, ann
}

func insertMountBefore(mounts []corev1.VolumeMount, before string, m corev1.VolumeMount) []corev1.VolumeMount {
	for i := range mounts {
		if mounts[i].Name == before {
			return append(mounts[:i], append([]corev1.VolumeMount{m}, mounts[i:]...)...)
		}
	}
	return append(mounts, m)
}

// cniAnnotations tells the Istio CNI plugin, which programs the rules in
// place of the init container, what to capture.
func cniAnnotations(ann map[string]string, pod *corev1.Pod, s *config.Settings, p *parsed, statusPort int32, initArgs []string) {
	flag := func(name string) string {
		for i := 0; i+1 < len(initArgs); i++ {
			if initArgs[i] == name {
				return initArgs[i+1]
			}
		}
		return ""
	}
	ann[AnnotationIncludeInboundPorts] = flag("-b")
	excl := pick(p.excludeInPorts, s.ExcludeInboundPorts)
	if statusPort != 0 {
		if excl != "" {
			excl += ","
		}
		excl += fmt.Sprint(statusPort)
	}
	ann[AnnotationExcludeInboundPorts] = excl
	ann[AnnotationIncludeOutboundCIDRs] = flag("-i")
	for name, f := range map[string]string{
		AnnotationExcludeOutboundCIDRs: "-x", AnnotationIncludeOutboundPorts: "-q",
		AnnotationExcludeOutboundPorts: "-o", AnnotationExcludeInterfaces: "-c", AnnotationKubevirtInterfaces: "-k",
	} {
		if v := flag(f); v != "" {
			ann[name] = v
		}
	}
	if s.CNIProvider == "multus" {
		const key = "k8s.v1.cni.cncf.io/networks"
		cur := strings.TrimSpace(pod.Annotations[key])
		switch {
		case cur == "":
			ann[key] = "default/istio-cni"
		case strings.HasPrefix(cur, "[") && strings.HasSuffix(cur, "]"):
			ann[key] = strings.TrimSuffix(cur, "]") + `, {"name": "istio-cni", "namespace": "default"}]`
		default:
			ann[key] = cur + ", default/istio-cni"
		}
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
