// Package resilient holds agentd's one retry layer for model calls, and a
// circuit breaker per model: an agentd.Model that wraps another (the
// model/anthropic client, built with its SDK retries off) and retries what
// can succeed later, with backoff, within the caller's deadline.
//
// Retries live here and nowhere else, so a call is never retried by two
// layers at once (3 × 3 attempts), and what the SDK cannot retry is retried
// too: an overloaded_error that arrives as an SSE event after the 200, or a
// stream cut before its first text. Every attempt, and every call refused by
// an open breaker, is recorded in the context's agentd.CallTrace.
//
// The breakers keep a model that is down or overloaded from being sent
// every call (each waiting out its timeouts and retries) and let callers
// fall back at once: FailureThreshold calls in a row that end with the model
// unavailable open a model's breaker for OpenFor, then one call probes it.
package resilient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/agentd/agentd"
)

// op is the Op of the errors this package makes itself.
const op = "model"

// The defaults of Config.
const (
	DefaultMaxRetries       = 2
	DefaultBaseBackoff      = 500 * time.Millisecond
	DefaultMaxBackoff       = 8 * time.Second
	DefaultFailureThreshold = 5
	DefaultOpenFor          = 30 * time.Second
)

// maxRetryAfter is the longest retry-after that is waited for. A model that
// asks for more is not coming back within a request: the error is returned
// at once, its RetryAfter set, for the caller to fall back or give up. (The
// SDK draws the line at a minute too, but then retries on its own backoff,
// which a server asking for more is likely to refuse.)
const maxRetryAfter = time.Minute

// Config configures a Model. The zero value is the defaults.
type Config struct {
	// MaxRetries is how many times a failed attempt is retried: 0 means
	// DefaultMaxRetries, negative none.
	MaxRetries int
	// Retry n (from 0) waits BaseBackoff·2ⁿ, capped at MaxBackoff, less a
	// jitter of up to a quarter: a wait in (¾d, d] for that d. A longer
	// RetryAfter of the error is waited instead.
	BaseBackoff time.Duration // 0 means DefaultBaseBackoff
	MaxBackoff  time.Duration // 0 means DefaultMaxBackoff
	// FailureThreshold is how many calls in a row must fail with the model
	// unavailable (after their retries) to open its breaker: 0 means
	// DefaultFailureThreshold, negative never.
	FailureThreshold int
	// OpenFor is how long an open breaker refuses calls before it lets one
	// through to probe the model. 0 means DefaultOpenFor.
	OpenFor time.Duration
	// Clock times the backoff and the breakers. Default: the real clock.
	Clock clockwork.Clock
	// Jitter returns a number in [0,1) for each wait. Default: math/rand/v2.
	Jitter func() float64

	// Hooks for metrics, called synchronously; nil ones are skipped.
	// OnRetry is called before each backoff wait with the error retried.
	OnRetry func(model string, wait time.Duration, err error)
	// OnBreakerChange is called on each change of a breaker's state, under
	// the Model's lock, so that changes are reported in order: it must be
	// quick and must not call the Model.
	OnBreakerChange func(model string, from, to State)
}

// State is the state of a model's circuit breaker.
type State int

