package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/memory"
	"github.com/agentd/agentd/model/anthropic"
	"github.com/agentd/agentd/model/anthropictest"
)

func TestMinCacheTokens(t *testing.T) {
	tests := []struct {
		model string
		want  int
	}{
		{"claude-opus-4-5", 4096},
		{"claude-opus-4-5-20251101", 4096},
		{"claude-opus-4-6", 4096},
		{"claude-opus-4-7", 4096},
		{"claude-opus-4-8", 4096},
		{"claude-opus-5-5", 4096},
		{"anthropic.claude-opus-4-5-20251101-v1:0", 4096},
		{"claude-opus-4-5@20251101", 4096},
		{"claude-opus-4-1-20250805", 1024},
		{"claude-opus-4-20250514", 1024},
		{"claude-3-opus-20240229", 1024},
		{"claude-haiku-4-5", 4096},
		{"claude-haiku-4-5-20251001", 4096},
		{"claude-3-haiku-20240307", 2048},
		{"claude-3-5-haiku-20241022", 2048},
		{"claude-sonnet-4-6", 1024},
		{"claude-sonnet-4-5-20250929", 1024},
		{"claude-3-7-sonnet-20250219", 1024},
		{"claude-sonnet-5-5", 1024},
		{"CLAUDE-OPUS-4-8", 4096},
		{"claude-test", 1024},
		{"", 1024},
	}
	for _, tt := range tests {
		if got := agent.MinCacheTokens(tt.model); got != tt.want {
			t.Errorf("MinCacheTokens(%q) = %d, want %d", tt.model, got, tt.want)
		}
	}
}

// text is a text of about n tokens by the fake's count.
func text(n int) string { return strings.Repeat("abcd", n) }

