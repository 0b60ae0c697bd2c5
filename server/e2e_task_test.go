package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/config"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/server"
)

// example is one of examples/ running over real HTTP from a copy of its
// directory, its model faked at the wire.
type example struct {
	*project
	dir string
}

func newExample(t *testing.T, name string, env map[string]string) *example {
	t.Helper()
	return newExampleWith(t, name, env, config.Options{})
}

// newExampleWith runs an example with options: Dev, say, which without
// ANTHROPIC_API_KEY runs the offline model.
func newExampleWith(t *testing.T, name string, env map[string]string, opts config.Options) *example {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	copyDir(t, filepath.Join("..", "examples", name), dir)
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatalf("config.Load(%s): %v", name, err)
	}
	fake, fakeURL := anthropictest.NewServer(t)
	full := map[string]string{"ANTHROPIC_BASE_URL": fakeURL, "ANTHROPIC_API_KEY": testKey}
	if opts.Dev {
		delete(full, "ANTHROPIC_API_KEY")
	}
	for k, v := range env {
		full[k] = v
	}
	clock := clockwork.NewFakeClockAt(time.Now().UTC().Truncate(time.Second))
	opts.Getenv = func(k string) string { return full[k] }
	opts.Clock = clock
	app, err := config.Open(context.Background(), cfg, opts)
	if err != nil {
		t.Fatalf("config.Open(%s): %v", name, err)
	}
	srv := httptest.NewServer(server.New(app.ServerConfig(nil)))
	t.Cleanup(func() {
		srv.Close()
		if err := app.Close(context.Background()); err != nil {
			t.Errorf("app.Close: %v", err)
		}
	})
	return &example{project: &project{t: t, url: srv.URL, fake: fake, app: app, clock: clock}, dir: dir}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			if d.Name() == ".agentd" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (p *project) post(path, body string, header ...string) response {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.url+path, strings.NewReader(body))
	if err != nil {
		p.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		p.t.Fatalf("POST %s: response is not a JSON object: %q", path, raw)
	}
	return r
}

func (p *project) query(sql string, args ...any) [][]any {
	p.t.Helper()
	rows, err := p.app.DB.Query(agentd.WithoutQueryCache(context.Background()), sql, args...)
	if err != nil {
		p.t.Fatalf("%s: %v", sql, err)
	}
	return rows.Values
}

func triageAnswer(confidence float64) anthropictest.Reply {
	return anthropictest.ToolUse(agent.RespondTool, map[string]any{
		"draftResponse": "I'm sorry your order is late — I have escalated it with the courier.", "sentiment": "negative", "confidence": confidence})
}

