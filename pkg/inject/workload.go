package inject

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Workload identifies a pod's owning workload.
type Workload struct {
	// APIVersion and Kind of the workload, such as apps/v1 Deployment.
	APIVersion, Kind string
	// Name of the workload.
	Name string
}

// deriveWorkload finds the workload that owns a pod: a ReplicaSet's pod
// belongs to its Deployment, a Job's to its CronJob when the name says so.
func deriveWorkload(pod *corev1.Pod) Workload {
	for _, ref := range pod.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		wl := Workload{APIVersion: ref.APIVersion, Kind: ref.Kind, Name: ref.Name}
		switch ref.Kind {
		case "ReplicaSet":
			if hash := pod.Labels["pod-template-hash"]; hash != "" && strings.HasSuffix(ref.Name, "-"+hash) {
				return Workload{APIVersion: "apps/v1", Kind: "Deployment", Name: strings.TrimSuffix(ref.Name, "-"+hash)}
			}
		case "Job":
			// CronJob-created Jobs are named <cronjob>-<scheduled time>.
			if i := strings.LastIndex(ref.Name, "-"); i > 0 && isDigits(ref.Name[i+1:]) && len(ref.Name[i+1:]) >= 8 {
				return Workload{APIVersion: "batch/v1", Kind: "CronJob", Name: ref.Name[:i]}
			}
		}
		return wl
	}
	name := pod.Name
	if name == "" {
		name = strings.TrimSuffix(pod.GenerateName, "-")
	}
	return Workload{APIVersion: "v1", Kind: "Pod", Name: name}
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// ownerURI is ISTIO_META_OWNER: kubernetes://apis/<group/version>/namespaces/<ns>/<kind plural>/<name>.
func ownerURI(wl Workload, ns string) string {
	kind := strings.ToLower(wl.Kind)
	plural := kind + "s"
	if strings.HasSuffix(kind, "s") {
		plural = kind + "es"
	}
	return "kubernetes://apis/" + wl.APIVersion + "/namespaces/" + ns + "/" + plural + "/" + wl.Name
}

func canonicalName(pod *corev1.Pod, wl Workload) string {
	for _, k := range []string{LabelCanonicalName, "app.kubernetes.io/name", "app"} {
		if v := pod.Labels[k]; v != "" {
			return v
		}
	}
	return truncateLabel(wl.Name)
}

func canonicalRevision(pod *corev1.Pod) string {
	for _, k := range []string{LabelCanonicalRevision, "app.kubernetes.io/version", "version"} {
		if v := pod.Labels[k]; v != "" {
			return v
		}
	}
	return "latest"
}

// truncateLabel shortens a derived label value to the 63 characters a label
// value may have.
func truncateLabel(s string) string {
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.TrimRight(s, "-_.")
}

func serviceAccountName(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}
