package inject

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// FieldError is one invalid annotation: its name, its value and what is
// allowed.
type FieldError struct {
	Annotation string
	Value      string
	Allowed    string
}

func (e FieldError) Error() string {
	v := e.Value
	if len(v) > 120 {
		v = v[:120] + "..."
	}
	// One line: parser messages (YAML's) may hold newlines.
	return fmt.Sprintf("annotation %s=%q is invalid: %s", e.Annotation, v, strings.Join(strings.Fields(e.Allowed), " "))
}

// Reason says what is wrong and what is allowed, without the value, which
// may be anything a user pasted (a log carries the annotation's name and
// this; the denial sent back to the user carries Error).
// Parsers quote the entry they refuse, so the value's entries are removed in
// their quoted form, and the value itself wherever it appears.
func (e FieldError) Reason() string {
	r := strings.Join(strings.Fields(e.Allowed), " ")
	entries := strings.FieldsFunc(e.Value, func(c rune) bool { return c == ',' || unicode.IsSpace(c) })
	for _, v := range append([]string{strings.TrimSpace(e.Value)}, entries...) {
		if v != "" {
			r = strings.ReplaceAll(r, strconv.Quote(v), `"<redacted>"`)
		}
	}
	if v := strings.TrimSpace(e.Value); len(v) > 3 {
		r = strings.ReplaceAll(r, v, "<redacted>")
	}
	return r
}

// AnnotationError lists every invalid annotation of a pod. The pod is not
// injected at all when it is returned.
type AnnotationError struct {
	Errors []FieldError
}

func (e *AnnotationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		parts[i] = fe.Error()
	}
	return strings.Join(parts, "; ")
}

// PodError says why a pod cannot be injected as it is (a name that
// collides with an injected one, a result the API server would refuse). It
// is the user's to fix, like an AnnotationError.
type PodError struct {
	Msg string
}

func (e *PodError) Error() string { return strings.Join(strings.Fields(e.Msg), " ") }

func podErrorf(format string, args ...any) error {
	return &PodError{Msg: fmt.Sprintf(format, args...)}
}

// IsRefused reports whether err is the pod's fault (an invalid annotation or
// a pod that cannot be injected as it is), to be denied with its message,
// rather than an internal error.
func IsRefused(err error) bool {
	var ae *AnnotationError
	var pe *PodError
	return errors.As(err, &ae) || errors.As(err, &pe)
}