func TestExampleTicketTriage(t *testing.T) {
	p := newExample(t, "ticket-triage", nil)

	// Seeded tickets; a confident decision moves the ticket along.
	p.fake.Enqueue(triageAnswer(0.95))
	r := p.post("/agents/ticket-triage", `{"ticketId":"T-1001"}`)
	if r.status != http.StatusOK {
		t.Fatalf("triage: %d %s", r.status, r.raw)
	}
	for _, k := range []string{"ticketId", "draftResponse", "sentiment", "confidence", "timestamp"} {
		if _, ok := r.body[k]; !ok {
			t.Errorf("response lacks %q: %s", k, r.raw)
		}
	}
	if r.body["ticketId"] != "T-1001" || r.header.Get("Agentd-Decision-Id") == "" || r.header.Get("Agentd-Status") != "applied" {
		t.Errorf("response %s, headers %v", r.raw, r.header)
	}
	if got := p.query(`SELECT status FROM tickets WHERE id = 'T-1001'`); got[0][0] != "in_progress" {
		t.Errorf("T-1001 status %v", got[0][0])
	}
	if e, err := p.app.KV.Get(context.Background(), "ticket-state:T-1001"); err != nil || !bytes.Contains(e.Value, []byte("draftResponse")) {
		t.Errorf("ticket-state in KV: %v", err)
	}
	// The prompt held the ticket and the customer's other tickets.
	if prompt := p.fake.Requests()[0].LastUserText(); !strings.Contains(prompt, "Order has not arrived") || !strings.Contains(prompt, "T-1004") {
		t.Errorf("prompt %q", prompt)
	}

	// A repeat makes no model call and returns the same decision.
	again := p.post("/agents/ticket-triage", `{"ticketId":"T-1001"}`)
	if again.raw != r.raw || again.header.Get("Idempotent-Replayed") != "true" || len(p.fake.Requests()) != 1 {
		t.Errorf("repeat: %s (replayed %q), %d model calls", again.raw, again.header.Get("Idempotent-Replayed"), len(p.fake.Requests()))
	}

	// An unsure decision waits for review; approving applies it once.
	p.fake.Enqueue(triageAnswer(0.5))
	r = p.post("/agents/ticket-triage", `{"ticketId":"T-1002"}`)
	reviewID := r.header.Get("Agentd-Review-Id")
	if r.status != http.StatusOK || r.body["review"] != "pending" || reviewID == "" {
		t.Fatalf("unsure: %d %s", r.status, r.raw)
	}
	if got := p.query(`SELECT status FROM tickets WHERE id = 'T-1002'`); got[0][0] != "open" {
		t.Errorf("T-1002 changed before review: %v", got[0][0])
	}
	list := p.do(http.MethodGet, "/reviews?agent=ticket-triage&status=pending", "")
	if reviews, _ := list.body["reviews"].([]any); list.status != http.StatusOK || len(reviews) != 1 {
		t.Fatalf("pending reviews: %d %s", list.status, list.raw)
	}
	detail := p.do(http.MethodGet, "/reviews/"+reviewID, "")
	if detail.status != http.StatusOK || !strings.Contains(detail.raw, `"decision":{`) {
		t.Errorf("review detail: %d %s", detail.status, detail.raw)
	}
	if bad := p.post("/reviews/"+reviewID+"/approve", `{}`); bad.status != http.StatusBadRequest || errorType(bad) != "invalid_request" {
		t.Errorf("approve without a reviewer: %d %s", bad.status, bad.raw)
	}
	ok := p.post("/reviews/"+reviewID+"/approve", `{"reviewer":"alice","note":"fine"}`)
	if ok.status != http.StatusOK || !strings.Contains(ok.raw, `"reviewer":"alice"`) || !strings.Contains(ok.raw, `"status":"applied"`) {
		t.Fatalf("approve: %d %s", ok.status, ok.raw)
	}
	if _, err := p.app.KV.Get(context.Background(), "ticket-state:T-1002"); err != nil {
		t.Errorf("approved effect not applied: %v", err)
	}
	if twice := p.post("/reviews/"+reviewID+"/approve", `{"reviewer":"bob"}`); twice.status != http.StatusConflict {
		t.Errorf("second approve: %d %s", twice.status, twice.raw)
	}

	// Reject, then approve the rejected item: 409.
	p.fake.Enqueue(triageAnswer(0.3))
	r = p.post("/agents/ticket-triage", `{"ticketId":"T-1003"}`)
	rid := r.header.Get("Agentd-Review-Id")
	if rj := p.post("/reviews/"+rid+"/reject", `{"reviewer":"carol"}`); rj.status != http.StatusBadRequest {
		t.Errorf("reject without a reason: %d", rj.status)
	}
	if rj := p.post("/reviews/"+rid+"/reject", `{"reviewer":"carol","reason":"tone"}`); rj.status != http.StatusOK {
		t.Errorf("reject: %d %s", rj.status, rj.raw)
	}
	if ap := p.post("/reviews/"+rid+"/approve", `{"reviewer":"alice"}`); ap.status != http.StatusConflict {
		t.Errorf("approving a rejected item: %d %s", ap.status, ap.raw)
	}

	// Bad input: 400 listing every violation; unknown ticket: 404 naming the source.
	bad := p.post("/agents/ticket-triage", `{"ticketId":"1001","extra":true}`)
	if bad.status != http.StatusBadRequest || !strings.Contains(bad.raw, `"violations":[`) || !strings.Contains(bad.raw, "extra") || !strings.Contains(bad.raw, "/ticketId") {
		t.Errorf("bad input: %d %s", bad.status, bad.raw)
	}
	missing := p.post("/agents/ticket-triage", `{"ticketId":"T-9999"}`)
	if missing.status != http.StatusNotFound || !strings.Contains(missing.raw, `\"ticket\"`) {
		t.Errorf("unknown ticket: %d %s", missing.status, missing.raw)
	}
	if unknown := p.do(http.MethodGet, "/reviews/nope", ""); unknown.status != http.StatusNotFound {
		t.Errorf("unknown review: %d", unknown.status)
	}
}

