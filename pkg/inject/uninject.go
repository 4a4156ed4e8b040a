package inject

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Uninject removes what injection added to a pod, using its
// sidecar.istio.io/status annotation, and restores the rewritten probes. It
// reports false when the pod was not injected.
func Uninject(pod *corev1.Pod) (*corev1.Pod, bool, error) {
	raw, ok := pod.Annotations[AnnotationStatus]
	if !ok {
		return pod, false, nil
	}
	var st Status
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return nil, false, fmt.Errorf("annotation %s=%q is not valid JSON: %w", AnnotationStatus, raw, err)
	}
	out := pod.DeepCopy()
	var probers map[string]prober
	var promAnn promAnnotations
	if proxy := findProxy(out); proxy != nil {
		for _, e := range proxy.Env {
			switch e.Name {
			case AppProbersEnv:
				_ = json.Unmarshal([]byte(e.Value), &probers)
			case "ISTIO_PROMETHEUS_ANNOTATIONS":
				_ = json.Unmarshal([]byte(e.Value), &promAnn)
			}
		}
	}
	// The pod's own containers that injection wrote over come back as the
	// user wrote them (proxy.istio.io/overrides); a user's istio-proxy goes
	// back among the containers.
	var ov overrides
	if raw, ok := out.Annotations[AnnotationProxyOverrides]; ok {
		if err := json.Unmarshal([]byte(raw), &ov); err != nil {
			return nil, false, fmt.Errorf("annotation %s=%q is not valid JSON: %w", AnnotationProxyOverrides, raw, err)
		}
	}
	var userProxy *corev1.Container
	restored := map[string]bool{}
	for _, u := range append(ov.InitContainers, ov.Containers...) {
		if u.Name == ProxyContainerName {
			if u.Image == "" {
				u.Image = "auto"
			}
			userProxy = &u
			continue
		}
		for _, list := range [][]corev1.Container{out.Spec.InitContainers, out.Spec.Containers} {
			for i := range list {
				if list[i].Name == u.Name {
					list[i] = u
					restored[u.Name] = true
				}
			}
		}
	}
	drop := func(list []string) func(corev1.Container) bool {
		return func(c corev1.Container) bool { return slices.Contains(list, c.Name) && !restored[c.Name] }
	}
	out.Spec.InitContainers = slices.DeleteFunc(out.Spec.InitContainers, drop(st.InitContainers))
	out.Spec.Containers = slices.DeleteFunc(out.Spec.Containers, drop(st.Containers))
	// A native proxy is listed with the init containers but may sit in
	// either list after a user edit.
	out.Spec.Containers = slices.DeleteFunc(out.Spec.Containers, func(c corev1.Container) bool {
		return c.Name == ProxyContainerName
	})
	if userProxy != nil {
		out.Spec.Containers = append(out.Spec.Containers, *userProxy)
	}
	out.Spec.Volumes = slices.DeleteFunc(out.Spec.Volumes, func(v corev1.Volume) bool {
		return slices.Contains(st.Volumes, v.Name)
	})
	out.Spec.ImagePullSecrets = slices.DeleteFunc(out.Spec.ImagePullSecrets, func(r corev1.LocalObjectReference) bool {
		return slices.Contains(st.ImagePullSecrets, r.Name)
	})
	if len(out.Spec.InitContainers) == 0 {
		out.Spec.InitContainers = nil
	}
	if len(out.Spec.Volumes) == 0 {
		out.Spec.Volumes = nil
	}
	if len(out.Spec.ImagePullSecrets) == 0 {
		out.Spec.ImagePullSecrets = nil
	}
	restoreProbes(out, probers)

	for _, k := range []string{AnnotationStatus, AnnotationConfigHash, AnnotationInjectedImage, AnnotationExcludedServiceAddresses, LabelRevision, AnnotationProxyOverrides,
		AnnotationDefaultContainer, AnnotationDefaultLogsContainer, promScrape, promPort, promPath} {
		delete(out.Annotations, k)
	}
	if promAnn.Scrape != "" {
		out.Annotations[promScrape] = promAnn.Scrape
	}
	if len(promAnn.Targets) > 0 {
		// port and path were the first target's.
		targets := make([]string, len(promAnn.Targets))
		for i, tg := range promAnn.Targets {
			targets[i] = tg.Port + ":" + tg.Path
		}
		out.Annotations[AnnotationScrapeTargets] = strings.Join(targets, ",")
	} else {
		if promAnn.Port != "" {
			out.Annotations[promPort] = promAnn.Port
		}
		if promAnn.Path != "" {
			out.Annotations[promPath] = promAnn.Path
		}
	}
	for _, k := range []string{LabelTLSMode, LabelCanonicalName, LabelCanonicalRevision, "topology.istio.io/network"} {
		delete(out.Labels, k)
	}
	if len(out.Annotations) == 0 {
		out.Annotations = nil
	}
	if len(out.Labels) == 0 {
		out.Labels = nil
	}
	return out, true, nil
}

func restoreProbes(pod *corev1.Pod, probers map[string]prober) {
	if len(probers) == 0 {
		return
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if p == nil || p.HTTPGet == nil {
				continue
			}
			if orig, ok := probers[p.HTTPGet.Path]; ok && strings.HasPrefix(p.HTTPGet.Path, "/app-health/") {
				p.ProbeHandler = corev1.ProbeHandler{HTTPGet: orig.HTTPGet, TCPSocket: orig.TCPSocket, GRPC: orig.GRPC}
			}
		}
		if c.Lifecycle != nil {
			for _, h := range []**corev1.LifecycleHandler{&c.Lifecycle.PostStart, &c.Lifecycle.PreStop} {
				if *h == nil || (*h).HTTPGet == nil {
					continue
				}
				if orig, ok := probers[(*h).HTTPGet.Path]; ok {
					*h = &corev1.LifecycleHandler{HTTPGet: orig.HTTPGet, TCPSocket: orig.TCPSocket}
				}
			}
		}
	}
}
