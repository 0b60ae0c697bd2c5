package server_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/agentd/agentd/config"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/server"
	"github.com/agentd/agentd/telemetry"
)

const testKey = "sk-ant-test-4f8d2c9e1b"

// project is a running agentd project over real HTTP, its model faked at
// the wire.
type project struct {
	t     *testing.T
	url   string
	fake  *anthropictest.Fake
	app   *config.App
	clock *clockwork.FakeClock
}

type projectOpts struct {
	agentTOML string            // extra keys for the [[agents]] table
	extraTOML string            // extra top-level tables
	modelTOML string            // keys of [model]; default "max_retries = 0"
	system    string            // the system prompt; default "You are a support agent."
	env       map[string]string // environment; ANTHROPIC_* are filled in unless set
	noKey     bool
	dev       bool
	offline   bool
}

func newProject(t *testing.T, o projectOpts) *project {
	t.Helper()
	dir := t.TempDir()
	toml := fmt.Sprintf(`name = "e2e"
[model]
name = "claude-sonnet-4-6"
max_tokens = 256
%s
%s
[[agents]]
name = "support-chat"
kind = "chat"
system = "prompts/support.md"
%s
`, cmp.Or(o.modelTOML, "max_retries = 0"), o.extraTOML, o.agentTOML)
	writeFile(t, filepath.Join(dir, "agentd.toml"), toml)
	writeFile(t, filepath.Join(dir, "prompts/support.md"), cmp.Or(o.system, "You are a support agent."))
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	fake, fakeURL := anthropictest.NewServer(t)
	env := map[string]string{"ANTHROPIC_BASE_URL": fakeURL}
	if !o.noKey {
		env["ANTHROPIC_API_KEY"] = testKey
	}
	for k, v := range o.env {
		env[k] = v
	}
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))
	app, err := config.Open(context.Background(), cfg, config.Options{
		Dev:     o.dev,
		Offline: o.offline,
		Getenv:  func(k string) string { return env[k] },
		Clock:   clock,
	})
	if err != nil {
		t.Fatalf("config.Open: %v", err)
	}
	srv := httptest.NewServer(server.New(app.ServerConfig(nil)))
	t.Cleanup(func() {
		srv.Close()
		if err := app.Close(context.Background()); err != nil {
			t.Errorf("app.Close: %v", err)
		}
	})
	return &project{t: t, url: srv.URL, fake: fake, app: app, clock: clock}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (p *project) do(method, path, body string) response {
	p.t.Helper()
	req, err := http.NewRequest(method, p.url+path, strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			p.t.Fatalf("%s %s: response is not JSON: %q", method, path, raw)
		}
	}
	return r
}

func (p *project) chat(userID, message string) response {
	p.t.Helper()
	b, _ := json.Marshal(map[string]string{"userId": userID, "message": message})
	return p.do(http.MethodPost, "/agents/support-chat", string(b))
}

func (p *project) history(userID string) []map[string]any {
	p.t.Helper()
	r := p.do(http.MethodGet, "/agents/support-chat/conversations/"+userID, "")
	if r.status != http.StatusOK {
		p.t.Fatalf("GET conversation: %d %s", r.status, r.raw)
	}
	var out []map[string]any
	for _, m := range r.body["messages"].([]any) {
		out = append(out, m.(map[string]any))
	}
	return out
}

func (p *project) audit() []telemetry.AuditEvent {
	p.t.Helper()
	if err := p.app.Auditor.Flush(context.Background()); err != nil {
		p.t.Fatal(err)
	}
	evs, err := p.app.Auditor.Query(context.Background(), telemetry.AuditFilter{Agent: "support-chat"})
	if err != nil {
		p.t.Fatal(err)
	}
	return evs
}

func errorType(r response) string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["type"].(string)
	return s
}

