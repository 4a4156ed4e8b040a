package upgrade

import (
	"encoding/json"
	"slices"
	"strings"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// PodInfo is what the classification reads of an injected pod, and all the
// controller keeps of one: its identity, its controller, the revision and
// hash it was injected with, the proxy image it was injected with, and the
// labels and annotations that decide whether it is still selected. It is
// built from the pod's metadata alone (the controller watches pods as
// metadata), or from a whole pod (the status command). Strings that many
// pods share (namespaces, owners, hashes, images, label sets) are interned,
// so that a cluster of 150,000 pods costs a few hundred bytes a pod.
//
// A PodInfo is immutable once built: a changed pod gets a new one.
type PodInfo struct {
	Namespace, Name string
	UID             types.UID
	// owner is the pod's controller reference; the zero handle when the
	// pod has none.
	owner unique.Handle[Owner]
	// Revision is the revision in the sidecar.istio.io/status annotation
	// ("default" when it names none).
	Revision string
	// Hash is the remora.io/injection-hash annotation ("" when absent).
	Hash string
	// ProxyImage is the image the proxy was injected with: the
	// remora.io/proxy-image annotation, else (for a whole pod) the
	// istio-proxy container's image; "" when unknown.
	ProxyImage string
	// OwnImage: the pod chooses its proxy image (sidecar.istio.io/proxyImage).
	OwnImage bool
	// Inject is the pod's sidecar.istio.io/inject label, else annotation;
	// InjectSet says whether either is set.
	Inject    string
	InjectSet bool
	// RevisionLabel is the pod's istio.io/rev label; RevisionLabelSet says
	// whether it is set.
	RevisionLabel    string
	RevisionLabelSet bool
	// Labels are all the pod's labels, for the configuration's
	// neverInjectSelector and alwaysInjectSelector.
	Labels Labels
	// Terminating: the pod has a deletion timestamp.
	Terminating bool
	// Finished: the pod Succeeded or Failed. The controller never sees
	// finished pods (its watch selects the others); the status command
	// reads the phase.
	Finished bool
	// excluded is the traffic.remora.io/excludedServiceAddresses record:
	// the Services the pod excludes from the capture and their addresses
	// at injection; the zero handle when it excludes none. Pods of one
	// workload share it.
	excluded unique.Handle[string]
}

// ExcludedServices returns the pod's traffic.remora.io/excludedServiceAddresses
// record (inject.FormatExcludedServices), or "" when it excludes no Service.
func (p *PodInfo) ExcludedServices() string {
	if p.excluded == (unique.Handle[string]{}) {
		return ""
	}
	return p.excluded.Value()
}

// Owner is a pod's controller reference, as the classification uses it.
type Owner struct {
	APIVersion, Kind, Name string
	UID                    types.UID
}

// Controller returns the pod's controller and true, or false for a bare pod.
func (p *PodInfo) Controller() (Owner, bool) {
	if p.owner == (unique.Handle[Owner]{}) {
		return Owner{}, false
	}
	return p.owner.Value(), true
}

// Injected reports whether the pod carries the status annotation.
func (p *PodInfo) Injected() bool { return p.Revision != "" }

// PodInfoFromMeta builds the PodInfo of a pod from its metadata, or returns
// nil when the pod carries no sidecar.istio.io/status annotation (it was
// not injected, and the controller keeps nothing of it).
func PodInfoFromMeta(m *metav1.ObjectMeta) *PodInfo {
	status, ok := m.Annotations[inject.AnnotationStatus]
	if !ok {
		return nil
	}
	p := &PodInfo{
		Namespace:   intern(m.Namespace),
		Name:        m.Name,
		UID:         m.UID,
		Revision:    intern(statusRevision(status)),
		Hash:        intern(m.Annotations[inject.AnnotationConfigHash]),
		ProxyImage:  intern(m.Annotations[inject.AnnotationInjectedImage]),
		Labels:      labelsOf(m.Labels),
		Terminating: m.DeletionTimestamp != nil,
	}
	_, p.OwnImage = m.Annotations[inject.AnnotationProxyImage]
	if v := m.Annotations[inject.AnnotationExcludedServiceAddresses]; v != "" {
		p.excluded = unique.Make(v)
	}
	if v, ok := m.Labels[inject.LabelInject]; ok {
		p.Inject, p.InjectSet = intern(v), true
	} else if v, ok := m.Annotations[inject.AnnotationInject]; ok {
		p.Inject, p.InjectSet = intern(v), true
	}
	if v, ok := m.Labels[inject.LabelRevision]; ok {
		p.RevisionLabel, p.RevisionLabelSet = intern(v), true
	}
	if ref := metav1.GetControllerOfNoCopy(m); ref != nil {
		p.owner = unique.Make(Owner{
			APIVersion: ref.APIVersion, Kind: ref.Kind, Name: ref.Name, UID: ref.UID,
		})
	}
	return p
}

// PodInfoFromPod builds the PodInfo of a whole pod: as PodInfoFromMeta,
// with the phase, and the istio-proxy container's image when the pod
// predates the remora.io/proxy-image annotation.
func PodInfoFromPod(pod *corev1.Pod) *PodInfo {
	p := PodInfoFromMeta(&pod.ObjectMeta)
	if p == nil {
		return nil
	}
	if p.ProxyImage == "" {
		p.ProxyImage = intern(ProxyImage(pod))
	}
	p.Finished = pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	return p
}

// statusRevision returns the revision recorded in a sidecar.istio.io/status
// annotation. A status that does not parse was still written by an
// injector: it is taken as the default revision's.
func statusRevision(status string) string {
	var st struct {
		Revision string `json:"revision"`
	}
	if err := json.Unmarshal([]byte(status), &st); err != nil || st.Revision == "" {
		return config.DefaultRevision
	}
	return st.Revision
}

// intern returns the canonical copy of s: pods that share a value share its
// bytes.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// Labels is a pod's label set in a compact, interned form ("k1=v1,k2=v2",
// sorted by key: neither keys nor values may contain '=' or ','). It
// implements k8s.io/apimachinery/pkg/labels.Labels for selectors.
type Labels string

// labelsOf returns the interned compact form of a label map.
func labelsOf(m map[string]string) Labels {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	n := 0
	for k, v := range m {
		keys = append(keys, k)
		n += len(k) + len(v) + 2
	}
	slices.Sort(keys)
	var b strings.Builder
	b.Grow(n)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(m[k])
	}
	return Labels(intern(b.String()))
}

// Has reports whether the label is set.
func (l Labels) Has(key string) bool {
	_, ok := l.Lookup(key)
	return ok
}

// Get returns the label's value, or "".
func (l Labels) Get(key string) string {
	v, _ := l.Lookup(key)
	return v
}

// Lookup returns the label's value and whether it is set.
func (l Labels) Lookup(key string) (string, bool) {
	s := string(l)
	for s != "" {
		pair, rest, _ := strings.Cut(s, ",")
		k, v, _ := strings.Cut(pair, "=")
		if k == key {
			return v, true
		}
		s = rest
	}
	return "", false
}
