package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/memory"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/server"
	"github.com/agentd/agentd/telemetry"
)

// waitForSleepers blocks until n goroutines wait on the project's fake
// clock (a retry's backoff), or fails the test.
func (p *project) waitForSleepers(n int) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.clock.BlockUntilContext(ctx, n); err != nil {
		p.t.Fatalf("no retry is waiting on the clock: %v", err)
	}
}

// chatAsync sends a chat turn in the background.
func (p *project) chatAsync(userID, message string) <-chan response {
	ch := make(chan response, 1)
	go func() {
		b, _ := json.Marshal(map[string]string{"userId": userID, "message": message})
		req, _ := http.NewRequest(http.MethodPost, p.url+"/agents/support-chat", strings.NewReader(string(b)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			p.t.Error(err)
			ch <- response{}
			return
		}
		defer resp.Body.Close()
		r := response{status: resp.StatusCode, header: resp.Header}
		_ = json.NewDecoder(resp.Body).Decode(&r.body)
		ch <- r
	}()
	return ch
}

// text fetches a path whose answer is not JSON.
func (p *project) text(method, path, body string) (int, string) {
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
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func lastEvent(t *testing.T, evs []telemetry.AuditEvent) telemetry.AuditEvent {
	t.Helper()
	if len(evs) == 0 {
		t.Fatal("no audit event")
	}
	return evs[0] // newest first
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	p := newProject(t, projectOpts{modelTOML: "max_retries = 2"})
	p.fake.Enqueue(anthropictest.Error(429, "", "").WithHeader("retry-after", "3"), anthropictest.Text("Here now."))
	done := p.chatAsync("u1", "Hello?")
	p.waitForSleepers(1)
	if n := len(p.fake.Requests()); n != 1 {
		t.Fatalf("%d requests before the retry-after elapsed, want 1", n)
	}
	p.clock.Advance(2 * time.Second)
	select {
	case r := <-done:
		t.Fatalf("answered %d before retry-after elapsed", r.status)
	default:
	}
	p.clock.Advance(time.Second)
	r := <-done
	if r.status != http.StatusOK || r.body["message"] != "Here now." {
		t.Fatalf("turn: %d %v", r.status, r.body)
	}
	ev := lastEvent(t, p.audit())
	if ev.Attempts != 2 || ev.RetryWait < 3*time.Second || ev.Outcome != "ok" {
		t.Errorf("audit: attempts %d, waited %s, outcome %s", ev.Attempts, ev.RetryWait, ev.Outcome)
	}
}

func TestOverloadedTwiceThenOK(t *testing.T) {
	p := newProject(t, projectOpts{modelTOML: "max_retries = 2"})
	p.fake.Enqueue(anthropictest.Error(529, "", ""), anthropictest.Error(529, "", ""), anthropictest.Text("Finally."))
	done := p.chatAsync("u1", "Hello?")
	for range 2 {
		p.waitForSleepers(1)
		p.clock.Advance(10 * time.Second) // past any backoff
	}
	r := <-done
	if r.status != http.StatusOK || r.body["message"] != "Finally." {
		t.Fatalf("turn: %d %v", r.status, r.body)
	}
	if ev := lastEvent(t, p.audit()); ev.Attempts != 3 || ev.Outcome != "ok" {
		t.Errorf("audit: attempts %d outcome %s", ev.Attempts, ev.Outcome)
	}
	if h := p.history("u1"); len(h) != 2 {
		t.Errorf("history %v", h)
	}
}

func TestBadRequestIsNotRetried(t *testing.T) {
	p := newProject(t, projectOpts{modelTOML: "max_retries = 2"})
	p.fake.Enqueue(anthropictest.Error(400, "", "messages: bad"))
	r := p.chat("u1", "Hello?")
	if r.status != http.StatusBadGateway || errorType(r) != "model_error" {
		t.Fatalf("turn: %d %s", r.status, r.raw)
	}
	if n := len(p.fake.Requests()); n != 1 {
		t.Errorf("%d requests, want 1: a 400 is not retried", n)
	}
	if ev := lastEvent(t, p.audit()); ev.Attempts != 1 || ev.Outcome != "invalid_request_error" {
		t.Errorf("audit: attempts %d outcome %s", ev.Attempts, ev.Outcome)
	}
	if h := p.history("u1"); len(h) != 0 {
		t.Errorf("a failed turn stored %v", h)
	}
}

func TestTimeoutAndConnectionResetAreRetried(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fault anthropictest.Reply
	}{
		{"attempt timeout", anthropictest.Text("late").WithDelay(time.Hour)},
		{"connection reset", anthropictest.Text("cut").CutAfter(0)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The attempt timeout is real time: it is the behaviour under test.
			p := newProject(t, projectOpts{modelTOML: "max_retries = 1\ntimeout = \"100ms\""})
			p.fake.Enqueue(tt.fault, anthropictest.Text("On time."))
			done := p.chatAsync("u1", "Hello?")
			p.waitForSleepers(1)
			p.clock.Advance(10 * time.Second)
			r := <-done
			if r.status != http.StatusOK || r.body["message"] != "On time." {
				t.Fatalf("turn: %d %v", r.status, r.body)
			}
			if ev := lastEvent(t, p.audit()); ev.Attempts != 2 {
				t.Errorf("audit attempts %d, want 2", ev.Attempts)
			}
		})
	}
}

