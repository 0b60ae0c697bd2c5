package anthropictest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Request is one request the fake received, valid or not: what was sent
// (Method, Path, Header, Raw), the body parsed into typed fields for
// assertions, and how the fake answered.
type Request struct {
	Method string
	Path   string
	Header http.Header
	Raw    []byte // the body as sent; nil when its Content-Length was over the limit

	// The parsed body. Fields stay zero when the body could not be parsed up
	// to them; the log keeps invalid requests too.
	Model        string
	MaxTokens    int
	System       []TextBlock // normalized: a string system prompt is one block
	Messages     []Message
	Tools        []Tool
	ToolChoice   *ToolChoice
	Stream       bool
	CacheControl *CacheControl // top-level: automatic caching of the last block

	// The answer.
	RequestID    string // the request-id header
	Status       int    // 0 while pending, or when the connection was dropped before a status
	ErrorType    string // error.type of an error answer (also of an SSE error event)
	ErrorMessage string
}

// TextBlock is a text block of the system prompt.
type TextBlock struct {
	Text         string
	CacheControl *CacheControl
}

// Message is one turn of the conversation. A string content is normalized to
// one text block.
type Message struct {
	Role    string
	Content []ContentBlock
}

// ContentBlock is one block of a message. Only the fields of its Type are set.
type ContentBlock struct {
	Type string
	Text string // text

	Source Source // image, document

	// tool_use
	ID    string
	Name  string
	Input json.RawMessage

	// tool_result (a string content is normalized to one text block)
	ToolUseID string
	Content   []ContentBlock
	IsError   bool

	Citations    json.RawMessage // text: as sent, if any
	CacheControl *CacheControl
	Raw          json.RawMessage // the block as sent
}

// Source is the source of an image or document block.
type Source struct {
	Type      string // base64, text, url, file, content
	MediaType string
	Data      string // base64 as sent (base64 sources) or the text (text sources)
	URL       string
	FileID    string
	Content   json.RawMessage // content sources
}

// Bytes decodes the base64 Data of a base64 source.
func (s Source) Bytes() ([]byte, error) { return base64.StdEncoding.DecodeString(s.Data) }

// Tool is one tool definition.
type Tool struct {
	Type         string // "" or "custom" for client tools; a versioned type for server tools
	Name         string
	Description  string
	InputSchema  json.RawMessage
	CacheControl *CacheControl
	Raw          json.RawMessage
}

// ToolChoice is the tool_choice parameter.
type ToolChoice struct {
	Type                   string // auto, any, tool, none
	Name                   string
	DisableParallelToolUse bool
}

// CacheControl is a prompt-cache breakpoint.
type CacheControl struct {
	Type string `json:"type"`
	TTL  string `json:"ttl,omitempty"` // "", "5m" or "1h"
}

// LastUserText joins, with newlines, the text blocks of the last user message.
func (r Request) LastUserText() string {
	for _, m := range slices.Backward(r.Messages) {
		if m.Role != "user" {
			continue
		}
		var parts []string
		for _, b := range m.Content {
			if b.Type == "text" {
				parts = append(parts, b.Text)
			}
		}
		return strings.Join(parts, "\n")
	}
	return ""
}

// breakpoints counts the cache_control markers of the request, the
// top-level one included, as the API's limit of 4 does.
func (r *Request) breakpoints() int {
	n := 0
	if r.CacheControl != nil {
		n++
	}
	for _, t := range r.Tools {
		if t.CacheControl != nil {
			n++
		}
	}
	for _, s := range r.System {
		if s.CacheControl != nil {
			n++
		}
	}
	var count func([]ContentBlock)
	count = func(bs []ContentBlock) {
		for _, b := range bs {
			if b.CacheControl != nil {
				n++
			}
			count(b.Content)
		}
	}
	for _, m := range r.Messages {
		count(m.Content)
	}
	return n
}

// maxBreakpoints is the API's limit on cache_control markers per request.
const maxBreakpoints = 4

// removedSamplingVersion is the anthropic-version that removed temperature,
// top_p and top_k, document blocks in assistant messages and citations on
// user text blocks. The v2 SDKs send it.
const removedSamplingVersion = "2026-10-21"

// apiError is an error answer of the fake.
type apiError struct {
	status  int
	typ     string
	message string
}

func invalid(field, format string, args ...any) *apiError {
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", message: msg}
}

// blockTypes are the content block types the API accepts in messages. They
// are functions, not variables, so no caller can change them.
func blockTypes() []string {
	return []string{
		"text", "image", "document", "search_result", "thinking", "redacted_thinking",
		"tool_use", "tool_result", "server_tool_use", "web_search_tool_result",
		"web_fetch_tool_result", "code_execution_tool_result", "bash_code_execution_tool_result",
		"text_editor_code_execution_tool_result", "tool_search_tool_result", "container_upload",
	}
}

