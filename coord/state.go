package coord

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/agentd/agentd"
)

// Defaults of the options of State.
const (
	// defaultMaxAttempts bounds the compare-and-swap attempts of one Update.
	// Same-process updates of a key are serialized before they reach the
	// store, so only other nodes cause conflicts; sixteen rounds of losing
	// to them means the key is too hot for optimistic updates, and the
	// caller is better told so than kept waiting.
	defaultMaxAttempts = 16
	// defaultBackoffBase and defaultBackoffMax shape the wait between
	// attempts: full jitter over an exponentially growing window, so nodes
	// that collided once spread out instead of colliding again in step.
	defaultBackoffBase = 2 * time.Millisecond
	defaultBackoffMax  = 64 * time.Millisecond
	// defaultHoldTTL is how long a budget reservation counts when it is
	// neither settled nor released: longer than any model call should
	// take, short enough that a node dying with one does not keep the
	// budget blocked for long.
	defaultHoldTTL = 10 * time.Minute
)

// Option configures NewState, NewRateLimiter and NewBudgets. The retry
// options apply to all three (the rate limiter and budgets update through a
// State); WithHoldTTL applies to budgets only and is ignored by the others.
type Option func(*options)

type options struct {
	maxAttempts             int
	backoffBase, backoffMax time.Duration
	holdTTL                 time.Duration
}

func newOptions(opts []Option) options {
	o := options{
		maxAttempts: defaultMaxAttempts,
		backoffBase: defaultBackoffBase,
		backoffMax:  defaultBackoffMax,
		holdTTL:     defaultHoldTTL,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithMaxAttempts bounds the compare-and-swap attempts of one update
// (default 16). A non-positive value keeps the default.
func WithMaxAttempts(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxAttempts = n
		}
	}
}

// WithBackoff sets the wait between attempts after a conflict: a random
// duration up to base·2ⁿ⁻¹ before attempt n+1, at most limit (defaults 2 ms
// and 64 ms). Zero waits not at all, which only makes sense in tests.
func WithBackoff(base, limit time.Duration) Option {
	return func(o *options) {
		o.backoffBase, o.backoffMax = max(base, 0), max(limit, 0)
	}
}

// WithHoldTTL sets how long a budget reservation counts when it is neither
// settled nor released (default 10 minutes). A non-positive value keeps the
// default.
func WithHoldTTL(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.holdTTL = d
		}
	}
}

// UpdateFunc computes the new value of a key from its current one (exists is
// false when the key is absent or expired). It returns the value to write
// and its TTL (0: no expiry; below agentd.MinKVTTL: rounded up to it), or
// nil to leave the key as it is. An error aborts the update and is returned
// by Update unchanged.
//
// It may be called more than once per Update, once per attempt, each time
// with fresher data, so it must not have effects beyond its return values;
// a caller that needs a result keeps the one of the last call.
type UpdateFunc func(old []byte, exists bool) (value []byte, ttl time.Duration, err error)

// State updates single KV keys atomically: read, compute, compare-and-swap,
// and again from a fresh read if another writer got in between. Over a KV
// shared by several nodes (Redis) every node's updates of a key are
// linearized by the store; over an embedded one (bolt) the process's are.
//
// Updates of one key within the process wait for each other on a Local
// lock, so concurrency inside a node never costs retries: only other nodes
// can make a compare-and-swap fail. State is safe for concurrent use.
type State struct {
	kv    agentd.KV
	locks *Local
	opts  options
}

// NewState returns a State over kv.
func NewState(kv agentd.KV, opts ...Option) *State {
	return newState(kv, newOptions(opts))
}

func newState(kv agentd.KV, o options) *State {
	return &State{kv: kv, locks: NewLocal(), opts: o}
}

// Update applies fn to key atomically: the value fn returns is written only
// if the key has not changed since fn saw it; otherwise fn runs again on the
// new value, after a short random wait, up to the attempt bound. When every
// attempt conflicts, the error is of KindConflict; when ctx ends while the
// update waits (its turn in the process, or a backoff), of KindTimeout.
func (s *State) Update(ctx context.Context, key string, fn UpdateFunc) error {
	const op = "coord.update"
	if err := agentd.ValidateKVKey(key); err != nil {
		return err
	}
	lease, err := s.locks.Lock(ctx, key)
	if err != nil {
		return err
	}
	defer lease.Unlock()

	var lastConflict error
	for attempt := range s.opts.maxAttempts {
		if attempt > 0 {
			if err := s.backoff(ctx, attempt); err != nil {
				return agentd.E("", op, err)
			}
		}
		var (
			old     []byte
			version uint64
		)
		entry, err := s.kv.Get(ctx, key)
		switch {
		case err == nil:
			old, version = entry.Value, entry.Version
		case agentd.KindOf(err) != agentd.KindNotFound:
			return agentd.E("", op, err)
		}
		value, ttl, err := fn(old, version != 0)
		if err != nil {
			return err
		}
		if value == nil {
			return nil
		}
		var put agentd.KVPutOptions
		if ttl > 0 {
			put.ExpirationTTL = max(ttl, agentd.MinKVTTL)
		}
		_, err = s.kv.CompareAndSwap(ctx, key, version, value, put)
		if err == nil {
			return nil
		}
		if agentd.KindOf(err) != agentd.KindConflict {
			return agentd.E("", op, err)
		}
		lastConflict = err
	}
	return &agentd.Error{
		Kind:    agentd.KindConflict,
		Op:      op,
		Message: fmt.Sprintf("gave up after %d attempts: other writers changed the key every time", s.opts.maxAttempts),
		Err:     lastConflict,
	}
}

// backoff waits before attempt n (n ≥ 1), or until ctx is done. The wait is
// real time, not the injected clock's: it spaces out requests to the store,
// which happen in real time whatever clock decides expiry.
func (s *State) backoff(ctx context.Context, n int) error {
	window := s.opts.backoffBase << min(n-1, 30)
	if window <= 0 || window > s.opts.backoffMax {
		window = s.opts.backoffMax
	}
	if window <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(rand.N(window) + 1)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
