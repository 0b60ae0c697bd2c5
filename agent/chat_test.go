package agent_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/coord"
	"github.com/agentd/agentd/memory"
	"github.com/agentd/agentd/model/anthropic"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/store/bolt"
)

// newChat returns a chat agent whose model is the fake, reached over the
// SDK through an in-memory transport.
func newChat(t testing.TB, fake *anthropictest.Fake, cfg agent.ChatConfig) *agent.Chat {
	t.Helper()
	return newChatWith(t, fake, cfg, nil)
}

// newChatWith is newChat with the agent's dependencies adjusted by mod.
func newChatWith(t testing.TB, fake *anthropictest.Fake, cfg agent.ChatConfig, mod func(*agent.ChatDeps)) *agent.Chat {
	t.Helper()
	kv, err := bolt.Open(filepath.Join(t.TempDir(), "kv.db"), bolt.WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kv.Close() })
	model, err := anthropic.New(anthropic.Config{APIKey: "test", BaseURL: "http://fake.invalid", HTTPClient: fake.HTTPClient(), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name == "" {
		cfg.Name = "chat"
	}
	if cfg.Model == "" {
		cfg.Model = "claude-sonnet-4-6"
	}
	deps := agent.ChatDeps{Model: model, Memory: memory.New(kv, memory.Options{}), Locks: coord.NewLocal()}
	if mod != nil {
		mod(&deps)
	}
	return agent.NewChat(cfg, deps)
}

func TestTurnValidatesInput(t *testing.T) {
	fake := anthropictest.New()
	c := newChat(t, fake, agent.ChatConfig{MaxMessageBytes: 10})
	tests := []struct {
		name, userID, message, field string
	}{
		{"empty user", "", "hi", "userId"},
		{"long user", strings.Repeat("u", agent.MaxUserIDBytes+1), "hi", "userId"},
		{"control character in user", "u\n1", "hi", "userId"},
		{"invalid UTF-8 user", "u\xff", "hi", "userId"},
		{"blank message", "u1", " \t\n", "message"},
		{"long message", "u1", "12345678901", "message"},
		{"invalid UTF-8 message", "u1", "\xff", "message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Turn(context.Background(), tt.userID, tt.message)
			ae := agentd.AsError(err)
			if ae.Kind != agentd.KindInvalid || ae.Field != tt.field {
				t.Fatalf("Turn(%q, %q) = %v (field %q), want invalid %s", tt.userID, tt.message, err, ae.Field, tt.field)
			}
		})
	}
	if n := len(fake.Requests()); n != 0 {
		t.Fatalf("invalid turns reached the model %d times", n)
	}
	if _, err := c.Turn(context.Background(), "u1", "1234567890"); err != nil {
		t.Fatalf("a message exactly at the limit: %v", err)
	}
}

// Forget waits for a turn in flight, so the turn cannot write the
// conversation back after it was forgotten.
func TestForgetWaitsForTheTurnInFlight(t *testing.T) {
	fake := anthropictest.New()
	entered := make(chan struct{})
	release := make(chan struct{})
	fake.SetResponder(func(req anthropictest.Request) anthropictest.Reply {
		close(entered)
		<-release
		return anthropictest.Echo(req)
	})
	c := newChat(t, fake, agent.ChatConfig{})
	turnDone := make(chan error, 1)
	go func() {
		_, err := c.Turn(context.Background(), "u1", "hello")
		turnDone <- err
	}()
	<-entered // the turn holds the conversation and waits on the model
	forgot := make(chan error, 1)
	go func() { forgot <- c.Forget(context.Background(), "u1") }()
	select {
	case err := <-forgot:
		t.Fatalf("Forget returned (%v) while a turn was in flight", err)
	default:
	}
	close(release)
	if err := <-turnDone; err != nil {
		t.Fatal(err)
	}
	if err := <-forgot; err != nil {
		t.Fatal(err)
	}
	conv, err := c.History(context.Background(), "u1")
	if err != nil || conv.Turns() != 0 {
		t.Fatalf("after Forget: %d turns, %v", conv.Turns(), err)
	}
}

func TestTurnReportsModelAndUsage(t *testing.T) {
	fake := anthropictest.New()
	fake.Enqueue(anthropictest.Text("Hello there"))
	c := newChat(t, fake, agent.ChatConfig{System: "Be kind.", MaxTokens: 77, ModelLabel: "offline"})
	res, err := c.Turn(context.Background(), "u1", "hi")
	if err != nil {
		t.Fatal(err)
	}
	if res.Message != "Hello there" || res.Turns != 2 || res.Model != "offline" || res.Usage.InputTokens == 0 || res.Usage.OutputTokens == 0 {
		t.Fatalf("result = %+v", res)
	}
	req := fake.Requests()[0]
	if req.MaxTokens != 77 || len(req.System) != 1 || req.System[0].Text != "Be kind." {
		t.Fatalf("request = max_tokens %d system %+v", req.MaxTokens, req.System)
	}
}
