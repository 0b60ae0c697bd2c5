package decision

import (
	"context"
	"encoding/json"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/sqlrow"
)

// ReviewStatus is where a review stands.
type ReviewStatus string

// The statuses of a review.
const (
	ReviewPending  ReviewStatus = "pending"
	ReviewApproved ReviewStatus = "approved"
	ReviewRejected ReviewStatus = "rejected"
)

// Review is one item of the human review queue: a decision held back
// (its effects wait for approval), or a reply a fallback gave in the
// model's place, for a person to follow up.
type Review struct {
	ID         string          `json:"id"`
	Agent      string          `json:"agent"`
	DecisionID string          `json:"decisionId,omitempty"`
	UserID     string          `json:"userId,omitempty"`
	Status     ReviewStatus    `json:"status"`
	Reason     string          `json:"reason"`
	Payload    json.RawMessage `json:"payload"`
	CreatedAt  time.Time       `json:"createdAt"`
	DecidedAt  time.Time       `json:"decidedAt,omitzero"`
	Reviewer   string          `json:"reviewer,omitempty"`
	Note       string          `json:"note,omitempty"`
}

// ReviewFilter selects reviews. Zero fields do not filter.
type ReviewFilter struct {
	Agent  string
	Status ReviewStatus
	Limit  int    // 0: 100; at most 1000
	Before string // list reviews older than this review id (a cursor)
}

const reviewColumns = "id, agent, decision_id, user_id, status, reason, payload, created_at, decided_at, reviewer, note"

func insertReview(ctx context.Context, q agentd.Querier, r *Review) error {
	var decisionID any
	if r.DecisionID != "" {
		decisionID = r.DecisionID
	}
	_, err := q.Exec(ctx, "INSERT INTO reviews ("+reviewColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, '', '')",
		r.ID, r.Agent, decisionID, r.UserID, string(r.Status), r.Reason, jsonText(r.Payload), r.CreatedAt.UnixNano())
	return err
}

// AddReview queues a review that has no decision behind it (a fallback's
// reply to a chat message).
func (s *Store) AddReview(ctx context.Context, r *Review) error {
	if r.ID == "" {
		r.ID = NewID()
	}
	r.Status = ReviewPending
	r.CreatedAt = s.clock.Now().UTC()
	return wrap("review.add", insertReview(ctx, s.db, r))
}

// Review returns one review, or KindNotFound.
func (s *Store) Review(ctx context.Context, id string) (*Review, error) {
	const op = "review.get"
	rows, err := s.db.Query(agentd.WithoutQueryCache(ctx), "SELECT "+reviewColumns+" FROM reviews WHERE id = $1", id)
	if err != nil {
		return nil, agentd.E("", op, err)
	}
	if len(rows.Values) == 0 {
		return nil, agentd.Errorf(agentd.KindNotFound, op, "no review %q", id)
	}
	return scanReview(op, rows.Values[0])
}

// Reviews lists reviews, newest first.
func (s *Store) Reviews(ctx context.Context, f ReviewFilter) ([]Review, error) {
	const op = "review.list"
	limit := f.Limit
	switch {
	case limit < 0:
		return nil, agentd.InvalidField(op, "limit", "limit must not be negative")
	case limit == 0:
		limit = 100
	case limit > 1000:
		return nil, agentd.InvalidField(op, "limit", "limit must be at most 1000")
	}
	switch f.Status {
	case "", ReviewPending, ReviewApproved, ReviewRejected:
	default:
		return nil, agentd.InvalidField(op, "status", "status must be pending, approved or rejected, not %q", f.Status)
	}
	var where sqlrow.Where
	if f.Agent != "" {
		where.Add("agent = $%d", f.Agent)
	}
	if f.Status != "" {
		where.Add("status = $%d", string(f.Status))
	}
	if f.Before != "" {
		where.Add("id < $%d", f.Before)
	}
	q := "SELECT " + reviewColumns + " FROM reviews" + where.String() + " ORDER BY id DESC LIMIT " + where.Next(int64(limit))
	rows, err := s.db.Query(agentd.WithoutQueryCache(ctx), q, where.Args...)
	if err != nil {
		return nil, agentd.E("", op, err)
	}
	out := make([]Review, 0, len(rows.Values))
	for _, r := range rows.Values {
		rv, err := scanReview(op, r)
		if err != nil {
			return nil, err
		}
		out = append(out, *rv)
	}
	return out, nil
}

// Approve moves a pending review to approved, recording who approved it,
// and releases its decision's effects (the decision becomes pending; the
// caller applies them). An item that is not pending — approved already, or
// rejected — fails with KindConflict naming its status; nothing changes.
func (s *Store) Approve(ctx context.Context, id, reviewer, note string) (*Review, error) {
	return s.decide(ctx, "review.approve", id, ReviewApproved, reviewer, note)
}

// Reject moves a pending review to rejected with the reviewer's reason;
// its decision is rejected and its effects never run.
func (s *Store) Reject(ctx context.Context, id, reviewer, reason string) (*Review, error) {
	return s.decide(ctx, "review.reject", id, ReviewRejected, reviewer, reason)
}

func (s *Store) decide(ctx context.Context, op, id string, to ReviewStatus, reviewer, note string) (*Review, error) {
	now := s.clock.Now().UTC()
	decisionStatus := StatusPending
	if to == ReviewRejected {
		decisionStatus = StatusRejected
	}
	err := s.db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		res, err := tx.Exec(ctx, `UPDATE reviews SET status = $1, decided_at = $2, reviewer = $3, note = $4 WHERE id = $5 AND status = 'pending'`,
			string(to), now.UnixNano(), reviewer, note, id)
		if err != nil {
			return err
		}
		if res.RowsAffected == 0 {
			rows, err := tx.Query(ctx, `SELECT status FROM reviews WHERE id = $1`, id)
			if err != nil {
				return err
			}
			if len(rows.Values) == 0 {
				return agentd.Errorf(agentd.KindNotFound, op, "no review %q", id)
			}
			st, _ := rows.Values[0][0].(string)
			return agentd.Errorf(agentd.KindConflict, op, "review %s is %s already", id, st)
		}
		_, err = tx.Exec(ctx, `UPDATE decisions SET status = $1, updated_at = $2 WHERE review_id = $3 AND status = 'review'`,
			string(decisionStatus), now.UnixNano(), id)
		return err
	})
	if err != nil {
		return nil, agentd.E("", op, err)
	}
	return s.Review(ctx, id)
}

func scanReview(op string, r []any) (*Review, error) {
	sc := sqlrow.Scanner{Row: r}
	rv := &Review{
		ID:         sc.Str(0),
		Agent:      sc.Str(1),
		DecisionID: sc.NullStr(2),
		UserID:     sc.Str(3),
		Status:     ReviewStatus(sc.Str(4)),
		Reason:     sc.Str(5),
		Payload:    rawJSON(sc.Str(6)),
		CreatedAt:  time.Unix(0, sc.Int(7)).UTC(),
		Reviewer:   sc.Str(9),
		Note:       sc.Str(10),
	}
	if at := sc.Int(8); at != 0 {
		rv.DecidedAt = time.Unix(0, at).UTC()
	}
	if sc.Err != nil {
		return nil, &agentd.Error{Kind: agentd.KindInternal, Op: op, Message: "unexpected row in reviews", Err: sc.Err}
	}
	return rv, nil
}
