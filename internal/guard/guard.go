// Package guard checks an admission request's HTTP envelope before the
// AdmissionReview reaches controller-runtime's decoder: the method, the
// media type, the size, strict JSON (valid UTF-8, no byte-order mark, no
// duplicate object keys anywhere, nothing after the value) and the review's
// envelope (apiVersion, kind, request, uid, object). A duplicate key matters:
// with "last key wins" an invalid annotation followed by a valid copy would
// escape validation while the API server may have read the other copy.
//
// It also bounds how long reading the body and writing the answer may take,
// and turns a panic further down into a 500 answer, a log line with the uid
// and a count, so one bad request never takes the server down.
package guard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// MaxBodyBytes is the largest request accepted: the API server's own limit
// for an object (3 MiB) plus a margin for the AdmissionReview around it.
const MaxBodyBytes = 3<<20 + 256<<10

// Reasons a request is refused; a small fixed set, for the metric.
const (
	ReasonMethod      = "method-not-allowed"
	ReasonMediaType   = "unsupported-media-type"
	ReasonTooLarge    = "too-large"
	ReasonBodyRead    = "body-read-failed"
	ReasonInvalidJSON = "invalid-json"
	ReasonEnvelope    = "invalid-envelope"
	ReasonPanic       = "panic"
)

var rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "remora_webhook_rejected_requests_total",
	Help: "Admission requests refused before decoding, by reason.",
}, []string{"reason"})

var panics = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "remora_webhook_panics_total",
	Help: "Panics recovered while answering an admission request; each one is a bug.",
})

func init() {
	metrics.Registry.MustRegister(rejected, panics)
}

// Options configure the guard.
type Options struct {
	// ReadTimeout bounds reading the body (default 10s).
	ReadTimeout time.Duration
	// WriteTimeout bounds the whole answer (default 30s; the API server
	// gives up after the webhook's timeoutSeconds, at most 30s).
	WriteTimeout time.Duration
	// Log receives refusals (at V(1)) and recovered panics.
	Log logr.Logger
}

// New wraps next, the admission webhook.
func New(next http.Handler, opts Options) http.Handler {
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 10 * time.Second
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	return &guard{next: next, opts: opts}
}

type guard struct {
	next http.Handler
	opts Options
}

// envelope is the part of an AdmissionReview the guard checks.
type envelope struct {
	APIVersion string
	Kind       string
	Request    *request
}

type request struct {
	UID       string
	Operation string
	// Object is the kind of the object's JSON value: 0 when absent, 'n'
	// for null, '{' for an object, and so on.
	Object jsontext.Kind
}

var (
	decoders    = sync.Pool{New: func() any { return jsontext.NewDecoder(emptyBuffer) }}
	emptyBuffer = new(bytes.Buffer)
)

// readEnvelope reads the envelope's fields from body, skipping everything
// else without decoding it. Its decoder validates every byte as strict JSON
// as it goes (UTF-8, no duplicate object names anywhere, one value and
// nothing after it), so a body it accepts is strict JSON; for one it
// refuses, checkJSON tells whether the JSON or the envelope is wrong.
func readEnvelope(body []byte) (envelope, error) {
	var env envelope
	// From a bytes.Buffer the decoder reads the body in place, unbuffered;
	// a pooled decoder keeps the memory of its duplicate-name sets.
	dec := decoders.Get().(*jsontext.Decoder)
	defer decoders.Put(dec)
	dec.Reset(bytes.NewBuffer(body))
	defer dec.Reset(emptyBuffer)
	if err := readEnvelopeObject(dec, &env); err != nil {
		return envelope{}, err
	}
	switch _, err := dec.ReadToken(); {
	case err == nil:
		return envelope{}, errors.New("more than one JSON value")
	case !errors.Is(err, io.EOF):
		return envelope{}, fmt.Errorf("after the AdmissionReview: %w", err)
	}
	return env, nil
}

func readEnvelopeObject(dec *jsontext.Decoder, env *envelope) error {
	return readObject(dec, func(name string) error {
		switch name {
		case "apiVersion":
			return readString(dec, name, &env.APIVersion)
		case "kind":
			return readString(dec, name, &env.Kind)
		case "request":
			if dec.PeekKind() == 'n' {
				return skipValue(dec)
			}
			env.Request = &request{}
			return readObject(dec, func(field string) error {
				switch field {
				case "uid":
					return readString(dec, "request.uid", &env.Request.UID)
				case "operation":
					return readString(dec, "request.operation", &env.Request.Operation)
				case "object":
					env.Request.Object = dec.PeekKind()
				}
				return skipValue(dec)
			})
		}
		return skipValue(dec)
	})
}

// skipValue consumes the next value whole, validating it as strictly as
// the rest. It reads it with ReadValue, which scans the bytes in one go,
// rather than SkipValue, which steps through an object or array token by
// token at several times the cost (the pod is most of the body).
func skipValue(dec *jsontext.Decoder) error {
	_, err := dec.ReadValue()
	return err
}

