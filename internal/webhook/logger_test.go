package webhook

import (
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// TestRequestLogger: a request's logger writes the values controller-
// runtime's DefaultLogConstructor gives it, in the same order, plus those
// added later; nothing reaches the sink for a message that is not enabled;
// values added to a derived logger never show in its parent's or sibling's
// lines; names are kept.
func TestRequestLogger(t *testing.T) {
	var lines []string
	base := funcr.New(func(prefix, args string) { lines = append(lines, prefix+" "+args) }, funcr.Options{Verbosity: 1})
	req := &admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "uid-1", Namespace: "default", Name: "web",
		Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		UserInfo: authenticationv1.UserInfo{Username: "alice"},
	}}
	write := func(l logr.Logger) string {
		lines = nil
		l.Info("msg")
		if len(lines) != 1 {
			t.Fatalf("%d lines written, want 1", len(lines))
		}
		return lines[0]
	}
	want := write(admission.DefaultLogConstructor(base.WithName("admission"), req))
	got := write(requestLogger(base.WithName("admission"), req))
	if got != want {
		t.Errorf("requestLogger writes\n%s\nDefaultLogConstructor writes\n%s", got, want)
	}

	l := requestLogger(base, req)
	a, b := l.WithValues("result", "a"), l.WithValues("result", "b")
	if got := write(a.WithName("x")); !strings.Contains(got, `"result"="a"`) || strings.Contains(got, `"b"`) || !strings.HasPrefix(got, "x ") {
		t.Errorf("derived logger a writes %s", got)
	}
	if got := write(b); !strings.Contains(got, `"result"="b"`) || strings.Contains(got, `"a"`) {
		t.Errorf("derived logger b writes %s", got)
	}
	if got := write(l); strings.Contains(got, "result") {
		t.Errorf("the parent logger writes a child's value: %s", got)
	}

	lines = nil
	l.V(2).Info("not enabled", "k", "v")
	l.V(1).Info("enabled")
	if len(lines) != 1 || !strings.Contains(lines[0], `"requestID"="uid-1"`) {
		t.Errorf("lines %q: want only the V(1) line, with the request's values", lines)
	}
	if got := requestLogger(base, nil); got != base {
		t.Error("without a request the base logger is not returned as it is")
	}
}