func TestExampleTicketTriageInvalidOutputChangesNothing(t *testing.T) {
	p := newExample(t, "ticket-triage", nil)
	bad := anthropictest.ToolUse(agent.RespondTool, map[string]any{"draftResponse": "x", "sentiment": "furious", "confidence": 0.99})
	p.fake.Enqueue(bad, bad)
	r := p.post("/agents/ticket-triage", `{"ticketId":"T-1005"}`)
	if r.status != http.StatusBadGateway || errorType(r) != "invalid_model_output" || !strings.Contains(r.raw, "/sentiment") {
		t.Fatalf("invalid output: %d %s", r.status, r.raw)
	}
	if got := p.query(`SELECT status FROM tickets WHERE id = 'T-1005'`); got[0][0] != "open" {
		t.Errorf("SQL changed: %v", got[0][0])
	}
	if _, err := p.app.KV.Get(context.Background(), "ticket-state:T-1005"); agentd.KindOf(err) != agentd.KindNotFound {
		t.Errorf("KV written: %v", err)
	}
	if len(p.fake.Requests()) != 2 {
		t.Errorf("%d model calls, want the answer and one repair", len(p.fake.Requests()))
	}
}

func TestExampleTicketTriageConcurrentDuplicates(t *testing.T) {
	p := newExample(t, "ticket-triage", nil)
	p.fake.SetResponder(func(anthropictest.Request) anthropictest.Reply { return triageAnswer(0.95) })
	var wg sync.WaitGroup
	ids := make([]string, 20)
	for i := range ids {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, p.url+"/agents/ticket-triage", strings.NewReader(`{"ticketId":"T-1006"}`))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status %d", resp.StatusCode)
			}
			ids[i] = resp.Header.Get("Agentd-Decision-Id")
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || id == "" {
			t.Fatalf("decision ids %v", ids)
		}
	}
	if n := len(p.fake.Requests()); n != 1 {
		t.Errorf("%d model calls for 20 duplicates, want 1", n)
	}
}

func TestExampleContractQA(t *testing.T) {
	p := newExample(t, "contract-qa", nil)
	p.fake.Enqueue(anthropictest.ToolUse(agent.RespondTool, map[string]any{"answer": "Yes: clause 4 allows refunds within 30 days."}))
	r := p.post("/agents/contract-qa", `{"customerId":"C-1001","question":"Can I get a refund after 20 days?"}`)
	if r.status != http.StatusOK || r.body["answer"] != "Yes: clause 4 allows refunds within 30 days." {
		t.Fatalf("answer: %d %s", r.status, r.raw)
	}
	// The contract reached the model as a PDF document block, byte for
	// byte; the FAQ as text, first.
	pdf, err := os.ReadFile(filepath.Join(p.dir, "data", "contracts", "C-1001.pdf"))
	if err != nil {
		t.Fatal(err)
	}
	content := p.fake.Requests()[0].Messages[0].Content
	var doc *anthropictest.ContentBlock
	for i := range content {
		if content[i].Type == "document" {
			doc = &content[i]
		}
	}
	if doc == nil || doc.Source.MediaType != "application/pdf" {
		t.Fatalf("no PDF document block in %+v", content)
	}
	if got, _ := doc.Source.Bytes(); !bytes.Equal(got, pdf) {
		t.Errorf("the PDF sent differs from the contract (%d vs %d bytes)", len(got), len(pdf))
	}
	if content[0].Type != "text" || !strings.Contains(content[0].Text, "Frequently asked questions") {
		t.Errorf("first block %+v, want the FAQ", content[0])
	}
	missing := p.post("/agents/contract-qa", `{"customerId":"C-9999","question":"Hello?"}`)
	if missing.status != http.StatusNotFound || !strings.Contains(missing.raw, "contracts/C-9999.pdf") {
		t.Errorf("missing contract: %d %s", missing.status, missing.raw)
	}
}

