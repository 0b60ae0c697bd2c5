package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/coord"
	"github.com/agentd/agentd/decision"
)

// EffectKind says what an effect does.
type EffectKind string

// The kinds of effect.
const (
	EffectSQL  EffectKind = "sql"  // run a statement in the DB binding
	EffectKV   EffectKind = "kv"   // put a value in the KV binding
	EffectHTTP EffectKind = "http" // POST to a webhook
)

// Effect is a side effect of a valid decision, guarded by a condition.
// Its statement arguments and its webhook body are CEL expressions (typed
// values); keys, values and URLs are templates (text).
type Effect struct {
	Name string
	Kind EffectKind
	When *Expr // nil: always

	SQL  string  // sql
	Args []*Expr // sql

	Key   *Template     // kv
	Value *Template     // kv
	TTL   time.Duration // kv: 0 keeps it forever

	URL     *Template            // http
	Body    *Expr                // http: nil sends {decisionId, agent, input, output}
	Headers map[string]*Template // http: rendered when the effect is applied, never stored (they may carry secrets)
}

// The rendered forms of effects, as stored with the decision: everything
// needed to apply them later, as they were meant when decided.
type (
	sqlSpec struct {
		SQL  string `json:"sql"`
		Args []any  `json:"args"`
	}
	kvSpec struct {
		Key        string `json:"key"`
		Value      string `json:"value"`
		TTLSeconds int64  `json:"ttlSeconds,omitempty"`
	}
	httpSpec struct {
		URL  string          `json:"url"`
		Body json.RawMessage `json:"body"`
	}
)

// render evaluates an effect for a decision into its stored form.
func (e *Effect) render(tdata TemplateData, edata ExprData) (decision.Effect, error) {
	var spec any
	switch e.Kind {
	case EffectSQL:
		args := make([]any, len(e.Args))
		for i, a := range e.Args {
			v, err := a.Value(edata)
			if err != nil {
				return decision.Effect{}, err
			}
			args[i] = sqlArg(v)
		}
		spec = sqlSpec{SQL: e.SQL, Args: args}
	case EffectKV:
		key, err := e.Key.Execute(tdata)
		if err != nil {
			return decision.Effect{}, err
		}
		if err := agentd.ValidateKVKey(key); err != nil {
			return decision.Effect{}, err
		}
		value, err := e.Value.Execute(tdata)
		if err != nil {
			return decision.Effect{}, err
		}
		spec = kvSpec{Key: key, Value: value, TTLSeconds: int64(e.TTL / time.Second)}
	case EffectHTTP:
		url, err := e.URL.Execute(tdata)
		if err != nil {
			return decision.Effect{}, err
		}
		var body any = map[string]any{"decisionId": edata.Decision["id"], "agent": edata.Decision["agent"], "input": edata.Input, "output": edata.Output}
		if e.Body != nil {
			if body, err = e.Body.Value(edata); err != nil {
				return decision.Effect{}, err
			}
		}
		b, err := json.Marshal(body)
		if err != nil {
			return decision.Effect{}, agentd.E(agentd.KindInvalid, "effect", err)
		}
		spec = httpSpec{URL: url, Body: b}
	default:
		return decision.Effect{}, agentd.Errorf(agentd.KindInternal, "effect", "unknown effect kind %q", e.Kind)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return decision.Effect{}, agentd.E(agentd.KindInternal, "effect", err)
	}
	return decision.Effect{Name: e.Name, Kind: string(e.Kind), Spec: b}, nil
}

// EffectDeps are what effects act on.
type EffectDeps struct {
	KV        agentd.KV
	Decisions *decision.Store // its DB is where SQL effects run
	Locks     coord.Locker
	// HTTP posts webhooks; it must enforce the outbound policy. CheckURL
	// is asked first, for a clear error.
	HTTP     *http.Client
	CheckURL func(rawURL string) error
	// HTTPTimeout bounds one webhook call (default 30 s).
	HTTPTimeout time.Duration
	Clock       agentd.Clock
}

// applier applies the stored effects of decisions, each exactly once where
// the target allows it:
//
//   - a SQL effect runs in the same transaction that marks it applied, so
//     it commits exactly once;
//   - a KV effect is a put of a fixed value, marked applied after: if the
//     process dies in between, the retry puts the same value again
//     (at-least-once, and idempotent);
//   - a webhook is sent with an Idempotency-Key header of the decision id
//     and effect index, marked applied after a 2xx: a retry after a lost
//     answer sends the same key again (at-least-once, exactly-once for a
//     receiver that honours the key).
//
// Effects apply in order; the first failure stops the rest, which wait for
// the retry. Appliers of one decision are serialized by a lock on it, so a
// request's retry, an approval and the resumer never apply one concurrently.
type applier struct {
	deps    EffectDeps
	headers func(effectName string) map[string]*Template // the current headers of a named webhook effect
}

