package resilient

import (
	"context"
	"fmt"
	"time"

	"github.com/agentd/agentd"
)

// result is what a logical call (its retries done) says of its model's
// health.
type result int

const (
	// neutral: nothing learned — the caller gave up, or no request was
	// answered (one refused before it was sent, say).
	neutral result = iota
	// success: the API answered, with an answer or with a refusal of the
	// request (a 4xx): it is up.
	success
	// failure: the model was unavailable, rate-limited or too slow.
	failure
)

// judge is the result of a call that failed with err.
func judge(ctx context.Context, err error) result {
	ae := agentd.AsError(err)
	switch {
	case ctx.Err() != nil:
		return neutral
	case unavailable(ae.Kind):
		return failure
	case ae.Upstream != nil:
		return success
	}
	return neutral
}

// breaker is the circuit breaker of one model. Its fields are guarded by
// Model.mu.
type breaker struct {
	state    State
	failures int       // calls failed in a row, while closed
	reopen   time.Time // while open: when it half-opens
	probing  bool      // while half-open: the probe is out
	// gen changes with every change of state, so that a call admitted in
	// one state does not judge a later one (a call from before the breaker
	// opened that fails only after the probe closed it, say).
	gen uint64
}

// ticket is what admit hands a call, for done.
type ticket struct {
	gen   uint64
	probe bool
}

func (m *Model) breakerOn() bool { return m.cfg.FailureThreshold > 0 }

// admit lets a call to model through, or refuses it while its breaker is
// open, or half-open with the probe out.
func (m *Model) admit(model string) (ticket, error) {
	if !m.breakerOn() {
		return ticket{}, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.breakers[model]
	if b == nil {
		b = &breaker{}
		m.breakers[model] = b
	}
	now := m.cfg.Clock.Now()
	m.tick(model, b, now)
	switch b.state {
	case Closed:
		return ticket{gen: b.gen}, nil
	case HalfOpen:
		if !b.probing {
			b.probing = true
			return ticket{gen: b.gen, probe: true}, nil
		}
		// When the probe ends is not known: no RetryAfter.
		return ticket{}, refusal(model, 0)
	default:
		return ticket{}, refusal(model, b.reopen.Sub(now))
	}
}

func refusal(model string, after time.Duration) error {
	return &agentd.Error{
		Kind:       agentd.KindModelUnavailable,
		Op:         op,
		Message:    fmt.Sprintf("circuit open for model %s", model),
		RetryAfter: after,
	}
}

// done applies the result of a call admitted with t.
func (m *Model) done(model string, t ticket, res result) {
	if !m.breakerOn() {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.breakers[model]
	if t.gen != b.gen {
		return
	}
	now := m.cfg.Clock.Now()
	switch {
	case t.probe:
		switch res {
		case success:
			m.set(model, b, Closed, now)
		case failure:
			m.set(model, b, Open, now)
		default:
			b.probing = false // the next call probes instead
		}
	case b.state == Closed:
		switch res {
		case success:
			b.failures = 0
		case failure:
			b.failures++
			if b.failures >= m.cfg.FailureThreshold {
				m.set(model, b, Open, now)
			}
		}
	}
}

// tick half-opens an open breaker whose time is up.
func (m *Model) tick(model string, b *breaker, now time.Time) {
	if b.state == Open && !now.Before(b.reopen) {
		m.set(model, b, HalfOpen, now)
	}
}

// set moves b to state to. Callers hold m.mu.
func (m *Model) set(model string, b *breaker, to State, now time.Time) {
	from := b.state
	b.state, b.gen, b.probing, b.failures = to, b.gen+1, false, 0
	if to == Open {
		b.reopen = now.Add(m.cfg.OpenFor)
	}
	if m.cfg.OnBreakerChange != nil {
		m.cfg.OnBreakerChange(model, from, to)
	}
}

// State returns the state of model's breaker: Closed for a model never
// called (or when breakers are off), HalfOpen once an open breaker's time is
// up even before a call probes it.
func (m *Model) State(model string) State {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.breakers[model]
	if b == nil {
		return Closed
	}
	m.tick(model, b, m.cfg.Clock.Now())
	return b.state
}
