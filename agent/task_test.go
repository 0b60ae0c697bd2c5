package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/coord"
	"github.com/agentd/agentd/decision"
	"github.com/agentd/agentd/model/anthropic"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/store/bolt"
	"github.com/agentd/agentd/store/fsblob"
	"github.com/agentd/agentd/store/migrate"
	"github.com/agentd/agentd/store/sqlite"
	"github.com/agentd/agentd/telemetry"
)

// taskEnv is a task agent's world: real embedded stores, the model faked
// at the wire, a webhook receiver that records what it got.
type taskEnv struct {
	t       *testing.T
	fake    *anthropictest.Fake
	model   agentd.Model
	db      agentd.DB
	kv      agentd.KV
	blob    agentd.Blob
	store   *decision.Store
	locks   coord.Locker
	clock   *clockwork.FakeClock
	hooks   *webhookSink
	hookURL string
}

type webhookSink struct {
	mu       sync.Mutex
	requests []hookRequest
	fail     int // answer 500 to this many requests first
}

type hookRequest struct {
	header http.Header
	body   map[string]any
}

func (s *webhookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var body map[string]any
	_ = json.Unmarshal(b, &body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		s.fail--
		http.Error(w, "down", http.StatusInternalServerError)
		return
	}
	s.requests = append(s.requests, hookRequest{header: r.Header.Clone(), body: body})
}

func (s *webhookSink) received() []hookRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hookRequest(nil), s.requests...)
}

