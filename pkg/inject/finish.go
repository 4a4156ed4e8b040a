package inject

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// finish is the pipeline's last step. It puts the injected containers in
// their places, merges the pod's own proxy and capture containers over the
// injected ones (recording them in proxy.istio.io/overrides), rewrites the
// app's probes through the agent, records the status and bookkeeping
// annotations, and checks the result the way the API server would.
func finish(out *corev1.Pod, req Request, r *resolved, data *TemplateData, touched templateContainers) error {
	orig := req.Pod
	reorder(out, orig, r.native, r.hold)
	overlayUserCapture(out, orig)
	overlayUserProxy(out, orig, r.native, data.Proxy.VolumeMounts)
	if r.mode == "TPROXY" {
		// TPROXY needs the proxy to run as root, whatever user the
		// pod's own istio-proxy names (istio-init exempts that UID).
		if proxy := findProxy(out); proxy != nil && proxy.SecurityContext != nil {
			proxy.SecurityContext.RunAsUser = ptr(int64(0))
		}
	}
	if err := recordOverrides(out, orig, touched); err != nil {
		return err
	}
	if rewriteWanted(out, r) {
		rewriteProbes(out, r.statusPort)
	}
	if err := recordStatus(out, orig, req.Config, touched, r.promPort, r.ann.scrapeTargets); err != nil {
		return err
	}
	recordExcludedServices(out, r.excluded)
	return validateResult(out)
}

// rewriteWanted is the resolved choice to rewrite the app's probes, unless
// the pod left it to the templates and one set the annotation (Istio's
// custom templates do, to turn it off).
func rewriteWanted(out *corev1.Pod, r *resolved) bool {
	if v, ok := out.Annotations[AnnotationRewriteProbes]; ok && r.ann.rewriteProbes == nil {
		if b, err := parseBool(v); err == nil {
			return b && r.statusPort != 0
		}
	}
	return r.rewriteProbes
}

// names is the set of the items' names.
func names[T any](items []T, name func(T) string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, it := range items {
		m[name(it)] = true
	}
	return m
}

// containerName is a container's name, for names.
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

// initRank orders the init containers: traffic capture first, then the pod's
// own, then a native proxy.
func initRank(name string) int {
	switch name {
	case InitContainerName, ValidationContainerName:
		return 0
	case ProxyContainerName:
		return 2
	}
	return 1
}

// overlayUserCapture merges the pod's own istio-init (or istio-validation)
// init container over the injected one: the user's fields win.
func overlayUserCapture(out, orig *corev1.Pod) {
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
}

// overlayUserProxy merges a user's own istio-proxy container over the
// injected one (the user's fields win, as in Istio), and moves it to the
// init containers in native mode.
func overlayUserProxy(out, orig *corev1.Pod, native bool, injectedMounts []corev1.VolumeMount) {
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
