package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCleanupValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    cleanupOptions
		want []string
	}{
		{"nothing to delete", cleanupOptions{namespace: "remora-system", timeout: time.Minute}, []string{"cleanup.lease", "--secret"}},
		{"no namespace", cleanupOptions{secrets: []string{"s"}, timeout: time.Minute}, []string{"cleanup.namespace"}},
		{"bad selector", cleanupOptions{namespace: "n", secrets: []string{"s"}, podSelector: "a in (", timeout: time.Minute},
			[]string{"cleanup.wait-for-pods", `"a in ("`}},
		{"no timeout", cleanupOptions{namespace: "n", leases: []string{"l"}}, []string{"cleanup.timeout", "must be positive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
	ok := cleanupOptions{namespace: "n", leases: []string{"l"}, podSelector: "app=x", timeout: time.Minute}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
}

// TestCleanupOnAPIServer runs cleanup against a real API server: it waits while an injector pod
// is left, then deletes the named Lease and Secrets (a missing one is fine) and nothing else.
func TestCleanupOnAPIServer(t *testing.T) {
	_, restCfg := startControlPlane(t)
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const ns = "remora-system"
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))
	must(cs.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "remora-injector-leader"}}, metav1.CreateOptions{}))
	for _, name := range []string{"remora-tls", "remora-ca", "someone-elses"} {
		must(cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}))
	}
	injectorPod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "remora-0", Labels: map[string]string{"app.kubernetes.io/name": "remora"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "injector", Image: "injector"}}},
	}
	must(cs.CoreV1().Pods(ns).Create(ctx, injectorPod, metav1.CreateOptions{}))

	o := &cleanupOptions{
		namespace: ns, podSelector: "app.kubernetes.io/name=remora", timeout: time.Minute, pollInterval: 50 * time.Millisecond,
		leases: []string{"remora-injector-leader"}, secrets: []string{"remora-tls", "remora-ca", "remora-self-managed-tls"},
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	done := make(chan error, 1)
	runCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	go func() { done <- o.run(runCtx, cs, out) }()

	// While the pod is there, cleanup says it waits and deletes nothing.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "waiting for 1 pod(s) to be gone: remora-0") {
		if time.Now().After(deadline) {
			t.Fatalf("cleanup never said it waits for the pod; output:\n%s", out)
		}
		select {
		case err := <-done:
			t.Fatalf("cleanup returned (%v) while the injector pod is there; output:\n%s", err, out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if _, err := cs.CoordinationV1().Leases(ns).Get(ctx, "remora-injector-leader", metav1.GetOptions{}); err != nil {
		t.Fatalf("the Lease is gone while the injector pod is there: %v", err)
	}
	must(nil, cs.CoreV1().Pods(ns).Delete(ctx, injectorPod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	if err := <-done; err != nil {
		t.Fatalf("cleanup: %v; output:\n%s", err, out)
	}

	if _, err := cs.CoordinationV1().Leases(ns).Get(ctx, "remora-injector-leader", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Lease after cleanup: %v, want NotFound", err)
	}
	for _, name := range []string{"remora-tls", "remora-ca"} {
		if _, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Secret %s after cleanup: %v, want NotFound", name, err)
		}
	}
	if _, err := cs.CoreV1().Secrets(ns).Get(ctx, "someone-elses", metav1.GetOptions{}); err != nil {
		t.Errorf("cleanup deleted a Secret it was not given: %v", err)
	}
	for _, line := range []string{
		"deleted Lease remora-system/remora-injector-leader", "deleted Secret remora-system/remora-tls",
		"deleted Secret remora-system/remora-ca", "Secret remora-system/remora-self-managed-tls: already gone",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
}
