package telemetry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/store/migrate"
	"github.com/agentd/agentd/store/sqlite"
	"github.com/google/uuid"
)

// openDB returns a migrated SQLite database.
func openDB(t testing.TB) agentd.DB {
	t.Helper()
	return openSQLite(t, migrate.Runtime())
}

// logBuffer collects log output from the writer goroutine.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newAuditor(t testing.TB, db agentd.DB, opts ...AuditOption) (*Auditor, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	opts = append([]AuditOption{WithLogger(slog.New(slog.NewTextHandler(logs, nil)))}, opts...)
	a := NewAuditor(db, opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Close(ctx)
	})
	return a, logs
}

func countRows(t *testing.T, db agentd.DB) int64 {
	t.Helper()
	rows, err := db.Query(t.Context(), `SELECT COUNT(*) FROM audit_events`)
	if err != nil {
		t.Fatal(err)
	}
	return rows.Values[0][0].(int64)
}

func sampleEvent(i int) AuditEvent {
	return AuditEvent{
		ID:    fmt.Sprintf("ev-%03d", i),
		Time:  time.Date(2025, 1, 2, 3, 4, 5, 6+i, time.UTC).Add(time.Duration(i) * time.Second),
		Agent: []string{"agent-a", "agent-b"}[i%2], UserID: []string{"u1", "u2", "u3"}[i%3],
		Kind: "model_call", Model: "claude-test",
		Usage: agentd.Usage{InputTokens: int64(100 + i), OutputTokens: int64(200 + i), CacheCreationInputTokens: int64(i),
			CacheReadInputTokens: int64(2 * i), CacheCreation1hInputTokens: int64(i / 2)},
		Latency: time.Duration(1500+i)*time.Millisecond + 789*time.Microsecond,
		Outcome: "ok", Error: "", RequestID: fmt.Sprintf("req_%d", i), Attempts: 1 + i%3,
		CostNanoUSD: int64(1_000_003 * (i + 1)), RetryWait: time.Duration(i%3) * 1500 * time.Microsecond,
		Source: []string{"model", "fallback_model", ""}[i%3],
	}
}

func TestRecordFlushQueryRoundTrip(t *testing.T) {
	forEachDB(t, testRecordFlushQueryRoundTrip)
}

