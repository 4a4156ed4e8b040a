package inject

import (
	"encoding/json"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/remora-mesh/remora/pkg/templates"
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

func names[T any](items []T, name func(T) string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, it := range items {
		m[name(it)] = true
	}
	return m
}

func containerName(c corev1.Container) string { return c.Name }

// reorder puts injected init containers before the pod's own, and places
// the proxy: first among the containers when the app must wait for it in
// classic mode, last otherwise.
func reorder(out, orig *corev1.Pod, native, hold bool) {
	origInit := names(orig.Spec.InitContainers, containerName)
	var injected, own []corev1.Container
	for _, c := range out.Spec.InitContainers {
		if origInit[c.Name] && initRank(c.Name) == 1 {
			own = append(own, c)
		} else {
			injected = append(injected, c)
		}
	}
	// The traffic-capture container runs before the native proxy.
	slices.SortStableFunc(injected, func(a, b corev1.Container) int {
		return initRank(a.Name) - initRank(b.Name)
	})
	if native {
		out.Spec.InitContainers = append(injected, own...)
		return
	}
	// Classic mode: the pod's own init containers run first, as in Istio.
	out.Spec.InitContainers = append(own, injected...)
	var proxy *corev1.Container
	rest := make([]corev1.Container, 0, len(out.Spec.Containers))
	for i := range out.Spec.Containers {
		if out.Spec.Containers[i].Name == ProxyContainerName {
			proxy = &out.Spec.Containers[i]
			continue
		}
		rest = append(rest, out.Spec.Containers[i])
	}
	if proxy == nil {
		return
	}
	if hold {
		out.Spec.Containers = append([]corev1.Container{*proxy}, rest...)
	} else {
		out.Spec.Containers = append(rest, *proxy)
	}
}

// overlay merges the user's container over the injected one, the user's
// fields winning, with Kubernetes' strategic merge rules.
func overlay(injected, user corev1.Container) (corev1.Container, bool) {
	base, err1 := json.Marshal(injected)
	patch, err2 := json.Marshal(user)
	if err1 != nil || err2 != nil {
		return injected, false
	}
	merged, err := strategicpatch.StrategicMergePatch(base, patch, corev1.Container{})
	if err != nil {
		return injected, false
	}
	var c corev1.Container
	if err := json.Unmarshal(merged, &c); err != nil {
		return injected, false
	}
	return c, true
}

func initRank(name string) int {
	switch name {
	case InitContainerName, ValidationContainerName:
		return 0
	case ProxyContainerName:
		return 2
	}
	return 1
}

// reapplyOverrides merges a user's own istio-proxy container over the
// injected one (the user's fields win, as in Istio), and moves it to the
// init containers in native mode.
func reapplyOverrides(out, orig *corev1.Pod, native bool) {
	// The user's own istio-init (or istio-validation) init container wins
	// over the injected one too.
	for _, u := range orig.Spec.InitContainers {
		if u.Name != InitContainerName && u.Name != ValidationContainerName {
			continue
		}
		for i := range out.Spec.InitContainers {
			if out.Spec.InitContainers[i].Name == u.Name {
				if merged, ok := overlay(out.Spec.InitContainers[i], u); ok {
					out.Spec.InitContainers[i] = merged
				}
			}
		}
	}
	var user *corev1.Container
	for i := range orig.Spec.Containers {
		if orig.Spec.Containers[i].Name == ProxyContainerName {
			user = &orig.Spec.Containers[i]
		}
	}
	if user == nil {
		return
	}
	// Find the injected proxy (in containers, where the merge placed the
	// template's fields over the user's, or in init containers).
	var injected *corev1.Container
	injectedInInit := false
	for i := range out.Spec.InitContainers {
		if out.Spec.InitContainers[i].Name == ProxyContainerName {
			injected = &out.Spec.InitContainers[i]
			injectedInInit = true
		}
	}
	if injected == nil {
		for i := range out.Spec.Containers {
			if out.Spec.Containers[i].Name == ProxyContainerName {
				injected = &out.Spec.Containers[i]
			}
		}
	}
	if injected == nil {
		return
	}
	override := *user
	if override.Image == "auto" {
		// Istio's convention: "auto" means the injected image.
		override.Image = ""
	}
	c, ok := overlay(*injected, override)
	if !ok {
		return
	}
	*injected = c
	if native && injectedInInit {
		// The user's container was in containers: keep only the init one.
		out.Spec.Containers = slices.DeleteFunc(out.Spec.Containers, func(c corev1.Container) bool {
			return c.Name == ProxyContainerName
		})
	}
}

// finish adds the status and bookkeeping annotations, merges Prometheus
// scraping and checks the result the way the API server would.
func finish(out, orig *corev1.Pod, cfg *templates.Config, touched templateContainers, statusPort int32) error {
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	origInit := names(orig.Spec.InitContainers, containerName)
	origCont := names(orig.Spec.Containers, containerName)
	origVol := names(orig.Spec.Volumes, func(v corev1.Volume) string { return v.Name })
	origSecrets := names(orig.Spec.ImagePullSecrets, func(r corev1.LocalObjectReference) string { return r.Name })
	st := Status{Revision: revisionFromSettings(&cfg.Settings)}
	for _, c := range out.Spec.InitContainers {
		if !origInit[c.Name] || touched.init[c.Name] {
			st.InitContainers = append(st.InitContainers, c.Name)
		}
	}
	for _, c := range out.Spec.Containers {
		if !origCont[c.Name] || touched.containers[c.Name] {
			st.Containers = append(st.Containers, c.Name)
		}
	}
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
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	out.Annotations[AnnotationStatus] = string(b)
	out.Annotations[AnnotationConfigHash] = cfg.Hash

	proxy := findProxy(out)
	if proxy == nil {
		// A template that injects no proxy (a custom one) gets no
		// proxy bookkeeping.
		return validateResult(out)
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
	mergePrometheus(out, orig, cfg, statusPort)
	return validateResult(out)
}

const (
	promScrape = "prometheus.io/scrape"
	promPort   = "prometheus.io/port"
	promPath   = "prometheus.io/path"
)

// mergePrometheus points Prometheus at the agent, which merges the app's
// metrics (from ISTIO_PROMETHEUS_ANNOTATIONS) with Envoy's, as Istio does.
func mergePrometheus(out, orig *corev1.Pod, cfg *templates.Config, statusPort int32) {
	if cfg.Mesh.EnablePrometheusMerge != nil && !*cfg.Mesh.EnablePrometheusMerge {
		return
	}
	if v, ok := out.Annotations[AnnotationMergeMetrics]; ok && v == "false" {
		return
	}
	if orig.Annotations[promScrape] == "false" || orig.Annotations["prometheus.io.scrape"] == "false" {
		return
	}
	proxy := findProxy(out)
	if proxy == nil {
		return
	}
	orig2 := map[string]string{}
	for k, short := range map[string]string{promScrape: "scrape", promPath: "path", promPort: "port"} {
		if v, ok := orig.Annotations[k]; ok {
			orig2[short] = v
		}
	}
	if len(orig2) > 0 {
		b, _ := json.Marshal(orig2)
		proxy.Env = append(proxy.Env, corev1.EnvVar{Name: "ISTIO_PROMETHEUS_ANNOTATIONS", Value: string(b)})
	}
	out.Annotations[promScrape] = "true"
	out.Annotations[promPort] = strconv.Itoa(int(statusPort))
	out.Annotations[promPath] = "/stats/prometheus"
}

func findProxy(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == ProxyContainerName {
			return &pod.Spec.InitContainers[i]
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == ProxyContainerName {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// maxAnnotationBytes is the API server's limit on a pod's annotations.
const maxAnnotationBytes = 256 * 1024

// validateResult refuses what the API server would refuse: duplicate
// names, mounts without a volume, over-long label values.
func validateResult(pod *corev1.Pod) error {
	if len(pod.Spec.Containers) == 0 {
		return podErrorf("the pod's only container is %s; as a native sidecar the proxy runs as an init container and the pod would have no container: add the app's container, or set %s: \"false\"", ProxyContainerName, AnnotationNativeSidecar)
	}
	seen := map[string]string{}
	for _, list := range []struct {
		kind string
		cs   []corev1.Container
	}{{"init container", pod.Spec.InitContainers}, {"container", pod.Spec.Containers}} {
		for _, c := range list.cs {
			if prev, ok := seen[c.Name]; ok {
				return podErrorf("injection would give the pod two containers named %q (%s and %s); rename the pod's own", c.Name, prev, list.kind)
			}
			seen[c.Name] = list.kind
		}
	}
	vols := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if vols[v.Name] {
			return podErrorf("injection would give the pod two volumes named %q; rename the pod's own", v.Name)
		}
		vols[v.Name] = true
	}
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range list {
			for _, m := range c.VolumeMounts {
				if !vols[m.Name] {
					return podErrorf("container %q mounts volume %q, which the pod does not have (check %s and %s)", c.Name, m.Name, AnnotationUserVolumeMount, AnnotationUserVolume)
				}
			}
		}
	}
	var total int
	for k, v := range pod.Annotations {
		total += len(k) + len(v)
	}
	if total > maxAnnotationBytes {
		return podErrorf("the injected pod's annotations would total %d bytes; the API server allows %d", total, maxAnnotationBytes)
	}
	for k, v := range pod.Labels {
		if len(v) > 63 {
			return podErrorf("label %s would be %d characters long; label values are at most 63", k, len(v))
		}
	}
	return nil
}
