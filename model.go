package agentd

import (
	"context"
	"encoding/json"
	"strings"
	"time"
)

// Model is a Claude-like model: one request in, one whole answer out (and,
// when the request asks for it, the answer's text as it is generated).
// model/anthropic implements it over the official SDK; layers such as
// retries and circuit breakers wrap it; the rest of agentd speaks only these
// types, never the SDK's.
type Model interface {
	Generate(ctx context.Context, req ModelRequest) (ModelResponse, error)
}

// Role is who wrote a message.
type Role string

// The roles of a conversation.
const (
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
)

// BlockType is the type of a content block.
type BlockType string

// The content block types agentd sends and receives.
const (
	BlockText     BlockType = "text"
	BlockDocument BlockType = "document" // a PDF, sent as base64 Data with MediaType application/pdf
	BlockImage    BlockType = "image"    // base64 Data with an image MediaType
	BlockToolUse  BlockType = "tool_use"
	// BlockToolResult answers a tool_use of the previous assistant message:
	// ToolUseID names it, Text is the result, IsError marks a failure.
	BlockToolResult BlockType = "tool_result"
)

// CacheTTL is how long a prompt-cache entry lives after its last use.
type CacheTTL string

// The cache lifetimes the API offers. A write costs 1.25× the input price
// for 5 minutes and 2× for an hour; a read costs 0.1×.
const (
	CacheTTL5m CacheTTL = "5m"
	CacheTTL1h CacheTTL = "1h"
)

// CacheControl marks the end of a cacheable prefix (a breakpoint): the
// request up to and including the marked block or tool is written to, or
// read from, the prompt cache. The API allows at most 4 per request.
type CacheControl struct {
	TTL CacheTTL // "" means CacheTTL5m
}

// Block is one piece of a message's content.
type Block struct {
	Type      BlockType
	Text      string // text blocks
	MediaType string // document and image blocks
	Data      []byte // document and image blocks, raw bytes
	// Tool use (in answers, and echoed back in the history): ToolUseID,
	// ToolName and ToolInput. Tool result: ToolUseID, Text and IsError.
	ToolUseID string
	ToolName  string
	ToolInput []byte // JSON
	IsError   bool
	// Title names a document block for the model (e.g. its blob key).
	Title string

	// Cache, when set, makes this block a prompt-cache breakpoint.
	Cache *CacheControl
}

// TextBlock returns a text block.
func TextBlock(text string) Block { return Block{Type: BlockText, Text: text} }

// Message is one turn of a conversation sent to the model.
type Message struct {
	Role    Role
	Content []Block
}

// Tool is a tool the model may call, described by a JSON Schema of its
// input.
type Tool struct {
	Name        string
	Description string
	InputSchema json.RawMessage // a JSON Schema object
	// Cache, when set, makes the tool definitions up to this one a
	// prompt-cache breakpoint (tools come first in the cached prefix).
	Cache *CacheControl
}

// ToolChoiceType says whether and how the model must call a tool.
type ToolChoiceType string

// The tool choices of the API.
const (
	ToolChoiceAuto ToolChoiceType = "auto" // the model decides (the API's default with tools)
	ToolChoiceAny  ToolChoiceType = "any"  // the model must call some tool
	ToolChoiceTool ToolChoiceType = "tool" // the model must call the tool named Name
	ToolChoiceNone ToolChoiceType = "none" // the model must not call a tool
)

// ToolChoice is the tool_choice of a request. The zero value leaves it to
// the API.
type ToolChoice struct {
	Type ToolChoiceType
	Name string // with ToolChoiceTool
	// DisableParallelToolUse makes the model call at most one tool.
	DisableParallelToolUse bool
}

// ModelRequest is one call to the model.
type ModelRequest struct {
	Model string
	// System is the system prompt: text blocks, sent in order. Several
	// blocks let a static part carry a cache breakpoint of its own.
	System     []Block
	Messages   []Message
	MaxTokens  int
	Tools      []Tool
	ToolChoice ToolChoice

	// OnTextDelta, when set, asks for the answer to be streamed: it is
	// called with each piece of answer text as it arrives, in order, from
	// the goroutine that called Generate, before Generate returns the whole
	// answer. A layer that retries failed calls must not retry one that has
	// already passed a delta on: the receiver has seen part of an answer.
	OnTextDelta func(text string)
}

// SystemText returns a system prompt of one text block, or none for "".
func SystemText(s string) []Block {
	if s == "" {
		return nil
	}
	return []Block{TextBlock(s)}
}

// Usage counts the tokens of one call.
type Usage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	// CacheCreation1hInputTokens is the part of CacheCreationInputTokens
	// written with the 1-hour TTL, which costs more than the 5-minute one.
	CacheCreation1hInputTokens int64 `json:"cache_creation_1h_input_tokens,omitempty"`
}

// Add returns the sum of two usages.
func (u Usage) Add(v Usage) Usage {
	return Usage{
		InputTokens:                u.InputTokens + v.InputTokens,
		OutputTokens:               u.OutputTokens + v.OutputTokens,
		CacheCreationInputTokens:   u.CacheCreationInputTokens + v.CacheCreationInputTokens,
		CacheReadInputTokens:       u.CacheReadInputTokens + v.CacheReadInputTokens,
		CacheCreation1hInputTokens: u.CacheCreation1hInputTokens + v.CacheCreation1hInputTokens,
	}
}

// Total is every token the call processed: input, cache writes and reads,
// and output. Token budgets count this.
func (u Usage) Total() int64 {
	return u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens + u.OutputTokens
}

// ModelResponse is the model's whole answer to one call.
type ModelResponse struct {
	ID         string
	Model      string // the model that answered, as it names itself
	Content    []Block
	StopReason string
	Usage      Usage
	Latency    time.Duration // from sending the request to reading the whole answer
	RequestID  string        // the API's request-id header, for support tickets
}

// ToolUse returns the first tool_use block of the answer, if any.
func (r ModelResponse) ToolUse() (Block, bool) {
	for _, c := range r.Content {
		if c.Type == BlockToolUse {
			return c, true
		}
	}
	return Block{}, false
}

// Text joins the text blocks of the answer.
func (r ModelResponse) Text() string {
	var b strings.Builder
	for _, c := range r.Content {
		if c.Type == BlockText {
			b.WriteString(c.Text)
		}
	}
	return b.String()
}
