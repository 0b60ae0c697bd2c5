package coord_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/coord"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want coord.Rate
		str  string // String of the result
	}{
		{"100/h", coord.Rate{N: 100, Per: time.Hour}, "100/h"},
		{"10/1m", coord.Rate{N: 10, Per: time.Minute}, "10/m"},
		{"5/30s", coord.Rate{N: 5, Per: 30 * time.Second}, "5/30s"},
		{"1000/d", coord.Rate{N: 1000, Per: 24 * time.Hour}, "1000/d"},
		{"3/2d", coord.Rate{N: 3, Per: 48 * time.Hour}, "3/2d"},
		{"1/90m", coord.Rate{N: 1, Per: 90 * time.Minute}, "1/90m"},
		{"60/60m", coord.Rate{N: 60, Per: time.Hour}, "60/h"},
		{" 7 / 10s ", coord.Rate{N: 7, Per: 10 * time.Second}, "7/10s"},
		{"1/365d", coord.Rate{N: 1, Per: 365 * 24 * time.Hour}, "1/365d"},
	}
	for _, tt := range tests {
		got, err := coord.ParseRate(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseRate(%q).String() = %q, want %q", tt.in, s, tt.str)
		}
		if again, err := coord.ParseRate(got.String()); err != nil || again != got {
			t.Errorf("ParseRate(%q) = %+v, %v; want the rate back", got.String(), again, err)
		}
	}

	for _, in := range []string{
		"", "100", "/h", "100/", "0/h", "-1/h", "x/h", "1.5/h", "100/hour", "100/1", "100/0h",
		"100/-1h", "100/1.5h", "100/ms", "100/h/h", "1/366d", "1/99999999999999999999d",
		"2000000/s", // more than one per microsecond
	} {
		r, err := coord.ParseRate(in)
		wantKind(t, err, agentd.KindInvalid, "ParseRate("+in+")")
		if err != nil && agentd.AsError(err).Field != "rate" {
			t.Errorf("ParseRate(%q) error names field %q, want rate", in, agentd.AsError(err).Field)
		}
		if r != (coord.Rate{}) {
			t.Errorf("ParseRate(%q) = %+v with an error, want the zero Rate", in, r)
		}
	}

	var r coord.Rate
	if err := r.UnmarshalText([]byte("5/30s")); err != nil || r != (coord.Rate{N: 5, Per: 30 * time.Second}) {
		t.Errorf("UnmarshalText = %+v, %v", r, err)
	}
}

func TestRateDecisionErr(t *testing.T) {
	hourly := coord.Rate{N: 100, Per: time.Hour}
	tests := []struct {
		name string
		d    coord.RateDecision
		msg  string // "" for no error
	}{
		{"allowed", coord.RateDecision{Limit: hourly, Allowed: true, Remaining: 3}, ""},
		{"seconds", coord.RateDecision{Limit: hourly, RetryAfter: 36 * time.Second},
			"rate limit of 100 per 1h reached; retry in 36s"},
		// Rounded up: a client retrying after the advertised time must
		// not be refused again.
		{"fraction", coord.RateDecision{Limit: hourly, RetryAfter: 35*time.Second + time.Nanosecond},
			"rate limit of 100 per 1h reached; retry in 36s"},
		{"under a second", coord.RateDecision{Limit: coord.Rate{N: 5, Per: 30 * time.Second}, RetryAfter: time.Millisecond},
			"rate limit of 5 per 30s reached; retry in 1s"},
		{"minutes", coord.RateDecision{Limit: coord.Rate{N: 10, Per: time.Hour}, RetryAfter: 6 * time.Minute},
			"rate limit of 10 per 1h reached; retry in 6m"},
		{"hours", coord.RateDecision{Limit: coord.Rate{N: 1, Per: 24 * time.Hour}, RetryAfter: 2 * time.Hour},
			"rate limit of 1 per 1d reached; retry in 2h"},
	}
	for _, tt := range tests {
		err := tt.d.Err("agent.run")
		if tt.msg == "" {
			if err != nil {
				t.Errorf("%s: Err = %v, want nil", tt.name, err)
			}
			continue
		}
		ae := agentd.AsError(err)
		if ae.Kind != agentd.KindRateLimited || ae.Op != "agent.run" || ae.RetryAfter != tt.d.RetryAfter || ae.Message != tt.msg {
			t.Errorf("%s: Err = %+v, want %s, op agent.run, RetryAfter %v, message %q",
				tt.name, ae, agentd.KindRateLimited, tt.d.RetryAfter, tt.msg)
		}
		if ae.Kind.HTTPStatus() != 429 {
			t.Errorf("%s: status %d, want 429", tt.name, ae.Kind.HTTPStatus())
		}
	}
}