func newTaskEnv(t *testing.T) *taskEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC))
	db, err := sqlite.Open(ctx, filepath.Join(dir, "agentd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := migrate.Apply(ctx, db, migrate.Runtime()); err != nil {
		t.Fatal(err)
	}
	kv, err := bolt.Open(filepath.Join(dir, "kv.db"), bolt.WithSweepInterval(0), bolt.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kv.Close() })
	blob, err := fsblob.Open(filepath.Join(dir, "blob"), fsblob.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = blob.Close() })
	fake := anthropictest.New()
	model, err := anthropic.New(anthropic.Config{APIKey: "test", BaseURL: "http://fake.invalid", HTTPClient: fake.HTTPClient(), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	sink := &webhookSink{}
	srv := httptest.NewServer(sink)
	t.Cleanup(srv.Close)
	return &taskEnv{t: t, fake: fake, model: model, db: db, kv: kv, blob: blob, store: decision.New(db, clock),
		locks: coord.NewLocal(), clock: clock, hooks: sink, hookURL: srv.URL}
}

func (e *taskEnv) task(cfg agent.TaskConfig) *agent.Task {
	e.t.Helper()
	if cfg.Name == "" {
		cfg.Name = "triage"
	}
	if cfg.Model == "" {
		cfg.Model = "claude-sonnet-4-6"
	}
	pricing, err := telemetry.NewPricing(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	task, err := agent.NewTask(cfg, agent.TaskDeps{
		Telemetry: agent.Telemetry{Pricing: pricing},
		Model:     e.model,
		Sources:   agent.SourceDeps{KV: e.kv, Blob: e.blob, DB: e.db, HTTP: http.DefaultClient},
		Effects:   agent.EffectDeps{KV: e.kv, Decisions: e.store, Locks: e.locks, HTTP: http.DefaultClient, Clock: e.clock},
		Clock:     e.clock,
	})
	if err != nil {
		e.t.Fatalf("NewTask: %v", err)
	}
	return task
}

func (e *taskEnv) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *taskEnv) query(sql string, args ...any) [][]any {
	e.t.Helper()
	rows, err := e.db.Query(context.Background(), sql, args...)
	if err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return rows.Values
}

func mustSchema(t *testing.T, doc string) *agent.Schema {
	t.Helper()
	s, err := agent.CompileSchema("test.json", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustCond(t *testing.T, src string) *agent.Expr {
	t.Helper()
	e, err := agent.CompileCondition(src)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func mustValue(t *testing.T, src string) *agent.Expr {
	t.Helper()
	e, err := agent.CompileValue(src)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func tmpl(src string) *agent.Template { return agent.MustParseTemplate("test", src) }

const triageInput = `{"type":"object","required":["ticketId"],"additionalProperties":false,
	"properties":{"ticketId":{"type":"string","pattern":"^T-[0-9]+$"}}}`

const triageOutput = `{"type":"object","required":["draftResponse","sentiment","confidence"],"additionalProperties":false,
	"properties":{"draftResponse":{"type":"string","minLength":1},
	"sentiment":{"enum":["positive","neutral","negative"]},
	"confidence":{"type":"number","minimum":0,"maximum":1}}}`

// triage is the ticket-triage agent of the Workers article, declared.
func (e *taskEnv) triage(mod func(*agent.TaskConfig)) *agent.Task {
	e.t.Helper()
	e.exec(`CREATE TABLE IF NOT EXISTS tickets (id TEXT PRIMARY KEY, subject TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL)`)
	e.exec(`INSERT INTO tickets (id, subject, body, status) VALUES ('T-1001', 'Late order', 'My order has not arrived.', 'open') ON CONFLICT DO NOTHING`)
	t := e.t
	cfg := agent.TaskConfig{
		Input:  mustSchema(t, triageInput),
		Output: mustSchema(t, triageOutput),
		System: tmpl("You triage support tickets."),
		Prompt: tmpl("Ticket {{.context.ticket.id}}: {{.context.ticket.subject}}\n{{.context.ticket.body}}"),
		Sources: []agent.Source{{Name: "ticket", Kind: agent.SourceSQL, Required: true,
			Query: "SELECT id, subject, body, status FROM tickets WHERE id = $1", Args: []*agent.Expr{mustValue(t, "input.ticketId")}}},
		IdempotencyKey: tmpl("ticket-state:{{.ticketId}}"),
		Effects: []agent.Effect{
			{Name: "status", Kind: agent.EffectSQL, When: mustCond(t, "output.confidence >= 0.9"),
				SQL: "UPDATE tickets SET status = 'in_progress' WHERE id = $1", Args: []*agent.Expr{mustValue(t, "input.ticketId")}},
			{Name: "state", Kind: agent.EffectKV, Key: tmpl("ticket-state:{{.ticketId}}"), Value: tmpl("{{json .output}}")},
			{Name: "notify", Kind: agent.EffectHTTP, URL: tmpl(e.hookURL + "/tickets")},
		},
		Review:   &agent.ReviewRule{When: mustCond(t, "output.confidence < 0.9"), Reason: "low confidence"},
		Response: mustValue(t, `{"ticketId": input.ticketId, "draftResponse": output.draftResponse, "sentiment": output.sentiment, "confidence": output.confidence, "timestamp": decision.at}`),
	}
	if mod != nil {
		mod(&cfg)
	}
	return e.task(cfg)
}

func confident() anthropictest.Reply {
	return anthropictest.ToolUse(agent.RespondTool, map[string]any{"draftResponse": "Sorry — it ships today.", "sentiment": "negative", "confidence": 0.95})
}

func unsure() anthropictest.Reply {
	return anthropictest.ToolUse(agent.RespondTool, map[string]any{"draftResponse": "Let me check.", "sentiment": "neutral", "confidence": 0.4})
}

func run(t *testing.T, task *agent.Task, input string) (*agent.TaskResult, error) {
	t.Helper()
	return task.Run(context.Background(), agent.TaskRequest{Input: json.RawMessage(input)})
}

func body(t *testing.T, res *agent.TaskResult) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(res.Response, &m); err != nil {
		t.Fatalf("response %s: %v", res.Response, err)
	}
	return m
}

func TestTaskDecidesAppliesEffectsAndAnswersTheContract(t *testing.T) {
	e := newTaskEnv(t)
	task := e.triage(nil)
	e.fake.Enqueue(confident())
	res, err := run(t, task, `{"ticketId":"T-1001"}`)
	if err != nil {
		t.Fatal(err)
	}
	b := body(t, res)
	for _, k := range []string{"ticketId", "draftResponse", "sentiment", "confidence", "timestamp"} {
		if _, ok := b[k]; !ok {
			t.Errorf("response %s lacks %q", res.Response, k)
		}
	}
	if b["ticketId"] != "T-1001" || b["source"] != agent.SourceModel || res.Status != decision.StatusApplied {
		t.Errorf("response %s, status %s", res.Response, res.Status)
	}
	// The request: forced respond tool with the output schema, the ticket
	// from SQL in the prompt.
	reqs := e.fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d model requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.ToolChoice == nil || r.ToolChoice.Type != "tool" || r.ToolChoice.Name != agent.RespondTool || len(r.Tools) != 1 {
		t.Fatalf("tool choice %+v, tools %d", r.ToolChoice, len(r.Tools))
	}
	if !strings.Contains(r.LastUserText(), "Late order") {
		t.Errorf("prompt %q lacks the ticket", r.LastUserText())
	}
	// Effects: status updated, KV state written, webhook sent once.
	if got := e.query(`SELECT status FROM tickets WHERE id = 'T-1001'`); got[0][0] != "in_progress" {
		t.Errorf("ticket status %v", got[0][0])
	}
	if _, err := e.kv.Get(context.Background(), "ticket-state:T-1001"); err != nil {
		t.Errorf("KV state: %v", err)
	}
	hooks := e.hooks.received()
	if len(hooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(hooks))
	}
	if got, want := hooks[0].header.Get("Idempotency-Key"), agent.IdempotencyKey(res.DecisionID, 2); got != want {
		t.Errorf("Idempotency-Key %q, want %q", got, want)
	}
	if hooks[0].body["decisionId"] != res.DecisionID {
		t.Errorf("webhook body %v", hooks[0].body)
	}
	// The audit: the decision with context references, not documents.
	rec, err := e.store.Get(context.Background(), res.DecisionID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rec.ContextRefs), `"sql":"SELECT id`) || strings.Contains(string(rec.ContextRefs), "has not arrived") {
		t.Errorf("context refs %s", rec.ContextRefs)
	}
	if rec.Usage.InputTokens == 0 || rec.Steps != 1 {
		t.Errorf("usage %+v steps %d", rec.Usage, rec.Steps)
	}
	if want := 3000*rec.Usage.InputTokens + 15000*rec.Usage.OutputTokens; rec.CostNanoUSD != want {
		t.Errorf("decision cost %d nanodollars, want %d at sonnet's prices", rec.CostNanoUSD, want)
	}
}

func TestTaskInputViolationsAreAllListed(t *testing.T) {
	e := newTaskEnv(t)
	task := e.task(agent.TaskConfig{
		Input:  mustSchema(t, `{"type":"object","required":["a","b"],"properties":{"a":{"type":"string"},"b":{"type":"integer","minimum":1}}}`),
		Output: mustSchema(t, `{"type":"object"}`),
		Prompt: tmpl("x"),
	})
	_, err := run(t, task, `{"b":0}`)
	ae := agentd.AsError(err)
	if ae.Kind != agentd.KindInvalid || len(ae.Violations) != 2 {
		t.Fatalf("err %v, violations %q", err, ae.Violations)
	}
	joined := strings.Join(ae.Violations, "\n")
	if !strings.Contains(joined, "a") || !strings.Contains(joined, "/b") {
		t.Errorf("violations %q", ae.Violations)
	}
	if n := len(e.fake.Requests()); n != 0 {
		t.Errorf("%d model calls for invalid input", n)
	}
}

func TestTaskRepairsAnInvalidAnswerOnce(t *testing.T) {
	e := newTaskEnv(t)
	task := e.triage(nil)
	bad := anthropictest.ToolUse(agent.RespondTool, map[string]any{"draftResponse": "", "sentiment": "angry", "confidence": 7})
	e.fake.Enqueue(bad, confident())
	res, err := run(t, task, `{"ticketId":"T-1001"}`)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != decision.StatusApplied {
		t.Errorf("status %s", res.Status)
	}
	reqs := e.fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d model calls, want 2", len(reqs))
	}
	// The repair carries the model's answer and every violation as the
	// tool's error result.
	last := reqs[1].Messages[len(reqs[1].Messages)-1]
	if len(last.Content) != 1 || last.Content[0].Type != "tool_result" || !last.Content[0].IsError {
		t.Fatalf("repair message %+v", last)
	}
	feedback := last.Content[0].Content[0].Text
	for _, want := range []string{"/draftResponse", "/sentiment", "/confidence"} {
		if !strings.Contains(feedback, want) {
			t.Errorf("feedback %q lacks %s", feedback, want)
		}
	}
}

func TestTaskInvalidAfterRepairAppliesNothing(t *testing.T) {
	e := newTaskEnv(t)
	task := e.triage(nil)
	bad := anthropictest.ToolUse(agent.RespondTool, map[string]any{"draftResponse": "ok", "sentiment": "angry", "confidence": 0.99})
	e.fake.Enqueue(bad, bad)
	_, err := run(t, task, `{"ticketId":"T-1001"}`)
	ae := agentd.AsError(err)
	if ae.Kind != agentd.KindInvalidModelOutput || ae.Kind.HTTPStatus() != http.StatusBadGateway || len(ae.Violations) == 0 {
		t.Fatalf("err %v (kind %s), violations %q", err, ae.Kind, ae.Violations)
	}
	if !strings.Contains(ae.Message, "/sentiment") {
		t.Errorf("message %q does not name the violation", ae.Message)
	}
	if got := e.query(`SELECT status FROM tickets WHERE id = 'T-1001'`); got[0][0] != "open" {
		t.Errorf("ticket changed to %v", got[0][0])
	}
	if _, err := e.kv.Get(context.Background(), "ticket-state:T-1001"); agentd.KindOf(err) != agentd.KindNotFound {
		t.Errorf("KV written: %v", err)
	}
	if n := len(e.hooks.received()); n != 0 {
		t.Errorf("%d webhooks sent", n)
	}
	if n := e.query(`SELECT count(*) FROM decisions`)[0][0]; n != int64(0) {
		t.Errorf("%v decisions recorded", n)
	}
}

func TestTaskIdempotentRepeatCallsNoModel(t *testing.T) {
	e := newTaskEnv(t)
	task := e.triage(nil)
	e.fake.Enqueue(confident())
	first, err := run(t, task, `{"ticketId":"T-1001"}`)
	if err != nil {
		t.Fatal(err)
	}
	second, err := run(t, task, `{"ticketId":"T-1001"}`)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Replayed || second.DecisionID != first.DecisionID || !bytes.Equal(second.Response, first.Response) {
		t.Errorf("repeat %+v, first %+v", second, first)
	}
	if n := len(e.fake.Requests()); n != 1 {
		t.Errorf("%d model calls, want 1", n)
	}
	if n := len(e.hooks.received()); n != 1 {
		t.Errorf("%d webhooks, want 1", n)
	}
}

func TestTaskConcurrentDuplicatesDecideOnce(t *testing.T) {
	e := newTaskEnv(t)
	task := e.triage(nil)
	e.fake.SetResponder(func(anthropictest.Request) anthropictest.Reply { return confident() })
	const n = 20
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			res, err := run(t, task, `{"ticketId":"T-1001"}`)
			errs[i] = err
			if err == nil {
				ids[i] = res.DecisionID
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("request %d got decision %s, request 0 %s", i, ids[i], ids[0])
		}
	}
	if got := len(e.fake.Requests()); got != 1 {
		t.Errorf("%d model calls, want 1", got)
	}
	if got := len(e.hooks.received()); got != 1 {
		t.Errorf("%d webhooks, want 1", got)
	}
}

