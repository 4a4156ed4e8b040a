package upgrade

import (
	"fmt"
	"slices"
	"strings"
	"unique"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

// Kinds of the workloads pods are grouped by.
const (
	KindDeployment  = "Deployment"
	KindStatefulSet = "StatefulSet"
	KindDaemonSet   = "DaemonSet"
	KindReplicaSet  = "ReplicaSet"
	KindJob         = "Job"
	KindCronJob     = "CronJob"
	KindPod         = "Pod"
)

// Change says what differs between the configuration a pod was injected with
// and the current one.
type Change string

// The changes Evaluate reports.
const (
	// ChangeNone: the pod is up to date (printed as "-").
	ChangeNone Change = ""
	// ChangeConfig: the configuration changed but the proxy image did not
	// (or the pod chooses its own image with sidecar.istio.io/proxyImage).
	ChangeConfig Change = "config"
	// ChangeImage: the pod's istio-proxy image is not the current
	// configuration's proxy image.
	ChangeImage Change = "image"
	// ChangeServices: the configuration did not change, but a Service the
	// pod excludes from the capture by name has an address the pod does
	// not exclude (see services.go).
	ChangeServices Change = "services"
)

// rank orders changes: a workload reports its most far-reaching one.
func (c Change) rank() int {
	switch c {
	case ChangeImage:
		return 3
	case ChangeConfig:
		return 2
	case ChangeServices:
		return 1
	}
	return 0
}

// String returns the change for a table: "-" when there is none.
func (c Change) String() string {
	if c == ChangeNone {
		return "-"
	}
	return string(c)
}

// PodState is the classification of one injected pod.
type PodState string

// The pod states.
const (
	// PodUpToDate: injected with the current configuration.
	PodUpToDate PodState = "up-to-date"
	// PodOutdated: injected with another configuration (its
	// remora.io/injection-hash differs from the current Hash, or is absent)
	// and still selected for injection: recreating it refreshes the sidecar.
	PodOutdated PodState = "outdated"
	// PodUnselected: injected, but its namespace or the pod itself no
	// longer selects injection; recreating it would remove the sidecar.
	PodUnselected PodState = "unselected"
)

// Status is the state of a workload as the status table prints it.
type Status string

// The workload statuses, in the words of the status table.
const (
	StatusUpToDate     Status = "up to date"
	StatusNeedsRestart Status = "needs restart"
	StatusRestarting   Status = "restarting"
	StatusUnselected   Status = "injected but no longer selected"
)

// PodVerdict is the classification of one injected pod.
type PodVerdict struct {
	// State is up-to-date, outdated or unselected.
	State PodState
	// Change is what differs, for an outdated pod.
	Change Change
	// Reason says why an unselected pod is no longer selected.
	Reason string
}

// Considered reports whether Evaluate looks at the pod at all: it carries
// the status annotation of the given revision, and it is neither finished
// (Succeeded or Failed) nor terminating.
func Considered(pod *PodInfo, revision string) bool {
	return pod.Injected() && pod.Revision == revision && !pod.Terminating && !pod.Finished
}

// ClassifyPod classifies an injected pod against the current configuration.
// nsLabels are the labels of the pod's namespace; revision is the revision
// this injector serves (cfg.Revision()). The caller checks Considered first.
func ClassifyPod(pod *PodInfo, nsLabels map[string]string, cfg *config.Config, revision string) PodVerdict {
	if selected, reason := Selected(pod, nsLabels, cfg, revision); !selected {
		return PodVerdict{State: PodUnselected, Reason: reason}
	}
	if pod.Hash == cfg.Hash {
		return PodVerdict{State: PodUpToDate}
	}
	return PodVerdict{State: PodOutdated, Change: changeOf(pod, cfg)}
}

// changeOf says what changed for an outdated pod: the proxy image, unless
// the pod chooses its own, else the configuration. A pod whose injected
// image is unknown (watched as metadata, injected before Remora recorded
// remora.io/proxy-image) reports a configuration change.
func changeOf(pod *PodInfo, cfg *config.Config) Change {
	if pod.OwnImage {
		return ChangeConfig
	}
	if img := pod.ProxyImage; img != "" && img != cfg.Settings.ProxyImage {
		return ChangeImage
	}
	return ChangeConfig
}

// ProxyImage returns the image of the pod's istio-proxy container (a native
// sidecar in initContainers, or a regular container), or "" without one.
func ProxyImage(pod *corev1.Pod) string {
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if list[i].Name == inject.ProxyContainerName {
				return list[i].Image
			}
		}
	}
	return ""
}

