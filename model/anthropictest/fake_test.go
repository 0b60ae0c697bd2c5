package anthropictest_test

import (
	"bytes"
	"context"
	"encoding/base64"
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
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/agentd/agentd/model/anthropictest"
)

const testModel = "claude-sonnet-4-5"

// client is an SDK client of the fake at baseURL that does not retry, so
// that each call is one request.
func client(baseURL string, opts ...option.RequestOption) *sdk.Client {
	c := sdk.NewClient(append([]option.RequestOption{
		option.WithoutEnvironmentDefaults(),
		option.WithAPIKey("sk-test"),
		option.WithBaseURL(baseURL),
		option.WithMaxRetries(0),
	}, opts...)...)
	return &c
}

func userText(s string) sdk.MessageParam { return sdk.NewUserMessage(sdk.NewTextBlock(s)) }

func params(msgs ...sdk.MessageParam) sdk.MessageNewParams {
	return sdk.MessageNewParams{Model: testModel, MaxTokens: 1024, Messages: msgs}
}

func TestNonStreaming(t *testing.T) {
	f, url := anthropictest.NewServer(t)
	f.Enqueue(anthropictest.Text("Hello there, human."))
	c := client(url)

	p := params(userText("hi"))
	p.System = []sdk.TextBlockParam{{Text: "Be brief."}}
	var raw *http.Response
	msg, err := c.Messages.New(t.Context(), p, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if got := raw.Header.Get("request-id"); got != "req_fake_000001" {
		t.Errorf("request-id = %q", got)
	}
	if !strings.HasPrefix(msg.ID, "msg_fake_") || msg.Model != testModel || msg.Role != "assistant" || msg.Type != "message" {
		t.Errorf("message = %s", msg.RawJSON())
	}
	if len(msg.Content) != 1 || msg.Content[0].Type != "text" || msg.Content[0].Text != "Hello there, human." {
		t.Errorf("content = %s", msg.RawJSON())
	}
	if msg.StopReason != sdk.StopReasonEndTurn {
		t.Errorf("stop_reason = %q", msg.StopReason)
	}
	wantIn := anthropictest.EstimateTokens("Be brief.") + anthropictest.EstimateTokens("hi")
	if msg.Usage.InputTokens != wantIn || msg.Usage.OutputTokens != anthropictest.EstimateTokens("Hello there, human.") {
		t.Errorf("usage = %s, want input %d", msg.Usage.RawJSON(), wantIn)
	}
	if !strings.Contains(msg.RawJSON(), `"stop_sequence":null`) {
		t.Errorf("stop_sequence should be null: %s", msg.RawJSON())
	}
}

func TestEchoAndResponder(t *testing.T) {
	f, url := anthropictest.NewServer(t)
	c := client(url)
	msg, err := c.Messages.New(t.Context(), params(userText("first"), sdk.NewAssistantMessage(sdk.NewTextBlock("ok")), userText("ping")))
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Content[0].Text; got != "You said: ping" {
		t.Errorf("echo = %q", got)
	}

	f.SetResponder(func(r anthropictest.Request) anthropictest.Reply {
		return anthropictest.Text(strings.ToUpper(r.LastUserText()))
	})
	msg, err = c.Messages.New(t.Context(), params(userText("shout")))
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Content[0].Text; got != "SHOUT" {
		t.Errorf("responder = %q", got)
	}
}

func TestEnqueueOrder(t *testing.T) {
	f, url := anthropictest.NewServer(t)
	f.Enqueue(anthropictest.Text("one"), anthropictest.Text("two"))
	f.Enqueue(anthropictest.Error(529, "", ""))
	c := client(url)
	for _, want := range []string{"one", "two"} {
		msg, err := c.Messages.New(t.Context(), params(userText("x")))
		if err != nil {
			t.Fatal(err)
		}
		if got := msg.Content[0].Text; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	_, err := c.Messages.New(t.Context(), params(userText("x")))
	var apiErr *sdk.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 529 || apiErr.Type() != "overloaded_error" || apiErr.Message != "Overloaded" {
		t.Fatalf("third = %v", err)
	}
	msg, err := c.Messages.New(t.Context(), params(userText("x")))
	if err != nil || msg.Content[0].Text != "You said: x" {
		t.Errorf("after the queue: %v %v", msg, err)
	}
}

// collect streams p and returns the accumulated message, the event types
// in order, and the stream's error.
func collect(t *testing.T, c *sdk.Client, p sdk.MessageNewParams, opts ...option.RequestOption) (sdk.Message, []string, error) {
	t.Helper()
	s := c.Messages.NewStreaming(t.Context(), p, opts...)
	defer s.Close()
	var msg sdk.Message
	var events []string
	for s.Next() {
		ev := s.Current()
		events = append(events, ev.Type)
		if err := msg.Accumulate(ev); err != nil {
			t.Fatalf("accumulate %s: %v", ev.Type, err)
		}
	}
	return msg, events, s.Err()
}

func TestStreaming(t *testing.T) {
	f, url := anthropictest.NewServer(t)
	reply := anthropictest.Text("The quick brown fox jumps over the lazy dog.").
		WithToolUse("get_weather", map[string]any{"city": "Paris", "unit": "celsius", "note": "naïve café"})
	f.Enqueue(reply, reply)
	c := client(url)

	want, err := c.Messages.New(t.Context(), params(userText("weather?")))
	if err != nil {
		t.Fatal(err)
	}
	var raw *http.Response
	got, events, err := collect(t, c, params(userText("weather?")), option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if ct := raw.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	if raw.Header.Get("request-id") != "req_fake_000002" {
		t.Errorf("request-id = %q", raw.Header.Get("request-id"))
	}

	// The SDK drops ping events; the rest is the API's sequence, with a
	// few deltas per block.
	if got, want := squeeze(events), "message_start content_block_start content_block_delta+ content_block_stop "+
		"content_block_start content_block_delta+ content_block_stop message_delta message_stop"; got != want {
		t.Errorf("events:\n got %s\nwant %s", got, want)
	}
	if n := strings.Count(strings.Join(events, " "), "content_block_delta"); n < 4 {
		t.Errorf("%d deltas: the answer should come in pieces", n)
	}

	if len(got.Content) != 2 || got.Content[0].Text != want.Content[0].Text {
		t.Fatalf("streamed content = %s", got.RawJSON())
	}
	tu := got.Content[1]
	if tu.Type != "tool_use" || tu.Name != "get_weather" || !strings.HasPrefix(tu.ID, "toolu_fake_") {
		t.Errorf("tool_use = %s", got.RawJSON())
	}
	var in, wantIn map[string]any
	if err := json.Unmarshal(tu.Input, &in); err != nil {
		t.Fatalf("input %s: %v", tu.Input, err)
	}
	json.Unmarshal(want.Content[1].Input, &wantIn)
	if fmt.Sprint(in) != fmt.Sprint(wantIn) || in["note"] != "naïve café" {
		t.Errorf("input = %v, want %v", in, wantIn)
	}
	if got.StopReason != sdk.StopReasonToolUse || want.StopReason != sdk.StopReasonToolUse {
		t.Errorf("stop_reason = %q / %q", got.StopReason, want.StopReason)
	}
	if got.Usage.InputTokens != want.Usage.InputTokens || got.Usage.OutputTokens != want.Usage.OutputTokens {
		t.Errorf("usage streamed %s, whole %s", got.Usage.RawJSON(), want.Usage.RawJSON())
	}
	if r := f.Requests(); !r[1].Stream || r[0].Stream {
		t.Errorf("Stream flags = %v, %v", r[0].Stream, r[1].Stream)
	}
}

// squeeze writes runs of the same event as one, with a "+".
func squeeze(events []string) string {
	var out []string
	for i, e := range events {
		switch {
		case i > 0 && events[i-1] == e && strings.HasSuffix(out[len(out)-1], "+"):
		case i > 0 && events[i-1] == e:
			out[len(out)-1] += "+"
		default:
			out = append(out, e)
		}
	}
	return strings.Join(out, " ")
}

func TestStreamingRawEvents(t *testing.T) {
	_, url := anthropictest.NewServer(t)
	resp, body := post(t, url+"/v1/messages", `{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hello"}]}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var names []string
	for _, frame := range strings.Split(strings.TrimSpace(string(body)), "\n\n") {
		lines := strings.Split(frame, "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "event: ") || !strings.HasPrefix(lines[1], "data: ") {
			t.Fatalf("frame %q", frame)
		}
		name := strings.TrimPrefix(lines[0], "event: ")
		var data struct{ Type string }
		if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[1], "data: ")), &data); err != nil || data.Type != name {
			t.Errorf("data of %s: %s (%v)", name, lines[1], err)
		}
		names = append(names, name)
	}
	// "You said: hello" is one chunk of three words.
	want := "message_start ping content_block_start content_block_delta content_block_stop message_delta message_stop"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("events:\n got %s\nwant %s", got, want)
	}
	if !strings.Contains(string(body), `"output_tokens":1}`) {
		t.Errorf("message_start should carry output_tokens 1:\n%s", body)
	}
}

func TestErrorEventAfter(t *testing.T) {
	f, url := anthropictest.NewServer(t)
	f.Enqueue(anthropictest.Text("one two three four five six seven eight nine").ErrorEventAfter(2, "overloaded_error", "Overloaded"))
	got, events, err := collect(t, client(url), params(userText("x")))
	var apiErr *sdk.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v, want an API error", err)
	}
	if apiErr.Type() != "overloaded_error" || apiErr.Message != "Overloaded" || apiErr.StatusCode != 200 || apiErr.RequestID != "req_fake_000001" {
		t.Errorf("error: type %q message %q status %d request %q", apiErr.Type(), apiErr.Message, apiErr.StatusCode, apiErr.RequestID)
	}
	if n := strings.Count(strings.Join(events, " "), "content_block_delta"); n != 2 {
		t.Errorf("%d deltas before the error, want 2", n)
	}
	if got.Content[0].Text != "one two three four five six " {
		t.Errorf("text so far = %q", got.Content[0].Text)
	}
	if r := f.Requests()[0]; r.Status != 200 || r.ErrorType != "overloaded_error" {
		t.Errorf("log: status %d type %q", r.Status, r.ErrorType)
	}

	// A non-streaming request gets the error as an HTTP error.
	f.Enqueue(anthropictest.Text("x").ErrorEventAfter(0, "overloaded_error", ""))
	_, err = client(url).Messages.New(t.Context(), params(userText("x")))
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 529 {
		t.Errorf("non-streaming: %v", err)
	}
}

func TestCutAfter(t *testing.T) {
	f, url := anthropictest.NewServer(t)
	for name, c := range map[string]*sdk.Client{
		"server":    client(url),
		"in-memory": client("http://fake.invalid", option.WithHTTPClient(f.HTTPClient())),
	} {
		t.Run(name, func(t *testing.T) {
			f.Enqueue(anthropictest.Text("one two three four five six seven eight nine").CutAfter(1))
			got, events, err := collect(t, c, params(userText("x")))
			if err == nil {
				t.Fatalf("stream ended cleanly after %v", events)
			}
			var apiErr *sdk.Error
			if errors.As(err, &apiErr) {
				t.Errorf("a dropped connection is not an API error: %v", err)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("err = %v, want unexpected EOF", err)
			}
			if len(got.Content) != 1 || got.Content[0].Text != "one two three " {
				t.Errorf("content so far = %s", got.RawJSON())
			}

			// Non-streaming: no status at all.
			f.Enqueue(anthropictest.Text("x").CutAfter(0))
			_, err = c.Messages.New(t.Context(), params(userText("x")))
			if err == nil || errors.As(err, &apiErr) {
				t.Errorf("non-streaming cut: %v", err)
			}
		})
	}
}

func TestInMemoryClient(t *testing.T) {
	f := anthropictest.New()
	c := client("http://offline.invalid", option.WithHTTPClient(f.HTTPClient()))
	msg, err := c.Messages.New(t.Context(), params(userText("offline")))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Content[0].Text != "You said: offline" {
		t.Errorf("got %q", msg.Content[0].Text)
	}
	got, _, err := collect(t, c, params(userText("streamed offline")))
	if err != nil || got.Content[0].Text != "You said: streamed offline" {
		t.Errorf("stream: %q %v", got.Content[0].Text, err)
	}
	f.Enqueue(anthropictest.Error(429, "", "").WithHeader("retry-after", "7"))
	var raw *http.Response
	_, err = c.Messages.New(t.Context(), params(userText("x")), option.WithResponseInto(&raw))
	var apiErr *sdk.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Response.Header.Get("retry-after") != "7" {
		t.Errorf("429: %v", err)
	}
}

func TestDelayStopsOnCancel(t *testing.T) {
	for _, inMemory := range []bool{false, true} {
		t.Run(fmt.Sprint("in-memory=", inMemory), func(t *testing.T) {
			f, url := anthropictest.NewServer(t)
			c := client(url)
			if inMemory {
				c = client("http://fake.invalid", option.WithHTTPClient(f.HTTPClient()))
			}
			arrived := make(chan struct{})
			f.SetResponder(func(anthropictest.Request) anthropictest.Reply {
				close(arrived)
				return anthropictest.Text("late").WithDelay(time.Hour)
			})
			ctx, cancel := context.WithCancel(t.Context())
			go func() { <-arrived; cancel() }()
			_, err := c.Messages.New(ctx, params(userText("x")))
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
			// The handler must not sit out its hour: the server's Close at
			// cleanup waits for it.
		})
	}
}

// post sends body to url with the headers the SDK would send, overridden by
// hdr ("" deletes).
func post(t *testing.T, url, body string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-test")
	req.Header.Set("anthropic-version", "2026-10-21")
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

type errorBody struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

// wantError checks the real error body and the request-id header.
func wantError(t *testing.T, resp *http.Response, body []byte, status int, errType, inMessage string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d: %s", resp.StatusCode, status, body)
	}
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	if e.Type != "error" || e.Error.Type != errType || !strings.Contains(e.Error.Message, inMessage) {
		t.Errorf("body = %s, want type %s with %q", body, errType, inMessage)
	}
	if id := resp.Header.Get("request-id"); id == "" || id != e.RequestID {
		t.Errorf("request-id header %q, body %q", id, e.RequestID)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestValidation(t *testing.T) {
	const user = `{"role":"user","content":"hi"}`
	pdf := base64.StdEncoding.EncodeToString([]byte("%PDF-1.4"))
	for name, tc := range map[string]struct{ body, field string }{
		"not JSON":                 {`{"model":`, "not valid JSON"},
		"not an object":            {`[1,2]`, "JSON object"},
		"model missing":            {`{"max_tokens":5,"messages":[` + user + `]}`, "model: Field required"},
		"model empty":              {`{"model":"","max_tokens":5,"messages":[` + user + `]}`, "model:"},
		"model not a string":       {`{"model":5,"max_tokens":5,"messages":[` + user + `]}`, "model:"},
		"max_tokens missing":       {`{"model":"m","messages":[` + user + `]}`, "max_tokens: Field required"},
		"max_tokens zero":          {`{"model":"m","max_tokens":0,"messages":[` + user + `]}`, "max_tokens: Input should be greater than or equal to 1"},
		"max_tokens fractional":    {`{"model":"m","max_tokens":1.5,"messages":[` + user + `]}`, "max_tokens:"},
		"messages missing":         {`{"model":"m","max_tokens":5}`, "messages: Field required"},
		"messages empty":           {`{"model":"m","max_tokens":5,"messages":[]}`, "messages: List should have at least 1 item"},
		"role system":              {`{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}`, "messages.0.role"},
		"role missing":             {`{"model":"m","max_tokens":5,"messages":[` + user + `,{"content":"x"}]}`, "messages.1.role"},
		"first from assistant":     {`{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":"x"},` + user + `]}`, `messages.0.role: the first message must use the "user" role`},
		"empty string content":     {`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":""}]}`, "messages.0.content: all messages must have non-empty content"},
		"empty content list":       {`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[]}]}`, "messages.0.content"},
		"empty text block":         {`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":""}]}]}`, "messages.0.content.0.text"},
		"unknown block type":       {`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"video","url":"x"}]}]}`, "messages.0.content.0.type: Input tag 'video'"},
		"temperature":              {`{"model":"m","max_tokens":5,"temperature":1,"messages":[` + user + `]}`, "temperature: Extra inputs are not permitted: temperature, top_p and top_k were removed in anthropic-version 2026-10-21"},
		"top_p":                    {`{"model":"m","max_tokens":5,"top_p":0.9,"messages":[` + user + `]}`, "top_p: Extra inputs are not permitted"},
		"top_k":                    {`{"model":"m","max_tokens":5,"top_k":40,"messages":[` + user + `]}`, "top_k: Extra inputs are not permitted"},
		"tool_use unanswered":      {`{"model":"m","max_tokens":5,"messages":[` + user + `,{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{}}]},` + user + `]}`, "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1"},
		"tool_use last":            {`{"model":"m","max_tokens":5,"messages":[` + user + `,{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{}}]}]}`, "toolu_1"},
		"tool_result unexpected":   {`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_9","content":"r"}]}]}`, "messages.0.content.0: unexpected `tool_use_id`"},
		"tool_use input not dict":  {`{"model":"m","max_tokens":5,"messages":[` + user + `,{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":[]}]}]}`, "messages.1.content.0.input"},
		"tool_use from user":       {`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]}]}`, "tool_use blocks can only be in assistant messages"},
		"document from assistant":  {`{"model":"m","max_tokens":5,"messages":[` + user + `,{"role":"assistant","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"` + pdf + `"}}]},` + user + `]}`, "messages.1.content.0: document blocks are not permitted in assistant messages"},
		"document bad base64":      {`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"%%%"}}]}]}`, "messages.0.content.0.source.data: invalid base64"},
		"document wrong media":     {`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"image/png","data":"` + pdf + `"}}]}]}`, "messages.0.content.0.source.media_type"},
		"image wrong media":        {`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/bmp","data":"` + pdf + `"}}]}]}`, "messages.0.content.0.source.media_type"},
		"citations on user text":   {`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"x","citations":[]}]}]}`, "messages.0.content.0.citations"},
		"trailing whitespace":      {`{"model":"m","max_tokens":5,"messages":[` + user + `,{"role":"assistant","content":"Sure, "}]}`, "trailing whitespace"},
		"system not text":          {`{"model":"m","max_tokens":5,"system":[{"type":"image"}],"messages":[` + user + `]}`, "system.0.type"},
		"bad cache_control":        {`{"model":"m","max_tokens":5,"system":[{"type":"text","text":"s","cache_control":{"type":"forever"}}],"messages":[` + user + `]}`, "system.0.cache_control.type"},
		"bad ttl":                  {`{"model":"m","max_tokens":5,"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral","ttl":"1d"}}],"messages":[` + user + `]}`, "system.0.cache_control.ttl"},
		"tool without schema":      {`{"model":"m","max_tokens":5,"tools":[{"name":"f"}],"messages":[` + user + `]}`, "tools.0.input_schema"},
		"duplicate tools":          {`{"model":"m","max_tokens":5,"tools":[{"name":"f","input_schema":{}},{"name":"f","input_schema":{}}],"messages":[` + user + `]}`, "Tool names must be unique"},
		"tool_choice unknown tool": {`{"model":"m","max_tokens":5,"tools":[{"name":"f","input_schema":{}}],"tool_choice":{"type":"tool","name":"g"},"messages":[` + user + `]}`, "tool_choice.name"},
		"stream not bool":          {`{"model":"m","max_tokens":5,"stream":"yes","messages":[` + user + `]}`, "stream:"},
		"five breakpoints": {`{"model":"m","max_tokens":5,"cache_control":{"type":"ephemeral"},"system":[` +
			strings.Repeat(`{"type":"text","text":"s","cache_control":{"type":"ephemeral"}},`, 3) +
			`{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}],"messages":[` + user + `]}`, "cache_control: A maximum of 4 blocks with cache_control may be provided. Found 5."},
	} {
		t.Run(name, func(t *testing.T) {
			f, url := anthropictest.NewServer(t)
			f.Enqueue(anthropictest.Text("kept"))
			resp, body := post(t, url+"/v1/messages", tc.body, nil)
			wantError(t, resp, body, 400, "invalid_request_error", tc.field)

			log := f.Requests()
			if len(log) != 1 || log[0].Status != 400 || log[0].ErrorType != "invalid_request_error" || string(log[0].Raw) != tc.body {
				t.Errorf("log = %+v", log)
			}
			// An invalid request takes no scripted reply.
			resp, body = post(t, url+"/v1/messages", `{"model":"m","max_tokens":5,"messages":[`+user+`]}`, nil)
			if resp.StatusCode != 200 || !strings.Contains(string(body), `"kept"`) {
				t.Errorf("next valid request: %d %s", resp.StatusCode, body)
			}
		})
	}
}

func TestValidationThroughSDK(t *testing.T) {
	_, url := anthropictest.NewServer(t)
	_, err := client(url).Messages.New(t.Context(), params(userText("x")), option.WithJSONSet("temperature", 0.7))
	var apiErr *sdk.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Type() != "invalid_request_error" || !strings.Contains(apiErr.Message, "2026-10-21") {
		t.Fatalf("err = %v", err)
	}
}

func TestOlderVersionAllowsSampling(t *testing.T) {
	_, url := anthropictest.NewServer(t)
	resp, body := post(t, url+"/v1/messages", `{"model":"m","max_tokens":5,"temperature":0.5,"messages":[{"role":"user","content":"hi"}]}`,
		map[string]string{"anthropic-version": "2023-06-01"})
	if resp.StatusCode != 200 {
		t.Errorf("2023-06-01 with temperature: %d %s", resp.StatusCode, body)
	}
}

func TestHeaders(t *testing.T) {
	f, url := anthropictest.NewServer(t, anthropictest.WithAPIKey("sk-right"))
	const body = `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	resp, b := post(t, url+"/v1/messages", body, map[string]string{"Authorization": ""})
	wantError(t, resp, b, 401, "authentication_error", "credentials")
	resp, b = post(t, url+"/v1/messages", body, map[string]string{"Authorization": "Bearer sk-wrong"})
	wantError(t, resp, b, 401, "authentication_error", "invalid")
	resp, b = post(t, url+"/v1/messages", body, map[string]string{"Authorization": "", "x-api-key": "sk-right"})
	if resp.StatusCode != 200 {
		t.Errorf("x-api-key: %d %s", resp.StatusCode, b)
	}
	resp, b = post(t, url+"/v1/messages", body, map[string]string{"Authorization": "Bearer sk-right", "anthropic-version": ""})
	wantError(t, resp, b, 400, "invalid_request_error", "anthropic-version")
	resp, b = post(t, url+"/v1/complete", body, map[string]string{"Authorization": "Bearer sk-right"})
	wantError(t, resp, b, 404, "not_found_error", "/v1/complete")

	_, err := client(url).Messages.New(t.Context(), params(userText("x"))) // sends sk-test
	var apiErr *sdk.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Type() != "authentication_error" {
		t.Errorf("SDK with a wrong key: %v", err)
	}
	// Every answer had its own request id, and every request is logged.
	seen := map[string]bool{}
	for _, r := range f.Requests() {
		if seen[r.RequestID] {
			t.Errorf("request id %s repeated", r.RequestID)
		}
		seen[r.RequestID] = true
	}
	if len(seen) != 6 {
		t.Errorf("%d requests logged, want 6", len(seen))
	}
}

func TestTooLarge(t *testing.T) {
	f, url := anthropictest.NewServer(t)
	// Streamed from a reader, not built as a 32 MB string, for the race
	// detector's sake.
	prefix := `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"`
	suffix := `"}]}`
	for _, announced := range []bool{true, false} {
		body := io.MultiReader(strings.NewReader(prefix), io.LimitReader(repeat('a'), anthropictest.MaxBodyBytes), strings.NewReader(suffix))
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/v1/messages", body)
		if announced {
			req.ContentLength = int64(len(prefix) + anthropictest.MaxBodyBytes + len(suffix))
		} // else chunked: the fake has to read up to the limit
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("anthropic-version", "2026-10-21")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantError(t, resp, b, 413, "request_too_large", "32 MB")
	}
	if log := f.Requests(); len(log) != 2 || log[0].Status != 413 || log[1].Status != 413 {
		t.Errorf("log = %+v", log)
	}
}

// repeat is an endless reader of c.
type repeat byte

func (r repeat) Read(p []byte) (int, error) {
	chunk := bytes.Repeat([]byte{byte(r)}, min(len(p), 64<<10))
	n := 0
	for n < len(p) {
		n += copy(p[n:], chunk)
	}
	return n, nil
}

func TestErrorReplies(t *testing.T) {
	f, url := anthropictest.NewServer(t)
	c := client(url)
	for status, errType := range map[int]string{
		400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
		413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error",
	} {
		f.Enqueue(anthropictest.Error(status, "", "scripted").WithHeader("x-should-retry", "false"))
		_, err := c.Messages.New(t.Context(), params(userText("x")))
		var apiErr *sdk.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != status || string(apiErr.Type()) != errType || apiErr.Message != "scripted" || apiErr.RequestID == "" {
			t.Errorf("%d: %v", status, err)
		}
	}
}

func TestCountTokens(t *testing.T) {
	_, url := anthropictest.NewServer(t)
	c := client(url)
	p := params(userText("How many tokens is this?"))
	p.System = []sdk.TextBlockParam{{Text: "You count."}}
	msg, err := c.Messages.New(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.Messages.CountTokens(t.Context(), sdk.MessageCountTokensParams{
		Model:    testModel,
		System:   sdk.MessageCountTokensParamsSystemUnion{OfTextBlockArray: p.System},
		Messages: p.Messages,
	})
	if err != nil {
		t.Fatal(err)
	}
	if n.InputTokens != msg.Usage.InputTokens || n.InputTokens == 0 {
		t.Errorf("count_tokens = %d, messages usage = %d", n.InputTokens, msg.Usage.InputTokens)
	}
}

func TestRequestsLog(t *testing.T) {
	f, url := anthropictest.NewServer(t)
	c := client(url)
	pdf := []byte("%PDF-1.7 /Type /Pages /Type /Page /Type/Page")
	p := sdk.MessageNewParams{
		Model: testModel, MaxTokens: 321,
		Messages: []sdk.MessageParam{
			sdk.NewUserMessage(sdk.NewTextBlock("read this"), sdk.NewDocumentBlock(sdk.Base64PDFSourceParam{Data: base64.StdEncoding.EncodeToString(pdf)})),
			sdk.NewAssistantMessage(sdk.NewToolUseBlock("toolu_1", map[string]any{"q": 1}, "lookup")),
			sdk.NewUserMessage(sdk.NewToolResultBlock("toolu_1", "found", false)),
		},
		Tools:      []sdk.ToolUnionParam{sdk.ToolUnionParamOfTool(sdk.ToolInputSchemaParam{Properties: map[string]any{"q": map[string]any{"type": "integer"}}}, "lookup")},
		ToolChoice: sdk.ToolChoiceParamOfTool("lookup"),
	}
	// System as a string, which the SDK cannot send: normalized to a block.
	if _, err := c.Messages.New(t.Context(), p, option.WithJSONSet("system", "Be kind.")); err != nil {
		t.Fatal(err)
	}
	log := f.Requests()
	if len(log) != 1 {
		t.Fatalf("%d requests", len(log))
	}
	r := log[0]
	if r.Method != "POST" || r.Path != "/v1/messages" || r.Status != 200 || r.RequestID != "req_fake_000001" {
		t.Errorf("request line/status: %+v", r)
	}
	if r.Model != testModel || r.MaxTokens != 321 || r.Stream {
		t.Errorf("model %q max_tokens %d stream %v", r.Model, r.MaxTokens, r.Stream)
	}
	if len(r.System) != 1 || r.System[0].Text != "Be kind." {
		t.Errorf("system = %+v", r.System)
	}
	if r.Header.Get("Authorization") != "Bearer sk-test" || r.Header.Get("anthropic-version") != "2026-10-21" {
		t.Errorf("headers = %v", r.Header)
	}
	if !json.Valid(r.Raw) {
		t.Errorf("raw = %s", r.Raw)
	}
	if len(r.Messages) != 3 {
		t.Fatalf("messages = %+v", r.Messages)
	}
	doc := r.Messages[0].Content[1]
	if doc.Type != "document" || doc.Source.Type != "base64" || doc.Source.MediaType != "application/pdf" {
		t.Errorf("document = %+v", doc)
	}
	if data, err := doc.Source.Bytes(); err != nil || !bytes.Equal(data, pdf) {
		t.Errorf("document data = %q, %v", data, err)
	}
	tu := r.Messages[1].Content[0]
	if tu.Type != "tool_use" || tu.ID != "toolu_1" || tu.Name != "lookup" || string(tu.Input) != `{"q":1}` {
		t.Errorf("tool_use = %+v", tu)
	}
	tr := r.Messages[2].Content[0]
	if tr.Type != "tool_result" || tr.ToolUseID != "toolu_1" || len(tr.Content) != 1 || tr.Content[0].Text != "found" {
		t.Errorf("tool_result = %+v", tr)
	}
	if len(r.Tools) != 1 || r.Tools[0].Name != "lookup" || r.ToolChoice == nil || r.ToolChoice.Type != "tool" || r.ToolChoice.Name != "lookup" {
		t.Errorf("tools %+v choice %+v", r.Tools, r.ToolChoice)
	}

	f.Reset()
	if len(f.Requests()) != 0 {
		t.Errorf("Reset kept the log")
	}
}

func TestMaxRequestsAndReset(t *testing.T) {
	f, url := anthropictest.NewServer(t, anthropictest.WithMaxRequests(2))
	c := client(url)
	for _, s := range []string{"a", "b", "c"} {
		if _, err := c.Messages.New(t.Context(), params(userText(s))); err != nil {
			t.Fatal(err)
		}
	}
	log := f.Requests()
	if len(log) != 2 || log[0].LastUserText() != "b" || log[1].LastUserText() != "c" || log[1].RequestID != "req_fake_000003" {
		t.Errorf("log = %+v", log)
	}
	f.Enqueue(anthropictest.Text("scripted"))
	f.SetResponder(func(anthropictest.Request) anthropictest.Reply { return anthropictest.Text("custom") })
	f.Reset()
	msg, err := c.Messages.New(t.Context(), params(userText("d")))
	if err != nil || msg.Content[0].Text != "You said: d" {
		t.Errorf("after Reset: %v %v", msg, err)
	}
	if log := f.Requests(); len(log) != 1 || log[0].RequestID != "req_fake_000001" {
		t.Errorf("log after Reset = %+v", log)
	}
}

func TestDocumentTokens(t *testing.T) {
	_, url := anthropictest.NewServer(t)
	twoPages := []byte("%PDF-1.7 1 0 obj <</Type /Pages /Count 2>> 2 0 obj <</Type /Page>> 3 0 obj <</Type/Page>>")
	msg, err := client(url).Messages.New(t.Context(), params(sdk.NewUserMessage(
		sdk.NewDocumentBlock(sdk.Base64PDFSourceParam{Data: base64.StdEncoding.EncodeToString(twoPages)}),
		sdk.NewImageBlockBase64("image/png", base64.StdEncoding.EncodeToString([]byte("png"))),
		sdk.NewTextBlock("abcd"),
	)))
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(2*anthropictest.PDFPageTokens + anthropictest.ImageTokens + 1); msg.Usage.InputTokens != want {
		t.Errorf("input tokens = %d, want %d", msg.Usage.InputTokens, want)
	}
}

// cached sends a request whose system prompt is long, with a breakpoint.
func cachedParams(system string, ttl sdk.CacheControlEphemeralTTL, msgs ...sdk.MessageParam) sdk.MessageNewParams {
	cc := sdk.NewCacheControlEphemeralParam()
	cc.TTL = ttl
	p := params(msgs...)
	p.System = []sdk.TextBlockParam{{Text: system, CacheControl: cc}}
	return p
}

func TestPromptCache(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	_, url := anthropictest.NewServer(t, anthropictest.WithClock(clock))
	c := client(url)
	long := strings.Repeat("You are a careful assistant. ", 200) // 5,800 characters
	sysTokens := anthropictest.EstimateTokens(long)
	userTokens := anthropictest.EstimateTokens("hi")
	call := func(p sdk.MessageNewParams) sdk.Usage {
		t.Helper()
		msg, err := c.Messages.New(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		return msg.Usage
	}

	u := call(cachedParams(long, "", userText("hi")))
	if u.CacheCreationInputTokens != sysTokens || u.CacheReadInputTokens != 0 || u.InputTokens != userTokens ||
		u.CacheCreation.Ephemeral5mInputTokens != sysTokens || u.CacheCreation.Ephemeral1hInputTokens != 0 {
		t.Errorf("first: %s, want creation %d input %d", u.RawJSON(), sysTokens, userTokens)
	}
	u = call(cachedParams(long, "", userText("hi")))
	if u.CacheReadInputTokens != sysTokens || u.CacheCreationInputTokens != 0 || u.InputTokens != userTokens {
		t.Errorf("second: %s, want read %d", u.RawJSON(), sysTokens)
	}
	// Another model has its own cache.
	p := cachedParams(long, "", userText("hi"))
	p.Model = "claude-haiku-4-5"
	if u = call(p); u.CacheReadInputTokens != 0 || u.CacheCreationInputTokens != sysTokens {
		t.Errorf("other model: %s", u.RawJSON())
	}

	// Each read refreshes the 5 minutes; 6 idle minutes expire it.
	advance(4 * time.Minute)
	if u = call(cachedParams(long, "", userText("hi"))); u.CacheReadInputTokens != sysTokens {
		t.Errorf("after 4 min: %s", u.RawJSON())
	}
	advance(6 * time.Minute)
	if u = call(cachedParams(long, "", userText("hi"))); u.CacheReadInputTokens != 0 || u.CacheCreationInputTokens != sysTokens {
		t.Errorf("after 6 idle min: %s", u.RawJSON())
	}

	// A 1-hour breakpoint outlives 6 minutes, and is counted as such.
	long1h := long + "Hourly."
	u = call(cachedParams(long1h, sdk.CacheControlEphemeralTTLTTL1h, userText("hi")))
	if u.CacheCreation.Ephemeral1hInputTokens != anthropictest.EstimateTokens(long1h) || u.CacheCreation.Ephemeral5mInputTokens != 0 {
		t.Errorf("1h write: %s", u.RawJSON())
	}
	advance(30 * time.Minute)
	if u = call(cachedParams(long1h, sdk.CacheControlEphemeralTTLTTL1h, userText("hi"))); u.CacheReadInputTokens != anthropictest.EstimateTokens(long1h) {
		t.Errorf("1h read after 30 min: %s", u.RawJSON())
	}

	// Below the minimum cacheable length: neither written nor read.
	for range 2 {
		if u = call(cachedParams("Short system prompt.", "", userText("hi"))); u.CacheCreationInputTokens != 0 || u.CacheReadInputTokens != 0 {
			t.Errorf("short prefix: %s", u.RawJSON())
		}
	}
	// Without a breakpoint nothing is cached.
	p = params(userText("hi"))
	p.System = []sdk.TextBlockParam{{Text: long + "No breakpoint."}}
	for range 2 {
		if u = call(p); u.CacheCreationInputTokens != 0 || u.CacheReadInputTokens != 0 {
			t.Errorf("no breakpoint: %s", u.RawJSON())
		}
	}
}

func TestPromptCacheConversation(t *testing.T) {
	_, url := anthropictest.NewServer(t, anthropictest.WithMinCacheTokens(100))
	c := client(url)
	turn := func(s string) string { return strings.TrimSpace(strings.Repeat(s+" ", 100)) } // 100+ tokens
	// Top-level cache_control marks the last block, so each turn moves the
	// breakpoint; the lookback finds the prefix the previous turn wrote.
	auto := option.WithJSONSet("cache_control", map[string]string{"type": "ephemeral"})
	msgs := []sdk.MessageParam{userText(turn("one"))}
	var written int64
	for i, next := range []string{"two", "three", "four"} {
		msg, err := c.Messages.New(t.Context(), params(msgs...), auto)
		if err != nil {
			t.Fatal(err)
		}
		u := msg.Usage
		total := u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
		if u.CacheReadInputTokens != written || u.CacheCreationInputTokens != total-written || u.InputTokens != 0 {
			t.Errorf("turn %d: %s, want read %d", i, u.RawJSON(), written)
		}
		written = total
		msgs = append(msgs, sdk.NewAssistantMessage(sdk.NewTextBlock(msg.Content[0].Text)), userText(turn(next)))
	}
}

func TestWithUsage(t *testing.T) {
	f, url := anthropictest.NewServer(t)
	f.Enqueue(anthropictest.Text("x").WithUsage(anthropictest.Usage{InputTokens: 7, OutputTokens: 9, CacheReadInputTokens: 3, CacheCreationInputTokens: 2}))
	msg, err := client(url).Messages.New(t.Context(), params(userText("x")))
	if err != nil {
		t.Fatal(err)
	}
	u := msg.Usage
	if u.InputTokens != 7 || u.OutputTokens != 9 || u.CacheReadInputTokens != 3 || u.CacheCreationInputTokens != 2 || u.CacheCreation.Ephemeral5mInputTokens != 2 {
		t.Errorf("usage = %s", u.RawJSON())
	}
}

func TestParallel(t *testing.T) {
	f, url := anthropictest.NewServer(t)
	servers := []*sdk.Client{client(url), client("http://fake.invalid", option.WithHTTPClient(f.HTTPClient()))}
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c := servers[i%2]
			text := fmt.Sprintf("message %d", i)
			p := cachedParams(strings.Repeat("shared prefix ", 400), "", userText(text))
			var got string
			if i%3 == 0 {
				msg, _, err := collect(t, c, p)
				if err != nil {
					errs <- err
					return
				}
				got = msg.Content[0].Text
			} else {
				msg, err := c.Messages.New(t.Context(), p)
				if err != nil {
					errs <- err
					return
				}
				got = msg.Content[0].Text
			}
			if got != "You said: "+text {
				errs <- fmt.Errorf("%d got %q", i, got)
			}
		})
		if i == n/2 {
			f.Enqueue(anthropictest.Text("You said: nobody"))
			f.SetResponder(nil)
		}
	}
	wg.Wait()
	close(errs)
	var failures int
	for err := range errs {
		if !strings.Contains(err.Error(), "nobody") { // one request took the scripted reply
			t.Error(err)
		}
		failures++
	}
	if failures > 1 {
		t.Errorf("%d failures", failures)
	}
	log := f.Requests()
	if len(log) != n {
		t.Errorf("%d requests logged, want %d", len(log), n)
	}
	ids := map[string]bool{}
	for _, r := range log {
		ids[r.RequestID] = true
		if r.Status != 200 {
			t.Errorf("status %d", r.Status)
		}
	}
	if len(ids) != n {
		t.Errorf("%d distinct request ids", len(ids))
	}
}

func FuzzServe(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}]}`,
		`{"model":"m","max_tokens":5,"system":[{"type":"text","text":"s"}],"tools":[{"name":"f","input_schema":{}}],"tool_choice":{"type":"any"},"messages":[{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"r"}]}]}]}`,
		`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERg=="}}]}]}`,
		`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"http://x"}}]}]}`,
		`{"model":"m","max_tokens":-1}`, `{"messages":null}`, `[]`, `null`, `"x"`, `{`, ``,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	fake := anthropictest.New(anthropictest.WithMinCacheTokens(1))
	f.Fuzz(func(t *testing.T, body []byte, count bool) {
		path := "/v1/messages"
		if count {
			path += "/count_tokens"
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("x-api-key", "k")
		req.Header.Set("anthropic-version", "2026-10-21")
		w := httptest.NewRecorder()
		fake.ServeHTTP(w, req)
		res := w.Result()
		out := w.Body.Bytes()
		if res.Header.Get("request-id") == "" {
			t.Errorf("no request-id")
		}
		switch {
		case res.StatusCode == 200 && res.Header.Get("Content-Type") == "text/event-stream":
			if !bytes.HasSuffix(out, []byte("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")) {
				t.Errorf("stream does not end with message_stop: %s", out)
			}
		case res.StatusCode == 200:
			var m struct{ Type string }
			var n struct {
				InputTokens *int64 `json:"input_tokens"`
			}
			if count {
				if json.Unmarshal(out, &n) != nil || n.InputTokens == nil {
					t.Errorf("count_tokens answer %s", out)
				}
			} else if json.Unmarshal(out, &m) != nil || m.Type != "message" {
				t.Errorf("200 with %s", out)
			}
		case res.StatusCode == 400:
			var e errorBody
			if json.Unmarshal(out, &e) != nil || e.Type != "error" || e.Error.Type != "invalid_request_error" || e.Error.Message == "" {
				t.Errorf("400 with %s", out)
			}
		default:
			t.Errorf("status %d: %s", res.StatusCode, out)
		}
		if len(fake.Requests()) > 1000 {
			fake.Reset()
		}
	})
}
