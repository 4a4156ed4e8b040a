package realpods_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/test/e2e/node"
)

// holdProxy is the per-pod proxy configuration that makes a classic sidecar
// hold the application until it is ready.
const holdProxy = `{"holdApplicationUntilProxyStarts": true}`

// TestJobs is scenario 3: a daily data-erasure CronJob and a Job, injected,
// reach their database through the proxy and complete (succeeded: 1), with
// native sidecars (the kubelet stops the sidecar when the job's container
// exits) and in classic mode, where the job must tell the proxy to exit when
// its work is done (POST 127.0.0.1:15020/quitquitquit; the test app does it
// with QUIT_PROXY=true). The CronJob's Job is made from its template with
// `kubectl create job --from=cronjob/...`, as an operator would run it by
// hand, so the test need not wait for the schedule. The control: a classic
// Job that does not call quitquitquit finishes its work but never completes.
func TestJobs(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	ns := namespace(t, "jobs", true)
	mysql := startMySQL(t, ns)
	db := net.JoinHostPort(mysql.Status.PodIP, fmt.Sprint(mysqlPort))

	classic := fast(annotationNative, "false", annotationProxyConfig, holdProxy)
	for _, j := range []*batchv1.Job{
		newJob(ns, "erase-native", db, nil, false),
		newJob(ns, "erase-classic", db, classic, true),
		newJob(ns, "erase-classic-noquit", db, classic, false),
	} {
		create(t, j)
	}
	for _, cj := range []*batchv1.CronJob{
		newCronJob(newJob(ns, "data-erasure", db, nil, false)),
		newCronJob(newJob(ns, "data-erasure-classic", db, classic, true)),
	} {
		create(t, cj)
		if out, err := c.Kubectl(ctx, "create", "job", "-n", ns, "--from=cronjob/"+cj.Name, cj.Name+"-manual"); err != nil {
			t.Fatal(err)
		} else {
			t.Logf("%s", strings.TrimSpace(out))
		}
	}

	for _, tc := range []struct {
		job     string
		native  bool
		cronJob string
	}{
		{"erase-native", true, ""},
		{"erase-classic", false, ""},
		{"data-erasure-manual", true, "data-erasure"},
		{"data-erasure-classic-manual", false, "data-erasure-classic"},
	} {
		t.Run(tc.job, func(t *testing.T) {
			job, err := waitJob(ctx, ns, tc.job, podTimeout)
			if err != nil {
				t.Fatal(err)
			}
			if job.Status.Succeeded != 1 {
				t.Fatalf("job %s: succeeded %d, want 1", tc.job, job.Status.Succeeded)
			}
			if tc.cronJob != "" {
				if ref := metav1.GetControllerOf(job); ref == nil || ref.Kind != "CronJob" || ref.Name != tc.cronJob {
					t.Errorf("job %s is not owned by CronJob %s: %v", tc.job, tc.cronJob, job.OwnerReferences)
				}
			}
			pod := jobPod(t, ns, tc.job)
			requireInjected(t, pod, tc.native)
			if pod.Status.Phase != corev1.PodSucceeded {
				t.Errorf("pod %s phase %s, want Succeeded", pod.Name, pod.Status.Phase)
			}
			for _, name := range []string{"istio-proxy", "erase"} {
				s := status(pod, name)
				if s == nil || s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 {
					t.Errorf("pod %s container %s did not exit 0: %+v", pod.Name, name, s)
				}
			}
			// The job reached its database through the proxy.
			if l := logLine(t, ns, pod.Name, "istio-proxy", "conn outbound orig="+db+" "); l == "" {
				t.Errorf("the proxy of %s did not forward the job's connection to %s", pod.Name, db)
			}
			if l := logLine(t, ns, pod.Name, "erase", "job ok target="+db); l == "" {
				t.Errorf("the job did not reach %s", db)
			}
			quit := logLine(t, ns, pod.Name, "erase", "quitquitquit: status 200")
			if !tc.native && quit == "" {
				t.Errorf("the classic job did not stop its proxy with /quitquitquit")
			}
			if !tc.native {
				if l := logLine(t, ns, pod.Name, "istio-proxy", "POST /quitquitquit, exiting"); l == "" {
					t.Errorf("the classic proxy did not exit on /quitquitquit")
				}
			}
			s := status(pod, "erase")
			t.Logf("job %s complete; pod %s ran %s..%s", tc.job, pod.Name,
				s.State.Terminated.StartedAt.Format("15:04:05"), s.State.Terminated.FinishedAt.Format("15:04:05"))
		})
	}

	t.Run("classic job without quitquitquit never completes", func(t *testing.T) {
		const name = "erase-classic-noquit"
		var pod *corev1.Pod
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, podTimeout, true, func(ctx context.Context) (bool, error) {
			var pods corev1.PodList
			if err := c.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{batchv1.JobNameLabel: name}); err != nil || len(pods.Items) == 0 {
				return false, nil //nolint:nilerr // not created yet
			}
			pod = &pods.Items[0]
			s := status(pod, "erase")
			return s != nil && s.State.Terminated != nil, nil
		})
		if err != nil {
			t.Fatalf("the job's work did not finish: %v", err)
		}
		done := status(pod, "erase").State.Terminated
		if done.ExitCode != 0 {
			t.Fatalf("the job's container exited %d", done.ExitCode)
		}
		// The kubelet computes the phase with the container statuses: in the very status that
		// reports the work done, the pod is still Running, held by its proxy. Then wait until the
		// Job controller has seen that status (it counts the pod no longer ready) and check that it
		// still counts the pod active, not succeeded: nothing else will make the pod finish.
		if ps := status(pod, "istio-proxy"); pod.Status.Phase != corev1.PodRunning || ps == nil || ps.State.Running == nil {
			t.Fatalf("the work is done but the pod is not held Running by its proxy: %s", describe(pod))
		}
		var job batchv1.Job
		err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, podTimeout, true, func(ctx context.Context) (bool, error) {
			if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &job); err != nil {
				return false, err
			}
			return job.Status.Ready != nil && *job.Status.Ready == 0 && job.Status.Active == 1, nil
		})
		if err != nil {
			t.Fatalf("the Job controller never saw the pod's work done (status %+v): %v", job.Status, err)
		}
		pod = jobPod(t, ns, name)
		if ps := status(pod, "istio-proxy"); job.Status.Succeeded != 0 || pod.Status.Phase != corev1.PodRunning || ps == nil || ps.State.Running == nil {
			t.Fatalf("want the pod kept Running by its proxy; job succeeded %d, pod %s: %s", job.Status.Succeeded, pod.Status.Phase, describe(pod))
		}
		t.Logf("work done at %s; %s later the pod is still Running (istio-proxy running) and the Job not complete",
			done.FinishedAt.Format("15:04:05"), time.Since(done.FinishedAt.Time).Round(time.Second))
	})
}

