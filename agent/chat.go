package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/coord"
	"github.com/agentd/agentd/decision"
	"github.com/agentd/agentd/memory"
	"github.com/agentd/agentd/telemetry"
)

// Defaults of a chat agent.
const (
	DefaultMaxTurns        = 10
	DefaultMaxMessageBytes = 32 << 10
	DefaultMaxTokens       = 1024
	MaxUserIDBytes         = 256
)

// Auditor records audit events off the request's critical path.
type Auditor interface {
	Record(ev telemetry.AuditEvent)
}

// ChatConfig declares a chat agent.
type ChatConfig struct {
	Name            string
	Model           string // the model id sent to the API
	ModelLabel      string // what replies report as "model"; defaults to the id the API answers with
	System          string // the system prompt text
	MaxTokens       int
	MaxTurns        int // exchanges kept in memory; 0 means DefaultMaxTurns, negative keeps all
	MaxMessageBytes int // 0 means DefaultMaxMessageBytes
	Limits          Limits
	// Compact, when set, bounds the history by folding old exchanges into
	// a summary in chunks (cache-friendly); nil prunes to MaxTurns.
	Compact *memory.CompactPolicy
	// Cache places prompt-cache breakpoints (on unless Disabled).
	Cache    CachePolicy
	Fallback ChatFallback
}

// DefaultAnswerCacheTTL is how long a user's answer is kept for the cache
// fallback.
const DefaultAnswerCacheTTL = 7 * 24 * time.Hour

// ChatFallback is what answers, in order, when the chat agent's model is
// unavailable.
type ChatFallback struct {
	Models   []string      // other models
	Cache    bool          // the user's last model answer to the same message
	CacheTTL time.Duration // how long such answers are kept; 0 means DefaultAnswerCacheTTL
	Rules    []ChatRule
	Canned   string // the last resort, stored as such and queued for review
}

// ChatRule is a fixed reply for messages a condition recognizes (CEL over
// input.userId and input.message).
type ChatRule struct {
	Name  string
	When  *Expr
	Reply string
}

// Chat is a chat agent: each user has one conversation, kept in memory and
// advanced one turn at a time.
type Chat struct {
	cfg     ChatConfig
	memory  *memory.Store
	locks   coord.Locker
	clock   agentd.Clock
	caller  caller
	kv      agentd.KV
	reviews *decision.Store
	logger  *slog.Logger
}

// ChatDeps are the bindings a chat agent uses.
type ChatDeps struct {
	Model     agentd.Model
	Memory    *memory.Store
	Locks     coord.Locker
	Audit     Auditor
	Clock     agentd.Clock
	Telemetry Telemetry
	// KV keeps answers for the cache fallback; Reviews queues canned
	// replies. Either may be nil, turning that off.
	KV      agentd.KV
	Reviews *decision.Store
	Logger  *slog.Logger
	// Guard holds the agent to its rate limit and budgets; nil: none.
	Guard *Guard
}

