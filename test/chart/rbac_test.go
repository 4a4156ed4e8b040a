package chart_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

const (
	rbacTableBegin = "<!-- BEGIN RBAC TABLE -->"
	rbacTableEnd   = "<!-- END RBAC TABLE -->"
	// metricsReaderScope holds the rules of the ClusterRole for scrapers, which the injector never has.
	metricsReaderScope = "metrics-reader"
)

// features are the chart values that decide which RBAC rules exist.
type features struct {
	certManager, upgrade, leader, restarts bool
	// events is workloadEvents.enabled.
	events bool
	// insecureMetrics is metrics.secure=false.
	insecureMetrics bool
	// excludeServices is excludeServices.enabled.
	excludeServices bool
	// restartNamespaces is restartOutdated.namespaces.
	restartNamespaces []string
}

func (f features) String() string {
	var parts []string
	add := func(on bool, name string) {
		if on {
			parts = append(parts, name)
		} else {
			parts = append(parts, "no-"+name)
		}
	}
	add(f.certManager, "certmanager")
	add(f.upgrade, "upgrade")
	add(f.leader, "leader")
	add(f.restarts, "restarts")
	add(f.events, "events")
	add(!f.insecureMetrics, "secure-metrics")
	add(f.excludeServices, "exclude-services")
	if len(f.restartNamespaces) > 0 {
		parts = append(parts, "in-"+strings.Join(f.restartNamespaces, "+"))
	}
	return strings.Join(parts, ",")
}

// args are the helm --set arguments of f.
func (f features) args() []string {
	args := []string{
		"--set", fmt.Sprintf("certManager.enabled=%v", f.certManager),
		"--set", fmt.Sprintf("upgradeController.enabled=%v", f.upgrade),
		"--set", fmt.Sprintf("leaderElection.enabled=%v", f.leader),
		"--set", fmt.Sprintf("restartOutdated.enabled=%v", f.restarts),
		"--set", fmt.Sprintf("metrics.secure=%v", !f.insecureMetrics),
		"--set", fmt.Sprintf("workloadEvents.enabled=%v", f.events),
		"--set", fmt.Sprintf("excludeServices.enabled=%v", f.excludeServices),
	}
	if len(f.restartNamespaces) > 0 {
		args = append(args, "--set", "restartOutdated.namespaces={"+strings.Join(f.restartNamespaces, ",")+"}")
	}
	return args
}

// allFeatureCombinations is every combination of the features.
func allFeatureCombinations() []features {
	var out []features
	for _, cm := range []bool{true, false} {
		for _, up := range []bool{true, false} {
			for _, le := range []bool{true, false} {
				for _, rs := range []bool{true, false} {
					for _, nss := range [][]string{nil, {"shop", "billing"}} {
						for _, insecure := range []bool{false, true} {
							for _, ev := range []bool{true, false} {
								for _, svc := range []bool{false, true} {
									out = append(out, features{certManager: cm, upgrade: up, leader: le, restarts: rs, restartNamespaces: nss,
										insecureMetrics: insecure, events: ev, excludeServices: svc})
								}
							}
						}
					}
				}
			}
		}
	}
	return out
}

// conditions are the "when" column's vocabulary.
var conditions = map[string]func(features) bool{
	"always":                      func(features) bool { return true },
	"`upgradeController.enabled`": func(f features) bool { return f.upgrade },
	"`upgradeController.enabled and leaderElection.enabled`":  func(f features) bool { return f.upgrade && f.leader },
	"`upgradeController.enabled and restartOutdated.enabled`": func(f features) bool { return f.upgrade && f.restarts },
	"`certManager.enabled=false`":                             func(f features) bool { return !f.certManager },
	"`workloadEvents.enabled`":                                func(f features) bool { return f.events },
	"`upgradeController.enabled or workloadEvents.enabled`":   func(f features) bool { return f.upgrade || f.events },
	"`metrics.secure`":                                        func(f features) bool { return !f.insecureMetrics },
	"`excludeServices.enabled`":                               func(f features) bool { return f.excludeServices },
}

// permission is one verb on one resource (and name) in one place: "cluster" or "ns:NAMESPACE".
type permission struct {
	scope, group, resource, name, verb string
}

func (p permission) String() string {
	s := p.scope + " " + p.verb + " " + p.group + "/" + p.resource
	if p.name != "" {
		s += "/" + p.name
	}
	return s
}

// tableRule is one row of the chart README's RBAC table.
type tableRule struct {
	when, where              string
	groups, resources, names []string
	verbs                    []string
	why                      string
	line                     int
}