// toolResultBlockTypes are the block types a tool_result may contain.
func toolResultBlockTypes() []string {
	return []string{"text", "image", "document", "search_result", "tool_reference"}
}

func imageMediaTypes() []string {
	return []string{"image/jpeg", "image/png", "image/gif", "image/webp"}
}

// parser decodes and validates a request body. It fills r as it goes, so
// the log keeps what was understood of an invalid request.
type parser struct {
	r       *Request
	count   bool // count_tokens: max_tokens is not required
	version string
}

// parseRequest validates body like the API does and fills r. It answers the
// first problem found, naming the field at fault.
func parseRequest(body []byte, r *Request, count bool, version string) *apiError {
	p := parser{r: r, count: count, version: version}
	return p.parse(body)
}

func (p *parser) v2026() bool { return p.version >= removedSamplingVersion }

func (p *parser) parse(body []byte) *apiError {
	top, ok := object(body)
	if !ok {
		if !json.Valid(body) {
			return invalid("", "request body is not valid JSON")
		}
		return invalid("", "request body must be a JSON object")
	}

	if e := p.model(top["model"]); e != nil {
		return e
	}
	if !p.count {
		if e := p.maxTokens(top["max_tokens"]); e != nil {
			return e
		}
	}
	for _, name := range []string{"temperature", "top_p", "top_k"} {
		if present(top[name]) && p.v2026() {
			return invalid(name, "Extra inputs are not permitted: temperature, top_p and top_k were removed in anthropic-version %s", removedSamplingVersion)
		}
	}
	if e := p.system(top["system"]); e != nil {
		return e
	}
	if e := p.messages(top["messages"]); e != nil {
		return e
	}
	if e := p.tools(top["tools"]); e != nil {
		return e
	}
	if e := p.toolChoice(top["tool_choice"]); e != nil {
		return e
	}
	if present(top["stream"]) {
		if err := json.Unmarshal(top["stream"], &p.r.Stream); err != nil {
			return invalid("stream", "Input should be a valid boolean")
		}
	}
	if present(top["cache_control"]) {
		cc, e := cacheControl(top["cache_control"], "cache_control")
		if e != nil {
			return e
		}
		p.r.CacheControl = cc
	}
	if n := p.r.breakpoints(); n > maxBreakpoints {
		return invalid("cache_control", "A maximum of %d blocks with cache_control may be provided. Found %d.", maxBreakpoints, n)
	}
	return p.toolPairs()
}

func (p *parser) model(raw json.RawMessage) *apiError {
	if !present(raw) {
		return invalid("model", "Field required")
	}
	if err := json.Unmarshal(raw, &p.r.Model); err != nil {
		return invalid("model", "Input should be a valid string")
	}
	if p.r.Model == "" {
		return invalid("model", "String should have at least 1 character")
	}
	return nil
}

func (p *parser) maxTokens(raw json.RawMessage) *apiError {
	if !present(raw) {
		return invalid("max_tokens", "Field required")
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 32)
	if err != nil {
		return invalid("max_tokens", "Input should be a valid integer")
	}
	if n < 1 {
		return invalid("max_tokens", "Input should be greater than or equal to 1")
	}
	p.r.MaxTokens = int(n)
	return nil
}

func (p *parser) system(raw json.RawMessage) *apiError {
	if !present(raw) {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s != "" {
			p.r.System = []TextBlock{{Text: s}}
		}
		return nil
	}
	items, ok := array(raw)
	if !ok {
		return invalid("system", "Input should be a valid string or a list of text blocks")
	}
	for i, item := range items {
		path := fmt.Sprintf("system.%d", i)
		o, ok := object(item)
		if !ok {
			return invalid(path, "Input should be an object")
		}
		if t, _ := stringField(o, "type"); t != "text" {
			return invalid(path+".type", "Input should be 'text'")
		}
		text, e := requiredString(o, "text", path)
		if e != nil {
			return e
		}
		if text == "" {
			return invalid(path+".text", "text content blocks must be non-empty")
		}
		cc, e := cacheControl(o["cache_control"], path+".cache_control")
		if e != nil {
			return e
		}
		p.r.System = append(p.r.System, TextBlock{Text: text, CacheControl: cc})
	}
	return nil
}

