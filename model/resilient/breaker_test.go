package resilient_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/model/anthropic"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/model/resilient"
)

// switchboard answers each model as the test sets it: up (Echo), down (500),
// or held until released (to keep a probe in flight).
type switchboard struct {
	mu      sync.Mutex
	down    map[string]bool
	hold    chan struct{} // when set, requests wait on it
	arrived chan string   // told of each held request
}

func (s *switchboard) set(model string, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down[model] = down
}

func (s *switchboard) answer(req anthropictest.Request) anthropictest.Reply {
	s.mu.Lock()
	down, hold, arrived := s.down[req.Model], s.hold, s.arrived
	s.mu.Unlock()
	if hold != nil {
		arrived <- req.Model
		<-hold
	}
	if down {
		return anthropictest.Error(500, "", "")
	}
	return anthropictest.Echo(req)
}

func requestsFor(f *anthropictest.Fake, model string) int {
	n := 0
	for _, r := range f.Requests() {
		if r.Model == model {
			n++
		}
	}
	return n
}

// The life of a breaker: it opens after FailureThreshold failed calls,
// refuses calls without a request while open, half-opens after OpenFor,
// re-opens when its probe fails, lets exactly one probe through when
// called concurrently, and closes when the probe succeeds. Another model's
// breaker is not affected.
func TestBreakerLifecycle(t *testing.T) {
	const openFor = 30 * time.Second
	h := newHarness(t, resilient.Config{MaxRetries: 1, FailureThreshold: 3, OpenFor: openFor}, anthropic.Config{})
	sw := &switchboard{down: map[string]bool{"m": true}}
	h.fake.SetResponder(sw.answer)
	call := func(model string) result {
		t.Helper()
		return h.generate(t, t.Context(), request(model, "x"), false, 100*time.Millisecond)
	}
	refused := func(r result, after time.Duration) {
		t.Helper()
		ae := agentd.AsError(r.err)
		if ae.Kind != agentd.KindModelUnavailable || ae.Message != "circuit open for model m" || ae.RetryAfter != after || ae.Upstream != nil {
			t.Errorf("err = %v (retry after %v), want a refusal, retry after %v", r.err, ae.RetryAfter, after)
		}
		if len(r.trace) != 1 || r.trace[0] != (agentd.Attempt{Model: "m", Outcome: "circuit_open"}) {
			t.Errorf("trace = %+v", r.trace)
		}
	}
	changes := func(want ...string) {
		t.Helper()
		if got := h.takeChanges(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("breaker changes = %q, want %q", got, want)
		}
	}

	// Two failed calls (each retried once): still closed.
	for range 2 {
		if r := call("m"); agentd.KindOf(r.err) != agentd.KindModelUnavailable || len(r.trace) != 2 {
			t.Fatalf("err = %v, %d attempts", r.err, len(r.trace))
		}
	}
	if s := h.model.State("m"); s != resilient.Closed {
		t.Fatalf("state %s after 2 failures", s)
	}
	changes()
	// The third opens it.
	call("m")
	if s := h.model.State("m"); s != resilient.Open {
		t.Fatalf("state %s after 3 failures", s)
	}
	changes("m: closed->open")

	// Open: refused at once, nothing sent.
	sent := requestsFor(h.fake, "m")
	refused(call("m"), openFor)
	h.clock.Advance(openFor - time.Second)
	refused(call("m"), time.Second)
	if n := requestsFor(h.fake, "m"); n != sent {
		t.Errorf("%d requests sent while open", n-sent)
	}

	// Another model is not affected.
	if r := call("other"); r.err != nil || h.model.State("other") != resilient.Closed {
		t.Errorf("other model: %v, %s", r.err, h.model.State("other"))
	}

	// OpenFor passes: half-open. A failing probe is sent once, without
	// retries, and re-opens it for OpenFor.
	h.clock.Advance(time.Second)
	if s := h.model.State("m"); s != resilient.HalfOpen {
		t.Fatalf("state %s after OpenFor", s)
	}
	changes("m: open->half_open")
	if r := call("m"); agentd.KindOf(r.err) != agentd.KindModelUnavailable || outcomes(r.trace) != "api_error/500" {
		t.Errorf("probe: %v, attempts %s", r.err, outcomes(r.trace))
	}
	if n := requestsFor(h.fake, "m"); n != sent+1 {
		t.Errorf("%d requests for one probe", n-sent)
	}
	changes("m: half_open->open")
	refused(call("m"), openFor)

	// The model recovers. Of 8 concurrent calls after OpenFor, one probes
	// (held at the fake until the others have been refused), 7 are refused.
	h.clock.Advance(openFor)
	sw.mu.Lock()
	sw.down["m"] = false
	sw.hold, sw.arrived = make(chan struct{}), make(chan string, 8)
	sw.mu.Unlock()
	sent = requestsFor(h.fake, "m")
	results := make(chan result, 8)
	for range 8 {
		go func() { results <- <-h.start(t.Context(), request("m", "x"), false) }()
	}
	// A second probe reaching the fake would be held too: it fails the test
	// instead of hanging it.
	arrivals, refusals := 0, 0
	for arrivals <= 1 && (arrivals < 1 || refusals < 7) {
		select {
		case <-sw.arrived:
			arrivals++
		case r := <-results:
			refused(r, 0) // when the probe ends is not known
			refusals++
		}
	}
	close(sw.hold)
	if arrivals != 1 {
		t.Fatalf("%d probes went through at once", arrivals)
	}
	probe := <-results
	if probe.err != nil || probe.resp.Text() != "You said: x" {
		t.Errorf("probe: %v", probe.err)
	}
	if n := requestsFor(h.fake, "m"); n != sent+1 {
		t.Errorf("%d requests reached the fake, want the one probe", n-sent)
	}
	changes("m: open->half_open", "m: half_open->closed")
	if s := h.model.State("m"); s != resilient.Closed {
		t.Errorf("state %s after a good probe", s)
	}
	sw.mu.Lock()
	sw.hold = nil
	sw.mu.Unlock()
	if r := call("m"); r.err != nil {
		t.Errorf("closed again: %v", r.err)
	}
}

