package inject

import (
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

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

func names[T any](items []T, name func(T) string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, it := range items {
		m[name(it)] = true
	}
	return m
}

func containerName(c corev1.Container) string { return c.Name }

// reorder puts injected init containers before the pod's own, and places
// a proxy that is among the containers: first when the app must wait for
// it, last otherwise.
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
	} else {
		// Classic mode: the pod's own init containers run first, as in Istio.
		out.Spec.InitContainers = append(own, injected...)
	}
	// A proxy among the containers (classic mode, or a template such as
	// grpc-agent that puts it there) goes first or last.
	cs := out.Spec.Containers
	i := slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == ProxyContainerName })
	if i < 0 {
		return
	}
	proxy := cs[i]
	// Rotate in place: shift the containers between the proxy and its
	// place, then put it there.
	if hold {
		copy(cs[1:i+1], cs[:i])
		cs[0] = proxy
	} else {
		copy(cs[i:], cs[i+1:])
		cs[len(cs)-1] = proxy
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
func reapplyOverrides(out, orig *corev1.Pod, native bool, injectedMounts []corev1.VolumeMount) {
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
	// As in Istio, the injected mounts come first and the user's own
	// follow.
	own := func(m corev1.VolumeMount) bool {
		return !slices.ContainsFunc(injectedMounts, func(i corev1.VolumeMount) bool { return i.MountPath == m.MountPath })
	}
	slices.SortStableFunc(c.VolumeMounts, func(a, b corev1.VolumeMount) int {
		switch oa, ob := own(a), own(b); {
		case oa == ob:
			return 0
		case ob:
			return -1
		}
		return 1
	})
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
func finish(out, orig *corev1.Pod, cfg *config.Config, touched templateContainers, statusPort int32, targets []scrapeTarget) error {
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	origInit := names(orig.Spec.InitContainers, containerName)
	origCont := names(orig.Spec.Containers, containerName)
	origVol := names(orig.Spec.Volumes, func(v corev1.Volume) string { return v.Name })
	origSecrets := names(orig.Spec.ImagePullSecrets, func(r corev1.LocalObjectReference) string { return r.Name })
	st := Status{Revision: cfg.Revision()}
	// What the templates wrote, in their order (as Istio lists it), then
	// anything else new.
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
	b, err := json.Marshal(st)
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
	return validateResult(out)
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
