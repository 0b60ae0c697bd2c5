package decision_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/decision"
	"github.com/agentd/agentd/internal/pgtest"
	"github.com/agentd/agentd/store/migrate"
	"github.com/agentd/agentd/store/sqlite"
)

// forEachDB runs f on SQLite, and on PostgreSQL when a server is
// configured: the ledger's SQL is the same text on both.
func forEachDB(t *testing.T, f func(t *testing.T, db agentd.DB)) {
	t.Run("sqlite", func(t *testing.T) {
		db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "d.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := migrate.Apply(t.Context(), db, migrate.Runtime()); err != nil {
			t.Fatal(err)
		}
		f(t, db)
	})
	t.Run("postgres", func(t *testing.T) {
		f(t, pgtest.Open(t, "agentd_decision", migrate.Runtime()))
	})
}

func record(agent, key string, effects int) *decision.Record {
	rec := &decision.Record{Agent: agent, IdempotencyKey: key, InputHash: "h1", Status: decision.StatusPending, Source: "model", Model: "m",
		Input: json.RawMessage(`{"a":1}`), ContextRefs: json.RawMessage(`{}`), Output: json.RawMessage(`{"ok":true}`), Response: json.RawMessage(`{"ok":true}`),
		Usage: agentd.Usage{InputTokens: 10, OutputTokens: 2}, CostNanoUSD: 60000, Steps: 1}
	for i := range effects {
		rec.Effects = append(rec.Effects, decision.Effect{Name: "e", Kind: "sql", Spec: json.RawMessage(`{"n":` + string(rune('0'+i)) + `}`)})
	}
	return rec
}

func TestLedger(t *testing.T) {
	forEachDB(t, func(t *testing.T, db agentd.DB) {
		ctx := context.Background()
		clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC))
		s := decision.New(db, clock)

		rec := record("triage", "k1", 2)
		if err := s.Create(ctx, rec, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Create(ctx, record("triage", "k1", 0), nil); agentd.KindOf(err) != agentd.KindConflict {
			t.Fatalf("a second decision under one key: %v", err)
		}
		// Two decisions without a key are both fine (NULLs are distinct).
		for range 2 {
			if err := s.Create(ctx, record("triage", "", 0), nil); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ByIdempotencyKey(ctx, "triage", "k1")
		if err != nil || got.ID != rec.ID || len(got.Effects) != 2 || got.Usage.InputTokens != 10 || got.CostNanoUSD != 60000 {
			t.Fatalf("by key: %+v %v", got, err)
		}
		if _, err := s.ByIdempotencyKey(ctx, "other", "k1"); agentd.KindOf(err) != agentd.KindNotFound {
			t.Errorf("another agent's key: %v", err)
		}

		// Marking an effect applied, in the caller's transaction, works once.
		for i, want := range []bool{true, false} {
			var marked bool
			err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
				var err error
				marked, err = s.MarkEffectApplied(ctx, tx, rec.ID, 0)
				return err
			})
			if err != nil || marked != want {
				t.Fatalf("mark %d: %v %v", i, marked, err)
			}
		}
		if st, err := s.Finish(ctx, rec.ID); err != nil || st != decision.StatusPending {
			t.Fatalf("finish with an effect pending: %s %v", st, err)
		}
		if err := s.MarkEffectFailed(ctx, rec.ID, 1, "webhook answered 500"); err != nil {
			t.Fatal(err)
		}
		clock.Advance(2 * time.Minute)
		ids, err := s.Unfinished(ctx, "triage", clock.Now().Add(-time.Minute), 10)
		if err != nil || len(ids) != 3 || ids[0] != rec.ID {
			t.Fatalf("unfinished %v %v", ids, err)
		}
		if _, err := s.MarkEffectApplied(ctx, db, rec.ID, 1); err != nil {
			t.Fatal(err)
		}
		if st, err := s.Finish(ctx, rec.ID); err != nil || st != decision.StatusApplied {
			t.Fatalf("finish: %s %v", st, err)
		}
		got, _ = s.Get(ctx, rec.ID)
		if got.Effects[1].Attempts != 2 || got.Effects[1].Status != decision.EffectApplied || got.Effects[1].AppliedAt.IsZero() {
			t.Errorf("effect after a failure and a success: %+v", got.Effects[1])
		}
		if c, err := s.LatestForInput(ctx, "triage", "h1"); err != nil || c.Source != "model" {
			t.Errorf("cached answer: %+v %v", c, err)
		}
	})
}

