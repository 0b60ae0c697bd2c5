package server

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/agentd/agentd"
)

// errorBody is the one error shape of the API:
// {"error":{"type":"…","message":"…"}}, plus the field at fault and the
// upstream's own classification when there is one.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Type       string           `json:"type"`
	Message    string           `json:"message"`
	Field      string           `json:"field,omitempty"`
	Violations []string         `json:"violations,omitempty"`
	Reset      *time.Time       `json:"reset,omitempty"`
	Upstream   *agentd.Upstream `json:"upstream,omitempty"`
}

// writeError answers with err's kind's status and the error shape. Internal
// errors are logged in full and answered without their details.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	kind := agentd.KindOf(err)
	detail := s.errorDetail(err)
	status := kind.HTTPStatus()
	switch {
	case status >= 500 && kind == agentd.KindInternal:
		s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	case status >= 500:
		s.logger.Warn("request failed", "method", r.Method, "path", r.URL.Path, "type", kind, "error", err)
	}
	if retryAfter := retryAfterOf(err); retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retryAfter.Seconds()))))
	}
	writeJSON(w, status, errorBody{Error: detail})
}

// errorDetail is err in the error shape: its kind, the most specific
// message, and the field, violations, budget reset and upstream
// classification found along its chain. An internal error's details are
// not shown.
func (s *Server) errorDetail(err error) errorDetail {
	kind := agentd.KindOf(err)
	detail := errorDetail{Type: string(kind), Message: clientMessage(err)}
	for e := err; e != nil; e = errors.Unwrap(e) {
		var ae *agentd.Error
		if !errors.As(e, &ae) {
			break
		}
		if detail.Field == "" {
			detail.Field = ae.Field
		}
		if detail.Upstream == nil {
			detail.Upstream = ae.Upstream
		}
		if detail.Violations == nil {
			detail.Violations = ae.Violations
		}
		if detail.Reset == nil && !ae.ResetAt.IsZero() {
			reset := ae.ResetAt.UTC()
			detail.Reset = &reset
		}
		e = ae
	}
	if kind == agentd.KindInternal {
		detail.Message = "internal error"
	}
	return detail
}

// retryAfterOf is the first wait an error in err's chain asks for.
func retryAfterOf(err error) time.Duration {
	for e := err; e != nil; e = errors.Unwrap(e) {
		var ae *agentd.Error
		if !errors.As(e, &ae) {
			break
		}
		if ae.RetryAfter > 0 {
			return ae.RetryAfter
		}
		e = ae
	}
	return 0
}

// clientMessage is the message of the innermost classified error: the most
// specific thing known about what went wrong, without the layers' prefixes.
func clientMessage(err error) string {
	msg := err.Error()
	for e := err; e != nil; e = errors.Unwrap(e) {
		if ae, ok := e.(*agentd.Error); ok && ae.Message != "" {
			msg = ae.Message
		}
	}
	return msg
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"type":"internal_error","message":"response could not be encoded"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