// readRBACTable parses the RBAC table of charts/remora/README.md.
func readRBACTable(t *testing.T) []tableRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	begin, end := strings.Index(text, rbacTableBegin), strings.Index(text, rbacTableEnd)
	if begin < 0 || end < begin {
		t.Fatalf("README.md lacks the %s ... %s markers", rbacTableBegin, rbacTableEnd)
	}
	list := func(cell string) []string {
		var out []string
		for _, v := range strings.Split(cell, ",") {
			v = strings.Trim(strings.TrimSpace(v), "`")
			if v == `""` {
				v = ""
			} else if v == "" {
				continue
			}
			out = append(out, strings.ReplaceAll(v, "<fullname>", releaseName))
		}
		return out
	}
	var rules []tableRule
	lines := strings.Split(text[begin:end], "\n")
	for i, l := range lines[1:] {
		if !strings.HasPrefix(l, "|") || strings.HasPrefix(l, "| when") || strings.HasPrefix(l, "| ---") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		if len(cells) != 7 {
			t.Fatalf("RBAC table row %d has %d cells, want 7: %s", i+1, len(cells), l)
		}
		for j := range cells {
			cells[j] = strings.TrimSpace(cells[j])
		}
		r := tableRule{when: cells[0], where: cells[1], groups: list(cells[2]), resources: list(cells[3]), names: list(cells[4]),
			verbs: list(cells[5]), why: cells[6], line: i + 1}
		if _, ok := conditions[r.when]; !ok {
			t.Fatalf("RBAC table row %d: unknown condition %q", r.line, r.when)
		}
		if !slices.Contains([]string{"cluster", "release namespace", "restart", metricsReaderScope}, r.where) {
			t.Fatalf("RBAC table row %d: unknown place %q", r.line, r.where)
		}
		if len(r.groups) != 1 || len(r.resources) == 0 || len(r.verbs) == 0 || len(r.why) < 20 {
			t.Fatalf("RBAC table row %d is incomplete (one API group, resources, verbs and why): %s", r.line, l)
		}
		rules = append(rules, r)
	}
	if len(rules) == 0 {
		t.Fatal("the RBAC table has no rows")
	}
	return rules
}

// expectedPermissions are the README table's rules that apply to f.
func expectedPermissions(rules []tableRule, f features) map[permission]string {
	out := map[permission]string{}
	for _, r := range rules {
		if !conditions[r.when](f) {
			continue
		}
		var scopes []string
		switch r.where {
		case "cluster", metricsReaderScope:
			scopes = []string{r.where}
		case "release namespace":
			scopes = []string{"ns:" + releaseNS}
		case "restart":
			scopes = []string{"cluster"}
			if len(f.restartNamespaces) > 0 {
				scopes = nil
				for _, ns := range f.restartNamespaces {
					scopes = append(scopes, "ns:"+ns)
				}
			}
		}
		names := r.names
		if len(names) == 0 {
			names = []string{""}
		}
		for _, s := range scopes {
			for _, res := range r.resources {
				for _, n := range names {
					for _, v := range r.verbs {
						out[permission{s, r.groups[0], res, n, v}] = fmt.Sprintf("README RBAC row %d (%s)", r.line, r.when)
					}
				}
			}
		}
	}
	return out
}