// The states of a breaker.
const (
	Closed   State = iota // calls go through; failures in a row are counted
	Open                  // calls fail at once, without a request
	HalfOpen              // one call goes through to probe the model; others fail at once
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Model is an agentd.Model that retries the calls of another and keeps a
// circuit breaker per model name (ModelRequest.Model). It is safe for
// concurrent use; it starts no goroutines.
type Model struct {
	inner agentd.Model
	cfg   Config

	mu       sync.Mutex // guards breakers and every breaker in it
	breakers map[string]*breaker
}

var _ agentd.Model = (*Model)(nil)

// New returns a Model that sends its calls to inner.
func New(inner agentd.Model, cfg Config) *Model {
	switch {
	case cfg.MaxRetries == 0:
		cfg.MaxRetries = DefaultMaxRetries
	case cfg.MaxRetries < 0:
		cfg.MaxRetries = 0
	}
	if cfg.BaseBackoff <= 0 {
		cfg.BaseBackoff = DefaultBaseBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.BaseBackoff)
	if cfg.FailureThreshold == 0 {
		cfg.FailureThreshold = DefaultFailureThreshold
	}
	if cfg.OpenFor <= 0 {
		cfg.OpenFor = DefaultOpenFor
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	return &Model{inner: inner, cfg: cfg, breakers: map[string]*breaker{}}
}

// Generate sends req to the inner model, retrying what can succeed later:
// a rate limit, an overloaded or failing API (408, 409, 429, 5xx, 529), a
// connection error, a stream cut short or an attempt that timed out — but
// not a request the API refused (other 4xx), not the caller's own
// cancellation, and not a streamed answer that failed after OnTextDelta
// passed text on, since the receiver has seen part of it.
//
// A wait that would end after the context's deadline is not taken: the
// last error is returned at once. After the last attempt, its error is
// returned as it came, kind and Upstream kept, for the caller to decide on
// a fallback.
//
// While the model's breaker is open, Generate fails at once with
// agentd.KindModelUnavailable, "circuit open for model X", RetryAfter set to
// when it half-opens, and sends nothing. Once half-open, the first call
// probes the model with a single attempt (no retries: a model still down
// gets one request, not MaxRetries+1) while the others fail at once; an
// answer — or a 4xx, which shows the API is up — closes the breaker, an
// unavailability re-opens it for OpenFor.
func (m *Model) Generate(ctx context.Context, req agentd.ModelRequest) (agentd.ModelResponse, error) {
	trace := agentd.CallTraceFrom(ctx)
	t, err := m.admit(req.Model)
	if err != nil {
		trace.Add(agentd.Attempt{Model: req.Model, Outcome: "circuit_open"})
		return agentd.ModelResponse{}, err
	}
	res := neutral
	// Deferred, so that a probe whose caller panics (in OnTextDelta, say)
	// does not leave its breaker half-open for good.
	defer func() { m.done(req.Model, t, res) }()

	var delivered atomic.Bool
	if on := req.OnTextDelta; on != nil {
		req.OnTextDelta = func(s string) {
			delivered.Store(true)
			on(s)
		}
	}
	retries := m.cfg.MaxRetries
	if t.probe {
		retries = 0 // a probe is one request
	}

	var wait time.Duration
	for n := 0; ; n++ {
		start := m.cfg.Clock.Now()
		resp, err := m.inner.Generate(ctx, req)
		trace.Add(agentd.Attempt{Model: req.Model, Outcome: outcome(err), Status: status(err), Latency: m.cfg.Clock.Since(start), Wait: wait})
		if err == nil {
			res = success
			return resp, nil
		}
		res = judge(ctx, err)
		if n >= retries || delivered.Load() || !retryable(ctx, err) {
			return resp, err
		}
		wait = m.backoff(n, err)
		if wait < 0 || !m.fits(ctx, wait) {
			return resp, err
		}
		if m.cfg.OnRetry != nil {
			m.cfg.OnRetry(req.Model, wait, err)
		}
		if werr := m.sleep(ctx, wait); werr != nil {
			// The caller gave up, which says nothing of the model.
			res = neutral
			return agentd.ModelResponse{}, gaveUp(werr, err)
		}
	}
}

// gaveUp is the error of a call whose context ended (ctxErr) while it
// waited to retry after last: KindTimeout, as agentd.E classifies context
// errors, with both in the chain.
func gaveUp(ctxErr, last error) error {
	msg := "the model call was cancelled while it waited to retry"
	if errors.Is(ctxErr, context.DeadlineExceeded) {
		msg = "the model call ran out of time while it waited to retry"
	}
	return &agentd.Error{Kind: agentd.KindTimeout, Op: op, Message: msg, Err: fmt.Errorf("%w; the last attempt: %w", ctxErr, last)}
}

// backoff is the wait before retry n (from 0) of a call that failed with
// err, or -1 when err asks for a wait too long to take.
func (m *Model) backoff(n int, err error) time.Duration {
	d := m.cfg.BaseBackoff
	for i := 0; i < n && d < m.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, m.cfg.MaxBackoff)
	// Less up to a quarter, as the SDK's backoff does: spread, never longer.
	d -= time.Duration(float64(d) * m.cfg.Jitter() / 4)
	if ra := agentd.AsError(err).RetryAfter; ra > 0 {
		if ra > maxRetryAfter {
			return -1
		}
		d = max(d, ra)
	}
	return d
}

// fits reports whether a wait of d ends before the context's deadline:
// there is no point in a retry the caller will not wait for. The deadline
// is read against Config.Clock, the real clock in production.
func (m *Model) fits(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	return !ok || !m.cfg.Clock.Now().Add(d).After(dl)
}

// sleep waits d on the clock, or until ctx is done.
func (m *Model) sleep(ctx context.Context, d time.Duration) error {
	t := m.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryable reports whether an attempt that failed with err may succeed if
// sent again.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false // the caller gave up: nothing to retry for
	}
	ae := agentd.AsError(err)
	if u := ae.Upstream; u != nil && u.Status >= 400 {
		// The API's own word, by status, as the SDK would retry: 409 is a
		// conflict of the API's, not of the request.
		switch u.Status {
		case http.StatusRequestTimeout, http.StatusConflict, http.StatusTooManyRequests:
			return true
		}
		return u.Status >= 500
	}
	// No status (connection errors, attempt timeouts, streams cut short), or
	// an SSE error event after the 200, which model/anthropic classifies by
	// its type.
	return unavailable(ae.Kind)
}

// unavailable reports whether kind says the model could not answer now.
// ctx is live: a KindTimeout is then an attempt's own timeout.
func unavailable(kind agentd.Kind) bool {
	switch kind {
	case agentd.KindModelUnavailable, agentd.KindRateLimited, agentd.KindTimeout:
		return true
	}
	return false
}

// outcome is an attempt's Outcome in the trace.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	ae := agentd.AsError(err)
	if ae.Upstream != nil && ae.Upstream.Type != "" {
		return ae.Upstream.Type
	}
	return string(ae.Kind)
}

// status is an attempt's Status in the trace: the HTTP status the API
// answered with. An answer came with a 200 (or it would be an error).
func status(err error) int {
	if err == nil {
		return http.StatusOK
	}
	if u := agentd.AsError(err).Upstream; u != nil {
		return u.Status
	}
	return 0
}
