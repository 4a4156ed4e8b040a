package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/node"
)

// TestSidecarPodOnRealNode runs the layout our injector produces (istio-init
// running `injector istio-iptables`, the stand-in proxy as a native sidecar
// gated on readiness, the app with rewritten probes), written out as a
// plain pod (no webhook), on a real kubelet, and checks that traffic
// capture, sidecar ordering, the rewritten probes and the preStop hook work,
// and that the host is left as it was found.
func TestSidecarPodOnRealNode(t *testing.T) {
	node.Require(t, node.Options{})
	before, err := node.SnapshotHost("")
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the node's own cleanup, so it runs after Stop.
	t.Cleanup(func() {
		after, err := node.SnapshotHost("")
		if err != nil {
			t.Fatal(err)
		}
		if d := before.Diff(after); d != "" {
			t.Errorf("the host changed across the node's life:\n%s", d)
		} else {
			t.Logf("host state identical before Start and after Stop (%d sections)", len(after.Sections))
		}
	})

	c := node.StartForTest(t, node.Options{})
	t.Logf("node %s Ready; %s", c.NodeName, c.Timings)
	ctx := t.Context()

	t.Run("kubelet leaves the host alone while it runs", func(t *testing.T) {
		during, err := node.SnapshotHost("")
		if err != nil {
			t.Fatal(err)
		}
		for _, section := range []string{"sysctl", "iptables", "ip6tables", "nft", "rules4"} {
			if d := (node.HostState{Sections: map[string][]string{section: before.Sections[section]}}).Diff(
				node.HostState{Sections: map[string][]string{section: during.Sections[section]}}); d != "" {
				t.Errorf("while the node runs:\n%s", d)
			}
		}
	})

	const ns = "smoke"
	if err := c.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	pod := loadPod(t, "testdata/sidecar-pod.yaml")
	created := time.Now()
	if err := c.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod, err = c.WaitPodReady(ctx, ns, pod.Name, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	readyAfter := time.Since(created)
	t.Logf("pod %s/%s Ready %s after create, IP %s; %s", ns, pod.Name, readyAfter.Round(time.Millisecond), pod.Status.PodIP, timeline(pod, created))
	podIP := pod.Status.PodIP

	t.Run("istio-init programmed the capture rules", func(t *testing.T) {
		st := containerStatus(pod, "istio-init")
		if st == nil || st.State.Terminated == nil || st.State.Terminated.ExitCode != 0 {
			t.Fatalf("istio-init did not exit 0: %+v", st)
		}
		rules, err := c.NetnsExec(ctx, pod, "iptables-save", "-t", "nat")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"-A PREROUTING -p tcp -j ISTIO_INBOUND",
			"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
			"-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
			"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
		} {
			if !strings.Contains(rules, want+"\n") {
				t.Errorf("the pod's nat table lacks %q:\n%s", want, rules)
			}
		}
		// The bridge subnet only: no default route out of the pod.
		routes, err := c.NetnsExec(ctx, pod, "ip", "-4", "route", "show")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(routes, "default") {
			t.Errorf("the pod has a default route:\n%s", routes)
		}
	})

	t.Run("the app started after the proxy was ready", func(t *testing.T) {
		proxy, app := containerStatus(pod, "istio-proxy"), containerStatus(pod, "app")
		if proxy == nil || proxy.State.Running == nil || app == nil || app.State.Running == nil {
			t.Fatalf("containers not running: %s", node.DescribeStatus(pod))
		}
		if app.State.Running.StartedAt.Before(&proxy.State.Running.StartedAt) {
			t.Errorf("app started at %s, before istio-proxy at %s", app.State.Running.StartedAt, proxy.State.Running.StartedAt)
		}
		logs, err := c.Logs(ctx, ns, pod.Name, "app", false)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(logs, "sidecar ready=true") {
			t.Errorf("the app did not find the proxy ready when it started:\n%s", logs)
		}
	})

	t.Run("inbound connection goes through 15006 to the app", func(t *testing.T) {
		code, body, err := node.HTTP(ctx, http.MethodGet, "http://"+net.JoinHostPort(podIP, "8080")+"/whoami")
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /whoami: %d %v %s", code, err, body)
		}
		var who struct{ Peer, Local string }
		if err := json.Unmarshal([]byte(body), &who); err != nil {
			t.Fatal(err)
		}
		// The proxy forwards inbound connections from 127.0.0.6, like Envoy.
		if !strings.HasPrefix(who.Peer, "127.0.0.6:") {
			t.Errorf("the app saw the connection from %s, not from the proxy's 127.0.0.6", who.Peer)
		}
		conns, err := node.ProxyConns(ctx, podIP)
		if err != nil {
			t.Fatal(err)
		}
		rec := find(conns, "inbound", net.JoinHostPort(podIP, "8080"))
		if rec == nil {
			t.Fatalf("no inbound connection to %s:8080 recorded; /debug/conns: %+v", podIP, conns)
		}
		if host, _, _ := net.SplitHostPort(rec.From); host != c.NodeIP.String() {
			t.Errorf("inbound connection from %s, want the node IP %s", rec.From, c.NodeIP)
		}
		if rec.Upstream != who.Peer {
			t.Errorf("the proxy forwarded from %s but the app saw %s", rec.Upstream, who.Peer)
		}
	})

	t.Run("outbound connection goes through 15001 to its destination", func(t *testing.T) {
		ln, err := net.Listen("tcp4", net.JoinHostPort(c.NodeIP.String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = ln.Close() }()
		peers := make(chan string, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- conn.RemoteAddr().String()
			_, _ = fmt.Fprintln(conn, "hello from the host")
			_ = conn.Close()
		}()
		out, err := c.Exec(ctx, ns, pod.Name, "app", "/usr/local/bin/testapp", "client", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out, "ok ") || !strings.Contains(out, "hello from the host") {
			t.Fatalf("client: %s", out)
		}
		var peer string
		select {
		case peer = <-peers:
		case <-time.After(5 * time.Second):
			t.Fatal("the host listener saw no connection")
		}
		conns, err := node.ProxyConns(ctx, podIP)
		if err != nil {
			t.Fatal(err)
		}
		rec := find(conns, "outbound", ln.Addr().String())
		if rec == nil {
			t.Fatalf("no outbound connection to %s recorded; /debug/conns: %+v", ln.Addr(), conns)
		}
		if rec.Upstream != peer {
			t.Errorf("the host saw %s, the proxy dialed from %s", peer, rec.Upstream)
		}
		if strings.Contains(out, "local="+peer+" ") {
			t.Errorf("the host saw the client's own address %s: the connection bypassed the proxy", peer)
		}
	})

	t.Run("rewritten probes reach the app through the proxy", func(t *testing.T) {
		base := "http://" + net.JoinHostPort(podIP, "8080")
		if code, body, err := node.HTTP(ctx, http.MethodPost, base+"/fail"); err != nil || code != http.StatusOK {
			t.Fatalf("POST /fail: %d %v %s", code, err, body)
		}
		if _, err := c.WaitForPod(ctx, ns, pod.Name, 30*time.Second, func(p *corev1.Pod) (bool, error) {
			return !testenv.PodReady(p), nil
		}); err != nil {
			t.Fatalf("pod still Ready after the app's health failed: %v", err)
		}
		if code, body, err := node.HTTP(ctx, http.MethodPost, base+"/recover"); err != nil || code != http.StatusOK {
			t.Fatalf("POST /recover: %d %v %s", code, err, body)
		}
		if _, err := c.WaitPodReady(ctx, ns, pod.Name, 30*time.Second); err != nil {
			t.Fatalf("pod not Ready again after the app recovered: %v", err)
		}
	})

	t.Run("deleting the pod runs the preStop drain and ends", func(t *testing.T) {
		start := time.Now()
		if err := c.Client.Delete(ctx, pod); err != nil {
			t.Fatal(err)
		}
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Fatalf("pod not gone: %v", err)
		}
		t.Logf("pod deleted in %s", time.Since(start).Round(time.Millisecond))
		var events corev1.EventList
		if err := c.Client.List(ctx, &events, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, e := range events.Items {
			if strings.Contains(e.Reason, "Failed") || strings.Contains(e.Reason, "BackOff") {
				t.Errorf("event %s on %s: %s", e.Reason, e.InvolvedObject.FieldPath, e.Message)
			}
		}
	})
}