// A failed effect stands for a crash between the decision and its
// effects: the decision is recorded, the effect pending; the retry applies
// what is pending, once, without asking the model again.
func TestTaskRetryAfterAFailedEffectAppliesItOnce(t *testing.T) {
	e := newTaskEnv(t)
	task := e.triage(nil)
	e.hooks.fail = 1
	e.fake.Enqueue(confident())
	_, err := run(t, task, `{"ticketId":"T-1001"}`)
	if agentd.KindOf(err) != agentd.KindEffectFailed {
		t.Fatalf("first run: %v, want effect_failed", err)
	}
	// The SQL and KV effects before the webhook are applied already.
	if got := e.query(`SELECT status FROM tickets WHERE id = 'T-1001'`); got[0][0] != "in_progress" {
		t.Errorf("ticket status %v", got[0][0])
	}
	// Make the SQL effect non-idempotent to prove it does not run twice.
	e.exec(`UPDATE tickets SET status = 'touched-by-hand' WHERE id = 'T-1001'`)
	res, err := run(t, task, `{"ticketId":"T-1001"}`)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !res.Replayed || res.Status != decision.StatusApplied {
		t.Errorf("retry %+v", res)
	}
	if got := e.query(`SELECT status FROM tickets WHERE id = 'T-1001'`); got[0][0] != "touched-by-hand" {
		t.Errorf("the SQL effect ran again: status %v", got[0][0])
	}
	if n := len(e.hooks.received()); n != 1 {
		t.Errorf("%d webhooks delivered, want 1", n)
	}
	if n := len(e.fake.Requests()); n != 1 {
		t.Errorf("%d model calls, want 1", n)
	}
	rec, _ := e.store.Get(context.Background(), res.DecisionID)
	if rec.Effects[2].Attempts != 2 || rec.Effects[2].Status != decision.EffectApplied {
		t.Errorf("webhook effect %+v", rec.Effects[2])
	}
}

