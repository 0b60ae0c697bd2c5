package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/coord"
	goredis "github.com/redis/go-redis/v9"
)

// minFenceTTL is the least time a fencing counter outlives its key's last
// grant.
const minFenceTTL = 24 * time.Hour

// fenceTTL is how long a key's fencing counter outlives its last grant:
// a day, or a thousand lease TTLs if that is longer.
func (l *Locker) fenceTTL() time.Duration { return max(minFenceTTL, 1000*l.ttl) }

// Defaults of the Locker options.
const (
	DefaultLockPrefix = "agentd:lock:"
	defaultLockTTL    = 30 * time.Second
	// minLockTTL keeps the renewal period (TTL/3) and Redis's millisecond
	// PX meaningful.
	minLockTTL = 30 * time.Millisecond
	// Waiting for a lock polls with jittered exponential backoff between
	// these bounds, besides waking on release notices: notices can be lost
	// (a reconnecting subscription) and a dead holder sends none.
	minLockBackoff = 2 * time.Millisecond
	maxLockBackoff = 100 * time.Millisecond
)

// Locker is a coord.Locker shared by every node that uses the same Redis and
// prefix: a lease on a key is a Redis string holding the holder's random
// token, set with SET NX semantics and a TTL.
//
// While a lease is held a goroutine renews its TTL every TTL/3, so a live
// holder keeps it however long it works, and a node that dies stops
// renewing, so its leases expire after at most the TTL and others proceed.
// Unlock deletes the lock only if it still holds the holder's token and
// publishes the release, so waiters on every node retry at once; waiters
// also poll, which covers lost notices and expired leases. Across nodes
// waiters are not served in order, but each node lets its longest-waiting
// waiter go first on a notice.
//
// Every grant increments a per-key counter in the same script, which is the
// fencing token: larger for every lease on a key, on every node. A counter
// lives fenceTTL past its key's last grant, then expires: by then no lease
// on the key can be alive (a lease lapses one TTL after its holder stops
// renewing), so a restart from 1 cannot be confused with a live lease,
// and Redis does not keep a key for every lock name ever used (a task
// agent locks each decision it applies).
//
// A Locker is safe for concurrent use. Close it when done to end its
// subscription.
type Locker struct {
	client    goredis.UniversalClient
	prefix    string
	channel   string
	ttl       time.Duration
	opTimeout time.Duration
	scripts   lockScripts

	// Test hooks, set by export_test.go before the Locker is used.
	onRenew func()           // after each successful renewal
	onWait  func(key string) // when a Lock first finds the key taken

	mu      sync.Mutex
	waiters map[string][]*waiter // guarded by mu: per key, in arrival order

	// subMu guards the subscription. It is held while subscribing, which
	// is network I/O, so it is not mu, which every waiter needs.
	subMu   sync.Mutex
	sub     *goredis.PubSub // nil until a Lock first waits
	subDone chan struct{}   // closed when the dispatcher returns
	closed  bool
}

// waiter is one Lock call waiting on this node.
type waiter struct {
	wake chan struct{} // capacity 1: a pending wake-up
}

// Compile-time check that Locker implements the interface.
var _ coord.Locker = (*Locker)(nil)

// LockerOption configures NewLocker.
type LockerOption func(*Locker)

// WithLockTTL sets how long a lease outlives its last renewal (default 30 s,
// at least 30 ms): how long others wait for the locks of a node that died.
func WithLockTTL(d time.Duration) LockerOption {
	return func(l *Locker) { l.ttl = max(d, minLockTTL) }
}

// WithLockPrefix sets the namespace of the Locker's Redis keys and its
// release channel (default "agentd:lock:").
func WithLockPrefix(p string) LockerOption {
	return func(l *Locker) { l.prefix = p }
}

// WithLockOpTimeout bounds each Redis call of the Locker (default 5 s). A
// non-positive value keeps the default.
func WithLockOpTimeout(d time.Duration) LockerOption {
	return func(l *Locker) {
		if d > 0 {
			l.opTimeout = d
		}
	}
}

// NewLocker returns a Locker over client. The client stays the caller's.
func NewLocker(client goredis.UniversalClient, opts ...LockerOption) *Locker {
	l := &Locker{
		client:    client,
		prefix:    DefaultLockPrefix,
		ttl:       defaultLockTTL,
		opTimeout: defaultOpTimeout,
		scripts:   newLockScripts(),
		waiters:   map[string][]*waiter{},
	}
	for _, o := range opts {
		o(l)
	}
	l.channel = l.prefix + "released"
	return l
}

