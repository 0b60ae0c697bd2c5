package coord

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd"
)

// maxRatePer bounds a rate's period, so every theoretical arrival time
// stays far inside the years that Unix nanoseconds can hold.
const maxRatePer = 365 * 24 * time.Hour

// Rate is a rate limit: at most N requests per Per, in bursts of up to N.
type Rate struct {
	N   int
	Per time.Duration
}

// ParseRate parses a rate written as count/period, where the period is an
// optional positive whole number and a unit, s, m, h or d (a day is 24 h):
// "100/h", "10/1m", "5/30s", "1000/d".
func ParseRate(s string) (Rate, error) {
	const op = "coord.rate"
	bad := func(format string, args ...any) (Rate, error) {
		return Rate{}, agentd.InvalidField(op, "rate", "rate %q: "+format, append([]any{s}, args...)...)
	}
	count, period, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return bad("write it as count/period, like 100/h or 5/30s")
	}
	n, err := strconv.Atoi(strings.TrimSpace(count))
	if err != nil || n < 1 {
		return bad("the count %q is not a positive whole number", count)
	}
	period = strings.TrimSpace(period)
	if period == "" {
		return bad("the period is missing; write it like h, 1m or 30s")
	}
	var unit time.Duration
	switch period[len(period)-1] {
	case 's':
		unit = time.Second
	case 'm':
		unit = time.Minute
	case 'h':
		unit = time.Hour
	case 'd':
		unit = 24 * time.Hour
	default:
		return bad("the period %q does not end in a unit: s, m, h or d", period)
	}
	k := 1
	if digits := period[:len(period)-1]; digits != "" {
		k, err = strconv.Atoi(digits)
		if err != nil || k < 1 {
			return bad("the period %q is not a positive whole number of a unit, like 30s", period)
		}
	}
	if int64(k) > int64(maxRatePer/unit) {
		return bad("the period must be at most %s", formatPeriod(maxRatePer))
	}
	r := Rate{N: n, Per: time.Duration(k) * unit}
	if err := r.validate(op); err != nil {
		return Rate{}, err
	}
	return r, nil
}

// String returns the rate as ParseRate reads it, e.g. "100/h" or "5/30s".
func (r Rate) String() string {
	p := formatPeriod(r.Per)
	if len(p) == 2 && p[0] == '1' {
		p = p[1:] // "100/h" rather than "100/1h"
	}
	return strconv.Itoa(r.N) + "/" + p
}

// UnmarshalText parses the rate with ParseRate, so a configuration file can
// write rates as text.
func (r *Rate) UnmarshalText(text []byte) error {
	parsed, err := ParseRate(string(text))
	if err != nil {
		return err
	}
	*r = parsed
	return nil
}

// formatPeriod writes d in the largest unit that divides it ("1h", "30s",
// "2d"), or as time.Duration does when no unit of ParseRate divides it.
func formatPeriod(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d > 0 && d%u.d == 0 {
			return strconv.FormatInt(int64(d/u.d), 10) + u.name
		}
	}
	return d.String()
}

func (r Rate) validate(op string) error {
	switch {
	case r.N < 1:
		return agentd.InvalidField(op, "rate", "rate %s: the count must be at least 1", r)
	case r.Per <= 0 || r.Per > maxRatePer:
		return agentd.InvalidField(op, "rate", "rate %s: the period must be positive and at most %s", r, formatPeriod(maxRatePer))
	case r.Per/time.Duration(r.N) < time.Microsecond:
		// The emission interval is kept in whole nanoseconds; below a
		// microsecond its rounding would change the rate noticeably.
		return agentd.InvalidField(op, "rate", "rate %s: more than one request per microsecond", r)
	}
	return nil
}

// interval is the emission interval: one request's share of the period,
// rounded down so a full burst of N always fits.
func (r Rate) interval() time.Duration { return r.Per / time.Duration(r.N) }

// RateDecision is the answer of RateLimiter.Allow.
type RateDecision struct {
	Limit   Rate // the rate that was applied
	Allowed bool
	// Remaining is how many more requests would be allowed right now.
	Remaining int
	// RetryAfter is how long until a refused request would be allowed; 0
	// when allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the full burst of Limit.N is available
	// again, if no request comes in the meantime.
	ResetAfter time.Duration
}

