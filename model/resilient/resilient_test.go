package resilient_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/model/anthropic"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/model/resilient"
)

// guard bounds the waits for the fake clock that a broken Model would make
// last forever, so that such a bug fails the test instead of hanging it.
const guard = 10 * time.Second

// harness is a resilient.Model over the real anthropic client (SDK retries
// off) over the fake API, with a fake clock and its hooks recorded.
type harness struct {
	fake  *anthropictest.Fake
	clock *clockwork.FakeClock
	model *resilient.Model

	mu      sync.Mutex
	retries []retry
	changes []string // "model: from->to"
}

type retry struct {
	model string
	wait  time.Duration
	kind  agentd.Kind
}

// newHarness fills in cfg.Clock, the hooks and, unless set, a jitter of 0
// (waits of exactly BaseBackoff·2ⁿ).
func newHarness(t *testing.T, cfg resilient.Config, acfg anthropic.Config) *harness {
	t.Helper()
	h := &harness{fake: anthropictest.New(), clock: clockwork.NewFakeClockAt(time.Now())}
	acfg.APIKey, acfg.BaseURL, acfg.HTTPClient, acfg.MaxRetries = "test", "http://fake.invalid", h.fake.HTTPClient(), -1
	c, err := anthropic.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Clock = h.clock
	if cfg.Jitter == nil {
		cfg.Jitter = func() float64 { return 0 }
	}
	cfg.OnRetry = func(model string, wait time.Duration, err error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.retries = append(h.retries, retry{model, wait, agentd.KindOf(err)})
	}
	cfg.OnBreakerChange = func(model string, from, to resilient.State) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.changes = append(h.changes, fmt.Sprintf("%s: %s->%s", model, from, to))
	}
	h.model = resilient.New(c, cfg)
	return h
}

func (h *harness) takeChanges() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.changes
	h.changes = nil
	return c
}

type result struct {
	resp   agentd.ModelResponse
	err    error
	trace  []agentd.Attempt
	deltas []string
}

func request(model, text string) agentd.ModelRequest {
	return agentd.ModelRequest{Model: model, MaxTokens: 100, Messages: []agentd.Message{{Role: agentd.RoleUser, Content: []agentd.Block{agentd.TextBlock(text)}}}}
}

// start calls Generate in a goroutine, streaming when stream is set.
func (h *harness) start(ctx context.Context, req agentd.ModelRequest, stream bool) <-chan result {
	out := make(chan result, 1)
	go func() {
		var r result
		if stream {
			// No lock: deltas come from the calling goroutine.
			req.OnTextDelta = func(s string) { r.deltas = append(r.deltas, s) }
		}
		tr := &agentd.CallTrace{}
		r.resp, r.err = h.model.Generate(agentd.WithCallTrace(ctx, tr), req)
		r.trace = tr.Attempts()
		out <- r
	}()
	return out
}

// generate calls Generate and, while it runs, advances the fake clock by
// step whenever a wait is pending, until the call returns.
func (h *harness) generate(t *testing.T, ctx context.Context, req agentd.ModelRequest, stream bool, step time.Duration) result {
	t.Helper()
	out := h.start(ctx, req, stream)
	finished, cancel := context.WithCancel(t.Context())
	var r result
	go func() {
		r = <-out
		cancel()
	}()
	for h.clock.BlockUntilContext(finished, 1) == nil {
		h.clock.Advance(step)
	}
	<-finished.Done()
	return r
}

// waitForTimer blocks until the Model waits on the clock, failing the test
// if it does not.
func (h *harness) waitForTimer(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), guard)
	defer cancel()
	if err := h.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("no backoff wait on the clock")
	}
}

func outcomes(tr []agentd.Attempt) string {
	var s []string
	for _, a := range tr {
		s = append(s, fmt.Sprintf("%s/%d", a.Outcome, a.Status))
	}
	return strings.Join(s, " ")
}

func waits(tr []agentd.Attempt) []time.Duration {
	var w []time.Duration
	for _, a := range tr {
		w = append(w, a.Wait)
	}
	return w
}