// newJob returns a Job running `testapp job 2` against target (the
// database), its pods annotated; quit adds QUIT_PROXY=true.
func newJob(ns, name, target string, annotations map[string]string, quit bool) *batchv1.Job {
	env := []corev1.EnvVar{{Name: "TARGET", Value: target}}
	if quit {
		env = append(env, corev1.EnvVar{Name: "QUIT_PROXY", Value: "true"})
	}
	if annotations == nil {
		annotations = fast()
	}
	spec := podSpec(corev1.Container{
		Name: "erase", Image: node.AppImage, ImagePullPolicy: corev1.PullNever,
		Args: []string{"job", "2"}, Env: env,
	})
	spec.RestartPolicy = corev1.RestartPolicyNever
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Annotations: annotations},
				Spec:       spec,
			},
		},
	}
}

// newCronJob wraps the job's spec in a daily CronJob (03:00), suspended so
// that only the Jobs the test makes from it run.
func newCronJob(j *batchv1.Job) *batchv1.CronJob {
	return &batchv1.CronJob{
		ObjectMeta: j.ObjectMeta,
		Spec: batchv1.CronJobSpec{
			Schedule:          "0 3 * * *",
			Suspend:           ptr.To(true),
			ConcurrencyPolicy: batchv1.ForbidConcurrent,
			JobTemplate:       batchv1.JobTemplateSpec{Spec: j.Spec},
		},
	}
}

// waitJob waits for the Job's Complete condition; Failed ends the wait.
func waitJob(ctx context.Context, ns, name string, timeout time.Duration) (*batchv1.Job, error) {
	var job batchv1.Job
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := suite.cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &job); err != nil {
			return false, nil //nolint:nilerr // retry until the timeout
		}
		for _, cond := range job.Status.Conditions {
			if cond.Status != corev1.ConditionTrue {
				continue
			}
			switch cond.Type {
			case batchv1.JobComplete:
				return true, nil
			case batchv1.JobFailed:
				return false, fmt.Errorf("job failed: %s: %s", cond.Reason, cond.Message)
			}
		}
		return false, nil
	})
	if err != nil {
		var pods corev1.PodList
		_ = suite.cluster.Client.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{batchv1.JobNameLabel: name})
		var states []string
		for i := range pods.Items {
			states = append(states, pods.Items[i].Name+" "+describe(&pods.Items[i]))
		}
		return &job, fmt.Errorf("job %s/%s: %w (succeeded %d, failed %d; pods: %s)", ns, name, err, job.Status.Succeeded, job.Status.Failed, strings.Join(states, "; "))
	}
	return &job, nil
}

// jobPod returns the Job's only pod.
func jobPod(t *testing.T, ns, job string) *corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := suite.cluster.Client.List(t.Context(), &pods, client.InNamespace(ns), client.MatchingLabels{batchv1.JobNameLabel: job}); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 {
		t.Fatalf("job %s has %d pods, want 1", job, len(pods.Items))
	}
	return &pods.Items[0]
}
