package realpods_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/internal/testenv"
)

// readyDelay is how long the stand-in proxy reports not-ready after it
// starts (its READY_DELAY, set through proxy.istio.io/config's
// proxyMetadata, which the injector turns into the proxy's environment):
// long enough to see an application wait for it.
const readyDelay = 4 * time.Second

// TestStartOrder is scenario 2: the application starts only once the proxy
// is ready. Native sidecars (the default on this 1.37 cluster): the kubelet
// starts the app after the proxy's startup probe passed. Classic mode
// (sidecar.istio.io/nativeSidecar: "false") with
// holdApplicationUntilProxyStarts: the proxy is the first container and its
// postStart hook, `pilot-agent wait`, holds the kubelet until the proxy is
// ready. Without the hold, a classic app starts beside a proxy that is not
// ready yet (the control).
func TestStartOrder(t *testing.T) {
	cluster(t)
	ns := namespace(t, "order", true)
	metadata := `"proxyMetadata": {"READY_DELAY": "` + readyDelay.String() + `"}`
	cases := []struct {
		name        string
		annotations map[string]string
		native      bool
		held        bool
	}{
		{"native", fast(annotationProxyConfig, "{"+metadata+"}"), true, true},
		{"classic-hold", fast(annotationNative, "false",
			annotationProxyConfig, `{"holdApplicationUntilProxyStarts": true, `+metadata+"}"), false, true},
		{"classic-nohold", fast(annotationNative, "false", annotationProxyConfig, "{"+metadata+"}"), false, false},
	}
	for _, tc := range cases {
		create(t, newPod(ns, tc.name, tc.annotations))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := waitReady(t, ns, tc.name)
			requireInjected(t, pod, tc.native)
			// Istio's layout: a held classic proxy is the first container,
			// an unheld one the last.
			if !tc.native {
				names := containerNames(pod.Spec.Containers)
				if want := map[bool]int{true: 0, false: len(names) - 1}[tc.held]; names[want] != "istio-proxy" {
					t.Errorf("containers %v: want istio-proxy at position %d", names, want)
				}
			}
			proxy := testenv.ProxyContainer(pod)
			if got := envValue(proxy, "READY_DELAY"); got != readyDelay.String() {
				t.Fatalf("istio-proxy READY_DELAY=%q, want %s from proxyMetadata", got, readyDelay)
			}
			hook := proxy.Lifecycle != nil && proxy.Lifecycle.PostStart != nil && proxy.Lifecycle.PostStart.Exec != nil &&
				strings.Join(proxy.Lifecycle.PostStart.Exec.Command, " ") == "pilot-agent wait"
			if hook != (!tc.native && tc.held) {
				t.Errorf("postStart `pilot-agent wait` hook present=%v, want %v", hook, !tc.native && tc.held)
			}

			proxyStarted := logLine(t, ns, pod.Name, "istio-proxy", "pilot-agent stand-in started")
			appStarted := logLine(t, ns, pod.Name, "app", "app start: sidecar")
			t0, err0 := logTime(proxyStarted)
			t1, err1 := logTime(appStarted)
			if err0 != nil || err1 != nil {
				t.Fatalf("log times: proxy %q (%v), app %q (%v)", proxyStarted, err0, appStarted, err1)
			}
			gap := t1.Sub(t0)
			ps, as := status(pod, "istio-proxy"), status(pod, "app")
			var statusGap time.Duration
			if ps.State.Running != nil && as.State.Running != nil {
				statusGap = as.State.Running.StartedAt.Sub(ps.State.Running.StartedAt.Time)
			}
			t.Logf("%s: proxy started %s, app started %s after it (container start times: %s apart); app: %q",
				tc.name, t0.Format("15:04:05.000"), gap.Round(time.Millisecond), statusGap, strings.TrimSpace(appStarted[strings.Index(appStarted, " ")+1:]))
			if tc.held {
				if !strings.Contains(appStarted, "sidecar ready=true") {
					t.Errorf("the app did not find the proxy ready when it started: %q", appStarted)
				}
				// The proxy turns ready readyDelay after its start; its log
				// line comes a moment after that start.
				if gap < readyDelay-100*time.Millisecond {
					t.Errorf("the app started %s after the proxy, before its %s READY_DELAY", gap, readyDelay)
				}
				if statusGap < readyDelay-time.Second { // the status times are whole seconds
					t.Errorf("container start times %s apart, want at least %s", statusGap, readyDelay-time.Second)
				}
			} else {
				if !strings.Contains(appStarted, "sidecar ready=false") || gap >= readyDelay {
					t.Errorf("without the hold the app should start before the proxy is ready; it started %s after it: %q", gap, appStarted)
				}
			}
			for _, s := range []*corev1.ContainerStatus{ps, as} {
				if s.RestartCount != 0 {
					t.Errorf("%s restarted %d times", s.Name, s.RestartCount)
				}
			}
		})
	}
}