// A 429 with retry-after: 3 is retried after 3 s of the clock, not before.
func TestRetryAfterIsWaited(t *testing.T) {
	h := newHarness(t, resilient.Config{}, anthropic.Config{})
	h.fake.Enqueue(anthropictest.Error(429, "", "slow down").WithHeader("retry-after", "3"), anthropictest.Text("made it"))
	begin := h.clock.Now()
	out := h.start(t.Context(), request("m", "x"), false)

	h.waitForTimer(t)
	if n := len(h.fake.Requests()); n != 1 {
		t.Fatalf("%d requests before the wait", n)
	}
	h.clock.Advance(3*time.Second - time.Millisecond)
	// The wait is still pending (a fired timer would leave no waiter) and
	// nothing was sent.
	h.waitForTimer(t)
	if n := len(h.fake.Requests()); n != 1 {
		t.Fatalf("%d requests before 3s passed", n)
	}
	h.clock.Advance(time.Millisecond)
	r := <-out
	if r.err != nil || r.resp.Text() != "made it" {
		t.Fatalf("%+v %v", r.resp, r.err)
	}
	if got := h.clock.Since(begin); got < 3*time.Second {
		t.Errorf("%v of the clock passed", got)
	}
	if got := outcomes(r.trace); got != "rate_limit_error/429 ok/200" {
		t.Errorf("attempts = %s", got)
	}
	if r.trace[0].Wait != 0 || r.trace[1].Wait != 3*time.Second || r.trace[0].Model != "m" {
		t.Errorf("trace = %+v", r.trace)
	}
	if len(h.retries) != 1 || h.retries[0] != (retry{"m", 3 * time.Second, agentd.KindRateLimited}) {
		t.Errorf("OnRetry = %+v", h.retries)
	}
}

