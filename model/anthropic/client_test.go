package anthropic_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/model/anthropic"
	"github.com/agentd/agentd/model/anthropictest"
)

const testKey = "sk-ant-test-key"

// start returns a client of a fresh fake. cfg.BaseURL and an empty
// cfg.APIKey are filled in.
func start(t *testing.T, cfg anthropic.Config, opts ...anthropictest.Option) (*anthropic.Client, *anthropictest.Fake) {
	t.Helper()
	f, url := anthropictest.NewServer(t, opts...)
	cfg.BaseURL = url
	if cfg.APIKey == "" {
		cfg.APIKey = testKey
	}
	c, err := anthropic.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, f
}

// stepClock advances by step on every reading.
type stepClock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.now
	c.now = c.now.Add(c.step)
	return t
}

func user(blocks ...agentd.Block) agentd.Message {
	return agentd.Message{Role: agentd.RoleUser, Content: blocks}
}

func request(msgs ...agentd.Message) agentd.ModelRequest {
	return agentd.ModelRequest{Model: "claude-sonnet-4-5", MaxTokens: 1024, Messages: msgs}
}

func TestGenerateText(t *testing.T) {
	clock := &stepClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), step: 1500 * time.Millisecond}
	c, f := start(t, anthropic.Config{Clock: clock})
	f.Enqueue(anthropictest.Text("Fine, thanks for asking."))

	req := agentd.ModelRequest{
		Model:     "claude-sonnet-4-5",
		System:    agentd.SystemText("Be brief."),
		MaxTokens: 200,
		Messages: []agentd.Message{
			user(agentd.TextBlock("hi")),
			{Role: agentd.RoleAssistant, Content: []agentd.Block{agentd.TextBlock("hello")}},
			user(agentd.TextBlock("how are you?")),
		},
	}
	resp, err := c.Generate(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text() != "Fine, thanks for asking." || len(resp.Content) != 1 {
		t.Errorf("content = %+v", resp.Content)
	}
	if resp.Model != "claude-sonnet-4-5" || resp.StopReason != "end_turn" || !strings.HasPrefix(resp.ID, "msg_fake_") {
		t.Errorf("response = %+v", resp)
	}
	if resp.RequestID != "req_fake_000001" {
		t.Errorf("request id = %q", resp.RequestID)
	}
	if resp.Latency != 1500*time.Millisecond {
		t.Errorf("latency = %v, want one clock step", resp.Latency)
	}
	wantIn := anthropictest.EstimateTokens("Be brief.") + anthropictest.EstimateTokens("hi") +
		anthropictest.EstimateTokens("hello") + anthropictest.EstimateTokens("how are you?")
	want := agentd.Usage{InputTokens: wantIn, OutputTokens: anthropictest.EstimateTokens("Fine, thanks for asking.")}
	if resp.Usage != want {
		t.Errorf("usage = %+v, want %+v", resp.Usage, want)
	}

	// What reached the wire.
	log := f.Requests()
	if len(log) != 1 {
		t.Fatalf("%d requests", len(log))
	}
	r := log[0]
	if r.Model != req.Model || r.MaxTokens != 200 || r.Stream {
		t.Errorf("model %q max_tokens %d stream %v", r.Model, r.MaxTokens, r.Stream)
	}
	if len(r.System) != 1 || r.System[0].Text != "Be brief." {
		t.Errorf("system = %+v", r.System)
	}
	var turns []string
	for _, m := range r.Messages {
		for _, b := range m.Content {
			turns = append(turns, m.Role+":"+b.Type+":"+b.Text)
		}
	}
	if got := strings.Join(turns, " | "); got != "user:text:hi | assistant:text:hello | user:text:how are you?" {
		t.Errorf("messages = %s", got)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+testKey {
		t.Errorf("Authorization = %q", got)
	}
	if r.Header.Get("X-Api-Key") != "" {
		t.Errorf("x-api-key sent as well")
	}
	if got := r.Header.Get("anthropic-version"); got != "2026-10-21" {
		t.Errorf("anthropic-version = %q", got)
	}
}

func TestGenerateUsageWithCache(t *testing.T) {
	c, f := start(t, anthropic.Config{})
	f.Enqueue(anthropictest.Text("x").WithUsage(anthropictest.Usage{InputTokens: 11, OutputTokens: 22, CacheCreationInputTokens: 33, CacheReadInputTokens: 44}))
	resp, err := c.Generate(t.Context(), request(user(agentd.TextBlock("hi"))))
	if err != nil {
		t.Fatal(err)
	}
	if want := (agentd.Usage{InputTokens: 11, OutputTokens: 22, CacheCreationInputTokens: 33, CacheReadInputTokens: 44}); resp.Usage != want {
		t.Errorf("usage = %+v", resp.Usage)
	}
}

func TestGenerateDocumentAndImage(t *testing.T) {
	c, f := start(t, anthropic.Config{})
	pdf := []byte("%PDF-1.7\n1 0 obj <</Type /Page>>\n\x00\xff binary")
	png := []byte("\x89PNG\r\n\x1a\n")
	_, err := c.Generate(t.Context(), request(user(
		agentd.Block{Type: agentd.BlockDocument, MediaType: "application/pdf", Data: pdf},
		agentd.Block{Type: agentd.BlockDocument, MediaType: "text/plain", Data: []byte("plain terms")},
		agentd.Block{Type: agentd.BlockImage, MediaType: "image/png", Data: png},
		agentd.TextBlock("Summarize."),
	)))
	if err != nil {
		t.Fatal(err)
	}
	blocks := f.Requests()[0].Messages[0].Content
	if len(blocks) != 4 {
		t.Fatalf("blocks = %+v", blocks)
	}
	doc := blocks[0]
	if doc.Type != "document" || doc.Source.Type != "base64" || doc.Source.MediaType != "application/pdf" {
		t.Errorf("document = %+v", doc)
	}
	if data, err := doc.Source.Bytes(); err != nil || !bytes.Equal(data, pdf) {
		t.Errorf("document data = %q, %v", data, err)
	}
	if txt := blocks[1]; txt.Type != "document" || txt.Source.Type != "text" || txt.Source.MediaType != "text/plain" || txt.Source.Data != "plain terms" {
		t.Errorf("text document = %+v", txt)
	}
	img := blocks[2]
	if data, _ := img.Source.Bytes(); img.Type != "image" || img.Source.MediaType != "image/png" || !bytes.Equal(data, png) {
		t.Errorf("image = %+v", img)
	}
	if blocks[3].Text != "Summarize." {
		t.Errorf("text = %+v", blocks[3])
	}
}

func TestGenerateRefusesUnsendableBlocks(t *testing.T) {
	c, f := start(t, anthropic.Config{})
	for _, b := range []agentd.Block{
		{Type: "video"},
		{Type: agentd.BlockDocument, MediaType: "application/msword", Data: []byte("x")},
		{Type: agentd.BlockImage, MediaType: "image/bmp", Data: []byte("x")},
		{Type: agentd.BlockToolUse, ToolUseID: "t", ToolName: "f", ToolInput: []byte("{not json")},
	} {
		_, err := c.Generate(t.Context(), request(user(b)))
		var ae *agentd.Error
		if !errors.As(err, &ae) || ae.Kind != agentd.KindInvalid || ae.Field != "messages[0].content[0]" {
			t.Errorf("%+v: %v", b, err)
		}
	}
	_, err := c.Generate(t.Context(), request(agentd.Message{Role: "system", Content: []agentd.Block{agentd.TextBlock("x")}}))
	if agentd.KindOf(err) != agentd.KindInvalid {
		t.Errorf("role system: %v", err)
	}
	if n := len(f.Requests()); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

func TestGenerateToolUse(t *testing.T) {
	c, f := start(t, anthropic.Config{})
	f.Enqueue(anthropictest.Text("Let me check.").WithToolUse("get_weather", map[string]any{"city": "Paris"}))
	resp, err := c.Generate(t.Context(), request(user(agentd.TextBlock("Weather in Paris?"))))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StopReason != "tool_use" || len(resp.Content) != 2 || resp.Text() != "Let me check." {
		t.Fatalf("response = %+v", resp)
	}
	tu := resp.Content[1]
	if tu.Type != agentd.BlockToolUse || tu.ToolName != "get_weather" || !strings.HasPrefix(tu.ToolUseID, "toolu_fake_") {
		t.Errorf("tool use = %+v", tu)
	}
	var in map[string]string
	if err := json.Unmarshal(tu.ToolInput, &in); err != nil || in["city"] != "Paris" {
		t.Errorf("input = %s (%v)", tu.ToolInput, err)
	}

	// The tool_use goes back in an assistant turn as it came. Left
	// unanswered by a tool_result, the API refuses it.
	_, err = c.Generate(t.Context(), request(user(agentd.TextBlock("Weather in Paris?")), agentd.Message{Role: agentd.RoleAssistant, Content: resp.Content}))
	if agentd.KindOf(err) != agentd.KindModelError {
		t.Errorf("unanswered tool_use: %v", err)
	}
	sent := f.Requests()[1].Messages[1].Content[1]
	if sent.Type != "tool_use" || sent.ID != tu.ToolUseID || sent.Name != "get_weather" || string(sent.Input) != string(tu.ToolInput) {
		t.Errorf("tool_use sent back = %+v", sent)
	}
}

// Tools with their schemas, a forced tool choice, a tool result answering a
// tool use, and cache breakpoints on tools, system and message blocks all
// reach the wire as the API expects them.
func TestGenerateToolsChoiceResultsAndCache(t *testing.T) {
	c, f := start(t, anthropic.Config{})
	f.Enqueue(anthropictest.ToolUse("decide", map[string]any{"sentiment": "negative"}))
	schema := `{"type":"object","properties":{"sentiment":{"type":"string","enum":["positive","negative"]}},"required":["sentiment"],"additionalProperties":false}`
	req := agentd.ModelRequest{
		Model:     "claude-sonnet-4-5",
		MaxTokens: 300,
		System: []agentd.Block{
			{Type: agentd.BlockText, Text: "You triage tickets.", Cache: &agentd.CacheControl{TTL: agentd.CacheTTL1h}},
			agentd.TextBlock("Today is Friday."),
		},
		Tools:      []agentd.Tool{{Name: "decide", Description: "Record the decision.", InputSchema: json.RawMessage(schema), Cache: &agentd.CacheControl{}}},
		ToolChoice: agentd.ToolChoice{Type: agentd.ToolChoiceTool, Name: "decide", DisableParallelToolUse: true},
		Messages: []agentd.Message{
			user(agentd.TextBlock("Ticket: it broke.")),
			{Role: agentd.RoleAssistant, Content: []agentd.Block{{Type: agentd.BlockToolUse, ToolUseID: "toolu_1", ToolName: "decide", ToolInput: []byte(`{"sentiment":"angry"}`)}}},
			user(agentd.Block{Type: agentd.BlockToolResult, ToolUseID: "toolu_1", Text: "sentiment must be one of positive, negative", IsError: true},
				agentd.Block{Type: agentd.BlockText, Text: "Try again.", Cache: &agentd.CacheControl{TTL: agentd.CacheTTL5m}}),
		},
	}
	resp, err := c.Generate(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if tu, ok := resp.ToolUse(); !ok || tu.ToolName != "decide" || string(tu.ToolInput) != `{"sentiment":"negative"}` {
		t.Errorf("tool use = %+v, %v", tu, ok)
	}
	r := f.Requests()[0]
	if len(r.Tools) != 1 || r.Tools[0].Name != "decide" || r.Tools[0].Description != "Record the decision." {
		t.Fatalf("tools = %+v", r.Tools)
	}
	var gotSchema, wantSchema any
	_ = json.Unmarshal(r.Tools[0].InputSchema, &gotSchema)
	_ = json.Unmarshal([]byte(schema), &wantSchema)
	if fmt.Sprint(gotSchema) != fmt.Sprint(wantSchema) {
		t.Errorf("input_schema = %s, want %s", r.Tools[0].InputSchema, schema)
	}
	if cc := r.Tools[0].CacheControl; cc == nil || cc.Type != "ephemeral" || (cc.TTL != "" && cc.TTL != "5m") {
		t.Errorf("tool cache_control = %+v", cc)
	}
	if tc := r.ToolChoice; tc == nil || tc.Type != "tool" || tc.Name != "decide" || !tc.DisableParallelToolUse {
		t.Errorf("tool_choice = %+v", tc)
	}
	if len(r.System) != 2 || r.System[0].CacheControl == nil || r.System[0].CacheControl.TTL != "1h" || r.System[1].CacheControl != nil {
		t.Errorf("system = %+v", r.System)
	}
	last := r.Messages[2].Content
	if len(last) != 2 || last[0].Type != "tool_result" || last[0].ToolUseID != "toolu_1" || !last[0].IsError ||
		len(last[0].Content) != 1 || last[0].Content[0].Text != "sentiment must be one of positive, negative" {
		t.Errorf("tool result = %+v", last)
	}
	if last[0].CacheControl != nil || last[1].CacheControl == nil || last[1].CacheControl.TTL != "5m" {
		t.Errorf("message cache_control = %+v / %+v", last[0].CacheControl, last[1].CacheControl)
	}
}

func TestGenerateRefusesBadToolsAndChoices(t *testing.T) {
	c, f := start(t, anthropic.Config{})
	for name, tc := range map[string]struct {
		req   func(*agentd.ModelRequest)
		field string
	}{
		"tool without name": {func(r *agentd.ModelRequest) { r.Tools = []agentd.Tool{{InputSchema: json.RawMessage(`{}`)}} }, "tools[0]"},
		"schema not object": {func(r *agentd.ModelRequest) {
			r.Tools = []agentd.Tool{{Name: "x", InputSchema: json.RawMessage(`[1]`)}}
		}, "tools[0]"},
		"choice tool no name": {func(r *agentd.ModelRequest) { r.ToolChoice = agentd.ToolChoice{Type: agentd.ToolChoiceTool} }, "tool_choice"},
		"choice unknown":      {func(r *agentd.ModelRequest) { r.ToolChoice = agentd.ToolChoice{Type: "maybe"} }, "tool_choice"},
		"system not text":     {func(r *agentd.ModelRequest) { r.System = []agentd.Block{{Type: agentd.BlockImage}} }, "system[0]"},
		"result without id": {func(r *agentd.ModelRequest) {
			r.Messages = []agentd.Message{user(agentd.Block{Type: agentd.BlockToolResult, Text: "x"})}
		}, "messages[0].content[0]"},
	} {
		t.Run(name, func(t *testing.T) {
			req := request(user(agentd.TextBlock("hi")))
			tc.req(&req)
			_, err := c.Generate(t.Context(), req)
			var ae *agentd.Error
			if !errors.As(err, &ae) || ae.Kind != agentd.KindInvalid || ae.Field != tc.field {
				t.Errorf("err = %v, want invalid %s", err, tc.field)
			}
		})
	}
	if n := len(f.Requests()); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

func TestErrorKinds(t *testing.T) {
	c, f := start(t, anthropic.Config{MaxRetries: -1})
	for _, tc := range []struct {
		status int
		kind   agentd.Kind
		typ    string
	}{
		{400, agentd.KindModelError, "invalid_request_error"},
		{401, agentd.KindModelError, "authentication_error"},
		{403, agentd.KindModelError, "permission_error"},
		{404, agentd.KindModelError, "not_found_error"},
		{413, agentd.KindModelError, "request_too_large"},
		{429, agentd.KindRateLimited, "rate_limit_error"},
		{500, agentd.KindModelUnavailable, "api_error"},
		{502, agentd.KindModelUnavailable, "api_error"},
		{503, agentd.KindModelUnavailable, "api_error"},
		{504, agentd.KindModelUnavailable, "timeout_error"},
		{529, agentd.KindModelUnavailable, "overloaded_error"},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			f.Enqueue(anthropictest.Error(tc.status, "", "scripted failure"))
			_, err := c.Generate(t.Context(), request(user(agentd.TextBlock("x"))))
			var ae *agentd.Error
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v", err)
			}
			if ae.Kind != tc.kind || ae.Op != "model" || ae.Message != "scripted failure" {
				t.Errorf("kind %q op %q message %q", ae.Kind, ae.Op, ae.Message)
			}
			if u := ae.Upstream; u == nil || u.Status != tc.status || u.Type != tc.typ || !strings.HasPrefix(u.RequestID, "req_fake_") {
				t.Errorf("upstream = %+v", ae.Upstream)
			}
			var sdkErr *sdk.Error
			if !errors.As(err, &sdkErr) || sdkErr.StatusCode != tc.status {
				t.Errorf("the SDK error is not the cause: %v", err)
			}
			if ae.RetryAfter != 0 {
				t.Errorf("retry after %v without a header", ae.RetryAfter)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c, f := start(t, anthropic.Config{MaxRetries: -1, Clock: &stepClock{now: now}})
	for _, tc := range []struct {
		headers [][2]string
		want    time.Duration
	}{
		{[][2]string{{"retry-after", "3"}}, 3 * time.Second},
		{[][2]string{{"retry-after", now.Add(42 * time.Second).Format(http.TimeFormat)}}, 42 * time.Second},
		{[][2]string{{"retry-after", "3"}, {"retry-after-ms", "1500"}}, 1500 * time.Millisecond},
		{[][2]string{{"retry-after", "soon"}}, 0},
	} {
		reply := anthropictest.Error(429, "", "")
		for _, h := range tc.headers {
			reply = reply.WithHeader(h[0], h[1])
		}
		f.Enqueue(reply)
		_, err := c.Generate(t.Context(), request(user(agentd.TextBlock("x"))))
		ae := agentd.AsError(err)
		if ae.Kind != agentd.KindRateLimited || ae.RetryAfter != tc.want {
			t.Errorf("%v: kind %q retry after %v, want %v", tc.headers, ae.Kind, ae.RetryAfter, tc.want)
		}
	}
}

func TestRetries(t *testing.T) {
	t.Run("two retries", func(t *testing.T) {
		c, f := start(t, anthropic.Config{MaxRetries: 2})
		f.Enqueue(anthropictest.Error(529, "", "").WithHeader("retry-after-ms", "1"), anthropictest.Text("made it"))
		resp, err := c.Generate(t.Context(), request(user(agentd.TextBlock("x"))))
		if err != nil || resp.Text() != "made it" {
			t.Fatalf("%+v %v", resp, err)
		}
		log := f.Requests()
		if len(log) != 2 || log[0].Status != 529 || log[1].Status != 200 {
			t.Fatalf("requests = %+v", log)
		}
		if got := log[1].Header.Get("X-Stainless-Retry-Count"); got != "1" {
			t.Errorf("retry count header = %q", got)
		}
		if resp.RequestID != log[1].RequestID {
			t.Errorf("request id %q, want the answered one %q", resp.RequestID, log[1].RequestID)
		}
	})
	t.Run("SDK default is two", func(t *testing.T) {
		c, f := start(t, anthropic.Config{})
		f.Enqueue(
			anthropictest.Error(429, "", "").WithHeader("retry-after-ms", "1"),
			anthropictest.Error(500, "", "").WithHeader("retry-after-ms", "1"),
			anthropictest.Error(529, "", "").WithHeader("retry-after-ms", "1"),
		)
		_, err := c.Generate(t.Context(), request(user(agentd.TextBlock("x"))))
		if agentd.KindOf(err) != agentd.KindModelUnavailable || len(f.Requests()) != 3 {
			t.Errorf("%v after %d requests", err, len(f.Requests()))
		}
	})
	t.Run("none", func(t *testing.T) {
		c, f := start(t, anthropic.Config{MaxRetries: -1})
		f.Enqueue(anthropictest.Error(529, "", "").WithHeader("retry-after-ms", "1"), anthropictest.Text("too late"))
		_, err := c.Generate(t.Context(), request(user(agentd.TextBlock("x"))))
		if agentd.KindOf(err) != agentd.KindModelUnavailable || len(f.Requests()) != 1 {
			t.Errorf("%v after %d requests", err, len(f.Requests()))
		}
	})
	t.Run("not a 400", func(t *testing.T) {
		c, f := start(t, anthropic.Config{MaxRetries: 2})
		f.Enqueue(anthropictest.Error(400, "", ""), anthropictest.Text("never"))
		_, err := c.Generate(t.Context(), request(user(agentd.TextBlock("x"))))
		if agentd.KindOf(err) != agentd.KindModelError || len(f.Requests()) != 1 {
			t.Errorf("%v after %d requests", err, len(f.Requests()))
		}
	})
	t.Run("dropped connection", func(t *testing.T) {
		c, f := start(t, anthropic.Config{MaxRetries: 1})
		f.Enqueue(anthropictest.Text("lost").CutAfter(0).WithHeader("retry-after-ms", "1"), anthropictest.Text("found"))
		resp, err := c.Generate(t.Context(), request(user(agentd.TextBlock("x"))))
		if err != nil || resp.Text() != "found" || len(f.Requests()) != 2 {
			t.Errorf("%+v %v after %d requests", resp, err, len(f.Requests()))
		}
	})
}

func TestCancel(t *testing.T) {
	c, f := start(t, anthropic.Config{})
	arrived := make(chan struct{})
	f.SetResponder(func(anthropictest.Request) anthropictest.Reply {
		close(arrived)
		return anthropictest.Text("too late").WithDelay(time.Hour)
	})
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-arrived; cancel() }()
	_, err := c.Generate(ctx, request(user(agentd.TextBlock("x"))))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled in the chain", err)
	}
	if agentd.KindOf(err) != agentd.KindTimeout {
		t.Errorf("kind = %q", agentd.KindOf(err))
	}

	past, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()
	_, err = c.Generate(past, request(user(agentd.TextBlock("x"))))
	if !errors.Is(err, context.DeadlineExceeded) || agentd.KindOf(err) != agentd.KindTimeout {
		t.Errorf("expired context: %v", err)
	}
}

func TestAttemptTimeout(t *testing.T) {
	c, f := start(t, anthropic.Config{MaxRetries: -1, Timeout: 20 * time.Millisecond})
	f.Enqueue(anthropictest.Text("slow").WithDelay(time.Hour))
	_, err := c.Generate(t.Context(), request(user(agentd.TextBlock("x"))))
	if agentd.KindOf(err) != agentd.KindModelUnavailable || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v", err)
	}
}

func TestValidationErrorsOfTheAPI(t *testing.T) {
	c, _ := start(t, anthropic.Config{MaxRetries: -1})
	for name, req := range map[string]agentd.ModelRequest{
		"assistant first": request(agentd.Message{Role: agentd.RoleAssistant, Content: []agentd.Block{agentd.TextBlock("x")}}),
		"no model":        {MaxTokens: 10, Messages: []agentd.Message{user(agentd.TextBlock("x"))}},
		"no max_tokens":   {Model: "m", Messages: []agentd.Message{user(agentd.TextBlock("x"))}},
		"no messages":     {Model: "m", MaxTokens: 10},
		"empty message":   request(user()),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.Generate(t.Context(), req)
			ae := agentd.AsError(err)
			if ae.Kind != agentd.KindModelError || ae.Upstream == nil || ae.Upstream.Status != 400 || ae.Upstream.Type != "invalid_request_error" {
				t.Errorf("err = %v (%+v)", err, ae.Upstream)
			}
		})
	}
}