// Locker returns a Locker over the store's connection, with its keys under
// the store's prefix + "lock:" and the store's operation timeout. Close it
// before the store.
func (kv *KV) Locker(opts ...LockerOption) *Locker {
	base := []LockerOption{WithLockPrefix(kv.prefix + "lock:"), WithLockOpTimeout(kv.opTimeout)}
	return NewLocker(kv.client, append(base, opts...)...)
}

// Close ends the Locker's release subscription. Leases it granted stay held
// until unlocked; Lock still works after Close, by polling only.
func (l *Locker) Close() error {
	l.subMu.Lock()
	l.closed = true
	sub, done := l.sub, l.subDone
	l.subMu.Unlock()
	if sub == nil {
		return nil
	}
	err := sub.Close()
	<-done
	if err != nil {
		return agentd.E(agentd.KindStorageUnavailable, "coord.close", err)
	}
	return nil
}

// Lock implements coord.Locker: it waits until the caller holds key, or ctx
// is done, which is an error of KindTimeout wrapping the context's cause.
// The lease is a *Lease. A Redis failure ends the wait with
// KindStorageUnavailable rather than retrying until ctx ends, as a request
// without a deadline would otherwise hang while Redis is down.
func (l *Locker) Lock(ctx context.Context, key string) (coord.Lease, error) {
	lease, err := l.LockLease(ctx, key)
	if err != nil {
		return nil, err
	}
	return lease, nil
}

// LockLease is Lock returning the concrete *Lease.
func (l *Locker) LockLease(ctx context.Context, key string) (*Lease, error) {
	if ctx.Err() != nil {
		return nil, gaveUp(ctx, key)
	}
	token, err := newToken()
	if err != nil {
		return nil, agentd.E(agentd.KindInternal, "coord.lock", err)
	}
	// Join the queue before the first attempt, so a release that comes
	// between a failed attempt and the wait still wakes this waiter.
	w := l.enqueue(key)
	acquired := false
	defer func() { l.dequeue(key, w, !acquired) }()

	backoff := minLockBackoff
	for attempt := 0; ; attempt++ {
		lease, remaining, err := l.acquire(ctx, key, token)
		if err != nil {
			return nil, err
		}
		if lease != nil {
			acquired = true
			return lease, nil
		}
		if attempt == 0 {
			l.subscribe()
			if l.onWait != nil {
				l.onWait(key)
			}
		}
		// A random wait in [backoff/2, backoff] keeps nodes that lost the
		// same race from retrying in lockstep; never past the holder's
		// expiry, so a dead holder's lease is taken over promptly.
		wait := backoff/2 + mrand.N(backoff/2+1)
		if remaining >= 0 && remaining+time.Millisecond < wait {
			wait = remaining + time.Millisecond
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, gaveUp(ctx, key)
		case <-w.wake:
			t.Stop()
		case <-t.C:
			backoff = min(2*backoff, maxLockBackoff)
		}
	}
}

// TryLock makes one attempt at key: it returns the lease, or nil and no
// error when someone else holds it.
func (l *Locker) TryLock(ctx context.Context, key string) (*Lease, error) {
	if ctx.Err() != nil {
		return nil, gaveUp(ctx, key)
	}
	token, err := newToken()
	if err != nil {
		return nil, agentd.E(agentd.KindInternal, "coord.lock", err)
	}
	lease, _, err := l.acquire(ctx, key, token)
	return lease, err
}

// gaveUp is the error of a Lock whose context ended, shaped as coord.Local's.
func gaveUp(ctx context.Context, key string) error {
	return &agentd.Error{Kind: agentd.KindTimeout, Op: "coord.lock", Message: "gave up waiting for " + key, Err: context.Cause(ctx)}
}

