package inject

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/remora-mesh/remora/pkg/config"
)

// WorkloadMeta names the workload that owns a pod (a Deployment for a pod
// of a ReplicaSet, for example); Istio's templates call it DeploymentMeta.
type WorkloadMeta struct {
	Name      string
	Namespace string
}

// TemplateData is what a template sees. The field names follow Istio's
// template data (Spec, ObjectMeta, DeploymentMeta, Values, ProxyConfig,
// MeshConfig, Revision, NativeSidecar, ProxyImage, ProxyUID, ProxyGID), so
// templates written for Istio render here; Remora's own templates use the
// computed fields (Proxy, Init, ...), which the engine has validated.
type TemplateData struct {
	TypeMeta       metav1.TypeMeta
	DeploymentMeta WorkloadMeta
	ObjectMeta     metav1.ObjectMeta
	Spec           corev1.PodSpec
	ProxyConfig    config.ProxyConfig
	MeshConfig     config.MeshConfig
	Values         map[string]any
	Revision       string
	NativeSidecar  bool
	ProxyImage     string
	ProxyUID       int64
	ProxyGID       int64

	// Proxy is the computed istio-proxy container.
	Proxy *corev1.Container
	// Init is the computed traffic-capture init container; nil when the
	// pod needs none (interception mode NONE).
	Init *corev1.Container
	// Volumes are the volumes the proxy mounts.
	Volumes []corev1.Volume
	// ImagePullSecrets from values.
	ImagePullSecrets []corev1.LocalObjectReference
	// Labels and Annotations to add to the pod.
	Labels      map[string]string
	Annotations map[string]string
}