func TestExampleRefund(t *testing.T) {
	// The refund webhook goes to a receiver of the test's, allowed by the
	// environment as a deployment would.
	var mu sync.Mutex
	var hooks []*http.Request
	var bodies []map[string]any
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		_ = json.NewDecoder(r.Body).Decode(&b)
		mu.Lock()
		hooks = append(hooks, r)
		bodies = append(bodies, b)
		mu.Unlock()
	}))
	t.Cleanup(sink.Close)
	p := newExample(t, "refund", map[string]string{
		"AGENTD_VAR_REFUND_URL":         sink.URL + "/refunds",
		"AGENTD_OUTBOUND_ALLOW":         sink.URL + "/",
		"AGENTD_OUTBOUND_ALLOW_PRIVATE": "127.0.0.1",
	})

	// O-2004 is 45 days old: refused by the precondition, no model call.
	r := p.post("/agents/refund", `{"orderId":"O-2004","reason":"Too small."}`)
	if r.status != http.StatusOK || r.body["decision"] != "reject" || r.body["source"] != "precondition" {
		t.Fatalf("old order: %d %s", r.status, r.raw)
	}
	if n := len(p.fake.Requests()); n != 0 {
		t.Errorf("%d model calls for an order past the window", n)
	}

	// O-2001 is recent: the model approves; the webhook gets it once, with
	// an Idempotency-Key, and the order is marked.
	p.fake.Enqueue(anthropictest.ToolUse(agent.RespondTool, map[string]any{"decision": "approve", "amount": 89.9, "reason": "Defective item.", "confidence": 0.95}))
	r = p.post("/agents/refund", `{"orderId":"O-2001","reason":"It stopped working after a week."}`)
	if r.status != http.StatusOK || r.body["decision"] != "approve" || r.header.Get("Agentd-Status") != "applied" {
		t.Fatalf("refund: %d %s", r.status, r.raw)
	}
	mu.Lock()
	if len(hooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(hooks))
	}
	key := hooks[0].Header.Get("Idempotency-Key")
	if want := agent.IdempotencyKey(r.header.Get("Agentd-Decision-Id"), 0); key != want {
		t.Errorf("Idempotency-Key %q, want %q", key, want)
	}
	if bodies[0]["orderId"] != "O-2001" || bodies[0]["amount"] != 89.9 {
		t.Errorf("webhook body %v", bodies[0])
	}
	mu.Unlock()
	if got := p.query(`SELECT status FROM orders WHERE id = 'O-2001'`); got[0][0] != "refunded" {
		t.Errorf("order status %v", got[0][0])
	}
	// The policy came from the blob store, the order from SQL.
	if prompt := p.fake.Requests()[0]; !strings.Contains(prompt.LastUserText(), "Blender") || !strings.Contains(prompt.Messages[0].Content[0].Text, "Refund policy") {
		t.Errorf("prompt %+v", prompt.Messages[0].Content)
	}
}

func TestExampleRefundOutboundPolicyRefusesUnlistedURLs(t *testing.T) {
	sink := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("a refused webhook was sent") }))
	t.Cleanup(sink.Close)
	// The URL points at the sink, but the allowlist does not include it.
	p := newExample(t, "refund", map[string]string{"AGENTD_VAR_REFUND_URL": sink.URL + "/refunds"})
	p.fake.Enqueue(anthropictest.ToolUse(agent.RespondTool, map[string]any{"decision": "approve", "amount": 10.0, "reason": "ok", "confidence": 0.99}))
	r := p.post("/agents/refund", `{"orderId":"O-2001","reason":"Broken."}`)
	if r.status != http.StatusBadGateway || errorType(r) != "effect_failed" {
		t.Fatalf("unlisted webhook: %d %s", r.status, r.raw)
	}
	if got := p.query(`SELECT status FROM orders WHERE id = 'O-2001'`); got[0][0] != "delivered" {
		t.Errorf("the SQL effect after the refused webhook ran: %v", got[0][0])
	}
}

// TestExamplesRunOffline runs each task example as agentd dev does without
// a key: the offline model answers the forced tool call with a value
// synthesized from the output schema, so the whole loop works.
func TestExamplesRunOffline(t *testing.T) {
	tests := []struct {
		name, body string
		check      func(r response) bool
	}{
		{"ticket-triage", `{"ticketId":"T-1003"}`, func(r response) bool {
			return r.body["confidence"] == 0.5 && r.body["review"] == "pending" && r.body["source"] == "model"
		}},
		{"contract-qa", `{"customerId":"C-1001","question":"What is my SLA?"}`, func(r response) bool {
			s, _ := r.body["answer"].(string)
			return strings.HasPrefix(s, "Offline answer:")
		}},
		{"refund", `{"orderId":"O-2004","reason":"Too late?"}`, func(r response) bool { return r.body["source"] == "precondition" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newExampleWith(t, tt.name, nil, config.Options{Dev: true})
			if p.app.ModelMode != config.ModelOffline {
				t.Fatalf("model mode %s", p.app.ModelMode)
			}
			r := p.post("/agents/"+tt.name, tt.body)
			if r.status != http.StatusOK || !tt.check(r) {
				t.Fatalf("%d %s", r.status, r.raw)
			}
		})
	}
	// The dev webhook sink records what a webhook effect sends.
	p := newExampleWith(t, "refund", nil, config.Options{Dev: true})
	sink := p.post("/_dev/webhooks/refunds", `{"orderId":"O-1"}`, "Idempotency-Key", "k1")
	if sink.status != http.StatusOK {
		t.Fatalf("sink: %d %s", sink.status, sink.raw)
	}
	got := p.do(http.MethodGet, "/_dev/webhooks/refunds", "")
	if !strings.Contains(got.raw, `"idempotencyKey":"k1"`) || !strings.Contains(got.raw, `"orderId":"O-1"`) {
		t.Errorf("sink listing: %s", got.raw)
	}
}

