package webhook

import (
	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// requestLogger is the admission webhook's LogConstructor. It gives a
// request's logger the values controller-runtime's DefaultLogConstructor
// gives it, but hands them to the log sink only with a message that is
// written: zap encodes a logger's values as soon as they are added, and
// controller-runtime builds a request's logger twice per admission, for
// messages (at V(5)) that are rarely enabled.
func requestLogger(base logr.Logger, req *admission.Request) logr.Logger {
	if req == nil {
		return base
	}
	return deferValues(base, "object", klog.KRef(req.Namespace, req.Name),
		"namespace", req.Namespace, "name", req.Name,
		"resource", req.Resource, "user", req.UserInfo.Username,
		"requestID", req.UID)
}

// deferValues returns l with the key-value pairs kv, kept aside until a
// message is logged.
func deferValues(l logr.Logger, kv ...any) logr.Logger {
	sink := l.GetSink()
	if sink == nil {
		return l
	}
	// One more frame (deferredSink's) between the caller and the sink.
	if cd, ok := sink.(logr.CallDepthLogSink); ok {
		sink = cd.WithCallDepth(1)
	}
	return l.WithSink(&deferredSink{sink: sink, kv: kv})
}

// deferredSink is a logr.LogSink that passes its values to the sink it
// wraps with each message written rather than when they are added.
type deferredSink struct {
	sink logr.LogSink
	kv   []any
}

var _ logr.LogSink = (*deferredSink)(nil)

// Init does nothing: the wrapped sink was initialised when its logger was
// made, and initialising it again would change it for its other users.
func (s *deferredSink) Init(logr.RuntimeInfo) {}

func (s *deferredSink) Enabled(level int) bool { return s.sink.Enabled(level) }

func (s *deferredSink) Info(level int, msg string, kv ...any) {
	s.sink.Info(level, msg, s.with(kv)...)
}

func (s *deferredSink) Error(err error, msg string, kv ...any) {
	s.sink.Error(err, msg, s.with(kv)...)
}

func (s *deferredSink) WithValues(kv ...any) logr.LogSink {
	return &deferredSink{sink: s.sink, kv: s.with(kv)}
}

func (s *deferredSink) WithName(name string) logr.LogSink {
	return &deferredSink{sink: s.sink.WithName(name), kv: s.kv}
}

// with returns the sink's values followed by kv, never sharing kv's or the
// sink's backing array with another logger.
func (s *deferredSink) with(kv []any) []any {
	if len(kv) == 0 {
		return s.kv
	}
	out := make([]any, 0, len(s.kv)+len(kv))
	return append(append(out, s.kv...), kv...)
}
