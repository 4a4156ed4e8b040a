package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/remora-mesh/remora/internal/testenv"
)

// Ports of the stand-in proxy (Istio's defaults).
const (
	ProxyOutboundPort = 15001
	ProxyInboundPort  = 15006
	ProxyStatusPort   = 15020
	ProxyReadyPort    = 15021
)

// CreateNamespace creates a namespace with the given labels (or updates the
// labels of an existing one), waits for its default ServiceAccount, and adds
// the istio-ca-root-cert ConfigMap that injected pods mount (Istio's istiod
// publishes it; the stand-in proxy does not read it, but the kubelet will
// not start a pod whose ConfigMap volume is missing).
func (c *Cluster) CreateNamespace(ctx context.Context, name string, labels map[string]string) error {
	if err := testenv.EnsureNamespace(ctx, c.Client, name, labels); err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "istio-ca-root-cert"},
		Data:       map[string]string{"root-cert.pem": string(c.Config.CAData)},
	}
	if err := c.Client.Create(ctx, cm); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("configmap %s/istio-ca-root-cert: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.waitServiceAccount(ctx, name); err != nil {
		return fmt.Errorf("default ServiceAccount in %s: %w", name, err)
	}
	return nil
}

// WaitForPod polls the pod until cond is true, cond fails, or the timeout
// passes; it returns the last pod seen.
func (c *Cluster) WaitForPod(ctx context.Context, namespace, name string, timeout time.Duration,
	cond func(*corev1.Pod) (bool, error)) (*corev1.Pod, error) {
	var pod corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &pod); err != nil {
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return false, nil //nolint:nilerr // transient API errors: retry until the timeout
		}
		return cond(&pod)
	})
	if err != nil {
		return &pod, fmt.Errorf("pod %s/%s: %w (phase %s, %s)", namespace, name, err, pod.Status.Phase, DescribeStatus(&pod))
	}
	return &pod, nil
}

// WaitPodReady waits until the pod's Ready condition is true, and fails
// early when a container cannot start.
func (c *Cluster) WaitPodReady(ctx context.Context, namespace, name string, timeout time.Duration) (*corev1.Pod, error) {
	return c.WaitForPod(ctx, namespace, name, timeout, func(p *corev1.Pod) (bool, error) {
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod ended: %s", p.Status.Phase)
		}
		for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			if w := s.State.Waiting; w != nil && (w.Reason == "ErrImageNeverPull" || w.Reason == "CreateContainerConfigError" ||
				w.Reason == "CreateContainerError" || w.Reason == "InvalidImageName") {
				return false, fmt.Errorf("container %s: %s: %s", s.Name, w.Reason, w.Message)
			}
		}
		return testenv.PodReady(p), nil
	})
}

// DescribeStatus summarises the states of a pod's containers, for error
// messages.
func DescribeStatus(p *corev1.Pod) string {
	var parts []string
	for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		st := "unknown"
		switch {
		case s.State.Running != nil:
			st = fmt.Sprintf("running ready=%v", s.Ready)
		case s.State.Waiting != nil:
			st = "waiting " + s.State.Waiting.Reason + " " + s.State.Waiting.Message
		case s.State.Terminated != nil:
			st = fmt.Sprintf("terminated %s exit %d", s.State.Terminated.Reason, s.State.Terminated.ExitCode)
		}
		parts = append(parts, fmt.Sprintf("%s: %s (restarts %d)", s.Name, strings.TrimSpace(st), s.RestartCount))
	}
	return strings.Join(parts, "; ")
}

// Kubectl runs the cluster's kubectl with the admin kubeconfig and returns
// its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.K8sBinDir, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...) //nolint:gosec // G204: the test's own kubectl command
	// kubectl's discovery cache in Dir, not ~/.kube.
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+filepath.Join(c.Dir, "kubecache"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Exec runs a command in a container (kubectl exec) and returns its output.
func (c *Cluster) Exec(ctx context.Context, namespace, pod, container string, command ...string) (string, error) {
	return c.Kubectl(ctx, append([]string{"exec", "-n", namespace, pod, "-c", container, "--"}, command...)...)
}

// Logs returns a container's log (previous: of its last terminated run).
func (c *Cluster) Logs(ctx context.Context, namespace, pod, container string, previous bool) (string, error) {
	b, err := c.Clientset.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container, Previous: previous}).DoRaw(ctx)
	return string(b), err
}

