package realpods_test

import (
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/test/e2e/framework"
)

// TestOptedOut is scenario 6: in a namespace labelled for injection, a pod
// that opts out with sidecar.istio.io/inject: "false" runs exactly as
// written. As a label, the webhook's objectSelector keeps the API server
// from calling the webhook at all; as an annotation (Istio's older form),
// the webhook is called and the engine skips the pod.
func TestOptedOut(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	ns := namespace(t, "optout", true)

	byLabel := newPod(ns, "optout-label", nil)
	byLabel.Labels[annotationInject] = "false"
	byAnnotation := newPod(ns, "optout-annotation", map[string]string{annotationInject: "false"})
	for _, tc := range []struct {
		pod *corev1.Pod
		// webhookCalls is how many opt-out skips the webhook counts.
		webhookCalls float64
	}{{byLabel, 0}, {byAnnotation, 1}} {
		pod := tc.pod
		sent := pod.DeepCopy()
		t.Run(pod.Name, func(t *testing.T) {
			before := optOutSkips(t)
			create(t, pod)
			if got := optOutSkips(t) - before; got != tc.webhookCalls {
				t.Errorf("the webhook counted %v opt-out skips for this pod, want %v", got, tc.webhookCalls)
			}
			got := waitReady(t, ns, pod.Name)

			if (len(got.Annotations) != 0 || len(sent.Annotations) != 0) && !reflect.DeepEqual(got.Annotations, sent.Annotations) {
				t.Errorf("annotations changed: sent %v, stored %v", sent.Annotations, got.Annotations)
			}
			if !reflect.DeepEqual(got.Labels, sent.Labels) {
				t.Errorf("labels changed: sent %v, stored %v", sent.Labels, got.Labels)
			}
			if len(got.Spec.InitContainers) != 0 || len(got.Spec.Containers) != 1 {
				t.Fatalf("containers added: init %v, containers %v", containerNames(got.Spec.InitContainers), containerNames(got.Spec.Containers))
			}
			app, want := got.Spec.Containers[0], sent.Spec.Containers[0]
			// The API server's defaults aside (port protocols, the token
			// mount, probe timings), the container is what was sent.
			if app.Image != want.Image || !reflect.DeepEqual(app.Args, want.Args) || !reflect.DeepEqual(ports(app), ports(want)) ||
				len(app.Env) != 0 || app.LivenessProbe != nil || app.StartupProbe != nil ||
				app.ReadinessProbe == nil || app.ReadinessProbe.HTTPGet == nil ||
				app.ReadinessProbe.HTTPGet.Path != want.ReadinessProbe.HTTPGet.Path || app.ReadinessProbe.HTTPGet.Port != want.ReadinessProbe.HTTPGet.Port {
				t.Errorf("the app container changed:\nsent   %+v\nstored %+v", want, app)
			}
			for _, v := range got.Spec.Volumes {
				if strings.HasPrefix(v.Name, "istio-") {
					t.Errorf("volume %s added", v.Name)
				}
			}

			// Nothing captures its traffic.
			rules, err := c.NetnsExec(ctx, got, "iptables-save", "-t", "nat")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(rules, "ISTIO") {
				t.Errorf("the pod's nat table has Istio rules:\n%s", rules)
			}
			body := get(t, http.MethodGet, got.Status.PodIP, appHTTPPort, "/whoami")
			if !strings.Contains(body, `"peer":"`+net.JoinHostPort(c.NodeIP.String(), "")) {
				t.Errorf("the app should see the host's own connection: %s", body)
			}
			if l := logLine(t, ns, got.Name, "app", "app start: sidecar ready=false"); l == "" {
				t.Errorf("the app found a sidecar")
			}
		})
	}
}

// optOutSkips returns the injector's count of pods skipped because they
// opted out (remora_injections_total{result="skipped",reason="pod-opt-out"}).
func optOutSkips(t *testing.T) float64 {
	t.Helper()
	text, err := suite.injector.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	samples, err := framework.ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	return framework.Sum(samples, "remora_injections_total", map[string]string{"result": "skipped", "reason": "pod-opt-out"})
}

// ports lists a container's ports as name:number.
func ports(c corev1.Container) []string {
	var out []string
	for _, p := range c.Ports {
		out = append(out, fmt.Sprintf("%s:%d", p.Name, p.ContainerPort))
	}
	return out
}
