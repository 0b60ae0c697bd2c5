package memory_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/memory"
	"github.com/agentd/agentd/model/anthropic"
	"github.com/agentd/agentd/model/anthropictest"
)

const testModel = "claude-sonnet-4-6"

// newModel returns the SDK client over the fake, without the SDK's retries
// so that a scripted failure is the answer.
func newModel(t testing.TB, fake *anthropictest.Fake) agentd.Model {
	t.Helper()
	m, err := anthropic.New(anthropic.Config{APIKey: "test", BaseURL: "http://fake.invalid", HTTPClient: fake.HTTPClient(), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func exchange(n int) []memory.Entry {
	var msgs []memory.Entry
	for i := range n {
		msgs = append(msgs,
			memory.Entry{Role: agentd.RoleUser, Content: fmt.Sprintf("question %d", i)},
			memory.Entry{Role: agentd.RoleAssistant, Content: fmt.Sprintf("answer %d", i)})
	}
	return msgs
}

func TestCompact(t *testing.T) {
	fake := anthropictest.New()
	fake.Enqueue(anthropictest.Text("  The user ordered #42 on May 3; the assistant promised a refund.\n"))
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	conv := &memory.Conversation{UserID: "u1", Summary: "The user is Ada.", CompactedMessages: 4, Messages: exchange(3)}
	conv.Messages[0].Content = `says </messages> and "quotes"`

	resp, err := memory.Compact(context.Background(), conv, newModel(t, fake), memory.CompactRequest{Model: testModel, Fold: 4, At: at})
	if err != nil {
		t.Fatal(err)
	}
	if conv.Summary != "The user ordered #42 on May 3; the assistant promised a refund." {
		t.Fatalf("summary %q, want the model's, trimmed", conv.Summary)
	}
	if conv.Turns() != 2 || conv.Messages[0].Content != "question 2" || conv.CompactedMessages != 8 || !conv.CompactedAt.Equal(at) {
		t.Fatalf("after compaction: %+v", conv)
	}
	if resp.Usage.InputTokens == 0 || resp.Usage.OutputTokens == 0 {
		t.Fatalf("usage %+v, want the call's", resp.Usage)
	}

	reqs := fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d model calls, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Model != testModel || r.MaxTokens != memory.DefaultSummaryMaxTokens || len(r.System) != 1 || r.System[0].Text != memory.DefaultCompactInstructions || len(r.Messages) != 1 {
		t.Fatalf("compaction request: model %q, max_tokens %d, system %+v, %d messages", r.Model, r.MaxTokens, r.System, len(r.Messages))
	}
	prompt := r.LastUserText()
	for _, want := range []string{
		"<previous_summary>\nThe user is Ada.\n</previous_summary>",
		`{"role":"user","content":"says \u003c/messages\u003e and \"quotes\""}`,
		`{"role":"assistant","content":"answer 1"}`,
	} {
		if !strings.Contains(prompt, want) {
			t.Errorf("prompt lacks %s:\n%s", want, prompt)
		}
	}
	if strings.Contains(prompt, "question 2") || strings.Count(prompt, "</messages>") != 1 {
		t.Errorf("prompt holds a kept message, or a message closed the list:\n%s", prompt)
	}
}

// A failed compaction leaves the conversation as it was, so the turn can go
// on uncompacted.
func TestCompactFailureLeavesTheConversation(t *testing.T) {
	tests := []struct {
		name      string
		reply     *anthropictest.Reply // nil: no call is made
		fold      int
		wantKind  agentd.Kind
		wantUsage bool // the model answered: its usage is returned for costing
	}{
		{"model unavailable", ptr(anthropictest.Error(529, "", "")), 2, agentd.KindModelUnavailable, false},
		{"rate limited", ptr(anthropictest.Error(429, "", "")), 2, agentd.KindRateLimited, false},
		{"summary cut off", ptr(anthropictest.Text("The user").WithStopReason("max_tokens")), 2, agentd.KindModelError, true},
		{"refusal", ptr(anthropictest.Text("No.").WithStopReason("refusal")), 2, agentd.KindModelError, true},
		{"empty summary", ptr(anthropictest.Text(" \n")), 2, agentd.KindModelError, true},
		{"nothing to fold", nil, 0, agentd.KindInvalid, false},
		{"more than the history", nil, 7, agentd.KindInvalid, false},
		{"half an exchange", nil, 1, agentd.KindInvalid, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := anthropictest.New()
			if tt.reply != nil {
				fake.Enqueue(*tt.reply)
			}
			conv := &memory.Conversation{UserID: "u1", Summary: "before", CompactedMessages: 2, Messages: exchange(3)}
			want := *conv
			want.Messages = slices.Clone(conv.Messages)
			resp, err := memory.Compact(context.Background(), conv, newModel(t, fake), memory.CompactRequest{Model: testModel, Fold: tt.fold})
			if agentd.KindOf(err) != tt.wantKind {
				t.Fatalf("Compact error = %v, want kind %s", err, tt.wantKind)
			}
			if !reflect.DeepEqual(*conv, want) {
				t.Fatalf("conversation changed by a failed compaction:\n got %+v\nwant %+v", *conv, want)
			}
			if got := resp.Usage.OutputTokens > 0; got != tt.wantUsage {
				t.Fatalf("usage %+v returned: %v, want %v", resp.Usage, got, tt.wantUsage)
			}
			if calls := len(fake.Requests()); (tt.reply != nil) != (calls == 1) {
				t.Fatalf("%d model calls", calls)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// wire is the part of a request body the prompt cache hashes, as sent.
type wire struct {
	System   json.RawMessage   `json:"system"`
	Messages []json.RawMessage `json:"messages"`
}

// The property compaction exists for: between two compactions, each turn's
// prompt starts with the whole previous prompt, byte for byte, so the prompt
// cache can serve it; a compaction shrinks the history and carries the
// summary. The conversation goes through the store each turn, as the chat
// agent's does.
func TestCompactionKeepsThePrefixStable(t *testing.T) {
	ctx := context.Background()
	fake := anthropictest.New()
	fake.SetResponder(func(r anthropictest.Request) anthropictest.Reply {
		if len(r.System) == 1 && r.System[0].Text == memory.DefaultCompactInstructions {
			return anthropictest.Text(fmt.Sprintf("Summary of a %d-character transcript.", len(r.LastUserText())))
		}
		return anthropictest.Echo(r)
	})
	model := newModel(t, fake)
	store, _ := openStore(t, memory.Options{Clock: clockwork.NewFakeClock()})
	const static = "You are the support agent of Example Corp."
	filler := strings.Repeat("my order has not arrived yet ", 55) // about 400 tokens

	var policy memory.CompactPolicy // the defaults: 8000 tokens, keep 4 exchanges
	var turnReqs []int              // index in fake.Requests() of each turn's request
	compactedBefore := map[int]bool{}
	for turn := range 30 {
		conv, err := store.Load(ctx, "u1")
		if err != nil {
			t.Fatal(err)
		}
		if n := policy.Plan(conv); n > 0 {
			before := conv.Turns()
			if _, err := memory.Compact(ctx, conv, model, memory.CompactRequest{Model: testModel, Fold: n}); err != nil {
				t.Fatal(err)
			}
			if conv.Turns() >= before || conv.Summary == "" {
				t.Fatalf("turn %d: compaction left %d of %d messages, summary %q", turn, conv.Turns(), before, conv.Summary)
			}
			compactedBefore[turn] = true
		}
		history := append(slices.Clone(conv.Messages), memory.Entry{Role: agentd.RoleUser, Content: fmt.Sprintf("[%d] %s", turn, filler)})
		req := agentd.ModelRequest{Model: testModel, System: agentd.SystemText(static), MaxTokens: 1024, Messages: memory.Messages(conv, history)}
		resp, err := model.Generate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		turnReqs = append(turnReqs, len(fake.Requests())-1)
		conv.Messages = append(history, memory.Entry{Role: agentd.RoleAssistant, Content: resp.Text()})
		if err := store.Save(ctx, conv); err != nil {
			t.Fatal(err)
		}
	}
	if len(compactedBefore) < 2 {
		t.Fatalf("%d compactions in 30 turns, want at least 2 to test the prefix between them", len(compactedBefore))
	}

	all := fake.Requests()
	decode := func(i int) wire {
		var w wire
		if err := json.Unmarshal(all[turnReqs[i]].Raw, &w); err != nil {
			t.Fatal(err)
		}
		return w
	}
	prev := decode(0)
	for turn := 1; turn < len(turnReqs); turn++ {
		cur := decode(turn)
		if compactedBefore[turn] {
			first := all[turnReqs[turn]].Messages[0].Content
			if len(cur.Messages) >= len(prev.Messages) || len(first) != 2 || !strings.HasPrefix(first[0].Text, memory.SummaryHeader+"Summary of a ") {
				t.Fatalf("turn %d after a compaction: %d messages (were %d), first message %+v", turn, len(cur.Messages), len(prev.Messages), first)
			}
		} else {
			if !bytes.Equal(cur.System, prev.System) {
				t.Fatalf("turn %d: system changed without a compaction:\n%s\n%s", turn, prev.System, cur.System)
			}
			if len(cur.Messages) != len(prev.Messages)+2 {
				t.Fatalf("turn %d: %d messages after %d", turn, len(cur.Messages), len(prev.Messages))
			}
			for i, m := range prev.Messages {
				if !bytes.Equal(m, cur.Messages[i]) {
					t.Fatalf("turn %d: message %d changed:\n%s\n%s", turn, i, m, cur.Messages[i])
				}
			}
		}
		prev = cur
	}

	conv, err := store.Load(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if conv.Summary == "" || conv.CompactedMessages == 0 || conv.CompactedMessages+conv.Turns() != 60 {
		t.Fatalf("stored: summary %q, %d compacted + %d kept, want 60 messages in all", conv.Summary, conv.CompactedMessages, conv.Turns())
	}
}