// readObject reads a JSON object, calling member for each name with the
// decoder positioned at the value, which member must consume.
func readObject(dec *jsontext.Decoder, member func(name string) error) error {
	if k := dec.PeekKind(); k != '{' {
		return fmt.Errorf("want a JSON object at %s, found %s", dec.StackPointer(), kindName(k))
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	for dec.PeekKind() != '}' {
		// A name read as a raw value costs no allocation; the names the
		// guard looks for need no unescaping.
		name, err := dec.ReadValue()
		if err != nil {
			return err
		}
		if err := member(string(bytes.Trim(name, `"`))); err != nil {
			return err
		}
	}
	_, err := dec.ReadToken()
	return err
}

func readString(dec *jsontext.Decoder, field string, into *string) error {
	if k := dec.PeekKind(); k != '"' {
		return fmt.Errorf("%s must be a string, found %s", field, kindName(k))
	}
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	*into = tok.String()
	return nil
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "nothing"
}

func (g *guard) refuse(w http.ResponseWriter, code int, reason, msg string) {
	rejected.WithLabelValues(reason).Inc()
	g.opts.Log.V(1).Info("Refused admission request", "reason", reason, "message", msg)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// The body may be unread: close the connection rather than wait for it.
	w.Header().Set("Connection", "close")
	w.WriteHeader(code)
	// Plain text with nosniff: the message (which may quote the request) is
	// never interpreted as markup.
	_, _ = io.WriteString(w, msg+"\n") //nolint:gosec // G705: text/plain, nosniff

}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	now := time.Now()
	_ = rc.SetReadDeadline(now.Add(g.opts.ReadTimeout))
	_ = rc.SetWriteDeadline(now.Add(g.opts.WriteTimeout))

	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		g.refuse(w, http.StatusMethodNotAllowed, ReasonMethod, "method "+r.Method+" is not allowed; admission reviews are POSTed")
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		g.refuse(w, http.StatusUnsupportedMediaType, ReasonMediaType, fmt.Sprintf("content type %q is not supported; send application/json", r.Header.Get("Content-Type")))
		return
	}
	if r.ContentLength > MaxBodyBytes {
		g.refuse(w, http.StatusRequestEntityTooLarge, ReasonTooLarge, fmt.Sprintf("request body of %d bytes exceeds the limit of %d", r.ContentLength, MaxBodyBytes))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			g.refuse(w, http.StatusRequestEntityTooLarge, ReasonTooLarge, fmt.Sprintf("request body exceeds the limit of %d bytes", MaxBodyBytes))
			return
		}
		g.refuse(w, http.StatusBadRequest, ReasonBodyRead, "reading the request body: "+err.Error())
		return
	}
	// One strict pass reads the envelope and validates the whole body;
	// only a body it refuses is looked at again, to say what is wrong.
	env, err := readEnvelope(body)
	if err != nil {
		if msg := checkJSON(body); msg != "" {
			g.refuse(w, http.StatusBadRequest, ReasonInvalidJSON, msg)
			return
		}
		g.refuse(w, http.StatusBadRequest, ReasonEnvelope, "the body is not an AdmissionReview: "+err.Error())
		return
	}
	if msg := checkEnvelope(&env); msg != "" {
		g.refuse(w, http.StatusBadRequest, ReasonEnvelope, msg)
		return
	}

	defer func() {
		if p := recover(); p != nil {
			panics.Inc()
			g.opts.Log.Error(fmt.Errorf("panic: %v", p), "Recovered a panic while answering an admission request (a bug)", "uid", env.Request.UID)
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	// controller-runtime compares the header exactly.
	r.Header.Set("Content-Type", "application/json")
	g.next.ServeHTTP(w, r)
}

// checkJSON returns why body is not one strict JSON object, or "".
func checkJSON(body []byte) string {
	if jsontext.Value(body).IsValid() {
		if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
			return "the body must be a JSON object (an AdmissionReview)"
		}
		return ""
	}
	// The slow path explains what is wrong.
	if bytes.HasPrefix(body, []byte("\xef\xbb\xbf")) {
		return "the body starts with a byte-order mark; send plain UTF-8 JSON"
	}
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	for {
		if _, err := dec.ReadToken(); err != nil {
			if errors.Is(err, io.EOF) {
				return "the body is not strict JSON: more than one JSON value"
			}
			return "the body is not strict JSON: " + err.Error()
		}
	}
}

func checkEnvelope(env *envelope) string {
	switch env.APIVersion {
	case "admission.k8s.io/v1", "admission.k8s.io/v1beta1":
	default:
		return fmt.Sprintf("apiVersion %q is not admission.k8s.io/v1 or admission.k8s.io/v1beta1", env.APIVersion)
	}
	if env.Kind != "AdmissionReview" {
		return fmt.Sprintf("kind %q is not AdmissionReview", env.Kind)
	}
	if env.Request == nil {
		return "the AdmissionReview has no request"
	}
	if env.Request.UID == "" {
		return "the request has no uid, so it cannot be answered"
	}
	if env.Request.Operation == "CREATE" && (env.Request.Object == 0 || env.Request.Object == 'n') {
		return "the CREATE request has no object"
	}
	return ""
}
