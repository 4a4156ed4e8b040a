package install_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
	"github.com/remora-mesh/remora/test/e2e/node"
)

// Labels and annotations the journey reads or sets.
const (
	labelInstance             = "app.kubernetes.io/instance"
	annotationInjectCAFrom    = "cert-manager.io/inject-ca-from"
	annotationInject          = "sidecar.istio.io/inject"
	annotationRestartOutdated = "remora.io/restart-outdated"
	annotationRestartedFor    = "remora.io/restarted-for"
	// annotationReadinessPeriod shortens the proxy's readiness probe period
	// (15 s by default) on the test's own pods, so that a pod's Ready
	// condition follows its containers within a second; examples/ keeps the
	// default.
	annotationReadinessPeriod = "readiness.status.sidecar.istio.io/periodSeconds"
	// leaseName is the injector's leader election Lease (cmd/injector).
	leaseName = "remora-injector-leader"
)

// certificateGVK is cert-manager's Certificate.
var certificateGVK = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}

// waitFor polls cond every interval until it holds, fails, or timeout passes; what and the last
// state cond reported name the failure.
func waitFor(ctx context.Context, timeout, interval time.Duration, what string, cond func(context.Context) (bool, string, error)) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		ok, state, err := cond(ctx)
		last = state
		return ok, err
	})
	if err != nil {
		return fmt.Errorf("%s: %w (last: %s)", what, err, last)
	}
	return nil
}

// appPod is a pod running the test app's server, with the proxy's readiness period at 1 s.
func appPod(ns, name string) *corev1.Pod {
	grace := int64(2)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{annotationReadinessPeriod: "1"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "app", Image: node.AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"server"},
			}},
		},
	}
}

// --- admissions under load

// admission is the outcome of one pod creation.
type admission struct {
	at       time.Time
	took     time.Duration
	name     string
	err      error
	injected bool
}

// load creates a pod every interval (one at a time) in a namespace labelled for injection. The
// pods select a node label nothing has, so they stay Pending: every creation goes through the API
// server and the webhook, and the node stays quiet.
type load struct {
	ns     string
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	all    []admission
}

const loadInterval = 200 * time.Millisecond

func startLoad(ctx context.Context, c client.Client, ns string) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{ns: ns, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(loadInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pod := framework.ProbePod(ns)
			pod.Spec.NodeSelector = map[string]string{"remora.io/e2e-no-such-node": "true"}
			reqCtx, cancelReq := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
			began := time.Now()
			err := c.Create(reqCtx, pod)
			cancelReq()
			l.mu.Lock()
			l.all = append(l.all, admission{at: began, took: time.Since(began), name: pod.Name, err: err, injected: err == nil && testenv.HasProxy(pod)})
			l.mu.Unlock()
		}
	}()
	return l
}

// count returns how many creations finished, and how many of them started after t.
func (l *load) count(after time.Time) (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.all {
		if a.at.After(after) {
			n++
		}
	}
	return len(l.all), n
}

// waitAfter waits until n creations started after t have finished.
func (l *load) waitAfter(ctx context.Context, t time.Time, n int) error {
	return waitFor(ctx, time.Minute, 50*time.Millisecond, fmt.Sprintf("%d pod creations after %s", n, t.Format("15:04:05.000")),
		func(context.Context) (bool, string, error) {
			total, after := l.count(t)
			return after >= n, fmt.Sprintf("%d created, %d after", total, after), nil
		})
}

// stop ends the load and returns its summary; failures lists every creation that failed or was
// not injected.
func (l *load) stop() (total int, failures []string, p50, p99, maxLatency time.Duration) {
	l.cancel()
	<-l.done
	var lat []time.Duration
	for _, a := range l.all {
		switch {
		case a.err != nil:
			failures = append(failures, fmt.Sprintf("%s: %v", a.at.Format("15:04:05.000"), a.err))
		case !a.injected:
			failures = append(failures, fmt.Sprintf("%s: pod %s created without istio-proxy", a.at.Format("15:04:05.000"), a.name))
		default:
			lat = append(lat, a.took)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(f float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(f*float64(len(lat)-1))].Round(100 * time.Microsecond)
	}
	return len(l.all), failures, q(0.5), q(0.99), q(1)
}

// --- the injector's pods, certificates and webhook configuration

// injectorPods returns the release's injector pods (the Deployment's selector).
func injectorPods(ctx context.Context, c client.Client) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(releaseNS), client.MatchingLabels{labelInstance: releaseName, "app.kubernetes.io/name": "remora"}); err != nil {
		return nil, err
	}
	return pods.Items, nil
}

// webhookConfig returns the release's MutatingWebhookConfiguration.
func webhookConfig(ctx context.Context, c client.Client) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	var list admissionregistrationv1.MutatingWebhookConfigurationList
	if err := c.List(ctx, &list, client.MatchingLabels{labelInstance: releaseName}); err != nil {
		return nil, err
	}
	if len(list.Items) != 1 {
		return nil, fmt.Errorf("%d MutatingWebhookConfigurations labelled %s=%s, want 1", len(list.Items), labelInstance, releaseName)
	}
	return &list.Items[0], nil
}

// serviceDNSName is the name the API server verifies the webhook's certificate for.
func serviceDNSName(mwc *admissionregistrationv1.MutatingWebhookConfiguration) (string, error) {
	ref := mwc.Webhooks[0].ClientConfig.Service
	if ref == nil {
		return "", fmt.Errorf("webhook %s has no clientConfig.service", mwc.Webhooks[0].Name)
	}
	return ref.Name + "." + ref.Namespace + ".svc", nil
}

