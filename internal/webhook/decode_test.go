package webhook

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// TestDecodePodAsControllerRuntime: decodePod accepts and refuses what
// controller-runtime's admission.Decoder (client-go's scheme) does, and
// decodes an accepted object to the same pod; a type error is reported in
// the same words.
func TestDecodePodAsControllerRuntime(t *testing.T) {
	ref, err := os.ReadFile(reviewFile)
	if err != nil {
		t.Fatal(err)
	}
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(ref, &ar); err != nil {
		t.Fatal(err)
	}
	pod := string(ar.Request.Object.Raw)
	replace := func(old, new string) string {
		if !strings.Contains(pod, old) {
			t.Fatalf("the reference pod has no %q", old)
		}
		return strings.Replace(pod, old, new, 1)
	}
	tests := []struct {
		name    string
		raw     string
		accept  bool
		sameErr bool // the same error message as the decoder's
	}{
		{name: "the reference pod", raw: pod, accept: true},
		{name: "no kind", raw: replace(`"kind":"Pod",`, ""), accept: true},
		{name: "no apiVersion", raw: replace(`"apiVersion":"v1",`, ""), accept: true},
		{name: "only a kind", raw: `{"kind":"Pod"}`, accept: true},
		{name: "empty object", raw: `{}`, accept: true},
		{name: "unknown fields are ignored", raw: replace(`"kind":"Pod",`, `"kind":"Pod","surprise":{"a":[1,2]},`), accept: true},
		{name: "names are case-sensitive", raw: replace(`"kind":"Pod",`, `"kind":"Pod","Spec":{"hostNetwork":true},`), accept: true},
		{name: "another kind", raw: replace(`"kind":"Pod"`, `"kind":"Service"`)},
		{name: "another group", raw: replace(`"apiVersion":"v1"`, `"apiVersion":"apps/v1"`)},
		{name: "another version", raw: replace(`"apiVersion":"v1"`, `"apiVersion":"v2"`)},
		{name: "a string where a number goes", raw: replace(`"containerPort":9080`, `"containerPort":"9080"`), sameErr: true},
		{name: "a number where an object goes", raw: replace(`"spec":{`, `"spec":7,"x":{`), sameErr: true},
		{name: "not JSON", raw: `{"kind":`},
		{name: "null", raw: `null`, accept: true},
	}
	decoder := admission.NewDecoder(clientgoscheme.Scheme)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := &corev1.Pod{}
			wantErr := decoder.DecodeRaw(runtime.RawExtension{Raw: []byte(tt.raw)}, want)
			got := &corev1.Pod{}
			gotErr := decodePod([]byte(tt.raw), got)
			if (gotErr == nil) != tt.accept || (wantErr == nil) != tt.accept {
				t.Fatalf("decodePod: %v; admission.Decoder: %v; want accepted %t by both", gotErr, wantErr, tt.accept)
			}
			if tt.accept {
				if !reflect.DeepEqual(got, want) {
					t.Errorf("decodePod gives\n%+v\nadmission.Decoder gives\n%+v", got, want)
				}
				return
			}
			if tt.sameErr && gotErr.Error() != wantErr.Error() {
				t.Errorf("decodePod: %q\nadmission.Decoder: %q", gotErr, wantErr)
			}
		})
	}
}
