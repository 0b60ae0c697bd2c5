package coord_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/coord"
)

const tokens = "budget:tokens:agent:support"

// nextMidnight is when the test's first day (2026-12-04, UTC) ends.
func nextMidnight() time.Time { return time.Date(2026, time.December, 5, 0, 0, 0, 0, time.UTC) }

// budgetHelper wraps Budgets with assertions that fail the test.
type budgetHelper struct {
	t   testing.TB
	ctx context.Context
	b   *coord.Budgets
}

func (h budgetHelper) reserve(claims ...coord.Claim) *coord.Hold {
	h.t.Helper()
	hold, err := h.b.Reserve(h.ctx, claims...)
	if err != nil {
		h.t.Fatalf("Reserve(%+v): %v", claims, err)
	}
	return hold
}

// refused asserts Reserve refuses the claims as over budget and returns
// the error.
func (h budgetHelper) refused(claims ...coord.Claim) *agentd.Error {
	h.t.Helper()
	hold, err := h.b.Reserve(h.ctx, claims...)
	if err == nil {
		h.t.Fatalf("Reserve(%+v) admitted %v, want a refusal", claims, hold)
	}
	wantKind(h.t, err, agentd.KindBudgetExceeded, "Reserve beyond the limit")
	return agentd.AsError(err)
}

func (h budgetHelper) spent(key string, wantSpent, wantReserved int64) {
	h.t.Helper()
	spent, reserved, err := h.b.Spent(h.ctx, key)
	if err != nil {
		h.t.Fatalf("Spent(%s): %v", key, err)
	}
	if spent != wantSpent || reserved != wantReserved {
		h.t.Errorf("Spent(%s) = %d spent, %d reserved; want %d, %d", key, spent, reserved, wantSpent, wantReserved)
	}
}

func (h budgetHelper) settle(hold *coord.Hold, actual ...int64) {
	h.t.Helper()
	if err := hold.Settle(h.ctx, actual...); err != nil {
		h.t.Fatalf("Settle(%v): %v", actual, err)
	}
}

// reserveConcurrently runs n concurrent Reserves of claim, spread over the
// Budgets of several nodes, and returns the admitted holds; every refusal
// must be an over-budget error.
func reserveConcurrently(t testing.TB, ctx context.Context, nodes []*coord.Budgets, n int, claim coord.Claim) []*coord.Hold {
	var (
		mu    sync.Mutex
		holds []*coord.Hold
	)
	concurrently(n, func(i int) {
		hold, err := nodes[i%len(nodes)].Reserve(ctx, claim)
		if err != nil {
			wantKind(t, err, agentd.KindBudgetExceeded, "concurrent Reserve")
			return
		}
		mu.Lock()
		holds = append(holds, hold)
		mu.Unlock()
	})
	return holds
}