func TestReviewQueue(t *testing.T) {
	forEachDB(t, func(t *testing.T, db agentd.DB) {
		ctx := context.Background()
		s := decision.New(db, clockwork.NewFakeClock())
		var reviewIDs []string
		for i := range 3 {
			rec := record("refund", "", 1)
			rv := &decision.Review{Reason: "large", Payload: json.RawMessage(`{"i":` + string(rune('0'+i)) + `}`)}
			if err := s.Create(ctx, rec, rv); err != nil {
				t.Fatal(err)
			}
			if rec.Status != decision.StatusReview || rec.ReviewID != rv.ID {
				t.Fatalf("held decision %+v", rec)
			}
			reviewIDs = append(reviewIDs, rv.ID)
		}
		chat := &decision.Review{Agent: "chat", UserID: "u1", Reason: "canned", Payload: json.RawMessage(`{}`)}
		if err := s.AddReview(ctx, chat); err != nil {
			t.Fatal(err)
		}

		page, err := s.Reviews(ctx, decision.ReviewFilter{Agent: "refund", Status: decision.ReviewPending, Limit: 2})
		if err != nil || len(page) != 2 || page[0].ID != reviewIDs[2] {
			t.Fatalf("first page %+v %v", page, err)
		}
		next, err := s.Reviews(ctx, decision.ReviewFilter{Agent: "refund", Limit: 2, Before: page[1].ID})
		if err != nil || len(next) != 1 || next[0].ID != reviewIDs[0] {
			t.Fatalf("second page %+v %v", next, err)
		}
		if _, err := s.Reviews(ctx, decision.ReviewFilter{Status: "maybe"}); agentd.KindOf(err) != agentd.KindInvalid {
			t.Errorf("bad status: %v", err)
		}

		// Concurrent approvals: exactly one wins, the rest conflict.
		var wg sync.WaitGroup
		results := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				_, err := s.Approve(ctx, reviewIDs[0], "alice", "")
				results <- err
			})
		}
		wg.Wait()
		close(results)
		wins := 0
		for err := range results {
			switch agentd.KindOf(err) {
			case "":
				wins++
			case agentd.KindConflict:
			default:
				t.Errorf("approve: %v", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d approvals won, want 1", wins)
		}
		rv, _ := s.Review(ctx, reviewIDs[0])
		rec, _ := s.Get(ctx, rv.DecisionID)
		if rv.Status != decision.ReviewApproved || rv.Reviewer != "alice" || rec.Status != decision.StatusPending {
			t.Errorf("after approval: review %+v, decision %s", rv, rec.Status)
		}

		if _, err := s.Reject(ctx, reviewIDs[1], "bob", "too much"); err != nil {
			t.Fatal(err)
		}
		rv, _ = s.Review(ctx, reviewIDs[1])
		rec, _ = s.Get(ctx, rv.DecisionID)
		if rv.Note != "too much" || rec.Status != decision.StatusRejected {
			t.Errorf("after rejection: review %+v, decision %s", rv, rec.Status)
		}
		if _, err := s.Approve(ctx, reviewIDs[1], "alice", ""); agentd.KindOf(err) != agentd.KindConflict {
			t.Errorf("approving a rejected review: %v", err)
		}
		if _, err := s.Approve(ctx, chat.ID, "alice", "called back"); err != nil {
			t.Errorf("acknowledging a chat review: %v", err)
		}
		if _, err := s.Review(ctx, "nope"); agentd.KindOf(err) != agentd.KindNotFound {
			t.Errorf("unknown review: %v", err)
		}
	})
}
