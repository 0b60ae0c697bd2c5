// Package anthropic is agentd's Claude client: an agentd.Model over the
// official Go SDK, github.com/anthropics/anthropic-sdk-go/v2.
//
// It holds the only code in agentd that imports the SDK, and the SDK's types
// never leave it: requests, answers and errors cross it as agentd types
// (agentd.ModelRequest, agentd.ModelResponse, *agentd.Error). It imports
// nothing of agentd but the root package.
//
// Errors are classified for the layer above, which decides on retries:
// agentd.KindRateLimited for 429 (with RetryAfter from retry-after-ms or
// retry-after), agentd.KindModelUnavailable for 408, 5xx, 529, connection
// errors, attempt timeouts, streams cut short and SSE error events of the
// overloaded/api/timeout kinds, agentd.KindModelError for the other 4xx,
// each with the API's Upstream status, type and request id. The caller's own
// cancellation comes back as agentd.KindTimeout with the context's error in
// the chain.
//
// The SDK can retry too (Config.MaxRetries), but retries belong in one
// layer: agentd turns the SDK's off (MaxRetries -1) and wraps the client in
// model/resilient, which also retries what the SDK cannot (an SSE error
// event before any text was passed on).
package anthropic

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/anthropics/anthropic-sdk-go/v2/packages/param"

	"github.com/agentd/agentd"
)

// op is the Op of every error of this package.
const op = "model"

// Config configures a Client. agentd's config resolves ANTHROPIC_API_KEY and
// ANTHROPIC_BASE_URL; the SDK is kept from reading the environment itself.
type Config struct {
	APIKey  string // required
	BaseURL string // default: the SDK's, https://api.anthropic.com
	// HTTPClient sends the requests (agentd dev's offline mode passes the
	// fake's). Default: a client like the SDK's own default, with a
	// 10-minute response-header timeout.
	HTTPClient *http.Client
	// MaxRetries is how many times the SDK retries a failed attempt: 0 means
	// the SDK's default (2), -1 means none. agentd passes -1 and retries in
	// model/resilient, so that retries live in one layer.
	MaxRetries int
	// Timeout bounds each attempt, the reading of a streamed answer
	// included; an attempt that runs out is KindModelUnavailable, which is
	// retried. 0 leaves the SDK's: 10 minutes for a non-streaming call, none
	// for a streamed one. The context of Generate bounds the whole call
	// either way.
	Timeout time.Duration
	Clock   agentd.Clock // measures Latency; default agentd.SystemClock
}

// Client calls the Claude Messages API. It is safe for concurrent use.
type Client struct {
	sdk   sdk.Client
	clock agentd.Clock
}

var _ agentd.Model = (*Client)(nil)

// defaultResponseHeaderTimeout is the SDK's own bound on the wait for
// response headers, which it applies only to the client it builds itself
// (not with WithoutEnvironmentDefaults).
const defaultResponseHeaderTimeout = 10 * time.Minute