func TestChatRemembersTheConversation(t *testing.T) {
	p := newProject(t, projectOpts{})
	p.fake.Enqueue(anthropictest.Text("Sorry to hear that. What is your order number?"),
		anthropictest.Text("Thanks, order 1234 ships tomorrow."),
		anthropictest.Text("You're welcome!"))

	r := p.chat("u1", "My order is late")
	if r.status != http.StatusOK {
		t.Fatalf("first turn: %d %s", r.status, r.raw)
	}
	if r.body["message"] != "Sorry to hear that. What is your order number?" || r.body["userId"] != "u1" || r.body["turns"] != float64(2) {
		t.Fatalf("first turn body = %s", r.raw)
	}
	if st := r.header.Get("Server-Timing"); !strings.HasPrefix(st, "model;dur=") || !strings.Contains(st, ", total;dur=") {
		t.Fatalf("Server-Timing = %q", st)
	}
	usage := r.body["usage"].(map[string]any)
	if usage["input_tokens"].(float64) <= 0 || usage["output_tokens"].(float64) <= 0 {
		t.Fatalf("usage not reported: %s", r.raw)
	}
	p.chat("u1", "It is order 1234")
	r = p.chat("u1", "Thanks")
	if r.body["turns"] != float64(6) {
		t.Fatalf("third turn turns = %v, want 6", r.body["turns"])
	}

	reqs := p.fake.Requests()
	if len(reqs) != 3 {
		t.Fatalf("fake saw %d requests, want 3", len(reqs))
	}
	third := reqs[2]
	want := []struct{ role, text string }{
		{"user", "My order is late"},
		{"assistant", "Sorry to hear that. What is your order number?"},
		{"user", "It is order 1234"},
		{"assistant", "Thanks, order 1234 ships tomorrow."},
		{"user", "Thanks"},
	}
	if len(third.Messages) != len(want) {
		t.Fatalf("third request has %d messages, want %d", len(third.Messages), len(want))
	}
	for i, w := range want {
		m := third.Messages[i]
		if m.Role != w.role || len(m.Content) != 1 || m.Content[0].Text != w.text {
			t.Fatalf("third request message %d = %+v, want %s %q", i, m, w.role, w.text)
		}
	}
	if len(third.System) != 1 || third.System[0].Text != "You are a support agent." {
		t.Fatalf("system prompt not sent: %+v", third.System)
	}
	if third.Model != "claude-sonnet-4-6" || third.MaxTokens != 256 {
		t.Fatalf("model/max_tokens = %s/%d", third.Model, third.MaxTokens)
	}

	hist := p.history("u1")
	if len(hist) != 6 || hist[0]["role"] != "user" || hist[0]["content"] != "My order is late" || hist[5]["content"] != "You're welcome!" {
		t.Fatalf("stored history = %v", hist)
	}
}

func TestUsersAreIsolated(t *testing.T) {
	p := newProject(t, projectOpts{})
	p.chat("u1", "I am user one")
	p.chat("u2", "I am user two")
	p.chat("u1", "Who am I?")
	reqs := p.fake.Requests()
	if n := len(reqs[1].Messages); n != 1 {
		t.Fatalf("u2's first request carried %d messages, want 1 (none of u1's)", n)
	}
	last := reqs[2]
	if len(last.Messages) != 3 || last.Messages[0].Content[0].Text != "I am user one" {
		t.Fatalf("u1's second request = %+v", last.Messages)
	}
	if h := p.history("u2"); len(h) != 2 || h[0]["content"] != "I am user two" {
		t.Fatalf("u2 history = %v", h)
	}
}

func TestPruningAtMaxTurns(t *testing.T) {
	p := newProject(t, projectOpts{agentTOML: "[agents.memory]\nmax_turns = 2\n"})
	for i := 1; i <= 4; i++ {
		if r := p.chat("u1", fmt.Sprintf("message %d", i)); r.status != http.StatusOK {
			t.Fatalf("turn %d: %d %s", i, r.status, r.raw)
		}
	}
	hist := p.history("u1")
	if len(hist) != 4 || hist[0]["content"] != "message 3" || hist[0]["role"] != "user" {
		t.Fatalf("history after 4 turns with max_turns=2 = %v", hist)
	}
	// The fourth request carried the two previous exchanges and the new message.
	msgs := p.fake.Requests()[3].Messages
	if len(msgs) != 5 || msgs[0].Content[0].Text != "message 2" || msgs[0].Role != "user" {
		t.Fatalf("fourth request messages = %+v", msgs)
	}
}

