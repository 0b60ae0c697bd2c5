package server

import (
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// statusWriter remembers the status a handler answered with, for metrics
// and spans. Unwrap lets http.ResponseController reach the connection's
// Flusher, which streaming answers need.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observed runs an agent request inside a server span — continuing the
// caller's trace when it sent a traceparent — and counts it in the
// request metrics by agent and status.
func (s *Server) observed(w http.ResponseWriter, r *http.Request, agentName string, h func(http.ResponseWriter, *http.Request)) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	if s.cfg.Tracer != nil {
		ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := s.cfg.Tracer.Start(ctx, r.Method+" /agents/{name}", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				attribute.String("http.request.method", r.Method),
				attribute.String("http.route", "/agents/{name}"),
				attribute.String("gen_ai.agent.name", agentName),
			))
		defer func() {
			span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
			if sw.status >= 500 {
				span.SetStatus(codes.Error, strconv.Itoa(sw.status))
			}
			span.End()
		}()
		r = r.WithContext(ctx)
	}
	h(sw, r)
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	s.cfg.Metrics.Request(agentName, sw.status, time.Since(start))
}
