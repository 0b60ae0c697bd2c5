package agentd

import (
	"context"
	"slices"
	"sync"
	"time"
)

// CallTrace collects what happened inside one logical model call — every
// attempt the layers under the caller made, and how long each waited before
// it — so the caller can audit a call that was retried, failed fast, or
// went to another model. Attach one to a context with WithCallTrace; the
// layers find it with CallTraceFrom. It is safe for concurrent use.
type CallTrace struct {
	mu       sync.Mutex
	attempts []Attempt
}

// Attempt is one try at the model API, or a call refused without trying.
type Attempt struct {
	Model   string        // the model asked
	Outcome string        // "ok", or the error type (upstream's when there is one, e.g. "overloaded_error"; "circuit_open")
	Status  int           // the HTTP status the API answered with, 0 when none
	Latency time.Duration // the attempt's own time
	Wait    time.Duration // the backoff slept before this attempt
}

// Add records an attempt.
func (t *CallTrace) Add(a Attempt) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.attempts = append(t.attempts, a)
	t.mu.Unlock()
}

// Attempts returns the attempts recorded so far, in order.
func (t *CallTrace) Attempts() []Attempt {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.attempts)
}

// Waited is the total backoff of the recorded attempts.
func (t *CallTrace) Waited() time.Duration {
	var d time.Duration
	for _, a := range t.Attempts() {
		d += a.Wait
	}
	return d
}

type callTraceKey struct{}

// WithCallTrace returns a context that carries t to the model layers.
func WithCallTrace(ctx context.Context, t *CallTrace) context.Context {
	return context.WithValue(ctx, callTraceKey{}, t)
}

// CallTraceFrom returns the CallTrace of ctx, or nil. Add on a nil
// *CallTrace does nothing, so layers need not check.
func CallTraceFrom(ctx context.Context) *CallTrace {
	t, _ := ctx.Value(callTraceKey{}).(*CallTrace)
	return t
}
