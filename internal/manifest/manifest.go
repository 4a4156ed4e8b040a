// Package manifest applies the injection engine to Kubernetes manifests:
// multi-document YAML, kind: List, and every workload kind that holds a pod
// template. It serves the offline `injector inject` and `uninject` commands.
package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/pkg/inject"
)

// Report says what happened to one object.
type Report struct {
	// Kind and Name identify the object (namespace/name when namespaced).
	Kind, Name string
	// Injected is true when the object's pod template was injected.
	Injected bool
	// Reason and Message come from the engine, or say why the object was
	// passed through.
	Reason  string
	Message string
}

func (r Report) String() string {
	if r.Injected {
		return fmt.Sprintf("%s/%s: injected", r.Kind, r.Name)
	}
	return fmt.Sprintf("%s/%s: skipped: %s", r.Kind, r.Name, r.Message)
}

// PodFunc transforms a pod (a workload's template as a pod) for a workload.
// It returns the new pod, whether it changed, a reason and a message.
type PodFunc func(pod *corev1.Pod, wl inject.Workload) (out *corev1.Pod, changed bool, reason, message string, err error)

// Process reads YAML documents from r, applies fn to every pod template,
// and returns the resulting YAML and one report per object. On error
// nothing is returned but the error, which names the object.
func Process(r io.Reader, fn PodFunc) ([]byte, []Report, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var out bytes.Buffer
	var reports []Report
	first := true
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading YAML: %w", err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		res, reps, err := processDoc(doc, fn)
		if err != nil {
			return nil, nil, err
		}
		reports = append(reports, reps...)
		if !first {
			out.WriteString("---\n")
		}
		first = false
		out.Write(res)
		if len(res) > 0 && res[len(res)-1] != '\n' {
			out.WriteByte('\n')
		}
	}
	return out.Bytes(), reports, nil
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func processDoc(doc []byte, fn PodFunc) ([]byte, []Report, error) {
	var tm typeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, nil, fmt.Errorf("parsing YAML document: %w", err)
	}
	name := tm.Metadata.Name
	if tm.Metadata.Namespace != "" {
		name = tm.Metadata.Namespace + "/" + name
	}
	switch tm.Kind {
	case "List":
		var list struct {
			APIVersion string         `json:"apiVersion"`
			Kind       string         `json:"kind"`
			Metadata   map[string]any `json:"metadata,omitempty"`
			Items      []rawDoc       `json:"items"`
		}
		if err := yaml.Unmarshal(doc, &list); err != nil {
			return nil, nil, fmt.Errorf("parsing List: %w", err)
		}
		var reports []Report
		items := make([]any, 0, len(list.Items))
		for i, it := range list.Items {
			res, reps, err := processDoc(it, fn)
			if err != nil {
				return nil, nil, fmt.Errorf("item %d of the List: %w", i, err)
			}
			reports = append(reports, reps...)
			var v any
			if err := yaml.Unmarshal(res, &v); err != nil {
				return nil, nil, err
			}
			items = append(items, v)
		}
		outList := map[string]any{"apiVersion": list.APIVersion, "kind": "List", "items": items}
		if list.Metadata != nil {
			outList["metadata"] = list.Metadata
		}
		b, err := yaml.Marshal(outList)
		return b, reports, err
	}

	obj, tmpl, wlKind := typedObject(tm)
	if obj == nil {
		return doc, []Report{{Kind: kindOrUnknown(tm.Kind), Name: name, Reason: "unsupported-kind",
			Message: "kind " + kindOrUnknown(tm.Kind) + " holds no pod template; passed through unchanged"}}, nil
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		// Unknown fields are allowed in manifests (newer API versions);
		// only refuse what does not parse at all.
		if err2 := yaml.Unmarshal(doc, obj); err2 != nil {
			return nil, nil, fmt.Errorf("%s %s: %w", tm.Kind, name, err2)
		}
	}
	meta, spec := tmpl(obj)
	pod := &corev1.Pod{ObjectMeta: *meta.DeepCopy(), Spec: *spec.DeepCopy()}
	if pod.Namespace == "" {
		pod.Namespace = tm.Metadata.Namespace
	}
	wl := inject.Workload{APIVersion: tm.APIVersion, Kind: wlKind, Name: tm.Metadata.Name}
	if tm.Kind == "Pod" {
		// A pod's workload comes from its owner references.
		wl = inject.Workload{}
	}
	out, changed, reason, msg, err := fn(pod, wl)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", tm.Kind, name, err)
	}
	rep := Report{Kind: tm.Kind, Name: name, Injected: changed, Reason: reason, Message: msg}
	if !changed {
		return doc, []Report{rep}, nil
	}
	if tm.Kind != "Pod" {
		out.Namespace = meta.Namespace
	}
	*meta = out.ObjectMeta
	*spec = out.Spec
	b, err := yaml.Marshal(obj)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: encoding: %w", tm.Kind, name, err)
	}
	return b, []Report{rep}, nil
}

// rawDoc keeps a List item as raw JSON for re-processing.
type rawDoc []byte

// UnmarshalJSON stores the raw bytes.
func (m *rawDoc) UnmarshalJSON(b []byte) error {
	*m = append((*m)[:0], b...)
	return nil
}

func kindOrUnknown(k string) string {
	if k == "" {
		return "(no kind)"
	}
	return k
}

type templateFunc func(obj any) (*metav1.ObjectMeta, *corev1.PodSpec)

// typedObject returns an empty typed object for kinds that hold a pod
// template, the accessor of that template, and the workload kind.
func typedObject(tm typeMeta) (any, templateFunc, string) {
	switch tm.Kind {
	case "Pod":
		return &corev1.Pod{}, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
			p := o.(*corev1.Pod)
			return &p.ObjectMeta, &p.Spec
		}, "Pod"
	case "Deployment":
		return &appsv1.Deployment{}, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
			d := o.(*appsv1.Deployment)
			return &d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec
		}, "Deployment"
	case "StatefulSet":
		return &appsv1.StatefulSet{}, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
			d := o.(*appsv1.StatefulSet)
			return &d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec
		}, "StatefulSet"
	case "DaemonSet":
		return &appsv1.DaemonSet{}, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
			d := o.(*appsv1.DaemonSet)
			return &d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec
		}, "DaemonSet"
	case "ReplicaSet":
		return &appsv1.ReplicaSet{}, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
			d := o.(*appsv1.ReplicaSet)
			return &d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec
		}, "ReplicaSet"
	case "ReplicationController":
		return &corev1.ReplicationController{}, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
			d := o.(*corev1.ReplicationController)
			if d.Spec.Template == nil {
				d.Spec.Template = &corev1.PodTemplateSpec{}
			}
			return &d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec
		}, "ReplicationController"
	case "Job":
		return &batchv1.Job{}, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
			d := o.(*batchv1.Job)
			return &d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec
		}, "Job"
	case "CronJob":
		return &batchv1.CronJob{}, func(o any) (*metav1.ObjectMeta, *corev1.PodSpec) {
			d := o.(*batchv1.CronJob)
			return &d.Spec.JobTemplate.Spec.Template.ObjectMeta, &d.Spec.JobTemplate.Spec.Template.Spec
		}, "CronJob"
	}
	return nil, nil, ""
}
