// Package decision keeps the durable record of what task agents decided —
// each decision with its input, the context it used (as references, not
// documents), the model's output, tokens, cost and latency — together with
// the side effects planned for it, whether each was applied, and the human
// review queue. It is the ledger that makes effects exactly-once: a
// decision is recorded before any effect runs, and each effect is marked
// applied as it completes, so a retry or a restart finishes what was
// started and never repeats what was done.
//
// Its tables (decisions, decision_effects, reviews) are migrated by
// store/migrate with the runtime's other tables, in SQLite and Postgres
// alike. It imports only the root package.
package decision

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/sqlrow"
	"github.com/google/uuid"
)

// Status is where a decision stands.
type Status string

// The statuses of a decision.
const (
	// StatusPending: recorded; some effects are not applied yet (they are
	// being applied, one failed, or the process stopped in between).
	StatusPending Status = "pending"
	// StatusApplied: every effect is applied (or there were none).
	StatusApplied Status = "applied"
	// StatusReview: held for a human; no effect runs until approved.
	StatusReview Status = "review"
	// StatusRejected: a reviewer rejected it; its effects never run.
	StatusRejected Status = "rejected"
)

// EffectStatus is where one effect stands.
type EffectStatus string

// The statuses of an effect.
const (
	EffectPending EffectStatus = "pending"
	EffectApplied EffectStatus = "applied"
)

// Record is one decision.
type Record struct {
	ID             string          `json:"id"`
	Agent          string          `json:"agent"`
	IdempotencyKey string          `json:"idempotencyKey,omitempty"`
	InputHash      string          `json:"-"`
	At             time.Time       `json:"at"`
	UpdatedAt      time.Time       `json:"updatedAt"`
	Status         Status          `json:"status"`
	Source         string          `json:"source"` // model, fallback_model, cache, rules, canned, precondition
	Model          string          `json:"model,omitempty"`
	Input          json.RawMessage `json:"input"`
	ContextRefs    json.RawMessage `json:"context"`
	Output         json.RawMessage `json:"output"`
	Response       json.RawMessage `json:"response"`
	Usage          agentd.Usage    `json:"usage"`
	CostNanoUSD    int64           `json:"costNanoUsd"`
	Latency        time.Duration   `json:"-"`
	Steps          int             `json:"steps"`
	Effects        []Effect        `json:"effects"`
	ReviewID       string          `json:"reviewId,omitempty"`
}

// Effect is one side effect planned for a decision, rendered: everything
// needed to apply it later is in Spec, so applying it after a restart or an
// approval does what the decision meant, whatever changed since.
type Effect struct {
	Index     int             `json:"index"`
	Name      string          `json:"name"`
	Kind      string          `json:"kind"` // sql, kv, http
	Spec      json.RawMessage `json:"spec"`
	Status    EffectStatus    `json:"status"`
	Attempts  int             `json:"attempts"`
	LastError string          `json:"lastError,omitempty"`
	AppliedAt time.Time       `json:"appliedAt,omitzero"`
}

// Store reads and writes decisions and reviews in a DB whose runtime
// tables are migrated.
type Store struct {
	db    agentd.DB
	clock agentd.Clock
}

// New returns a Store over db.
func New(db agentd.DB, clock agentd.Clock) *Store {
	if clock == nil {
		clock = agentd.SystemClock{}
	}
	return &Store{db: db, clock: clock}
}

// DB is the database the store writes to; SQL effects run in it, in the
// same transaction that marks them applied.
func (s *Store) DB() agentd.DB { return s.db }

// NewID returns a decision or review id: a UUIDv7, so ids sort by time.
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

const decisionColumns = "id, agent, idempotency_key, input_hash, at, updated_at, status, source, model, input, context_refs, output, response, " +
	"input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cache_creation_1h_input_tokens, cost_nusd, latency_us, steps, review_id"

