package anthropictest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// Reply is what the fake answers one valid request with: a message (text
// and tool_use blocks) or an error, plus injected headers, latency and
// faults. The zero Reply is an answer without content. Methods return a
// changed copy, so a Reply can be reused as a template.
type Reply struct {
	blocks     []replyBlock
	stopReason string

	status     int // an error answer when >= 400
	errType    string
	errMessage string

	header http.Header
	delay  time.Duration
	usage  *Usage

	cut      bool // drop the connection after cutAfter deltas
	cutAfter int
	errEvent *streamError
}

type replyBlock struct {
	typ   string // text or tool_use
	text  string
	name  string
	input json.RawMessage
}

type streamError struct {
	after   int
	typ     string
	message string
}

// Text answers with one text block and stop_reason end_turn.
func Text(s string) Reply {
	return Reply{blocks: []replyBlock{{typ: "text", text: s}}, stopReason: "end_turn"}
}

// ToolUse answers with one tool_use block and stop_reason tool_use. input is
// marshalled to JSON now (a json.RawMessage or []byte that is valid JSON is
// taken as is); it must be a JSON object, as the API's always is, or
// ToolUse panics: a broken script is a bug in the test.
func ToolUse(name string, input any) Reply {
	return Reply{}.WithToolUse(name, input)
}

// WithToolUse appends a tool_use block to the answer (after its text, if
// any) and sets stop_reason tool_use.
func (r Reply) WithToolUse(name string, input any) Reply {
	var raw []byte
	switch v := input.(type) {
	case json.RawMessage:
		raw = v
	case []byte:
		raw = v
	default:
		b, err := json.Marshal(input)
		if err != nil {
			panic(fmt.Sprintf("anthropictest: ToolUse(%q): input: %v", name, err))
		}
		raw = b
	}
	if _, ok := object(raw); !ok {
		panic(fmt.Sprintf("anthropictest: ToolUse(%q): input must be a JSON object, got %s", name, raw))
	}
	r.blocks = append(slices.Clip(r.blocks), replyBlock{typ: "tool_use", name: name, input: compact(raw)})
	r.stopReason = "tool_use"
	return r
}

// Error answers with an API error: the real body
// {"type":"error","error":{"type":…,"message":…},"request_id":…}. An empty
// errType is the API's type for the status; an empty msg a generic message.
// The fake sends no retry-after on its own: add one with WithHeader.
func Error(status int, errType, msg string) Reply {
	if errType == "" {
		errType = ErrorType(status)
	}
	if msg == "" {
		msg = defaultMessage(errType)
	}
	return Reply{status: status, errType: errType, errMessage: msg}
}

// ErrorType is the API's error type for an HTTP status.
func ErrorType(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_request_error"
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusPaymentRequired:
		return "billing_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusGatewayTimeout:
		return "timeout_error"
	case 529:
		return "overloaded_error"
	default:
		if status >= 500 {
			return "api_error"
		}
		return "invalid_request_error"
	}
}

// errorStatus is the HTTP status the API answers an error type with.
func errorStatus(errType string) int {
	switch errType {
	case "authentication_error":
		return http.StatusUnauthorized
	case "billing_error":
		return http.StatusPaymentRequired
	case "permission_error":
		return http.StatusForbidden
	case "not_found_error":
		return http.StatusNotFound
	case "request_too_large":
		return http.StatusRequestEntityTooLarge
	case "rate_limit_error":
		return http.StatusTooManyRequests
	case "timeout_error":
		return http.StatusGatewayTimeout
	case "overloaded_error":
		return 529
	case "invalid_request_error":
		return http.StatusBadRequest
	default:
		return http.StatusInternalServerError
	}
}

func defaultMessage(errType string) string {
	switch errType {
	case "overloaded_error":
		return "Overloaded"
	case "rate_limit_error":
		return "Number of request tokens has exceeded your per-minute rate limit"
	case "api_error":
		return "Internal server error"
	case "authentication_error":
		return "invalid x-api-key"
	case "permission_error":
		return "Your API key does not have permission to use the specified resource."
	case "not_found_error":
		return "Not found"
	case "request_too_large":
		return "Request exceeds the maximum allowed number of bytes."
	default:
		return "Invalid request"
	}
}

// WithText appends a text block to the answer.
func (r Reply) WithText(s string) Reply {
	r.blocks = append(slices.Clip(r.blocks), replyBlock{typ: "text", text: s})
	if r.stopReason == "" {
		r.stopReason = "end_turn"
	}
	return r
}

// WithStopReason sets the stop_reason, e.g. "max_tokens" or "refusal".
func (r Reply) WithStopReason(s string) Reply {
	r.stopReason = s
	return r
}

// WithHeader adds a response header, e.g. retry-after or retry-after-ms. It
// replaces the header the fake would send under that name (request-id).
func (r Reply) WithHeader(k, v string) Reply {
	h := r.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Add(k, v)
	r.header = h
	return r
}

// WithDelay holds the answer back for d before its status is sent: the
// model's latency, or time to first token when streaming. A client that
// goes away meanwhile ends the wait.
func (r Reply) WithDelay(d time.Duration) Reply {
	r.delay = d
	return r
}

// WithUsage replaces the estimated usage with u. When u has cache creation
// tokens but no TTL split, they count as 5-minute writes. The prompt cache
// is still read and written as the request says.
func (r Reply) WithUsage(u Usage) Reply {
	if u.CacheCreation == (CacheCreation{}) {
		u.CacheCreation.Ephemeral5mInputTokens = u.CacheCreationInputTokens
	}
	r.usage = &u
	return r
}

// CutAfter drops the connection of a streaming answer after n
// content_block_delta events (at the latest before message_delta), without
// the rest of the stream: the client sees an unexpected EOF. A non-streaming
// answer is dropped before its status, as a connection reset would.
func (r Reply) CutAfter(n int) Reply {
	r.cut, r.cutAfter = true, max(n, 0)
	return r
}

// ErrorEventAfter sends an SSE error event after n content_block_delta
// events (at the latest before message_delta) and ends the stream, as the
// API does when it fails mid-answer (overloaded_error, typically). The
// status was 200 by then, so the SDK does not retry. A non-streaming request
// gets the error as an HTTP error with the status of its type.
func (r Reply) ErrorEventAfter(n int, errType, msg string) Reply {
	if msg == "" {
		msg = defaultMessage(errType)
	}
	r.errEvent = &streamError{after: max(n, 0), typ: errType, message: msg}
	return r
}

// Echo is the offline model: it answers "You said: " and the text of the
// last user message.
func Echo(req Request) Reply {
	return Text("You said: " + req.LastUserText())
}

func compact(raw []byte) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}
