package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/test/e2e/framework"
)

// podCreation installs the chart's webhook configuration pointing at serve
// and creates n pods (the review's) in a namespace the webhook selects and n
// in one it does not, alternately, through the same API server, then
// prints the create-to-response percentiles of both: what the webhook adds
// to `kubectl apply`. Every pod of the first namespace must come back
// injected and none of the second.
func podCreation(ctx context.Context, cluster *framework.Cluster, serve *server, caPEM, body []byte, n int) error {
	const injected, plain = "load-injected", "load-plain"
	if err := cluster.CreateNamespace(ctx, injected, map[string]string{"istio-injection": "enabled"}); err != nil {
		return err
	}
	if err := cluster.CreateNamespace(ctx, plain, nil); err != nil {
		return err
	}
	cfg := framework.WebhookConfiguration(framework.WebhookOptions{
		Name: "remora-load", NamespaceURL: serve.url, RevisionURL: serve.url, CABundle: caPEM, OwnNamespace: "remora-system",
	})
	if err := cluster.InstallWebhook(ctx, cfg, injected); err != nil {
		return err
	}
	template, err := decodePod(body)
	if err != nil {
		return err
	}
	if sa := template.Spec.ServiceAccountName; sa != "" {
		for _, ns := range []string{injected, plain} {
			err := cluster.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating the pod's ServiceAccount %s/%s: %w", ns, sa, err)
			}
		}
	}
	create := func(ns string) (time.Duration, *corev1.Pod, error) {
		pod := &corev1.Pod{ObjectMeta: objectMeta(ns, template.ObjectMeta), Spec: *template.Spec.DeepCopy()}
		t0 := time.Now()
		err := cluster.Client.Create(ctx, pod)
		return time.Since(t0), pod, err
	}
	const warmup = 10
	var with, without []time.Duration
	for i := 0; i < warmup+n; i++ {
		d1, p1, err := create(injected)
		if err != nil {
			return fmt.Errorf("creating a pod in %s: %w", injected, err)
		}
		d2, p2, err := create(plain)
		if err != nil {
			return fmt.Errorf("creating a pod in %s: %w", plain, err)
		}
		if !testenv.HasProxy(p1) || testenv.HasProxy(p2) {
			return fmt.Errorf("pod %s/%s injected %t, pod %s/%s injected %t: want true, false",
				p1.Namespace, p1.Name, testenv.HasProxy(p1), p2.Namespace, p2.Name, testenv.HasProxy(p2))
		}
		if i >= warmup {
			with, without = append(with, d1), append(without, d2)
		}
	}
	w, wo := percentiles(with), percentiles(without)
	fmt.Printf("pod creation through the API server, %d pods each, created alternately (after %d each to warm up):\n", n, warmup)
	fmt.Printf("  with the webhook:    p50 %s, p90 %s, p99 %s\n", w[0], w[1], w[2])
	fmt.Printf("  without the webhook: p50 %s, p90 %s, p99 %s\n", wo[0], wo[1], wo[2])
	fmt.Printf("  the webhook adds: p50 %s, p99 %s\n", w[0]-wo[0], w[2]-wo[2])
	return nil
}