// Create records a decision, its effects and, when it is held for review,
// its review, in one transaction. A decision whose idempotency key the
// agent already used fails with KindConflict and records nothing.
func (s *Store) Create(ctx context.Context, rec *Record, review *Review) error {
	const op = "decision.create"
	now := s.clock.Now().UTC()
	if rec.ID == "" {
		rec.ID = NewID()
	}
	if rec.At.IsZero() {
		rec.At = now
	}
	rec.UpdatedAt = now
	if review != nil {
		if review.ID == "" {
			review.ID = NewID()
		}
		review.DecisionID = rec.ID
		review.Agent = rec.Agent
		review.Status = ReviewPending
		review.CreatedAt = now
		rec.ReviewID = review.ID
		rec.Status = StatusReview
	}
	for i := range rec.Effects {
		rec.Effects[i].Index = i
		if rec.Effects[i].Status == "" {
			rec.Effects[i].Status = EffectPending
		}
	}
	var idem any
	if rec.IdempotencyKey != "" {
		idem = rec.IdempotencyKey
	}
	err := s.db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		_, err := tx.Exec(ctx, "INSERT INTO decisions ("+decisionColumns+") VALUES ("+placeholders(1, 22)+")",
			rec.ID, rec.Agent, idem, rec.InputHash, rec.At.UnixNano(), rec.UpdatedAt.UnixNano(), string(rec.Status), rec.Source, rec.Model,
			jsonText(rec.Input), jsonText(rec.ContextRefs), jsonText(rec.Output), jsonText(rec.Response),
			rec.Usage.InputTokens, rec.Usage.OutputTokens, rec.Usage.CacheCreationInputTokens, rec.Usage.CacheReadInputTokens, rec.Usage.CacheCreation1hInputTokens,
			rec.CostNanoUSD, rec.Latency.Microseconds(), int64(rec.Steps), rec.ReviewID)
		if err != nil {
			return err
		}
		for _, e := range rec.Effects {
			if _, err := tx.Exec(ctx, `INSERT INTO decision_effects (decision_id, idx, name, kind, spec, status, attempts, last_error, applied_at)
				VALUES ($1, $2, $3, $4, $5, $6, 0, '', 0)`, rec.ID, int64(e.Index), e.Name, e.Kind, jsonText(e.Spec), string(e.Status)); err != nil {
				return err
			}
		}
		if review != nil {
			return insertReview(ctx, tx, review)
		}
		return nil
	})
	if err != nil {
		if agentd.KindOf(err) == agentd.KindConflict && rec.IdempotencyKey != "" {
			return &agentd.Error{Kind: agentd.KindConflict, Op: op, Message: fmt.Sprintf("a decision with idempotency key %q exists", rec.IdempotencyKey), Err: err}
		}
		return agentd.E("", op, err)
	}
	return nil
}

// Get returns the decision with its effects, or KindNotFound.
func (s *Store) Get(ctx context.Context, id string) (*Record, error) {
	return s.one(ctx, "decision.get", "id = $1", id)
}

// ByIdempotencyKey returns the agent's decision made under key, or
// KindNotFound.
func (s *Store) ByIdempotencyKey(ctx context.Context, agent, key string) (*Record, error) {
	return s.one(ctx, "decision.idempotency", "agent = $1 AND idempotency_key = $2", agent, key)
}

// LatestForInput returns the agent's newest decision on an input of this
// hash that a model or a fallback model answered: the cached answer a
// fallback chain may serve when the model is down. KindNotFound if none.
func (s *Store) LatestForInput(ctx context.Context, agent, inputHash string) (*Record, error) {
	return s.one(ctx, "decision.cached", "agent = $1 AND input_hash = $2 AND source IN ('model', 'fallback_model') AND status <> 'rejected' ORDER BY at DESC LIMIT 1", agent, inputHash)
}

func (s *Store) one(ctx context.Context, op, where string, args ...any) (*Record, error) {
	rows, err := s.db.Query(agentd.WithoutQueryCache(ctx), "SELECT "+decisionColumns+" FROM decisions WHERE "+where, args...)
	if err != nil {
		return nil, agentd.E("", op, err)
	}
	if len(rows.Values) == 0 {
		return nil, agentd.Errorf(agentd.KindNotFound, op, "no such decision")
	}
	rec, err := scanDecision(rows.Values[0])
	if err != nil {
		return nil, &agentd.Error{Kind: agentd.KindInternal, Op: op, Message: "unexpected row in decisions", Err: err}
	}
	if rec.Effects, err = s.effects(ctx, rec.ID); err != nil {
		return nil, err
	}
	return rec, nil
}

func (s *Store) effects(ctx context.Context, id string) ([]Effect, error) {
	const op = "decision.effects"
	rows, err := s.db.Query(agentd.WithoutQueryCache(ctx),
		`SELECT idx, name, kind, spec, status, attempts, last_error, applied_at FROM decision_effects WHERE decision_id = $1 ORDER BY idx`, id)
	if err != nil {
		return nil, agentd.E("", op, err)
	}
	out := make([]Effect, 0, len(rows.Values))
	for _, r := range rows.Values {
		sc := sqlrow.Scanner{Row: r}
		e := Effect{
			Index: int(sc.Int(0)), Name: sc.Str(1), Kind: sc.Str(2), Spec: json.RawMessage(sc.Str(3)),
			Status: EffectStatus(sc.Str(4)), Attempts: int(sc.Int(5)), LastError: sc.Str(6),
		}
		if at := sc.Int(7); at != 0 {
			e.AppliedAt = time.Unix(0, at).UTC()
		}
		if sc.Err != nil {
			return nil, &agentd.Error{Kind: agentd.KindInternal, Op: op, Message: "unexpected row in decision_effects", Err: sc.Err}
		}
		out = append(out, e)
	}
	return out, nil
}