const fallbackAgentTOML = `
[agents.fallback]
models = ["claude-haiku-4-5"]
canned = "Sorry, we will get back to you."

[[agents.fallback.rules]]
name = "refunds"
when = "input.message.lowerAscii().contains('refund')"
reply = "Refunds take 5 business days."
`

// TestFallbackChain walks the chain one step at a time while the agent's
// model fails every attempt with a 500.
func TestFallbackChain(t *testing.T) {
	p := newProject(t, projectOpts{agentTOML: fallbackAgentTOML, modelTOML: "max_retries = 0\nbreaker_threshold = 100"})
	haikuUp := true
	var mu sync.Mutex
	p.fake.SetResponder(func(r anthropictest.Request) anthropictest.Reply {
		mu.Lock()
		defer mu.Unlock()
		if r.Model == "claude-haiku-4-5" && haikuUp {
			return anthropictest.Text("Haiku here.")
		}
		return anthropictest.Error(500, "", "")
	})

	r := p.chat("u1", "Where is my order?")
	if r.status != http.StatusOK || r.body["source"] != "fallback_model" || r.body["message"] != "Haiku here." {
		t.Fatalf("fallback model: %d %s", r.status, r.raw)
	}

	mu.Lock()
	haikuUp = false
	mu.Unlock()
	r = p.chat("u1", "I want a REFUND")
	if r.status != http.StatusOK || r.body["source"] != "rules" || r.body["message"] != "Refunds take 5 business days." {
		t.Fatalf("rules: %d %s", r.status, r.raw)
	}

	r = p.chat("u1", "Hello?")
	if r.status != http.StatusOK || r.body["source"] != "canned" || r.body["message"] != "Sorry, we will get back to you." {
		t.Fatalf("canned: %d %s", r.status, r.raw)
	}
	// The user's messages are all stored, each reply marked by its source,
	// and the canned one is queued for a person.
	h := p.history("u1")
	if len(h) != 6 || h[4]["content"] != "Hello?" {
		t.Fatalf("history %v", h)
	}
	conv, err := p.app.Chats["support-chat"].History(context.Background(), "u1")
	if err != nil {
		t.Fatal(err)
	}
	sources := []string{conv.Messages[1].Source, conv.Messages[3].Source, conv.Messages[5].Source}
	if sources[0] != "fallback_model" || sources[1] != "rules" || sources[2] != "canned" {
		t.Errorf("stored sources %q", sources)
	}
	reviews := p.do(http.MethodGet, "/reviews?agent=support-chat&status=pending", "")
	if list, _ := reviews.body["reviews"].([]any); len(list) != 1 || !strings.Contains(reviews.raw, `"reply":"Sorry, we will get back to you."`) {
		t.Errorf("review queue: %s", reviews.raw)
	}
	// The audit tells which model failed and what answered.
	evs := p.audit()
	var sonnetFails, haikuOK int
	for _, ev := range evs {
		switch {
		case ev.Model == "claude-sonnet-4-6" && ev.Outcome == "api_error" && ev.Source == "model":
			sonnetFails++
		case strings.HasPrefix(ev.Model, "claude-haiku-4-5") && ev.Outcome == "ok" && ev.Source == "fallback_model":
			haikuOK++
		}
	}
	if sonnetFails != 3 || haikuOK != 1 {
		t.Errorf("audit: %d sonnet failures, %d haiku answers", sonnetFails, haikuOK)
	}
}