func testRecordFlushQueryRoundTrip(t *testing.T, db agentd.DB) {
	a, _ := newAuditor(t, db)
	const n = 30
	want := map[string]AuditEvent{}
	for i := range n {
		ev := sampleEvent(i)
		if i%5 == 0 {
			ev.Outcome, ev.Error = string(agentd.KindModelUnavailable), "overloaded ✓"
		}
		want[ev.ID] = ev
		a.Record(ev)
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	got, err := a.Query(t.Context(), AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("Query returned %d events, want %d", len(got), n)
	}
	for i, ev := range got {
		if i > 0 && !ev.Time.Before(got[i-1].Time) {
			t.Errorf("event %d at %v is not older than the one before, %v", i, ev.Time, got[i-1].Time)
		}
		w := want[ev.ID]
		if !ev.Time.Equal(w.Time) {
			t.Errorf("%s: Time = %v, want %v", ev.ID, ev.Time, w.Time)
		}
		ev.Time = w.Time
		if !reflect.DeepEqual(ev, w) {
			t.Errorf("round trip:\n got %+v\nwant %+v", ev, w)
		}
	}
	if a.Failed() != 0 {
		t.Errorf("Failed() = %d", a.Failed())
	}
}

// Events written before migration 2 (audit_cost) read back with no cost,
// retry wait or source, and the columns it adds take new events.
func TestEventsFromBeforeTheCostColumns(t *testing.T) {
	for _, d := range dialects() {
		t.Run(d.name, func(t *testing.T) {
			v1 := migrate.Runtime()[:1]
			if v1[0].Version != 1 || v1[0].Name != "audit_events" {
				t.Fatalf("migration 1 is %d %s", v1[0].Version, v1[0].Name)
			}
			db := d.open(t, v1)
			if _, err := db.Exec(t.Context(), `INSERT INTO audit_events (id, at, agent, user_id, kind, model,
				input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,
				latency_us, outcome, error, request_id, attempts)
				VALUES ('old', 5, 'a', 'u', 'model_call', 'm', 1, 2, 3, 4, 6, 'ok', '', 'r', 1)`); err != nil {
				t.Fatal(err)
			}
			if err := migrate.Apply(t.Context(), db, migrate.Runtime()); err != nil {
				t.Fatal(err)
			}
			a, _ := newAuditor(t, db)
			fresh := sampleEvent(7)
			a.Record(fresh)
			if err := a.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			got, err := a.Query(t.Context(), AuditFilter{})
			if err != nil {
				t.Fatal(err)
			}
			old := AuditEvent{ID: "old", Time: time.Unix(0, 5).UTC(), Agent: "a", UserID: "u", Kind: "model_call", Model: "m",
				Usage:   agentd.Usage{InputTokens: 1, OutputTokens: 2, CacheCreationInputTokens: 3, CacheReadInputTokens: 4},
				Latency: 6 * time.Microsecond, Outcome: "ok", RequestID: "r", Attempts: 1}
			if len(got) != 2 || !reflect.DeepEqual(got[1], old) {
				t.Fatalf("Query = %+v, want the new event then\n%+v", got, old)
			}
			if got[0].Time.Equal(fresh.Time) {
				got[0].Time = fresh.Time
			}
			if !reflect.DeepEqual(got[0], fresh) {
				t.Errorf("new event:\n got %+v\nwant %+v", got[0], fresh)
			}
		})
	}
}

func TestQueryFilters(t *testing.T) {
	forEachDB(t, testQueryFilters)
}

func testQueryFilters(t *testing.T, db agentd.DB) {
	a, _ := newAuditor(t, db)
	const n = 30
	for i := range n {
		a.Record(sampleEvent(i))
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	ids := func(evs []AuditEvent) []string {
		var out []string
		for _, ev := range evs {
			out = append(out, ev.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    AuditFilter
		want []string
	}{
		{"agent", AuditFilter{Agent: "agent-b", Limit: 3}, []string{"ev-029", "ev-027", "ev-025"}},
		{"user", AuditFilter{UserID: "u3", Limit: 2}, []string{"ev-029", "ev-026"}},
		{"agent and user", AuditFilter{Agent: "agent-a", UserID: "u1"}, []string{"ev-024", "ev-018", "ev-012", "ev-006", "ev-000"}},
		{"since", AuditFilter{Since: sampleEvent(27).Time}, []string{"ev-029", "ev-028", "ev-027"}},
		{"since and agent", AuditFilter{Agent: "agent-a", Since: sampleEvent(26).Time}, []string{"ev-028", "ev-026"}},
		{"limit", AuditFilter{Limit: 1}, []string{"ev-029"}},
		{"nobody", AuditFilter{Agent: "nobody"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Query(t.Context(), tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ids(got), tc.want) {
				t.Errorf("Query(%+v) = %v, want %v", tc.f, ids(got), tc.want)
			}
		})
	}
	if _, err := a.Query(t.Context(), AuditFilter{Limit: -1}); agentd.KindOf(err) != agentd.KindInvalid {
		t.Errorf("negative limit: %v", err)
	}
}

func TestQueryLimitDefaultsAndCaps(t *testing.T) {
	db := openDB(t)
	a, _ := newAuditor(t, db)
	for i := range DefaultAuditLimit + 5 {
		a.Record(AuditEvent{Agent: "x", Kind: "model_call"})
		_ = i
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := a.Query(t.Context(), AuditFilter{})
	if err != nil || len(got) != DefaultAuditLimit {
		t.Errorf("default limit: %d events, %v; want %d", len(got), err, DefaultAuditLimit)
	}
	got, err = a.Query(t.Context(), AuditFilter{Limit: MaxAuditLimit + 1})
	if err != nil || len(got) != DefaultAuditLimit+5 {
		t.Errorf("big limit: %d events, %v", len(got), err)
	}
}

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

func TestRecordFillsIDAndTime(t *testing.T) {
	db := openDB(t)
	now := time.Date(2030, 6, 7, 8, 9, 10, 11, time.UTC)
	a, _ := newAuditor(t, db, WithClock(fixedClock{now}))
	a.Record(AuditEvent{Agent: "x", Kind: "model_call", Error: strings.Repeat("é", maxErrorBytes)})
	a.Record(AuditEvent{Agent: "x", Kind: "model_call"})
	if err := a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := a.Query(t.Context(), AuditFilter{Agent: "x"})
	if err != nil || len(got) != 2 {
		t.Fatalf("Query: %v, %v", got, err)
	}
	for _, ev := range got {
		id, err := uuid.Parse(ev.ID)
		if err != nil || id.Version() != 7 {
			t.Errorf("ID %q is not a UUIDv7 (%v)", ev.ID, err)
		}
		if !ev.Time.Equal(now) {
			t.Errorf("Time = %v, want the clock's %v", ev.Time, now)
		}
	}
	// Same time: the later UUIDv7 sorts first.
	if got[0].ID <= got[1].ID {
		t.Errorf("ids not newest first: %s, %s", got[0].ID, got[1].ID)
	}
	long := got[1].Error
	if len(long) > maxErrorBytes || len(long) < maxErrorBytes-1 || !strings.HasPrefix(strings.Repeat("é", maxErrorBytes), long) {
		t.Errorf("Error cut to %d bytes (%q…), want at most %d on a character boundary", len(long), long[:10], maxErrorBytes)
	}
}

func TestCloseDrains(t *testing.T) {
	db := openDB(t)
	// A small buffer makes Record block on the writer, the backpressure path.
	a, _ := newAuditor(t, db, WithBuffer(4))
	const n = 600
	for range n {
		a.Record(AuditEvent{Agent: "x", Kind: "model_call"})
	}
	if err := a.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := countRows(t, db); got != n {
		t.Errorf("%d rows after Close, want %d", got, n)
	}
	// Closing again, and flushing after Close, return at once.
	if err := a.Close(t.Context()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Errorf("Flush after Close: %v", err)
	}
}

func TestRecordAfterCloseDrops(t *testing.T) {
	db := openDB(t)
	a, logs := newAuditor(t, db)
	if err := a.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.Record(AuditEvent{ID: "late", Agent: "x", Kind: "model_call"}) // must not panic
	if a.Failed() != 1 {
		t.Errorf("Failed() = %d, want the dropped event counted", a.Failed())
	}
	if !strings.Contains(logs.String(), "audit: event dropped") || !strings.Contains(logs.String(), "late") {
		t.Errorf("no log line for the dropped event: %q", logs.String())
	}
	if got := countRows(t, db); got != 0 {
		t.Errorf("%d rows, want 0", got)
	}
}

func TestConcurrentRecord(t *testing.T) {
	db := openDB(t)
	a, _ := newAuditor(t, db, WithBuffer(16))
	const writers, each = 16, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				a.Record(AuditEvent{Agent: fmt.Sprint("agent-", w), Kind: "model_call", Attempts: i})
				if i%10 == 0 {
					if err := a.Flush(t.Context()); err != nil {
						t.Errorf("Flush: %v", err)
					}
				}
			}
		})
	}
	// Query and Close race with the writers too.
	wg.Go(func() {
		for range 5 {
			if _, err := a.Query(t.Context(), AuditFilter{Agent: "agent-1"}); err != nil {
				t.Errorf("Query: %v", err)
			}
		}
	})
	wg.Wait()
	if err := a.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, db); got != writers*each {
		t.Errorf("%d rows, want %d", got, writers*each)
	}
}