func TestTaskReviewHoldsEffectsUntilApproved(t *testing.T) {
	e := newTaskEnv(t)
	task := e.triage(nil)
	e.fake.Enqueue(unsure())
	res, err := run(t, task, `{"ticketId":"T-1001"}`)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != decision.StatusReview || res.ReviewID == "" || body(t, res)["review"] != "pending" {
		t.Fatalf("result %+v %s", res, res.Response)
	}
	if n := len(e.hooks.received()); n != 0 {
		t.Fatalf("%d webhooks before approval", n)
	}
	if _, err := e.kv.Get(context.Background(), "ticket-state:T-1001"); agentd.KindOf(err) != agentd.KindNotFound {
		t.Errorf("KV written before approval: %v", err)
	}
	rv, rec, err := task.Approve(context.Background(), res.ReviewID, "alice", "looks fine")
	if err != nil {
		t.Fatal(err)
	}
	if rv.Status != decision.ReviewApproved || rv.Reviewer != "alice" || rec.Status != decision.StatusApplied {
		t.Errorf("review %+v decision %s", rv, rec.Status)
	}
	if n := len(e.hooks.received()); n != 1 {
		t.Errorf("%d webhooks after approval, want 1", n)
	}
	_, _, err = task.Approve(context.Background(), res.ReviewID, "bob", "")
	if agentd.KindOf(err) != agentd.KindConflict {
		t.Errorf("second approve: %v, want conflict", err)
	}
	if n := len(e.hooks.received()); n != 1 {
		t.Errorf("%d webhooks after the second approve, want 1", n)
	}
}

