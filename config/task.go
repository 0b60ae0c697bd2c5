package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/coord"
)

// ContextSource is one [[agents.context]] table: exactly one of sql, blob,
// kv and http says where the source reads from.
type ContextSource struct {
	Name     string            `toml:"name"`
	SQL      string            `toml:"sql"`
	Args     []string          `toml:"args"` // CEL expressions
	Many     bool              `toml:"many"`
	Blob     string            `toml:"blob"` // a key template
	KV       string            `toml:"kv"`   // a key template
	HTTP     string            `toml:"http"` // a URL template
	Headers  map[string]string `toml:"headers"`
	Required bool              `toml:"required"`
	Attach   *bool             `toml:"attach"`
	CacheTTL Duration          `toml:"cache_ttl"`
	MaxBytes int64             `toml:"max_bytes"`
}

// PreconditionRule is one [[agents.preconditions]] table.
type PreconditionRule struct {
	Name   string         `toml:"name"`
	Check  string         `toml:"check"`  // CEL; when false, output is the answer
	Output map[string]any `toml:"output"` // must match the output schema
}

// EffectRule is one [[agents.effects]] table: exactly one of sql, kv and
// http says what it does.
type EffectRule struct {
	Name    string            `toml:"name"`
	When    string            `toml:"when"` // CEL; empty: always
	SQL     string            `toml:"sql"`
	Args    []string          `toml:"args"` // CEL expressions
	KV      string            `toml:"kv"`   // a key template
	Value   string            `toml:"value"`
	TTL     Duration          `toml:"ttl"`
	HTTP    string            `toml:"http"` // a URL template
	Body    string            `toml:"body"` // CEL; empty: {decisionId, agent, input, output}
	Headers map[string]string `toml:"headers"`
}

// ReviewRule is [agents.review].
type ReviewRule struct {
	When   string `toml:"when"`
	Reason string `toml:"reason"`
}

// Fallback is [agents.fallback]: what answers when the agent's model is
// unavailable, tried in order.
type Fallback struct {
	Models []string       `toml:"models"`
	Cache  bool           `toml:"cache"`
	Rules  []FallbackRule `toml:"rules"`
	// Canned is the last resort: a reply text for a chat agent, an output
	// table for a task agent. It always goes to the review queue.
	Canned any `toml:"canned"`
}

// FallbackRule is one [[agents.fallback.rules]] table.
type FallbackRule struct {
	Name   string         `toml:"name"`
	When   string         `toml:"when"`   // CEL
	Output map[string]any `toml:"output"` // task agents
	Reply  string         `toml:"reply"`  // chat agents
}

// Limits is [agents.limits]: loop limits per request, a request rate per
// user, and daily budgets.
type Limits struct {
	MaxSteps  int   `toml:"max_steps"`
	MaxTokens int64 `toml:"max_tokens_per_request"`
	// Rate is requests per user (per agent for requests with no user),
	// e.g. "100/h".
	Rate             string  `toml:"rate"`
	TokensPerDay     int64   `toml:"tokens_per_day"`
	UserTokensPerDay int64   `toml:"user_tokens_per_day"`
	USDPerDay        float64 `toml:"usd_per_day"`
	UserUSDPerDay    float64 `toml:"user_usd_per_day"`

	rate *coord.Rate // parsed by Load
}

// guard builds the agent's Guard over the shared limiter and budgets; nil
// when the agent has no rate limit or budget.
func (l Limits) guard(limiter *coord.RateLimiter, budgets *coord.Budgets) *agent.Guard {
	g := &agent.Guard{
		Rate:              l.rate,
		TokensPerDay:      l.TokensPerDay,
		UserTokensPerDay:  l.UserTokensPerDay,
		NanoUSDPerDay:     int64(math.Round(l.USDPerDay * 1e9)),
		UserNanoUSDPerDay: int64(math.Round(l.UserUSDPerDay * 1e9)),
		Limiter:           limiter,
		Budgets:           budgets,
	}
	if g.Rate == nil && g.TokensPerDay == 0 && g.UserTokensPerDay == 0 && g.NanoUSDPerDay == 0 && g.UserNanoUSDPerDay == 0 {
		return nil
	}
	return g
}