// New returns a Client. It fails with KindInvalid when the config cannot
// work: no API key, a base URL that is not an absolute http(s) URL, or
// negative limits.
func New(cfg Config) (*Client, error) {
	if cfg.APIKey == "" {
		return nil, agentd.InvalidField(op, "api_key", "an Anthropic API key is required")
	}
	if cfg.MaxRetries < -1 {
		return nil, agentd.InvalidField(op, "max_retries", "max retries must be -1 (none), 0 (the SDK's default) or more, not %d", cfg.MaxRetries)
	}
	if cfg.Timeout < 0 {
		return nil, agentd.InvalidField(op, "timeout", "the timeout must not be negative")
	}
	// WithoutEnvironmentDefaults: the SDK would otherwise read
	// ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, ANTHROPIC_CUSTOM_HEADERS,
	// profiles and federation settings behind agentd's config.
	opts := []option.RequestOption{
		option.WithoutEnvironmentDefaults(),
		option.WithAPIKey(cfg.APIKey),
		// The SDK emits OpenTelemetry spans through the global provider, and
		// ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE=content (read even
		// without environment defaults) would put prompts and answers in
		// them: keep conversations out of traces whatever the environment.
		option.WithOpenTelemetryTracesContentMode(option.OpenTelemetryContentModeMetadataOnly),
	}
	if cfg.BaseURL != "" {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, agentd.InvalidField(op, "base_url", "the base URL must be an absolute http or https URL")
		}
		opts = append(opts, option.WithBaseURL(cfg.BaseURL))
	}
	hc := cfg.HTTPClient
	if hc == nil {
		// Without environment defaults the SDK would fall back to the shared
		// http.DefaultClient, which has no response-header timeout.
		hc = defaultHTTPClient(max(defaultResponseHeaderTimeout, cfg.Timeout))
	}
	opts = append(opts, option.WithHTTPClient(hc))
	switch {
	case cfg.MaxRetries == -1:
		opts = append(opts, option.WithMaxRetries(0))
	case cfg.MaxRetries > 0:
		opts = append(opts, option.WithMaxRetries(cfg.MaxRetries))
	}
	if cfg.Timeout > 0 {
		opts = append(opts, option.WithRequestTimeout(cfg.Timeout))
	}
	c := &Client{sdk: sdk.NewClient(opts...), clock: cfg.Clock}
	if c.clock == nil {
		c.clock = agentd.SystemClock{}
	}
	return c, nil
}

// defaultHTTPClient is the SDK's default client, with a response-header
// timeout that does not cut an attempt shorter than Config.Timeout: a
// non-streaming answer's headers come only once it is whole.
func defaultHTTPClient(headerTimeout time.Duration) *http.Client {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return &http.Client{Transport: http.DefaultTransport}
	}
	t = t.Clone()
	t.ResponseHeaderTimeout = headerTimeout
	return &http.Client{Transport: t}
}

// Generate sends one request and returns the whole answer.
//
// A request with OnTextDelta is streamed: each text_delta is passed to it as
// it arrives, and the events are accumulated into the whole answer. So are
// requests whose max_tokens the SDK deems too long for a non-streaming call
// (an expected generation over 10 minutes: above about 21,000 tokens, less
// for some models), since the SDK refuses to send them otherwise. The rest
// are plain calls.
func (c *Client) Generate(ctx context.Context, req agentd.ModelRequest) (agentd.ModelResponse, error) {
	params, err := toParams(req)
	if err != nil {
		return agentd.ModelResponse{}, err
	}
	streamed := req.OnTextDelta != nil
	if !streamed {
		_, tooLong := sdk.CalculateNonStreamingTimeout(req.MaxTokens, req.Model, nil)
		streamed = tooLong != nil
	}
	var raw *http.Response
	start := c.clock.Now()
	var msg *sdk.Message
	if streamed {
		msg, err = c.stream(ctx, params, &raw, req.OnTextDelta)
	} else {
		msg, err = c.sdk.Messages.New(ctx, params, option.WithResponseInto(&raw))
	}
	if err != nil {
		return agentd.ModelResponse{}, c.classify(ctx, err)
	}
	resp := fromMessage(msg)
	resp.Latency = c.clock.Now().Sub(start)
	if raw != nil {
		resp.RequestID = raw.Header.Get("request-id")
	}
	return resp, nil
}

