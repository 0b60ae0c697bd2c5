package coord

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/agentd/agentd"
)

// Locker grants exclusive leases on keys.
type Locker interface {
	// Lock waits until the caller holds key, or ctx is done.
	Lock(ctx context.Context, key string) (Lease, error)
}

// Lease is held ownership of one key. Unlock releases it; calling Unlock
// more than once is a no-op.
type Lease interface {
	// Token is a fencing token: larger for every lease granted on the same
	// key, so a store can refuse a write from a holder that was superseded.
	Token() uint64
	Unlock()
}

// Local is a Locker for one process: a mutex per key, created on first use
// and dropped when nobody holds or waits for it, so memory follows the
// number of busy keys, not the number of keys ever seen.
//
// It serializes conversations on one node. A fleet of nodes needs a Locker
// shared through Redis or Postgres; the KV's compare-and-swap still keeps a
// stale writer from overwriting history either way.
type Local struct {
	mu    sync.Mutex
	keys  map[string]*localKey
	token atomic.Uint64
}

type localKey struct {
	sem  chan struct{} // capacity 1: holding the lease is having sent into it
	refs int           // holders plus waiters; guarded by Local.mu
}

// NewLocal returns an empty Local.
func NewLocal() *Local {
	return &Local{keys: make(map[string]*localKey)}
}

// Lock implements Locker. Waiters are served in arrival order, as blocked
// channel senders are.
func (l *Local) Lock(ctx context.Context, key string) (Lease, error) {
	l.mu.Lock()
	k, ok := l.keys[key]
	if !ok {
		k = &localKey{sem: make(chan struct{}, 1)}
		l.keys[key] = k
	}
	k.refs++
	l.mu.Unlock()

	select {
	case k.sem <- struct{}{}:
		return &localLease{l: l, key: key, k: k, token: l.token.Add(1)}, nil
	case <-ctx.Done():
		l.release(key, k)
		return nil, &agentd.Error{Kind: agentd.KindTimeout, Op: "coord.lock", Message: "gave up waiting for " + key, Err: context.Cause(ctx)}
	}
}

func (l *Local) release(key string, k *localKey) {
	l.mu.Lock()
	k.refs--
	if k.refs == 0 {
		delete(l.keys, key)
	}
	l.mu.Unlock()
}

// held reports how many keys have holders or waiters; for tests.
func (l *Local) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

type localLease struct {
	l     *Local
	key   string
	k     *localKey
	token uint64
	once  sync.Once
}

func (s *localLease) Token() uint64 { return s.token }

func (s *localLease) Unlock() {
	s.once.Do(func() {
		<-s.k.sem
		s.l.release(s.key, s.k)
	})
}
