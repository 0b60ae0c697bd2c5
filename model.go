package agentd

import (
	"context"
	"strings"
	"time"
)

// Model is a Claude-like model: one request in, one whole answer out.
// model/anthropic implements it over the official SDK; the rest of agentd
// speaks only these types, never the SDK's.
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
)

// Block is one piece of a message's content.
type Block struct {
	Type      BlockType
	Text      string // text blocks
	MediaType string // document and image blocks
	Data      []byte // document and image blocks, raw bytes
	// Tool use (in answers).
	ToolUseID string
	ToolName  string
	ToolInput []byte // JSON
}

// TextBlock returns a text block.
func TextBlock(text string) Block { return Block{Type: BlockText, Text: text} }

// Message is one turn of a conversation sent to the model.
type Message struct {
	Role    Role
	Content []Block
}

// ModelRequest is one call to the model.
type ModelRequest struct {
	Model     string
	System    string
	Messages  []Message
	MaxTokens int
}

// Usage counts the tokens of one call.
type Usage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
}

// Add returns the sum of two usages.
func (u Usage) Add(v Usage) Usage {
	return Usage{
		InputTokens:              u.InputTokens + v.InputTokens,
		OutputTokens:             u.OutputTokens + v.OutputTokens,
		CacheCreationInputTokens: u.CacheCreationInputTokens + v.CacheCreationInputTokens,
		CacheReadInputTokens:     u.CacheReadInputTokens + v.CacheReadInputTokens,
	}
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
