package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/decision"
)

// taskRequest runs a task agent on the request body, its input.
func (s *Server) taskRequest(w http.ResponseWriter, r *http.Request, t *agent.Task) {
	var input json.RawMessage
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &input); err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(input) == 0 || input[0] != '{' {
		s.writeError(w, r, agentd.Errorf(agentd.KindInvalid, "decode", "request body must be a JSON object"))
		return
	}
	key := r.Header.Get("Idempotency-Key")
	switch {
	case len(key) > agent.MaxIdempotencyKeyBytes:
		s.writeError(w, r, agentd.InvalidField("task", "Idempotency-Key", "the Idempotency-Key header is longer than %d bytes", agent.MaxIdempotencyKeyBytes))
		return
	case !utf8.ValidString(key):
		s.writeError(w, r, agentd.InvalidField("task", "Idempotency-Key", "the Idempotency-Key header is not valid UTF-8"))
		return
	}
	ctx, cancel := s.withTimeout(r)
	defer cancel()
	start := time.Now()
	res, err := t.Run(ctx, agent.TaskRequest{Input: input, IdempotencyKey: key})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Agentd-Decision-Id", res.DecisionID)
	h.Set("Agentd-Source", res.Source)
	h.Set("Agentd-Status", string(res.Status))
	if res.ReviewID != "" {
		h.Set("Agentd-Review-Id", res.ReviewID)
	}
	if res.Replayed {
		h.Set("Idempotent-Replayed", "true")
	}
	h.Set("Server-Timing", fmt.Sprintf("model;dur=%.3f, total;dur=%.3f", ms(res.ModelLatency), ms(time.Since(start))))
	writeRawJSON(w, http.StatusOK, res.Response)
}

// customRequest runs an agent written in Go on the request body.
func (s *Server) customRequest(w http.ResponseWriter, r *http.Request, c *agent.Custom) {
	// A trigger may carry no body (POST /agents/reconcile): the handler
	// then gets null.
	input := json.RawMessage("null")
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &input); err != nil && !errors.Is(err, errEmptyBody) {
			s.writeError(w, r, err)
			return
		}
	}
	ctx, cancel := s.withTimeout(r)
	defer cancel()
	out, err := c.Run(ctx, input)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeRawJSON(w, http.StatusOK, out)
}

func writeRawJSON(w http.ResponseWriter, status int, body json.RawMessage) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// decisions returns the ledger, or answers 404 when the project has no
// task agents (and so no reviews or decisions).
func (s *Server) decisions(w http.ResponseWriter, r *http.Request) (*decision.Store, bool) {
	if s.cfg.Decisions == nil {
		s.writeError(w, r, agentd.Errorf(agentd.KindNotFound, "reviews", "this project keeps no decisions"))
		return nil, false
	}
	return s.cfg.Decisions, true
}

type reviewList struct {
	Reviews []decision.Review `json:"reviews"`
	// Next is the cursor of the next page (pass it as before=), absent on
	// the last page.
	Next string `json:"next,omitempty"`
}

