package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/decision"
)

// The sources of an answer: what produced a task's output or a chat reply.
const (
	SourceModel         = "model"          // the agent's model
	SourceFallbackModel = "fallback_model" // another model of the fallback chain
	SourceCache         = "cache"          // a previous answer to the same input
	SourceRules         = "rules"          // a rule of the fallback chain
	SourceCanned        = "canned"         // the fixed reply of last resort, queued for review
	SourcePrecondition  = "precondition"   // a precondition failed: its fixed output, no model call
)

// TaskConfig declares a task agent: a record in, context gathered, one
// decision in a fixed shape out, side effects applied exactly once.
type TaskConfig struct {
	Name       string
	Model      string
	ModelLabel string // what responses report as the model; default the model's own name
	MaxTokens  int

	Input  *Schema // requests must match it (400 listing every violation)
	Output *Schema // answers must match it (one repair, then 502)

	System *Template // the system prompt
	Prompt *Template // the user message, after the attached context

	Sources       []Source
	Preconditions []Precondition
	Effects       []Effect
	Review        *ReviewRule
	// Response maps the decision to the response body (a CEL expression
	// over input, context, output and decision); nil returns the output.
	Response *Expr
	// IdempotencyKey names a decision: a repeat request with the same key
	// returns the stored result without a model call. nil: only requests
	// with an Idempotency-Key header are deduplicated.
	IdempotencyKey *Template
	// UserID names the user a request is for, for per-user limits and the
	// audit (e.g. {{.customerId}}, or {{.context.ticket.customer_id}}: it
	// is rendered once the context is gathered); nil: none.
	UserID *Template
	Vars   map[string]any
	Limits Limits
	// Cache places prompt-cache breakpoints (on unless Disabled): after
	// the system prompt and after the static context, which every request
	// shares.
	Cache CachePolicy

	Fallback TaskFallback
}

// Precondition is a rule checked after the context is gathered and before
// the model is called: when Check is false, Output is the decision and the
// model is not asked (e.g. a refund past its window is refused without
// spending tokens).
type Precondition struct {
	Name   string
	Check  *Expr
	Output any // valid against the output schema (checked at load)
}

// ReviewRule holds a decision for a human when its condition is true: the
// effects are not applied; the decision waits in the review queue.
type ReviewRule struct {
	When   *Expr
	Reason string
}

// Rule is a fixed answer for inputs a condition recognizes, used when
// the models are unavailable.
type Rule struct {
	Name   string
	When   *Expr
	Output any
}

// TaskFallback is what answers, in order, when the agent's model is
// unavailable: other models, a previous answer to the same input, rules,
// and last a canned answer that always goes to review.
type TaskFallback struct {
	Models []string
	Cache  bool
	Rules  []Rule
	Canned any // nil: none
}

// TaskDeps are what a task agent uses.
type TaskDeps struct {
	Model     agentd.Model
	Sources   SourceDeps
	Effects   EffectDeps // its Decisions, Locks and KV serve the task too
	Audit     Auditor
	Clock     agentd.Clock
	Logger    *slog.Logger
	Telemetry Telemetry
	// Guard holds the agent to its rate limit and budgets; nil: none.
	Guard *Guard
}

// Task is a task agent.
type Task struct {
	cfg     TaskConfig
	deps    TaskDeps
	waves   [][]int
	static  []bool // per source: reads the same for every request
	caller  caller
	applier applier
	logger  *slog.Logger
}