func (p *parser) messages(raw json.RawMessage) *apiError {
	if !present(raw) {
		return invalid("messages", "Field required")
	}
	items, ok := array(raw)
	if !ok {
		return invalid("messages", "Input should be a valid list")
	}
	if len(items) == 0 {
		return invalid("messages", "List should have at least 1 item")
	}
	for i, item := range items {
		path := fmt.Sprintf("messages.%d", i)
		o, ok := object(item)
		if !ok {
			return invalid(path, "Input should be an object")
		}
		role, _ := stringField(o, "role")
		if role != "user" && role != "assistant" {
			return invalid(path+".role", "Input should be 'user' or 'assistant'")
		}
		if i == 0 && role != "user" {
			return invalid(path+".role", `the first message must use the "user" role`)
		}
		m := Message{Role: role}
		finalAssistant := role == "assistant" && i == len(items)-1
		content := o["content"]
		if !present(content) {
			return invalid(path+".content", "Field required")
		}
		var s string
		if json.Unmarshal(content, &s) == nil {
			if s == "" && !finalAssistant {
				return invalid(path+".content", "all messages must have non-empty content except for the optional final assistant message")
			}
			if s != "" {
				m.Content = []ContentBlock{{Type: "text", Text: s, Raw: textRaw(s)}}
			}
		} else {
			blocks, ok := array(content)
			if !ok {
				return invalid(path+".content", "Input should be a valid string or a list of content blocks")
			}
			if len(blocks) == 0 && !finalAssistant {
				return invalid(path+".content", "all messages must have non-empty content except for the optional final assistant message")
			}
			for j, b := range blocks {
				cb, e := p.block(b, fmt.Sprintf("%s.content.%d", path, j), role, nil)
				if e != nil {
					return e
				}
				m.Content = append(m.Content, cb)
			}
		}
		p.r.Messages = append(p.r.Messages, m)
		if finalAssistant && len(m.Content) > 0 {
			last := m.Content[len(m.Content)-1]
			if last.Type == "text" && strings.TrimRight(last.Text, " \t\r\n") != last.Text {
				return invalid("messages", "final assistant content cannot end with trailing whitespace")
			}
		}
	}
	return nil
}

// block parses one content block. allowed restricts the types (inside a
// tool_result); nil means every message block type.
func (p *parser) block(raw json.RawMessage, path, role string, allowed []string) (ContentBlock, *apiError) {
	o, ok := object(raw)
	if !ok {
		return ContentBlock{}, invalid(path, "Input should be an object")
	}
	b := ContentBlock{Raw: raw}
	b.Type, _ = stringField(o, "type")
	if allowed == nil {
		allowed = blockTypes()
	}
	if !slices.Contains(allowed, b.Type) {
		return b, invalid(path+".type", "Input tag '%s' found using 'type' does not match any of the expected tags: '%s'", b.Type, strings.Join(allowed, "', '"))
	}
	cc, e := cacheControl(o["cache_control"], path+".cache_control")
	if e != nil {
		return b, e
	}
	b.CacheControl = cc

	switch b.Type {
	case "text":
		if b.Text, e = requiredString(o, "text", path); e != nil {
			return b, e
		}
		if b.Text == "" {
			return b, invalid(path+".text", "text content blocks must be non-empty")
		}
		if present(o["citations"]) {
			b.Citations = o["citations"]
			if role == "user" && p.v2026() {
				return b, invalid(path+".citations", "citations on text blocks in user messages are not permitted in anthropic-version %s", removedSamplingVersion)
			}
		}
	case "image":
		if b.Source, e = source(o["source"], path+".source", "image"); e != nil {
			return b, e
		}
	case "document":
		if role == "assistant" && p.v2026() {
			return b, invalid(path, "document blocks are not permitted in assistant messages in anthropic-version %s", removedSamplingVersion)
		}
		if b.Source, e = source(o["source"], path+".source", "document"); e != nil {
			return b, e
		}
	case "tool_use":
		if role != "assistant" {
			return b, invalid(path, "tool_use blocks can only be in assistant messages")
		}
		if b.ID, e = requiredString(o, "id", path); e != nil {
			return b, e
		}
		if b.Name, e = requiredString(o, "name", path); e != nil {
			return b, e
		}
		if b.ID == "" || b.Name == "" {
			return b, invalid(path, "tool_use blocks need a non-empty id and name")
		}
		if _, ok := object(o["input"]); !ok {
			return b, invalid(path+".input", "Input should be a valid dictionary")
		}
		b.Input = o["input"]
	case "tool_result":
		if role != "user" {
			return b, invalid(path, "tool_result blocks can only be in user messages")
		}
		if b.ToolUseID, e = requiredString(o, "tool_use_id", path); e != nil {
			return b, e
		}
		if present(o["is_error"]) && json.Unmarshal(o["is_error"], &b.IsError) != nil {
			return b, invalid(path+".is_error", "Input should be a valid boolean")
		}
		if c := o["content"]; present(c) {
			var s string
			if json.Unmarshal(c, &s) == nil {
				if s != "" {
					b.Content = []ContentBlock{{Type: "text", Text: s, Raw: textRaw(s)}}
				}
			} else if items, ok := array(c); ok {
				for k, item := range items {
					nb, e := p.block(item, fmt.Sprintf("%s.content.%d", path, k), role, toolResultBlockTypes())
					if e != nil {
						return b, e
					}
					b.Content = append(b.Content, nb)
				}
			} else {
				return b, invalid(path+".content", "Input should be a valid string or a list of content blocks")
			}
		}
	}
	return b, nil
}