// What counts against a breaker: calls that end with the model unavailable,
// rate-limited or too slow, in a row. An answer, and an API that answers
// with a refusal of the request, reset the count; the caller's own
// cancellation neither counts nor resets.
func TestBreakerCounting(t *testing.T) {
	const (
		fail   = "500"
		rate   = "429"
		bad    = "400"
		ok     = "ok"
		cancel = "cancel"
		slow   = "slow"
	)
	for _, tc := range []struct {
		name      string
		threshold int
		steps     []string
		want      resilient.State
	}{
		{"three in a row", 3, []string{fail, fail, fail}, resilient.Open},
		{"rate limits count", 3, []string{rate, rate, rate}, resilient.Open},
		{"attempt timeouts count", 2, []string{slow, slow}, resilient.Open},
		{"an answer resets", 3, []string{fail, fail, ok, fail, fail}, resilient.Closed},
		{"a 4xx is not a failure", 3, []string{bad, bad, bad, bad}, resilient.Closed},
		{"a 4xx shows the API is up", 3, []string{fail, fail, bad, fail, fail}, resilient.Closed},
		{"cancellation neither counts nor resets", 3, []string{fail, fail, cancel, cancel, fail}, resilient.Open},
		{"threshold 1", 1, []string{fail}, resilient.Open},
		{"default threshold is 5", 0, []string{fail, fail, fail, fail}, resilient.Closed},
		{"default threshold reached", 0, []string{fail, fail, fail, fail, fail}, resilient.Open},
		{"negative threshold: never", -1, []string{fail, fail, fail, fail, fail, fail, fail}, resilient.Closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, resilient.Config{MaxRetries: -1, FailureThreshold: tc.threshold}, anthropic.Config{Timeout: 50 * time.Millisecond})
			for i, s := range tc.steps {
				ctx := t.Context()
				var reply anthropictest.Reply
				switch s {
				case fail:
					reply = anthropictest.Error(500, "", "")
				case rate:
					reply = anthropictest.Error(429, "", "")
				case bad:
					reply = anthropictest.Error(400, "", "")
				case ok:
					reply = anthropictest.Text("ok")
				case slow:
					reply = anthropictest.Text("slow").WithDelay(time.Hour)
				case cancel:
					c, stop := context.WithCancel(ctx)
					stop()
					ctx = c
				}
				if s != cancel {
					h.fake.Enqueue(reply)
				}
				r := h.generate(t, ctx, request("m", "x"), false, time.Second)
				if (s == ok) != (r.err == nil) || (s == cancel && agentd.KindOf(r.err) != agentd.KindTimeout) {
					t.Fatalf("step %d (%s): %v", i, s, r.err)
				}
				if st := h.model.State("m"); i < len(tc.steps)-1 && st != resilient.Closed {
					t.Fatalf("step %d (%s): state %s", i, s, st)
				}
			}
			if st := h.model.State("m"); st != tc.want {
				t.Errorf("state %s, want %s", st, tc.want)
			}
		})
	}
}