func newModel(t testing.TB, fake *anthropictest.Fake) agentd.Model {
	t.Helper()
	m, err := anthropic.New(anthropic.Config{APIKey: "test", BaseURL: "http://fake.invalid", HTTPClient: fake.HTTPClient(), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// markers lists the breakpoints of a request as the fake parsed it, in
// prefix order, as "where:ttl".
func markers(r anthropictest.Request) []string {
	var out []string
	add := func(where string, cc *anthropictest.CacheControl) {
		if cc != nil {
			out = append(out, where+":"+cc.TTL)
		}
	}
	for i, t := range r.Tools {
		add(fmt.Sprintf("tools.%d", i), t.CacheControl)
	}
	for i, s := range r.System {
		add(fmt.Sprintf("system.%d", i), s.CacheControl)
	}
	for i, m := range r.Messages {
		for j, b := range m.Content {
			add(fmt.Sprintf("messages.%d.content.%d", i, j), b.CacheControl)
		}
	}
	return out
}

func userText(s string) agentd.Message {
	return agentd.Message{Role: agentd.RoleUser, Content: []agentd.Block{agentd.TextBlock(s)}}
}

func assistantText(s string) agentd.Message {
	return agentd.Message{Role: agentd.RoleAssistant, Content: []agentd.Block{agentd.TextBlock(s)}}
}

// history is a conversation of three messages and a new user message.
func history() []agentd.Message {
	return []agentd.Message{userText("Where is my order?"), assistantText("Which order?"), userText("Order 42."), assistantText("It shipped."), userText("When will it arrive?")}[1:]
}

func tools(descTokens int) []agentd.Tool {
	return []agentd.Tool{
		{Name: "lookup_order", Description: "Finds an order.", InputSchema: json.RawMessage(`{"type":"object","properties":{"id":{"type":"string"}}}`)},
		{Name: "refund", Description: text(descTokens), InputSchema: json.RawMessage(`{"type":"object"}`)},
	}
}

func cached(ttl agentd.CacheTTL) *agentd.CacheControl { return &agentd.CacheControl{TTL: ttl} }

func TestPlaceCacheBreakpoints(t *testing.T) {
	conv := func() []agentd.Message { return append([]agentd.Message{userText("Hi.")}, history()...) } // 5 messages
	tests := []struct {
		name     string
		model    string
		fakeMin  int // the fake's minimum cacheable prefix; 0 is its default, 1024
		tools    []agentd.Tool
		system   []agentd.Block
		messages []agentd.Message
		policy   agent.CachePolicy
		want     []string
	}{
		{
			name:     "a short prompt gets none",
			system:   agentd.SystemText(text(100)),
			messages: conv(),
		},
		{
			name:     "long system prompt and the new message",
			tools:    tools(10),
			system:   agentd.SystemText(text(4000)),
			messages: conv(),
			want:     []string{"system.0:5m", "messages.4.content.0:5m"},
		},
		{
			name:     "large tools are marked",
			tools:    tools(1200),
			system:   agentd.SystemText(text(4000)),
			messages: conv(),
			want:     []string{"tools.1:5m", "system.0:5m", "messages.4.content.0:5m"},
		},
		{
			name:     "static prompt and summary",
			system:   []agentd.Block{agentd.TextBlock(text(4000)), agentd.TextBlock("Summary of the earlier conversation:\n" + text(200))},
			messages: conv(),
			policy:   agent.CachePolicy{StaticSystemBlocks: 1},
			want:     []string{"system.0:5m", "system.1:5m", "messages.4.content.0:5m"},
		},
		{
			name:     "a summary alone under the minimum: the last block only",
			system:   []agentd.Block{agentd.TextBlock(text(600)), agentd.TextBlock(text(600))},
			messages: conv(),
			policy:   agent.CachePolicy{StaticSystemBlocks: 1},
			want:     []string{"system.1:5m", "messages.4.content.0:5m"},
		},
		{
			name:     "1h TTL passed through",
			tools:    tools(1200),
			system:   agentd.SystemText(text(4000)),
			messages: conv(),
			policy:   agent.CachePolicy{TTL: agentd.CacheTTL1h},
			want:     []string{"tools.1:1h", "system.0:1h", "messages.4.content.0:1h"},
		},
		{
			name:     "static context in the first message",
			system:   agentd.SystemText(text(100)),
			messages: []agentd.Message{{Role: agentd.RoleUser, Content: []agentd.Block{agentd.TextBlock(text(3000)), agentd.TextBlock("What does clause 4 say?")}}},
			policy:   agent.CachePolicy{StaticContextBlocks: 1},
			want:     []string{"messages.0.content.0:5m", "messages.0.content.1:5m"},
		},
		{
			name:     "an image counts 1600 tokens",
			system:   agentd.SystemText("Describe images."),
			messages: []agentd.Message{{Role: agentd.RoleUser, Content: []agentd.Block{{Type: agentd.BlockImage, MediaType: "image/png", Data: []byte("png")}, agentd.TextBlock("What is this?")}}},
			want:     []string{"messages.0.content.1:5m"},
		},
		{
			name:     "Opus 4.5 and later need 4096 tokens",
			model:    "claude-opus-4-8",
			fakeMin:  4096,
			tools:    tools(10),
			system:   agentd.SystemText(text(4000)),
			messages: append(conv()[:4], userText(text(300))),
			want:     []string{"messages.4.content.0:5m"},
		},
		{
			name:     "an explicit minimum",
			system:   agentd.SystemText(text(4000)),
			messages: conv(),
			policy:   agent.CachePolicy{MinTokens: 5000},
		},
		{
			name: "the caller's markers count: the latest candidate is kept",
			tools: func() []agentd.Tool {
				ts := tools(10)
				ts[0].Cache, ts[1].Cache = cached(""), cached(agentd.CacheTTL5m)
				return ts
			}(),
			system: agentd.SystemText(text(4000)),
			messages: func() []agentd.Message {
				ms := conv()
				ms[0].Content[0].Cache = cached("")
				return ms
			}(),
			want: []string{"tools.0:5m", "tools.1:5m", "messages.0.content.0:5m", "messages.4.content.0:5m"},
		},
		{
			name: "the caller used all four",
			tools: func() []agentd.Tool {
				ts := tools(10)
				ts[0].Cache, ts[1].Cache = cached(""), cached("")
				return ts
			}(),
			system: []agentd.Block{{Type: agentd.BlockText, Text: text(4000), Cache: cached("")}},
			messages: func() []agentd.Message {
				ms := conv()
				ms[0].Content[0].Cache = cached("")
				return ms
			}(),
			want: []string{"tools.0:5m", "tools.1:5m", "system.0:5m", "messages.0.content.0:5m"},
		},
		{
			name:     "1h after a caller's 5m marker would be refused: 5m",
			system:   []agentd.Block{{Type: agentd.BlockText, Text: text(4000), Cache: cached(agentd.CacheTTL5m)}},
			messages: conv(),
			policy:   agent.CachePolicy{TTL: agentd.CacheTTL1h},
			want:     []string{"system.0:5m", "messages.4.content.0:5m"},
		},
		{
			name:   "5m before a caller's 1h marker would be refused: 1h",
			system: agentd.SystemText(text(4000)),
			messages: func() []agentd.Message {
				ms := conv()
				ms[4].Content[0].Cache = cached(agentd.CacheTTL1h)
				return ms
			}(),
			want: []string{"system.0:1h", "messages.4.content.0:1h"},
		},
		{
			name:     "disabled",
			tools:    tools(1200),
			system:   agentd.SystemText(text(4000)),
			messages: conv(),
			policy:   agent.CachePolicy{Disabled: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []anthropictest.Option
			if tt.fakeMin > 0 {
				opts = append(opts, anthropictest.WithMinCacheTokens(tt.fakeMin))
			}
			fake := anthropictest.New(opts...)
			model := tt.model
			if model == "" {
				model = "claude-sonnet-4-6"
			}
			req := agentd.ModelRequest{Model: model, MaxTokens: 100, Tools: tt.tools, System: tt.system, Messages: tt.messages}
			agent.PlaceCacheBreakpoints(&req, tt.policy)
			resp, err := newModel(t, fake).Generate(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			got := markers(fake.Requests()[0])
			if !slices.Equal(got, tt.want) {
				t.Fatalf("breakpoints %q, want %q", got, tt.want)
			}
			if len(got) > agent.MaxCacheBreakpoints {
				t.Fatalf("%d breakpoints", len(got))
			}
			// Every breakpoint placed reaches the minimum: the fake writes
			// each one to its cache, so a request with breakpoints writes.
			if wrote := resp.Usage.CacheCreationInputTokens > 0; wrote != (len(tt.want) > 0) {
				t.Fatalf("usage %+v with breakpoints %q", resp.Usage, got)
			}
		})
	}
}

// Placing twice changes nothing more, and the caller's slices (an agent's
// shared tools and system prompt, a stored history) are never written.
func TestPlaceCacheBreakpointsIsIdempotentAndCopies(t *testing.T) {
	ts := tools(1200)
	system := []agentd.Block{agentd.TextBlock(text(4000)), agentd.TextBlock(text(100))}
	msgs := append([]agentd.Message{userText("Hi.")}, history()...)
	req := agentd.ModelRequest{Model: "claude-sonnet-4-6", Tools: ts, System: system, Messages: msgs}
	policy := agent.CachePolicy{StaticSystemBlocks: 1}

	agent.PlaceCacheBreakpoints(&req, policy)
	once := req
	once.Tools, once.System, once.Messages = slices.Clone(req.Tools), slices.Clone(req.System), slices.Clone(req.Messages)
	agent.PlaceCacheBreakpoints(&req, policy)
	if !reflect.DeepEqual(req, once) {
		t.Fatalf("second placement changed the request:\n%+v\n%+v", req, once)
	}
	if req.Tools[1].Cache == nil || req.Messages[4].Content[0].Cache == nil {
		t.Fatal("nothing was placed")
	}
	for _, tl := range ts {
		if tl.Cache != nil {
			t.Fatalf("the caller's tool %s was marked", tl.Name)
		}
	}
	for _, b := range system {
		if b.Cache != nil {
			t.Fatal("the caller's system block was marked")
		}
	}
	for _, m := range msgs {
		if m.Content[0].Cache != nil {
			t.Fatal("the caller's message was marked")
		}
	}
	agent.PlaceCacheBreakpoints(nil, policy) // no request, no panic
}

// The breakpoint on the new message makes the next turn, whose prompt
// extends this one, read the whole previous prompt from the cache.
func TestNextTurnReadsTheCache(t *testing.T) {
	for _, ttl := range []agentd.CacheTTL{agentd.CacheTTL5m, agentd.CacheTTL1h} {
		t.Run(string(ttl), func(t *testing.T) {
			fake := anthropictest.New()
			model := newModel(t, fake)
			ctx := context.Background()
			policy := agent.CachePolicy{TTL: ttl}
			msgs := []agentd.Message{userText("Where is my order?")}
			var prevPrompt int64
			for turn := range 3 {
				req := agentd.ModelRequest{Model: "claude-sonnet-4-6", MaxTokens: 100, Tools: tools(10), System: agentd.SystemText(text(4000)), Messages: msgs}
				agent.PlaceCacheBreakpoints(&req, policy)
				resp, err := model.Generate(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				u := resp.Usage
				if turn == 0 && (u.CacheReadInputTokens != 0 || u.CacheCreationInputTokens < 4000) {
					t.Fatalf("turn 1 usage %+v, want the prompt written to the cache", u)
				}
				if turn > 0 && u.CacheReadInputTokens < prevPrompt {
					t.Fatalf("turn %d read %d tokens from the cache, want the previous prompt's %d", turn+1, u.CacheReadInputTokens, prevPrompt)
				}
				if (u.CacheCreation1hInputTokens > 0) != (ttl == agentd.CacheTTL1h) {
					t.Fatalf("turn %d usage %+v with TTL %s", turn+1, u, ttl)
				}
				prevPrompt = u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
				msgs = append(slices.Clone(msgs), assistantText(resp.Text()), userText(fmt.Sprintf("And question %d?", turn)))
			}
		})
	}
}

// The chat turn as it will be: compaction in chunks (memory), the summary
// in the system prompt, breakpoints placed automatically. Between
// compactions each turn reads the whole previous prompt from the cache;
// after one, the tools and static prompt are still read.
func TestCompactedConversationReadsTheCache(t *testing.T) {
	ctx := context.Background()
	fake := anthropictest.New()
	fake.SetResponder(func(r anthropictest.Request) anthropictest.Reply {
		if len(r.System) == 1 && r.System[0].Text == memory.DefaultCompactInstructions {
			return anthropictest.Text(fmt.Sprintf("Summary of a %d-character transcript.", len(r.LastUserText())))
		}
		return anthropictest.Echo(r)
	})
	model := newModel(t, fake)
	static := text(4000)
	filler := strings.Repeat("my order has not arrived yet ", 55) // about 400 tokens
	policy := agent.CachePolicy{}
	// Compacted before, on a node whose cache is gone: only the breakpoint
	// on the static prompt lets a compaction keep reading the cache.
	conv := &memory.Conversation{UserID: "u1", Summary: "The user is Ada."}

	var prevPrompt int64
	compactions := 0
	for turn := range 30 {
		compacted := false
		if n := (memory.CompactPolicy{}).Plan(conv); n > 0 {
			if _, err := memory.Compact(ctx, conv, model, memory.CompactRequest{Model: "claude-sonnet-4-6", Fold: n}); err != nil {
				t.Fatal(err)
			}
			compacted = true
			compactions++
		}
		history := append(slices.Clone(conv.Messages), memory.Entry{Role: agentd.RoleUser, Content: fmt.Sprintf("[%d] %s", turn, filler)})
		req := agentd.ModelRequest{Model: "claude-sonnet-4-6", MaxTokens: 1024, Tools: tools(10), System: agentd.SystemText(static), Messages: memory.Messages(conv, history)}
		p := policy
		if conv.Summary != "" {
			p.StaticContextBlocks = 1 // the summary opens the first message
		}
		agent.PlaceCacheBreakpoints(&req, p)
		resp, err := model.Generate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(markers(fake.Requests()[len(fake.Requests())-1])); n > agent.MaxCacheBreakpoints {
			t.Fatalf("turn %d: %d breakpoints", turn+1, n)
		}
		u := resp.Usage
		switch {
		case turn == 0:
		case compacted && u.CacheReadInputTokens < 4000:
			t.Fatalf("turn %d, after a compaction: read %d tokens, want at least the static prompt's 4000", turn+1, u.CacheReadInputTokens)
		case !compacted && u.CacheReadInputTokens < prevPrompt:
			t.Fatalf("turn %d: read %d tokens from the cache, want the previous prompt's %d", turn+1, u.CacheReadInputTokens, prevPrompt)
		}
		prevPrompt = u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
		conv.Messages = append(history, memory.Entry{Role: agentd.RoleAssistant, Content: resp.Text()})
	}
	if compactions < 2 {
		t.Fatalf("%d compactions in 30 turns, want at least 2", compactions)
	}
}