func TestTaskRejectedReviewNeverApplies(t *testing.T) {
	e := newTaskEnv(t)
	task := e.triage(nil)
	e.fake.Enqueue(unsure())
	res, err := run(t, task, `{"ticketId":"T-1001"}`)
	if err != nil {
		t.Fatal(err)
	}
	rv, err := e.store.Reject(context.Background(), res.ReviewID, "carol", "wrong tone")
	if err != nil || rv.Status != decision.ReviewRejected || rv.Note != "wrong tone" {
		t.Fatalf("reject: %+v %v", rv, err)
	}
	if _, _, err := task.Approve(context.Background(), res.ReviewID, "alice", ""); agentd.KindOf(err) != agentd.KindConflict {
		t.Errorf("approving a rejected item: %v, want conflict", err)
	}
	if n := len(e.hooks.received()); n != 0 {
		t.Errorf("%d webhooks", n)
	}
	if _, err := e.store.Approve(context.Background(), "no-such-review", "x", ""); agentd.KindOf(err) != agentd.KindNotFound {
		t.Errorf("unknown review: %v", err)
	}
}

func TestTaskRequiredSourceMissingIs404NamingIt(t *testing.T) {
	e := newTaskEnv(t)
	task := e.triage(nil)
	_, err := run(t, task, `{"ticketId":"T-9999"}`)
	ae := agentd.AsError(err)
	if ae.Kind != agentd.KindNotFound || !strings.Contains(ae.Message, `"ticket"`) {
		t.Fatalf("err %v", err)
	}
	if n := len(e.fake.Requests()); n != 0 {
		t.Errorf("%d model calls", n)
	}
}

