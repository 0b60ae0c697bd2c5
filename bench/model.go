package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd/memory"
	"github.com/agentd/agentd/model/anthropictest"
)

// idHeader carries a request's bench id from the responder to the timing
// wrapper, which removes it before the answer leaves.
const idHeader = "X-Bench-Id"

// model is the fake Anthropic API of a run: anthropictest's handler on a
// loopback TLS server with HTTP/2, as the real API is served. TLS is not
// decoration: over HTTP/2 agentd multiplexes its model calls on a few
// connections, as it does in production, instead of holding one socket per
// waiting call, which would halve the conversations a node can hold under
// the file descriptor limit.
type model struct {
	fake     *anthropictest.Fake
	full     bool // every request goes through the fake, none through quick
	srv      *httptest.Server
	certFile string       // the server's certificate, PEM: the child's SSL_CERT_FILE
	latency  atomic.Int64 // the model's latency, a time.Duration, set per scenario
	seq      atomic.Int64 // numbers quick's answers
	active   atomic.Int64 // requests being answered now
	peak     atomic.Int64 // the most answered at once since the last takePeak

	mu    sync.Mutex
	times map[string]time.Duration // the fake's own time per bench id, since the last take
}

// startModel serves the fake on 127.0.0.1 and writes its certificate into
// dir. full sends every request through anthropictest's fake.
func startModel(dir string, full bool) (*model, error) {
	m := &model{
		full: full,
		// One logged request is enough: the log would otherwise hold every
		// request body of the run.
		fake:  anthropictest.New(anthropictest.WithMaxRequests(1)),
		times: map[string]time.Duration{},
	}
	m.fake.SetResponder(m.respond)
	m.srv = httptest.NewUnstartedServer(m)
	m.srv.EnableHTTP2 = true
	// Clients that go away mid-answer are expected at the end of a run; their
	// TLS errors are not news.
	m.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	m.srv.StartTLS()
	m.certFile = filepath.Join(dir, "fake-model.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.srv.Certificate().Raw})
	if err := os.WriteFile(m.certFile, cert, 0o600); err != nil {
		m.srv.Close()
		return nil, err
	}
	return m, nil
}

func (m *model) url() string { return m.srv.URL }

// client returns a client of the fake that trusts its certificate and
// speaks HTTP/2 to it.
func (m *model) client() *http.Client { return m.srv.Client() }

func (m *model) setLatency(d time.Duration) { m.latency.Store(int64(d)) }

func (m *model) close() { m.srv.Close() }

// respond is the offline model's echo, held back by the current latency and
// tagged with the request's bench id, so the wrapper can file its time.
func (m *model) respond(req anthropictest.Request) anthropictest.Reply {
	if len(req.System) == 1 && isCompaction([]string{req.System[0].Text}) {
		// A real model's summary is short; an echo of the folded turns
		// would be as long as they were and save nothing.
		return anthropictest.Text(compactionSummary)
	}
	text := req.LastUserText()
	r := anthropictest.Text("You said: " + text).WithDelay(time.Duration(m.latency.Load()))
	if id, ok := benchID(text); ok {
		r = r.WithHeader(idHeader, id)
	}
	return r
}

// compactionSummary is the fake's summary of folded turns: about 60
// tokens, what a model writes for a few exchanges about a late order.
const compactionSummary = "The customer reported that an order has not arrived and that tracking shows no update " +
	"since last week. The assistant asked for the order number, promised to check with the courier, and the " +
	"customer repeated the question several times while waiting."

// isCompaction reports whether a system prompt, one block of text, is
// agentd's compaction call.
func isCompaction(system []string) bool {
	return len(system) == 1 && system[0] == memory.DefaultCompactInstructions
}

// takeTimes returns the fake's own time per bench id since the last call
// and forgets them.
func (m *model) takeTimes() map[string]time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.times
	m.times = map[string]time.Duration{}
	return t
}

// takePeak returns the most requests the model was answering at once since
// the last call: how many conversations were waiting for it together.
func (m *model) takePeak() int { return int(m.peak.Swap(m.active.Load())) }