// testRateExact checks that a 10/h limit admits exactly 10 of 50 concurrent
// requests on one key, spread over nodes limiters on one store, and that
// every decision tells the truth about what is left.
func testRateExact(e *env, nodes int) {
	t, ctx := e.t, e.ctx
	kvs := e.nodes(nodes)
	limiters := make([]*coord.RateLimiter, nodes)
	for i := range limiters {
		limiters[i] = coord.NewRateLimiter(kvs[i], e.clock)
	}
	rate := coord.Rate{N: 10, Per: time.Hour}
	var (
		mu        sync.Mutex
		remaining []int
		refused   []coord.RateDecision
	)
	concurrently(50, func(i int) {
		d, err := limiters[i%nodes].Allow(ctx, "ratelimit:user:42", rate)
		if err != nil {
			t.Errorf("Allow: %v", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if d.Allowed {
			remaining = append(remaining, d.Remaining)
		} else {
			refused = append(refused, d)
		}
	})
	slices.Sort(remaining)
	// The admitted requests took the burst one after another: each saw
	// one fewer left.
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(remaining, want) {
		t.Errorf("allowed %d requests with Remaining %v, want 10 with %v", len(remaining), remaining, want)
	}
	if len(refused) != 40 {
		t.Errorf("refused %d, want 40", len(refused))
	}
	// The clock stands still: the burst is gone for one interval (6m) and
	// full again after the whole period.
	want := coord.RateDecision{Limit: rate, RetryAfter: 6 * time.Minute, ResetAfter: time.Hour}
	for _, d := range refused {
		if d != want {
			t.Errorf("refusal %+v, want %+v", d, want)
			break
		}
	}
}

// testRateRefills walks GCRA through time: a burst, one request regained
// per interval, and a full burst after an idle period.
func testRateRefills(e *env) {
	t, ctx := e.t, e.ctx
	l := coord.NewRateLimiter(e.kv(), e.clock)
	rate := coord.Rate{N: 10, Per: time.Hour} // one every 6m
	const key = "ratelimit:refill"
	type step struct {
		advance time.Duration
		want    coord.RateDecision
	}
	allowed := func(remaining int, reset time.Duration) coord.RateDecision {
		return coord.RateDecision{Limit: rate, Allowed: true, Remaining: remaining, ResetAfter: reset}
	}
	refused := func(retry, reset time.Duration) coord.RateDecision {
		return coord.RateDecision{Limit: rate, RetryAfter: retry, ResetAfter: reset}
	}
	var steps []step
	for i := range 10 {
		steps = append(steps, step{0, allowed(9-i, time.Duration(i+1)*6*time.Minute)})
	}
	steps = append(steps,
		step{0, refused(6*time.Minute, time.Hour)},
		step{6*time.Minute - time.Nanosecond, refused(time.Nanosecond, 54*time.Minute+time.Nanosecond)},
		step{time.Nanosecond, allowed(0, time.Hour)}, // one interval later, one more
		step{0, refused(6*time.Minute, time.Hour)},
		step{30 * time.Minute, allowed(4, 36*time.Minute)}, // five intervals: five more
		step{0, allowed(3, 42*time.Minute)},
		step{0, allowed(2, 48*time.Minute)},
		step{0, allowed(1, 54*time.Minute)},
		step{0, allowed(0, time.Hour)},
		step{0, refused(6*time.Minute, time.Hour)},
		step{2 * time.Hour, allowed(9, 6*time.Minute)}, // idle: the whole burst again
	)
	for i, s := range steps {
		e.clock.Advance(s.advance)
		d, err := l.Allow(ctx, key, rate)
		if err != nil {
			t.Fatalf("step %d: Allow: %v", i, err)
		}
		if d != s.want {
			t.Errorf("step %d (+%v): Allow = %+v, want %+v", i, s.advance, d, s.want)
		}
	}
}

func testRateKeys(e *env) {
	t, ctx, kv := e.t, e.ctx, e.kv()
	l := coord.NewRateLimiter(kv, e.clock)
	hourly := coord.Rate{N: 1, Per: time.Hour}
	allow := func(key string, r coord.Rate) coord.RateDecision {
		t.Helper()
		d, err := l.Allow(ctx, key, r)
		if err != nil {
			t.Fatalf("Allow(%s, %s): %v", key, r, err)
		}
		return d
	}
	if !allow("a", hourly).Allowed || allow("a", hourly).Allowed {
		t.Fatal("1/h: want the first request on a allowed and the second refused")
	}
	if !allow("b", hourly).Allowed {
		t.Error("a's limit refused a request on b")
	}
	// Raising a's limit to 10/m takes effect at once: a is refused for one
	// new interval (its burst was just used), not for the rest of the hour.
	fast := coord.Rate{N: 10, Per: time.Minute}
	if d := allow("a", fast); d.Allowed || d.RetryAfter != 6*time.Second {
		t.Errorf("after switching to 10/m: %+v, want refused for 6s", d)
	}
	e.clock.Advance(6 * time.Second)
	if d := allow("a", fast); !d.Allowed {
		t.Errorf("10/m after 6s: %+v, want allowed", d)
	}

	_, err := l.Allow(ctx, "a", coord.Rate{})
	wantKind(t, err, agentd.KindInvalid, "Allow with the zero Rate")
	if err := kv.Put(ctx, "corrupt", []byte("not a time"), agentd.KVPutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = l.Allow(ctx, "corrupt", hourly)
	wantKind(t, err, agentd.KindInternal, "Allow on a corrupt value")
}

// testRateEntryExpires checks the key's TTL: it lasts as long as the state
// matters (until the TAT), at least the KV's minimum.
func testRateEntryExpires(e *env) {
	t, ctx, kv := e.t, e.ctx, e.kv()
	l := coord.NewRateLimiter(kv, e.clock)
	tests := []struct {
		key  string
		rate coord.Rate
		ttl  time.Duration
	}{
		{"hourly", coord.Rate{N: 10, Per: time.Hour}, 6 * time.Minute},
		{"fast", coord.Rate{N: 5, Per: 30 * time.Second}, agentd.MinKVTTL}, // 6s, rounded up
	}
	for _, tt := range tests {
		if _, err := l.Allow(ctx, tt.key, tt.rate); err != nil {
			t.Fatal(err)
		}
		entry, err := kv.Get(ctx, tt.key)
		if err != nil {
			t.Fatal(err)
		}
		if want := e.clock.Now().Add(tt.ttl); !entry.Expiration.Equal(want) {
			t.Errorf("%s: expiration %v, want %v", tt.key, entry.Expiration, want)
		}
	}
	e.clock.Advance(agentd.MinKVTTL)
	if _, err := kv.Get(ctx, "fast"); agentd.KindOf(err) != agentd.KindNotFound {
		t.Errorf("Get after the TTL: %v, want not found", err)
	}
	if d, err := l.Allow(ctx, "fast", tests[1].rate); err != nil || !d.Allowed || d.Remaining != 4 {
		t.Errorf("Allow after the entry expired = %+v, %v; want a full burst", d, err)
	}
}
