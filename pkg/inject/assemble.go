package inject

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/remora-mesh/remora/pkg/config"
)

// assemble is the pipeline's third step: it computes what a template sees
// (TemplateData): the pod as it is, the configuration, and what the
// built-in template injects: the proxy and traffic-capture containers, their
// volumes and pull secrets, and the labels and annotations to add.
func assemble(req Request, r *resolved) *TemplateData {
	cfg, orig := req.Config, req.Pod
	s := &cfg.Settings
	data := &TemplateData{
		TypeMeta:       metav1.TypeMeta{APIVersion: r.workload.APIVersion, Kind: r.workload.Kind},
		DeploymentMeta: WorkloadMeta{Name: r.workload.Name, Namespace: r.ns},
		ObjectMeta:     orig.ObjectMeta,
		Spec:           orig.Spec,
		ProxyConfig:    r.proxyConfig,
		MeshConfig:     cfg.Mesh,
		Values:         cfg.Values,
		Revision:       cfg.Revision(),
		NativeSidecar:  r.native,
		ProxyImage:     r.image,
		ProxyUID:       s.ProxyUID,
		ProxyGID:       s.ProxyGID,
		Proxy:          buildProxy(req, r),
		Init:           buildInit(s, r),
		Volumes:        buildVolumes(r.ann),
	}
	for _, name := range s.ImagePullSecrets {
		data.ImagePullSecrets = append(data.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
	data.Labels, data.Annotations = podMetadata(orig, cfg, r)
	if s.CNIEnabled && data.Init != nil {
		cniAnnotations(data.Annotations, orig, s, r, data.Init.Args)
	}
	if s.MountMTLSCerts {
		data.Volumes = append(data.Volumes, corev1.Volume{Name: "istio-certs", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: "istio." + serviceAccountName(orig), Optional: ptr(true),
		}}})
		data.Proxy.VolumeMounts = insertMountBefore(data.Proxy.VolumeMounts, "istio-podinfo",
			corev1.VolumeMount{Name: "istio-certs", MountPath: "/etc/certs/", ReadOnly: true})
	}
	return data
}

// podMetadata returns the labels and annotations to add.
func podMetadata(pod *corev1.Pod, cfg *config.Config, r *resolved) (map[string]string, map[string]string) {
	s := &cfg.Settings
	lbl := map[string]string{
		LabelTLSMode:           "istio",
		LabelCanonicalName:     canonicalName(pod, r.workload),
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
		ann[AnnotationInterceptionMode] = r.mode
	}
	return lbl, ann
}

// cniAnnotations tells the Istio CNI plugin, which programs the rules in
// place of the init container, what to capture.
func cniAnnotations(ann map[string]string, pod *corev1.Pod, s *config.Settings, r *resolved, initArgs []string) {
	flag := func(name string) string {
		for i := 0; i+1 < len(initArgs); i++ {
			if initArgs[i] == name {
				return initArgs[i+1]
			}
		}
		return ""
	}
	ann[AnnotationIncludeInboundPorts] = flag("-b")
	excl := r.capture.excludeInPorts
	if r.statusPort != 0 {
		if excl != "" {
			excl += ","
		}
		excl += fmt.Sprint(r.statusPort)
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

// buildVolumes returns the volumes the proxy mounts: Istio's, the bootstrap
// override's and the pod's sidecar.istio.io/userVolume.
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

// insertMountBefore inserts m before the mount named before, or appends it.
func insertMountBefore(mounts []corev1.VolumeMount, before string, m corev1.VolumeMount) []corev1.VolumeMount {
	for i := range mounts {
		if mounts[i].Name == before {
			return append(mounts[:i], append([]corev1.VolumeMount{m}, mounts[i:]...)...)
		}
	}
	return append(mounts, m)
}