// testBudgetExact checks admission at the bound under concurrency, from
// one node or two: never more than the limit, and, once smaller actual
// amounts are settled, exactly up to it again.
func testBudgetExact(e *env, nodes int) {
	t, ctx := e.t, e.ctx
	kvs := e.nodes(nodes)
	budgets := make([]*coord.Budgets, nodes)
	for i := range budgets {
		budgets[i] = coord.NewBudgets(kvs[i], e.clock)
	}
	h := budgetHelper{t, ctx, budgets[0]}
	claim := coord.Claim{Key: tokens, Limit: 1000, Amount: 100}

	holds := reserveConcurrently(t, ctx, budgets, 50, claim)
	if len(holds) != 10 {
		t.Fatalf("admitted %d of 50 reservations of 100 on a budget of 1000, want 10", len(holds))
	}
	h.spent(tokens, 0, 1000)
	// Refused only for reservations in flight: retry once they are gone
	// (their expiry at the latest), not at midnight.
	refusal := h.refused(claim)
	if refusal.RetryAfter != 10*time.Minute || !refusal.ResetAt.Equal(nextMidnight()) {
		t.Errorf("refusal RetryAfter %v, ResetAt %v; want 10m and %v", refusal.RetryAfter, refusal.ResetAt, nextMidnight())
	}

	concurrently(len(holds), func(i int) {
		if err := holds[i].Settle(ctx, 40); err != nil {
			t.Errorf("Settle: %v", err)
		}
	})
	h.spent(tokens, 400, 0)

	holds = reserveConcurrently(t, ctx, budgets, 50, claim)
	if len(holds) != 6 {
		t.Fatalf("with 400 spent, admitted %d of 50 reservations of 100, want 6", len(holds))
	}
	h.spent(tokens, 400, 600)
	for _, hold := range holds {
		h.settle(hold, 100)
	}
	h.spent(tokens, 1000, 0)
	refusal = h.refused(coord.Claim{Key: tokens, Limit: 1000, Amount: 1})
	if want := nextMidnight().Sub(e.clock.Now()); refusal.RetryAfter != want || !refusal.ResetAt.Equal(nextMidnight()) {
		t.Errorf("spent budget: RetryAfter %v, ResetAt %v; want %v and %v", refusal.RetryAfter, refusal.ResetAt, want, nextMidnight())
	}
	if !strings.Contains(refusal.Message, tokens) || !strings.Contains(refusal.Message, "2026-12-05T00:00:00Z") {
		t.Errorf("message %q does not name the budget and its reset", refusal.Message)
	}
	// A zero claim still fits a budget that is exactly spent.
	if hold := h.reserve(coord.Claim{Key: tokens, Limit: 1000}); hold == nil {
		t.Error("Reserve of 0 returned no hold")
	}
}

// testBudgetTwoNodes checks two nodes see one budget.
func testBudgetTwoNodes(e *env) {
	t, ctx := e.t, e.ctx
	kvs := e.nodes(2)
	a := budgetHelper{t, ctx, coord.NewBudgets(kvs[0], e.clock)}
	b := budgetHelper{t, ctx, coord.NewBudgets(kvs[1], e.clock)}
	held := a.reserve(coord.Claim{Key: tokens, Limit: 1000, Amount: 600})
	b.refused(coord.Claim{Key: tokens, Limit: 1000, Amount: 500})
	b.reserve(coord.Claim{Key: tokens, Limit: 1000, Amount: 400})
	b.spent(tokens, 0, 1000)
	a.settle(held, 100)
	b.spent(tokens, 100, 400)
	a.spent(tokens, 100, 400)
}

// zonedClock reads its clock in another time zone: windows are UTC days
// whatever zone the clock's times carry.
type zonedClock struct {
	agentd.Clock
	loc *time.Location
}

func (c zonedClock) Now() time.Time { return c.Clock.Now().In(c.loc) }

func testBudgetRollover(e *env) {
	t, ctx, kv := e.t, e.ctx, e.kv()
	e.clock.Advance(nextMidnight().Add(-time.Minute).Sub(e.clock.Now())) // 23:59 UTC
	// 08:59 on the 5th in Tokyo: still the 4th's budget.
	h := budgetHelper{t, ctx, coord.NewBudgets(kv, zonedClock{e.clock, time.FixedZone("JST", 9*3600)})}
	claim := func(n int64) coord.Claim { return coord.Claim{Key: tokens, Limit: 1000, Amount: n} }

	first := h.reserve(claim(600))
	late := h.reserve(claim(400))
	h.settle(first, 600)
	h.spent(tokens, 600, 400)
	refusal := h.refused(claim(1))
	// The reservation in flight expires after midnight: the reset comes
	// first.
	if refusal.RetryAfter != time.Minute || !refusal.ResetAt.Equal(nextMidnight()) {
		t.Errorf("at 23:59: RetryAfter %v, ResetAt %v; want 1m and %v", refusal.RetryAfter, refusal.ResetAt, nextMidnight())
	}
	entry, err := kv.Get(ctx, tokens+":2026-12-04")
	if err != nil {
		t.Fatalf("the day's KV key: %v", err)
	}
	if !entry.Expiration.Equal(nextMidnight()) {
		t.Errorf("the day's KV key expires at %v, want the end of the day", entry.Expiration)
	}

	e.clock.Advance(time.Minute)
	h.spent(tokens, 0, 0)
	// Settled after midnight, the reservation's spend goes to the day it
	// was made in: the new day starts empty.
	h.settle(late, 400)
	h.spent(tokens, 0, 0)
	h.reserve(claim(1000))
	h.spent(tokens, 0, 1000)
}

