package anthropic_test

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/model/anthropic"
	"github.com/agentd/agentd/model/anthropictest"
)

// deltas collects what OnTextDelta passes on. It takes no lock on purpose:
// the deltas must come from the goroutine that called Generate, and the race
// detector reports them if they do not.
type deltas struct{ got []string }

func (d *deltas) on(s string) { d.got = append(d.got, s) }

func streamed(d *deltas, text string) agentd.ModelRequest {
	r := request(user(agentd.TextBlock(text)))
	r.OnTextDelta = d.on
	return r
}

func TestStreamTextDeltas(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply anthropictest.Reply
		want  []string // the deltas: the fake sends text three words at a time
		text  string
		tools int
	}{
		{
			name:  "text",
			reply: anthropictest.Text("one two three four five six seven"),
			want:  []string{"one two three ", "four five six ", "seven"},
			text:  "one two three four five six seven",
		},
		{
			// Tool input arrives as input_json_delta: it is accumulated, not
			// passed on as text.
			name:  "text and tool use",
			reply: anthropictest.Text("Let me look that up.").WithToolUse("lookup", map[string]any{"query": "a long enough query to take several deltas"}),
			want:  []string{"Let me look ", "that up."},
			text:  "Let me look that up.",
			tools: 1,
		},
		{
			name:  "tool use only",
			reply: anthropictest.ToolUse("lookup", map[string]any{"q": "x"}),
			tools: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := start(t, anthropic.Config{MaxRetries: -1})
			f.Enqueue(tc.reply)
			var d deltas
			resp, err := c.Generate(t.Context(), streamed(&d, "hi"))
			if err != nil {
				t.Fatal(err)
			}
			if !f.Requests()[0].Stream {
				t.Errorf("not streamed")
			}
			if strings.Join(d.got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("deltas = %q, want %q", d.got, tc.want)
			}
			if resp.Text() != tc.text {
				t.Errorf("text = %q, want %q", resp.Text(), tc.text)
			}
			tools := 0
			for _, b := range resp.Content {
				if b.Type == agentd.BlockToolUse {
					tools++
					if !json.Valid(b.ToolInput) || len(b.ToolInput) < 3 {
						t.Errorf("tool input = %s", b.ToolInput)
					}
				}
			}
			if tools != tc.tools {
				t.Errorf("%d tool uses, want %d", tools, tc.tools)
			}
			if resp.RequestID != "req_fake_000001" || resp.ID == "" || resp.StopReason == "" || resp.Usage.OutputTokens == 0 {
				t.Errorf("response = %+v", resp)
			}
		})
	}
}

// A streamed call that fails is classified like a plain one; an SSE error
// event after the 200 by its type. Deltas that arrived before the failure
// were passed on already.
func TestStreamFaults(t *testing.T) {
	text := "a b c d e f g h i j k l"
	for _, tc := range []struct {
		name     string
		reply    anthropictest.Reply
		kind     agentd.Kind
		status   int    // of Upstream; 0: none
		typ      string // of Upstream
		eof      bool   // io.ErrUnexpectedEOF in the chain
		received []string
	}{
		{name: "cut before the first delta", reply: anthropictest.Text(text).CutAfter(0), kind: agentd.KindModelUnavailable, eof: true},
		{name: "cut after two deltas", reply: anthropictest.Text(text).CutAfter(2), kind: agentd.KindModelUnavailable, eof: true, received: []string{"a b c ", "d e f "}},
		{name: "overloaded event", reply: anthropictest.Text(text).ErrorEventAfter(1, "overloaded_error", ""), kind: agentd.KindModelUnavailable, status: 200, typ: "overloaded_error", received: []string{"a b c "}},
		{name: "overloaded event first", reply: anthropictest.Text(text).ErrorEventAfter(0, "overloaded_error", ""), kind: agentd.KindModelUnavailable, status: 200, typ: "overloaded_error"},
		{name: "api error event", reply: anthropictest.Text(text).ErrorEventAfter(0, "api_error", ""), kind: agentd.KindModelUnavailable, status: 200, typ: "api_error"},
		{name: "rate limit event", reply: anthropictest.Text(text).ErrorEventAfter(0, "rate_limit_error", ""), kind: agentd.KindRateLimited, status: 200, typ: "rate_limit_error"},
		{name: "invalid request event", reply: anthropictest.Text(text).ErrorEventAfter(0, "invalid_request_error", ""), kind: agentd.KindModelError, status: 200, typ: "invalid_request_error"},
		{name: "529 before the stream", reply: anthropictest.Error(529, "", ""), kind: agentd.KindModelUnavailable, status: 529, typ: "overloaded_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := start(t, anthropic.Config{MaxRetries: -1})
			f.Enqueue(tc.reply)
			var d deltas
			_, err := c.Generate(t.Context(), streamed(&d, "x"))
			ae := agentd.AsError(err)
			if err == nil || ae.Kind != tc.kind || ae.Op != "model" {
				t.Fatalf("err = %v (kind %q), want kind %q", err, ae.Kind, tc.kind)
			}
			if tc.status == 0 {
				if ae.Upstream != nil {
					t.Errorf("upstream = %+v", ae.Upstream)
				}
			} else if u := ae.Upstream; u == nil || u.Status != tc.status || u.Type != tc.typ || u.RequestID != "req_fake_000001" {
				t.Errorf("upstream = %+v, want %d %s", ae.Upstream, tc.status, tc.typ)
			}
			if got := errors.Is(err, io.ErrUnexpectedEOF); got != tc.eof {
				t.Errorf("unexpected EOF in the chain: %v, want %v (%v)", got, tc.eof, err)
			}
			if tc.eof && ae.Message != "the model API dropped the connection" {
				t.Errorf("message = %q", ae.Message)
			}
			if strings.Join(d.got, "|") != strings.Join(tc.received, "|") {
				t.Errorf("deltas = %q, want %q", d.got, tc.received)
			}
			if n := len(f.Requests()); n != 1 {
				t.Errorf("%d requests", n)
			}
		})
	}
}

