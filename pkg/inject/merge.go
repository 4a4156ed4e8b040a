package inject

import (
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/templates"
)

// place is the pipeline's fourth step: it adds what assemble computed to a
// copy of the pod. The unchanged built-in sidecar template alone is placed
// directly; any other templates are rendered through text/template and
// strategic-merged into the pod, as Istio does. The result is the same (a
// test proves it). place also returns the containers the templates wrote.
func place(req Request, r *resolved, data *TemplateData) (*corev1.Pod, templateContainers, error) {
	cfg, orig, names := req.Config, req.Pod, r.templates
	var touched templateContainers
	if err := checkVolumeNames(orig, data.Volumes); err != nil {
		return nil, touched, err
	}
	if len(names) == 1 && cfg.IsBuiltin(names[0]) && names[0] == "sidecar" && !req.AlwaysRender {
		touched.init = make([]string, 0, 2)
		if data.Init != nil {
			touched.add(true, data.Init.Name)
		}
		touched.add(r.native, data.Proxy.Name)
		return placeBuiltin(orig, data), touched, nil
	}
	out, err := renderAndMerge(cfg, orig, data, names, &touched)
	return out, touched, err
}

// checkVolumeNames refuses a pod whose own volumes take the names of the
// injected ones: a merge would give one volume two sources.
func checkVolumeNames(orig *corev1.Pod, injected []corev1.Volume) error {
	for _, v := range orig.Spec.Volumes {
		for _, iv := range injected {
			if v.Name == iv.Name {
				return podErrorf("the pod's volume %q has the name of a volume the sidecar needs; rename it", v.Name)
			}
		}
	}
	return nil
}

// templateContainers are the names of the init containers and containers
// the templates wrote, in the templates' order: those are what injection
// owns, for the status annotation.
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

// renderAndMerge renders each template and merges its Pod fragment into the
// pod with Kubernetes' strategic merge rules, as Istio does.
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