// NewChat returns a chat agent.
func NewChat(cfg ChatConfig, deps ChatDeps) *Chat {
	if cfg.MaxTokens == 0 {
		cfg.MaxTokens = DefaultMaxTokens
	}
	if cfg.MaxTurns == 0 {
		cfg.MaxTurns = DefaultMaxTurns
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if deps.Clock == nil {
		deps.Clock = agentd.SystemClock{}
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	return &Chat{cfg: cfg, memory: deps.Memory, locks: deps.Locks, clock: deps.Clock, kv: deps.KV, reviews: deps.Reviews, logger: deps.Logger,
		caller: caller{agent: cfg.Name, model: deps.Model, audit: deps.Audit, clock: deps.Clock, tel: deps.Telemetry, guard: deps.Guard, log: deps.Logger}}
}

// Name is the agent's name.
func (c *Chat) Name() string { return c.cfg.Name }

// TurnResult is the outcome of one turn.
type TurnResult struct {
	Message string       `json:"message"`
	UserID  string       `json:"userId"`
	Turns   int          `json:"turns"` // messages stored after this turn
	Usage   agentd.Usage `json:"usage"` // of every model call of the turn
	Model   string       `json:"model"`
	// Source says what answered: model, fallback_model, cache, rules or
	// canned.
	Source string `json:"source"`
	// ModelLatency is the model call's own time, so callers can tell the
	// runtime's overhead from the model's (the server sends it as
	// Server-Timing).
	ModelLatency time.Duration `json:"-"`
}

// ValidateUserID checks a user id: it becomes part of a KV key.
func ValidateUserID(userID string) error {
	const op = "chat"
	switch {
	case userID == "":
		return agentd.InvalidField(op, "userId", "userId must not be empty")
	case len(userID) > MaxUserIDBytes:
		return agentd.InvalidField(op, "userId", "userId is longer than %d bytes", MaxUserIDBytes)
	case !utf8.ValidString(userID):
		return agentd.InvalidField(op, "userId", "userId is not valid UTF-8")
	case strings.ContainsFunc(userID, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return agentd.InvalidField(op, "userId", "userId must not contain control characters")
	}
	return nil
}

func (c *Chat) validate(userID, message string) error {
	if err := ValidateUserID(userID); err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(message) == "":
		return agentd.InvalidField("chat", "message", "message must not be empty")
	case len(message) > c.cfg.MaxMessageBytes:
		return agentd.InvalidField("chat", "message", "message is longer than %d bytes", c.cfg.MaxMessageBytes)
	case !utf8.ValidString(message):
		return agentd.InvalidField("chat", "message", "message is not valid UTF-8")
	}
	return nil
}

// Turn advances the user's conversation by one exchange: it waits for the
// conversation (one turn at a time per user), sends the system prompt, the
// remembered history and the new message to the model, and stores the
// exchange. If the model call fails, the stored history is left unchanged.
func (c *Chat) Turn(ctx context.Context, userID, message string) (TurnResult, error) {
	return c.TurnStream(ctx, userID, message, nil)
}

// TurnStream is Turn with the answer streamed: onDelta, when not nil,
// receives the answer's text as it is generated. The exchange is stored
// only once the answer is whole; a turn that fails after some text was
// passed on stores nothing.
func (c *Chat) TurnStream(ctx context.Context, userID, message string, onDelta func(string)) (TurnResult, error) {
	if err := c.validate(userID, message); err != nil {
		return TurnResult{}, err
	}
	// Counted before waiting for the conversation: a user over the limit
	// is refused at once, not after the turns queued ahead.
	if err := c.caller.guard.admit(ctx, c.cfg.Name, userID, c.caller.tel.Metrics); err != nil {
		return TurnResult{}, err
	}
	lease, err := c.locks.Lock(ctx, c.memory.Key(userID))
	if err != nil {
		return TurnResult{}, err
	}
	defer lease.Unlock()

	conv, err := c.memory.Load(ctx, userID)
	if err != nil {
		return TurnResult{}, err
	}
	m := newMeter(c.cfg.Limits)
	now := c.clock.Now().UTC()
	var history []memory.Entry
	if c.cfg.Compact != nil {
		c.compact(ctx, m, userID, conv, now)
		history = slices.Clone(conv.Messages)
	} else {
		history = memory.Prune(conv.Messages, c.cfg.MaxTurns)
	}
	history = append(history, memory.Entry{Role: agentd.RoleUser, Content: message, At: now})

	req, policy := c.request(conv, history)
	req.OnTextDelta = onDelta
	ans, err := c.answer(ctx, m, userID, message, req, policy)
	if err != nil {
		return TurnResult{}, err
	}
	history = append(history, memory.Entry{Role: agentd.RoleAssistant, Content: ans.text, At: c.clock.Now().UTC(), Source: entrySource(ans.source)})
	if c.cfg.Compact != nil {
		conv.Messages = history
	} else {
		conv.Messages = memory.Prune(history, c.cfg.MaxTurns)
	}
	if err := c.memory.Save(ctx, conv); err != nil {
		return TurnResult{}, err
	}
	if ans.source == SourceCanned {
		c.queueCanned(ctx, userID, message, ans)
	}
	if c.cfg.Fallback.Cache && (ans.source == SourceModel || ans.source == SourceFallbackModel) {
		c.rememberAnswer(ctx, userID, message, ans.text)
	}
	model := ans.model
	if c.cfg.ModelLabel != "" && ans.source == SourceModel {
		model = c.cfg.ModelLabel
	}
	return TurnResult{Message: ans.text, UserID: userID, Turns: conv.Turns(), Usage: m.usage, Model: model, Source: ans.source, ModelLatency: ans.latency}, nil
}

// entrySource is what a stored reply records about who wrote it: nothing
// for the agent's model, the fallback's source otherwise, so a history
// shows which replies a person may need to follow up.
func entrySource(source string) string {
	if source == SourceModel {
		return ""
	}
	return source
}

// compact folds the oldest exchanges into the summary when the policy says
// the history has grown past its budget. A failed compaction is audited
// and the turn goes on uncompacted; the next turn tries again.
func (c *Chat) compact(ctx context.Context, m *meter, userID string, conv *memory.Conversation, now time.Time) {
	n := c.cfg.Compact.Plan(conv)
	if n == 0 {
		return
	}
	via := modelFunc(func(ctx context.Context, r agentd.ModelRequest) (agentd.ModelResponse, error) {
		return c.caller.call(ctx, m, callMeta{userID: userID, kind: callCompaction, source: SourceModel}, r)
	})
	if _, err := memory.Compact(ctx, conv, via, memory.CompactRequest{Model: c.cfg.Model, Fold: n, At: now}); err != nil {
		c.logger.Warn("compaction failed; the turn goes on uncompacted", "agent", c.cfg.Name, "error", err)
	}
}

// modelFunc adapts a function to agentd.Model.
type modelFunc func(context.Context, agentd.ModelRequest) (agentd.ModelResponse, error)

func (f modelFunc) Generate(ctx context.Context, r agentd.ModelRequest) (agentd.ModelResponse, error) {
	return f(ctx, r)
}

// request builds the model request of a turn: the system prompt, then the
// history — opened by the summary when there is one — with the new
// message last, and cache breakpoints where the prefix is worth it.
func (c *Chat) request(conv *memory.Conversation, history []memory.Entry) (agentd.ModelRequest, CachePolicy) {
	req := agentd.ModelRequest{
		Model:     c.cfg.Model,
		System:    agentd.SystemText(c.cfg.System),
		MaxTokens: c.cfg.MaxTokens,
		Messages:  memory.Messages(conv, history),
	}
	policy := c.cfg.Cache
	if conv.Summary != "" {
		policy.StaticContextBlocks = 1 // the summary, stable until the next compaction
	}
	PlaceCacheBreakpoints(&req, policy)
	return req, policy
}

// chatAnswer is a reply and what produced it.
type chatAnswer struct {
	text    string
	source  string
	model   string
	latency time.Duration
	reason  string // why a fallback answered
}

// answer asks the agent's model, then goes down the fallback chain while
// the models are unavailable: other models, the user's previous answer to
// the same message, rules, a canned reply.
func (c *Chat) answer(ctx context.Context, m *meter, userID, message string, req agentd.ModelRequest, policy CachePolicy) (chatAnswer, error) {
	delivered := false
	onDelta := req.OnTextDelta
	if onDelta != nil {
		req.OnTextDelta = func(s string) {
			delivered = true
			onDelta(s)
		}
	}
	models := append([]string{c.cfg.Model}, c.cfg.Fallback.Models...)
	var firstErr error
	for i, model := range models {
		source := SourceModel
		r := req
		if i > 0 {
			source = SourceFallbackModel
			// The breakpoints were placed for the first model's minimum.
			r = withoutCacheMarks(r)
			r.Model = model
			PlaceCacheBreakpoints(&r, policy)
		}
		resp, err := c.caller.call(ctx, m, callMeta{userID: userID, kind: callTurn, source: source}, r)
		if err == nil {
			if i > 0 {
				c.caller.tel.Metrics.Fallback(c.cfg.Name, source)
			}
			return chatAnswer{text: resp.Text(), source: source, model: resp.Model, latency: resp.Latency}, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if delivered || !unavailable(ctx, err) {
			// Part of an answer reached the client, and another source
			// would not continue it; or no fallback fixes this failure.
			return chatAnswer{}, err
		}
		c.logger.Warn("model unavailable; trying the next fallback", "agent", c.cfg.Name, "model", model, "error", err)
	}
	reason := clientText(firstErr)
	emit := func(a chatAnswer) (chatAnswer, error) {
		c.caller.tel.Metrics.Fallback(c.cfg.Name, a.source)
		if onDelta != nil {
			onDelta(a.text)
		}
		a.reason = reason
		a.model = a.source
		return a, nil
	}
	fb := c.cfg.Fallback
	if fb.Cache {
		if text, ok := c.previousAnswer(ctx, userID, message); ok {
			return emit(chatAnswer{text: text, source: SourceCache})
		}
	}
	data := ExprData{Input: map[string]any{"userId": userID, "message": message}, Now: c.clock.Now().UTC()}
	for _, r := range fb.Rules {
		ok, err := r.When.Bool(data)
		if err != nil {
			return chatAnswer{}, agentd.E("", "rule."+r.Name, err)
		}
		if ok {
			return emit(chatAnswer{text: r.Reply, source: SourceRules})
		}
	}
	if fb.Canned != "" {
		return emit(chatAnswer{text: fb.Canned, source: SourceCanned})
	}
	return chatAnswer{}, firstErr
}

// withoutCacheMarks returns req with its breakpoints removed, copying what
// it changes.
func withoutCacheMarks(req agentd.ModelRequest) agentd.ModelRequest {
	req.System = slices.Clone(req.System)
	for i := range req.System {
		req.System[i].Cache = nil
	}
	msgs := make([]agentd.Message, len(req.Messages))
	for i, m := range req.Messages {
		m.Content = slices.Clone(m.Content)
		for j := range m.Content {
			m.Content[j].Cache = nil
		}
		msgs[i] = m
	}
	req.Messages = msgs
	return req
}

// answerKey is where a user's last model answer to a message is kept for
// the cache fallback: per user (an answer may be about that user's own
// order), per message as a person would read it.
func (c *Chat) answerKey(userID, message string) string {
	norm := strings.Join(strings.Fields(strings.ToLower(message)), " ")
	sum := sha256.Sum256([]byte(norm))
	return "answer-cache:" + c.cfg.Name + ":" + userID + ":" + hex.EncodeToString(sum[:16])
}

func (c *Chat) rememberAnswer(ctx context.Context, userID, message, answer string) {
	if c.kv == nil {
		return
	}
	ttl := c.cfg.Fallback.CacheTTL
	if ttl <= 0 {
		ttl = DefaultAnswerCacheTTL
	}
	// A lost cache write costs only a fallback that cannot use it.
	_ = c.kv.Put(ctx, c.answerKey(userID, message), []byte(answer), agentd.KVPutOptions{ExpirationTTL: max(ttl, agentd.MinKVTTL)})
}

func (c *Chat) previousAnswer(ctx context.Context, userID, message string) (string, bool) {
	if c.kv == nil {
		return "", false
	}
	e, err := c.kv.Get(ctx, c.answerKey(userID, message))
	if err != nil {
		return "", false
	}
	return string(e.Value), true
}

// queueCanned puts a canned reply in the review queue, so a person follows
// up on the message the model could not answer.
func (c *Chat) queueCanned(ctx context.Context, userID, message string, ans chatAnswer) {
	if c.reviews == nil {
		return
	}
	payload, _ := json.Marshal(map[string]any{"userId": userID, "message": message, "reply": ans.text})
	rv := &decision.Review{Agent: c.cfg.Name, UserID: userID, Reason: "the model was unavailable; a canned reply was sent: " + ans.reason, Payload: payload}
	if err := c.reviews.AddReview(context.WithoutCancel(ctx), rv); err != nil {
		c.logger.Error("queueing a canned reply for review failed", "agent", c.cfg.Name, "error", err)
	}
}

// History returns the user's stored conversation (empty if none).
func (c *Chat) History(ctx context.Context, userID string) (*memory.Conversation, error) {
	if err := ValidateUserID(userID); err != nil {
		return nil, err
	}
	return c.memory.Load(ctx, userID)
}

// Forget deletes the user's conversation. It waits for a turn in flight, so
// the turn cannot write the conversation back after it was forgotten.
func (c *Chat) Forget(ctx context.Context, userID string) error {
	if err := ValidateUserID(userID); err != nil {
		return err
	}
	lease, err := c.locks.Lock(ctx, c.memory.Key(userID))
	if err != nil {
		return err
	}
	defer lease.Unlock()
	return c.memory.Delete(ctx, userID)
}
