package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/sqlrow"
	"github.com/google/uuid"
)

// AuditEvent is one audited action, today a call to the model (Kind
// "model_call", "repair" or "compaction"), answered by it or by a stand-in.
type AuditEvent struct {
	ID      string    // set by Record when empty: a UUIDv7, so ids sort by time
	Time    time.Time // set by Record when zero; stored with nanosecond precision
	Agent   string
	UserID  string
	Kind    string // what happened: "model_call", "repair", "compaction"
	Model   string
	Usage   agentd.Usage  // CacheCreation1hInputTokens included
	Latency time.Duration // stored with microsecond precision
	Outcome string        // "ok", or the error kind or type
	// Error is a short message for a failed call. It must never carry
	// secrets: no keys, no prompt text. Record cuts it to maxErrorBytes.
	Error     string
	RequestID string // the upstream API's request id, for support tickets
	Attempts  int    // calls made to the model, retries included
	// CostNanoUSD is what the call cost, in nanodollars (Pricing.Cost); 0
	// for a model of unknown price or an answer that cost nothing.
	CostNanoUSD int64
	// RetryWait is the total backoff slept between the call's attempts
	// (agentd.CallTrace.Waited), stored with microsecond precision.
	RetryWait time.Duration
	// Source is what answered: "model", "fallback_model", "cache", "rules"
	// or "canned"; "" when nothing did or it was not said.
	Source string
}

// AuditFilter selects events for Query. Zero fields do not filter.
type AuditFilter struct {
	Agent  string
	UserID string
	Since  time.Time // events at or after
	Limit  int       // 0: DefaultAuditLimit; at most MaxAuditLimit
}

// Limits of Query.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

const (
	// defaultBuffer is how many events may wait for the writer before
	// Record blocks: a few seconds of heavy traffic.
	defaultBuffer = 1024
	// maxBatch bounds the events written in one transaction, so one write
	// holds the (SQLite) write lock only briefly.
	maxBatch = 256
	// rowsPerInsert is the rows of one INSERT statement. Fewer rows mean
	// more statements to parse; more rows cost more than linearly in
	// SQLite, which looks each $N name up in a list (measured: 8 rows per
	// statement beat 1, 32 and 64 in a 256-event transaction).
	rowsPerInsert = 8
	// writeTimeout bounds one batch write, so a hung database cannot stall
	// the writer, and with it Record, forever.
	writeTimeout = 30 * time.Second
	// maxErrorBytes bounds AuditEvent.Error: a message, not a dump.
	maxErrorBytes = 1024
)

// auditColumns are the columns of audit_events, in the order of eventArgs.
const auditColumns = "id, at, agent, user_id, kind, model, input_tokens, output_tokens, " +
	"cache_creation_input_tokens, cache_read_input_tokens, latency_us, outcome, error, request_id, attempts, " +
	"cache_creation_1h_input_tokens, cost_nusd, retry_wait_us, source"

const numAuditColumns = 19

// Auditor writes audit events to a database in the background. It is safe
// for concurrent use. It does not own the database: Close stops the Auditor,
// not the DB.
type Auditor struct {
	db      agentd.DB
	log     *slog.Logger
	clock   agentd.Clock
	bufSize int

	in chan item
	// mu guards closed. Record and Flush hold it shared only to check closed
	// and join senders, never while they wait on in, so Close takes it at
	// once.
	mu      sync.RWMutex
	closed  bool
	senders sync.WaitGroup // Records and Flushes between joining and sending
	stop    chan struct{}  // closed once closed is set and senders are done: drain and exit
	done    chan struct{}  // closed by the writer as it exits

	// ctx is the context of the writer's database calls. A Close that runs
	// out of time cancels it, so the writer gives up rather than outlive
	// Close by minutes.
	ctx    context.Context
	cancel context.CancelFunc

	failed  atomic.Int64 // events whose write failed
	dropped atomic.Int64 // events recorded after Close

	insertFull string // the INSERT of rowsPerInsert rows, built once
}

// item is what goes through the queue: an event, or a Flush's marker.
type item struct {
	ev    AuditEvent
	flush chan struct{} // non-nil for a marker: closed once all before it is written
}