// TestTaskHTTPSourcesAreAllowlistedAndConcurrent runs a task agent whose
// context comes from two HTTP APIs: both are fetched at once (the API
// answers only when both requests are in), their JSON reaches the prompt,
// a missing record is a 404 naming its source, and a URL outside
// [outbound] allow is refused without a request.
func TestTaskHTTPSourcesAreAllowlistedAndConcurrent(t *testing.T) {
	both := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	seen := 0
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "missing") {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		seen++
		if seen%2 == 0 {
			once.Do(func() { close(both) })
		}
		mu.Unlock()
		select {
		case <-both:
		case <-time.After(10 * time.Second):
			http.Error(w, "the other source never came: fetched one after the other", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"tier":"gold"}`, r.URL.Path)
	}))
	t.Cleanup(api.Close)

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "agentd.toml"), fmt.Sprintf(`name = "http"
[vars]
api = %q
[outbound]
allow = [%q]
allow_private = ["127.0.0.1"]
[[agents]]
name = "lookup"
kind = "task"
output = "out.json"
prompt = "prompt.md"
[[agents.context]]
name = "customer"
http = "{{.vars.api}}/customers/{{.customerId}}"
required = true
attach = true
[[agents.context]]
name = "orders"
http = "{{.vars.api}}/orders?customer={{.customerId}}"
[[agents.context]]
name = "elsewhere"
http = "{{.elsewhere}}"
`, api.URL, api.URL+"/"))
	writeFile(t, filepath.Join(dir, "out.json"), `{"type":"object","required":["answer"],"properties":{"answer":{"type":"string"}}}`)
	writeFile(t, filepath.Join(dir, "prompt.md"), "Tier {{.context.customer.tier}}; orders from {{.context.orders.path}}.")
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	fake, fakeURL := anthropictest.NewServer(t)
	env := map[string]string{"ANTHROPIC_API_KEY": testKey, "ANTHROPIC_BASE_URL": fakeURL}
	app, err := config.Open(context.Background(), cfg, config.Options{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close(context.Background()) })
	srv := httptest.NewServer(server.New(app.ServerConfig(nil)))
	t.Cleanup(srv.Close)
	p := &project{t: t, url: srv.URL, fake: fake, app: app}

	fake.Enqueue(anthropictest.ToolUse(agent.RespondTool, map[string]any{"answer": "gold"}))
	r := p.post("/agents/lookup", fmt.Sprintf(`{"customerId":"C-1","elsewhere":%q}`, api.URL+"/ok"))
	if r.status != http.StatusOK || r.body["answer"] != "gold" {
		t.Fatalf("lookup: %d %s", r.status, r.raw)
	}
	req := fake.Requests()[0]
	if text := req.LastUserText(); !strings.Contains(text, "Tier gold; orders from /orders") {
		t.Errorf("prompt %q", text)
	}
	if first := req.Messages[0].Content[0]; first.Type != "text" || !strings.Contains(first.Text, `"tier": "gold"`) {
		t.Errorf("the attached customer source: %+v", first)
	}

	missing := p.post("/agents/lookup", fmt.Sprintf(`{"customerId":"missing","elsewhere":%q}`, api.URL+"/ok"))
	if missing.status != http.StatusNotFound || !strings.Contains(missing.raw, `\"customer\"`) {
		t.Errorf("missing customer: %d %s", missing.status, missing.raw)
	}
	// A URL the allowlist does not cover is refused before any request,
	// and so is the metadata address, whatever the allowlist says.
	for _, u := range []string{"http://example.com/x", "http://169.254.169.254/latest/meta-data/"} {
		r := p.post("/agents/lookup", fmt.Sprintf(`{"customerId":"C-1","elsewhere":%q}`, u))
		if r.status != http.StatusForbidden || errorType(r) != "permission_error" {
			t.Errorf("%s: %d %s", u, r.status, r.raw)
		}
	}
}