// servedSerial dials a replica's webhook port as the API server does (ServerName the Service's
// DNS name, roots the caBundle) and returns the serial of the certificate it presents.
func servedSerial(podIP, dnsName string, caBundle []byte) (string, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caBundle) {
		return "", fmt.Errorf("the caBundle holds no certificate")
	}
	return framework.ServedSerial(net.JoinHostPort(podIP, "9443"), dnsName, roots)
}

// waitServed waits until every running injector pod serves the certificate with serial want,
// verified against the caBundle for dnsName.
func waitServed(ctx context.Context, c client.Client, dnsName string, caBundle []byte, want string, timeout time.Duration) error {
	return waitFor(ctx, timeout, 250*time.Millisecond, "every injector replica serving certificate "+want, func(ctx context.Context) (bool, string, error) {
		pods, err := injectorPods(ctx, c)
		if err != nil {
			return false, err.Error(), nil
		}
		var states []string
		ok := len(pods) > 0
		for _, p := range pods {
			if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
				continue
			}
			got, err := servedSerial(p.Status.PodIP, dnsName, caBundle)
			if err != nil {
				got = err.Error()
			}
			states = append(states, p.Name+": "+got)
			ok = ok && got == want
		}
		return ok, strings.Join(states, "; "), nil
	})
}

// certificate returns a cert-manager Certificate.
func certificate(ctx context.Context, c client.Client, ns, name string) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(certificateGVK)
	return u, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u)
}

// condition returns the status and reason of a condition in an unstructured object's status.
func condition(u *unstructured.Unstructured, typ string) (status, reason string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ {
			s, _ := m["status"].(string)
			r, _ := m["reason"].(string)
			return s, r
		}
	}
	return "", ""
}

// --- examples/

// exampleManifests returns examples/bookinfo-reviews.yaml with only what a cluster without a
// registry needs changed: every container runs the local test app (never pulled); the reviews
// server listens on the example's port 9080, and the erasure job's container runs the app's
// one-second batch job instead of busybox's sh.
func exampleManifests(root string) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(root, "examples", "bookinfo-reviews.yaml")) //nolint:gosec // G304: the repository's example
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out bytes.Buffer
	for {
		doc, err := dec.Read()
		if err != nil {
			break
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("examples: %w", err)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			for i := range o.Spec.Template.Spec.Containers {
				ct := &o.Spec.Template.Spec.Containers[i]
				ct.Image, ct.ImagePullPolicy, ct.Args = node.AppImage, corev1.PullNever, []string{"server"}
				ct.Env = append(ct.Env, corev1.EnvVar{Name: "HTTP_PORT", Value: "9080"})
			}
		case *batchv1.CronJob:
			for i := range o.Spec.JobTemplate.Spec.Template.Spec.Containers {
				ct := &o.Spec.JobTemplate.Spec.Template.Spec.Containers[i]
				ct.Image, ct.ImagePullPolicy = node.AppImage, corev1.PullNever
				ct.Command, ct.Args = []string{"/usr/local/bin/testapp"}, []string{"job", "1"}
			}
		}
		obj.GetObjectKind().SetGroupVersionKind(*gvk)
		b, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	return out.Bytes(), nil
}

// --- what an uninstall leaves

// leftover is one object of ours found in the cluster.
type leftover struct {
	Resource, Namespace, Name string
}

func (l leftover) String() string {
	if l.Namespace == "" {
		return l.Resource + " " + l.Name
	}
	return l.Resource + " " + l.Namespace + "/" + l.Name
}

// leftovers lists, through discovery, every object of every listable resource that is ours:
// cluster-scoped objects named remora* or labelled with the release, namespaced objects so
// labelled or named anywhere, and everything in the release namespace but what Kubernetes puts
// in every namespace (the default ServiceAccount, kube-root-ca.crt) and Events.
func leftovers(ctx context.Context, c *node.Cluster) ([]leftover, error) {
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = rest.NoWarnings{} // listing every resource warns about the deprecated ones
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	lists, err := c.Clientset.Discovery().ServerPreferredResources()
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var out []leftover
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			return nil, err
		}
		for _, r := range list.APIResources {
			if !slices.Contains(r.Verbs, "list") || strings.Contains(r.Name, "/") || r.Name == "events" {
				continue
			}
			objs, err := dyn.Resource(gv.WithResource(r.Name)).List(ctx, metav1.ListOptions{})
			if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) || apierrors.IsServiceUnavailable(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("listing %s: %w", r.Name, err)
			}
			for _, o := range objs.Items {
				ours := o.GetLabels()[labelInstance] == releaseName || strings.HasPrefix(o.GetName(), releaseName)
				if o.GetNamespace() == releaseNS {
					kubeDefault := (r.Name == "serviceaccounts" && o.GetName() == "default") || (r.Name == "configmaps" && o.GetName() == "kube-root-ca.crt")
					ours = !kubeDefault
				}
				if r.Name == "namespaces" && o.GetName() == releaseNS {
					ours = true
				}
				if ours {
					out = append(out, leftover{Resource: r.Name, Namespace: o.GetNamespace(), Name: o.GetName()})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// deleteNamespace deletes a namespace and waits until it is gone.
func deleteNamespace(ctx context.Context, c client.Client, name string, timeout time.Duration) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting namespace %s: %w", name, err)
	}
	return waitFor(ctx, timeout, 250*time.Millisecond, "namespace "+name+" gone", func(ctx context.Context) (bool, string, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(ns), ns)
		return apierrors.IsNotFound(err), fmt.Sprintf("phase %s", ns.Status.Phase), nil
	})
}

// must fails the test with err, which already says what failed.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