func TestBreakerOpensFailsFastAndCloses(t *testing.T) {
	p := newProject(t, projectOpts{modelTOML: "max_retries = 0\nbreaker_threshold = 2\nbreaker_cooldown = \"30s\""})
	p.fake.Enqueue(anthropictest.Error(500, "", ""), anthropictest.Error(500, "", ""))
	for range 2 {
		if r := p.chat("u1", "Hi"); r.status != http.StatusServiceUnavailable {
			t.Fatalf("failing turn: %d %s", r.status, r.raw)
		}
	}
	// Open: fails fast, the API is not called.
	r := p.chat("u1", "Hi")
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.raw, "circuit open") || r.header.Get("Retry-After") == "" {
		t.Fatalf("open breaker: %d %s", r.status, r.raw)
	}
	if n := len(p.fake.Requests()); n != 2 {
		t.Fatalf("%d API requests, want 2: an open breaker sends none", n)
	}
	if ev := lastEvent(t, p.audit()); ev.Outcome != "model_unavailable" {
		t.Errorf("audit of the refused call: %s", ev.Outcome)
	}
	_, metrics := p.text(http.MethodGet, "/metrics", "")
	if !strings.Contains(metrics, `agentd_breaker_state{model="claude-sonnet-4-6"} 2`) {
		t.Errorf("breaker gauge not open in /metrics")
	}
	// Half-open after the cooldown: one probe; it succeeds and closes it.
	p.clock.Advance(31 * time.Second)
	p.fake.Enqueue(anthropictest.Text("Back."))
	if r := p.chat("u1", "Hi"); r.status != http.StatusOK || r.body["message"] != "Back." {
		t.Fatalf("probe: %d %s", r.status, r.raw)
	}
	p.fake.Enqueue(anthropictest.Text("Still here."))
	if r := p.chat("u1", "Hi again"); r.status != http.StatusOK {
		t.Fatalf("closed again: %d %s", r.status, r.raw)
	}
	_, metrics = p.text(http.MethodGet, "/metrics", "")
	if !strings.Contains(metrics, `agentd_breaker_state{model="claude-sonnet-4-6"} 0`) {
		t.Errorf("breaker gauge not closed in /metrics")
	}
}

func TestOpenBreakerGoesStraightToTheFallback(t *testing.T) {
	p := newProject(t, projectOpts{agentTOML: fallbackAgentTOML, modelTOML: "max_retries = 0\nbreaker_threshold = 1"})
	p.fake.SetResponder(func(r anthropictest.Request) anthropictest.Reply {
		if r.Model == "claude-haiku-4-5" {
			return anthropictest.Text("Haiku here.")
		}
		return anthropictest.Error(529, "", "")
	})
	p.chat("u1", "one") // opens sonnet's breaker
	before := len(p.fake.Requests())
	r := p.chat("u1", "two")
	if r.status != http.StatusOK || r.body["source"] != "fallback_model" {
		t.Fatalf("turn: %d %s", r.status, r.raw)
	}
	reqs := p.fake.Requests()[before:]
	if len(reqs) != 1 || reqs[0].Model != "claude-haiku-4-5" {
		t.Errorf("after the breaker opened, the API saw %d requests; sonnet must get none", len(reqs))
	}
}

// sse reads a streamed turn's events.
type sseEvent struct {
	name string
	data map[string]any
}

func (p *project) stream(userID, message string) (int, []sseEvent, string) {
	p.t.Helper()
	b, _ := json.Marshal(map[string]string{"userId": userID, "message": message})
	req, _ := http.NewRequest(http.MethodPost, p.url+"/agents/support-chat", strings.NewReader(string(b)))
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var events []sseEvent
	var raw strings.Builder
	sc := bufio.NewScanner(resp.Body)
	var name string
	for sc.Scan() {
		line := sc.Text()
		raw.WriteString(line + "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var d map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d); err != nil {
				p.t.Fatalf("event data %q: %v", line, err)
			}
			events = append(events, sseEvent{name: name, data: d})
		}
	}
	return resp.StatusCode, events, raw.String()
}

