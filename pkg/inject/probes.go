package inject

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// prober is one entry of ISTIO_KUBE_APP_PROBERS: the app's original probe,
// which the agent runs when the kubelet calls the rewritten one.
type prober struct {
	HTTPGet        *corev1.HTTPGetAction   `json:"httpGet,omitempty"`
	TCPSocket      *corev1.TCPSocketAction `json:"tcpSocket,omitempty"`
	GRPC           *corev1.GRPCAction      `json:"grpc,omitempty"`
	TimeoutSeconds int32                   `json:"timeoutSeconds,omitempty"`
}

// AppProbersEnv is the proxy env that carries the app's original probes.
const AppProbersEnv = "ISTIO_KUBE_APP_PROBERS"

// rewriteProbes sends the app containers' HTTP, TCP and gRPC probes (and
// HTTP/TCP lifecycle hooks) through the agent's status port, so they work
// when mutual TLS captures the app's ports.
func rewriteProbes(pod *corev1.Pod, statusPort int32) {
	probers := map[string]prober{}
	var targets []*corev1.Container
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			targets = append(targets, c)
		}
	}
	for i := range pod.Spec.Containers {
		targets = append(targets, &pod.Spec.Containers[i])
	}
	for _, c := range targets {
		if c.Name == ProxyContainerName {
			continue
		}
		for _, pr := range []struct {
			probe **corev1.Probe
			kind  string
		}{{&c.ReadinessProbe, "readyz"}, {&c.LivenessProbe, "livez"}, {&c.StartupProbe, "startupz"}} {
			p := *pr.probe
			if p == nil {
				continue
			}
			path := fmt.Sprintf("/app-health/%s/%s", c.Name, pr.kind)
			orig, ok := captureProbe(c, p.ProbeHandler, p.TimeoutSeconds)
			if !ok {
				continue
			}
			probers[path] = orig
			rewritten := &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(statusPort)}
			if p.HTTPGet != nil && p.HTTPGet.Scheme != "" {
				// The agent serves plain HTTP; it probes the app with the original scheme.
				rewritten.Scheme = corev1.URISchemeHTTP
			}
			p.ProbeHandler = corev1.ProbeHandler{HTTPGet: rewritten}
		}
		if c.Lifecycle != nil {
			for _, h := range []struct {
				handler **corev1.LifecycleHandler
				kind    string
			}{{&c.Lifecycle.PostStart, "poststartz"}, {&c.Lifecycle.PreStop, "prestopz"}} {
				lh := *h.handler
				if lh == nil || (lh.HTTPGet == nil && lh.TCPSocket == nil) {
					continue
				}
				path := fmt.Sprintf("/app-lifecycle/%s/%s", c.Name, h.kind)
				orig, ok := captureProbe(c, corev1.ProbeHandler{HTTPGet: lh.HTTPGet, TCPSocket: lh.TCPSocket}, 0)
				if !ok {
					continue
				}
				probers[path] = orig
				*h.handler = &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: path, Port: intstr.FromInt32(statusPort),
				}}
			}
		}
	}
	if len(probers) == 0 {
		return
	}
	b, err := json.Marshal(probers)
	if err != nil {
		return
	}
	if proxy := findProxy(pod); proxy != nil {
		proxy.Env = append(proxy.Env, corev1.EnvVar{Name: AppProbersEnv, Value: string(b)})
	}
}

// captureProbe copies a probe handler with named ports resolved to numbers.
func captureProbe(c *corev1.Container, h corev1.ProbeHandler, timeout int32) (prober, bool) {
	switch {
	case h.HTTPGet != nil:
		g := h.HTTPGet.DeepCopy()
		port, ok := resolvePort(c, g.Port)
		if !ok {
			return prober{}, false
		}
		g.Port = port
		return prober{HTTPGet: g, TimeoutSeconds: timeout}, true
	case h.TCPSocket != nil:
		t := h.TCPSocket.DeepCopy()
		port, ok := resolvePort(c, t.Port)
		if !ok {
			return prober{}, false
		}
		t.Port = port
		return prober{TCPSocket: t, TimeoutSeconds: timeout}, true
	case h.GRPC != nil:
		return prober{GRPC: h.GRPC.DeepCopy(), TimeoutSeconds: timeout}, true
	}
	return prober{}, false
}

func resolvePort(c *corev1.Container, p intstr.IntOrString) (intstr.IntOrString, bool) {
	if p.Type == intstr.Int {
		return p, true
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return intstr.FromInt32(cp.ContainerPort), true
		}
	}
	return p, false
}