// renderedPermissions resolves every binding of the rendered chart to the ServiceAccount's
// permissions. It fails the test on a binding to anyone else, a binding to a role the chart does
// not render, and a role that nothing binds.
func renderedPermissions(t *testing.T, m *manifests) map[permission]bool {
	t.Helper()
	sa := one[corev1.ServiceAccount](t, m, "ServiceAccount")
	clusterRoles := map[string][]rbacv1.PolicyRule{}
	var reader []rbacv1.PolicyRule
	readerName := releaseName + "-metrics-reader"
	for _, o := range m.all("ClusterRole") {
		if o.u.GetName() == readerName {
			reader = decode[rbacv1.ClusterRole](t, o).Rules
			continue
		}
		clusterRoles[o.u.GetName()] = decode[rbacv1.ClusterRole](t, o).Rules
	}
	roles := map[string][]rbacv1.PolicyRule{} // namespace/name
	for _, o := range m.all("Role") {
		r := decode[rbacv1.Role](t, o)
		roles[r.Namespace+"/"+r.Name] = r.Rules
	}
	bound := map[string]bool{}
	out := map[permission]bool{}
	add := func(scope string, rules []rbacv1.PolicyRule) {
		for _, r := range rules {
			if len(r.NonResourceURLs) > 0 {
				t.Errorf("%s: non-resource rule %+v granted to the injector", scope, r)
			}
			names := r.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, n := range names {
						for _, v := range r.Verbs {
							if g == "*" || res == "*" || v == "*" {
								t.Errorf("wildcard permission %s %s/%s", v, g, res)
							}
							out[permission{scope, g, res, n, v}] = true
						}
					}
				}
			}
		}
	}
	checkSubjects := func(kind, name string, subjects []rbacv1.Subject) {
		if len(subjects) != 1 || subjects[0].Kind != "ServiceAccount" || subjects[0].Name != sa.Name || subjects[0].Namespace != releaseNS {
			t.Errorf("%s %s: subjects %+v, want the ServiceAccount %s/%s only", kind, name, subjects, releaseNS, sa.Name)
		}
	}
	for _, r := range reader {
		if len(r.Resources) > 0 || len(r.APIGroups) > 0 || len(r.ResourceNames) > 0 {
			t.Errorf("%s has a resource rule %+v", readerName, r)
		}
		for _, u := range r.NonResourceURLs {
			for _, v := range r.Verbs {
				out[permission{metricsReaderScope, "-", u, "", v}] = true
			}
		}
	}
	for _, o := range m.all("ClusterRoleBinding") {
		b := decode[rbacv1.ClusterRoleBinding](t, o)
		if b.RoleRef.Name == readerName {
			continue // bound to metrics.readers, never to the injector (TestMetricsReaders)
		}
		checkSubjects("ClusterRoleBinding", b.Name, b.Subjects)
		rules, ok := clusterRoles[b.RoleRef.Name]
		if b.RoleRef.Kind != "ClusterRole" || !ok {
			t.Errorf("ClusterRoleBinding %s binds %s %s, which the chart does not render", b.Name, b.RoleRef.Kind, b.RoleRef.Name)
		}
		bound["ClusterRole/"+b.RoleRef.Name] = true
		add("cluster", rules)
	}
	for _, o := range m.all("RoleBinding") {
		b := decode[rbacv1.RoleBinding](t, o)
		checkSubjects("RoleBinding", b.Namespace+"/"+b.Name, b.Subjects)
		var rules []rbacv1.PolicyRule
		var ok bool
		switch b.RoleRef.Kind {
		case "ClusterRole":
			if b.RoleRef.Name == readerName {
				t.Errorf("RoleBinding %s/%s binds %s", b.Namespace, b.Name, readerName)
			}
			rules, ok = clusterRoles[b.RoleRef.Name]
			bound["ClusterRole/"+b.RoleRef.Name] = true
		case "Role":
			rules, ok = roles[b.Namespace+"/"+b.RoleRef.Name]
			bound["Role/"+b.Namespace+"/"+b.RoleRef.Name] = true
		}
		if !ok {
			t.Errorf("RoleBinding %s/%s binds %s %s, which the chart does not render", b.Namespace, b.Name, b.RoleRef.Kind, b.RoleRef.Name)
		}
		add("ns:"+b.Namespace, rules)
	}
	for name, rules := range clusterRoles {
		if !bound["ClusterRole/"+name] {
			t.Errorf("ClusterRole %s (%d rules) is not bound", name, len(rules))
		}
	}
	for name := range roles {
		if !bound["Role/"+name] {
			t.Errorf("Role %s is not bound", name)
		}
	}
	return out
}

// TestRBAC renders every combination of the features and checks that the ServiceAccount's
// permissions are exactly the rows of the chart README's RBAC table whose condition holds: no rule
// without a feature that uses it, and the README describing every rule.
func TestRBAC(t *testing.T) {
	t.Parallel()
	rules := readRBACTable(t)
	used := map[int]int{}
	for _, f := range allFeatureCombinations() {
		want := expectedPermissions(rules, f)
		for _, r := range rules {
			if conditions[r.when](f) {
				used[r.line]++
			}
		}
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			got := renderedPermissions(t, render(t, f.args()...))
			for p := range got {
				if _, ok := want[p]; !ok {
					t.Errorf("rendered but not in the README's RBAC table for these features: %s", p)
				}
			}
			for p, row := range want {
				if !got[p] {
					t.Errorf("%s: %s not rendered", row, p)
				}
			}
		})
	}
	for _, r := range rules {
		if used[r.line] == 0 {
			t.Errorf("README RBAC row %d (%s) applies to no combination", r.line, r.when)
		}
	}

	t.Run("rbac.create=false renders no RBAC", func(t *testing.T) {
		t.Parallel()
		m := render(t, "--set", "rbac.create=false", "--set", "certManager.enabled=false", "--set", "restartOutdated.enabled=true")
		for _, kind := range []string{"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
			if n := len(m.all(kind)); n != 0 {
				t.Errorf("%d %s rendered", n, kind)
			}
		}
	})
}

// TestMetricsReaders: metrics.readers are bound to the metrics-reader ClusterRole, and only they.
func TestMetricsReaders(t *testing.T) {
	t.Parallel()
	m := render(t, "--set", "metrics.readers[0].kind=ServiceAccount", "--set", "metrics.readers[0].name=prometheus-k8s",
		"--set", "metrics.readers[0].namespace=monitoring")
	var found bool
	for _, o := range m.all("ClusterRoleBinding") {
		b := decode[rbacv1.ClusterRoleBinding](t, o)
		if b.RoleRef.Name != releaseName+"-metrics-reader" {
			continue
		}
		found = true
		want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus-k8s", Namespace: "monitoring"}}
		if !slices.Equal(b.Subjects, want) {
			t.Errorf("metrics-reader subjects %+v, want %+v", b.Subjects, want)
		}
	}
	if !found {
		t.Error("no ClusterRoleBinding of the metrics-reader ClusterRole for metrics.readers")
	}
	for _, o := range render(t).all("ClusterRoleBinding") {
		if o.u.GetName() == releaseName+"-metrics-reader" {
			t.Error("a metrics-reader ClusterRoleBinding without metrics.readers")
		}
	}
}
