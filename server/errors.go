package server

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"

	"github.com/agentd/agentd"
)

// errorBody is the one error shape of the API:
// {"error":{"type":"…","message":"…"}}, plus the field at fault and the
// upstream's own classification when there is one.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Type     string           `json:"type"`
	Message  string           `json:"message"`
	Field    string           `json:"field,omitempty"`
	Upstream *agentd.Upstream `json:"upstream,omitempty"`
}

// writeError answers with err's kind's status and the error shape. Internal
// errors are logged in full and answered without their details.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	kind := agentd.KindOf(err)
	detail := errorDetail{Type: string(kind), Message: clientMessage(err)}
	var retryAfter float64
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
		if retryAfter == 0 {
			retryAfter = ae.RetryAfter.Seconds()
		}
		e = ae
	}
	status := kind.HTTPStatus()
	switch {
	case status >= 500 && kind == agentd.KindInternal:
		s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		detail.Message = "internal error"
	case status >= 500:
		s.logger.Warn("request failed", "method", r.Method, "path", r.URL.Path, "type", kind, "error", err)
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retryAfter))))
	}
	writeJSON(w, status, errorBody{Error: detail})
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
