package redis

import (
	"context"
	"strconv"

	"github.com/agentd/agentd"
)

// WithSweepHook makes the background sweeper call fn after every sweep, so
// a test can wait for sweeps instead of sleeping.
func WithSweepHook(fn func(removed int, err error)) Option {
	return func(cfg *config) { cfg.onSweep = fn }
}

// SetRenewHook makes l call fn after every successful lease renewal, so a
// test can wait for renewals instead of sleeping. Call it before l is used.
func SetRenewHook(l *Locker, fn func()) { l.onRenew = fn }

// SetWaitHook makes l call fn when a Lock finds its key taken and starts to
// wait. Call it before l is used.
func SetWaitHook(l *Locker, fn func(key string)) { l.onWait = fn }

// Abandon stops a lease's renewal without releasing it: its node died.
func Abandon(s *Lease) { s.stopRenewal() }

// Waiters counts the keys with Lock calls waiting on this node.
func Waiters(l *Locker) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.waiters)
}

// LockKey is the Redis key of the lock on key.
func LockKey(l *Locker, key string) string { return l.lockKey(key) }

// FenceKey is the Redis key of the fencing counter of key.
func FenceKey(l *Locker, key string) string { return l.fenceKey(key) }

// Layout returns the Redis keys of the store: the entry of key, the key
// index, the expiry index and the version counter.
func Layout(kv *KV, key string) (entry, idx, exp, seq string) {
	return kv.entryKey(key), kv.idxKey, kv.expKey, kv.seqKey
}

// CompareAndSwapAs is CompareAndSwap with a chosen write id, to replay a call
// the way go-redis retries one.
func CompareAndSwapAs(ctx context.Context, kv *KV, id, key string, expect uint64, value []byte) (uint64, error) {
	return kv.writeAs(ctx, "kv.cas", id, key, strconv.FormatUint(expect, 10), value, agentd.KVPutOptions{})
}
