package coord_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/coord"
)

// interferingKV writes every key it is asked to compare-and-swap just
// before doing so, as long as interfere allows, so the swap conflicts as it
// would with another node's write landing between a read and a write.
type interferingKV struct {
	agentd.KV
	interfere func() bool
}

func (k *interferingKV) CompareAndSwap(ctx context.Context, key string, expect uint64, value []byte, opts agentd.KVPutOptions) (uint64, error) {
	if k.interfere() {
		if err := k.KV.Put(ctx, key, []byte("other node"), agentd.KVPutOptions{}); err != nil {
			return 0, err
		}
	}
	return k.KV.CompareAndSwap(ctx, key, expect, value, opts)
}

// seen is what one call of an UpdateFunc was given.
type seen struct {
	old    string
	exists bool
}

func testStateUpdate(e *env) {
	t, ctx, kv := e.t, e.ctx, e.kv()
	st := coord.NewState(kv)
	write := func(value []byte, ttl time.Duration) seen {
		t.Helper()
		var got seen
		err := st.Update(ctx, "k", func(old []byte, exists bool) ([]byte, time.Duration, error) {
			got = seen{string(old), exists}
			return value, ttl, nil
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		return got
	}
	if got := write([]byte("1"), time.Second); got != (seen{"", false}) {
		t.Errorf("first Update saw %+v, want an absent key", got)
	}
	entry, err := kv.Get(ctx, "k")
	if err != nil || string(entry.Value) != "1" {
		t.Fatalf("Get = %q, %v; want 1", entry.Value, err)
	}
	// A TTL under the KV's minimum is rounded up to it, not rejected.
	if want := e.clock.Now().Add(agentd.MinKVTTL); !entry.Expiration.Equal(want) {
		t.Errorf("expiration = %v, want %v (TTL rounded up to the minimum)", entry.Expiration, want)
	}

	// nil leaves the key as it is: same version.
	if got := write(nil, 0); got != (seen{"1", true}) {
		t.Errorf("Update saw %+v, want 1", got)
	}
	if again, _ := kv.Get(ctx, "k"); again.Version != entry.Version {
		t.Errorf("an Update returning nil wrote: version %d → %d", entry.Version, again.Version)
	}

	// fn's error is returned as it is, and nothing is written.
	errStop := errors.New("stop")
	err = st.Update(ctx, "k", func([]byte, bool) ([]byte, time.Duration, error) { return []byte("x"), 0, errStop })
	if err != errStop {
		t.Errorf("Update = %v, want fn's error unchanged", err)
	}
	if again, _ := kv.Get(ctx, "k"); string(again.Value) != "1" {
		t.Errorf("value after a failed fn = %q, want 1", again.Value)
	}

	// TTL 0: no expiry. A TTL above the minimum is kept.
	write([]byte("2"), 0)
	if entry, _ := kv.Get(ctx, "k"); !entry.Expiration.IsZero() {
		t.Errorf("expiration with TTL 0 = %v, want none", entry.Expiration)
	}
	write([]byte("3"), 90*time.Second)
	e.clock.Advance(90 * time.Second)
	if got := write([]byte("4"), 0); got != (seen{"", false}) {
		t.Errorf("Update after the TTL saw %+v, want an absent key", got)
	}

	err = st.Update(ctx, "", func([]byte, bool) ([]byte, time.Duration, error) { return nil, 0, nil })
	wantKind(t, err, agentd.KindInvalid, "Update of an empty key")
}

func testStateRetries(e *env) {
	t, ctx := e.t, e.ctx
	var once atomic.Bool
	kv := &interferingKV{KV: e.kv(), interfere: func() bool { return once.CompareAndSwap(false, true) }}
	st := coord.NewState(kv, coord.WithBackoff(0, 0))
	var calls []seen
	err := st.Update(ctx, "k", func(old []byte, exists bool) ([]byte, time.Duration, error) {
		calls = append(calls, seen{string(old), exists})
		return []byte(string(old) + "+"), 0, nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	want := []seen{{"", false}, {"other node", true}}
	if len(calls) != 2 || calls[0] != want[0] || calls[1] != want[1] {
		t.Errorf("fn calls saw %+v, want %+v: a retry must start from a fresh read", calls, want)
	}
	if got, _ := kv.Get(ctx, "k"); string(got.Value) != "other node+" {
		t.Errorf("value = %q, want the other write and ours", got.Value)
	}
}

func testStateGivesUp(e *env) {
	t, ctx := e.t, e.ctx
	kv := &interferingKV{KV: e.kv(), interfere: func() bool { return true }}
	st := coord.NewState(kv, coord.WithMaxAttempts(3), coord.WithBackoff(0, 0))
	calls := 0
	err := st.Update(ctx, "k", func(old []byte, exists bool) ([]byte, time.Duration, error) {
		calls++
		return []byte("mine"), 0, nil
	})
	wantKind(t, err, agentd.KindConflict, "Update that always conflicts")
	if !errors.Is(err, agentd.ErrConflict) {
		t.Errorf("errors.Is(%v, ErrConflict) = false", err)
	}
	if calls != 3 {
		t.Errorf("fn ran %d times, want the 3 attempts", calls)
	}
	if got, _ := kv.Get(ctx, "k"); string(got.Value) != "other node" {
		t.Errorf("value = %q, want the other node's: a conflicting write must not land", got.Value)
	}
}

func testStateBackoffCancel(e *env) {
	t := e.t
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	// The first swap conflicts and cancels: Update must stop waiting out
	// its hour-long backoff at once (if it did not, the test would time
	// out).
	kv := &interferingKV{KV: e.kv(), interfere: func() bool { cancel(); return true }}
	st := coord.NewState(kv, coord.WithBackoff(time.Hour, time.Hour))
	err := st.Update(ctx, "k", func([]byte, bool) ([]byte, time.Duration, error) { return []byte("v"), 0, nil })
	wantKind(t, err, agentd.KindTimeout, "Update cancelled during its backoff")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("errors.Is(%v, context.Canceled) = false", err)
	}
}

// testStateNoLostUpdates runs increments from several nodes at once, each
// with its own State (its own in-process lock), so increments of different
// nodes really race to the store's compare-and-swap.
func testStateNoLostUpdates(e *env) {
	t, ctx := e.t, e.ctx
	const nodes, perNode = 5, 10
	kvs := e.nodes(nodes)
	states := make([]*coord.State, nodes)
	for i := range states {
		states[i] = coord.NewState(kvs[i])
	}
	concurrently(nodes*perNode, func(i int) {
		err := states[i%nodes].Update(ctx, "counter", func(old []byte, exists bool) ([]byte, time.Duration, error) {
			n := 0
			if exists {
				var err error
				if n, err = strconv.Atoi(string(old)); err != nil {
					return nil, 0, err
				}
			}
			return strconv.AppendInt(nil, int64(n+1), 10), time.Hour, nil
		})
		if err != nil {
			t.Errorf("Update: %v", err)
		}
	})
	got, err := kvs[0].Get(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Value) != strconv.Itoa(nodes*perNode) {
		t.Errorf("counter = %s after %d increments", got.Value, nodes*perNode)
	}
}