func TestConversationExpiresAfterTTL(t *testing.T) {
	p := newProject(t, projectOpts{agentTOML: "[agents.memory]\nttl = \"2h\"\n"})
	p.chat("u1", "remember me")
	p.clock.Advance(2*time.Hour - time.Second)
	if h := p.history("u1"); len(h) != 2 {
		t.Fatalf("history before the TTL = %d messages, want 2", len(h))
	}
	p.chat("u1", "still there?") // a write renews the TTL
	p.clock.Advance(2*time.Hour - time.Second)
	if h := p.history("u1"); len(h) != 4 {
		t.Fatalf("history after a renewing turn = %d messages, want 4", len(h))
	}
	p.clock.Advance(time.Second)
	if h := p.history("u1"); len(h) != 0 {
		t.Fatalf("history after the TTL = %v, want empty", h)
	}
	r := p.chat("u1", "hello again")
	if r.body["turns"] != float64(2) {
		t.Fatalf("turn after expiry: turns = %v, want 2 (a fresh conversation)", r.body["turns"])
	}
	if n := len(p.fake.Requests()[2].Messages); n != 1 {
		t.Fatalf("request after expiry carried %d messages, want 1", n)
	}
}

func TestConcurrentMessagesToOneUserLoseNoTurn(t *testing.T) {
	p := newProject(t, projectOpts{agentTOML: "[agents.memory]\nmax_turns = 100\n"})
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := json.Marshal(map[string]string{"userId": "u1", "message": fmt.Sprintf("message %02d", i)})
			resp, err := http.Post(p.url+"/agents/support-chat", "application/json", bytes.NewReader(b))
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				raw, _ := io.ReadAll(resp.Body)
				errs <- fmt.Sprintf("%d %s", resp.StatusCode, raw)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	hist := p.history("u1")
	if len(hist) != 2*n {
		t.Fatalf("stored %d entries, want %d", len(hist), 2*n)
	}
	seen := map[string]bool{}
	for i, m := range hist {
		wantRole := "user"
		if i%2 == 1 {
			wantRole = "assistant"
		}
		if m["role"] != wantRole {
			t.Fatalf("entry %d has role %v, want %s: roles do not alternate", i, m["role"], wantRole)
		}
		if wantRole == "user" {
			content := m["content"].(string)
			if seen[content] {
				t.Fatalf("%q stored twice", content)
			}
			seen[content] = true
			// The echo model answers each message with itself: the answer
			// stored after a message must be the answer to that message.
			if got := hist[i+1]["content"].(string); !strings.Contains(got, content) {
				t.Fatalf("answer %q stored after %q: turns interleaved", got, content)
			}
		}
	}
	if len(seen) != n {
		t.Fatalf("%d distinct messages stored, want %d", len(seen), n)
	}
}

func TestModelFailureLeavesHistoryUnchanged(t *testing.T) {
	tests := []struct {
		name       string
		reply      anthropictest.Reply
		wantStatus int
		wantType   string
		upstream   string
	}{
		{"500", anthropictest.Error(500, "api_error", "Internal server error"), 503, "model_unavailable", "api_error"},
		{"529", anthropictest.Error(529, "overloaded_error", "Overloaded"), 503, "model_unavailable", "overloaded_error"},
		{"429", anthropictest.Error(429, "rate_limit_error", "Rate limited").WithHeader("retry-after", "7"), 429, "rate_limited", "rate_limit_error"},
		{"401", anthropictest.Error(401, "authentication_error", "invalid x-api-key"), 502, "model_error", "authentication_error"},
		{"400", anthropictest.Error(400, "invalid_request_error", "bad"), 502, "model_error", "invalid_request_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProject(t, projectOpts{})
			p.chat("u1", "first")
			before := p.history("u1")

			p.fake.Enqueue(tt.reply)
			r := p.chat("u1", "second")
			if r.status != tt.wantStatus || errorType(r) != tt.wantType {
				t.Fatalf("got %d %s, want %d %s", r.status, r.raw, tt.wantStatus, tt.wantType)
			}
			up, _ := r.body["error"].(map[string]any)["upstream"].(map[string]any)
			if up["type"] != tt.upstream {
				t.Fatalf("upstream type = %v, want %s (%s)", up["type"], tt.upstream, r.raw)
			}
			if tt.name == "429" && r.header.Get("Retry-After") != "7" {
				t.Fatalf("Retry-After = %q, want 7", r.header.Get("Retry-After"))
			}
			if strings.Contains(r.raw, testKey) {
				t.Fatal("the API key leaked into the response")
			}
			after := p.history("u1")
			if fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("history changed after a failed call:\nbefore %v\nafter  %v", before, after)
			}
			evs := p.audit()
			if len(evs) != 2 {
				t.Fatalf("%d audit events, want 2", len(evs))
			}
			failed := evs[0] // newest first
			if failed.Outcome != tt.upstream || failed.Agent != "support-chat" || failed.UserID != "u1" {
				t.Fatalf("audit of the failed call = %+v", failed)
			}
		})
	}
}