// checkLimits validates and parses an agent's [agents.limits].
func (l *loader) checkLimits(a *Agent, i int) {
	lim := &a.Limits
	if lim.Rate != "" {
		r, err := coord.ParseRate(lim.Rate)
		if err != nil {
			l.add(l.at("agents", i, "limits", "rate"), "agent %q: limits.rate: %s", a.Name, clientMessage(err))
		} else {
			lim.rate = &r
		}
	}
	if lim.MaxSteps < 0 || lim.MaxTokens < 0 || lim.TokensPerDay < 0 || lim.UserTokensPerDay < 0 ||
		lim.USDPerDay < 0 || lim.UserUSDPerDay < 0 || math.IsNaN(lim.USDPerDay) || math.IsNaN(lim.UserUSDPerDay) {
		l.add(l.at("agents", i, "limits"), "agent %q: limits must not be negative", a.Name)
	}
}

// Outbound is [outbound]: where agents may send HTTP requests (http
// context sources and webhook effects).
type Outbound struct {
	// Allow lists URL prefixes; a request to anything else is refused.
	Allow []string `toml:"allow"`
	// AllowPrivate lists hosts that may resolve to private, loopback or
	// link-local addresses (which are refused otherwise).
	AllowPrivate []string `toml:"allow_private"`
	Timeout      Duration `toml:"timeout"`
}

// Seed is [seed]: demo data loaded into an empty project on first start.
type Seed struct {
	SQL  []string `toml:"sql"`  // SQL files, run once each, in order
	Blob string   `toml:"blob"` // a directory whose files are put in the blob store once, keyed by their relative paths
}