// The 1-hour part of the cache writes is reported, from a plain answer and
// from a streamed one (where it comes with message_start).
func TestUsageCacheCreation1h(t *testing.T) {
	long := strings.Repeat("The policy text that every request shares. ", 120) // > 1,024 tokens
	prefix := anthropictest.EstimateTokens(long)
	for _, stream := range []bool{false, true} {
		name := "plain"
		if stream {
			name = "streamed"
		}
		t.Run(name, func(t *testing.T) {
			c, f := start(t, anthropic.Config{MaxRetries: -1})
			gen := func(req agentd.ModelRequest) agentd.Usage {
				t.Helper()
				if stream {
					req.OnTextDelta = func(string) {}
				}
				resp, err := c.Generate(t.Context(), req)
				if err != nil {
					t.Fatal(err)
				}
				if got := f.Requests()[len(f.Requests())-1].Stream; got != stream {
					t.Fatalf("stream = %v", got)
				}
				return resp.Usage
			}

			// Scripted: a split of both TTLs.
			f.Enqueue(anthropictest.Text("x").WithUsage(anthropictest.Usage{
				InputTokens: 5, OutputTokens: 7, CacheCreationInputTokens: 30, CacheReadInputTokens: 11,
				CacheCreation: anthropictest.CacheCreation{Ephemeral5mInputTokens: 10, Ephemeral1hInputTokens: 20},
			}))
			if got, want := gen(request(user(agentd.TextBlock("hi")))), (agentd.Usage{InputTokens: 5, OutputTokens: 7, CacheCreationInputTokens: 30, CacheReadInputTokens: 11, CacheCreation1hInputTokens: 20}); got != want {
				t.Errorf("scripted: usage = %+v, want %+v", got, want)
			}

			// Accounted by the fake: a 1-hour breakpoint is written, then read.
			req := request(user(agentd.TextBlock("hi")))
			req.System = []agentd.Block{{Type: agentd.BlockText, Text: long, Cache: &agentd.CacheControl{TTL: agentd.CacheTTL1h}}}
			if u := gen(req); u.CacheCreationInputTokens != prefix || u.CacheCreation1hInputTokens != prefix || u.CacheReadInputTokens != 0 {
				t.Errorf("write: usage = %+v, want %d tokens written for an hour", u, prefix)
			}
			if u := gen(req); u.CacheCreationInputTokens != 0 || u.CacheCreation1hInputTokens != 0 || u.CacheReadInputTokens != prefix {
				t.Errorf("read: usage = %+v, want %d tokens read", u, prefix)
			}
			// A 5-minute write is not counted as an hour's.
			req.System[0].Cache = &agentd.CacheControl{}
			req.System[0].Text += " Changed."
			if u := gen(req); u.CacheCreationInputTokens == 0 || u.CacheCreation1hInputTokens != 0 {
				t.Errorf("5m write: usage = %+v", u)
			}
		})
	}
}

func TestDocumentTitle(t *testing.T) {
	for _, tc := range []struct {
		name  string
		block agentd.Block
		title any // nil: no title field
	}{
		{"pdf with title", agentd.Block{Type: agentd.BlockDocument, MediaType: "application/pdf", Data: []byte("%PDF-1.7"), Title: "contracts/acme.pdf"}, "contracts/acme.pdf"},
		{"text with title", agentd.Block{Type: agentd.BlockDocument, MediaType: "text/plain", Data: []byte("terms"), Title: "faq.txt"}, "faq.txt"},
		{"no title", agentd.Block{Type: agentd.BlockDocument, MediaType: "application/pdf", Data: []byte("%PDF-1.7")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := start(t, anthropic.Config{MaxRetries: -1})
			if _, err := c.Generate(t.Context(), request(user(tc.block, agentd.TextBlock("Summarize.")))); err != nil {
				t.Fatal(err)
			}
			var sent map[string]any
			if err := json.Unmarshal(f.Requests()[0].Messages[0].Content[0].Raw, &sent); err != nil {
				t.Fatal(err)
			}
			if sent["type"] != "document" || sent["title"] != tc.title {
				t.Errorf("block = %v, want title %v", sent, tc.title)
			}
		})
	}
}
