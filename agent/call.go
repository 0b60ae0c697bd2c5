package agent

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/telemetry"
	"go.opentelemetry.io/otel/trace"
)

// Defaults of an agent's loop limits.
const (
	DefaultMaxSteps = 5
)

// Limits bound the model calls of one request, so that no agent — a
// repair, a compaction, a fallback chain, later a tool loop — can run away:
// MaxSteps model calls at most, and no new call once MaxTokens tokens were
// spent. Hitting either ends the request with KindLoopLimit.
type Limits struct {
	MaxSteps  int   // 0 means DefaultMaxSteps
	MaxTokens int64 // 0 means no cap
}

// meter counts one request's model calls against its Limits.
type meter struct {
	limits Limits
	steps  int
	usage  agentd.Usage
}

func newMeter(l Limits) *meter {
	if l.MaxSteps <= 0 {
		l.MaxSteps = DefaultMaxSteps
	}
	return &meter{limits: l}
}

// admit reserves the next step, or says why the request must stop.
func (m *meter) admit(agent string) error {
	switch {
	case m.steps >= m.limits.MaxSteps:
		return agentd.Errorf(agentd.KindLoopLimit, "agent", "agent %q reached its limit of %d model calls for one request", agent, m.limits.MaxSteps)
	case m.limits.MaxTokens > 0 && m.usage.Total() >= m.limits.MaxTokens:
		return agentd.Errorf(agentd.KindLoopLimit, "agent", "agent %q spent %d tokens, its limit for one request is %d", agent, m.usage.Total(), m.limits.MaxTokens)
	}
	m.steps++
	return nil
}

func (m *meter) add(u agentd.Usage) { m.usage = m.usage.Add(u) }

// callKind says what a model call was for, in the audit.
type callKind string

const (
	callTurn       callKind = "model_call" // a chat turn's answer, or a task's decision
	callRepair     callKind = "repair"     // a second try after an answer broke the output schema
	callCompaction callKind = "compaction" // folding old turns into a summary
)

// callMeta describes a model call for the audit.
type callMeta struct {
	userID string
	kind   callKind
	source string // model or fallback_model
}

// Telemetry is where agents report their model calls besides the audit:
// the prices that turn usage into cost, Prometheus metrics, and
// OpenTelemetry spans. Its zero value reports nothing and prices nothing.
type Telemetry struct {
	Pricing *telemetry.Pricing
	Metrics *telemetry.Metrics
	Tracer  trace.Tracer
}

// caller makes an agent's model calls: it enforces the request's limits,
// traces each call's attempts, and audits, prices, counts and spans it
// whatever its outcome.
type caller struct {
	agent string
	model agentd.Model
	audit Auditor
	clock agentd.Clock
	tel   Telemetry
	guard *Guard
	log   *slog.Logger
	// defaultModel is what Go handlers' requests that name no model use.
	defaultModel string
}

// call sends req. Every call is audited, failed ones included, with the
// attempts and backoff the layers below reported.
func (c *caller) call(ctx context.Context, m *meter, meta callMeta, req agentd.ModelRequest) (agentd.ModelResponse, error) {
	if err := m.admit(c.agent); err != nil {
		return agentd.ModelResponse{}, err
	}
	hold, err := c.guard.reserve(ctx, c.agent, meta.userID, req, c.tel.Pricing, c.tel.Metrics)
	if err != nil {
		return agentd.ModelResponse{}, err
	}
	trace := &agentd.CallTrace{}
	start := c.clock.Now()
	ctx, span := telemetry.StartModelSpan(agentd.WithCallTrace(ctx, trace), c.tel.Tracer, c.agent, req)
	resp, err := c.model.Generate(ctx, req)
	telemetry.EndModelSpan(span, resp, err)
	ev := telemetry.AuditEvent{
		Time:    start.UTC(),
		Agent:   c.agent,
		UserID:  meta.userID,
		Kind:    string(meta.kind),
		Model:   req.Model,
		Outcome: "ok",
		Source:  meta.source,
	}
	attempts := trace.Attempts()
	ev.Attempts = max(len(attempts), 1)
	ev.RetryWait = trace.Waited()
	if err != nil {
		ae := agentd.AsError(err)
		ev.Outcome = string(ae.Kind)
		ev.Error = ae.Message
		if ae.Upstream != nil && ae.Upstream.Type != "" {
			ev.Outcome = ae.Upstream.Type
			ev.RequestID = ae.Upstream.RequestID
		}
		ev.Latency = c.clock.Now().Sub(start)
	} else {
		m.add(resp.Usage)
		ev.Usage = resp.Usage
		ev.Latency = resp.Latency
		ev.RequestID = resp.RequestID
		if resp.Model != "" {
			ev.Model = resp.Model
		}
		ev.CostNanoUSD, _ = c.tel.Pricing.Cost(ev.Model, resp.Usage)
	}
	if err := hold.settle(ctx, ev.Usage, ev.CostNanoUSD); err != nil {
		c.logger().Warn("settling a budget reservation failed; it lapses by itself", "agent", c.agent, "error", err)
	}
	if c.audit != nil {
		c.audit.Record(ev)
	}
	c.tel.Metrics.ModelCall(c.agent, req.Model, ev.Outcome, ev.Latency, ev.Usage, ev.CostNanoUSD)
	if err != nil {
		return resp, err
	}
	return resp, nil
}

func (c *caller) logger() *slog.Logger {
	if c.log != nil {
		return c.log
	}
	return slog.New(slog.DiscardHandler)
}

// unavailable reports whether err means the model could not answer now —
// down, overloaded, rate-limited, its breaker open, or too slow while the
// caller still waits — which a fallback may stand in for. A bad request,
// an invalid answer or the caller giving up is not.
func unavailable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch agentd.KindOf(err) {
	case agentd.KindModelUnavailable, agentd.KindRateLimited, agentd.KindTimeout:
		return true
	}
	return false
}

// describe names a fallback step for errors and logs.
func describe(source, model string) string {
	if model == "" {
		return source
	}
	return fmt.Sprintf("%s %s", source, model)
}