// compileTask turns a task agent's tables into an agent.TaskConfig,
// reporting every problem with its line.
func (l *loader) compileTask(cfg *Config, a *Agent, i int) {
	tc := &agent.TaskConfig{
		Name:      a.Name,
		Model:     a.Model,
		MaxTokens: a.MaxTokens,
		Limits:    agent.Limits{MaxSteps: a.Limits.MaxSteps, MaxTokens: a.Limits.MaxTokens},
		Cache:     cachePolicy(a.Cache),
	}
	ok := true
	at := func(path ...any) int { return l.at(append([]any{"agents", i}, path...)...) }
	fail := func(line int, format string, args ...any) {
		ok = false
		l.add(line, "agent %q: "+format, append([]any{a.Name}, args...)...)
	}
	tmpl := func(path []any, src string) *agent.Template {
		t, err := agent.ParseTemplate(keyPath(path), src)
		if err != nil {
			fail(at(path...), "%s: %v", keyPath(path), clientMessage(err))
		}
		return t
	}
	cond := func(path []any, src string) *agent.Expr {
		e, err := agent.CompileCondition(src)
		if err != nil {
			fail(at(path...), "%s: %v", keyPath(path), clientMessage(err))
		}
		return e
	}
	value := func(path []any, src string) *agent.Expr {
		e, err := agent.CompileValue(src)
		if err != nil {
			fail(at(path...), "%s: %v", keyPath(path), clientMessage(err))
		}
		return e
	}
	exprs := func(path []any, srcs []string) []*agent.Expr {
		out := make([]*agent.Expr, len(srcs))
		for j, s := range srcs {
			out[j] = value(append(path, j), s)
		}
		return out
	}

	if a.Input != "" {
		tc.Input = l.schema(a, at("input"), a.Input)
	}
	switch {
	case a.Output == "":
		fail(at(), "output (a JSON Schema file) is required for a task agent")
	default:
		if tc.Output = l.schema(a, at("output"), a.Output); tc.Output != nil && !tc.Output.IsObject() {
			fail(at("output"), "the output schema %s must have \"type\": \"object\": the answer is asked for as a tool call", a.Output)
			tc.Output = nil
		}
	}
	if a.SystemPrompt != "" {
		tc.System = tmpl([]any{"system"}, a.SystemPrompt)
	}
	switch prompt := l.readFile(a, at("prompt"), "prompt", a.Prompt); {
	case a.Prompt == "":
		fail(at(), "prompt (a prompt template file) is required for a task agent")
	case prompt != "":
		tc.Prompt = tmpl([]any{"prompt"}, prompt)
	}
	if a.IdempotencyKey != "" {
		tc.IdempotencyKey = tmpl([]any{"idempotency_key"}, a.IdempotencyKey)
	}
	if a.User != "" {
		tc.UserID = tmpl([]any{"user"}, a.User)
	}
	if a.Response != "" {
		tc.Response = value([]any{"response"}, a.Response)
	}

	names := map[string]bool{}
	for j, c := range a.Context {
		path := []any{"context", j}
		s := agent.Source{Name: c.Name, Args: exprs(append(path, "args"), c.Args), Many: c.Many, Required: c.Required,
			CacheTTL: c.CacheTTL.Duration, MaxBytes: c.MaxBytes}
		switch {
		case c.Name == "":
			fail(at(path...), "context[%d]: name is required", j)
		case !agentNamePattern.MatchString(c.Name) || strings.Contains(c.Name, "-"):
			fail(at(append(path, "name")...), "context[%d]: name %q must be lowercase letters, digits or '_' (templates and rules read it as context.%s)", j, c.Name, c.Name)
		case names[c.Name]:
			fail(at(append(path, "name")...), "context[%d]: name %q is used twice", j, c.Name)
		}
		names[c.Name] = true
		kinds := 0
		if c.SQL != "" {
			kinds++
			s.Kind, s.Query = agent.SourceSQL, c.SQL
		}
		if c.Blob != "" {
			kinds++
			s.Kind, s.Key = agent.SourceBlob, tmpl(append(path, "blob"), c.Blob)
		}
		if c.KV != "" {
			kinds++
			s.Kind, s.Key = agent.SourceKV, tmpl(append(path, "kv"), c.KV)
		}
		if c.HTTP != "" {
			kinds++
			s.Kind, s.URL = agent.SourceHTTP, tmpl(append(path, "http"), c.HTTP)
		}
		if kinds != 1 {
			fail(at(path...), "context %q: set exactly one of sql, blob, kv and http", c.Name)
		}
		if len(c.Args) > 0 && s.Kind != agent.SourceSQL {
			fail(at(append(path, "args")...), "context %q: args are for sql sources", c.Name)
		}
		if c.CacheTTL.Duration != 0 && s.Kind != agent.SourceBlob {
			fail(at(append(path, "cache_ttl")...), "context %q: cache_ttl is for blob sources", c.Name)
		}
		if c.CacheTTL.Duration < 0 || (c.CacheTTL.Duration > 0 && c.CacheTTL.Duration < agentd.MinKVTTL) {
			fail(at(append(path, "cache_ttl")...), "context %q: cache_ttl must be at least 60s (the KV minimum)", c.Name)
		}
		if len(c.Headers) > 0 {
			if s.Kind != agent.SourceHTTP {
				fail(at(append(path, "headers")...), "context %q: headers are for http sources", c.Name)
			}
			s.Headers = map[string]*agent.Template{}
			for k, v := range c.Headers {
				s.Headers[k] = tmpl(append(path, "headers", k), v)
			}
		}
		s.Attach = s.Kind == agent.SourceBlob
		if c.Attach != nil {
			s.Attach = *c.Attach
		}
		tc.Sources = append(tc.Sources, s)
	}
	if ok {
		if _, err := agent.SourceOrder(tc.Sources); err != nil {
			fail(at("context"), "%s", clientMessage(err))
		}
	}

	for j, p := range a.Preconditions {
		path := []any{"preconditions", j}
		if p.Check == "" || p.Output == nil {
			fail(at(path...), "preconditions[%d]: check and output are required", j)
			continue
		}
		tc.Preconditions = append(tc.Preconditions, agent.Precondition{Name: nameOr(p.Name, j), Check: cond(append(path, "check"), p.Check), Output: jsonShape(p.Output)})
	}
	for j, e := range a.Effects {
		path := []any{"effects", j}
		eff := agent.Effect{Name: nameOr(e.Name, j), TTL: e.TTL.Duration, Args: exprs(append(path, "args"), e.Args)}
		if e.When != "" {
			eff.When = cond(append(path, "when"), e.When)
		}
		kinds := 0
		if e.SQL != "" {
			kinds++
			eff.Kind, eff.SQL = agent.EffectSQL, e.SQL
		}
		if e.KV != "" {
			kinds++
			eff.Kind, eff.Key = agent.EffectKV, tmpl(append(path, "kv"), e.KV)
			if e.Value == "" {
				fail(at(path...), "effect %q: a kv effect needs a value (a template, e.g. \"{{json .output}}\")", eff.Name)
			} else {
				eff.Value = tmpl(append(path, "value"), e.Value)
			}
		}
		if e.HTTP != "" {
			kinds++
			eff.Kind, eff.URL = agent.EffectHTTP, tmpl(append(path, "http"), e.HTTP)
			if e.Body != "" {
				eff.Body = value(append(path, "body"), e.Body)
			}
			if len(e.Headers) > 0 {
				eff.Headers = map[string]*agent.Template{}
				for k, v := range e.Headers {
					eff.Headers[k] = tmpl(append(path, "headers", k), v)
				}
			}
		}
		if kinds != 1 {
			fail(at(path...), "effect %q: set exactly one of sql, kv and http", eff.Name)
		}
		if e.TTL.Duration != 0 && (eff.Kind != agent.EffectKV || e.TTL.Duration < agentd.MinKVTTL) {
			fail(at(append(path, "ttl")...), "effect %q: ttl is for kv effects and must be at least 60s", eff.Name)
		}
		tc.Effects = append(tc.Effects, eff)
	}
	if a.Review != nil {
		if a.Review.When == "" {
			fail(at("review"), "review.when (a CEL condition) is required")
		} else {
			tc.Review = &agent.ReviewRule{When: cond([]any{"review", "when"}, a.Review.When), Reason: a.Review.Reason}
		}
	}
	fb := a.Fallback
	tc.Fallback = agent.TaskFallback{Models: fb.Models, Cache: fb.Cache}
	for j, r := range fb.Rules {
		path := []any{"fallback", "rules", j}
		if r.When == "" || r.Output == nil {
			fail(at(path...), "fallback.rules[%d]: when and output are required for a task agent", j)
			continue
		}
		tc.Fallback.Rules = append(tc.Fallback.Rules, agent.Rule{Name: nameOr(r.Name, j), When: cond(append(path, "when"), r.When), Output: jsonShape(r.Output)})
	}
	if fb.Canned != nil {
		m, isMap := fb.Canned.(map[string]any)
		if !isMap {
			fail(at("fallback", "canned"), "fallback.canned of a task agent is an output table, e.g. canned = { decision = \"review\" }")
		} else {
			tc.Fallback.Canned = jsonShape(m)
		}
	}
	if !ok {
		return
	}
	// Fixed outputs must match the output schema: checked by NewTask
	// without stores, so agentd check finds them.
	if _, err := agent.NewTask(*tc, agent.TaskDeps{}); err != nil {
		var ae *agentd.Error
		if errors.As(err, &ae) && len(ae.Violations) > 0 {
			l.add(at(), "agent %q: %s: %s", a.Name, ae.Message, strings.Join(ae.Violations, "; "))
		} else {
			l.add(at(), "agent %q: %s", a.Name, clientMessage(err))
		}
		return
	}
	a.Task = tc
}