// apply applies what is pending of decision id and marks the decision
// applied when nothing is. It returns the decision as it stands.
func (a *applier) apply(ctx context.Context, id string, tdata TemplateData) (*decision.Record, error) {
	lease, err := a.deps.Locks.Lock(ctx, "decision:"+id)
	if err != nil {
		return nil, err
	}
	defer lease.Unlock()
	rec, err := a.deps.Decisions.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.Status != decision.StatusPending {
		return rec, nil
	}
	if err := a.deps.Decisions.Touch(ctx, id); err != nil {
		return nil, err
	}
	for _, e := range rec.Effects {
		if e.Status != decision.EffectPending {
			continue
		}
		if err := a.one(ctx, rec, e, tdata); err != nil {
			reason := clientText(err)
			if markErr := a.deps.Decisions.MarkEffectFailed(context.WithoutCancel(ctx), rec.ID, e.Index, reason); markErr != nil {
				err = fmt.Errorf("%w (and recording the failure: %v)", err, markErr)
			}
			return rec, &agentd.Error{Kind: agentd.KindEffectFailed, Op: "effect." + e.Name,
				Message: fmt.Sprintf("decision %s was recorded, but its effect %q failed: %s; retry the request to finish it", rec.ID, e.Name, reason), Err: err}
		}
	}
	if _, err := a.deps.Decisions.Finish(ctx, id); err != nil {
		return nil, err
	}
	return a.deps.Decisions.Get(ctx, id)
}

func (a *applier) one(ctx context.Context, rec *decision.Record, e decision.Effect, tdata TemplateData) error {
	store := a.deps.Decisions
	switch EffectKind(e.Kind) {
	case EffectSQL:
		var s sqlSpec
		if err := json.Unmarshal(e.Spec, &s); err != nil {
			return agentd.E(agentd.KindInternal, "effect", err)
		}
		return store.DB().Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
			pending, err := store.MarkEffectApplied(ctx, tx, rec.ID, e.Index)
			if err != nil || !pending {
				return err
			}
			_, err = tx.Exec(ctx, s.SQL, s.Args...)
			return err
		})
	case EffectKV:
		var s kvSpec
		if err := json.Unmarshal(e.Spec, &s); err != nil {
			return agentd.E(agentd.KindInternal, "effect", err)
		}
		var opts agentd.KVPutOptions
		if s.TTLSeconds > 0 {
			opts.ExpirationTTL = max(time.Duration(s.TTLSeconds)*time.Second, agentd.MinKVTTL)
		}
		if err := a.deps.KV.Put(ctx, s.Key, []byte(s.Value), opts); err != nil {
			return err
		}
		_, err := store.MarkEffectApplied(ctx, store.DB(), rec.ID, e.Index)
		return err
	case EffectHTTP:
		var s httpSpec
		if err := json.Unmarshal(e.Spec, &s); err != nil {
			return agentd.E(agentd.KindInternal, "effect", err)
		}
		if err := a.post(ctx, rec, e, s, tdata); err != nil {
			return err
		}
		_, err := store.MarkEffectApplied(ctx, store.DB(), rec.ID, e.Index)
		return err
	}
	return agentd.Errorf(agentd.KindInternal, "effect", "unknown effect kind %q", e.Kind)
}

// IdempotencyKey is the key a webhook effect is sent with: the same on
// every retry of that effect, different for every effect.
func IdempotencyKey(decisionID string, index int) string {
	return fmt.Sprintf("%s.%d", decisionID, index)
}

func (a *applier) post(ctx context.Context, rec *decision.Record, e decision.Effect, s httpSpec, tdata TemplateData) error {
	if a.deps.HTTP == nil {
		return agentd.Errorf(agentd.KindForbidden, "effect", "outbound HTTP is not configured")
	}
	if a.deps.CheckURL != nil {
		if err := a.deps.CheckURL(s.URL); err != nil {
			return err
		}
	}
	timeout := a.deps.HTTPTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(s.Body))
	if err != nil {
		return agentd.E(agentd.KindInvalid, "effect", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", IdempotencyKey(rec.ID, e.Index))
	req.Header.Set("Agentd-Decision-Id", rec.ID)
	req.Header.Set("Agentd-Agent", rec.Agent)
	if a.headers != nil {
		for k, t := range a.headers(e.Name) {
			v, err := t.Execute(tdata)
			if err != nil {
				return err
			}
			req.Header.Set(k, v)
		}
	}
	resp, err := a.deps.HTTP.Do(req)
	if err != nil {
		return agentd.Errorf(agentd.KindEffectFailed, "effect", "POST %s: %v", RedactURL(s.URL), unwrapURLError(err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return agentd.Errorf(agentd.KindEffectFailed, "effect", "POST %s answered %d", RedactURL(s.URL), resp.StatusCode)
	}
	return nil
}

// unwrapURLError drops *url.Error's "Post \"URL\":" prefix, which would
// repeat the URL unredacted.
func unwrapURLError(err error) error {
	type unwrapper interface{ Unwrap() error }
	if u, ok := err.(unwrapper); ok {
		if inner := u.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