func testBudgetExpiredHold(e *env) {
	t, ctx := e.t, e.ctx
	h := budgetHelper{t, ctx, coord.NewBudgets(e.kv(), e.clock, coord.WithHoldTTL(5*time.Minute))}
	claim := func(n int64) coord.Claim { return coord.Claim{Key: tokens, Limit: 1000, Amount: n} }

	// RetryAfter is when enough reservations will have expired, taking
	// the earliest first: 300 (expiring at 5m) and 300 (at 6m) must go
	// for 500 to fit.
	const staggered = "budget:tokens:staggered"
	stag := func(n int64) coord.Claim { return coord.Claim{Key: staggered, Limit: 1000, Amount: n} }
	h.reserve(stag(300))
	e.clock.Advance(time.Minute)
	h.reserve(stag(300))
	e.clock.Advance(time.Minute)
	h.reserve(stag(400))
	if r := h.refused(stag(500)); r.RetryAfter != 4*time.Minute {
		t.Errorf("RetryAfter %v, want 4m (until the second reservation expires)", r.RetryAfter)
	}

	dead := h.reserve(claim(1000)) // its node dies: never settled
	if r := h.refused(claim(1)); r.RetryAfter != 5*time.Minute {
		t.Errorf("RetryAfter %v, want the reservation's 5m", r.RetryAfter)
	}
	e.clock.Advance(5*time.Minute - time.Nanosecond)
	if r := h.refused(claim(1)); r.RetryAfter != time.Nanosecond {
		t.Errorf("RetryAfter %v, want 1ns", r.RetryAfter)
	}
	e.clock.Advance(time.Nanosecond)
	h.spent(tokens, 0, 0)
	live := h.reserve(claim(1000))
	h.spent(tokens, 0, 1000)
	// Settling the expired reservation still counts its spend.
	h.settle(dead, 300)
	h.spent(tokens, 300, 1000)
	if err := live.Release(ctx); err != nil {
		t.Fatal(err)
	}
	h.spent(tokens, 300, 0)
}

func testBudgetRelease(e *env) {
	t, ctx := e.t, e.ctx
	h := budgetHelper{t, ctx, coord.NewBudgets(e.kv(), e.clock)}
	claim := func(n int64) coord.Claim { return coord.Claim{Key: tokens, Limit: 1000, Amount: n} }

	hold := h.reserve(claim(600))
	h.spent(tokens, 0, 600)
	h.refused(claim(500))
	if err := hold.Release(ctx); err != nil {
		t.Fatal(err)
	}
	h.spent(tokens, 0, 0)
	if err := hold.Release(ctx); err != nil {
		t.Errorf("second Release: %v", err)
	}
	wantKind(t, hold.Settle(ctx, 10), agentd.KindInternal, "Settle after Release")
	h.spent(tokens, 0, 0)

	settled := h.reserve(claim(1000))
	h.settle(settled, 250)
	// Release after Settle does nothing, for `defer hold.Release(ctx)`.
	if err := settled.Release(ctx); err != nil {
		t.Errorf("Release after Settle: %v", err)
	}
	h.spent(tokens, 250, 0)
	wantKind(t, settled.Settle(ctx, 250), agentd.KindInternal, "second Settle")
	h.spent(tokens, 250, 0)
}