// Selected reports whether an injected pod would still be injected if it
// were created now, as the engine's policy decides: the namespace's
// istio-injection or istio.io/rev label, the pod's istio.io/rev label, its
// sidecar.istio.io/inject label or annotation, and the configuration's
// selectors. When it is not, the reason says why.
func Selected(pod *PodInfo, nsLabels map[string]string, cfg *config.Config, revision string) (bool, string) {
	ns := pod.Namespace
	if slices.Contains(inject.IgnoredNamespaces, ns) {
		return false, fmt.Sprintf("namespace %q is never injected", ns)
	}
	explicit, set := pod.Inject, pod.InjectSet
	if set && explicit == "false" {
		return false, fmt.Sprintf("the pod sets %s=false", inject.AnnotationInject)
	}
	nsInject := nsLabels[inject.LabelNamespaceInject]
	nsRev, nsHasRev := nsLabels[inject.LabelRevision]
	podRev, podHasRev := pod.RevisionLabel, pod.RevisionLabelSet
	switch {
	case nsInject == "disabled":
		return false, fmt.Sprintf("namespace %q has %s=disabled", ns, inject.LabelNamespaceInject)
	case nsInject == "enabled":
		if revision != config.DefaultRevision && (!podHasRev || podRev != revision) {
			return false, fmt.Sprintf("namespace %q is enabled for the default revision, not %q", ns, revision)
		}
	case nsHasRev:
		if nsRev != revision {
			return false, fmt.Sprintf("namespace %q selects revision %q, not %q", ns, nsRev, revision)
		}
	case podHasRev:
		if podRev != revision {
			return false, fmt.Sprintf("the pod selects revision %q, not %q", podRev, revision)
		}
	case set && explicit == "true":
	case cfg.Settings.EnableNamespacesByDefault:
	default:
		return false, fmt.Sprintf("namespace %q is no longer labelled %s=enabled or %s=%s",
			ns, inject.LabelNamespaceInject, inject.LabelRevision, revision)
	}
	if set && explicit == "true" {
		return true, ""
	}
	podLabels := pod.Labels
	for _, never := range cfg.Settings.NeverInjectSelector {
		if !never.Matches(podLabels) {
			continue
		}
		for _, always := range cfg.Settings.AlwaysInjectSelector {
			if always.Matches(podLabels) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("the pod's labels match neverInjectSelector %q", never.String())
	}
	return true, ""
}

// Ref names a workload: the top-level owner of a group of pods, or the pod
// itself when it has no owner.
type Ref struct {
	Kind, Namespace, Name string
}

// String returns "Kind namespace/name".
func (r Ref) String() string { return r.Kind + " " + r.Namespace + "/" + r.Name }

// Restartable reports whether the workload kind can be rolled by a pod
// template annotation: Deployments, StatefulSets and DaemonSets.
func (r Ref) Restartable() bool {
	switch r.Kind {
	case KindDeployment, KindStatefulSet, KindDaemonSet:
		return true
	}
	return false
}

// Snapshot is the cluster state Evaluate reads. The controller fills it from
// its cache, the status command from the API server. Only the fields the
// classification uses need to be set on the objects: the controller's cache
// strips the rest.
type Snapshot struct {
	// Config is the current configuration; pods of its revision
	// (Config.Revision, which --revision sets) are considered.
	Config *config.Config
	// Namespaces are the namespaces' metadata (labels and annotations).
	Namespaces []metav1.PartialObjectMetadata
	// Pods are the injected pods; those of other revisions are ignored.
	Pods []*PodInfo
	// ReplicaSets and Jobs are their metadata, to map a pod to its
	// Deployment or CronJob.
	ReplicaSets []metav1.PartialObjectMetadata
	Jobs        []metav1.PartialObjectMetadata
	// Deployments, StatefulSets and DaemonSets are the restartable
	// workloads.
	Deployments  []appsv1.Deployment
	StatefulSets []appsv1.StatefulSet
	DaemonSets   []appsv1.DaemonSet
	// Services are the current addresses of the Services the pods exclude
	// from the capture by name (ResolveServices); nil: not compared.
	Services ServiceAddrs
}

// Report is the result of Evaluate.
type Report struct {
	// Hash is the current configuration's hash.
	Hash string
	// Revision is the revision whose pods were considered.
	Revision string
	// Workloads are the workloads with at least one injected pod, sorted
	// by namespace, kind and name.
	Workloads []WorkloadReport
	// Namespaces counts the pods per namespace, for the gauges.
	Namespaces map[string]Counts
	// Pods counts every considered pod.
	Pods Counts
	// NamespaceAnnotations are the annotations of every namespace, for the
	// restart opt-in.
	NamespaceAnnotations map[string]map[string]string
	// NamespaceUIDs are the UIDs of every namespace, for Events on them.
	NamespaceUIDs map[string]types.UID
	// Rollouts are the rollout states of every Deployment, StatefulSet and
	// DaemonSet of the snapshot, with or without injected pods: a restart
	// holds its slot until its rollout finishes even when the new pods are
	// not injected.
	Rollouts map[Ref]*Rollout
}

// Counts are numbers of injected pods.
type Counts struct {
	// Total pods considered.
	Total int
	// Outdated pods (still selected, injected with another configuration).
	Outdated int
	// Unselected pods (injected but no longer selected).
	Unselected int
	// StaleServices are the pods, outdated or not, that exclude a Service
	// whose addresses changed since they were injected.
	StaleServices int
}

// WorkloadReport is the state of one workload's injected pods.
type WorkloadReport struct {
	// Ref names the workload.
	Ref Ref
	// Object is the cached Deployment, StatefulSet or DaemonSet; nil for
	// other kinds (EventObject builds a reference for those).
	Object client.Object
	// apiVersion and uid name the workload for Events when it is not
	// cached; resolved is false when the owner chain could not be
	// resolved (a ReplicaSet or Job not in the snapshot yet).
	apiVersion string
	uid        types.UID
	resolved   bool
	// Counts are the workload's injected pods.
	Counts
	// Change is what changed for its outdated pods: image when any pod's
	// image changed, else config, else none.
	Change Change
	// UnselectedReason says why its pods are no longer selected (the first
	// pod's reason).
	UnselectedReason string
	// ChangedServices are the Services its pods exclude whose addresses
	// changed since they were injected, sorted.
	ChangedServices []inject.ServiceRef
	// RestartKey is what a restart is for (AnnotationRestartedFor): the
	// configuration hash, or, when only excluded Services changed, the hash
	// and a digest of their current addresses.
	RestartKey string
	// configOutdated counts its pods outdated by the configuration (image
	// or config), not only by Services.
	configOutdated int
	// Rollout is the rollout state of a Deployment, StatefulSet or
	// DaemonSet found in the snapshot; nil for other kinds.
	Rollout *Rollout
	// Status sums it up for the status table.
	Status Status
}

type objKey struct{ namespace, name string }

// controllerKey names a pod's controller within Evaluate.
type controllerKey struct {
	namespace string
	owner     unique.Handle[Owner]
}

// Evaluate classifies every injected pod of the snapshot and groups them by
// workload. It is pure: the same snapshot gives the same report.
func Evaluate(s *Snapshot) *Report {
	cfg := s.Config
	rev := cfg.Revision()
	rep := &Report{
		Hash:                 cfg.Hash,
		Revision:             rev,
		Namespaces:           map[string]Counts{},
		NamespaceAnnotations: make(map[string]map[string]string, len(s.Namespaces)),
		NamespaceUIDs:        make(map[string]types.UID, len(s.Namespaces)),
	}
	nsLabels := make(map[string]map[string]string, len(s.Namespaces))
	for i := range s.Namespaces {
		ns := &s.Namespaces[i]
		nsLabels[ns.Name] = ns.Labels
		rep.NamespaceAnnotations[ns.Name] = ns.Annotations
		rep.NamespaceUIDs[ns.Name] = ns.UID
	}
	replicaSets := indexMeta(s.ReplicaSets)
	jobs := indexMeta(s.Jobs)

	groups := map[Ref]*WorkloadReport{}
	byController := map[controllerKey]*WorkloadReport{}
	check := serviceCheck{current: s.Services}
	for _, pod := range s.Pods {
		if !Considered(pod, rev) {
			continue
		}
		labels, known := nsLabels[pod.Namespace]
		if !known {
			continue // the namespace is being deleted or not in the cache yet
		}
		v := ClassifyPod(pod, labels, cfg, rev)
		var stale []inject.ServiceRef
		if v.State != PodUnselected {
			stale = check.stale(pod)
			if v.State == PodUpToDate && len(stale) > 0 {
				v = PodVerdict{State: PodOutdated, Change: ChangeServices}
			}
		}
		// Pods of one controller belong to one workload: resolve it once.
		ck := controllerKey{pod.Namespace, pod.owner}
		w := byController[ck]
		if w == nil {
			owner := ownerOf(pod, replicaSets, jobs)
			if w = groups[owner.ref]; w == nil {
				w = &WorkloadReport{Ref: owner.ref, apiVersion: owner.apiVersion, uid: owner.uid, resolved: owner.resolved}
				groups[owner.ref] = w
			}
			if pod.owner != (unique.Handle[Owner]{}) {
				byController[ck] = w
			}
		}
		nc := rep.Namespaces[pod.Namespace]
		for _, c := range []*Counts{&w.Counts, &nc, &rep.Pods} {
			c.add(v, len(stale) > 0)
		}
		rep.Namespaces[pod.Namespace] = nc
		w.add(v, stale)
	}

	rep.Rollouts = make(map[Ref]*Rollout, len(s.Deployments)+len(s.StatefulSets)+len(s.DaemonSets))
	for i := range s.Deployments {
		d := &s.Deployments[i]
		rep.Rollouts[Ref{KindDeployment, d.Namespace, d.Name}] = RolloutOf(d)
	}
	for i := range s.StatefulSets {
		st := &s.StatefulSets[i]
		rep.Rollouts[Ref{KindStatefulSet, st.Namespace, st.Name}] = RolloutOf(st)
	}
	for i := range s.DaemonSets {
		ds := &s.DaemonSets[i]
		rep.Rollouts[Ref{KindDaemonSet, ds.Namespace, ds.Name}] = RolloutOf(ds)
	}

	rep.Workloads = make([]WorkloadReport, 0, len(groups))
	for ref, w := range groups {
		if ro, ok := rep.Rollouts[ref]; ok {
			w.Object = ro.Object
			w.Rollout = ro
		}
		w.Status = statusOf(w)
		w.RestartKey = rep.Hash
		if w.configOutdated == 0 && w.Unselected == 0 && len(w.ChangedServices) > 0 {
			w.RestartKey = servicesRestartKey(rep.Hash, w.ChangedServices, s.Services)
		}
		rep.Workloads = append(rep.Workloads, *w)
	}
	slices.SortFunc(rep.Workloads, func(a, b WorkloadReport) int {
		return compareRefs(a.Ref, b.Ref)
	})
	return rep
}

// add counts a pod of verdict v; stale says whether it excludes a Service
// whose addresses changed.
func (c *Counts) add(v PodVerdict, stale bool) {
	c.Total++
	switch v.State {
	case PodOutdated:
		c.Outdated++
	case PodUnselected:
		c.Unselected++
	}
	if stale {
		c.StaleServices++
	}
}

// add records what a pod of verdict v says about its workload: the change
// that reaches furthest, why it is no longer selected, the Services whose
// addresses changed under it.
func (w *WorkloadReport) add(v PodVerdict, stale []inject.ServiceRef) {
	switch v.State {
	case PodOutdated:
		if v.Change.rank() > w.Change.rank() {
			w.Change = v.Change
		}
		if v.Change != ChangeServices {
			w.configOutdated++
		}
	case PodUnselected:
		if w.UnselectedReason == "" {
			w.UnselectedReason = v.Reason
		}
	}
	for _, ref := range stale {
		if i, found := slices.BinarySearchFunc(w.ChangedServices, ref, inject.ServiceRef.Compare); !found {
			w.ChangedServices = slices.Insert(w.ChangedServices, i, ref)
		}
	}
}

// restartFor is what a restart of the workload is for: its RestartKey, or
// hash for a report built without one.
func (w *WorkloadReport) restartFor(hash string) string {
	if w.RestartKey != "" {
		return w.RestartKey
	}
	return hash
}

// EventObject returns the object to report Events on: the cached workload,
// else a reference built from the pods' metadata; nil when the owner chain
// could not be resolved.
func (w *WorkloadReport) EventObject() client.Object {
	switch {
	case w.Object != nil:
		return w.Object
	case !w.resolved:
		return nil
	}
	return reference(w.apiVersion, w.Ref.Kind, w.Ref.Namespace, w.Ref.Name, w.uid)
}

func compareRefs(a, b Ref) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	if c := strings.Compare(a.Kind, b.Kind); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

func statusOf(w *WorkloadReport) Status {
	switch {
	case w.Unselected > 0:
		return StatusUnselected
	case w.Outdated == 0:
		return StatusUpToDate
	case w.Rollout != nil && !w.Rollout.Finished:
		return StatusRestarting
	default:
		return StatusNeedsRestart
	}
}

func indexMeta(items []metav1.PartialObjectMetadata) map[objKey]*metav1.PartialObjectMetadata {
	m := make(map[objKey]*metav1.PartialObjectMetadata, len(items))
	for i := range items {
		m[objKey{items[i].Namespace, items[i].Name}] = &items[i]
	}
	return m
}

// workloadOf is the workload a pod belongs to, and what an Event regarding
// it names.
type workloadOf struct {
	ref        Ref
	apiVersion string
	uid        types.UID
	// resolved is false when a ReplicaSet or Job is not known yet.
	resolved bool
}

// ownerOf returns the workload a pod belongs to: its controller, followed
// from a ReplicaSet to its Deployment and from a Job to its CronJob. It
// allocates nothing: Evaluate runs it for every pod.
func ownerOf(pod *PodInfo, replicaSets, jobs map[objKey]*metav1.PartialObjectMetadata) workloadOf {
	owner, ok := pod.Controller()
	if !ok {
		return workloadOf{Ref{KindPod, pod.Namespace, pod.Name}, "v1", pod.UID, true}
	}
	self := workloadOf{Ref{owner.Kind, pod.Namespace, owner.Name}, owner.APIVersion, owner.UID, true}
	var parents map[objKey]*metav1.PartialObjectMetadata
	switch {
	case owner.Kind == KindReplicaSet && strings.HasPrefix(owner.APIVersion, appsv1.GroupName+"/"):
		parents = replicaSets
	case owner.Kind == KindJob && strings.HasPrefix(owner.APIVersion, batchv1.GroupName+"/"):
		parents = jobs
	default:
		// StatefulSet, DaemonSet or any other controller: the owner is
		// the workload. A restartable kind is replaced by the cached
		// object in Evaluate.
		return self
	}
	parent, ok := parents[objKey{pod.Namespace, owner.Name}]
	if !ok {
		self.resolved = false
		return self
	}
	grand := metav1.GetControllerOfNoCopy(parent)
	if grand == nil {
		return self
	}
	// Usually a Deployment or a CronJob; a ReplicaSet or Job owned by
	// something else (an operator) reports that owner.
	return workloadOf{Ref{grand.Kind, pod.Namespace, grand.Name}, grand.APIVersion, grand.UID, true}
}

// reference builds an object that Event recorders can refer to.
func reference(apiVersion, kind, namespace, name string, uid types.UID) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: apiVersion, Kind: kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: uid},
	}
}
