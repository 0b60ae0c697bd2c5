package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/decision"
	"github.com/agentd/agentd/telemetry"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a Server: the agents it serves and its limits.
type Config struct {
	Chats     map[string]*agent.Chat   // the chat agents, by name
	Tasks     map[string]*agent.Task   // the task agents, by name
	Customs   map[string]*agent.Custom // agents written in Go, by name
	Decisions *decision.Store          // the decision ledger and review queue; nil without task agents

	MaxBodyBytes   int64         // request bodies over this are refused with 413
	RequestTimeout time.Duration // 0: none beyond the client's
	Logger         *slog.Logger
	// Ready reports whether the stores answer; nil means always ready.
	Ready func(ctx context.Context) error
	// DevWebhooks serves a webhook sink at /_dev/webhooks/{name}, for
	// agentd dev only.
	DevWebhooks bool
	// Auditor answers GET /usage from the audit log; nil: no /usage.
	Auditor *telemetry.Auditor
	// Metrics counts requests and serves GET /metrics; nil: neither.
	Metrics *telemetry.Metrics
	// Tracer spans agent requests; nil: none.
	Tracer trace.Tracer
}

// Server is agentd's HTTP API.
type Server struct {
	chats  map[string]*agent.Chat
	tasks  map[string]*agent.Task
	cfg    Config
	logger *slog.Logger
	mux    *http.ServeMux
	sink   devSink
}

// New returns a Server for the agents of cfg.
func New(cfg Config) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	s := &Server{chats: cfg.Chats, tasks: cfg.Tasks, cfg: cfg, logger: cfg.Logger, mux: http.NewServeMux()}
	if s.logger == nil {
		s.logger = discardLogger()
	}
	// Routes are registered without methods and dispatched by route, so a
	// wrong method gets the JSON error shape and an Allow header rather than
	// the mux's plain-text 405.
	s.route("/agents/{name}", map[string]http.HandlerFunc{http.MethodPost: s.agentRequest})
	s.route("/agents/{name}/conversations/{userId}", map[string]http.HandlerFunc{
		http.MethodGet:    s.getConversation,
		http.MethodDelete: s.deleteConversation,
	})
	s.route("/reviews", map[string]http.HandlerFunc{http.MethodGet: s.listReviews})
	s.route("/reviews/{id}", map[string]http.HandlerFunc{http.MethodGet: s.getReview})
	s.route("/reviews/{id}/approve", map[string]http.HandlerFunc{http.MethodPost: s.approveReview})
	s.route("/reviews/{id}/reject", map[string]http.HandlerFunc{http.MethodPost: s.rejectReview})
	s.route("/decisions/{id}", map[string]http.HandlerFunc{http.MethodGet: s.getDecision})
	if cfg.DevWebhooks {
		s.sink.hooks = map[string][]devHook{}
		s.route("/_dev/webhooks/{name}", map[string]http.HandlerFunc{http.MethodGet: s.devWebhook, http.MethodPost: s.devWebhook})
	}
	if cfg.Auditor != nil {
		s.route("/usage", map[string]http.HandlerFunc{http.MethodGet: s.usage})
	}
	if cfg.Metrics != nil {
		metrics := cfg.Metrics.Handler()
		s.route("/metrics", map[string]http.HandlerFunc{http.MethodGet: metrics.ServeHTTP})
	}
	s.route("/healthz", map[string]http.HandlerFunc{http.MethodGet: s.healthz})
	s.route("/readyz", map[string]http.HandlerFunc{http.MethodGet: s.readyz})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, agentd.Errorf(agentd.KindNotFound, "route", "no route for %s %s", r.Method, r.URL.Path))
	})
	return s
}

func (s *Server) route(pattern string, methods map[string]http.HandlerFunc) {
	allowed := make([]string, 0, len(methods)+1)
	for m := range methods {
		allowed = append(allowed, m)
	}
	if _, ok := methods[http.MethodGet]; ok {
		allowed = append(allowed, http.MethodHead)
	}
	slices.Sort(allowed)
	allow := strings.Join(allowed, ", ")
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		h, ok := methods[method]
		if !ok {
			w.Header().Set("Allow", allow)
			s.writeError(w, r, agentd.Errorf(agentd.KindMethodNotAllowed, "route", "%s is not allowed on %s; use %s", r.Method, r.URL.Path, allow))
			return
		}
		h(w, r)
	})
}