// Err returns nil if the request was allowed, and otherwise an error of
// KindRateLimited with RetryAfter set, for an HTTP handler to answer 429.
func (d RateDecision) Err(op string) error {
	if d.Allowed {
		return nil
	}
	return &agentd.Error{
		Kind:       agentd.KindRateLimited,
		Op:         op,
		RetryAfter: d.RetryAfter,
		Message: fmt.Sprintf("rate limit of %d per %s reached; retry in %s",
			d.Limit.N, formatPeriod(d.Limit.Per), roundUpSeconds(d.RetryAfter)),
	}
}

// RateLimiter limits request rates per key with the generic cell rate
// algorithm (GCRA): a key may take a burst of N requests, and regains one
// every Per/N. Its whole state is one timestamp per key, the theoretical
// arrival time (TAT) of the next request were requests spaced evenly, kept
// in the KV through a State: so limits are exact under concurrency, and
// shared by every node when the KV is.
//
// A refusal writes nothing (except the first after the key's period was
// shortened, see Allow), so requests beyond the limit cost one read.
type RateLimiter struct {
	state *State
	clock agentd.Clock
}

// NewRateLimiter returns a RateLimiter over kv, taking "now" from clock.
func NewRateLimiter(kv agentd.KV, clock agentd.Clock, opts ...Option) *RateLimiter {
	return &RateLimiter{state: newState(kv, newOptions(opts)), clock: clock}
}

// Allow decides whether one more request on key fits rate r, and counts it
// if so. A refusal is not an error: the decision says so, and its Err
// method makes the error to return. Keys name what is limited, e.g.
// "ratelimit:agent:support:user:42"; the key's KV entry expires when it has
// no more effect. A key's rate may change between calls and the new one
// applies at once: state left by a longer period is cut to the new one.
func (l *RateLimiter) Allow(ctx context.Context, key string, r Rate) (RateDecision, error) {
	const op = "coord.ratelimit"
	if err := r.validate(op); err != nil {
		return RateDecision{}, err
	}
	interval := r.interval()
	var d RateDecision
	err := l.state.Update(ctx, key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		now := l.clock.Now()
		tat, clamped := now, false
		if exists {
			stored, err := strconv.ParseInt(string(old), 10, 64)
			if err != nil {
				return nil, 0, agentd.Errorf(agentd.KindInternal, op, "rate limit state of %q is corrupt", key)
			}
			// A TAT in the past is an idle key: its burst is full. A
			// TAT more than one period ahead was written under another,
			// slower rate; clamping it makes a changed rate take effect
			// at once instead of refusing for the old rate's period.
			limit := now.Add(r.Per).UnixNano()
			clamped = stored > limit
			tat = time.Unix(0, min(max(stored, now.UnixNano()), limit))
		}
		next := tat.Add(interval)
		allowAt := next.Add(-r.Per)
		if now.Before(allowAt) {
			d = RateDecision{Limit: r, RetryAfter: allowAt.Sub(now), ResetAfter: tat.Sub(now)}
			if clamped {
				// Keep the clamp: were it made afresh from a later now,
				// the stored TAT would stay ahead of every request until
				// the old period ran out.
				return strconv.AppendInt(nil, tat.UnixNano(), 10), tat.Sub(now), nil
			}
			return nil, 0, nil
		}
		// Each further request moves the TAT on by one interval and is
		// allowed while next+k·interval-Per ≤ now.
		remaining := int((now.Sub(next) + r.Per) / interval)
		d = RateDecision{Limit: r, Allowed: true, Remaining: min(max(remaining, 0), r.N-1), ResetAfter: next.Sub(now)}
		// Once the TAT has passed, the key is as good as absent: let it
		// expire then.
		return strconv.AppendInt(nil, next.UnixNano(), 10), next.Sub(now), nil
	})
	if err != nil {
		return RateDecision{}, err
	}
	return d, nil
}

// roundUpSeconds writes d rounded up to a whole second, without the zero
// parts time.Duration writes ("6m", not "6m0s"), for messages: Retry-After
// headers are whole seconds, so the text should not promise sooner.
func roundUpSeconds(d time.Duration) string {
	s := max((d + time.Second - 1).Truncate(time.Second), time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
