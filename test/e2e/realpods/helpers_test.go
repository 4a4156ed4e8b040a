package realpods_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/node"
)

// Annotations the tests set or read (Istio's names, and Remora's own).
const (
	annotationStatus          = "sidecar.istio.io/status"
	annotationHash            = "remora.io/injection-hash"
	annotationInject          = "sidecar.istio.io/inject"
	annotationNative          = "sidecar.istio.io/nativeSidecar"
	annotationProxyConfig     = "proxy.istio.io/config"
	annotationExcludeOutbound = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
	annotationRestartOutdated = "remora.io/restart-outdated"
	annotationRestartedFor    = "remora.io/restarted-for"
	annotationExcludeServices = "traffic.remora.io/excludeOutboundServices"
	annotationExcludedRecord  = "traffic.remora.io/excludedServiceAddresses"
	// annotationReadinessPeriod shortens the proxy's readiness probe period
	// (15 s by default) on the functional tests' pods, so that a pod's Ready
	// condition follows its containers within a second. The latency
	// measurement leaves it at the default.
	annotationReadinessPeriod = "readiness.status.sidecar.istio.io/periodSeconds"
)

// Ports of the test app (test/images/testapp server) and the MySQL stand-in.
const (
	appHTTPPort = 8080
	appTCPPort  = 9090
	appGRPCPort = 9091
	mysqlPort   = 3306
)

// podTimeout bounds waiting for a pod to be Ready: a few seconds normally,
// but a pod created soon after the kubelet started can wait up to a probe
// period longer (docs/testing-real-pods.md), and the machine has 2 cores.
const podTimeout = 2 * time.Minute

// namespace creates a namespace, labelled for injection if inject, and
// deletes it when the test ends, waiting until its pods are gone so that
// the next test starts on a quiet node.
func namespace(t *testing.T, name string, inject bool) string {
	t.Helper()
	c := cluster(t)
	labels := map[string]string{}
	if inject {
		labels["istio-injection"] = "enabled"
	}
	if err := c.CreateNamespace(t.Context(), name, labels); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteNamespace(t, name) })
	return name
}

func deleteNamespace(t *testing.T, name string) {
	c := suite.cluster
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Client.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting namespace %s: %v", name, err)
		return
	}
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		err := c.Client.Get(ctx, client.ObjectKeyFromObject(ns), ns)
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		var pods corev1.PodList
		_ = c.Client.List(context.Background(), &pods, client.InNamespace(name))
		t.Logf("namespace %s not gone after %s (%d pods left); the node's Stop removes them", name, time.Since(start).Round(time.Millisecond), len(pods.Items))
		return
	}
	t.Logf("namespace %s deleted in %s", name, time.Since(start).Round(time.Millisecond))
}

// appContainer is the test app's server: HTTP 8080 (/health toggled by POST
// /fail and /recover), TCP 9090, gRPC health 9091, with an HTTP readiness
// probe every second. Its timeout and failure threshold leave room for a
// loaded 2-core machine: a probe that times out once must not turn a pod
// NotReady in the middle of a rollout.
func appContainer() corev1.Container {
	return corev1.Container{
		Name:            "app",
		Image:           node.AppImage,
		ImagePullPolicy: corev1.PullNever,
		Args:            []string{"server"},
		Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: appHTTPPort},
			{Name: "tcp", ContainerPort: appTCPPort},
			{Name: "grpc", ContainerPort: appGRPCPort},
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(appHTTPPort)}},
			PeriodSeconds: 1, TimeoutSeconds: 3, FailureThreshold: 3,
		},
	}
}

// podSpec is a pod spec around containers, quick to terminate.
func podSpec(containers ...corev1.Container) corev1.PodSpec {
	return corev1.PodSpec{
		Containers:                    containers,
		TerminationGracePeriodSeconds: ptr.To[int64](5),
	}
}

// fast returns pod annotations: the short proxy readiness period, plus
// key, value pairs.
func fast(kv ...string) map[string]string {
	a := map[string]string{annotationReadinessPeriod: "1"}
	for i := 0; i+1 < len(kv); i += 2 {
		a[kv[i]] = kv[i+1]
	}
	return a
}

// newPod returns a pod of the app container with the annotations.
func newPod(ns, name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}, Annotations: annotations},
		Spec:       podSpec(appContainer()),
	}
}

