package coord_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/jonboulle/clockwork"
)

// env is one scenario's world: a fresh store on one backend and a fake
// clock that both the store and the code under test read.
type env struct {
	t     *testing.T
	ctx   context.Context
	clock *clockwork.FakeClock
	// nodes returns n handles on the scenario's store, one per simulated
	// node. Call it once per scenario.
	nodes func(n int) []agentd.KV
}

// kv returns the scenario's store as one node sees it.
func (e *env) kv() agentd.KV { return e.nodes(1)[0] }

// testStart is the fake clock's starting time: mid-morning UTC, with
// nanoseconds, so a stored time that loses precision shows.
func testStart() time.Time {
	return time.Date(2026, time.December, 4, 10, 0, 0, 123456789, time.UTC)
}

// TestBackends runs every scenario of State, RateLimiter and Budgets on
// every backend: bolt always, Redis when AGENTD_TEST_REDIS_URL is set. The
// same code serves both, through the KV's CompareAndSwap, so it must behave
// the same on both.
func TestBackends(t *testing.T) {
	scenarios := []struct {
		name string
		fn   func(e *env)
	}{
		{"StateUpdate", testStateUpdate},
		{"StateRetriesAfterAnotherWriter", testStateRetries},
		{"StateGivesUp", testStateGivesUp},
		{"StateBackoffStopsWithContext", testStateBackoffCancel},
		{"StateNoLostUpdates", testStateNoLostUpdates},
		{"RateExactOneNode", func(e *env) { testRateExact(e, 1) }},
		{"RateExactTwoNodes", func(e *env) { testRateExact(e, 2) }},
		{"RateRefills", testRateRefills},
		{"RateKeysAndRatesIndependent", testRateKeys},
		{"RateEntryExpires", testRateEntryExpires},
		{"BudgetExactOneNode", func(e *env) { testBudgetExact(e, 1) }},
		{"BudgetExactTwoNodes", func(e *env) { testBudgetExact(e, 2) }},
		{"BudgetTwoNodesShare", testBudgetTwoNodes},
		{"BudgetWindowRollover", testBudgetRollover},
		{"BudgetExpiredReservation", testBudgetExpiredHold},
		{"BudgetRelease", testBudgetRelease},
		{"BudgetAllOrNothing", testBudgetAllOrNothing},
		{"BudgetSettleRetriesOnlyUnsettled", testBudgetSettleRetry},
		{"BudgetInvalidClaims", testBudgetInvalid},
	}
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					clock := clockwork.NewFakeClockAt(testStart())
					var opened []agentd.KV
					e := &env{t: t, ctx: t.Context(), clock: clock}
					e.nodes = func(n int) []agentd.KV {
						t.Helper()
						if opened != nil {
							t.Fatal("nodes called twice in one scenario")
						}
						opened = b.open(t, clock, n)
						return opened
					}
					sc.fn(e)
				})
			}
		})
	}
}

// concurrently runs fn(0..n-1) on n goroutines released together, so their
// calls overlap as much as the scheduler allows, and waits for all.
func concurrently(n int, fn func(i int)) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			fn(i)
		})
	}
	close(start)
	wg.Wait()
}

// wantKind fails the test unless err is an *agentd.Error of kind want.
func wantKind(t testing.TB, err error, want agentd.Kind, what string) {
	t.Helper()
	if got := agentd.KindOf(err); got != want {
		t.Errorf("%s: error %v has kind %q, want %q", what, err, got, want)
	}
}