func TestEveryModelCallIsAudited(t *testing.T) {
	p := newProject(t, projectOpts{})
	p.chat("u1", "hello")
	p.chat("u2", "hi")
	evs := p.audit()
	if len(evs) != 2 {
		t.Fatalf("%d audit events, want 2", len(evs))
	}
	for _, ev := range evs {
		if ev.Kind != "model_call" || ev.Model != "claude-sonnet-4-6" || ev.Outcome != "ok" ||
			ev.Usage.InputTokens <= 0 || ev.Usage.OutputTokens <= 0 || ev.RequestID == "" || ev.Time.IsZero() {
			t.Fatalf("audit event = %+v", ev)
		}
		if strings.Contains(fmt.Sprintf("%+v", ev), testKey) {
			t.Fatal("the API key is in an audit event")
		}
	}
}

func TestBadRequests(t *testing.T) {
	p := newProject(t, projectOpts{extraTOML: "[server]\nmax_body_bytes = 4096\n", agentTOML: "max_message_bytes = 100\n"})
	big := `{"userId":"u1","message":"` + strings.Repeat("x", 5000) + `"}`
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantType, wantInMessage  string
	}{
		{"invalid JSON", "POST", "/agents/support-chat", `{"userId":`, 400, "invalid_request", "not valid JSON"},
		{"not an object", "POST", "/agents/support-chat", `[1,2]`, 400, "invalid_request", "JSON object"},
		{"empty body", "POST", "/agents/support-chat", ``, 400, "invalid_request", "empty"},
		{"missing userId", "POST", "/agents/support-chat", `{"message":"hi"}`, 400, "invalid_request", "userId"},
		{"missing message", "POST", "/agents/support-chat", `{"userId":"u1"}`, 400, "invalid_request", "message"},
		{"wrong type", "POST", "/agents/support-chat", `{"userId":1,"message":"hi"}`, 400, "invalid_request", "userId"},
		{"unknown field", "POST", "/agents/support-chat", `{"userId":"u1","mesage":"hi"}`, 400, "invalid_request", "mesage"},
		{"trailing data", "POST", "/agents/support-chat", `{"userId":"u1","message":"hi"} {}`, 400, "invalid_request", "exactly one"},
		{"empty message", "POST", "/agents/support-chat", `{"userId":"u1","message":"  "}`, 400, "invalid_request", "message"},
		{"empty userId", "POST", "/agents/support-chat", `{"userId":"","message":"hi"}`, 400, "invalid_request", "userId"},
		{"message too long", "POST", "/agents/support-chat", `{"userId":"u1","message":"` + strings.Repeat("y", 101) + `"}`, 400, "invalid_request", "100 bytes"},
		{"body too large", "POST", "/agents/support-chat", big, 413, "too_large", "4096"},
		{"unknown agent", "POST", "/agents/nobody", `{"userId":"u1","message":"hi"}`, 404, "not_found", "nobody"},
		{"unknown route", "GET", "/nothing/here", ``, 404, "not_found", "/nothing/here"},
		{"wrong method", "GET", "/agents/support-chat", ``, 405, "method_not_allowed", "POST"},
		{"wrong method on conversation", "PUT", "/agents/support-chat/conversations/u1", ``, 405, "method_not_allowed", "DELETE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := p.do(tt.method, tt.path, tt.body)
			msg, _ := r.body["error"].(map[string]any)["message"].(string)
			if r.status != tt.wantStatus || errorType(r) != tt.wantType || !strings.Contains(msg, tt.wantInMessage) {
				t.Fatalf("got %d %s, want %d %s mentioning %q", r.status, r.raw, tt.wantStatus, tt.wantType, tt.wantInMessage)
			}
			if r.status == 405 && r.header.Get("Allow") == "" {
				t.Fatal("405 without an Allow header")
			}
		})
	}
	if n := len(p.fake.Requests()); n != 0 {
		t.Fatalf("bad requests reached the model %d times", n)
	}
}