// source parses the source of an image or document block.
func source(raw json.RawMessage, path, kind string) (Source, *apiError) {
	o, ok := object(raw)
	if !ok {
		return Source{}, invalid(path, "Field required")
	}
	var s Source
	s.Type, _ = stringField(o, "type")
	allowed := []string{"base64", "url", "file"}
	if kind == "document" {
		allowed = append(allowed, "text", "content")
	}
	if !slices.Contains(allowed, s.Type) {
		return s, invalid(path+".type", "Input tag '%s' found using 'type' does not match any of the expected tags: '%s'", s.Type, strings.Join(allowed, "', '"))
	}
	var e *apiError
	switch s.Type {
	case "base64":
		if s.MediaType, e = requiredString(o, "media_type", path); e != nil {
			return s, e
		}
		if kind == "image" && !slices.Contains(imageMediaTypes(), s.MediaType) {
			return s, invalid(path+".media_type", "Input should be '%s'", strings.Join(imageMediaTypes(), "', '"))
		}
		if kind == "document" && s.MediaType != "application/pdf" {
			return s, invalid(path+".media_type", "Input should be 'application/pdf'")
		}
		if s.Data, e = requiredString(o, "data", path); e != nil {
			return s, e
		}
		if s.Data == "" {
			return s, invalid(path+".data", "the %s is empty", kind)
		}
		if _, err := s.Bytes(); err != nil {
			return s, invalid(path+".data", "invalid base64 data")
		}
	case "text":
		if s.MediaType, e = requiredString(o, "media_type", path); e != nil {
			return s, e
		}
		if s.MediaType != "text/plain" {
			return s, invalid(path+".media_type", "Input should be 'text/plain'")
		}
		if s.Data, e = requiredString(o, "data", path); e != nil {
			return s, e
		}
	case "url":
		if s.URL, e = requiredString(o, "url", path); e != nil {
			return s, e
		}
	case "file":
		if s.FileID, e = requiredString(o, "file_id", path); e != nil {
			return s, e
		}
	case "content":
		if !present(o["content"]) {
			return s, invalid(path+".content", "Field required")
		}
		s.Content = o["content"]
	}
	return s, nil
}

func (p *parser) tools(raw json.RawMessage) *apiError {
	if !present(raw) {
		return nil
	}
	items, ok := array(raw)
	if !ok {
		return invalid("tools", "Input should be a valid list")
	}
	seen := map[string]bool{}
	for i, item := range items {
		path := fmt.Sprintf("tools.%d", i)
		o, ok := object(item)
		if !ok {
			return invalid(path, "Input should be an object")
		}
		t := Tool{Raw: item}
		t.Type, _ = stringField(o, "type")
		t.Name, _ = stringField(o, "name")
		t.Description, _ = stringField(o, "description")
		if t.Type == "" || t.Type == "custom" {
			if !validToolName(t.Name) {
				return invalid(path+".name", "String should match pattern '^[a-zA-Z0-9_-]{1,128}$'")
			}
			if _, ok := object(o["input_schema"]); !ok {
				return invalid(path+".input_schema", "Field required")
			}
			t.InputSchema = o["input_schema"]
		}
		if t.Name != "" {
			if seen[t.Name] {
				return invalid("tools", "Tool names must be unique.")
			}
			seen[t.Name] = true
		}
		cc, e := cacheControl(o["cache_control"], path+".cache_control")
		if e != nil {
			return e
		}
		t.CacheControl = cc
		p.r.Tools = append(p.r.Tools, t)
	}
	return nil
}

