package inject

import (
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/pkg/config"
)

// Status is the sidecar.istio.io/status annotation: what was injected, so
// that it can be recognised and removed again.
type Status struct {
	InitContainers   []string `json:"initContainers"`
	Containers       []string `json:"containers"`
	Volumes          []string `json:"volumes"`
	ImagePullSecrets []string `json:"imagePullSecrets"`
	Revision         string   `json:"revision"`
}

// recordStatus adds the status and bookkeeping annotations: what was
// injected (sidecar.istio.io/status), the configuration's hash, the proxy
// image and the default container; and it points Prometheus at the agent.
func recordStatus(out, orig *corev1.Pod, cfg *config.Config, touched templateContainers, statusPort int32, targets []scrapeTarget) error {
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	b, err := json.Marshal(injectedStatus(out, orig, cfg, touched))
	if err != nil {
		return err
	}
	out.Annotations[AnnotationStatus] = string(b)
	out.Annotations[AnnotationConfigHash] = cfg.Hash

	// Metrics are merged by the agent; Istio points Prometheus at it even
	// when a template injects no proxy (proxyless gRPC).
	mergePrometheus(out, orig, cfg, statusPort, targets)
	proxy := findProxy(out)
	if proxy == nil {
		// A template that injects no proxy (a custom one) gets no
		// proxy bookkeeping.
		return nil
	}
	out.Annotations[AnnotationInjectedImage] = proxy.Image
	if _, ok := out.Annotations[AnnotationDefaultContainer]; !ok {
		for _, c := range out.Spec.Containers {
			if c.Name != ProxyContainerName {
				out.Annotations[AnnotationDefaultContainer] = c.Name
				break
			}
		}
	}
	if _, ok := out.Annotations[AnnotationDefaultLogsContainer]; !ok {
		if v, ok := out.Annotations[AnnotationDefaultContainer]; ok {
			out.Annotations[AnnotationDefaultLogsContainer] = v
		}
	}
	return nil
}

// recordExcludedServices records what the Services the pod excludes
// resolved to (AnnotationExcludedServiceAddresses), for the companion
// controller; a pod that excludes none carries no record, whatever its
// manifest said.
func recordExcludedServices(out *corev1.Pod, excluded []ExcludedService) {
	if len(excluded) == 0 {
		delete(out.Annotations, AnnotationExcludedServiceAddresses)
		return
	}
	out.Annotations[AnnotationExcludedServiceAddresses] = FormatExcludedServices(excluded)
}

// injectedStatus lists what the pod has that orig did not: for the
// containers, what the templates wrote, in their order (as Istio lists
// it), then anything else new.
func injectedStatus(out, orig *corev1.Pod, cfg *config.Config, touched templateContainers) Status {
	origInit := names(orig.Spec.InitContainers, containerName)
	origCont := names(orig.Spec.Containers, containerName)
	origVol := names(orig.Spec.Volumes, func(v corev1.Volume) string { return v.Name })
	origSecrets := names(orig.Spec.ImagePullSecrets, func(r corev1.LocalObjectReference) string { return r.Name })
	st := Status{Revision: cfg.Revision()}
	st.InitContainers = statusNames(out.Spec.InitContainers, origInit, touched.init)
	st.Containers = statusNames(out.Spec.Containers, origCont, touched.containers)
	for _, v := range out.Spec.Volumes {
		if !origVol[v.Name] {
			st.Volumes = append(st.Volumes, v.Name)
		}
	}
	for _, r := range out.Spec.ImagePullSecrets {
		if !origSecrets[r.Name] {
			st.ImagePullSecrets = append(st.ImagePullSecrets, r.Name)
		}
	}
	return st
}

// statusNames lists the containers of list that the templates wrote (in
// their order), then the other ones the pod did not have.
func statusNames(list []corev1.Container, orig map[string]bool, touched []string) []string {
	var out []string
	if len(touched) > 0 {
		out = make([]string, 0, len(touched))
	}
	for _, n := range touched {
		if slices.ContainsFunc(list, func(c corev1.Container) bool { return c.Name == n }) {
			out = append(out, n)
		}
	}
	for _, c := range list {
		if !orig[c.Name] && !slices.Contains(out, c.Name) {
			out = append(out, c.Name)
		}
	}
	return out
}

// overrides is the proxy.istio.io/overrides annotation: the pod's own
// containers that the templates also wrote, as the user wrote them, under
// the list the templates put them in.
type overrides struct {
	Containers     []corev1.Container `json:"containers,omitempty"`
	InitContainers []corev1.Container `json:"initContainers,omitempty"`
}

// recordOverrides writes proxy.istio.io/overrides, as Istio does, so the
// user's part of an injected container stays visible on the pod.
func recordOverrides(out, orig *corev1.Pod, touched templateContainers) error {
	var ov overrides
	user := func(name string) (corev1.Container, bool) {
		for _, l := range [][]corev1.Container{orig.Spec.InitContainers, orig.Spec.Containers} {
			for _, c := range l {
				if c.Name == name {
					c = *c.DeepCopy()
					if c.Image == "auto" {
						c.Image = ""
					}
					return c, true
				}
			}
		}
		return corev1.Container{}, false
	}
	for _, n := range touched.init {
		if c, ok := user(n); ok {
			ov.InitContainers = append(ov.InitContainers, c)
		}
	}
	for _, n := range touched.containers {
		if c, ok := user(n); ok {
			ov.Containers = append(ov.Containers, c)
		}
	}
	if len(ov.InitContainers) == 0 && len(ov.Containers) == 0 {
		return nil
	}
	b, err := json.Marshal(ov)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", AnnotationProxyOverrides, err)
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationProxyOverrides] = string(b)
	return nil
}