// A body larger than the limit sent without a Content-Length is cut off at
// the limit rather than read whole.
func TestChunkedBodyOverLimit(t *testing.T) {
	p := newProject(t, projectOpts{extraTOML: "[server]\nmax_body_bytes = 1024\n"})
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(`{"userId":"u1","message":"`))
		chunk := bytes.Repeat([]byte("z"), 512)
		for range 64 { // 32 KiB in all, far over the limit
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		_ = pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, p.url+"/agents/support-chat", pr)
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
}

func TestServeWithoutKeyAnswers503(t *testing.T) {
	p := newProject(t, projectOpts{noKey: true})
	if p.app.ModelMode != config.ModelUnavailable {
		t.Fatalf("model mode %q", p.app.ModelMode)
	}
	r := p.chat("u1", "hello")
	if r.status != http.StatusServiceUnavailable || errorType(r) != "model_unavailable" {
		t.Fatalf("got %d %s, want 503 model_unavailable", r.status, r.raw)
	}
	if h := p.history("u1"); len(h) != 0 {
		t.Fatalf("history stored without a model: %v", h)
	}
	if r := p.do("GET", "/readyz", ""); r.status != http.StatusOK {
		t.Fatalf("readyz without a key: %d %s (the stores are fine)", r.status, r.raw)
	}
}

func TestDevWithoutKeyRunsOffline(t *testing.T) {
	p := newProject(t, projectOpts{dev: true, noKey: true})
	if p.app.ModelMode != config.ModelOffline {
		t.Fatalf("model mode %q, want offline", p.app.ModelMode)
	}
	r := p.chat("u1", "My order is late")
	if r.status != http.StatusOK || r.body["model"] != "offline" || !strings.Contains(r.body["message"].(string), "My order is late") {
		t.Fatalf("offline reply = %d %s", r.status, r.raw)
	}
	r = p.chat("u1", "again")
	if r.body["turns"] != float64(4) || r.body["model"] != "offline" {
		t.Fatalf("second offline reply = %s", r.raw)
	}
	if n := len(p.fake.Requests()); n != 0 {
		t.Fatalf("offline mode called the configured API %d times", n)
	}
}

func TestDevOfflineFlagWinsOverKey(t *testing.T) {
	p := newProject(t, projectOpts{dev: true, offline: true})
	if p.app.ModelMode != config.ModelOffline {
		t.Fatalf("model mode %q, want offline", p.app.ModelMode)
	}
	if r := p.chat("u1", "hi"); r.body["model"] != "offline" {
		t.Fatalf("reply = %s", r.raw)
	}
	if n := len(p.fake.Requests()); n != 0 {
		t.Fatalf("--offline still called the API %d times", n)
	}
}

func TestDeleteForgetsTheConversation(t *testing.T) {
	p := newProject(t, projectOpts{})
	p.chat("u1", "hello")
	if r := p.do("DELETE", "/agents/support-chat/conversations/u1", ""); r.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.status, r.raw)
	}
	if h := p.history("u1"); len(h) != 0 {
		t.Fatalf("history after DELETE = %v", h)
	}
	if r := p.do("DELETE", "/agents/support-chat/conversations/u1", ""); r.status != http.StatusNoContent {
		t.Fatalf("second DELETE: %d %s", r.status, r.raw)
	}
	if r := p.do("GET", "/agents/nobody/conversations/u1", ""); r.status != http.StatusNotFound {
		t.Fatalf("GET of an unknown agent's conversation: %d", r.status)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	p := newProject(t, projectOpts{})
	for _, path := range []string{"/healthz", "/readyz"} {
		if r := p.do("GET", path, ""); r.status != http.StatusOK {
			t.Fatalf("%s: %d %s", path, r.status, r.raw)
		}
	}
}
