package manifest

import (
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/pkg/inject"
)

// mark is a PodFunc that labels every pod, to see which ones were visited.
func mark(pod *corev1.Pod, wl inject.Workload) (*corev1.Pod, bool, string, string, error) {
	out := pod.DeepCopy()
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	out.Labels["visited"] = wl.Kind
	return out, true, "marked", "marked", nil
}

func TestProcess(t *testing.T) {
	in := `# leading comment
apiVersion: v1
kind: Service
metadata: {name: svc}
spec: {ports: [{port: 80}]}
---
---
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: d, namespace: ns1}
  spec:
    selector: {matchLabels: {app: d}}
    template:
      metadata: {labels: {app: d}}
      spec: {containers: [{name: c, image: i}]}
- apiVersion: batch/v1
  kind: CronJob
  metadata: {name: cj}
  spec:
    schedule: "0 3 * * *"
    jobTemplate:
      spec:
        template:
          spec: {restartPolicy: Never, containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: [{name: c, image: i}]}
`
	out, reports, err := Process(strings.NewReader(in), mark)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 4 {
		t.Fatalf("want 4 reports, got %d: %v", len(reports), reports)
	}
	want := []string{"Service/svc: skipped", "Deployment/ns1/d: injected", "CronJob/cj: injected", "Pod/p: injected"}
	for i, w := range want {
		if !strings.HasPrefix(reports[i].String(), w) {
			t.Errorf("report %d = %q, want prefix %q", i, reports[i], w)
		}
	}
	s := string(out)
	for _, w := range []string{"visited: Deployment", "visited: CronJob", "kind: List", "kind: Service"} {
		if !strings.Contains(s, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	if strings.Count(s, "\n---\n") != 2 {
		t.Errorf("want 3 documents in the output:\n%s", s)
	}
}

func TestProcessRefusesBrokenYAML(t *testing.T) {
	_, _, err := Process(strings.NewReader("kind: Pod\nmetadata: [\n"), mark)
	if err == nil {
		t.Fatal("broken YAML accepted")
	}
}

// TestCronJobInjectsThePodTemplate proves that a CronJob's injected labels
// and annotations land on the pod template (spec.jobTemplate.spec.template),
// which Job pods are created from, and not on the jobTemplate's own
// metadata, which never reaches a pod.
func TestCronJobInjectsThePodTemplate(t *testing.T) {
	in := `apiVersion: batch/v1
kind: CronJob
metadata: {name: cj}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: Never, containers: [{name: c, image: i}]}
`
	out, _, err := Process(strings.NewReader(in), mark)
	if err != nil {
		t.Fatal(err)
	}
	var cj batchv1.CronJob
	if err := yaml.Unmarshal(out, &cj); err != nil {
		t.Fatal(err)
	}
	if got := cj.Spec.JobTemplate.Spec.Template.Labels["visited"]; got != "CronJob" {
		t.Errorf("pod template label visited = %q, want CronJob:\n%s", got, out)
	}
	if len(cj.Spec.JobTemplate.Labels) != 0 || len(cj.Spec.JobTemplate.Annotations) != 0 {
		t.Errorf("jobTemplate metadata changed, it never reaches a pod:\n%s", out)
	}
}