func TestStreamingChat(t *testing.T) {
	p := newProject(t, projectOpts{modelTOML: "max_retries = 1"})
	p.fake.Enqueue(anthropictest.Text("Hello there, how can I help?"))
	status, events, raw := p.stream("u1", "Hi")
	if status != http.StatusOK || len(events) < 2 {
		t.Fatalf("stream: %d\n%s", status, raw)
	}
	var text strings.Builder
	for _, e := range events[:len(events)-1] {
		if e.name != "delta" {
			t.Fatalf("event %q before done:\n%s", e.name, raw)
		}
		text.WriteString(e.data["text"].(string))
	}
	done := events[len(events)-1]
	if done.name != "done" || done.data["message"] != "Hello there, how can I help?" || text.String() != done.data["message"] {
		t.Fatalf("deltas %q, done %v", text.String(), done.data)
	}
	if !p.fake.Requests()[0].Stream {
		t.Error("the model was not asked to stream")
	}
	if h := p.history("u1"); len(h) != 2 {
		t.Errorf("history %v", h)
	}
	// "stream": true in the body asks for the same.
	p.fake.Enqueue(anthropictest.Text("Again."))
	status, raw = p.text(http.MethodPost, "/agents/support-chat", `{"userId":"u2","message":"Hi","stream":true}`)
	if status != http.StatusOK || !strings.HasPrefix(raw, "event: delta\ndata: {\"text\":\"Again.\"}") || !strings.Contains(raw, "event: done") {
		t.Errorf("stream by body: %d %q", status, raw)
	}
}

func TestStreamCutBeforeTheFirstDeltaIsRetried(t *testing.T) {
	p := newProject(t, projectOpts{modelTOML: "max_retries = 1"})
	p.fake.Enqueue(anthropictest.Text("lost").CutAfter(0), anthropictest.Text("Second try."))
	type result struct {
		status int
		events []sseEvent
		raw    string
	}
	ch := make(chan result, 1)
	go func() {
		s, e, raw := p.stream("u1", "Hi")
		ch <- result{s, e, raw}
	}()
	p.waitForSleepers(1)
	p.clock.Advance(10 * time.Second)
	res := <-ch
	last := res.events[len(res.events)-1]
	if res.status != http.StatusOK || last.name != "done" || last.data["message"] != "Second try." {
		t.Fatalf("stream: %d\n%s", res.status, res.raw)
	}
	for _, e := range res.events[:len(res.events)-1] {
		if strings.Contains(e.data["text"].(string), "lost") {
			t.Errorf("text of the cut attempt reached the client: %v", e.data)
		}
	}
	if h := p.history("u1"); len(h) != 2 || h[1]["content"] != "Second try." {
		t.Errorf("history %v", h)
	}
}

func TestStreamCutAfterTheFirstDeltaEndsWithAnErrorAndStoresNothing(t *testing.T) {
	p := newProject(t, projectOpts{modelTOML: "max_retries = 2"})
	p.fake.Enqueue(anthropictest.Text("Part one. Part two. Part three.").CutAfter(1), anthropictest.Text("never sent"))
	status, events, raw := p.stream("u1", "Hi")
	if status != http.StatusOK || len(events) < 2 {
		t.Fatalf("stream: %d\n%s", status, raw)
	}
	if events[0].name != "delta" {
		t.Fatalf("first event %q", events[0].name)
	}
	last := events[len(events)-1]
	if last.name != "error" || last.data["error"].(map[string]any)["type"] != "model_unavailable" {
		t.Fatalf("last event %v\n%s", last, raw)
	}
	if n := len(p.fake.Requests()); n != 1 {
		t.Errorf("%d requests: a stream that delivered text must not be retried", n)
	}
	if h := p.history("u1"); len(h) != 0 {
		t.Errorf("a cut stream stored %v", h)
	}
	if ev := lastEvent(t, p.audit()); ev.Outcome == "ok" {
		t.Errorf("audit says ok for a cut stream")
	}
}