func TestRetries(t *testing.T) {
	const ms = time.Millisecond
	text := "a b c d e f"
	for _, tc := range []struct {
		name     string
		cfg      resilient.Config
		acfg     anthropic.Config
		stream   bool
		replies  []anthropictest.Reply
		kind     agentd.Kind // of the error; "" for an answer
		upstream string      // the error's upstream type
		text     string      // of the answer
		attempts string      // outcome/status of each attempt
		waits    []time.Duration
		deltas   []string
	}{
		{
			name:     "529 twice then ok",
			replies:  []anthropictest.Reply{anthropictest.Error(529, "", ""), anthropictest.Error(529, "", ""), anthropictest.Text("ok")},
			text:     "ok",
			attempts: "overloaded_error/529 overloaded_error/529 ok/200",
			waits:    []time.Duration{0, 500 * ms, 1000 * ms},
		},
		{
			name:     "500 every time",
			replies:  []anthropictest.Reply{anthropictest.Error(500, "", ""), anthropictest.Error(500, "", ""), anthropictest.Error(500, "", ""), anthropictest.Text("never")},
			kind:     agentd.KindModelUnavailable,
			upstream: "api_error",
			attempts: "api_error/500 api_error/500 api_error/500",
			waits:    []time.Duration{0, 500 * ms, 1000 * ms},
		},
		{
			name:     "MaxRetries 4, capped backoff",
			cfg:      resilient.Config{MaxRetries: 4, BaseBackoff: 300 * ms, MaxBackoff: time.Second},
			replies:  []anthropictest.Reply{anthropictest.Error(503, "", ""), anthropictest.Error(503, "", ""), anthropictest.Error(503, "", ""), anthropictest.Error(503, "", ""), anthropictest.Error(503, "", ""), anthropictest.Text("never")},
			kind:     agentd.KindModelUnavailable,
			upstream: "api_error",
			attempts: "api_error/503 api_error/503 api_error/503 api_error/503 api_error/503",
			waits:    []time.Duration{0, 300 * ms, 600 * ms, time.Second, time.Second},
		},
		{
			name:     "no retries",
			cfg:      resilient.Config{MaxRetries: -1},
			replies:  []anthropictest.Reply{anthropictest.Error(529, "", ""), anthropictest.Text("never")},
			kind:     agentd.KindModelUnavailable,
			upstream: "overloaded_error",
			attempts: "overloaded_error/529",
		},
		{name: "408", replies: []anthropictest.Reply{anthropictest.Error(408, "", ""), anthropictest.Text("ok")}, text: "ok", attempts: "invalid_request_error/408 ok/200"},
		{name: "409", replies: []anthropictest.Reply{anthropictest.Error(409, "", ""), anthropictest.Text("ok")}, text: "ok", attempts: "invalid_request_error/409 ok/200"},
		{name: "502", replies: []anthropictest.Reply{anthropictest.Error(502, "", ""), anthropictest.Text("ok")}, text: "ok", attempts: "api_error/502 ok/200"},
		{name: "504", replies: []anthropictest.Reply{anthropictest.Error(504, "", ""), anthropictest.Text("ok")}, text: "ok", attempts: "timeout_error/504 ok/200"},
		{
			name:     "retry-after-ms longer than the backoff",
			replies:  []anthropictest.Reply{anthropictest.Error(429, "", "").WithHeader("retry-after-ms", "1500"), anthropictest.Text("ok")},
			text:     "ok",
			attempts: "rate_limit_error/429 ok/200",
			waits:    []time.Duration{0, 1500 * ms},
		},
		{
			name:     "retry-after shorter than the backoff",
			replies:  []anthropictest.Reply{anthropictest.Error(429, "", "").WithHeader("retry-after-ms", "10"), anthropictest.Text("ok")},
			text:     "ok",
			attempts: "rate_limit_error/429 ok/200",
			waits:    []time.Duration{0, 500 * ms},
		},
		{
			name:     "retry-after over a minute is not waited",
			replies:  []anthropictest.Reply{anthropictest.Error(429, "", "").WithHeader("retry-after", "120"), anthropictest.Text("never")},
			kind:     agentd.KindRateLimited,
			upstream: "rate_limit_error",
			attempts: "rate_limit_error/429",
		},
		{name: "400", replies: []anthropictest.Reply{anthropictest.Error(400, "", ""), anthropictest.Text("never")}, kind: agentd.KindModelError, upstream: "invalid_request_error", attempts: "invalid_request_error/400"},
		{name: "401", replies: []anthropictest.Reply{anthropictest.Error(401, "", ""), anthropictest.Text("never")}, kind: agentd.KindModelError, upstream: "authentication_error", attempts: "authentication_error/401"},
		{name: "403", replies: []anthropictest.Reply{anthropictest.Error(403, "", ""), anthropictest.Text("never")}, kind: agentd.KindModelError, upstream: "permission_error", attempts: "permission_error/403"},
		{name: "404", replies: []anthropictest.Reply{anthropictest.Error(404, "", ""), anthropictest.Text("never")}, kind: agentd.KindModelError, upstream: "not_found_error", attempts: "not_found_error/404"},
		{name: "413", replies: []anthropictest.Reply{anthropictest.Error(413, "", ""), anthropictest.Text("never")}, kind: agentd.KindModelError, upstream: "request_too_large", attempts: "request_too_large/413"},
		{
			name:     "connection reset",
			replies:  []anthropictest.Reply{anthropictest.Text("lost").CutAfter(0), anthropictest.Text("ok")},
			text:     "ok",
			attempts: "model_unavailable/0 ok/200",
		},
		{
			// A real timeout: the attempt's timeout is what is tested.
			name:     "attempt timeout",
			acfg:     anthropic.Config{Timeout: 50 * ms},
			replies:  []anthropictest.Reply{anthropictest.Text("slow").WithDelay(time.Hour), anthropictest.Text("ok")},
			text:     "ok",
			attempts: "model_unavailable/0 ok/200",
		},
		{
			name:     "stream cut before the first delta",
			stream:   true,
			replies:  []anthropictest.Reply{anthropictest.Text(text).CutAfter(0), anthropictest.Text("g h i j")},
			text:     "g h i j",
			attempts: "model_unavailable/0 ok/200",
			deltas:   []string{"g h i ", "j"},
		},
		{
			name:     "stream cut after the first delta",
			stream:   true,
			replies:  []anthropictest.Reply{anthropictest.Text(text).CutAfter(1), anthropictest.Text("never")},
			kind:     agentd.KindModelUnavailable,
			attempts: "model_unavailable/0",
			deltas:   []string{"a b c "},
		},
		{
			name:     "overloaded event before the first delta",
			stream:   true,
			replies:  []anthropictest.Reply{anthropictest.Text(text).ErrorEventAfter(0, "overloaded_error", ""), anthropictest.Text("g h i j")},
			text:     "g h i j",
			attempts: "overloaded_error/200 ok/200",
			deltas:   []string{"g h i ", "j"},
		},
		{
			name:     "overloaded event after a delta",
			stream:   true,
			replies:  []anthropictest.Reply{anthropictest.Text(text).ErrorEventAfter(1, "overloaded_error", ""), anthropictest.Text("never")},
			kind:     agentd.KindModelUnavailable,
			upstream: "overloaded_error",
			attempts: "overloaded_error/200",
			deltas:   []string{"a b c "},
		},
		{
			name:     "invalid request event",
			stream:   true,
			replies:  []anthropictest.Reply{anthropictest.Text(text).ErrorEventAfter(0, "invalid_request_error", ""), anthropictest.Text("never")},
			kind:     agentd.KindModelError,
			upstream: "invalid_request_error",
			attempts: "invalid_request_error/200",
		},
		{
			name:     "529 before a stream",
			stream:   true,
			replies:  []anthropictest.Reply{anthropictest.Error(529, "", ""), anthropictest.Text("g h")},
			text:     "g h",
			attempts: "overloaded_error/529 ok/200",
			deltas:   []string{"g h"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg, tc.acfg)
			h.fake.Enqueue(tc.replies...)
			r := h.generate(t, t.Context(), request("m", "x"), tc.stream, 100*ms)

			if tc.kind == "" {
				if r.err != nil || r.resp.Text() != tc.text {
					t.Fatalf("%q, %v; want %q", r.resp.Text(), r.err, tc.text)
				}
			} else {
				ae := agentd.AsError(r.err)
				if r.err == nil || ae.Kind != tc.kind {
					t.Fatalf("err = %v, want kind %q", r.err, tc.kind)
				}
				if tc.upstream != "" && (ae.Upstream == nil || ae.Upstream.Type != tc.upstream) {
					t.Errorf("upstream = %+v, want %s", ae.Upstream, tc.upstream)
				}
			}
			if got := outcomes(r.trace); got != tc.attempts {
				t.Errorf("attempts = %s, want %s", got, tc.attempts)
			}
			if n := len(h.fake.Requests()); n != len(r.trace) {
				t.Errorf("%d requests for %d attempts", n, len(r.trace))
			}
			if tc.waits != nil && fmt.Sprint(waits(r.trace)) != fmt.Sprint(tc.waits) {
				t.Errorf("waits = %v, want %v", waits(r.trace), tc.waits)
			}
			if len(h.retries) != len(r.trace)-1 {
				t.Errorf("OnRetry called %d times for %d attempts", len(h.retries), len(r.trace))
			}
			if fmt.Sprint(r.deltas) != fmt.Sprint(tc.deltas) {
				t.Errorf("deltas = %q, want %q", r.deltas, tc.deltas)
			}
		})
	}
}