func validToolName(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (p *parser) toolChoice(raw json.RawMessage) *apiError {
	if !present(raw) {
		return nil
	}
	o, ok := object(raw)
	if !ok {
		return invalid("tool_choice", "Input should be an object")
	}
	tc := &ToolChoice{}
	tc.Type, _ = stringField(o, "type")
	switch tc.Type {
	case "auto", "any", "none":
	case "tool":
		tc.Name, _ = stringField(o, "name")
		if !slices.ContainsFunc(p.r.Tools, func(t Tool) bool { return t.Name == tc.Name }) {
			return invalid("tool_choice.name", "Tool '%s' not found in provided tools", tc.Name)
		}
	default:
		return invalid("tool_choice.type", "Input tag '%s' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'", tc.Type)
	}
	if (tc.Type == "any" || tc.Type == "tool") && len(p.r.Tools) == 0 {
		return invalid("tool_choice", "tool_choice may only be specified while providing tools")
	}
	if present(o["disable_parallel_tool_use"]) && json.Unmarshal(o["disable_parallel_tool_use"], &tc.DisableParallelToolUse) != nil {
		return invalid("tool_choice.disable_parallel_tool_use", "Input should be a valid boolean")
	}
	p.r.ToolChoice = tc
	return nil
}

// toolPairs checks that every tool_use is answered by a tool_result in the
// next message, and that every tool_result answers a tool_use of the
// previous one.
func (p *parser) toolPairs() *apiError {
	msgs := p.r.Messages
	uses := func(m Message) []string {
		var ids []string
		for _, b := range m.Content {
			if b.Type == "tool_use" {
				ids = append(ids, b.ID)
			}
		}
		return ids
	}
	for i, m := range msgs {
		if m.Role == "user" {
			var prev []string
			if i > 0 && msgs[i-1].Role == "assistant" {
				prev = uses(msgs[i-1])
			}
			for j, b := range m.Content {
				if b.Type == "tool_result" && !slices.Contains(prev, b.ToolUseID) {
					return invalid(fmt.Sprintf("messages.%d.content.%d", i, j),
						"unexpected `tool_use_id` found in `tool_result` blocks: %s. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.", b.ToolUseID)
				}
			}
			continue
		}
		ids := uses(m)
		if len(ids) == 0 {
			continue
		}
		var answered []string
		if i+1 < len(msgs) && msgs[i+1].Role == "user" {
			for _, b := range msgs[i+1].Content {
				if b.Type == "tool_result" {
					answered = append(answered, b.ToolUseID)
				}
			}
		}
		var missing []string
		for _, id := range ids {
			if !slices.Contains(answered, id) {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return invalid(fmt.Sprintf("messages.%d", i),
				"`tool_use` ids were found without `tool_result` blocks immediately after: %s. Each `tool_use` block must have a corresponding `tool_result` block in the next message.", strings.Join(missing, ", "))
		}
	}
	return nil
}

func cacheControl(raw json.RawMessage, path string) (*CacheControl, *apiError) {
	if !present(raw) {
		return nil, nil
	}
	o, ok := object(raw)
	if !ok {
		return nil, invalid(path, "Input should be an object")
	}
	cc := &CacheControl{}
	cc.Type, _ = stringField(o, "type")
	if cc.Type != "ephemeral" {
		return nil, invalid(path+".type", "Input should be 'ephemeral'")
	}
	if present(o["ttl"]) {
		cc.TTL, _ = stringField(o, "ttl")
		if cc.TTL != "5m" && cc.TTL != "1h" {
			return nil, invalid(path+".ttl", "Input should be '5m' or '1h'")
		}
	}
	return cc, nil
}

// present reports whether a field was sent with a value other than null.
func present(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
}

func object(raw json.RawMessage) (map[string]json.RawMessage, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false
	}
	var o map[string]json.RawMessage
	if json.Unmarshal(raw, &o) != nil {
		return nil, false
	}
	return o, true
}

func array(raw json.RawMessage) ([]json.RawMessage, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return nil, false
	}
	var a []json.RawMessage
	if json.Unmarshal(raw, &a) != nil {
		return nil, false
	}
	return a, true
}

func stringField(o map[string]json.RawMessage, name string) (string, bool) {
	var s string
	if !present(o[name]) || json.Unmarshal(o[name], &s) != nil {
		return "", false
	}
	return s, true
}

func requiredString(o map[string]json.RawMessage, name, path string) (string, *apiError) {
	if !present(o[name]) {
		return "", invalid(path+"."+name, "Field required")
	}
	s, ok := stringField(o, name)
	if !ok {
		return "", invalid(path+"."+name, "Input should be a valid string")
	}
	return s, nil
}

// textRaw is the block a string content stands for, so that a string and
// the equivalent text block cache and count alike.
func textRaw(s string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"type": "text", "text": s})
	return b
}