// A probe whose caller cancels it leaves the breaker half-open for the next
// call to probe, instead of stuck with a probe that never reports.
func TestBreakerProbeCancelled(t *testing.T) {
	h := newHarness(t, resilient.Config{MaxRetries: -1, FailureThreshold: 1, OpenFor: time.Second}, anthropic.Config{})
	h.fake.Enqueue(anthropictest.Error(529, "", ""))
	h.generate(t, t.Context(), request("m", "x"), false, time.Second)
	h.clock.Advance(time.Second)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if r := h.generate(t, ctx, request("m", "x"), false, time.Second); agentd.KindOf(r.err) != agentd.KindTimeout {
		t.Fatalf("cancelled probe: %v", r.err)
	}
	if s := h.model.State("m"); s != resilient.HalfOpen {
		t.Fatalf("state %s after a cancelled probe", s)
	}
	if r := h.generate(t, t.Context(), request("m", "x"), false, time.Second); r.err != nil {
		t.Fatalf("second probe: %v", r.err)
	}
	if s := h.model.State("m"); s != resilient.Closed {
		t.Errorf("state %s after a good probe", s)
	}
}

// A probe whose OnTextDelta panics does not leave the breaker half-open
// with its probe out for good.
func TestBreakerProbePanics(t *testing.T) {
	h := newHarness(t, resilient.Config{MaxRetries: -1, FailureThreshold: 1, OpenFor: time.Second}, anthropic.Config{})
	h.fake.Enqueue(anthropictest.Error(529, "", ""))
	h.generate(t, t.Context(), request("m", "x"), false, time.Second)
	h.clock.Advance(time.Second)

	var panicked atomic.Bool
	func() {
		defer func() { panicked.Store(recover() != nil) }()
		req := request("m", "x")
		req.OnTextDelta = func(string) { panic("receiver broke") }
		h.model.Generate(t.Context(), req)
	}()
	if !panicked.Load() {
		t.Fatal("no panic")
	}
	if r := h.generate(t, t.Context(), request("m", "x"), false, time.Second); r.err != nil {
		t.Fatalf("next probe: %v", r.err)
	}
	if s := h.model.State("m"); s != resilient.Closed {
		t.Errorf("state %s", s)
	}
}

// A call admitted before its breaker changed state does not judge the new
// state: one that fails only after the breaker opened, half-opened and
// closed again is not counted against the closed breaker.
func TestBreakerLateResult(t *testing.T) {
	h := newHarness(t, resilient.Config{MaxRetries: -1, FailureThreshold: 1, OpenFor: time.Second}, anthropic.Config{})
	var n atomic.Int32
	arrived, release := make(chan struct{}), make(chan struct{})
	h.fake.SetResponder(func(req anthropictest.Request) anthropictest.Reply {
		switch n.Add(1) {
		case 1: // the late call: held, then failing
			close(arrived)
			<-release
			return anthropictest.Error(500, "", "")
		case 2: // opens the breaker
			return anthropictest.Error(500, "", "")
		default: // the probe, and what follows
			return anthropictest.Echo(req)
		}
	})
	late := h.start(t.Context(), request("m", "x"), false)
	<-arrived
	if r := h.generate(t, t.Context(), request("m", "x"), false, time.Second); r.err == nil || h.model.State("m") != resilient.Open {
		t.Fatalf("%v, state %s", r.err, h.model.State("m"))
	}
	h.clock.Advance(time.Second)
	if r := h.generate(t, t.Context(), request("m", "x"), false, time.Second); r.err != nil || h.model.State("m") != resilient.Closed {
		t.Fatalf("probe: %v, state %s", r.err, h.model.State("m"))
	}
	close(release)
	if r := <-late; agentd.KindOf(r.err) != agentd.KindModelUnavailable {
		t.Fatalf("late call: %v", r.err)
	}
	if s := h.model.State("m"); s != resilient.Closed {
		t.Errorf("state %s: the late failure was counted", s)
	}
}
