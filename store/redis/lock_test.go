package redis_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/coord"
	"github.com/agentd/agentd/store/redis"
	goredis "github.com/redis/go-redis/v9"
)

// guard bounds a wait on a channel so a broken Locker fails the test rather
// than hanging it; it is a safety net, not a sleep the test depends on.
const guard = 10 * time.Second

// newNode returns a Locker over its own client, as a separate node would
// have, with keys under prefix.
func newNode(t testing.TB, prefix string, opts ...redis.LockerOption) *redis.Locker {
	t.Helper()
	ropts, err := goredis.ParseURL(redisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	ropts.ContextTimeoutEnabled = true
	c := goredis.NewClient(ropts)
	l := redis.NewLocker(c, append([]redis.LockerOption{redis.WithLockPrefix(prefix)}, opts...)...)
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Locker.Close: %v", err)
		}
		_ = c.Close()
	})
	return l
}

func lock(t testing.TB, l *redis.Locker, key string) *redis.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	lease, err := l.LockLease(ctx, key)
	if err != nil {
		t.Fatalf("Lock(%q): %v", key, err)
	}
	return lease
}

func waitFor(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(guard):
		t.Fatalf("gave up waiting for %s", what)
	}
}

// TestLockerSerializesAcrossNodes has 50 goroutines on two nodes increment a
// counter in Redis with a plain GET and SET, which loses updates unless the
// lock serializes them.
func TestLockerSerializesAcrossNodes(t *testing.T) {
	prefix := testPrefix(t)
	nodes := []*redis.Locker{newNode(t, prefix), newNode(t, prefix)}
	raw := rawClient(t)
	counter := prefix + "counter"
	const workers = 50

	var (
		wg      sync.WaitGroup
		inside  atomic.Int32
		mu      sync.Mutex
		tokens  []uint64 // in the order leases were held
		overlap atomic.Bool
	)
	for i := range workers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			lease, err := nodes[i%2].Lock(ctx, "conv")
			if err != nil {
				t.Errorf("worker %d: Lock: %v", i, err)
				return
			}
			defer lease.Unlock()
			if inside.Add(1) != 1 {
				overlap.Store(true)
			}
			defer inside.Add(-1)
			mu.Lock()
			tokens = append(tokens, lease.Token())
			mu.Unlock()

			n := 0
			v, err := raw.Get(ctx, counter).Result()
			switch {
			case errors.Is(err, goredis.Nil):
			case err != nil:
				t.Errorf("worker %d: GET: %v", i, err)
				return
			default:
				n, _ = strconv.Atoi(v)
			}
			if err := raw.Set(ctx, counter, n+1, 0).Err(); err != nil {
				t.Errorf("worker %d: SET: %v", i, err)
			}
		})
	}
	wg.Wait()

	if overlap.Load() {
		t.Error("two holders of the lock at once")
	}
	if v, err := raw.Get(t.Context(), counter).Result(); err != nil || v != strconv.Itoa(workers) {
		t.Errorf("counter = %q, %v; want %d", v, err, workers)
	}
	if len(tokens) != workers {
		t.Fatalf("%d leases, want %d", len(tokens), workers)
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Errorf("token %d after %d: tokens must increase with every lease", tokens[i], tokens[i-1])
		}
	}
	for i, l := range nodes {
		if n := redis.Waiters(l); n != 0 {
			t.Errorf("node %d tracks waiters for %d keys after every lease was released", i, n)
		}
	}
}

func TestLockTokensIncrease(t *testing.T) {
	prefix := testPrefix(t)
	a, b := newNode(t, prefix), newNode(t, prefix)
	var last uint64
	for i, l := range []*redis.Locker{a, b, a, a, b} {
		lease := lock(t, l, "k")
		if lease.Token() <= last {
			t.Errorf("lease %d: token %d after %d", i, lease.Token(), last)
		}
		last = lease.Token()
		lease.Unlock()
		lease.Unlock() // a second Unlock is a no-op
	}
	// Another key has its own lease, independent of k's.
	ka := lock(t, a, "k")
	other := lock(t, b, "other")
	other.Unlock()
	ka.Unlock()

	// The counter expires a day after the last grant: a lock name used
	// once (a decision's) does not stay in Redis forever.
	ropts, err := goredis.ParseURL(redisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(ropts)
	defer c.Close()
	ttl, err := c.PTTL(t.Context(), redis.FenceKey(a, "k")).Result()
	if err != nil || ttl < 23*time.Hour || ttl > 24*time.Hour {
		t.Errorf("fencing counter TTL %s, %v; want about a day", ttl, err)
	}
}

func TestLockContextEnds(t *testing.T) {
	prefix := testPrefix(t)
	holder := lock(t, newNode(t, prefix), "k")
	defer holder.Unlock()

	t.Run("cancelled while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		waiter := newNode(t, prefix)
		// Cancel once the Lock is known to be waiting: no timing guess.
		redis.SetWaitHook(waiter, func(string) { cancel() })
		lease, err := waiter.Lock(ctx, "k")
		if lease != nil {
			t.Fatal("got a lease on a held key")
		}
		wantKind(t, err, agentd.KindTimeout, "Lock")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("errors.Is(%v, context.Canceled) = false", err)
		}
		if n := redis.Waiters(waiter); n != 0 {
			t.Errorf("%d keys with waiters after the wait was abandoned", n)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := newNode(t, prefix).Lock(ctx, "k")
		wantKind(t, err, agentd.KindTimeout, "Lock")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("errors.Is(%v, context.DeadlineExceeded) = false", err)
		}
	})
	t.Run("already done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := newNode(t, prefix).Lock(ctx, "free")
		wantKind(t, err, agentd.KindTimeout, "Lock with a done context")
	})
	if !holder.Held(t.Context()) {
		t.Error("the holder lost its lease to waiters that gave up")
	}
}

