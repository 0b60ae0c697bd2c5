package agent

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/coord"
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
}

// Chat is a chat agent: each user has one conversation, kept in memory and
// advanced one turn at a time.
type Chat struct {
	cfg    ChatConfig
	model  agentd.Model
	memory *memory.Store
	locks  coord.Locker
	audit  Auditor
	clock  agentd.Clock
}

// ChatDeps are the bindings a chat agent uses.
type ChatDeps struct {
	Model  agentd.Model
	Memory *memory.Store
	Locks  coord.Locker
	Audit  Auditor
	Clock  agentd.Clock
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
	return &Chat{cfg: cfg, model: deps.Model, memory: deps.Memory, locks: deps.Locks, audit: deps.Audit, clock: deps.Clock}
}

// Name is the agent's name.
func (c *Chat) Name() string { return c.cfg.Name }

// TurnResult is the outcome of one turn.
type TurnResult struct {
	Message string       `json:"message"`
	UserID  string       `json:"userId"`
	Turns   int          `json:"turns"` // messages stored after this turn
	Usage   agentd.Usage `json:"usage"`
	Model   string       `json:"model"`
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
	if err := c.validate(userID, message); err != nil {
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
	now := c.clock.Now().UTC()
	history := memory.Prune(conv.Messages, c.cfg.MaxTurns)
	history = append(history, memory.Entry{Role: agentd.RoleUser, Content: message, At: now})

	resp, err := c.call(ctx, userID, history)
	if err != nil {
		return TurnResult{}, err
	}
	answer := resp.Text()
	history = append(history, memory.Entry{Role: agentd.RoleAssistant, Content: answer, At: c.clock.Now().UTC()})
	conv.Messages = memory.Prune(history, c.cfg.MaxTurns)
	if err := c.memory.Save(ctx, conv); err != nil {
		return TurnResult{}, err
	}
	model := c.cfg.ModelLabel
	if model == "" {
		model = resp.Model
	}
	return TurnResult{Message: answer, UserID: userID, Turns: conv.Turns(), Usage: resp.Usage, Model: model, ModelLatency: resp.Latency}, nil
}

// call sends the conversation to the model and audits the call, whatever
// its outcome.
func (c *Chat) call(ctx context.Context, userID string, history []memory.Entry) (agentd.ModelResponse, error) {
	req := agentd.ModelRequest{
		Model:     c.cfg.Model,
		System:    agentd.SystemText(c.cfg.System),
		MaxTokens: c.cfg.MaxTokens,
		Messages:  make([]agentd.Message, len(history)),
	}
	for i, e := range history {
		req.Messages[i] = agentd.Message{Role: e.Role, Content: []agentd.Block{agentd.TextBlock(e.Content)}}
	}
	start := c.clock.Now()
	resp, err := c.model.Generate(ctx, req)
	ev := telemetry.AuditEvent{
		Time:    start.UTC(),
		Agent:   c.cfg.Name,
		UserID:  userID,
		Kind:    "model_call",
		Model:   c.cfg.Model,
		Outcome: "ok",
	}
	if err != nil {
		ae := agentd.AsError(err)
		ev.Outcome = string(ae.Kind)
		ev.Error = ae.Message
		if ae.Upstream != nil {
			ev.Outcome = ae.Upstream.Type
			ev.RequestID = ae.Upstream.RequestID
		}
		ev.Latency = c.clock.Now().Sub(start)
	} else {
		ev.Usage = resp.Usage
		ev.Latency = resp.Latency
		ev.RequestID = resp.RequestID
	}
	if c.audit != nil {
		c.audit.Record(ev)
	}
	if err != nil {
		return resp, err
	}
	return resp, nil
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