func TestRecordRacesClose(t *testing.T) {
	db := openDB(t)
	a, _ := newAuditor(t, db, WithBuffer(2))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				a.Record(AuditEvent{Agent: "x", Kind: "model_call"})
			}
		})
	}
	time.Sleep(time.Millisecond)
	if err := a.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	// Every event was either written or counted as dropped: none is lost
	// silently in the queue.
	if got := countRows(t, db) + a.Failed(); got != 800 {
		t.Errorf("written + dropped = %d, want 800", got)
	}
}

func TestWriteFailureIsLoggedCountedAndSurvived(t *testing.T) {
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "bare.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a, logs := newAuditor(t, db)
	// No migration yet: audit_events does not exist.
	for range 3 {
		a.Record(AuditEvent{Agent: "x", Kind: "model_call", Error: "x"})
	}
	err = a.Flush(t.Context())
	if agentd.KindOf(err) != agentd.KindStorageUnavailable {
		t.Errorf("Flush after failed writes: %v, want %s", err, agentd.KindStorageUnavailable)
	}
	if a.Failed() != 3 {
		t.Errorf("Failed() = %d, want 3", a.Failed())
	}
	if !strings.Contains(logs.String(), "audit: events not written") {
		t.Errorf("no log line for the failure: %q", logs.String())
	}
	// The writer keeps going once the table exists.
	if err := migrate.Apply(t.Context(), db, migrate.Runtime()); err != nil {
		t.Fatal(err)
	}
	a.Record(AuditEvent{Agent: "x", Kind: "model_call"})
	if err := a.Flush(t.Context()); err != nil {
		t.Errorf("Flush after recovery: %v", err)
	}
	if a.Failed() != 3 {
		t.Errorf("Failed() = %d, want still 3", a.Failed())
	}
}