// The error after the last attempt is that attempt's, as it came.
func TestLastErrorKept(t *testing.T) {
	h := newHarness(t, resilient.Config{MaxRetries: 1}, anthropic.Config{})
	h.fake.Enqueue(anthropictest.Error(500, "", "first"), anthropictest.Error(429, "", "second").WithHeader("retry-after", "2"))
	r := h.generate(t, t.Context(), request("m", "x"), false, 100*time.Millisecond)
	ae := agentd.AsError(r.err)
	if ae.Kind != agentd.KindRateLimited || ae.Message != "second" || ae.RetryAfter != 2*time.Second ||
		ae.Upstream == nil || ae.Upstream.Status != 429 || ae.Upstream.RequestID != "req_fake_000002" {
		t.Errorf("err = %v (%+v)", r.err, ae.Upstream)
	}
}

// A wait that would end after the caller's deadline is not taken.
func TestDeadlineCapsTheWait(t *testing.T) {
	for _, tc := range []struct {
		retryAfter string
		attempts   string
	}{
		{"3", "rate_limit_error/429 ok/200"},
		{"30", "rate_limit_error/429"},
	} {
		t.Run(tc.retryAfter, func(t *testing.T) {
			h := newHarness(t, resilient.Config{}, anthropic.Config{})
			h.fake.Enqueue(anthropictest.Error(429, "", "").WithHeader("retry-after", tc.retryAfter), anthropictest.Text("ok"))
			// The fake clock started at the real time, so the deadline is
			// 20 s away on it too.
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			r := h.generate(t, ctx, request("m", "x"), false, 100*time.Millisecond)
			if got := outcomes(r.trace); got != tc.attempts {
				t.Errorf("attempts = %s, want %s (%v)", got, tc.attempts, r.err)
			}
			if len(r.trace) == 1 && agentd.KindOf(r.err) != agentd.KindRateLimited {
				t.Errorf("err = %v, want the 429", r.err)
			}
		})
	}
}