// newDeployment returns a Deployment of the app whose pods carry the
// annotations.
func newDeployment(ns, name string, replicas int32, annotations map[string]string) *appsv1.Deployment {
	pod := newPod(ns, name, annotations)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels, Annotations: pod.Annotations},
				Spec:       pod.Spec,
			},
		},
	}
}

// create creates obj and fails the test on error.
func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := suite.cluster.Client.Create(t.Context(), obj); err != nil {
		t.Fatalf("creating %T %s/%s: %v", obj, obj.GetNamespace(), obj.GetName(), err)
	}
}

// waitReady waits for the pod to be Ready and fails the test otherwise.
func waitReady(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	pod, err := suite.cluster.WaitPodReady(t.Context(), ns, name, podTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// waitPods waits until the pods matching the label app=app, not
// terminating, are exactly n, all Ready, and done (if set) accepts them.
func waitPods(ctx context.Context, ns, app string, n int, timeout time.Duration, done func([]corev1.Pod) bool) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	var last string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var list corev1.PodList
		if err := suite.cluster.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{"app": app}); err != nil {
			return false, nil //nolint:nilerr // transient: retry until the timeout
		}
		pods = pods[:0]
		ready := 0
		var states []string
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			if err := cannotStart(&p); err != nil {
				return false, err
			}
			pods = append(pods, p)
			if testenv.PodReady(&p) {
				ready++
			}
			states = append(states, p.Name+": "+node.DescribeStatus(&p))
		}
		last = fmt.Sprintf("%d pods, %d Ready: %s", len(pods), ready, strings.Join(states, "; "))
		return len(pods) == n && ready == n && (done == nil || done(pods)), nil
	})
	if err != nil {
		return pods, fmt.Errorf("pods app=%s in %s: %w (last: %s)", app, ns, err, last)
	}
	return pods, nil
}

// cannotStart reports a container the kubelet will never start.
func cannotStart(p *corev1.Pod) error {
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if w := s.State.Waiting; w != nil && (w.Reason == "ErrImageNeverPull" || w.Reason == "CreateContainerConfigError" ||
			w.Reason == "CreateContainerError" || w.Reason == "InvalidImageName") {
			return fmt.Errorf("pod %s container %s: %s: %s", p.Name, s.Name, w.Reason, w.Message)
		}
	}
	return nil
}

// describe summarises a pod's phase and containers, for messages.
func describe(p *corev1.Pod) string {
	return string(p.Status.Phase) + ": " + node.DescribeStatus(p)
}

// status returns the status of the named container (init or regular).
func status(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if s.Name == name {
			return &s
		}
	}
	return nil
}

// containerNames lists the names of the containers.
func containerNames(cs []corev1.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

// envValue returns an environment variable's literal value.
func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// requireInjected checks that the webhook injected pod: istio-init first,
// then istio-proxy as a native sidecar (restartPolicy Always, before the app)
// or, classic, as a regular container; the status annotation and the hash
// are set, the images are the local ones.
func requireInjected(t *testing.T, pod *corev1.Pod, native bool) {
	t.Helper()
	if pod.Annotations[annotationStatus] == "" || pod.Annotations[annotationHash] == "" {
		t.Fatalf("pod %s not injected: annotations %v", pod.Name, pod.Annotations)
	}
	inits := containerNames(pod.Spec.InitContainers)
	if len(inits) == 0 || inits[0] != "istio-init" {
		t.Fatalf("pod %s: init containers %v, want istio-init first", pod.Name, inits)
	}
	if got := pod.Spec.InitContainers[0].Image; got != node.InjectorImage {
		t.Errorf("pod %s: istio-init image %s, want %s", pod.Name, got, node.InjectorImage)
	}
	p := testenv.ProxyContainer(pod)
	if p == nil {
		t.Fatalf("pod %s has no istio-proxy", pod.Name)
	}
	if p.ImagePullPolicy != corev1.PullNever {
		t.Errorf("pod %s: istio-proxy imagePullPolicy %s, want Never", pod.Name, p.ImagePullPolicy)
	}
	if native {
		if len(inits) < 2 || inits[1] != "istio-proxy" || p.RestartPolicy == nil || *p.RestartPolicy != corev1.ContainerRestartPolicyAlways || p.StartupProbe == nil {
			t.Fatalf("pod %s: want istio-proxy as a native sidecar (second init container, restartPolicy Always, startup probe); init containers %v", pod.Name, inits)
		}
		return
	}
	if slices.Contains(inits, "istio-proxy") {
		t.Fatalf("pod %s: want istio-proxy as a regular container (classic); init containers %v", pod.Name, inits)
	}
}

// get does a request from the host to a pod over the bridge and requires a
// 200.
func get(t *testing.T, method, ip string, port int, path string) string {
	t.Helper()
	url := "http://" + net.JoinHostPort(ip, fmt.Sprint(port)) + path
	code, body, err := node.HTTP(t.Context(), method, url)
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s %s: %d %v %s", method, url, code, err, body)
	}
	return body
}