// ServeHTTP implements http.Handler. A panic in a handler is answered with
// a 500 in the error shape and logged; the process keeps serving.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.logger.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", v)
			s.writeError(w, r, agentd.Errorf(agentd.KindInternal, "server", "panic: %v", v))
		}
	}()
	s.mux.ServeHTTP(w, r)
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) (*agent.Chat, bool) {
	name := r.PathValue("name")
	c, ok := s.chats[name]
	if !ok {
		if _, isTask := s.tasks[name]; isTask {
			s.writeError(w, r, agentd.Errorf(agentd.KindNotFound, "agent", "agent %q is a task agent: it has no conversations", name))
		} else {
			s.writeError(w, r, agentd.Errorf(agentd.KindNotFound, "agent", "no agent named %q", name))
		}
	}
	return c, ok
}

// agentRequest dispatches POST /agents/{name} by the agent's kind.
func (s *Server) agentRequest(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if t, ok := s.tasks[name]; ok {
		s.observed(w, r, name, func(w http.ResponseWriter, r *http.Request) { s.taskRequest(w, r, t) })
		return
	}
	if c, ok := s.cfg.Customs[name]; ok {
		s.observed(w, r, name, func(w http.ResponseWriter, r *http.Request) { s.customRequest(w, r, c) })
		return
	}
	if _, ok := s.chats[name]; ok {
		s.observed(w, r, name, s.chatTurn)
		return
	}
	s.chatTurn(w, r) // answers 404 naming the agent
}

// withTimeout bounds a request's work by the configured timeout.
func (s *Server) withTimeout(r *http.Request) (context.Context, context.CancelFunc) {
	if s.cfg.RequestTimeout > 0 {
		return context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	}
	return context.WithCancel(r.Context())
}

// chatRequest is the body of POST /agents/{name}: the contract of the
// Workers chat agent, so its clients keep working.
type chatRequest struct {
	UserID  *string `json:"userId"`
	Message *string `json:"message"`
	// Stream asks for the answer as server-sent events, as an Accept:
	// text/event-stream header does.
	Stream bool `json:"stream"`
}

func (s *Server) chatTurn(w http.ResponseWriter, r *http.Request) {
	c, ok := s.chat(w, r)
	if !ok {
		return
	}
	var req chatRequest
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	switch {
	case req.UserID == nil:
		s.writeError(w, r, agentd.InvalidField("chat", "userId", "missing field userId"))
		return
	case req.Message == nil:
		s.writeError(w, r, agentd.InvalidField("chat", "message", "missing field message"))
		return
	}
	ctx, cancel := s.withTimeout(r)
	defer cancel()
	if req.Stream || acceptsEventStream(r) {
		s.streamTurn(ctx, w, r, c, *req.UserID, *req.Message)
		return
	}
	start := time.Now()
	res, err := c.Turn(ctx, *req.UserID, *req.Message)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Server-Timing splits the turn into the model's time and the total, so
	// a client (or agentd bench) can see the runtime's own overhead.
	w.Header().Set("Server-Timing", fmt.Sprintf("model;dur=%.3f, total;dur=%.3f", ms(res.ModelLatency), ms(time.Since(start))))
	writeJSON(w, http.StatusOK, res)
}

// conversationResponse is a stored conversation, oldest message first.
type conversationResponse struct {
	Agent     string         `json:"agent"`
	UserID    string         `json:"userId"`
	Messages  []conversation `json:"messages"`
	Turns     int            `json:"turns"`
	UpdatedAt *time.Time     `json:"updatedAt,omitempty"`
}

type conversation struct {
	Role    agentd.Role `json:"role"`
	Content string      `json:"content"`
	At      *time.Time  `json:"at,omitempty"`
}

func (s *Server) getConversation(w http.ResponseWriter, r *http.Request) {
	c, ok := s.chat(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.withTimeout(r)
	defer cancel()
	conv, err := c.History(ctx, r.PathValue("userId"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	resp := conversationResponse{Agent: c.Name(), UserID: conv.UserID, Messages: make([]conversation, len(conv.Messages)), Turns: conv.Turns()}
	for i, m := range conv.Messages {
		resp.Messages[i] = conversation{Role: m.Role, Content: m.Content}
		if !m.At.IsZero() {
			resp.Messages[i].At = &m.At
		}
	}
	if !conv.UpdatedAt.IsZero() {
		resp.UpdatedAt = &conv.UpdatedAt
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) deleteConversation(w http.ResponseWriter, r *http.Request) {
	c, ok := s.chat(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.withTimeout(r)
	defer cancel()
	if err := c.Forget(ctx, r.PathValue("userId")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			s.writeError(w, r, &agentd.Error{Kind: agentd.KindStorageUnavailable, Op: "readyz", Message: "not ready: " + err.Error(), Err: err})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