// AuditOption configures an Auditor.
type AuditOption func(*Auditor)

// WithLogger sets where write failures and dropped events are logged;
// slog.Default() otherwise.
func WithLogger(l *slog.Logger) AuditOption {
	return func(a *Auditor) {
		if l != nil {
			a.log = l
		}
	}
}

// WithBuffer sets how many events may wait to be written before Record
// blocks. n < 1 keeps the default, 1024.
func WithBuffer(n int) AuditOption {
	return func(a *Auditor) {
		if n >= 1 {
			a.bufSize = n
		}
	}
}

// WithClock sets the clock that stamps events recorded without a Time;
// agentd.SystemClock otherwise.
func WithClock(c agentd.Clock) AuditOption {
	return func(a *Auditor) {
		if c != nil {
			a.clock = c
		}
	}
}

// NewAuditor returns an Auditor writing to db, whose schema migrate.Runtime
// must have brought up to date, and starts its writer. Call Close to stop it.
func NewAuditor(db agentd.DB, opts ...AuditOption) *Auditor {
	a := &Auditor{
		db:      db,
		log:     slog.Default(),
		clock:   agentd.SystemClock{},
		bufSize: defaultBuffer,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	for _, o := range opts {
		o(a)
	}
	a.in = make(chan item, a.bufSize)
	// The writer outlives any request, so its context descends from none.
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.insertFull = insertStatement(rowsPerInsert)
	go a.run()
	return a
}

// Record queues ev to be written and returns; it does not wait for the
// database. It fills in ID and Time when they are empty.
//
// When the queue is full, because the database is slower than the traffic,
// Record blocks until there is room: audit events are not dropped to keep a
// request fast, and the backpressure is what tells that the database cannot
// keep up. After Close, Record drops ev, logs it and counts it in Failed.
func (a *Auditor) Record(ev AuditEvent) {
	if ev.ID == "" {
		// NewV7 fails only if crypto/rand does, which since Go 1.24 crashes
		// the program instead of returning an error.
		ev.ID = uuid.Must(uuid.NewV7()).String()
	}
	if ev.Time.IsZero() {
		ev.Time = a.clock.Now()
	}
	ev.Error = truncateUTF8(ev.Error, maxErrorBytes)

	if !a.join() {
		a.drop(ev, "the auditor is closed")
		return
	}
	// The writer keeps reading in until every joined sender is done, so
	// this send always completes.
	a.in <- item{ev: ev}
	a.senders.Done()
}

// join registers a sender, unless the Auditor is closed.
func (a *Auditor) join() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		return false
	}
	a.senders.Add(1)
	return true
}

func (a *Auditor) drop(ev AuditEvent, why string) {
	a.dropped.Add(1)
	a.log.LogAttrs(context.Background(), slog.LevelWarn, "audit: event dropped",
		slog.String("reason", why), slog.String("id", ev.ID), slog.String("agent", ev.Agent), slog.String("kind", ev.Kind))
}

// Flush returns once every event recorded before the call has been written,
// or its write has failed: then Flush returns an error of
// KindStorageUnavailable. If ctx ends first, it returns an error wrapping
// ctx.Err(). (A failure of another caller's events written
// meanwhile is reported too: writes are batched together.) After Close, it
// waits for Close's drain to end.
func (a *Auditor) Flush(ctx context.Context) error {
	const op = "audit.flush"
	before := a.failed.Load()
	if !a.join() {
		select {
		case <-a.done:
		case <-ctx.Done():
			return agentd.E("", op, ctx.Err())
		}
		return a.failedSince(op, before)
	}
	marker := make(chan struct{})
	select {
	case a.in <- item{flush: marker}:
		a.senders.Done()
	case <-ctx.Done():
		a.senders.Done()
		return agentd.E("", op, ctx.Err())
	}
	select {
	case <-marker:
	case <-ctx.Done():
		return agentd.E("", op, ctx.Err())
	}
	return a.failedSince(op, before)
}

func (a *Auditor) failedSince(op string, before int64) error {
	if n := a.failed.Load() - before; n > 0 {
		return agentd.Errorf(agentd.KindStorageUnavailable, op, "%d audit events could not be written", n)
	}
	return nil
}

