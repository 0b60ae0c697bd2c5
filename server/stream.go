package server

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
)

// acceptsEventStream reports whether the client asked for server-sent
// events.
func acceptsEventStream(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "text/event-stream" {
			return true
		}
	}
	return false
}

// sseWriter writes server-sent events. It sends the response's headers
// with the first event, so a turn that fails before any text is answered
// with the ordinary JSON error and its honest status instead.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
	failed  bool // the client is gone: stop writing
}

func (s *sseWriter) event(name string, v any) {
	if s.failed {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		data = []byte(`{"error":{"type":"internal_error","message":"event could not be encoded"}}`)
	}
	if !s.started {
		h := s.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // proxies must not hold events back
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", name, data); err != nil {
		s.failed = true
		return
	}
	if err := s.rc.Flush(); err != nil {
		s.failed = true
	}
}

// streamTurn runs a chat turn with its answer streamed as server-sent
// events: "delta" events with {"text"} as the model writes, then one
// "done" event with the turn's result — or an "error" event with the error
// shape if the turn fails after text was sent. The history is stored only
// when the answer is whole; a client that goes away cancels the model call
// and nothing is stored.
func (s *Server) streamTurn(ctx context.Context, w http.ResponseWriter, r *http.Request, c *agent.Chat, userID, message string) {
	sse := &sseWriter{w: w, rc: http.NewResponseController(w)}
	start := time.Now()
	res, err := c.TurnStream(ctx, userID, message, func(text string) {
		sse.event("delta", map[string]string{"text": text})
	})
	if err != nil {
		if !sse.started {
			s.writeError(w, r, err)
			return
		}
		s.logStreamError(r, err)
		sse.event("error", errorBody{Error: s.errorDetail(err)})
		return
	}
	if !sse.started {
		// Nothing was streamed (an empty answer): the whole result still
		// comes as events, as the client asked.
		w.Header().Set("Server-Timing", fmt.Sprintf("model;dur=%.3f, total;dur=%.3f", ms(res.ModelLatency), ms(time.Since(start))))
	}
	sse.event("done", res)
}

func (s *Server) logStreamError(r *http.Request, err error) {
	if agentd.KindOf(err) == agentd.KindTimeout && r.Context().Err() != nil {
		return // the client went away
	}
	s.logger.Warn("streamed turn failed after sending text", "path", r.URL.Path, "type", agentd.KindOf(err), "error", err)
}
