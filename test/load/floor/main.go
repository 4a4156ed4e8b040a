// Command floor is the load test's reference point: an HTTPS admission
// webhook on controller-runtime's webhook server that only decodes each
// AdmissionReview into a typed Pod and answers with a precomputed patch of
// the size Remora's real answer has. The gap between it and `injector
// serve` is what injection itself costs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/remora-mesh/remora/internal/testenv"
	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/inject"
)

type floorHandler struct {
	decoder admission.Decoder
	resp    admission.Response
}

// Handle decodes the pod, as every webhook must, and returns the
// precomputed patch.
func (h *floorHandler) Handle(_ context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := h.decoder.Decode(req, pod); err != nil {
		return admission.Errored(400, err)
	}
	return h.resp
}

func main() {
	port := flag.Int("port", 9444, "HTTPS port")
	certDir := flag.String("cert-dir", "", "directory with tls.crt and tls.key")
	request := flag.String("request", testenv.ReviewFile, "the AdmissionReview whose real patch is precomputed")
	flag.Parse()
	if err := run(*port, *certDir, *request); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(port int, certDir, request string) error {
	raw, err := os.ReadFile(request)
	if err != nil {
		return err
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(raw, &review); err != nil {
		return fmt.Errorf("decoding %s: %w", request, err)
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(review.Request.Object.Raw, pod); err != nil {
		return err
	}
	res, err := inject.Inject(inject.Request{Pod: pod, Namespace: review.Request.Namespace, NamespaceLabels: map[string]string{"istio-injection": "enabled"}, Config: config.MustDefault()})
	if err != nil {
		return err
	}
	injected, err := json.Marshal(res.Pod)
	if err != nil {
		return err
	}
	resp := admission.PatchResponseFromRaw(review.Request.Object.Raw, injected)
	// Precompute the patch bytes too, as the response carries them.
	if err := resp.Complete(admission.Request{AdmissionRequest: *review.Request}); err != nil {
		return err
	}
	srv := webhook.NewServer(webhook.Options{Port: port, Host: "127.0.0.1", CertDir: certDir})
	srv.Register("/inject", &admission.Webhook{Handler: &floorHandler{decoder: admission.NewDecoder(clientgoscheme.Scheme), resp: resp}})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("floor: %d patch operations, %d bytes, serving on 127.0.0.1:%d\n", len(resp.Patches), len(resp.Patch), port)
	return srv.Start(ctx)
}