// Close writes what was recorded, stops the writer, and returns an error if
// some of those writes failed. If ctx ends first, Close cancels the writes in
// progress and returns an error; the events not yet written are counted in
// Failed. Closing again waits for the same end.
func (a *Auditor) Close(ctx context.Context) error {
	const op = "audit.close"
	before := a.failed.Load()
	a.mu.Lock()
	first := !a.closed
	a.closed = true
	a.mu.Unlock()
	if first {
		// No sender joins after closed is set; once those in flight have
		// queued their items, in holds all there will ever be.
		go func() {
			a.senders.Wait()
			close(a.stop)
		}()
	}
	select {
	case <-a.done:
	case <-ctx.Done():
		a.cancel()
		return agentd.E("", op, ctx.Err())
	}
	a.cancel()
	return a.failedSince(op, before)
}

// Failed returns how many events could not be written, or were dropped
// because the Auditor was closed, since it started.
func (a *Auditor) Failed() int64 { return a.failed.Load() + a.dropped.Load() }

// run is the writer: it takes what is queued, up to a batch, writes it in
// one transaction, and repeats. Batches grow by themselves under load, from
// the events that queue up while the previous batch is written, so there is
// no timer and a lone event is written at once.
func (a *Auditor) run() {
	defer close(a.done)
	batch := make([]AuditEvent, 0, maxBatch)
	var markers []chan struct{}
	take := func(it item) {
		if it.flush != nil {
			markers = append(markers, it.flush)
		} else {
			batch = append(batch, it.ev)
		}
	}
	// write writes the batch, then releases the Flushes whose markers came
	// with it: everything queued before them is in the batch or an earlier
	// one.
	write := func() {
		if len(batch) > 0 {
			a.write(batch)
			batch = batch[:0]
		}
		for _, m := range markers {
			close(m)
		}
		markers = markers[:0]
	}
	for {
		select {
		case it := <-a.in:
			take(it)
		case <-a.stop:
			// in holds all there will ever be: write it and exit.
			for {
				select {
				case it := <-a.in:
					take(it)
					if len(batch) == maxBatch {
						write()
					}
					continue
				default:
				}
				write()
				return
			}
		}
	more:
		for len(batch) < maxBatch {
			select {
			case it := <-a.in:
				take(it)
			default:
				break more
			}
		}
		write()
	}
}

// write writes a batch in one transaction. A batch refused for its content
// (a duplicate ID, a value too large) is retried event by event, so one bad
// event does not take the others with it; any other failure (the database
// unavailable or too slow) fails the whole batch.
func (a *Auditor) write(batch []AuditEvent) {
	err := a.insert(batch)
	if err == nil {
		return
	}
	kind := agentd.KindOf(err)
	eventAtFault := kind == agentd.KindConflict || kind == agentd.KindInvalid || kind == agentd.KindTooLarge
	if !eventAtFault || len(batch) == 1 || a.ctx.Err() != nil {
		a.failed.Add(int64(len(batch)))
		a.logFailure(err, len(batch), batch[0].ID)
		return
	}
	var firstErr error
	var firstID string
	n := 0
	for _, ev := range batch {
		if err := a.insert([]AuditEvent{ev}); err != nil {
			if n == 0 {
				firstErr, firstID = err, ev.ID
			}
			n++
		}
	}
	if n > 0 {
		// One line for the batch, not one per event: when every event
		// fails alike (a missing table), the log stays readable.
		a.failed.Add(int64(n))
		a.logFailure(firstErr, n, firstID)
	}
}

func (a *Auditor) logFailure(err error, n int, firstID string) {
	// The error comes from the database: SQL text and engine messages,
	// never the bound values, so it carries no event content.
	a.log.LogAttrs(context.Background(), slog.LevelError, "audit: events not written",
		slog.Int("events", n), slog.String("first_id", firstID),
		slog.String("kind", string(agentd.KindOf(err))), slog.String("error", err.Error()))
}