// stream sends params as a streaming request, passes each text delta to
// onText (when set) and accumulates the answer. Only a stream that reached
// message_stop is an answer: one that ends before it was cut short.
func (c *Client) stream(ctx context.Context, params sdk.MessageNewParams, raw **http.Response, onText func(string)) (*sdk.Message, error) {
	s := c.sdk.Messages.NewStreaming(ctx, params, option.WithResponseInto(raw))
	defer s.Close()
	var msg sdk.Message
	done := false
	for s.Next() {
		ev := s.Current()
		if err := msg.Accumulate(ev); err != nil {
			return nil, &agentd.Error{Kind: agentd.KindModelError, Op: op, Message: "the model's answer stream is malformed", Err: err}
		}
		if onText != nil && ev.Type == "content_block_delta" && ev.Delta.Type == "text_delta" && ev.Delta.Text != "" {
			onText(ev.Delta.Text)
		}
		done = done || ev.Type == "message_stop"
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	if !done {
		return nil, fmt.Errorf("the answer stream ended before message_stop: %w", io.ErrUnexpectedEOF)
	}
	return &msg, nil
}

// toParams converts an agentd request to the SDK's. Only what cannot be
// sent at all is refused here (KindInvalid); the API judges the rest.
func toParams(req agentd.ModelRequest) (sdk.MessageNewParams, error) {
	p := sdk.MessageNewParams{Model: req.Model, MaxTokens: int64(req.MaxTokens)}
	for i, b := range req.System {
		if b.Type != agentd.BlockText {
			return p, agentd.InvalidField(op, fmt.Sprintf("system[%d]", i), "a system block must be text, not %q", b.Type)
		}
		p.System = append(p.System, sdk.TextBlockParam{Text: b.Text, CacheControl: cacheControl(b.Cache)})
	}
	for i, m := range req.Messages {
		blocks := make([]sdk.ContentBlockParamUnion, 0, len(m.Content))
		for j, b := range m.Content {
			cb, err := toBlock(b)
			if err != nil {
				return p, agentd.InvalidField(op, fmt.Sprintf("messages[%d].content[%d]", i, j), "%v", err)
			}
			blocks = append(blocks, cb)
		}
		switch m.Role {
		case agentd.RoleUser:
			p.Messages = append(p.Messages, sdk.NewUserMessage(blocks...))
		case agentd.RoleAssistant:
			p.Messages = append(p.Messages, sdk.NewAssistantMessage(blocks...))
		default:
			return p, agentd.InvalidField(op, fmt.Sprintf("messages[%d].role", i), "unknown role %q", m.Role)
		}
	}
	for i, t := range req.Tools {
		tp, err := toTool(t)
		if err != nil {
			return p, agentd.InvalidField(op, fmt.Sprintf("tools[%d]", i), "%v", err)
		}
		p.Tools = append(p.Tools, sdk.ToolUnionParam{OfTool: tp})
	}
	tc, err := toToolChoice(req.ToolChoice)
	if err != nil {
		return p, agentd.InvalidField(op, "tool_choice", "%v", err)
	}
	p.ToolChoice = tc
	return p, nil
}

// cacheControl converts a breakpoint; nil is the zero value, which the SDK
// leaves out of the request.
func cacheControl(c *agentd.CacheControl) sdk.CacheControlEphemeralParam {
	if c == nil {
		return sdk.CacheControlEphemeralParam{}
	}
	cc := sdk.NewCacheControlEphemeralParam()
	if c.TTL == agentd.CacheTTL1h {
		cc.TTL = sdk.CacheControlEphemeralTTLTTL1h
	} else {
		cc.TTL = sdk.CacheControlEphemeralTTLTTL5m
	}
	return cc
}

// toTool converts a tool definition. The input schema is sent as given:
// the SDK's typed schema knows only properties and required, and an output
// schema uses more of JSON Schema than that.
func toTool(t agentd.Tool) (*sdk.ToolParam, error) {
	if t.Name == "" {
		return nil, errors.New("a tool needs a name")
	}
	schema := t.InputSchema
	if len(schema) == 0 {
		schema = []byte(`{"type":"object"}`)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(schema, &obj); err != nil {
		return nil, errors.New("the input schema must be a JSON object")
	}
	tp := &sdk.ToolParam{
		Name:         t.Name,
		InputSchema:  param.Override[sdk.ToolInputSchemaParam](json.RawMessage(schema)),
		CacheControl: cacheControl(t.Cache),
	}
	if t.Description != "" {
		tp.Description = sdk.String(t.Description)
	}
	return tp, nil
}

func toToolChoice(c agentd.ToolChoice) (sdk.ToolChoiceUnionParam, error) {
	var u sdk.ToolChoiceUnionParam
	disable := param.Opt[bool]{}
	if c.DisableParallelToolUse {
		disable = sdk.Bool(true)
	}
	switch c.Type {
	case "":
		if c.Name != "" || c.DisableParallelToolUse {
			return u, errors.New("a tool choice needs a type")
		}
	case agentd.ToolChoiceAuto:
		u.OfAuto = &sdk.ToolChoiceAutoParam{DisableParallelToolUse: disable}
	case agentd.ToolChoiceAny:
		u.OfAny = &sdk.ToolChoiceAnyParam{DisableParallelToolUse: disable}
	case agentd.ToolChoiceTool:
		if c.Name == "" {
			return u, errors.New("a tool choice of type tool needs the tool's name")
		}
		u.OfTool = &sdk.ToolChoiceToolParam{Name: c.Name, DisableParallelToolUse: disable}
	case agentd.ToolChoiceNone:
		u.OfNone = &sdk.ToolChoiceNoneParam{}
	default:
		return u, fmt.Errorf("unknown tool choice %q", c.Type)
	}
	return u, nil
}

func toBlock(b agentd.Block) (sdk.ContentBlockParamUnion, error) {
	cb, err := toBlockContent(b)
	if err != nil {
		return cb, err
	}
	if b.Cache != nil {
		if cc := cb.GetCacheControl(); cc != nil {
			*cc = cacheControl(b.Cache)
		}
	}
	return cb, nil
}

func toBlockContent(b agentd.Block) (sdk.ContentBlockParamUnion, error) {
	switch b.Type {
	case agentd.BlockText:
		return sdk.NewTextBlock(b.Text), nil
	case agentd.BlockDocument:
		var cb sdk.ContentBlockParamUnion
		switch b.MediaType {
		case "", "application/pdf":
			cb = sdk.NewDocumentBlock(sdk.Base64PDFSourceParam{Data: base64.StdEncoding.EncodeToString(b.Data)})
		case "text/plain":
			cb = sdk.NewDocumentBlock(sdk.PlainTextSourceParam{Data: string(b.Data)})
		default:
			return cb, fmt.Errorf("a document must be application/pdf or text/plain, not %q", b.MediaType)
		}
		if b.Title != "" {
			cb.OfDocument.Title = sdk.String(b.Title)
		}
		return cb, nil
	case agentd.BlockImage:
		switch b.MediaType {
		case "image/jpeg", "image/png", "image/gif", "image/webp":
			return sdk.NewImageBlockBase64(b.MediaType, base64.StdEncoding.EncodeToString(b.Data)), nil
		}
		return sdk.ContentBlockParamUnion{}, fmt.Errorf("an image must be image/jpeg, image/png, image/gif or image/webp, not %q", b.MediaType)
	case agentd.BlockToolUse:
		input := b.ToolInput
		if len(input) == 0 {
			input = []byte("{}")
		}
		if !json.Valid(input) {
			return sdk.ContentBlockParamUnion{}, errors.New("the tool input is not valid JSON")
		}
		return sdk.NewToolUseBlock(b.ToolUseID, json.RawMessage(input), b.ToolName), nil
	case agentd.BlockToolResult:
		if b.ToolUseID == "" {
			return sdk.ContentBlockParamUnion{}, errors.New("a tool result needs the id of the tool use it answers")
		}
		return sdk.NewToolResultBlock(b.ToolUseID, b.Text, b.IsError), nil
	}
	return sdk.ContentBlockParamUnion{}, fmt.Errorf("unknown block type %q", b.Type)
}

// fromMessage converts the SDK's answer. Blocks agentd has no type for
// (thinking, server tools) are left out: agentd asks for neither.
func fromMessage(m *sdk.Message) agentd.ModelResponse {
	r := agentd.ModelResponse{
		ID:         m.ID,
		Model:      m.Model,
		StopReason: string(m.StopReason),
		Usage: agentd.Usage{
			InputTokens:              m.Usage.InputTokens,
			OutputTokens:             m.Usage.OutputTokens,
			CacheCreationInputTokens: m.Usage.CacheCreationInputTokens,
			CacheReadInputTokens:     m.Usage.CacheReadInputTokens,
			// Of a streamed answer, Accumulate keeps the split that
			// message_start carried: the prompt is cached before any output.
			CacheCreation1hInputTokens: m.Usage.CacheCreation.Ephemeral1hInputTokens,
		},
	}
	for _, b := range m.Content {
		switch b.Type {
		case "text":
			r.Content = append(r.Content, agentd.TextBlock(b.Text))
		case "tool_use":
			input := bytes.Clone([]byte(b.Input))
			if len(input) == 0 {
				input = []byte("{}")
			}
			r.Content = append(r.Content, agentd.Block{Type: agentd.BlockToolUse, ToolUseID: b.ID, ToolName: b.Name, ToolInput: input})
		}
	}
	return r
}

// classify turns an SDK error into an *agentd.Error, keeping the SDK error
// (with its credentials redacted) as the cause.
func (c *Client) classify(ctx context.Context, err error) error {
	var ae *agentd.Error
	if errors.As(err, &ae) {
		return err
	}
	e := &agentd.Error{Op: op, Err: err}
	var apiErr *sdk.Error
	switch {
	case errors.As(err, &apiErr):
		redact(apiErr)
		e.Kind = kindOf(apiErr.StatusCode, string(apiErr.Type()))
		e.Message = apiErr.Message
		if e.Message == "" {
			e.Message = fmt.Sprintf("the model API answered %d %s", apiErr.StatusCode, http.StatusText(apiErr.StatusCode))
		}
		e.Upstream = &agentd.Upstream{Status: apiErr.StatusCode, Type: string(apiErr.Type()), RequestID: apiErr.RequestID}
		if apiErr.Response != nil {
			e.RetryAfter = retryAfter(apiErr.Response.Header, c.clock.Now())
		}
	case ctx.Err() != nil:
		// The caller gave up or ran out of time: KindTimeout, as agentd.E
		// classifies context errors, with the context's error kept in the
		// chain. (An attempt that outlives Config.Timeout while the caller
		// still waits is the model's slowness: the default case.)
		e.Kind = agentd.KindTimeout
		e.Message = "the model call was cancelled"
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			e.Message = "the model call ran out of time"
		}
		if !errors.Is(err, ctx.Err()) {
			e.Err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
	default:
		// Connection errors, attempt timeouts and streams cut short.
		e.Kind = agentd.KindModelUnavailable
		e.Message = "the model API could not be reached"
		if errors.Is(err, io.ErrUnexpectedEOF) {
			e.Message = "the model API dropped the connection"
		}
	}
	return e
}

// kindOf classifies an API error. A status of 200 is an error event in a
// stream that had started: its type says what happened.
func kindOf(status int, errType string) agentd.Kind {
	if status < 400 {
		switch errType {
		case "rate_limit_error":
			return agentd.KindRateLimited
		case "overloaded_error", "api_error", "timeout_error":
			return agentd.KindModelUnavailable
		}
		return agentd.KindModelError
	}
	switch {
	case status == http.StatusTooManyRequests:
		return agentd.KindRateLimited
	case status == http.StatusRequestTimeout || status >= 500:
		return agentd.KindModelUnavailable
	default:
		return agentd.KindModelError
	}
}

// retryAfter reads the wait the API asks for: retry-after-ms, then
// retry-after in seconds or as an HTTP date, as the SDK does.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("retry-after-ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := h.Get("retry-after")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// redact removes the credentials from the requests an SDK error keeps, so
// that no code that unwraps the error (to log or dump it) can find the key.
// The SDK's own Error() prints no header, but its Request and
// Response.Request carry the Authorization header as sent.
func redact(e *sdk.Error) {
	scrub := func(r *http.Request) *http.Request {
		if r == nil {
			return nil
		}
		c := *r
		c.Header = r.Header.Clone()
		for _, k := range []string{"Authorization", "X-Api-Key", "Proxy-Authorization", "Cookie"} {
			if c.Header.Get(k) != "" {
				c.Header.Set(k, "REDACTED")
			}
		}
		return &c
	}
	e.Request = scrub(e.Request)
	if e.Response != nil {
		resp := *e.Response
		resp.Request = scrub(resp.Request)
		e.Response = &resp
	}
}
