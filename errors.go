package agentd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Kind classifies an error. Every layer wraps its failures in an *Error with
// a Kind so the HTTP layer can answer with an honest status, and callers can
// branch with KindOf instead of matching strings.
type Kind string

// The error kinds. The string is what the HTTP error body carries as "type".
const (
	KindInvalid            Kind = "invalid_request"      // 400: bad input
	KindUnauthenticated    Kind = "authentication_error" // 401
	KindForbidden          Kind = "permission_error"     // 403
	KindNotFound           Kind = "not_found"            // 404
	KindMethodNotAllowed   Kind = "method_not_allowed"   // 405
	KindConflict           Kind = "conflict"             // 409: a version or state changed underneath
	KindPreconditionFailed Kind = "precondition_failed"  // 412: a conditional read or write did not hold
	KindTooLarge           Kind = "too_large"            // 413
	KindRateLimited        Kind = "rate_limited"         // 429: a request rate limit, ours or the model API's
	KindBudgetExceeded     Kind = "budget_exceeded"      // 429: a token or money budget is spent until it resets
	KindInternal           Kind = "internal_error"       // 500: a bug or an unclassified failure
	KindModelError         Kind = "model_error"          // 502: the model answered, but not usefully
	KindInvalidModelOutput Kind = "invalid_model_output" // 502: the model's answer broke the output schema, even after a repair
	KindLoopLimit          Kind = "loop_limit"           // 502: a request needed more model steps or tokens than its agent allows
	KindEffectFailed       Kind = "effect_failed"        // 502: a decision was recorded but one of its side effects failed; retrying finishes it
	KindModelUnavailable   Kind = "model_unavailable"    // 503: the model could not be reached or is overloaded
	KindStorageUnavailable Kind = "storage_unavailable"  // 503: a store could not be reached
	KindTimeout            Kind = "timeout"              // 504: the request ran out of time, e.g. waiting for its conversation
)

// HTTPStatus is the status an HTTP handler answers with for an error of kind k.
func (k Kind) HTTPStatus() int {
	switch k {
	case KindInvalid:
		return http.StatusBadRequest
	case KindUnauthenticated:
		return http.StatusUnauthorized
	case KindForbidden:
		return http.StatusForbidden
	case KindNotFound:
		return http.StatusNotFound
	case KindMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case KindConflict:
		return http.StatusConflict
	case KindPreconditionFailed:
		return http.StatusPreconditionFailed
	case KindTooLarge:
		return http.StatusRequestEntityTooLarge
	case KindRateLimited, KindBudgetExceeded:
		return http.StatusTooManyRequests
	case KindModelError, KindInvalidModelOutput, KindLoopLimit, KindEffectFailed:
		return http.StatusBadGateway
	case KindModelUnavailable, KindStorageUnavailable:
		return http.StatusServiceUnavailable
	case KindTimeout:
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

// Upstream describes the answer of a dependency (the model API) that caused an
// error, so its own classification is kept next to ours.
type Upstream struct {
	Status    int    `json:"status,omitempty"`
	Type      string `json:"type,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// Error is the error type of agentd. Message is safe to show to a client: it
// never contains secrets. Err is the cause, for logs and errors.Is/As.
type Error struct {
	Kind       Kind
	Op         string // the operation that failed, e.g. "kv.put"
	Message    string // what went wrong, for the client
	Field      string // the input field at fault, when there is one
	Err        error  // the cause
	Upstream   *Upstream
	RetryAfter time.Duration // when the caller may retry (rate limits), if known
	// ResetAt is when a spent budget is available again (KindBudgetExceeded).
	ResetAt time.Time
	// Violations lists every rule a value broke (a JSON Schema's, for input
	// or model output), each as "path: message", for the client to fix all
	// at once.
	Violations []string
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	} else if e.Err != nil {
		msg = msg + ": " + e.Err.Error()
	}
	if msg == "" {
		msg = string(e.Kind)
	}
	if e.Op != "" {
		return e.Op + ": " + msg
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, agentd.ErrNotFound) (and the other sentinels) true
// for any *Error of the same kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok || t.Op != "" || t.Message != "" || t.Err != nil {
		return false
	}
	return t.Kind == e.Kind
}

// Sentinels for errors.Is: they match any *Error of their kind.
var (
	ErrNotFound           = &Error{Kind: KindNotFound}
	ErrInvalid            = &Error{Kind: KindInvalid}
	ErrConflict           = &Error{Kind: KindConflict}
	ErrTooLarge           = &Error{Kind: KindTooLarge}
	ErrPreconditionFailed = &Error{Kind: KindPreconditionFailed}
)

// Errorf returns an *Error of the kind for the operation, its message made
// with fmt.Sprintf. Use E to wrap a cause.
func Errorf(kind Kind, op, format string, args ...any) *Error {
	return &Error{Kind: kind, Op: op, Message: fmt.Sprintf(format, args...)}
}

// E wraps err as an *Error of the kind for the operation. If err already is an
// *Error, its kind is kept unless kind is set, so a classification made deeper
// down is not lost; a context error with no kind given is KindTimeout.
func E(kind Kind, op string, err error) *Error {
	var ae *Error
	switch {
	case kind != "":
	case errors.As(err, &ae):
		kind = ae.Kind
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// The caller gave up or ran out of time; nothing is broken.
		kind = KindTimeout
	}
	if kind == "" {
		kind = KindInternal
	}
	return &Error{Kind: kind, Op: op, Err: err}
}

// InvalidField returns a KindInvalid error naming the input field at fault.
func InvalidField(op, field, format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Op: op, Field: field, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of the first *Error in err's chain, KindInternal if
// there is none, and "" for a nil error.
func KindOf(err error) Kind {
	if err == nil {
		return ""
	}
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Kind
	}
	return KindInternal
}

// AsError returns the first *Error in err's chain, or a KindInternal *Error
// wrapping err.
func AsError(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	return &Error{Kind: KindInternal, Err: err}
}