// TestLeaseRenewal holds a lease through several renewals, well past its
// TTL, and checks nobody else can take it meanwhile.
func TestLeaseRenewal(t *testing.T) {
	prefix := testPrefix(t)
	const ttl = 300 * time.Millisecond
	a := newNode(t, prefix, redis.WithLockTTL(ttl))
	renewed := make(chan struct{}, 16)
	redis.SetRenewHook(a, func() {
		select {
		case renewed <- struct{}{}:
		default:
		}
	})
	b := newNode(t, prefix, redis.WithLockTTL(ttl))

	lease := lock(t, a, "k")
	const cycles = 5 // 5 × TTL/3 > TTL
	for i := range cycles {
		waitFor(t, renewed, "renewal "+strconv.Itoa(i))
	}
	if !lease.Held(t.Context()) {
		t.Fatal("lease lost although its holder kept renewing it")
	}
	if other, err := b.TryLock(t.Context(), "k"); err != nil || other != nil {
		t.Fatalf("TryLock on a renewed lease = %v, %v; want it refused", other, err)
	}
	pttl, err := rawClient(t).PTTL(t.Context(), redis.LockKey(a, "k")).Result()
	if err != nil || pttl <= 0 || pttl > ttl {
		t.Errorf("PTTL of the lock = %v, %v; want within the TTL", pttl, err)
	}

	lease.Unlock()
	waitFor(t, lease.Done(), "Done after Unlock")
	if lease.Held(t.Context()) {
		t.Error("Held after Unlock")
	}
	next, err := b.TryLock(t.Context(), "k")
	if err != nil || next == nil {
		t.Fatalf("TryLock after Unlock = %v, %v", next, err)
	}
	if next.Token() <= lease.Token() {
		t.Errorf("token %d after %d", next.Token(), lease.Token())
	}
	next.Unlock()
}

// TestDeadHolderLeaseExpires abandons a lease as a crashed node would: no
// renewal, no Unlock. The next Lock proceeds once the TTL runs out.
func TestDeadHolderLeaseExpires(t *testing.T) {
	prefix := testPrefix(t)
	const ttl = 200 * time.Millisecond
	dead := newNode(t, prefix, redis.WithLockTTL(ttl))
	alive := newNode(t, prefix, redis.WithLockTTL(ttl))

	abandoned := lock(t, dead, "k")
	redis.Abandon(abandoned)
	taken := lock(t, alive, "k") // waits for the TTL, then proceeds
	if taken.Token() <= abandoned.Token() {
		t.Errorf("token %d after the dead holder's %d", taken.Token(), abandoned.Token())
	}
	if abandoned.Held(t.Context()) {
		t.Error("the dead holder's lease still reads as held")
	}
	// A holder that comes back late cannot release the new holder's lease.
	abandoned.Unlock()
	if !taken.Held(t.Context()) {
		t.Error("a stale Unlock released the new holder's lease")
	}
	taken.Unlock()
}

// TestLostLeaseIsReported deletes a held lock behind its holder's back; the
// next renewal notices and ends the lease.
func TestLostLeaseIsReported(t *testing.T) {
	prefix := testPrefix(t)
	l := newNode(t, prefix, redis.WithLockTTL(150*time.Millisecond))
	lease := lock(t, l, "k")
	defer lease.Unlock()
	if err := rawClient(t).Del(t.Context(), redis.LockKey(l, "k")).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, lease.Done(), "the lease to be reported lost")
	if lease.Held(t.Context()) {
		t.Error("Held after the lease was lost")
	}
}

// TestKVLocker checks the Locker a KV hands out lives in its namespace.
func TestKVLocker(t *testing.T) {
	prefix := testPrefix(t)
	kv := openKVAt(t, redisURL(t), prefix)
	l := kv.Locker(redis.WithLockTTL(time.Second))
	defer l.Close()
	var _ coord.Locker = l
	lease, err := l.Lock(t.Context(), "conv")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Unlock()
	if key := redis.LockKey(l, "conv"); !strings.HasPrefix(key, prefix+"lock:") {
		t.Errorf("lock key %q is not under the store's prefix %q", key, prefix)
	}
	if n, err := rawClient(t).Exists(t.Context(), redis.LockKey(l, "conv")).Result(); err != nil || n != 1 {
		t.Errorf("EXISTS lock = %d, %v", n, err)
	}
}

func BenchmarkLockUnlock(b *testing.B) {
	l := newNode(b, testPrefix(b))
	ctx := context.Background()
	for b.Loop() {
		lease, err := l.Lock(ctx, "k")
		if err != nil {
			b.Fatal(err)
		}
		lease.Unlock()
	}
}
