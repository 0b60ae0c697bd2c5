package coord_test

import (
	"context"
	"math"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/coord"
)

// BenchmarkAllow is one rate-limit check that admits (a read and a
// compare-and-swap): on one hot key, on one key from parallel callers
// (serialized in the process), and on a key per caller.
func BenchmarkAllow(b *testing.B) {
	// Never refuses within a benchmark: a burst of 10⁹.
	rate := coord.Rate{N: 1_000_000_000, Per: 24 * time.Hour}
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			clock := agentd.SystemClock{}
			l := coord.NewRateLimiter(be.open(b, clock, 1)[0], clock)
			ctx := context.Background()
			allow := func(b *testing.B, key string) {
				d, err := l.Allow(ctx, key, rate)
				if err != nil || !d.Allowed {
					b.Fatalf("Allow = %+v, %v", d, err)
				}
			}
			b.Run("one-key", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					allow(b, "ratelimit:bench")
				}
			})
			b.Run("one-key-parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						allow(b, "ratelimit:bench:parallel")
					}
				})
			})
			var caller atomic.Int64
			b.Run("key-per-caller-parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					key := "ratelimit:bench:caller:" + strconv.FormatInt(caller.Add(1), 10)
					for pb.Next() {
						allow(b, key)
					}
				})
			})
		})
	}
}

// BenchmarkReserveSettle is one model call's budget accounting: reserve
// the estimate, settle the actual amount.
func BenchmarkReserveSettle(b *testing.B) {
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			clock := agentd.SystemClock{}
			budgets := coord.NewBudgets(be.open(b, clock, 1)[0], clock)
			ctx := context.Background()
			claim := coord.Claim{Key: "budget:tokens:bench", Limit: math.MaxInt64, Amount: 4096}
			b.ReportAllocs()
			for b.Loop() {
				hold, err := budgets.Reserve(ctx, claim)
				if err != nil {
					b.Fatal(err)
				}
				if err := hold.Settle(ctx, 1000); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