func (a *Auditor) insert(batch []AuditEvent) error {
	ctx, cancel := context.WithTimeout(a.ctx, writeTimeout)
	defer cancel()
	return a.db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		for start := 0; start < len(batch); start += rowsPerInsert {
			chunk := batch[start:min(start+rowsPerInsert, len(batch))]
			query := a.insertFull
			if len(chunk) != rowsPerInsert {
				query = insertStatement(len(chunk))
			}
			args := make([]any, 0, len(chunk)*numAuditColumns)
			for _, ev := range chunk {
				args = append(args, eventArgs(ev)...)
			}
			if _, err := tx.Exec(ctx, query, args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// insertStatement returns the INSERT of n rows into audit_events.
func insertStatement(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO audit_events (" + auditColumns + ") VALUES ")
	p := 1
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for j := range numAuditColumns {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(p))
			p++
		}
		b.WriteByte(')')
	}
	return b.String()
}

// eventArgs returns the values of ev's row, in the order of auditColumns.
func eventArgs(ev AuditEvent) []any {
	return []any{
		ev.ID, ev.Time.UnixNano(), ev.Agent, ev.UserID, ev.Kind, ev.Model,
		ev.Usage.InputTokens, ev.Usage.OutputTokens, ev.Usage.CacheCreationInputTokens, ev.Usage.CacheReadInputTokens,
		ev.Latency.Microseconds(), ev.Outcome, ev.Error, ev.RequestID, int64(ev.Attempts),
		ev.Usage.CacheCreation1hInputTokens, ev.CostNanoUSD, ev.RetryWait.Microseconds(), ev.Source,
	}
}

// Query returns the events that match f, newest first. It reads what is
// written: call Flush first to see events just recorded.
func (a *Auditor) Query(ctx context.Context, f AuditFilter) ([]AuditEvent, error) {
	const op = "audit.query"
	limit := f.Limit
	switch {
	case limit < 0:
		return nil, agentd.InvalidField(op, "limit", "limit must not be negative")
	case limit == 0:
		limit = DefaultAuditLimit
	case limit > MaxAuditLimit:
		limit = MaxAuditLimit
	}
	var where sqlrow.Where
	if f.Agent != "" {
		where.Add("agent = $%d", f.Agent)
	}
	if f.UserID != "" {
		where.Add("user_id = $%d", f.UserID)
	}
	if !f.Since.IsZero() {
		where.Add("at >= $%d", f.Since.UnixNano())
	}
	// id breaks ties between events of the same nanosecond; UUIDv7s of one
	// process sort in the order they were made.
	query := "SELECT " + auditColumns + " FROM audit_events" + where.String() + " ORDER BY at DESC, id DESC LIMIT " + where.Next(int64(limit))

	rows, err := a.db.Query(ctx, query, where.Args...)
	if err != nil {
		return nil, agentd.E("", op, err)
	}
	out := make([]AuditEvent, 0, len(rows.Values))
	for _, r := range rows.Values {
		ev, err := scanEvent(r)
		if err != nil {
			return nil, &agentd.Error{Kind: agentd.KindInternal, Op: op, Message: "unexpected row in audit_events", Err: err}
		}
		out = append(out, ev)
	}
	return out, nil
}

// scanEvent reads a row in the order of auditColumns.
func scanEvent(r []any) (AuditEvent, error) {
	if len(r) != numAuditColumns {
		return AuditEvent{}, fmt.Errorf("%d columns, want %d", len(r), numAuditColumns)
	}
	s := sqlrow.Scanner{Row: r}
	ev := AuditEvent{
		ID:     s.Str(0),
		Time:   time.Unix(0, s.Int(1)).UTC(),
		Agent:  s.Str(2),
		UserID: s.Str(3),
		Kind:   s.Str(4),
		Model:  s.Str(5),
		Usage: agentd.Usage{
			InputTokens: s.Int(6), OutputTokens: s.Int(7),
			CacheCreationInputTokens: s.Int(8), CacheReadInputTokens: s.Int(9),
			CacheCreation1hInputTokens: s.Int(15),
		},
		Latency: time.Duration(s.Int(10)) * time.Microsecond,
		Outcome: s.Str(11), Error: s.Str(12), RequestID: s.Str(13),
		Attempts:    int(s.Int(14)),
		CostNanoUSD: s.Int(16),
		RetryWait:   time.Duration(s.Int(17)) * time.Microsecond,
		Source:      s.Str(18),
	}
	return ev, s.Err
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
