package anthropictest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// wireMessage is the Message object of the API.
type wireMessage struct {
	ID           string      `json:"id"`
	Type         string      `json:"type"`
	Role         string      `json:"role"`
	Model        string      `json:"model"`
	Content      []wireBlock `json:"content"`
	StopReason   *string     `json:"stop_reason"`
	StopSequence *string     `json:"stop_sequence"`
	Usage        Usage       `json:"usage"`
}

// wireBlock is a content block of an answer: text or tool_use.
type wireBlock struct {
	Type  string
	Text  string
	ID    string
	Name  string
	Input json.RawMessage
}

// MarshalJSON writes only the fields of the block's type, as the API does:
// a text block always has "text", even empty.
func (b wireBlock) MarshalJSON() ([]byte, error) {
	if b.Type == "tool_use" {
		return json.Marshal(struct {
			Type  string          `json:"type"`
			ID    string          `json:"id"`
			Name  string          `json:"name"`
			Input json.RawMessage `json:"input"`
		}{b.Type, b.ID, b.Name, b.Input})
	}
	return json.Marshal(struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}{b.Type, b.Text})
}

// message builds the answer to x.req, accounting its usage against the
// prompt cache.
func (x *exchange) message(reply Reply, seq int) wireMessage {
	m := wireMessage{
		ID:      fmt.Sprintf("msg_fake_%06d", seq),
		Type:    "message",
		Role:    "assistant",
		Model:   x.req.Model,
		Content: []wireBlock{},
	}
	for i, b := range reply.blocks {
		if b.typ == "tool_use" {
			m.Content = append(m.Content, wireBlock{Type: b.typ, ID: fmt.Sprintf("toolu_fake_%06d_%d", seq, i), Name: b.name, Input: b.input})
		} else {
			m.Content = append(m.Content, wireBlock{Type: "text", Text: b.text})
		}
	}
	stop := reply.stopReason
	if stop == "" {
		stop = "end_turn"
	}
	m.StopReason = &stop

	m.Usage = x.f.usage(&x.req)
	m.Usage.OutputTokens = outputTokens(reply.blocks)
	if reply.usage != nil {
		m.Usage = *reply.usage
	}
	return m
}

// stream writes m as the API's SSE event sequence, injecting the reply's
// faults.
func (x *exchange) stream(ctx context.Context, m wireMessage, reply Reply) {
	h := x.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	x.record(http.StatusOK, "", "")
	x.w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(x.w)

	// send writes one event and flushes it; false means the client is gone.
	send := func(event string, v any) bool {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(x.w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		return rc.Flush() == nil && ctx.Err() == nil
	}

	deltas := 0
	// fault injects the reply's fault once deltas reach its count, or at the
	// end of the content (last), and reports whether the stream must stop.
	fault := func(last bool) bool {
		if reply.cut && (deltas == reply.cutAfter || last) {
			panic(http.ErrAbortHandler) // no terminating chunk: an unexpected EOF
		}
		if e := reply.errEvent; e != nil && (deltas == e.after || last) {
			x.record(http.StatusOK, e.typ, e.message)
			send("error", map[string]any{
				"type":       "error",
				"error":      map[string]string{"type": e.typ, "message": e.message},
				"request_id": x.req.RequestID,
			})
			return true
		}
		return false
	}

	start := m
	start.Content = []wireBlock{}
	start.StopReason = nil
	start.Usage.OutputTokens = 1
	if !send("message_start", map[string]any{"type": "message_start", "message": start}) ||
		!send("ping", map[string]string{"type": "ping"}) {
		return
	}
	for i, b := range m.Content {
		var first any = wireBlock{Type: "text"}
		chunks := words(b.Text, 3)
		deltaOf := func(c string) any { return map[string]string{"type": "text_delta", "text": c} }
		if b.Type == "tool_use" {
			first = wireBlock{Type: b.Type, ID: b.ID, Name: b.Name, Input: json.RawMessage(`{}`)}
			chunks = pieces(string(b.Input), 16)
			deltaOf = func(c string) any { return map[string]string{"type": "input_json_delta", "partial_json": c} }
		}
		if !send("content_block_start", map[string]any{"type": "content_block_start", "index": i, "content_block": first}) {
			return
		}
		for _, c := range chunks {
			if fault(false) {
				return
			}
			if !send("content_block_delta", map[string]any{"type": "content_block_delta", "index": i, "delta": deltaOf(c)}) {
				return
			}
			deltas++
		}
		if !send("content_block_stop", map[string]any{"type": "content_block_stop", "index": i}) {
			return
		}
	}
	if fault(true) {
		return
	}
	u := m.Usage
	if !send("message_delta", map[string]any{
		"type":  "message_delta",
		"delta": map[string]any{"stop_reason": m.StopReason, "stop_sequence": nil},
		"usage": map[string]int64{
			"input_tokens":                u.InputTokens,
			"cache_creation_input_tokens": u.CacheCreationInputTokens,
			"cache_read_input_tokens":     u.CacheReadInputTokens,
			"output_tokens":               u.OutputTokens,
		},
	}) {
		return
	}
	send("message_stop", map[string]string{"type": "message_stop"})
}

// words splits s into chunks of n words, keeping every space, so that the
// chunks join back into s.
func words(s string, n int) []string {
	parts := strings.SplitAfter(s, " ")
	var out []string
	for len(parts) > 0 {
		k := min(n, len(parts))
		if c := strings.Join(parts[:k], ""); c != "" {
			out = append(out, c)
		}
		parts = parts[k:]
	}
	return out
}

// pieces splits s into chunks of about n bytes, on rune boundaries so that
// every chunk is valid UTF-8 on its own.
func pieces(s string, n int) []string {
	var out []string
	start := 0
	for i := range s {
		if i-start >= n {
			out = append(out, s[start:i])
			start = i
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}
