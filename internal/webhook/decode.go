package webhook

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "sigs.k8s.io/json"
)

var podGVK = corev1.SchemeGroupVersion.WithKind("Pod")

// decodePod decodes an admission request's object into pod as
// controller-runtime's admission.Decoder does with client-go's scheme (the
// API machinery's JSON serializer: case-sensitive names, integers kept as
// integers, unknown fields ignored; a missing kind or apiVersion is taken
// to be the Pod's; any other kind or version is refused), in one pass where
// the serializer makes two: it reads apiVersion and kind first with a
// second JSON decoder over the whole object. Here they are read with the
// pod and checked after.
func decodePod(raw []byte, pod *corev1.Pod) error {
	if len(raw) == 0 {
		return fmt.Errorf("there is no content to decode")
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, pod); err != nil {
		return err
	}
	gvk := pod.GroupVersionKind()
	if gvk.Kind == "" {
		gvk.Kind = podGVK.Kind
	}
	if gvk.Version == "" && gvk.Group == "" {
		gvk.Version = podGVK.Version
	}
	if gvk != podGVK {
		return fmt.Errorf("the object is %s, not a %s", gvkString(gvk), gvkString(podGVK))
	}
	return nil
}

func gvkString(gvk schema.GroupVersionKind) string {
	if gvk.Group == "" {
		return gvk.Version + " " + gvk.Kind
	}
	return gvk.Group + "/" + gvk.Version + " " + gvk.Kind
}