// A caller that gives up during a backoff wait gets KindTimeout at once,
// and the model's breaker does not count the call.
func TestCancelDuringBackoff(t *testing.T) {
	h := newHarness(t, resilient.Config{FailureThreshold: 1}, anthropic.Config{})
	h.fake.Enqueue(anthropictest.Error(500, "", ""), anthropictest.Text("never"))
	ctx, cancel := context.WithCancel(t.Context())
	out := h.start(ctx, request("m", "x"), false)
	h.waitForTimer(t)
	cancel()
	r := <-out // the clock was not advanced: only the cancellation ends the wait
	if agentd.KindOf(r.err) != agentd.KindTimeout || !errors.Is(r.err, context.Canceled) {
		t.Errorf("err = %v", r.err)
	}
	if len(r.trace) != 1 || len(h.fake.Requests()) != 1 {
		t.Errorf("%d attempts, %d requests", len(r.trace), len(h.fake.Requests()))
	}
	if s := h.model.State("m"); s != resilient.Closed {
		t.Errorf("breaker %s after a cancelled call", s)
	}
}

// Waits lie in (¾d, d] for d = min(BaseBackoff·2ⁿ, MaxBackoff).
func TestJitterBounds(t *testing.T) {
	const base, maxB = 100 * time.Millisecond, time.Second
	for _, tc := range []struct {
		name   string
		jitter func() float64
		exact  float64 // the fixed jitter; -1 for random
	}{
		{"none", func() float64 { return 0 }, 0},
		{"half", func() float64 { return 0.5 }, 0.5},
		{"most", func() float64 { return 0.999999 }, 0.999999},
		{"random", nil, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := resilient.Config{MaxRetries: 6, BaseBackoff: base, MaxBackoff: maxB, Jitter: tc.jitter}
			h := newHarness(t, cfg, anthropic.Config{})
			if tc.jitter == nil {
				// newHarness fixes an unset jitter; this case wants the default.
				h.model = resilient.New(anthropicClient(t, h.fake), resilient.Config{MaxRetries: 6, BaseBackoff: base, MaxBackoff: maxB, Clock: h.clock})
			}
			h.fake.SetResponder(func(anthropictest.Request) anthropictest.Reply { return anthropictest.Error(529, "", "") })
			begin := h.clock.Now()
			r := h.generate(t, t.Context(), request("m", "x"), false, 10*time.Millisecond)
			if len(r.trace) != 7 {
				t.Fatalf("%d attempts", len(r.trace))
			}
			var total time.Duration
			for n, a := range r.trace[1:] {
				d := min(base<<n, maxB)
				if a.Wait <= d*3/4 || a.Wait > d {
					t.Errorf("wait %d = %v, outside (%v, %v]", n, a.Wait, d*3/4, d)
				}
				if tc.exact >= 0 {
					if want := d - time.Duration(float64(d)*tc.exact/4); a.Wait != want {
						t.Errorf("wait %d = %v, want %v", n, a.Wait, want)
					}
				}
				total += a.Wait
			}
			if got := h.clock.Since(begin); got < total || got >= total+6*10*time.Millisecond {
				t.Errorf("the clock advanced %v for waits of %v", got, total)
			}
		})
	}
}

func anthropicClient(t testing.TB, f *anthropictest.Fake) *anthropic.Client {
	t.Helper()
	c, err := anthropic.New(anthropic.Config{APIKey: "test", BaseURL: "http://fake.invalid", HTTPClient: f.HTTPClient(), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewDefaults(t *testing.T) {
	// A zero Config retries twice, from 500 ms (jitter fixed to 0 here).
	h := newHarness(t, resilient.Config{}, anthropic.Config{})
	h.fake.SetResponder(func(anthropictest.Request) anthropictest.Reply { return anthropictest.Error(500, "", "") })
	r := h.generate(t, t.Context(), request("m", "x"), false, 100*time.Millisecond)
	if fmt.Sprint(waits(r.trace)) != fmt.Sprint([]time.Duration{0, 500 * time.Millisecond, time.Second}) {
		t.Errorf("waits = %v", waits(r.trace))
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[resilient.State]string{resilient.Closed: "closed", resilient.Open: "open", resilient.HalfOpen: "half_open", 7: "State(7)"} {
		if s.String() != want {
			t.Errorf("%d: %q", int(s), s.String())
		}
	}
}