// compileChat compiles a chat agent's fallback chain.
func (l *loader) compileChat(a *Agent, i int) {
	fb := a.Fallback
	a.ChatFallback = agent.ChatFallback{Models: fb.Models, Cache: fb.Cache}
	for j, r := range fb.Rules {
		line := l.at("agents", i, "fallback", "rules", j)
		if r.When == "" || r.Reply == "" || r.Output != nil {
			l.add(line, "agent %q: fallback.rules[%d] of a chat agent needs when and reply (not output)", a.Name, j)
			continue
		}
		e, err := agent.CompileCondition(r.When)
		if err != nil {
			l.add(l.at("agents", i, "fallback", "rules", j, "when"), "agent %q: fallback.rules[%d].when: %s", a.Name, j, clientMessage(err))
			continue
		}
		a.ChatFallback.Rules = append(a.ChatFallback.Rules, agent.ChatRule{Name: nameOr(r.Name, j), When: e, Reply: r.Reply})
	}
	switch c := fb.Canned.(type) {
	case nil:
	case string:
		a.ChatFallback.Canned = c
	default:
		l.add(l.at("agents", i, "fallback", "canned"), "agent %q: fallback.canned of a chat agent is the reply text", a.Name)
	}
}

// cachePolicy turns [agents.cache] into the agent's.
func cachePolicy(c PromptCache) agent.CachePolicy {
	switch c.TTL {
	case "off":
		return agent.CachePolicy{Disabled: true}
	case "1h":
		return agent.CachePolicy{TTL: agentd.CacheTTL1h}
	}
	return agent.CachePolicy{TTL: agentd.CacheTTL5m}
}

