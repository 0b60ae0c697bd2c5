package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"regexp"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/decision"
)

// HandlerFunc is an agent written in Go, for loops that do not fit the
// declarative form: it gets the request body and an Env holding the
// project's bindings and its model, and returns the response body (any
// value encoding/json can marshal). Errors classified as *agentd.Error
// answer with their kind's status; others are 500s.
type HandlerFunc func(ctx context.Context, env *Env, input json.RawMessage) (any, error)

// Env is what a Go handler works with during one request: the same
// bindings declared agents use, and the model behind agentd's retries,
// fallbacks, limits and audit. It is made anew for each request, so its
// step and token limits count that request's calls.
type Env struct {
	Agent     string
	KV        agentd.KV
	Blob      agentd.Blob
	DB        agentd.DB
	Decisions *decision.Store
	Clock     agentd.Clock
	Logger    *slog.Logger

	caller caller
	meter  *meter
	userID string
}

// SetUser names the user the request is for, for the audit of the model
// calls that follow.
func (e *Env) SetUser(userID string) { e.userID = userID }

// Generate calls the model. The call counts against the agent's limits
// and is audited like a declared agent's.
func (e *Env) Generate(ctx context.Context, req agentd.ModelRequest) (agentd.ModelResponse, error) {
	if req.Model == "" {
		req.Model = e.caller.defaultModel
	}
	return e.caller.call(ctx, e.meter, callMeta{userID: e.userID, kind: callTurn, source: SourceModel}, req)
}

// Structured asks the model for an answer that matches schema, as task
// agents do: a forced call of RespondTool, validated, repaired once with
// the violations fed back. It returns the decoded answer and the usage of
// every call made; an answer still invalid after the repair is
// KindInvalidModelOutput listing the violations.
func (e *Env) Structured(ctx context.Context, req agentd.ModelRequest, schema *Schema) (any, agentd.Usage, error) {
	if req.Model == "" {
		req.Model = e.caller.defaultModel
	}
	s, err := e.caller.structured(ctx, e.meter, callMeta{userID: e.userID, kind: callTurn, source: SourceModel}, req, schema)
	return s.output, s.usage, err
}

// CustomDeps are what a Go handler's Env holds.
type CustomDeps struct {
	Model     agentd.Model
	ModelName string // the model a request that names none is sent to
	KV        agentd.KV
	Blob      agentd.Blob
	DB        agentd.DB
	Decisions *decision.Store
	Audit     Auditor
	Clock     agentd.Clock
	Logger    *slog.Logger
	Limits    Limits
	Telemetry Telemetry
	Guard     *Guard
}

// Custom is an agent served by a Go handler.
type Custom struct {
	name string
	h    HandlerFunc
	deps CustomDeps
}

var handlerNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// NewCustom returns the agent named name served by h.
func NewCustom(name string, h HandlerFunc, deps CustomDeps) (*Custom, error) {
	if !handlerNamePattern.MatchString(name) {
		return nil, agentd.Errorf(agentd.KindInvalid, "agent", "agent name %q must be lowercase letters, digits, '-' or '_'", name)
	}
	if h == nil {
		return nil, agentd.Errorf(agentd.KindInvalid, "agent", "agent %q has no handler", name)
	}
	if deps.Clock == nil {
		deps.Clock = agentd.SystemClock{}
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	return &Custom{name: name, h: h, deps: deps}, nil
}

// Name is the agent's name.
func (c *Custom) Name() string { return c.name }

// Run calls the handler with a fresh Env and encodes its answer.
func (c *Custom) Run(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	d := c.deps
	env := &Env{
		Agent: c.name, KV: d.KV, Blob: d.Blob, DB: d.DB, Decisions: d.Decisions, Clock: d.Clock, Logger: d.Logger,
		caller: caller{agent: c.name, model: d.Model, audit: d.Audit, clock: d.Clock, tel: d.Telemetry, guard: d.Guard, log: d.Logger, defaultModel: d.ModelName},
		meter:  newMeter(d.Limits),
	}
	if err := d.Guard.admit(ctx, c.name, "", d.Telemetry.Metrics); err != nil {
		return nil, err
	}
	out, err := c.h(ctx, env, input)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, agentd.E(agentd.KindInternal, "agent."+c.name, err)
	}
	return b, nil
}
