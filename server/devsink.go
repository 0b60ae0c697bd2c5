package server

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"
)

// devSink receives webhooks in development (agentd dev), so examples whose
// effects call a webhook run end to end on one machine: POST
// /_dev/webhooks/{name} records the request, GET lists what arrived.
type devSink struct {
	mu    sync.Mutex
	hooks map[string][]devHook // by name, oldest first, at most devSinkKeep each
}

// devSinkKeep bounds what the sink remembers per name.
const devSinkKeep = 100

type devHook struct {
	At             time.Time       `json:"at"`
	IdempotencyKey string          `json:"idempotencyKey,omitempty"`
	Headers        http.Header     `json:"headers"`
	Body           json.RawMessage `json:"body"`
}

func (s *Server) devWebhook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if r.Method == http.MethodGet {
		s.sink.mu.Lock()
		hooks := append([]devHook{}, s.sink.hooks[name]...)
		s.sink.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"name": name, "requests": hooks})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		s.writeError(w, r, tooLarge(s.cfg.MaxBodyBytes))
		return
	}
	if !json.Valid(body) {
		b, _ := json.Marshal(string(body))
		body = b
	}
	h := devHook{At: time.Now().UTC(), IdempotencyKey: r.Header.Get("Idempotency-Key"), Headers: http.Header{}, Body: body}
	for _, k := range []string{"Content-Type", "Agentd-Decision-Id", "Agentd-Agent", "User-Agent"} {
		if v := r.Header.Get(k); v != "" {
			h.Headers.Set(k, v)
		}
	}
	s.sink.mu.Lock()
	list := append(s.sink.hooks[name], h)
	if len(list) > devSinkKeep {
		list = list[len(list)-devSinkKeep:]
	}
	s.sink.hooks[name] = list
	s.sink.mu.Unlock()
	s.logger.Info("dev webhook received", "name", name, "idempotency_key", h.IdempotencyKey)
	writeJSON(w, http.StatusOK, map[string]any{"received": true})
}
