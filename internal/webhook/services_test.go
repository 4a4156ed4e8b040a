package webhook

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/remora-mesh/remora/internal/services"
	"github.com/remora-mesh/remora/pkg/inject"
)

// TestHandlerExcludesServices: the handler resolves the Services a pod
// names through Options.Services, denies a pod whose Service cannot be
// excluded or when the feature is off, answers a resolver failure with an
// error, and never asks the resolver about a pod that names no Service.
func TestHandlerExcludesServices(t *testing.T) {
	enabled := namespace("default", map[string]string{inject.LabelNamespaceInject: "enabled"})
	cluster := fake.NewClientBuilder().WithObjects(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "mysql"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.10.5", ClusterIPs: []string{"10.96.10.5", "fd00::5"}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "warehouse"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "warehouse.example.com"}},
	).Build()
	failing := fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return errors.New("the reader was asked")
		},
	}).Build()
	named := func(value string) func(*admissionv1.AdmissionRequest, map[string]any) {
		return func(_ *admissionv1.AdmissionRequest, pod map[string]any) {
			annotate(pod, inject.AnnotationExcludeOutboundServices, value)
		}
	}
	tests := []struct {
		name     string
		resolver *services.Resolver
		edit     func(*admissionv1.AdmissionRequest, map[string]any)
		code     int32
		msg      string
		wantX    string
	}{
		{name: "a ClusterIP Service's addresses join -x", resolver: &services.Resolver{Reader: cluster}, edit: named("mysql.db"),
			wantX: "10.96.10.5/32,fd00::5/128"},
		{name: "an ExternalName Service is denied, named", resolver: &services.Resolver{Reader: cluster}, edit: named("warehouse.db"),
			code: http.StatusForbidden, msg: "Service warehouse.db is an ExternalName Service"},
		{name: "a missing Service is denied, named", resolver: &services.Resolver{Reader: cluster}, edit: named("mysql"),
			code: http.StatusForbidden, msg: "Service mysql.default does not exist"},
		{name: "feature off: denied, saying so", edit: named("mysql.db"),
			code: http.StatusForbidden, msg: "runs without --exclude-services"},
		{name: "a failing resolver is an error, not a denial", resolver: &services.Resolver{Reader: failing}, edit: named("mysql.db"),
			code: http.StatusInternalServerError, msg: "the reader was asked"},
		{name: "a pod naming no Service never reaches the resolver", resolver: &services.Resolver{Reader: failing},
			wantX: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestWebhook(t, func(o *Options) { o.Services = tt.resolver }, enabled)
			body := loadReview(t, tt.edit)
			resp := post(t, srv, body)
			if tt.code != 0 {
				if resp.Allowed || resp.Result == nil || resp.Result.Code != tt.code || !strings.Contains(resp.Result.Message, tt.msg) {
					t.Fatalf("response %+v, want code %d with %q", resp.Result, tt.code, tt.msg)
				}
				return
			}
			pod := patched(t, body, resp)
			var x string
			for _, c := range pod.Spec.InitContainers {
				for i, a := range c.Args {
					if c.Name == inject.InitContainerName && a == "-x" && i+1 < len(c.Args) {
						x = c.Args[i+1]
					}
				}
			}
			if !resp.Allowed || !hasProxy(pod) || x != tt.wantX {
				t.Errorf("allowed %v, proxy %v, -x %q; want injected with -x %q", resp.Allowed, hasProxy(pod), x, tt.wantX)
			}
		})
	}
}