func TestTaskPreconditionShortCircuitsTheModel(t *testing.T) {
	e := newTaskEnv(t)
	e.exec(`CREATE TABLE orders (id TEXT PRIMARY KEY, amount REAL NOT NULL, ordered_at TEXT NOT NULL)`)
	e.exec(`INSERT INTO orders VALUES ('O-1', 40.0, '2026-10-01T10:00:00Z'), ('O-2', 25.5, '2026-12-01T10:00:00Z')`)
	task := e.task(agent.TaskConfig{
		Name:   "refund",
		Input:  mustSchema(t, `{"type":"object","required":["orderId"],"properties":{"orderId":{"type":"string"}}}`),
		Output: mustSchema(t, `{"type":"object","required":["decision","reason"],"properties":{"decision":{"enum":["approve","reject"]},"reason":{"type":"string"}}}`),
		Prompt: tmpl("Order {{.context.order.id}}"),
		Sources: []agent.Source{{Name: "order", Kind: agent.SourceSQL, Required: true,
			Query: "SELECT id, amount, ordered_at FROM orders WHERE id = $1", Args: []*agent.Expr{mustValue(t, "input.orderId")}}},
		Preconditions: []agent.Precondition{{Name: "window", Check: mustCond(t, "now - timestamp(context.order.ordered_at) <= duration('720h')"),
			Output: map[string]any{"decision": "reject", "reason": "Refunds are accepted within 30 days of the order."}}},
		Effects: []agent.Effect{{Name: "refund", Kind: agent.EffectHTTP, When: mustCond(t, "output.decision == 'approve'"), URL: tmpl(e.hookURL + "/refunds")}},
	})
	res, err := run(t, task, `{"orderId":"O-1"}`)
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, res); b["decision"] != "reject" || b["source"] != agent.SourcePrecondition {
		t.Errorf("response %s", res.Response)
	}
	if n := len(e.fake.Requests()); n != 0 {
		t.Errorf("%d model calls for an order past its window", n)
	}
	e.fake.Enqueue(anthropictest.ToolUse(agent.RespondTool, map[string]any{"decision": "approve", "reason": "within policy"}))
	res, err = run(t, task, `{"orderId":"O-2"}`)
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, res); b["decision"] != "approve" || b["source"] != agent.SourceModel {
		t.Errorf("response %s", res.Response)
	}
	if n := len(e.hooks.received()); n != 1 {
		t.Errorf("%d refund webhooks, want 1", n)
	}
}