// NewTask checks cfg and returns the agent.
func NewTask(cfg TaskConfig, deps TaskDeps) (*Task, error) {
	if cfg.MaxTokens == 0 {
		cfg.MaxTokens = DefaultMaxTokens
	}
	if cfg.Output == nil || !cfg.Output.IsObject() {
		return nil, agentd.Errorf(agentd.KindInvalid, "task", "agent %q: the output schema must describe a JSON object (it becomes a tool's input schema)", cfg.Name)
	}
	if cfg.Prompt == nil {
		return nil, agentd.Errorf(agentd.KindInvalid, "task", "agent %q: a prompt template is required", cfg.Name)
	}
	waves, err := SourceOrder(cfg.Sources)
	if err != nil {
		return nil, err
	}
	for _, p := range cfg.Preconditions {
		if vs := cfg.Output.Validate(p.Output); len(vs) > 0 {
			return nil, &agentd.Error{Kind: agentd.KindInvalid, Op: "task", Message: fmt.Sprintf("agent %q: the output of precondition %q does not match the output schema", cfg.Name, p.Name), Violations: vs}
		}
	}
	for _, r := range cfg.Fallback.Rules {
		if vs := cfg.Output.Validate(r.Output); len(vs) > 0 {
			return nil, &agentd.Error{Kind: agentd.KindInvalid, Op: "task", Message: fmt.Sprintf("agent %q: the output of fallback rule %q does not match the output schema", cfg.Name, r.Name), Violations: vs}
		}
	}
	if cfg.Fallback.Canned != nil {
		if vs := cfg.Output.Validate(cfg.Fallback.Canned); len(vs) > 0 {
			return nil, &agentd.Error{Kind: agentd.KindInvalid, Op: "task", Message: fmt.Sprintf("agent %q: the canned fallback output does not match the output schema", cfg.Name), Violations: vs}
		}
	}
	if deps.Clock == nil {
		deps.Clock = agentd.SystemClock{}
	}
	if deps.Effects.Clock == nil {
		deps.Effects.Clock = deps.Clock
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Task{cfg: cfg, deps: deps, waves: waves, logger: logger,
		caller: caller{agent: cfg.Name, model: deps.Model, audit: deps.Audit, clock: deps.Clock, tel: deps.Telemetry, guard: deps.Guard, log: logger}}
	t.applier = applier{deps: deps.Effects, headers: t.effectHeaders}
	staticByName := map[string]bool{}
	t.static = make([]bool, len(cfg.Sources))
	for _, wave := range waves {
		for _, i := range wave {
			t.static[i] = cfg.Sources[i].static(staticByName)
			staticByName[cfg.Sources[i].Name] = t.static[i]
		}
	}
	return t, nil
}

// Name is the agent's name.
func (t *Task) Name() string { return t.cfg.Name }

func (t *Task) effectHeaders(name string) map[string]*Template {
	for _, e := range t.cfg.Effects {
		if e.Name == name {
			return e.Headers
		}
	}
	return nil
}

// TaskRequest is one request to a task agent.
type TaskRequest struct {
	Input json.RawMessage
	// IdempotencyKey, from the request's Idempotency-Key header, names the
	// decision when the agent declares no key of its own.
	IdempotencyKey string
}

// TaskResult is the outcome of a request.
type TaskResult struct {
	Response   json.RawMessage // the response body
	DecisionID string
	Source     string
	Status     decision.Status
	ReviewID   string
	Replayed   bool // the stored result of an earlier request with the same key
	Usage      agentd.Usage
	// ModelLatency is the model calls' own time, to tell the runtime's
	// overhead from the model's.
	ModelLatency time.Duration
}

// MaxIdempotencyKeyBytes bounds an idempotency key.
const MaxIdempotencyKeyBytes = 512

// Run handles one request: validate the input, return the stored result
// of a repeat, gather context, check preconditions, ask the model (with
// repair and fallbacks), record the decision, then apply its effects —
// or hold them for review.
func (t *Task) Run(ctx context.Context, req TaskRequest) (*TaskResult, error) {
	const op = "task"
	input, vs := t.validateInput(req.Input)
	if len(vs) > 0 {
		return nil, &agentd.Error{Kind: agentd.KindInvalid, Op: op, Message: "the input does not match the agent's input schema: " + strings.Join(vs, "; "), Violations: vs}
	}
	now := t.deps.Clock.Now().UTC()
	tdata := TemplateData{Input: input, Vars: t.cfg.Vars}
	key, err := t.idempotencyKey(tdata, req.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	if key == "" {
		return t.decide(ctx, input, "", now)
	}
	// One decision per key: duplicates wait here, then find it made.
	lease, err := t.deps.Effects.Locks.Lock(ctx, "task:"+t.cfg.Name+":"+key)
	if err != nil {
		return nil, err
	}
	defer lease.Unlock()
	rec, err := t.deps.Effects.Decisions.ByIdempotencyKey(ctx, t.cfg.Name, key)
	switch {
	case err == nil:
		return t.replay(ctx, rec, input)
	case agentd.KindOf(err) != agentd.KindNotFound:
		return nil, err
	}
	return t.decide(ctx, input, key, now)
}

func (t *Task) validateInput(raw json.RawMessage) (any, []string) {
	if t.cfg.Input == nil {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, []string{"(root): not valid JSON"}
		}
		return v, nil
	}
	return t.cfg.Input.ValidateJSON(raw)
}

func (t *Task) idempotencyKey(tdata TemplateData, header string) (string, error) {
	key := header
	if t.cfg.IdempotencyKey != nil {
		k, err := t.cfg.IdempotencyKey.Execute(tdata)
		if err != nil {
			return "", err
		}
		key = k
	}
	if len(key) > MaxIdempotencyKeyBytes {
		return "", agentd.InvalidField("task", "idempotency_key", "the idempotency key is longer than %d bytes", MaxIdempotencyKeyBytes)
	}
	return key, nil
}

// replay returns a stored decision, finishing its effects first if a
// crash or a failed effect left them pending.
func (t *Task) replay(ctx context.Context, rec *decision.Record, input any) (*TaskResult, error) {
	if rec.Status == decision.StatusPending {
		var out any
		_ = json.Unmarshal(rec.Output, &out)
		applied, err := t.applier.apply(ctx, rec.ID, TemplateData{Input: input, Output: out, Vars: t.cfg.Vars, Decision: decisionData(rec)})
		if err != nil {
			return nil, err
		}
		rec = applied
	}
	return &TaskResult{Response: rec.Response, DecisionID: rec.ID, Source: rec.Source, Status: rec.Status, ReviewID: rec.ReviewID, Replayed: true}, nil
}

func decisionData(rec *decision.Record) map[string]any {
	return map[string]any{"id": rec.ID, "agent": rec.Agent, "at": rec.At.Format(time.RFC3339Nano)}
}

// answer is an output and what produced it.
type answer struct {
	output  any
	raw     json.RawMessage
	source  string
	model   string
	usage   agentd.Usage
	latency time.Duration
	steps   int
	review  string // a reason to hold it for review regardless of the rule
}

func (t *Task) decide(ctx context.Context, input any, key string, now time.Time) (*TaskResult, error) {
	start := t.deps.Clock.Now()
	got, values, err := gather(ctx, t.deps.Sources, t.cfg.Sources, t.waves, input, t.cfg.Vars, now)
	if err != nil {
		return nil, err
	}
	userID := ""
	if t.cfg.UserID != nil {
		// After the context: a user is often known only from the record
		// (the ticket's customer).
		if userID, err = t.cfg.UserID.Execute(TemplateData{Input: input, Context: values, Vars: t.cfg.Vars}); err != nil {
			return nil, agentd.E("", "task.user", err)
		}
	}
	if err := t.caller.guard.admit(ctx, t.cfg.Name, userID, t.caller.tel.Metrics); err != nil {
		return nil, err
	}
	edata := ExprData{Input: input, Context: values, Vars: t.cfg.Vars, Now: now}
	m := newMeter(t.cfg.Limits)
	ans, err := t.precondition(edata)
	if err != nil {
		return nil, err
	}
	if ans == nil {
		if ans, err = t.ask(ctx, m, got, values, input, userID, edata); err != nil {
			return nil, err
		}
		if ans.source != SourceModel {
			t.caller.tel.Metrics.Fallback(t.cfg.Name, ans.source)
		}
	}
	edata.Output = ans.output

	rec := &decision.Record{
		ID:             decision.NewID(),
		Agent:          t.cfg.Name,
		IdempotencyKey: key,
		InputHash:      hashInput(input),
		At:             now,
		Status:         decision.StatusPending,
		Source:         ans.source,
		Model:          ans.model,
		Usage:          ans.usage,
		Steps:          ans.steps,
	}
	rec.CostNanoUSD, _ = t.caller.tel.Pricing.Cost(ans.model, ans.usage)
	if rec.Input, err = json.Marshal(input); err != nil {
		return nil, agentd.E(agentd.KindInternal, "task", err)
	}
	rec.Output = ans.raw
	if rec.Output == nil {
		if rec.Output, err = json.Marshal(ans.output); err != nil {
			return nil, agentd.E(agentd.KindInternal, "task", err)
		}
	}
	refs := map[string]any{}
	for i, s := range t.cfg.Sources {
		refs[s.Name] = got[i].ref
	}
	if rec.ContextRefs, err = json.Marshal(refs); err != nil {
		return nil, agentd.E(agentd.KindInternal, "task", err)
	}
	edata.Decision = decisionData(rec)
	tdata := TemplateData{Input: input, Context: values, Output: ans.output, Vars: t.cfg.Vars, Decision: edata.Decision}

	var review *decision.Review
	reason := ans.review
	if reason == "" && t.cfg.Review != nil {
		hold, err := t.cfg.Review.When.Bool(edata)
		if err != nil {
			return nil, err
		}
		if hold {
			reason = t.cfg.Review.Reason
			if reason == "" {
				reason = t.cfg.Review.When.String()
			}
		}
	}
	for _, e := range t.cfg.Effects {
		if e.When != nil {
			ok, err := e.When.Bool(edata)
			if err != nil {
				return nil, agentd.E("", "effect."+e.Name, err)
			}
			if !ok {
				continue
			}
		}
		r, err := e.render(tdata, edata)
		if err != nil {
			return nil, agentd.E("", "effect."+e.Name, err)
		}
		rec.Effects = append(rec.Effects, r)
	}
	body, err := t.response(edata, ans.source, reason != "")
	if err != nil {
		return nil, err
	}
	rec.Response = body
	rec.Latency = t.deps.Clock.Now().Sub(start)
	if reason != "" {
		payload, _ := json.Marshal(map[string]any{"input": input, "output": ans.output, "source": ans.source, "effects": effectSummary(rec.Effects)})
		review = &decision.Review{UserID: userID, Reason: reason, Payload: payload}
	}
	if err := t.deps.Effects.Decisions.Create(ctx, rec, review); err != nil {
		if agentd.KindOf(err) == agentd.KindConflict && key != "" {
			// Another node decided under this key first (its lock lapsed):
			// its decision stands; ours is dropped unapplied.
			if other, gerr := t.deps.Effects.Decisions.ByIdempotencyKey(ctx, t.cfg.Name, key); gerr == nil {
				return t.replay(ctx, other, input)
			}
		}
		return nil, err
	}
	res := &TaskResult{Response: body, DecisionID: rec.ID, Source: ans.source, Status: rec.Status, ReviewID: rec.ReviewID, Usage: ans.usage, ModelLatency: ans.latency}
	if review != nil {
		return res, nil
	}
	applied, err := t.applier.apply(ctx, rec.ID, tdata)
	if err != nil {
		return nil, err
	}
	res.Status = applied.Status
	return res, nil
}

// precondition returns the fixed answer of the first failing
// precondition, or nil when all hold.
func (t *Task) precondition(edata ExprData) (*answer, error) {
	for _, p := range t.cfg.Preconditions {
		ok, err := p.Check.Bool(edata)
		if err != nil {
			return nil, agentd.E("", "precondition."+p.Name, err)
		}
		if !ok {
			return &answer{output: p.Output, source: SourcePrecondition}, nil
		}
	}
	return nil, nil
}

// ask gets the decision from the model, or from the fallback chain when
// the model is unavailable.
func (t *Task) ask(ctx context.Context, m *meter, got []gathered, values map[string]any, input any, userID string, edata ExprData) (*answer, error) {
	req, staticBlocks, err := t.request(got, values, input)
	if err != nil {
		return nil, err
	}
	models := append([]string{t.cfg.Model}, t.cfg.Fallback.Models...)
	var firstErr error
	for i, model := range models {
		source := SourceModel
		if i > 0 {
			source = SourceFallbackModel
		}
		r := req
		r.Model = model
		// The respond tool comes first in the prompt; place breakpoints on
		// the request as it will be sent.
		r.Tools = []agentd.Tool{respondTool(t.cfg.Output)}
		PlaceCacheBreakpoints(&r, t.cachePolicy(staticBlocks))
		s, err := t.caller.structured(ctx, m, callMeta{userID: userID, kind: callTurn, source: source}, r, t.cfg.Output)
		if err == nil {
			label := s.model
			if t.cfg.ModelLabel != "" {
				label = t.cfg.ModelLabel
			}
			return &answer{output: s.output, raw: s.raw, source: source, model: label, usage: s.usage, latency: s.latency, steps: s.steps}, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if !unavailable(ctx, err) {
			return nil, err
		}
		t.logger.Warn("model unavailable; trying the next fallback", "agent", t.cfg.Name, "model", model, "error", err)
	}
	fb := t.cfg.Fallback
	if fb.Cache {
		rec, err := t.deps.Effects.Decisions.LatestForInput(ctx, t.cfg.Name, hashInput(input))
		if err == nil {
			var out any
			if json.Unmarshal(rec.Output, &out) == nil {
				return &answer{output: out, raw: rec.Output, source: SourceCache, model: rec.Model}, nil
			}
		}
	}
	for _, r := range fb.Rules {
		ok, err := r.When.Bool(edata)
		if err != nil {
			return nil, agentd.E("", "rule."+r.Name, err)
		}
		if ok {
			return &answer{output: r.Output, source: SourceRules}, nil
		}
	}
	if fb.Canned != nil {
		return &answer{output: fb.Canned, source: SourceCanned, review: "the model was unavailable; a canned answer was given: " + clientText(firstErr)}, nil
	}
	return nil, firstErr
}

// request builds the model request: the system prompt, then in the user
// message the attached context — static sources first, which every
// request shares, then the request's own — and the prompt.
func (t *Task) request(got []gathered, values map[string]any, input any) (agentd.ModelRequest, int, error) {
	tdata := TemplateData{Input: input, Context: values, Vars: t.cfg.Vars}
	req := agentd.ModelRequest{Model: t.cfg.Model, MaxTokens: t.cfg.MaxTokens}
	if t.cfg.System != nil {
		sys, err := t.cfg.System.Execute(tdata)
		if err != nil {
			return req, 0, agentd.E("", "prompt.system", err)
		}
		req.System = agentd.SystemText(sys)
	}
	var static, dynamic []agentd.Block
	for i := range t.cfg.Sources {
		if t.static[i] {
			static = append(static, got[i].blocks...)
		} else {
			dynamic = append(dynamic, got[i].blocks...)
		}
	}
	prompt, err := t.cfg.Prompt.Execute(tdata)
	if err != nil {
		return req, 0, agentd.E("", "prompt.user", err)
	}
	if strings.TrimSpace(prompt) == "" {
		return req, 0, agentd.Errorf(agentd.KindInvalid, "prompt.user", "agent %q: the prompt rendered empty", t.cfg.Name)
	}
	content := append(append(static, dynamic...), agentd.TextBlock(prompt))
	req.Messages = []agentd.Message{{Role: agentd.RoleUser, Content: content}}
	return req, len(static), nil
}

// cachePolicy is the agent's, with the static context blocks marked.
func (t *Task) cachePolicy(staticBlocks int) CachePolicy {
	p := t.cfg.Cache
	p.StaticContextBlocks = staticBlocks
	return p
}

// response renders the body: the mapped response (or the output) with the
// source that answered and, when held, the review.
func (t *Task) response(edata ExprData, source string, held bool) (json.RawMessage, error) {
	var body any = edata.Output
	if t.cfg.Response != nil {
		v, err := t.cfg.Response.Value(edata)
		if err != nil {
			return nil, agentd.E("", "response", err)
		}
		body = v
	}
	if obj, ok := body.(map[string]any); ok {
		out := make(map[string]any, len(obj)+2)
		for k, v := range obj {
			out[k] = v
		}
		if _, taken := out["source"]; !taken {
			out["source"] = source
		}
		if held {
			if _, taken := out["review"]; !taken {
				out["review"] = "pending"
			}
		}
		body = out
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, agentd.E(agentd.KindInternal, "response", err)
	}
	return b, nil
}

// effectSummary describes planned effects for a reviewer, without values
// that may be secret.
func effectSummary(effects []decision.Effect) []map[string]any {
	out := make([]map[string]any, len(effects))
	for i, e := range effects {
		s := map[string]any{"name": e.Name, "kind": e.Kind}
		switch EffectKind(e.Kind) {
		case EffectSQL:
			var spec sqlSpec
			_ = json.Unmarshal(e.Spec, &spec)
			s["sql"] = spec.SQL
		case EffectKV:
			var spec kvSpec
			_ = json.Unmarshal(e.Spec, &spec)
			s["key"] = spec.Key
		case EffectHTTP:
			var spec httpSpec
			_ = json.Unmarshal(e.Spec, &spec)
			s["url"] = RedactURL(spec.URL)
		}
		out[i] = s
	}
	return out
}

// hashInput identifies an input by content: encoding/json writes map keys
// sorted, so equal inputs hash equal whatever their field order was.
func hashInput(input any) string {
	b, _ := json.Marshal(input)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Approve approves a held decision's review and applies its effects
// exactly once. Approving an item that is approved and whose effects are
// all applied, or a rejected one, fails with KindConflict; approving one
// whose effects an earlier approval could not finish resumes them.
func (t *Task) Approve(ctx context.Context, reviewID, reviewer, note string) (*decision.Review, *decision.Record, error) {
	store := t.deps.Effects.Decisions
	rv, err := store.Approve(ctx, reviewID, reviewer, note)
	if err != nil {
		if agentd.KindOf(err) != agentd.KindConflict {
			return nil, nil, err
		}
		cur, gerr := store.Review(ctx, reviewID)
		if gerr != nil || cur.Status != decision.ReviewApproved || cur.DecisionID == "" {
			return nil, nil, err
		}
		rec, gerr := store.Get(ctx, cur.DecisionID)
		if gerr != nil || rec.Status != decision.StatusPending {
			return nil, nil, err
		}
		rv = cur // an approval whose effects did not finish: resume them
	}
	if rv.DecisionID == "" {
		return rv, nil, nil
	}
	rec, err := store.Get(ctx, rv.DecisionID)
	if err != nil {
		return rv, nil, err
	}
	var input, output any
	_ = json.Unmarshal(rec.Input, &input)
	_ = json.Unmarshal(rec.Output, &output)
	rec, err = t.applier.apply(ctx, rec.ID, TemplateData{Input: input, Output: output, Vars: t.cfg.Vars, Decision: decisionData(rec)})
	return rv, rec, err
}

// Resume applies the effects of this agent's decisions that were left
// pending — by a crash between recording a decision and applying its
// effects, or by a failed effect nobody retried — for decisions untouched
// for at least idle. It returns how many it finished; failures are logged
// and left for the next round.
func (t *Task) Resume(ctx context.Context, idle time.Duration) (int, error) {
	store := t.deps.Effects.Decisions
	ids, err := store.Unfinished(ctx, t.cfg.Name, t.deps.Clock.Now().Add(-idle), 100)
	if err != nil {
		return 0, err
	}
	done := 0
	for _, id := range ids {
		rec, err := store.Get(ctx, id)
		if err != nil {
			continue
		}
		var input, output any
		_ = json.Unmarshal(rec.Input, &input)
		_ = json.Unmarshal(rec.Output, &output)
		if _, err := t.applier.apply(ctx, id, TemplateData{Input: input, Output: output, Vars: t.cfg.Vars, Decision: decisionData(rec)}); err != nil {
			t.logger.Warn("resuming a decision's effects failed; will retry", "agent", t.cfg.Name, "decision", id, "error", err)
			continue
		}
		done++
	}
	return done, nil
}