// acquire makes one attempt. It returns the lease, or nil and the holder's
// remaining TTL (negative when unknown).
func (l *Locker) acquire(ctx context.Context, key, token string) (*Lease, time.Duration, error) {
	const op = "coord.lock"
	opCtx, cancel := context.WithTimeout(ctx, l.opTimeout)
	defer cancel()
	// The lease is valid for the TTL from when Redis set it, which is after
	// this instant: counting from here errs on the safe side.
	start := time.Now()
	res, err := l.scripts.acquire.Run(opCtx, l.client, []string{l.lockKey(key), l.fenceKey(key)},
		token, l.ttl.Milliseconds(), l.fenceTTL().Milliseconds()).Slice()
	if err != nil {
		// The grant may have happened with only the reply lost; the token
		// is ours alone, so releasing it cannot hurt anyone else, and it
		// spares the others a wait of one TTL.
		l.release(key, token)
		if ctx.Err() != nil {
			return nil, 0, gaveUp(ctx, key)
		}
		return nil, 0, classify(ctx, opCtx, op, l.opTimeout, err)
	}
	if len(res) == 2 {
		flag, _ := res[0].(int64)
		switch v := res[1].(type) {
		case int64: // {0, PTTL}
			if flag == 0 {
				return nil, time.Duration(v) * time.Millisecond, nil
			}
		case string: // {1, fencing token}
			if fence, err := strconv.ParseUint(v, 10, 64); flag == 1 && err == nil {
				return l.newLease(key, token, fence, start), 0, nil
			}
		}
	}
	l.release(key, token)
	return nil, 0, agentd.Errorf(agentd.KindInternal, op, "unexpected reply from redis: %v", res)
}

// release deletes the lock if it holds token and announces it. Errors are
// dropped: Unlock cannot report them, and the lease then ends by its TTL.
func (l *Locker) release(key, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), l.opTimeout)
	defer cancel()
	_ = l.scripts.release.Run(ctx, l.client, []string{l.lockKey(key)}, token, l.channel, key).Err()
}

// Lock keys are prefix + "{" + tag + "}" + name + ":l" (the lock) and ":f"
// (its fencing counter). The hash tag puts both in one Redis Cluster slot,
// which the acquire script needs, while different locks spread over the
// cluster. The tag is a hash of the name, not the name, because a name with
// braces, or an empty one, would change or void the tag.
func (l *Locker) lockKey(key string) string  { return l.keyBase(key) + ":l" }
func (l *Locker) fenceKey(key string) string { return l.keyBase(key) + ":f" }

func (l *Locker) keyBase(key string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key)) // a hash.Hash never fails to write
	return fmt.Sprintf("%s{%08x}%s", l.prefix, h.Sum32(), key)
}

// enqueue adds a waiter for key on this node.
func (l *Locker) enqueue(key string) *waiter {
	w := &waiter{wake: make(chan struct{}, 1)}
	l.mu.Lock()
	l.waiters[key] = append(l.waiters[key], w)
	l.mu.Unlock()
	return w
}

// dequeue removes w. A waiter leaving without the lease passes a wake-up it
// had not consumed on to the next one, so a release notice is not lost on a
// waiter that gave up.
func (l *Locker) dequeue(key string, w *waiter, passOn bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := slices.DeleteFunc(l.waiters[key], func(x *waiter) bool { return x == w })
	if len(q) == 0 {
		delete(l.waiters, key)
		return
	}
	l.waiters[key] = q
	if passOn {
		select {
		case <-w.wake:
			l.wakeLocked(key)
		default:
		}
	}
}

// wake wakes the longest-waiting waiter for key on this node. Waking one,
// not all, spares Redis a stampede; the others still poll.
func (l *Locker) wake(key string) {
	l.mu.Lock()
	l.wakeLocked(key)
	l.mu.Unlock()
}