// callResult is what the test app's /call reports: "ok target=... local=...
// reply=..." (or "fail ...").
type callResult struct {
	OK     bool
	Target string
	Local  string // the app's own end of the connection
	Reply  string
	Line   string
}

var callLine = regexp.MustCompile(`^(ok|fail) target=(\S+) local=(\S*) (?:reply|err)=(".*")$`)

// call makes the app in the pod at ip open a TCP connection to target
// itself (GET /call), and returns what it saw. The request reaches the
// app through the pod's inbound capture.
func call(t *testing.T, ip, target string) callResult {
	t.Helper()
	url := "http://" + net.JoinHostPort(ip, fmt.Sprint(appHTTPPort)) + "/call?target=" + target
	_, body, err := node.HTTP(t.Context(), http.MethodGet, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	line := strings.TrimSpace(body)
	m := callLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("GET %s: unexpected answer %q", url, line)
	}
	var reply string
	if err := json.Unmarshal([]byte(m[4]), &reply); err != nil {
		reply = m[4]
	}
	return callResult{OK: m[1] == "ok", Target: m[2], Local: m[3], Reply: reply, Line: line}
}

// startMySQL runs the MySQL stand-in in ns, opted out of injection (a
// database outside the mesh: it sees its clients' own addresses), and
// returns it Ready.
func startMySQL(t *testing.T, ns string) *corev1.Pod {
	t.Helper()
	return startMySQLAs(t, ns, "mysql")
}

// startMySQLAs is startMySQL for a pod named name, labelled app=name.
func startMySQLAs(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name, annotationInject: "false"}},
		Spec: podSpec(corev1.Container{
			Name: "mysql", Image: node.AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"mysql"},
			Ports: []corev1.ContainerPort{{Name: "mysql", ContainerPort: mysqlPort}, {Name: "http", ContainerPort: appHTTPPort}},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(mysqlPort)}},
				PeriodSeconds: 1,
			},
		}),
	}
	create(t, pod)
	pod = waitReady(t, ns, pod.Name)
	if testenv.ProxyContainer(pod) != nil {
		t.Fatalf("the MySQL stand-in was injected: %v", containerNames(pod.Spec.InitContainers))
	}
	return pod
}

// mysqlPeer is a connection the MySQL stand-in accepted.
type mysqlPeer struct {
	Peer  string `json:"peer"`
	Local string `json:"local"`
}

// mysqlPeers returns the peers the MySQL stand-in at ip recorded.
func mysqlPeers(t *testing.T, ip string) []mysqlPeer {
	t.Helper()
	var peers []mysqlPeer
	if err := json.Unmarshal([]byte(get(t, http.MethodGet, ip, appHTTPPort, "/conns")), &peers); err != nil {
		t.Fatal(err)
	}
	return peers
}

// proxyConns returns what the stand-in proxy of the pod at ip recorded.
func proxyConns(t *testing.T, ip string) []node.ProxyConn {
	t.Helper()
	conns, err := node.ProxyConns(t.Context(), ip)
	if err != nil {
		t.Fatal(err)
	}
	return conns
}

// conns returns the recorded connections in direction to orig.
func conns(all []node.ProxyConn, direction, orig string) []node.ProxyConn {
	var out []node.ProxyConn
	for _, c := range all {
		if c.Direction == direction && c.Orig == orig {
			out = append(out, c)
		}
	}
	return out
}

// logLine returns the first line of a container log containing substr.
func logLine(t *testing.T, ns, pod, container, substr string) string {
	t.Helper()
	logs, err := suite.cluster.Logs(t.Context(), ns, pod, container, false)
	if err != nil {
		t.Fatalf("logs of %s/%s: %v", pod, container, err)
	}
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// logTime parses the timestamp the test images put first on a log line.
func logTime(line string) (time.Time, error) {
	ts, _, _ := strings.Cut(line, " ")
	return time.Parse("2006-01-02T15:04:05.000Z", ts)
}