func testBudgetAllOrNothing(e *env) {
	t, ctx := e.t, e.ctx
	h := budgetHelper{t, ctx, coord.NewBudgets(e.kv(), e.clock)}
	const usd = "budget:usd:tenant:acme"
	tok := coord.Claim{Key: tokens, Limit: 1000, Amount: 100}

	// The second claim asks more than its whole limit: the first one's
	// reservation, already made, must be rolled back.
	refusal := h.refused(tok, coord.Claim{Key: usd, Limit: 50, Amount: 100})
	if !strings.Contains(refusal.Message, usd) {
		t.Errorf("refusal %q does not name the budget that refused", refusal.Message)
	}
	h.spent(tokens, 0, 0)
	h.spent(usd, 0, 0)

	money := coord.Claim{Key: usd, Limit: 1_000_000_000, Amount: 5_000_000} // nano-USD
	hold := h.reserve(tok, money)
	h.spent(tokens, 0, 100)
	h.spent(usd, 0, 5_000_000)
	wantKind(t, hold.Settle(ctx, 70), agentd.KindInvalid, "Settle with one amount for two claims")
	h.settle(hold, 70, 3_000_000)
	h.spent(tokens, 70, 0)
	h.spent(usd, 3_000_000, 0)
}

// failingKV fails every compare-and-swap of keys starting with prefix
// while fail is set, as a store going away would.
type failingKV struct {
	agentd.KV
	prefix string
	fail   atomic.Bool
}

func (k *failingKV) CompareAndSwap(ctx context.Context, key string, expect uint64, value []byte, opts agentd.KVPutOptions) (uint64, error) {
	if k.fail.Load() && strings.HasPrefix(key, k.prefix) {
		return 0, agentd.Errorf(agentd.KindStorageUnavailable, "kv.cas", "injected failure")
	}
	return k.KV.CompareAndSwap(ctx, key, expect, value, opts)
}

// testBudgetSettleRetry checks that a Settle that failed half-way is
// retried, and the claim it had settled is not counted twice.
func testBudgetSettleRetry(e *env) {
	t, ctx := e.t, e.ctx
	const usd = "budget:usd:tenant:acme"
	kv := &failingKV{KV: e.kv(), prefix: usd}
	h := budgetHelper{t, ctx, coord.NewBudgets(kv, e.clock)}
	hold := h.reserve(coord.Claim{Key: tokens, Limit: 1000, Amount: 100}, coord.Claim{Key: usd, Limit: 1000, Amount: 100})

	kv.fail.Store(true)
	wantKind(t, hold.Settle(ctx, 80, 90), agentd.KindStorageUnavailable, "Settle with the store failing")
	h.spent(tokens, 80, 0)
	h.spent(usd, 0, 100)

	kv.fail.Store(false)
	h.settle(hold, 80, 90)
	h.spent(tokens, 80, 0)
	h.spent(usd, 90, 0)

	// A failed Reserve rolls back what it reserved before the failure.
	kv.fail.Store(true)
	_, err := h.b.Reserve(ctx, coord.Claim{Key: tokens, Limit: 1000, Amount: 100}, coord.Claim{Key: usd, Limit: 1000, Amount: 100})
	wantKind(t, err, agentd.KindStorageUnavailable, "Reserve with the store failing")
	h.spent(tokens, 80, 0)
}

func testBudgetInvalid(e *env) {
	t, ctx := e.t, e.ctx
	b := coord.NewBudgets(e.kv(), e.clock)
	tests := []struct {
		claim coord.Claim
		field string
	}{
		{coord.Claim{Limit: 10, Amount: 1}, "claims[0].key"},
		{coord.Claim{Key: tokens, Limit: -1, Amount: 1}, "claims[0].limit"},
		{coord.Claim{Key: tokens, Limit: 10, Amount: -1}, "claims[0].amount"},
		{coord.Claim{Key: strings.Repeat("k", agentd.MaxKVKeyBytes), Limit: 10, Amount: 1}, "key"},
	}
	for _, tt := range tests {
		_, err := b.Reserve(ctx, tt.claim)
		if ae := agentd.AsError(err); err == nil || ae.Field != tt.field {
			t.Errorf("Reserve(%.40v) = %v; want an error naming %s", tt.claim, err, tt.field)
		}
	}
	hold, err := b.Reserve(ctx, coord.Claim{Key: tokens, Limit: 10, Amount: 1})
	if err != nil {
		t.Fatal(err)
	}
	wantKind(t, hold.Settle(ctx, -1), agentd.KindInvalid, "Settle of a negative amount")
}