func TestTaskSendsPDFAsADocumentBlock(t *testing.T) {
	e := newTaskEnv(t)
	ctx := context.Background()
	pdf := []byte("%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n3 0 obj << /Type /Page /Parent 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
	if _, err := e.blob.Put(ctx, "contracts/C-1.pdf", bytes.NewReader(pdf), agentd.BlobPutOptions{ContentType: "application/pdf"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.blob.Put(ctx, "faq.md", strings.NewReader("# FAQ\nRefunds take 5 days."), agentd.BlobPutOptions{}); err != nil {
		t.Fatal(err)
	}
	task := e.task(agent.TaskConfig{
		Name:   "qa",
		Input:  mustSchema(t, `{"type":"object","required":["customerId","question"],"properties":{"customerId":{"type":"string"},"question":{"type":"string"}}}`),
		Output: mustSchema(t, `{"type":"object","required":["answer"],"properties":{"answer":{"type":"string"}}}`),
		Prompt: tmpl("{{.question}}"),
		Sources: []agent.Source{
			{Name: "faq", Kind: agent.SourceBlob, Key: tmpl("faq.md"), Attach: true, CacheTTL: time.Hour},
			{Name: "contract", Kind: agent.SourceBlob, Key: tmpl("contracts/{{.customerId}}.pdf"), Attach: true, Required: true},
		},
	})
	e.fake.Enqueue(anthropictest.ToolUse(agent.RespondTool, map[string]any{"answer": "5 days."}))
	if _, err := run(t, task, `{"customerId":"C-1","question":"How long do refunds take?"}`); err != nil {
		t.Fatal(err)
	}
	content := e.fake.Requests()[0].Messages[0].Content
	if len(content) != 3 {
		t.Fatalf("%d blocks, want faq, contract, prompt", len(content))
	}
	if content[0].Type != "text" || !strings.Contains(content[0].Text, "Refunds take 5 days") {
		t.Errorf("first block %+v: the static FAQ as text", content[0])
	}
	doc := content[1]
	if doc.Type != "document" || doc.Source.Type != "base64" || doc.Source.MediaType != "application/pdf" {
		t.Fatalf("contract block %+v", doc)
	}
	if data, _ := doc.Source.Bytes(); !bytes.Equal(data, pdf) {
		t.Errorf("the PDF was not sent byte for byte")
	}
	// The FAQ is now in the KV cache; a missing contract is a 404 naming it.
	if _, err := e.kv.Get(ctx, "blobcache:faq.md"); err != nil {
		t.Errorf("FAQ not cached in KV: %v", err)
	}
	_, err := run(t, task, `{"customerId":"C-404","question":"?"}`)
	if ae := agentd.AsError(err); ae.Kind != agentd.KindNotFound || !strings.Contains(ae.Message, "contracts/C-404.pdf") {
		t.Errorf("missing contract: %v", err)
	}
}

func TestTaskHeaderIdempotencyKey(t *testing.T) {
	e := newTaskEnv(t)
	task := e.triage(func(c *agent.TaskConfig) { c.IdempotencyKey = nil })
	e.fake.SetResponder(func(anthropictest.Request) anthropictest.Reply { return confident() })
	in := json.RawMessage(`{"ticketId":"T-1001"}`)
	a, err := task.Run(context.Background(), agent.TaskRequest{Input: in, IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := task.Run(context.Background(), agent.TaskRequest{Input: in, IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := task.Run(context.Background(), agent.TaskRequest{Input: in})
	if err != nil {
		t.Fatal(err)
	}
	if a.DecisionID != b.DecisionID || !b.Replayed || c.DecisionID == a.DecisionID {
		t.Errorf("a %s b %s (replayed %v) c %s", a.DecisionID, b.DecisionID, b.Replayed, c.DecisionID)
	}
}

func TestTaskResumeFinishesLeftoverEffects(t *testing.T) {
	e := newTaskEnv(t)
	task := e.triage(func(c *agent.TaskConfig) { c.IdempotencyKey = nil })
	e.hooks.fail = 1
	e.fake.Enqueue(confident())
	_, err := run(t, task, `{"ticketId":"T-1001"}`)
	var ae *agentd.Error
	if !errors.As(err, &ae) || ae.Kind != agentd.KindEffectFailed {
		t.Fatalf("run: %v", err)
	}
	if n, err := task.Resume(context.Background(), time.Minute); err != nil || n != 0 {
		t.Fatalf("resume of a fresh decision: %d, %v", n, err)
	}
	e.clock.Advance(2 * time.Minute)
	if n, err := task.Resume(context.Background(), time.Minute); err != nil || n != 1 {
		t.Fatalf("resume: %d, %v", n, err)
	}
	if n := len(e.hooks.received()); n != 1 {
		t.Errorf("%d webhooks, want 1", n)
	}
}

func TestTaskLoopLimits(t *testing.T) {
	bad := anthropictest.ToolUse(agent.RespondTool, map[string]any{"draftResponse": "", "sentiment": "angry", "confidence": 7})
	for _, tt := range []struct {
		name   string
		limits agent.Limits
	}{
		{"max steps", agent.Limits{MaxSteps: 1}},
		{"max tokens per request", agent.Limits{MaxTokens: 10}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTaskEnv(t)
			task := e.triage(func(c *agent.TaskConfig) { c.Limits = tt.limits })
			e.fake.Enqueue(bad, confident())
			_, err := run(t, task, `{"ticketId":"T-1001"}`)
			if ae := agentd.AsError(err); ae.Kind != agentd.KindLoopLimit || ae.Kind.HTTPStatus() != http.StatusBadGateway {
				t.Fatalf("err %v, want loop_limit", err)
			}
			if n := len(e.fake.Requests()); n != 1 {
				t.Errorf("%d model calls, want 1: the repair is over the limit", n)
			}
			if n := e.query(`SELECT count(*) FROM decisions`)[0][0]; n != int64(0) {
				t.Errorf("%v decisions recorded", n)
			}
		})
	}
}
