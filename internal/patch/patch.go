// Package patch builds the JSON patch that turns the pod an admission
// request carried into the injected pod. Injection changes a known set of
// fields (labels, annotations, containers, init containers, volumes, pull
// secrets, DNS config), so the patch is built from those fields directly
// instead of diffing two whole JSON documents; when anything else changed
// (a custom template may change any field) it falls back to the generic
// diff of gomodules.xyz/jsonpatch. Either way, applying the patch to the raw
// request object gives the same document.
package patch

import (
	"encoding/json"
	"fmt"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// Operations returns the JSON patch from raw (the request's object, which
// decoded to orig) to injected.
func Operations(raw []byte, orig, injected *corev1.Pod) ([]jsonpatch.Operation, error) {
	if ops, ok := direct(orig, injected); ok {
		return ops, nil
	}
	return generic(raw, injected)
}

// wireOp is an operation as JSON Patch writes it (RFC 6902). Value is left
// out when nil: only remove operations have none (an add or replace of a
// nil value gets json null, as jsonpatch.Operation's MarshalJSON writes it).
type wireOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

var jsonNull = json.RawMessage("null")

// Marshal encodes ops as the JSON patch document, in one pass. It writes
// what json.Marshal(ops) writes, but without jsonpatch.Operation's
// MarshalJSON, which encodes each operation on its own and makes
// encoding/json validate and compact every operation's bytes a second time.
func Marshal(ops []jsonpatch.Operation) ([]byte, error) {
	wire := make([]wireOp, len(ops))
	for i, op := range ops {
		wire[i] = wireOp{Op: op.Operation, Path: op.Path, Value: op.Value}
		if op.Value == nil && (op.Operation == "add" || op.Operation == "replace") {
			wire[i].Value = jsonNull
		}
	}
	b, err := json.Marshal(wire)
	if err != nil {
		return nil, fmt.Errorf("encoding the patch: %w", err)
	}
	return b, nil
}

// Generic diffs the raw object against the injected pod's JSON, as
// controller-runtime's PatchResponseFromRaw does.
func Generic(raw []byte, injected *corev1.Pod) ([]jsonpatch.Operation, error) {
	return generic(raw, injected)
}

// IsDirect reports whether Operations builds the patch directly (only the
// fields injection changes differ).
func IsDirect(orig, injected *corev1.Pod) bool { return onlyInjectionFieldsDiffer(orig, injected) }

func generic(raw []byte, injected *corev1.Pod) ([]jsonpatch.Operation, error) {
	b, err := json.Marshal(injected)
	if err != nil {
		return nil, fmt.Errorf("encoding the injected pod: %w", err)
	}
	ops, err := jsonpatch.CreatePatch(raw, b)
	if err != nil {
		return nil, fmt.Errorf("diffing the injected pod: %w", err)
	}
	return ops, nil
}

// direct builds the patch from the fields injection changes, or reports
// false when some other field changed too.
func direct(orig, injected *corev1.Pod) ([]jsonpatch.Operation, bool) {
	if !onlyInjectionFieldsDiffer(orig, injected) {
		return nil, false
	}
	ops := make([]jsonpatch.Operation, 0, 24)
	ops = mapOps(ops, "/metadata/labels", orig.Labels, injected.Labels)
	ops = mapOps(ops, "/metadata/annotations", orig.Annotations, injected.Annotations)
	ops = fieldOp(ops, "/spec/initContainers", len(orig.Spec.InitContainers) > 0, len(injected.Spec.InitContainers) > 0,
		func() bool {
			return equality.Semantic.DeepEqual(orig.Spec.InitContainers, injected.Spec.InitContainers)
		}, injected.Spec.InitContainers)
	// containers has no omitempty: an empty list is written as null, never
	// left out.
	ops = fieldOp(ops, "/spec/containers", true, true,
		func() bool { return equality.Semantic.DeepEqual(orig.Spec.Containers, injected.Spec.Containers) }, injected.Spec.Containers)
	ops = fieldOp(ops, "/spec/volumes", len(orig.Spec.Volumes) > 0, len(injected.Spec.Volumes) > 0,
		func() bool { return equality.Semantic.DeepEqual(orig.Spec.Volumes, injected.Spec.Volumes) }, injected.Spec.Volumes)
	ops = fieldOp(ops, "/spec/imagePullSecrets", len(orig.Spec.ImagePullSecrets) > 0, len(injected.Spec.ImagePullSecrets) > 0,
		func() bool {
			return equality.Semantic.DeepEqual(orig.Spec.ImagePullSecrets, injected.Spec.ImagePullSecrets)
		}, injected.Spec.ImagePullSecrets)
	ops = fieldOp(ops, "/spec/dnsConfig", orig.Spec.DNSConfig != nil, injected.Spec.DNSConfig != nil,
		func() bool { return equality.Semantic.DeepEqual(orig.Spec.DNSConfig, injected.Spec.DNSConfig) }, injected.Spec.DNSConfig)
	return ops, true
}

// onlyInjectionFieldsDiffer compares the pods with the fields direct
// handles blanked out.
func onlyInjectionFieldsDiffer(orig, injected *corev1.Pod) bool {
	a, b := *orig, *injected
	a.Labels, b.Labels = nil, nil
	a.Annotations, b.Annotations = nil, nil
	a.Spec.InitContainers, b.Spec.InitContainers = nil, nil
	a.Spec.Containers, b.Spec.Containers = nil, nil
	a.Spec.Volumes, b.Spec.Volumes = nil, nil
	a.Spec.ImagePullSecrets, b.Spec.ImagePullSecrets = nil, nil
	a.Spec.DNSConfig, b.Spec.DNSConfig = nil, nil
	return equality.Semantic.DeepEqual(a, b)
}

// fieldOp adds, replaces or removes one field as a whole when it changed.
func fieldOp(ops []jsonpatch.Operation, path string, had, has bool, same func() bool, value any) []jsonpatch.Operation {
	switch {
	case !had && !has:
		return ops
	case had && !has:
		return append(ops, jsonpatch.NewOperation("remove", path, nil))
	case !had:
		return append(ops, jsonpatch.NewOperation("add", path, value))
	case same():
		return ops
	}
	return append(ops, jsonpatch.NewOperation("replace", path, value))
}

// mapOps patches a string map key by key.
func mapOps(ops []jsonpatch.Operation, path string, before, after map[string]string) []jsonpatch.Operation {
	if len(before) == 0 {
		if len(after) > 0 {
			ops = append(ops, jsonpatch.NewOperation("add", path, after))
		}
		return ops
	}
	if len(after) == 0 {
		return append(ops, jsonpatch.NewOperation("remove", path, nil))
	}
	for k, v := range after {
		old, ok := before[k]
		switch {
		case !ok:
			ops = append(ops, jsonpatch.NewOperation("add", path+"/"+escape(k), v))
		case old != v:
			ops = append(ops, jsonpatch.NewOperation("replace", path+"/"+escape(k), v))
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			ops = append(ops, jsonpatch.NewOperation("remove", path+"/"+escape(k), nil))
		}
	}
	return ops
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// escape makes a map key a JSON pointer token (RFC 6901).
func escape(k string) string { return pointerEscaper.Replace(k) }