func loadPod(t *testing.T, path string) *corev1.Pod {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		t.Fatal(err)
	}
	return &pod
}

// timeline says when each container started (and the init container
// ended), relative to the pod's creation, to the second.
func timeline(p *corev1.Pod, created time.Time) string {
	rel := func(t metav1.Time) string { return t.Sub(created.Truncate(time.Second)).String() }
	var parts []string
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		switch {
		case s.State.Terminated != nil:
			parts = append(parts, fmt.Sprintf("%s ran %s..%s", s.Name, rel(s.State.Terminated.StartedAt), rel(s.State.Terminated.FinishedAt)))
		case s.State.Running != nil:
			parts = append(parts, fmt.Sprintf("%s started %s", s.Name, rel(s.State.Running.StartedAt)))
		}
	}
	for _, c := range p.Status.Conditions {
		parts = append(parts, fmt.Sprintf("%s %s", c.Type, rel(c.LastTransitionTime)))
	}
	return "timeline: " + strings.Join(parts, ", ")
}

func containerStatus(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if s.Name == name {
			return &s
		}
	}
	return nil
}

func find(conns []node.ProxyConn, direction, orig string) *node.ProxyConn {
	for i := range conns {
		if conns[i].Direction == direction && conns[i].Orig == orig && conns[i].Error == "" {
			return &conns[i]
		}
	}
	return nil
}