func (l *Locker) wakeLocked(key string) {
	if q := l.waiters[key]; len(q) > 0 {
		select {
		case q[0].wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// subscribe starts listening for release notices, once. It is called only
// when a Lock has to wait, so a Locker that never waits holds no
// subscription connection.
func (l *Locker) subscribe() {
	// A waiter that finds another one subscribing goes on waiting (and
	// polling) instead of queueing behind its network round trip.
	if !l.subMu.TryLock() {
		return
	}
	defer l.subMu.Unlock()
	if l.sub != nil || l.closed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opTimeout)
	defer cancel()
	// A failure to subscribe is not reported: go-redis remembers the
	// channel and subscribes again when it reconnects, and until then
	// waiters poll.
	l.sub = l.client.Subscribe(ctx, l.channel)
	l.subDone = make(chan struct{})
	go l.dispatch(l.sub.Channel(), l.subDone)
}

// dispatch wakes local waiters on each release notice until the
// subscription is closed.
func (l *Locker) dispatch(ch <-chan *goredis.Message, done chan struct{}) {
	defer close(done)
	for m := range ch {
		l.wake(m.Payload)
	}
}

// renew extends the lease of token; false when the lock is no longer ours.
func (l *Locker) renew(ctx context.Context, key, token string) (bool, error) {
	// A renewal that takes longer than a third of the TTL is as good as
	// failed: the next one is due.
	ctx, cancel := context.WithTimeout(ctx, min(l.opTimeout, l.ttl/3))
	defer cancel()
	n, err := l.scripts.renew.Run(ctx, l.client, []string{l.lockKey(key)}, token, l.ttl.Milliseconds()).Int()
	return n == 1, err
}

// Lease is a lock held through a Locker. Unlock it when done; until then it
// renews itself.
type Lease struct {
	l     *Locker
	key   string
	token string
	fence uint64

	stopRenew context.CancelFunc
	renewDone chan struct{} // closed when the renewal goroutine returns

	ended     chan struct{} // closed when the lease is released or lost
	endOnce   sync.Once
	unlockOne sync.Once

	mu         sync.Mutex
	validUntil time.Time // guarded by mu: the latest the lock can still be ours
}

// Compile-time check that Lease implements the interface.
var _ coord.Lease = (*Lease)(nil)

func (l *Locker) newLease(key, token string, fence uint64, granted time.Time) *Lease {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Lease{
		l: l, key: key, token: token, fence: fence,
		stopRenew:  cancel,
		renewDone:  make(chan struct{}),
		ended:      make(chan struct{}),
		validUntil: granted.Add(l.ttl),
	}
	go s.renewLoop(ctx)
	return s
}

// Token is the lease's fencing token: larger for every lease granted on the
// same key, on any node.
func (s *Lease) Token() uint64 { return s.fence }

// Done is closed when the lease ends: released by Unlock, or found lost
// because a renewal failed for a whole TTL or found the lock taken over. A
// holder doing long work can watch it to stop early.
func (s *Lease) Done() <-chan struct{} { return s.ended }

// Held asks Redis whether the lock still holds this lease's token, for
// diagnostics. It is false once the lease has ended and when Redis cannot be
// asked. A true answer can be stale by the time it is read; writes that
// must not come from a superseded holder need the fencing token.
func (s *Lease) Held(ctx context.Context) bool {
	select {
	case <-s.ended:
		return false
	default:
	}
	ctx, cancel := context.WithTimeout(ctx, s.l.opTimeout)
	defer cancel()
	v, err := s.l.client.Get(ctx, s.l.lockKey(s.key)).Result()
	if errors.Is(err, goredis.Nil) || (err == nil && v != s.token) {
		s.end() // expired or someone else's: ours is gone for good
		return false
	}
	return err == nil
}

// Unlock releases the lease: it stops the renewal and deletes the lock if it
// is still ours. Calling it again is a no-op. If Redis cannot be reached the
// lock expires after its TTL.
func (s *Lease) Unlock() {
	s.unlockOne.Do(func() {
		s.stopRenewal()
		s.l.release(s.key, s.token)
		s.end()
		// Waiters on this node need not wait for the notice to come back
		// from Redis.
		s.l.wake(s.key)
	})
}

// stopRenewal stops the renewal goroutine and waits for it, so no renewal
// can land after a release.
func (s *Lease) stopRenewal() {
	s.stopRenew()
	<-s.renewDone
}

func (s *Lease) end() { s.endOnce.Do(func() { close(s.ended) }) }

// renewLoop extends the lease every TTL/3 until Unlock stops it or the
// lease is lost.
func (s *Lease) renewLoop(ctx context.Context) {
	defer close(s.renewDone)
	t := time.NewTicker(s.l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		ok, err := s.l.renew(ctx, s.key, s.token)
		switch {
		case ctx.Err() != nil:
			return // Unlock came during the renewal
		case err == nil && ok:
			s.mu.Lock()
			s.validUntil = start.Add(s.l.ttl)
			s.mu.Unlock()
			if s.l.onRenew != nil {
				s.l.onRenew()
			}
		case err == nil:
			// The key expired or another holder has it: the lease is
			// gone and renewing cannot bring it back.
			s.end()
			return
		default:
			// Redis did not answer. The lock may still be ours until the
			// TTL of the last renewal runs out; after that, assume not.
			s.mu.Lock()
			expired := !time.Now().Before(s.validUntil)
			s.mu.Unlock()
			if expired {
				s.end()
				return
			}
		}
	}
}

// newToken returns a random lease token, unique to one Lock call, so only
// the lease that set a lock can renew or release it.
func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}