func TestStreamErrorBeforeAnyTextIsAPlainJSONError(t *testing.T) {
	p := newProject(t, projectOpts{})
	p.fake.Enqueue(anthropictest.Error(400, "", "bad"))
	status, _, raw := p.stream("u1", "Hi")
	if status != http.StatusBadGateway || !strings.Contains(raw, `"type":"model_error"`) {
		t.Fatalf("stream: %d %s", status, raw)
	}
}

func TestPromptCacheMarkers(t *testing.T) {
	long := strings.Repeat("You are the support agent of a store with a long policy handbook. ", 80) // about 1,300 tokens
	p := newProject(t, projectOpts{system: long})
	for i := range 3 {
		p.fake.Enqueue(anthropictest.Text("Answer " + string(rune('A'+i))))
		if r := p.chat("u1", "Question "+string(rune('A'+i))); r.status != http.StatusOK {
			t.Fatalf("turn %d: %d %s", i, r.status, r.raw)
		}
	}
	reqs := p.fake.Requests()
	for i, r := range reqs {
		n := 0
		if r.System[0].CacheControl != nil {
			n++
		}
		for _, m := range r.Messages {
			for _, b := range m.Content {
				if b.CacheControl != nil {
					n++
				}
			}
		}
		if r.System[0].CacheControl == nil {
			t.Errorf("request %d: the system prompt is not a breakpoint", i)
		}
		last := r.Messages[len(r.Messages)-1]
		if last.Content[len(last.Content)-1].CacheControl == nil {
			t.Errorf("request %d: the latest message is not a breakpoint", i)
		}
		if n > 4 {
			t.Errorf("request %d: %d breakpoints", i, n)
		}
	}
	// The second and third turns read what the turn before wrote.
	evs := p.audit()
	if evs[0].Usage.CacheReadInputTokens == 0 || evs[1].Usage.CacheReadInputTokens == 0 {
		t.Errorf("no cache reads: %+v / %+v", evs[0].Usage, evs[1].Usage)
	}

	// A short prompt gets no marker: it is under the minimum.
	q := newProject(t, projectOpts{})
	q.fake.Enqueue(anthropictest.Text("Hi"))
	q.chat("u1", "Hi")
	for _, m := range q.fake.Requests()[0].Messages {
		for _, b := range m.Content {
			if b.CacheControl != nil {
				t.Errorf("a breakpoint under the minimum cacheable length")
			}
		}
	}
}

func TestCompactionKeepsThePrefixByteIdentical(t *testing.T) {
	long := strings.Repeat("You are the support agent of a store with a long policy handbook. ", 80)
	p := newProject(t, projectOpts{system: long, agentTOML: `
[agents.memory]
strategy = "compact"
compact_at_tokens = 600
keep_turns = 1
`})
	compactions := 0
	p.fake.SetResponder(func(r anthropictest.Request) anthropictest.Reply {
		if len(r.System) == 1 && r.System[0].Text == memory.DefaultCompactInstructions {
			return anthropictest.Text("The user asked several questions about an order.")
		}
		return anthropictest.Text(strings.Repeat("A helpful, detailed answer. ", 10))
	})
	filler := strings.Repeat("my order has not arrived yet, ", 10)
	var turnReqs []anthropictest.Request
	seen := 0
	compactedBefore := map[int]bool{}
	for turn := range 16 {
		if r := p.chat("u1", filler+string(rune('a'+turn))); r.status != http.StatusOK {
			t.Fatalf("turn %d: %d %s", turn, r.status, r.raw)
		}
		for _, r := range p.fake.Requests()[seen:] {
			if len(r.System) == 1 && r.System[0].Text == memory.DefaultCompactInstructions {
				compactions++
				compactedBefore[len(turnReqs)] = true
				continue
			}
			turnReqs = append(turnReqs, r)
		}
		seen = len(p.fake.Requests())
	}
	if compactions < 2 {
		t.Fatalf("%d compactions, want at least 2", compactions)
	}
	strip := func(r anthropictest.Request) []string {
		var out []string
		for _, m := range r.Messages {
			var blocks []string
			for _, b := range m.Content {
				blocks = append(blocks, b.Type+":"+b.Text)
			}
			out = append(out, m.Role+"|"+strings.Join(blocks, "|"))
		}
		return out
	}
	for i := 1; i < len(turnReqs); i++ {
		if compactedBefore[i] {
			if !strings.HasPrefix(turnReqs[i].Messages[0].Content[0].Text, memory.SummaryHeader) {
				t.Errorf("turn %d after a compaction does not open with the summary", i)
			}
			continue
		}
		prev, cur := strip(turnReqs[i-1]), strip(turnReqs[i])
		if len(cur) != len(prev)+2 {
			t.Fatalf("turn %d: %d messages after %d without a compaction", i, len(cur), len(prev))
		}
		for j := range prev {
			if prev[j] != cur[j] {
				t.Fatalf("turn %d: message %d changed without a compaction:\n%s\n%s", i, j, prev[j], cur[j])
			}
		}
		if turnReqs[i].System[0].Text != turnReqs[i-1].System[0].Text {
			t.Fatalf("turn %d: system changed", i)
		}
	}
	// Compactions are audited and costed like any call.
	n := 0
	for _, ev := range p.audit() {
		if ev.Kind == "compaction" {
			n++
		}
	}
	if n != compactions {
		t.Errorf("%d compaction audit events, %d compactions", n, compactions)
	}
}

