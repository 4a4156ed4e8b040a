package templates

import (
	"bytes"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WorkloadMeta names the workload that owns a pod (a Deployment for a pod
// of a ReplicaSet, for example); Istio's templates call it DeploymentMeta.
type WorkloadMeta struct {
	Name      string
	Namespace string
}

// Data is what a template sees. The field names follow Istio's template data
// (Spec, ObjectMeta, DeploymentMeta, Values, ProxyConfig, MeshConfig,
// Revision, NativeSidecar, ProxyImage, ProxyUID, ProxyGID), so templates
// written for Istio render here; Remora's own templates use the computed
// fields (Proxy, Init, ...), which the engine has validated.
type Data struct {
	TypeMeta       metav1.TypeMeta
	DeploymentMeta WorkloadMeta
	ObjectMeta     metav1.ObjectMeta
	Spec           corev1.PodSpec
	ProxyConfig    ProxyConfig
	MeshConfig     MeshConfig
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

// Render executes the named template with data and returns its output.
func (c *Config) Render(name string, data *Data) ([]byte, error) {
	t, ok := c.Templates[name]
	if !ok {
		return nil, fmt.Errorf("no template named %q", name)
	}
	var buf bytes.Buffer
	buf.Grow(8 << 10)
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("rendering template %q: %w", name, err)
	}
	return buf.Bytes(), nil
}