// ServeHTTP times the fake's handling of each request: from the request's
// arrival to the answer's status, which is what the model costs a caller
// once on the wire. The time goes back as Server-Timing (the floor scenario
// reads it there) and is filed by bench id (agentd's requests, whose answers
// agentd does not pass on).
func (m *model) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tw := &timedWriter{ResponseWriter: w, start: time.Now(), m: m}
	now := m.active.Add(1)
	defer m.active.Add(-1)
	for p := m.peak.Load(); now > p && !m.peak.CompareAndSwap(p, now); p = m.peak.Load() {
	}
	if !m.full && r.Method == http.MethodPost && r.URL.Path == "/v1/messages" {
		body, err := io.ReadAll(io.LimitReader(r.Body, anthropictest.MaxBodyBytes+1))
		if err != nil {
			return // the client went away
		}
		if m.quick(tw, r, body) {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	m.fake.ServeHTTP(tw, r)
}

type timedWriter struct {
	http.ResponseWriter
	start time.Time
	m     *model
	wrote bool
}

func (w *timedWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		d := time.Since(w.start)
		h := w.Header()
		h.Set("Server-Timing", fmt.Sprintf("model;dur=%.3f", ms(d)))
		if id := h.Get(idHeader); id != "" {
			h.Del(idHeader)
			w.m.mu.Lock()
			w.m.times[id] = d
			w.m.mu.Unlock()
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *timedWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection's Flush.
func (w *timedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// errNotText refuses a block quick does not answer.
var errNotText = errors.New("not a text block")

// benchID reads the id a bench message starts with: "[id] text".
func benchID(text string) (string, bool) {
	if !strings.HasPrefix(text, "[") {
		return "", false
	}
	end := strings.IndexByte(text, ']')
	if end < 0 {
		return "", false
	}
	return text[1:end], true
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quick answers a plain text request the way the fake's echo would, after a
// single decode of its body, and reports whether it did. The fake validates
// every field, decoding each nesting level again (about 0.9 ms of CPU for a
// turn with 20 exchanges of history, measured): at 1,000 turns a second that
// is half of this 2-core machine, which agentd is being measured on. What is
// not plain text goes to the fake: cache_control (whose accounting is the
// fake's), tools, streaming, documents, and anything invalid, which the fake
// answers with the API's error.
func (m *model) quick(w *timedWriter, r *http.Request, body []byte) bool {
	if r.Header.Get("anthropic-version") == "" || (r.Header.Get("x-api-key") == "" && r.Header.Get("Authorization") == "") ||
		bytes.Contains(body, []byte(`"cache_control"`)) {
		return false
	}
	var req struct {
		Model     string      `json:"model"`
		MaxTokens int         `json:"max_tokens"`
		System    quickText   `json:"system"`
		Stream    bool        `json:"stream"`
		Tools     []any       `json:"tools"`
		Messages  []quickTurn `json:"messages"`
		Choice    any         `json:"tool_choice"`
	}
	if json.Unmarshal(body, &req) != nil || req.Model == "" || req.MaxTokens < 1 || req.Stream ||
		len(req.Tools) > 0 || req.Choice != nil || len(req.Messages) == 0 || isCompaction(req.System) {
		return false
	}
	input := int64(0)
	for _, t := range req.System {
		input += anthropictest.EstimateTokens(t)
	}
	last := ""
	for i, msg := range req.Messages {
		if (msg.Role != "user" && msg.Role != "assistant") || (i == 0 && msg.Role != "user") || len(msg.Content) == 0 {
			return false
		}
		for _, t := range msg.Content {
			if t == "" {
				return false
			}
			input += anthropictest.EstimateTokens(t)
		}
		if msg.Role == "user" {
			last = strings.Join(msg.Content, "\n")
		}
	}

	answer := "You said: " + last
	if !wait(r.Context(), time.Duration(m.latency.Load())) {
		return true // the client went away: nobody reads an answer
	}
	out, _ := json.Marshal(map[string]any{
		"id":            fmt.Sprintf("msg_bench_%d", m.seq.Add(1)),
		"type":          "message",
		"role":          "assistant",
		"model":         req.Model,
		"content":       []map[string]string{{"type": "text", "text": answer}},
		"stop_reason":   "end_turn",
		"stop_sequence": nil,
		"usage": map[string]any{
			"input_tokens": input, "output_tokens": max(anthropictest.EstimateTokens(answer), 1),
			"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
			"cache_creation": map[string]int64{"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
		},
	})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("request-id", fmt.Sprintf("req_bench_%d", m.seq.Load()))
	if id, ok := benchID(last); ok {
		h.Set(idHeader, id)
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
	return true
}

// wait waits for d or until ctx is done, and reports whether d passed.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// quickTurn is a message whose content is text only.
type quickTurn struct {
	Role    string    `json:"role"`
	Content quickText `json:"content"`
}

// quickText is content that is a string or a list of text blocks; anything
// else fails to decode, which sends the request to the fake.
type quickText []string

func (q *quickText) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*q = quickText{s}
		return nil
	}
	var blocks []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &blocks); err != nil {
		return err
	}
	*q = make(quickText, len(blocks))
	for i, bl := range blocks {
		if bl.Type != "text" {
			return errNotText
		}
		(*q)[i] = bl.Text
	}
	return nil
}