func TestBadEventDoesNotSinkItsBatch(t *testing.T) {
	db := openDB(t)
	a, _ := newAuditor(t, db)
	a.Record(AuditEvent{ID: "dup", Agent: "x", Kind: "model_call"})
	if err := a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		id := fmt.Sprint("ok-", i)
		if i == 10 {
			id = "dup"
		}
		a.Record(AuditEvent{ID: id, Agent: "x", Kind: "model_call"})
	}
	if err := a.Flush(t.Context()); err == nil {
		t.Error("Flush did not report the failed event")
	}
	if a.Failed() != 1 {
		t.Errorf("Failed() = %d, want 1", a.Failed())
	}
	if got := countRows(t, db); got != 20 {
		t.Errorf("%d rows, want 20", got)
	}
}

// stuckDB is a database whose writes hang until their context ends.
type stuckDB struct{ agentd.DB }

func (stuckDB) Tx(ctx context.Context, fn func(context.Context, agentd.Querier) error) error {
	<-ctx.Done()
	return agentd.E(agentd.KindStorageUnavailable, "stuck.tx", ctx.Err())
}

func TestCloseGivesUpWhenItsContextEnds(t *testing.T) {
	a, _ := newAuditor(t, stuckDB{}, WithBuffer(16))
	for range 10 {
		a.Record(AuditEvent{Agent: "x", Kind: "model_call"})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := a.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close: %v, want its context's error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	// The writer stops soon after, counting what it could not write.
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer did not stop")
	}
	if a.Failed() != 10 {
		t.Errorf("Failed() = %d, want 10", a.Failed())
	}
	a.Record(AuditEvent{Agent: "x"})
	if a.Failed() != 11 {
		t.Errorf("Failed() = %d after a late Record, want 11", a.Failed())
	}
}

func TestFlushRespectsContext(t *testing.T) {
	a, _ := newAuditor(t, stuckDB{})
	a.Record(AuditEvent{Agent: "x"})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := a.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush on a stuck database: %v, want its context's error", err)
	}
	closeCtx, cancel2 := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel2()
	a.Close(closeCtx)
}

func TestInsertStatement(t *testing.T) {
	got := insertStatement(2)
	want := "INSERT INTO audit_events (" + auditColumns + ") VALUES " +
		"($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19), " +
		"($20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38)"
	if got != want {
		t.Errorf("insertStatement(2) =\n%s\nwant\n%s", got, want)
	}
	if n := len(strings.Split(auditColumns, ",")); n != numAuditColumns || len(eventArgs(AuditEvent{})) != n {
		t.Errorf("%d columns, %d args, numAuditColumns %d", n, len(eventArgs(AuditEvent{})), numAuditColumns)
	}
}

func TestTruncateUTF8(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 2, "ab"},
		{"aé", 2, "a"},
		{"aé", 3, "aé"},
		{"€", 2, ""},
	} {
		if got := truncateUTF8(tc.s, tc.n); got != tc.want {
			t.Errorf("truncateUTF8(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

// BenchmarkAuditRecord measures Record plus its share of the Flush that
// makes it durable, per event, for events flushed in batches of each size.
func BenchmarkAuditRecord(b *testing.B) {
	for _, batch := range []int{1, 64, 1024} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) {
			db := openDB(b)
			a, _ := newAuditor(b, db)
			ev := sampleEvent(1)
			ctx := b.Context()
			i := 0
			for b.Loop() {
				ev.ID = ""
				a.Record(ev)
				i++
				if i%batch == 0 {
					if err := a.Flush(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := a.Flush(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}