// TestRateLimitHoldsExactlyAtItsBound sends 50 messages at once from one
// user against a limit of 10 an hour: exactly 10 are answered.
func TestRateLimitHoldsExactlyAtItsBound(t *testing.T) {
	p := newProject(t, projectOpts{agentTOML: "[agents.limits]\nrate = \"10/h\"\n"})
	p.fake.SetResponder(func(anthropictest.Request) anthropictest.Reply { return anthropictest.Text("ok") })
	results := make(chan response, 50)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { results <- <-p.chatAsync("u1", "message "+string(rune('A'+i%26))) })
	}
	wg.Wait()
	close(results)
	counts := map[int]int{}
	for r := range results {
		counts[r.status]++
		if r.status == http.StatusTooManyRequests && (errorType(r) != "rate_limited" || r.header.Get("Retry-After") == "") {
			t.Errorf("refusal: %v %v", r.body, r.header)
		}
	}
	if counts[http.StatusOK] != 10 || counts[http.StatusTooManyRequests] != 40 {
		t.Fatalf("statuses %v, want 10 answered and 40 refused", counts)
	}
	if h := p.history("u1"); len(h) != 20 {
		t.Errorf("%d stored messages, want 20", len(h))
	}
	// Another user has a limit of their own.
	if r := p.chat("u2", "hi"); r.status != http.StatusOK {
		t.Errorf("u2: %d", r.status)
	}
	// One more is allowed once 6 minutes (1h/10) have passed.
	if r := p.chat("u1", "again"); r.status != http.StatusTooManyRequests {
		t.Errorf("over the limit: %d", r.status)
	}
	p.clock.Advance(6 * time.Minute)
	if r := p.chat("u1", "again"); r.status != http.StatusOK {
		t.Errorf("after the refill: %d %s", r.status, r.raw)
	}
	_, metrics := p.text(http.MethodGet, "/metrics", "")
	if !strings.Contains(metrics, `agentd_rejections_total{agent="support-chat",reason="rate_limited"} 41`) {
		t.Errorf("rejections not counted")
	}
}