func TestKeyNeverInErrors(t *testing.T) {
	const secret = "sk-ant-api03-SECRET-d1st1nct1ve-KEY-0123456789"
	check := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("no error")
		}
		for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%v", err), fmt.Sprintf("%#v", err), fmt.Sprintf("%+v", agentd.AsError(err).Err)} {
			if strings.Contains(s, secret) || strings.Contains(s, "d1st1nct1ve") {
				t.Errorf("the key leaks: %s", s)
			}
		}
		// Nor can code that unwraps the SDK error find it.
		var sdkErr *sdk.Error
		if errors.As(err, &sdkErr) {
			for _, r := range []*http.Request{sdkErr.Request, sdkErr.Response.Request} {
				if r != nil && strings.Contains(fmt.Sprint(r.Header), "d1st1nct1ve") {
					t.Errorf("the SDK error's request keeps the key: %v", r.Header)
				}
			}
			if strings.Contains(string(sdkErr.DumpRequest(true)), "d1st1nct1ve") || strings.Contains(string(sdkErr.DumpResponse(true)), "d1st1nct1ve") {
				t.Errorf("the dumps keep the key")
			}
		}
	}
	t.Run("401", func(t *testing.T) {
		c, _ := start(t, anthropic.Config{APIKey: secret, MaxRetries: -1}, anthropictest.WithAPIKey("another-key"))
		_, err := c.Generate(t.Context(), request(user(agentd.TextBlock("x"))))
		if agentd.AsError(err).Upstream.Status != 401 {
			t.Fatalf("err = %v", err)
		}
		check(t, err)
	})
	t.Run("500", func(t *testing.T) {
		c, f := start(t, anthropic.Config{APIKey: secret, MaxRetries: -1})
		f.Enqueue(anthropictest.Error(500, "", ""))
		_, err := c.Generate(t.Context(), request(user(agentd.TextBlock("x"))))
		if agentd.AsError(err).Upstream.Status != 500 {
			t.Fatalf("err = %v", err)
		}
		check(t, err)
	})
	t.Run("stream error event", func(t *testing.T) {
		c, f := start(t, anthropic.Config{APIKey: secret, MaxRetries: -1})
		f.Enqueue(anthropictest.Text("a b c d").ErrorEventAfter(1, "overloaded_error", ""))
		req := request(user(agentd.TextBlock("x")))
		req.MaxTokens = 64000
		_, err := c.Generate(t.Context(), req)
		check(t, err)
	})
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		c, err := anthropic.New(anthropic.Config{APIKey: secret, BaseURL: srv.URL, MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Generate(t.Context(), request(user(agentd.TextBlock("x"))))
		if agentd.KindOf(err) != agentd.KindModelUnavailable {
			t.Errorf("kind = %q: %v", agentd.KindOf(err), err)
		}
		check(t, err)
	})
}

