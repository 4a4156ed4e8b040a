package realpods_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/node"
)

// TestRewrittenProbes is scenario 4: the app's HTTP, TCP and gRPC probes,
// rewritten to the proxy's status port (/app-health/app/...), work: the pod
// becomes Ready through them, an app that starts failing its readiness check
// (POST /fail) turns the pod NotReady, and Ready again when it recovers,
// while the TCP liveness probe keeps passing (no restart). Each kind is the
// readiness probe of one pod or the liveness or startup probe of another.
func TestRewrittenProbes(t *testing.T) {
	c := cluster(t)
	ctx := t.Context()
	ns := namespace(t, "probes", true)

	httpProbe := corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(appHTTPPort)}}
	tcpProbe := corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(appTCPPort)}}
	grpcProbe := corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: appGRPCPort}}
	cases := []struct {
		name                       string
		readiness, liveness, start corev1.ProbeHandler
		kinds                      map[string]string // rewritten path -> original kind
	}{
		{"probe-http", httpProbe, tcpProbe, grpcProbe,
			map[string]string{"readyz": "httpGet", "livez": "tcpSocket", "startupz": "grpc"}},
		{"probe-grpc", grpcProbe, tcpProbe, httpProbe,
			map[string]string{"readyz": "grpc", "livez": "tcpSocket", "startupz": "httpGet"}},
	}
	for _, tc := range cases {
		pod := newPod(ns, tc.name, fast())
		app := &pod.Spec.Containers[0]
		// Readiness reacts to the first failure; the timeouts leave room
		// for a loaded machine, so that only the app's answer counts.
		app.ReadinessProbe = &corev1.Probe{ProbeHandler: tc.readiness, PeriodSeconds: 1, TimeoutSeconds: 3, FailureThreshold: 1}
		app.LivenessProbe = &corev1.Probe{ProbeHandler: tc.liveness, PeriodSeconds: 2, TimeoutSeconds: 3, FailureThreshold: 5}
		app.StartupProbe = &corev1.Probe{ProbeHandler: tc.start, PeriodSeconds: 1, TimeoutSeconds: 3, FailureThreshold: 60}
		create(t, pod)
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := waitReady(t, ns, tc.name)
			requireInjected(t, pod, true)
			ip := pod.Status.PodIP

			// Rewritten: every probe targets the status port; the originals
			// travel to the proxy in ISTIO_KUBE_APP_PROBERS.
			app := pod.Spec.Containers[0]
			for suffix, probe := range map[string]*corev1.Probe{"readyz": app.ReadinessProbe, "livez": app.LivenessProbe, "startupz": app.StartupProbe} {
				want := "/app-health/app/" + suffix
				if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || probe.HTTPGet.Port.IntValue() != node.ProxyStatusPort {
					t.Errorf("%s probe not rewritten to :%d%s: %+v", suffix, node.ProxyStatusPort, want, probe)
				}
			}
			var probers map[string]map[string]json.RawMessage
			if err := json.Unmarshal([]byte(envValue(testenv.ProxyContainer(pod), "ISTIO_KUBE_APP_PROBERS")), &probers); err != nil {
				t.Fatalf("ISTIO_KUBE_APP_PROBERS: %v", err)
			}
			for suffix, kind := range tc.kinds {
				if _, ok := probers["/app-health/app/"+suffix][kind]; !ok {
					t.Errorf("ISTIO_KUBE_APP_PROBERS[/app-health/app/%s] = %s, want a %s probe", suffix, probers["/app-health/app/"+suffix], kind)
				}
			}
			// The status port answers the rewritten probes from outside, as
			// the kubelet asks them.
			for _, suffix := range []string{"readyz", "livez", "startupz"} {
				get(t, http.MethodGet, ip, node.ProxyStatusPort, "/app-health/app/"+suffix)
			}

			failed := time.Now()
			get(t, http.MethodPost, ip, appHTTPPort, "/fail")
			if _, err := c.WaitForPod(ctx, ns, tc.name, 30*time.Second, func(p *corev1.Pod) (bool, error) { return !testenv.PodReady(p), nil }); err != nil {
				t.Fatalf("pod still Ready after the app's %s readiness check failed: %v", tc.kinds["readyz"], err)
			}
			notReady := time.Since(failed)
			url := "http://" + net.JoinHostPort(ip, fmt.Sprint(node.ProxyStatusPort)) + "/app-health/app/readyz"
			if code, body, err := node.HTTP(ctx, http.MethodGet, url); err != nil || code != http.StatusServiceUnavailable {
				t.Errorf("GET %s while failing: %d %v %s, want 503", url, code, err, body)
			}

			recovered := time.Now()
			get(t, http.MethodPost, ip, appHTTPPort, "/recover")
			pod, err := c.WaitPodReady(ctx, ns, tc.name, 30*time.Second)
			if err != nil {
				t.Fatalf("pod not Ready again after the app recovered: %v", err)
			}
			t.Logf("%s readiness: NotReady %s after POST /fail, Ready %s after POST /recover",
				tc.kinds["readyz"], notReady.Round(time.Millisecond), time.Since(recovered).Round(time.Millisecond))
			// The TCP liveness probe kept passing throughout.
			if s := status(pod, "app"); s == nil || s.RestartCount != 0 {
				t.Errorf("the app restarted: %s", describe(pod))
			}
		})
	}
}