// TestTokenBudgetHoldsExactlyAtItsBound sends 50 messages from 50 users at
// once while the model holds its answers: each call reserves its worst
// case (prompt estimate + max_tokens 256), so a budget of 10.5 such calls
// admits exactly 10; the rest get 429 budget_exceeded with the reset.
func TestTokenBudgetHoldsExactlyAtItsBound(t *testing.T) {
	p := newProject(t, projectOpts{agentTOML: "[agents.limits]\ntokens_per_day = 2800\n"})
	release := make(chan struct{})
	p.fake.SetResponder(func(anthropictest.Request) anthropictest.Reply {
		<-release
		return anthropictest.Text("ok")
	})
	results := make(chan response, 50)
	for i := range 50 {
		go func() { results <- <-p.chatAsync("user"+string(rune('a'+i%26))+string(rune('a'+i/26)), "hi") }()
	}
	var refused []response
	for len(refused) < 40 {
		r := <-results
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("a request ended %d before the model answered: %v", r.status, r.body)
		}
		refused = append(refused, r)
	}
	if n := len(p.fake.Requests()); n > 10 {
		t.Fatalf("%d calls reached the model with a budget for 10", n)
	}
	close(release)
	for range 10 {
		if r := <-results; r.status != http.StatusOK {
			t.Fatalf("admitted request: %d %v", r.status, r.body)
		}
	}
	e := refused[0].body["error"].(map[string]any)
	if e["type"] != "budget_exceeded" || e["reset"] != "2026-12-04T00:00:00Z" || refused[0].header.Get("Retry-After") == "" {
		t.Errorf("refusal %v %v", e, refused[0].header)
	}
	// Settled at their real usage (far below the worst case), the calls
	// leave room: the budget admits again, and the day's spend is what
	// the audit says.
	if r := p.chat("late", "hi"); r.status != http.StatusOK {
		t.Errorf("after settling: %d %s", r.status, r.raw)
	}
	// A new day resets it.
	p.clock.Advance(24 * time.Hour)
	if r := p.chat("next-day", "hi"); r.status != http.StatusOK {
		t.Errorf("next day: %d", r.status)
	}
}

func TestUsageReportsTokensAndCost(t *testing.T) {
	p := newProject(t, projectOpts{})
	p.fake.Enqueue(anthropictest.Text("One."), anthropictest.Text("Two."))
	p.chat("u1", "first")
	p.chat("u2", "second")
	r := p.do(http.MethodGet, "/usage?agent=support-chat&from=2026-12-03&to=2026-12-04", "")
	if r.status != http.StatusOK {
		t.Fatalf("usage: %d %s", r.status, r.raw)
	}
	total := r.body["total"].(map[string]any)
	if total["calls"] != float64(2) || total["input_tokens"].(float64) <= 0 || total["cost_nano_usd"].(float64) <= 0 {
		t.Errorf("total %v", total)
	}
	if users, _ := r.body["users"].([]any); len(users) != 2 {
		t.Errorf("users %v", r.body["users"])
	}
	if days, _ := r.body["days"].([]any); len(days) != 1 || days[0].(map[string]any)["day"] != "2026-12-03" {
		t.Errorf("days %v", r.body["days"])
	}
	// The cost is the audit's: sonnet's $3/$15 per million tokens.
	evs := p.audit()
	var want int64
	for _, ev := range evs {
		want += ev.CostNanoUSD
	}
	if int64(total["cost_nano_usd"].(float64)) != want || want != 3000*(evs[0].Usage.InputTokens+evs[1].Usage.InputTokens)+15000*(evs[0].Usage.OutputTokens+evs[1].Usage.OutputTokens) {
		t.Errorf("cost %v, audit %d", total["cost_nano_usd"], want)
	}
	for _, q := range []string{"from=yesterday", "from=2026-12-04&to=2026-12-01"} {
		if r := p.do(http.MethodGet, "/usage?"+q, ""); r.status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", q, r.status, r.raw)
		}
	}
}

// TestClientDisconnectCancelsTheModelCall: a client that goes away while
// the model is answering cancels the upstream call; nothing is stored and
// the audit says the call was cut short.
func TestClientDisconnectCancelsTheModelCall(t *testing.T) {
	p := newProject(t, projectOpts{})
	reached := make(chan struct{})
	p.fake.SetResponder(func(anthropictest.Request) anthropictest.Reply {
		close(reached)
		return anthropictest.Text("too late").WithDelay(time.Hour)
	})
	handled := make(chan struct{})
	h := server.New(p.app.ServerConfig(nil))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(handled)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/agents/support-chat", strings.NewReader(`{"userId":"u1","message":"Hi"}`))
	req.Header.Set("Accept", "text/event-stream")
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-reached
	cancel()
	<-errc
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not end after the client went away: the model call was not cancelled")
	}
	if h := p.history("u1"); len(h) != 0 {
		t.Errorf("stored %v", h)
	}
	ev := lastEvent(t, p.audit())
	if ev.Outcome != "timeout" || ev.Latency >= time.Hour {
		t.Errorf("audit: outcome %s after %s", ev.Outcome, ev.Latency)
	}
}