// HTTP does one request from the host (over the bridge) and returns the
// status and body.
func HTTP(ctx context.Context, method, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// ProxyConn is one connection the stand-in proxy captured (its /debug/conns).
type ProxyConn struct {
	// Direction is "inbound" or "outbound".
	Direction string `json:"direction"`
	// Orig is the original destination (SO_ORIGINAL_DST), IP:PORT.
	Orig string `json:"orig"`
	// From is the peer of the captured connection.
	From string `json:"from"`
	// Upstream is the local address of the proxy's own connection to Orig.
	Upstream string `json:"upstream,omitempty"`
	// Error is set when the proxy could not forward the connection.
	Error string    `json:"error,omitempty"`
	Time  time.Time `json:"time"`
}

// ProxyConns returns what the stand-in proxy of the pod at podIP captured,
// read from the host over the bridge (its status port is never captured).
func ProxyConns(ctx context.Context, podIP string) ([]ProxyConn, error) {
	code, body, err := HTTP(ctx, http.MethodGet, "http://"+net.JoinHostPort(podIP, strconv.Itoa(ProxyStatusPort))+"/debug/conns")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/debug/conns: status %d: %s", code, body)
	}
	var conns []ProxyConn
	if err := json.Unmarshal([]byte(body), &conns); err != nil {
		return nil, fmt.Errorf("/debug/conns: %w", err)
	}
	return conns, nil
}

// NetnsExec runs a host command (iptables-save, ip, ss, ...) in the network
// namespace of a running pod, through nsenter and the PID of one of its
// running containers, and returns the combined output.
func (c *Cluster) NetnsExec(ctx context.Context, pod *corev1.Pod, command ...string) (string, error) {
	var id string
	for _, s := range append(append([]corev1.ContainerStatus{}, pod.Status.ContainerStatuses...), pod.Status.InitContainerStatuses...) {
		if s.State.Running != nil && strings.HasPrefix(s.ContainerID, "containerd://") {
			id = strings.TrimPrefix(s.ContainerID, "containerd://")
			break
		}
	}
	if id == "" {
		return "", fmt.Errorf("pod %s/%s has no running container", pod.Namespace, pod.Name)
	}
	out, err := c.ctr(ctx, "tasks", "ls")
	if err != nil {
		return "", err
	}
	pid := ""
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == id && f[2] == "RUNNING" {
			pid = f[1]
		}
	}
	if pid == "" {
		return "", fmt.Errorf("container %s of pod %s/%s has no running task", id, pod.Namespace, pod.Name)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", pid, "--net", "--"}, command...)...) //nolint:gosec // G204: the test's own command
	b, err := cmd.CombinedOutput()
	if err != nil {
		return string(b), fmt.Errorf("nsenter %s: %w: %s", strings.Join(command, " "), err, bytes.TrimSpace(b))
	}
	return string(b), nil
}

// saveArtifacts copies the node's logs and a dump of the cluster's pods
// (descriptions and every container's log) to dir.
func (c *Cluster) saveArtifacts(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	c.opts.Logf("node: saving logs and a dump of the cluster to %s", dir)
	logs, _ := filepath.Glob(filepath.Join(c.Dir, "logs", "*.log"))
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil { //nolint:gosec // G304: a log in the run directory
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(l)), b, 0o600) //nolint:gosec // G703: a file name from our own log directory
		}
	}
	if c.Clientset == nil {
		return nil
	}
	if out, err := c.Kubectl(ctx, "get", "nodes,pods,jobs,events", "-A", "-o", "wide"); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "get.txt"), []byte(out), 0o600)
	}
	if out, err := c.Kubectl(ctx, "describe", "pods", "-A"); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "describe-pods.txt"), []byte(out), 0o600)
	}
	pods, err := c.Clientset.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		for _, ctr := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
			if out, err := c.Logs(ctx, p.Namespace, p.Name, ctr.Name, false); err == nil {
				_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("pod-%s-%s-%s.log", p.Namespace, p.Name, ctr.Name)), []byte(out), 0o600)
			}
		}
	}
	return nil
}