// MarkEffectApplied marks one effect applied, through q: pass the
// transaction that applied a SQL effect, so the effect and its mark commit
// together. It reports false, changing nothing, if the effect was not
// pending: someone applied it already.
func (s *Store) MarkEffectApplied(ctx context.Context, q agentd.Querier, id string, idx int) (bool, error) {
	res, err := q.Exec(ctx, `UPDATE decision_effects SET status = 'applied', attempts = attempts + 1, last_error = '', applied_at = $1
		WHERE decision_id = $2 AND idx = $3 AND status = 'pending'`, s.clock.Now().UnixNano(), id, int64(idx))
	if err != nil {
		return false, agentd.E("", "decision.effect_applied", err)
	}
	return res.RowsAffected == 1, nil
}

// MarkEffectFailed counts a failed attempt at an effect, keeping a short
// reason, and leaves it pending for the next try.
func (s *Store) MarkEffectFailed(ctx context.Context, id string, idx int, reason string) error {
	if len(reason) > 1024 {
		reason = reason[:1024]
	}
	_, err := s.db.Exec(ctx, `UPDATE decision_effects SET attempts = attempts + 1, last_error = $1
		WHERE decision_id = $2 AND idx = $3 AND status = 'pending'`, reason, id, int64(idx))
	return wrap("decision.effect_failed", err)
}

// Finish marks a pending decision applied once none of its effects is
// pending, and returns its status afterwards.
func (s *Store) Finish(ctx context.Context, id string) (Status, error) {
	const op = "decision.finish"
	_, err := s.db.Exec(ctx, `UPDATE decisions SET status = 'applied', updated_at = $1
		WHERE id = $2 AND status = 'pending'
		AND NOT EXISTS (SELECT 1 FROM decision_effects WHERE decision_id = $2 AND status = 'pending')`, s.clock.Now().UnixNano(), id)
	if err != nil {
		return "", agentd.E("", op, err)
	}
	rows, err := s.db.Query(agentd.WithoutQueryCache(ctx), `SELECT status FROM decisions WHERE id = $1`, id)
	if err != nil {
		return "", agentd.E("", op, err)
	}
	if len(rows.Values) == 0 {
		return "", agentd.Errorf(agentd.KindNotFound, op, "no decision %s", id)
	}
	st, _ := rows.Values[0][0].(string)
	return Status(st), nil
}

// Unfinished returns the ids of the agent's decisions left pending since
// before olderThan, oldest first, at most limit: the work a restart or a
// crash left for the resumer.
func (s *Store) Unfinished(ctx context.Context, agent string, olderThan time.Time, limit int) ([]string, error) {
	rows, err := s.db.Query(agentd.WithoutQueryCache(ctx), `SELECT id FROM decisions WHERE status = 'pending' AND agent = $1 AND updated_at < $2 ORDER BY updated_at LIMIT $3`,
		agent, olderThan.UnixNano(), int64(limit))
	if err != nil {
		return nil, agentd.E("", "decision.unfinished", err)
	}
	ids := make([]string, 0, len(rows.Values))
	for _, r := range rows.Values {
		if id, ok := r[0].(string); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Touch moves a pending decision's updated_at to now, so the resumer
// leaves a decision alone while a request is finishing it.
func (s *Store) Touch(ctx context.Context, id string) error {
	_, err := s.db.Exec(ctx, `UPDATE decisions SET updated_at = $1 WHERE id = $2`, s.clock.Now().UnixNano(), id)
	return wrap("decision.touch", err)
}

func scanDecision(r []any) (*Record, error) {
	sc := sqlrow.Scanner{Row: r}
	rec := &Record{
		ID:             sc.Str(0),
		Agent:          sc.Str(1),
		IdempotencyKey: sc.NullStr(2),
		InputHash:      sc.Str(3),
		At:             time.Unix(0, sc.Int(4)).UTC(),
		UpdatedAt:      time.Unix(0, sc.Int(5)).UTC(),
		Status:         Status(sc.Str(6)),
		Source:         sc.Str(7),
		Model:          sc.Str(8),
		Input:          rawJSON(sc.Str(9)),
		ContextRefs:    rawJSON(sc.Str(10)),
		Output:         rawJSON(sc.Str(11)),
		Response:       rawJSON(sc.Str(12)),
		Usage: agentd.Usage{
			InputTokens: sc.Int(13), OutputTokens: sc.Int(14),
			CacheCreationInputTokens: sc.Int(15), CacheReadInputTokens: sc.Int(16), CacheCreation1hInputTokens: sc.Int(17),
		},
		CostNanoUSD: sc.Int(18),
		Latency:     time.Duration(sc.Int(19)) * time.Microsecond,
		Steps:       int(sc.Int(20)),
		ReviewID:    sc.Str(21),
	}
	return rec, sc.Err
}

// wrap classifies err for op, keeping its kind; nil stays nil.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return agentd.E("", op, err)
}

func jsonText(b json.RawMessage) string {
	if len(b) == 0 {
		return "null"
	}
	return string(b)
}

func rawJSON(s string) json.RawMessage {
	if s == "" {
		return json.RawMessage("null")
	}
	return json.RawMessage(s)
}

// placeholders returns "$from, …, $to".
func placeholders(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		if i > from {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", i)
	}
	return b.String()
}
