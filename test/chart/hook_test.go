package chart_test

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// hook decodes the only hook object of a kind.
func hook[T any](t *testing.T, m *manifests, kind string) *T {
	t.Helper()
	var objs []object
	for _, o := range m.hooks {
		if o.u.GetKind() == kind {
			objs = append(objs, o)
		}
	}
	if len(objs) != 1 {
		t.Fatalf("%d %s hooks rendered, want 1", len(objs), kind)
	}
	return decode[T](t, objs[0])
}

// TestUninstallHook: helm uninstall runs a post-delete Job that waits for the injector's pods and
// deletes exactly the run-time objects of the mode (the leader election Lease, the certificate
// Secrets), under a ServiceAccount of its own that may do only that. The install journey
// (test/e2e/install, step 7) runs it on a real cluster and finds nothing left.
func TestUninstallHook(t *testing.T) {
	t.Parallel()
	const lease = "remora-injector-leader"
	for _, tc := range []struct {
		name    string
		args    []string
		leases  []string
		secrets []string
	}{
		{"cert-manager, own CA", nil, []string{lease}, []string{"remora-tls", "remora-ca"}},
		{"cert-manager, user's issuer", []string{"--set", "certManager.issuerRef.name=corp-ca", "--set", "certManager.issuerRef.kind=ClusterIssuer"},
			[]string{lease}, []string{"remora-tls"}},
		{"self-managed", []string{"--set", "certManager.enabled=false"}, []string{lease}, []string{"remora-self-managed-tls"}},
		{"no leader election", []string{"--set", "leaderElection.enabled=false"}, nil, []string{"remora-tls", "remora-ca"}},
		{"no upgrade controller", []string{"--set", "upgradeController.enabled=false"}, nil, []string{"remora-tls", "remora-ca"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, tc.args...)
			for _, o := range m.hooks {
				a := o.u.GetAnnotations()
				if a["helm.sh/hook"] != "post-delete" || a["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded" {
					t.Errorf("%s/%s: hook annotations %v", o.u.GetKind(), o.u.GetName(), a)
				}
				if o.u.GetNamespace() != releaseNS {
					t.Errorf("%s/%s in namespace %q", o.u.GetKind(), o.u.GetName(), o.u.GetNamespace())
				}
			}
			if n := len(m.hooks); n != 4 {
				t.Errorf("%d hook objects, want ServiceAccount, Role, RoleBinding, Job", n)
			}
			job := hook[batchv1.Job](t, m, "Job")
			sa := hook[corev1.ServiceAccount](t, m, "ServiceAccount")
			role := hook[rbacv1.Role](t, m, "Role")
			binding := hook[rbacv1.RoleBinding](t, m, "RoleBinding")
			// The hook's objects exist before the Job that uses them.
			for _, o := range m.hooks {
				if want := map[bool]string{true: "0", false: "-1"}[o.u.GetKind() == "Job"]; o.u.GetAnnotations()["helm.sh/hook-weight"] != want {
					t.Errorf("%s hook weight %q, want %q", o.u.GetKind(), o.u.GetAnnotations()["helm.sh/hook-weight"], want)
				}
			}

			// Its own ServiceAccount, bound to its own Role only; the injector's is untouched.
			spec := job.Spec.Template.Spec
			injector := one[appsv1.Deployment](t, m, "Deployment")
			if spec.ServiceAccountName != sa.Name || sa.Name == injector.Spec.Template.Spec.ServiceAccountName {
				t.Errorf("Job runs as %q, hook ServiceAccount %q, injector's %q", spec.ServiceAccountName, sa.Name, injector.Spec.Template.Spec.ServiceAccountName)
			}
			if binding.RoleRef.Kind != "Role" || binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 ||
				binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != releaseNS {
				t.Errorf("RoleBinding %+v does not bind the hook's Role to the hook's ServiceAccount only", binding)
			}
			var got []string
			for _, r := range role.Rules {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						if len(r.ResourceNames) == 0 {
							got = append(got, v+" "+res)
						}
						for _, n := range r.ResourceNames {
							got = append(got, v+" "+res+"/"+n)
						}
					}
				}
			}
			want := []string{"list pods"}
			for _, l := range tc.leases {
				want = append(want, "delete leases/"+l)
			}
			for _, s := range tc.secrets {
				want = append(want, "delete secrets/"+s)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("hook Role grants %v, want exactly %v", got, want)
			}

			// The Job deletes what its Role allows, after the injector's pods are gone, and its own pod is
			// never taken for the injector's (selector) nor injected.
			c := spec.Containers[0]
			if c.Image != injector.Spec.Template.Spec.Containers[0].Image || c.Args[0] != "cleanup" {
				t.Errorf("container %s %v, want the injector image running cleanup", c.Image, c.Args)
			}
			var argLeases, argSecrets []string
			var waitFor string
			for _, a := range c.Args[1:] {
				k, v, _ := strings.Cut(a, "=")
				switch k {
				case "--lease":
					argLeases = append(argLeases, v)
				case "--secret":
					argSecrets = append(argSecrets, v)
				case "--wait-for-pods":
					waitFor = v
				}
			}
			if !slices.Equal(argLeases, tc.leases) || !slices.Equal(argSecrets, tc.secrets) {
				t.Errorf("cleanup deletes leases %v secrets %v, want %v %v", argLeases, argSecrets, tc.leases, tc.secrets)
			}
			sel, err := labels.Parse(waitFor)
			if err != nil {
				t.Fatalf("--wait-for-pods=%q: %v", waitFor, err)
			}
			if !sel.Matches(labels.Set(injector.Spec.Template.Labels)) || sel.Matches(labels.Set(job.Spec.Template.Labels)) {
				t.Errorf("--wait-for-pods=%q must select the injector's pods %v and not the hook's %v", waitFor, injector.Spec.Template.Labels, job.Spec.Template.Labels)
			}
			if selects(t, injector.Spec.Selector, job.Spec.Template.Labels) {
				t.Errorf("the Deployment's selector %v selects the hook's pod", injector.Spec.Selector)
			}
			if job.Spec.Template.Labels["sidecar.istio.io/inject"] != "false" {
				t.Errorf("hook pod labels %v lack sidecar.istio.io/inject=false", job.Spec.Template.Labels)
			}
			sc := c.SecurityContext
			if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("hook container is not locked down like the injector's: %+v, resources %+v", sc, c.Resources)
			}
			if spec.RestartPolicy != corev1.RestartPolicyNever || job.Spec.ActiveDeadlineSeconds == nil {
				t.Errorf("Job restartPolicy %q, activeDeadlineSeconds %v", spec.RestartPolicy, job.Spec.ActiveDeadlineSeconds)
			}
		})
	}

	t.Run("extraEnv reaches the hook", func(t *testing.T) {
		t.Parallel()
		m := render(t, "--set", "extraEnv[0].name=HTTPS_PROXY", "--set", "extraEnv[0].value=http://proxy:3128")
		env := hook[batchv1.Job](t, m, "Job").Spec.Template.Spec.Containers[0].Env
		if len(env) != 1 || env[0].Name != "HTTPS_PROXY" || env[0].Value != "http://proxy:3128" {
			t.Errorf("hook env %+v, want extraEnv", env)
		}
	})

	t.Run("rbac.create=false renders no hook", func(t *testing.T) {
		t.Parallel()
		if m := render(t, "--set", "rbac.create=false"); len(m.hooks) != 0 {
			t.Errorf("%d hook objects rendered without RBAC", len(m.hooks))
		}
	})
}