func TestStreamedForLongAnswers(t *testing.T) {
	long := func() agentd.ModelRequest {
		r := request(user(agentd.TextBlock("Write a long essay.")))
		r.MaxTokens = 64000 // more than the SDK sends without streaming
		return r
	}
	t.Run("answer", func(t *testing.T) {
		c, f := start(t, anthropic.Config{})
		f.Enqueue(anthropictest.Text("A long essay, in several words and chunks.").WithToolUse("save", map[string]any{"title": "Essay", "words": 9}))
		resp, err := c.Generate(t.Context(), long())
		if err != nil {
			t.Fatal(err)
		}
		if !f.Requests()[0].Stream {
			t.Errorf("not streamed")
		}
		if resp.Text() != "A long essay, in several words and chunks." || len(resp.Content) != 2 || resp.StopReason != "tool_use" {
			t.Errorf("response = %+v", resp)
		}
		var in map[string]any
		if err := json.Unmarshal(resp.Content[1].ToolInput, &in); err != nil || in["title"] != "Essay" {
			t.Errorf("tool input %s: %v", resp.Content[1].ToolInput, err)
		}
		if resp.Usage.InputTokens != anthropictest.EstimateTokens("Write a long essay.") || resp.Usage.OutputTokens < 10 {
			t.Errorf("usage = %+v", resp.Usage)
		}
		if resp.RequestID != "req_fake_000001" || resp.ID == "" || resp.Model != "claude-sonnet-4-5" {
			t.Errorf("ids = %+v", resp)
		}
	})
	t.Run("error event", func(t *testing.T) {
		c, f := start(t, anthropic.Config{MaxRetries: 2})
		f.Enqueue(anthropictest.Text("a b c d e f").ErrorEventAfter(1, "overloaded_error", "Overloaded"), anthropictest.Text("not retried"))
		_, err := c.Generate(t.Context(), long())
		ae := agentd.AsError(err)
		if ae.Kind != agentd.KindModelUnavailable || ae.Upstream == nil || ae.Upstream.Type != "overloaded_error" || ae.Upstream.RequestID != "req_fake_000001" {
			t.Errorf("err = %v (%+v)", err, ae.Upstream)
		}
		if len(f.Requests()) != 1 {
			t.Errorf("%d requests: an error after the 200 is not retried by the SDK", len(f.Requests()))
		}
	})
	t.Run("cut", func(t *testing.T) {
		c, f := start(t, anthropic.Config{})
		f.Enqueue(anthropictest.Text("a b c d e f").CutAfter(1))
		_, err := c.Generate(t.Context(), long())
		if agentd.KindOf(err) != agentd.KindModelUnavailable || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("status error", func(t *testing.T) {
		c, f := start(t, anthropic.Config{MaxRetries: -1})
		f.Enqueue(anthropictest.Error(429, "", "slow down").WithHeader("retry-after", "2"))
		_, err := c.Generate(t.Context(), long())
		ae := agentd.AsError(err)
		if ae.Kind != agentd.KindRateLimited || ae.RetryAfter != 2*time.Second || ae.Message != "slow down" {
			t.Errorf("err = %v", err)
		}
	})
}

// recorder is a transport that notes the hosts it is asked for.
type recorder struct {
	mu    sync.Mutex
	hosts []string
	next  http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.hosts = append(r.hosts, req.URL.Host)
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

func TestOfflineAndEnvironment(t *testing.T) {
	// agentd's config resolves these; the SDK must not read them behind it.
	t.Setenv("ANTHROPIC_API_KEY", "sk-from-env")
	t.Setenv("ANTHROPIC_AUTH_TOKEN", "token-from-env")
	t.Setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")
	t.Setenv("ANTHROPIC_CUSTOM_HEADERS", "X-From-Env: 1")

	f := anthropictest.New()
	rec := &recorder{next: f.HTTPClient().Transport}
	c, err := anthropic.New(anthropic.Config{APIKey: "offline", HTTPClient: &http.Client{Transport: rec}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Generate(t.Context(), request(user(agentd.TextBlock("hello offline"))))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text() != "You said: hello offline" {
		t.Errorf("echo = %q", resp.Text())
	}
	if len(rec.hosts) != 1 || rec.hosts[0] != "api.anthropic.com" {
		t.Errorf("hosts = %v, want the SDK's default, not ANTHROPIC_BASE_URL", rec.hosts)
	}
	h := f.Requests()[0].Header
	if h.Get("Authorization") != "Bearer offline" || h.Get("X-From-Env") != "" {
		t.Errorf("headers = %v", h)
	}
}

func TestNew(t *testing.T) {
	for name, cfg := range map[string]anthropic.Config{
		"no key":           {},
		"relative base":    {APIKey: "k", BaseURL: "/v1"},
		"other scheme":     {APIKey: "k", BaseURL: "ftp://example.com"},
		"retries below -1": {APIKey: "k", MaxRetries: -2},
		"negative timeout": {APIKey: "k", Timeout: -time.Second},
	} {
		if _, err := anthropic.New(cfg); agentd.KindOf(err) != agentd.KindInvalid {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := anthropic.New(anthropic.Config{APIKey: "k", BaseURL: "https://gateway.example.com/anthropic"}); err != nil {
		t.Errorf("base URL with a path: %v", err)
	}
}

func TestConcurrentGenerate(t *testing.T) {
	c, f := start(t, anthropic.Config{})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			req := request(user(agentd.TextBlock(fmt.Sprint("n", i))))
			if i%2 == 0 {
				req.MaxTokens = 64000
			}
			resp, err := c.Generate(t.Context(), req)
			if err != nil || resp.Text() != fmt.Sprint("You said: n", i) {
				t.Errorf("%d: %q %v", i, resp.Text(), err)
			}
		})
	}
	wg.Wait()
	if n := len(f.Requests()); n != 20 {
		t.Errorf("%d requests", n)
	}
}