func (s *Server) listReviews(w http.ResponseWriter, r *http.Request) {
	store, ok := s.decisions(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	f := decision.ReviewFilter{Agent: q.Get("agent"), Status: decision.ReviewStatus(q.Get("status")), Before: q.Get("before")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			s.writeError(w, r, agentd.InvalidField("reviews", "limit", "limit must be a number"))
			return
		}
		f.Limit = n
	}
	ctx, cancel := s.withTimeout(r)
	defer cancel()
	list, err := store.Reviews(ctx, f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	resp := reviewList{Reviews: list}
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	if len(list) == limit {
		resp.Next = list[len(list)-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
}

type reviewDetail struct {
	Review   *decision.Review `json:"review"`
	Decision *decision.Record `json:"decision,omitempty"`
}

func (s *Server) getReview(w http.ResponseWriter, r *http.Request) {
	store, ok := s.decisions(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.withTimeout(r)
	defer cancel()
	rv, err := store.Review(ctx, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	resp := reviewDetail{Review: rv}
	if rv.DecisionID != "" {
		if resp.Decision, err = store.Get(ctx, rv.DecisionID); err != nil {
			s.writeError(w, r, err)
			return
		}
		redactEffects(resp.Decision)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) getDecision(w http.ResponseWriter, r *http.Request) {
	store, ok := s.decisions(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.withTimeout(r)
	defer cancel()
	rec, err := store.Get(ctx, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	redactEffects(rec)
	writeJSON(w, http.StatusOK, rec)
}

// redactEffects keeps webhook URLs' queries and user info, which may hold
// secrets, out of API answers.
func redactEffects(rec *decision.Record) {
	for i, e := range rec.Effects {
		if e.Kind != string(agent.EffectHTTP) {
			continue
		}
		var spec map[string]any
		if json.Unmarshal(e.Spec, &spec) != nil {
			continue
		}
		if u, ok := spec["url"].(string); ok {
			spec["url"] = agent.RedactURL(u)
		}
		rec.Effects[i].Spec, _ = json.Marshal(spec)
	}
}

// reviewAction is the body of approve and reject.
type reviewAction struct {
	Reviewer *string `json:"reviewer"`
	Note     string  `json:"note"`   // approve: optional
	Reason   string  `json:"reason"` // reject: required
}

const maxReviewerBytes = 256

func (s *Server) decodeReviewAction(w http.ResponseWriter, r *http.Request, needReason bool) (reviewAction, bool) {
	var a reviewAction
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &a); err != nil {
		s.writeError(w, r, err)
		return a, false
	}
	switch {
	case a.Reviewer == nil || strings.TrimSpace(*a.Reviewer) == "":
		s.writeError(w, r, agentd.InvalidField("review", "reviewer", "reviewer (who decides) is required"))
		return a, false
	case len(*a.Reviewer) > maxReviewerBytes || !utf8.ValidString(*a.Reviewer):
		s.writeError(w, r, agentd.InvalidField("review", "reviewer", "reviewer must be at most %d bytes of UTF-8", maxReviewerBytes))
		return a, false
	case needReason && strings.TrimSpace(a.Reason) == "":
		s.writeError(w, r, agentd.InvalidField("review", "reason", "a rejection needs a reason"))
		return a, false
	case len(a.Note) > 4096 || len(a.Reason) > 4096:
		s.writeError(w, r, agentd.InvalidField("review", "note", "note and reason must be at most 4096 bytes"))
		return a, false
	}
	return a, true
}

func (s *Server) approveReview(w http.ResponseWriter, r *http.Request) {
	store, ok := s.decisions(w, r)
	if !ok {
		return
	}
	a, ok := s.decodeReviewAction(w, r, false)
	if !ok {
		return
	}
	ctx, cancel := s.withTimeout(r)
	defer cancel()
	id := r.PathValue("id")
	rv, err := store.Review(ctx, id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	resp := reviewDetail{}
	if rv.DecisionID == "" {
		// A fallback's reply to a chat message: approving acknowledges it.
		resp.Review, err = store.Approve(ctx, id, *a.Reviewer, a.Note)
	} else {
		t, found := s.tasks[rv.Agent]
		if !found {
			s.writeError(w, r, agentd.Errorf(agentd.KindNotFound, "review.approve", "agent %q of review %s is no longer configured; its effects cannot be applied", rv.Agent, id))
			return
		}
		resp.Review, resp.Decision, err = t.Approve(ctx, id, *a.Reviewer, a.Note)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if resp.Decision != nil {
		redactEffects(resp.Decision)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) rejectReview(w http.ResponseWriter, r *http.Request) {
	store, ok := s.decisions(w, r)
	if !ok {
		return
	}
	a, ok := s.decodeReviewAction(w, r, true)
	if !ok {
		return
	}
	ctx, cancel := s.withTimeout(r)
	defer cancel()
	rv, err := store.Reject(ctx, r.PathValue("id"), *a.Reviewer, a.Reason)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, reviewDetail{Review: rv})
}