// schema reads and compiles a JSON Schema file of an agent.
func (l *loader) schema(a *Agent, line int, file string) *agent.Schema {
	data := l.readFile(a, line, "schema", file)
	if data == "" {
		return nil
	}
	path := file
	if !filepath.IsAbs(path) {
		path = filepath.Join(l.dir, path)
	}
	s, err := agent.CompileSchema(path, []byte(data))
	if err != nil {
		l.problems = append(l.problems, Problem{File: file, Message: clientMessage(err)})
		return nil
	}
	return s
}

// readFile reads a file an agent names, relative to the project. It
// reports a missing or empty file and returns "".
func (l *loader) readFile(a *Agent, line int, what, file string) string {
	if file == "" {
		return ""
	}
	path := file
	if !filepath.IsAbs(path) {
		path = filepath.Join(l.dir, path)
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		l.add(line, "agent %q: %s file %s does not exist", a.Name, what, file)
		return ""
	case err != nil:
		l.add(line, "agent %q: %s file %s: %v", a.Name, what, file, err)
		return ""
	case strings.TrimSpace(string(data)) == "":
		l.add(line, "agent %q: %s file %s is empty", a.Name, what, file)
		return ""
	}
	return string(data)
}

func keyPath(path []any) string {
	parts := make([]string, len(path))
	for i, p := range path {
		parts[i] = fmt.Sprint(p)
	}
	return strings.Join(parts, ".")
}

func nameOr(name string, i int) string {
	if name != "" {
		return name
	}
	return fmt.Sprintf("#%d", i)
}

// clientMessage is an error's most specific message, without the layers'
// operation prefixes.
func clientMessage(err error) string {
	var ae *agentd.Error
	if errors.As(err, &ae) && ae.Message != "" {
		return ae.Message
	}
	return err.Error()
}

// jsonShape turns TOML-decoded values into encoding/json's shapes
// (integers become float64), so a fixed output compares and validates
// exactly like one the model sent.
func jsonShape(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonShape(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonShape(e)
		}
		return out
	case int64:
		return float64(x)
	case int:
		return float64(x)
	}
	return v
}
