package redis_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	goredis "github.com/redis/go-redis/v9"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/redistest"
	"github.com/agentd/agentd/internal/tcpproxy"
	"github.com/agentd/agentd/store/redis"
	"github.com/agentd/agentd/store/storetest"
)

// redisURL is the server the tests use; without it they skip, so `go test
// ./...` passes on a machine without Redis.
func redisURL(t testing.TB) string { return redistest.URL(t) }

// rawClient is a plain client to inspect and clean up what the package
// stored, independent of its code.
func rawClient(t testing.TB) *goredis.Client {
	t.Helper()
	opts, err := goredis.ParseURL(redisURL(t))
	if err != nil {
		t.Fatalf("ParseURL: %v", err)
	}
	c := goredis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testPrefix returns a fresh key prefix whose keys are deleted when the
// test ends.
func testPrefix(t testing.TB) string { return redistest.Prefix(t) }

// openKV opens a store under a fresh prefix, with the sweeper off so tests
// see exactly what they did, and closes it when the test ends.
func openKV(t testing.TB, opts ...redis.Option) *redis.KV {
	t.Helper()
	return openKVAt(t, redisURL(t), testPrefix(t), opts...)
}

func openKVAt(t testing.TB, rawURL, prefix string, opts ...redis.Option) *redis.KV {
	t.Helper()
	all := append([]redis.Option{redis.WithPrefix(prefix), redis.WithSweepInterval(0)}, opts...)
	kv, err := redis.OpenKV(context.Background(), rawURL, all...)
	if err != nil {
		t.Fatalf("OpenKV: %v", err)
	}
	t.Cleanup(func() {
		if err := kv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return kv
}

func testClock() *clockwork.FakeClock {
	return clockwork.NewFakeClockAt(time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC))
}

func wantKind(t testing.TB, err error, want agentd.Kind, what string) {
	t.Helper()
	if got := agentd.KindOf(err); got != want {
		t.Errorf("%s: error %v has kind %q, want %q", what, err, got, want)
	}
}

func mustPut(t testing.TB, kv agentd.KV, key, value string, opts agentd.KVPutOptions) {
	t.Helper()
	if err := kv.Put(context.Background(), key, []byte(value), opts); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func listNames(t testing.TB, kv agentd.KV, opts agentd.KVListOptions) []string {
	t.Helper()
	res, err := kv.List(context.Background(), opts)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	names := []string{}
	for _, k := range res.Keys {
		names = append(names, k.Name)
	}
	return names
}

func TestKVConformance(t *testing.T) {
	url := redisURL(t)
	storetest.TestKV(t, func(t *testing.T, clock agentd.Clock) agentd.KV {
		return openKVAt(t, url, testPrefix(t), redis.WithClock(clock))
	})
}

func TestOpenKVURLParameters(t *testing.T) {
	base := redisURL(t)
	prefix := testPrefix(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("prefix", prefix)
	q.Set("op_timeout", "250ms")
	q.Set("sweep_interval", "0")
	q.Set("pool_size", "3") // a go-redis parameter passes through
	u.RawQuery = q.Encode()

	kv, err := redis.OpenKV(t.Context(), u.String())
	if err != nil {
		t.Fatalf("OpenKV(%s): %v", u.Redacted(), err)
	}
	defer kv.Close()
	mustPut(t, kv, "k", "v", agentd.KVPutOptions{})
	entry, _, _, _ := redis.Layout(kv, "k")
	if !strings.HasPrefix(entry, prefix) {
		t.Fatalf("entry key %q is not under the URL's prefix %q", entry, prefix)
	}
	if n, err := rawClient(t).Exists(t.Context(), entry).Result(); err != nil || n != 1 {
		t.Errorf("EXISTS %s = %d, %v; want 1", entry, n, err)
	}

	for _, bad := range []string{"op_timeout=soon", "op_timeout=-1s", "sweep_interval=often", "no_such_option=1"} {
		_, err := redis.OpenKV(t.Context(), base+sep(base)+bad)
		wantKind(t, err, agentd.KindInvalid, "OpenKV with "+bad)
	}
	_, err = redis.OpenKV(t.Context(), base, redis.WithClient(rawClient(t)))
	wantKind(t, err, agentd.KindInvalid, "OpenKV with a URL and WithClient")
}

// sep is the separator that adds one more query parameter to u.
func sep(u string) string {
	if strings.Contains(u, "?") {
		return "&"
	}
	return "?"
}

func TestOpenKVWithClient(t *testing.T) {
	opts, err := goredis.ParseURL(redisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	opts.ContextTimeoutEnabled = true
	c := goredis.NewClient(opts)
	defer c.Close()
	kv, err := redis.OpenKV(t.Context(), "", redis.WithClient(c), redis.WithPrefix(testPrefix(t)), redis.WithSweepInterval(0))
	if err != nil {
		t.Fatalf("OpenKV: %v", err)
	}
	mustPut(t, kv, "k", "v", agentd.KVPutOptions{})
	if err := kv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// The client was the caller's: Close left it open.
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Errorf("client after KV.Close: %v", err)
	}
}

func TestPrefixHashTag(t *testing.T) {
	prefix := testPrefix(t)
	tagged := prefix + "{tenant1}:"
	kv := openKVAt(t, redisURL(t), tagged)
	mustPut(t, kv, "a", "v", agentd.KVPutOptions{})
	entry, idx, exp, seq := redis.Layout(kv, "a")
	for _, k := range []string{entry, idx, exp, seq} {
		if !strings.HasPrefix(k, tagged) || strings.Contains(strings.TrimPrefix(k, tagged), "{") {
			t.Errorf("key %q: want the prefix's own hash tag and no other", k)
		}
	}
	if got := listNames(t, kv, agentd.KVListOptions{}); !slices.Equal(got, []string{"a"}) {
		t.Errorf("List = %q", got)
	}

	untagged := openKV(t)
	entry, idx, _, _ = redis.Layout(untagged, "x{y}z")
	if hashTag(entry) != "kv" || hashTag(idx) != "kv" {
		t.Errorf("keys %q, %q: want hash tag kv on both", entry, idx)
	}

	_, err := redis.OpenKV(t.Context(), redisURL(t), redis.WithPrefix("bad{}:"))
	wantKind(t, err, agentd.KindInvalid, "OpenKV with an empty hash tag")
}

// hashTag is the part of key Redis Cluster hashes, as the server finds it.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return key
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return key
	}
	return key[i+1 : i+1+j]
}

// errorChain lists err and every error it wraps.
func errorChain(err error) []error {
	var out []error
	queue := []error{err}
	for len(queue) > 0 {
		e := queue[0]
		queue = queue[1:]
		if e == nil {
			continue
		}
		out = append(out, e)
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			queue = append(queue, u.Unwrap())
		case interface{ Unwrap() []error }:
			queue = append(queue, u.Unwrap()...)
		}
	}
	return out
}

func TestOpenKVRedactsCredentials(t *testing.T) {
	const secret = "s3cr3t-pa55word"
	// A port nobody listens on: listen, then close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	_ = ln.Close()

	tests := []struct {
		name string
		url  string // "": the test server's URL with wrong credentials
		want agentd.Kind
	}{
		{"unreachable", "redis://agent:" + secret + "@" + closedAddr + "/0?op_timeout=300ms", agentd.KindStorageUnavailable},
		{"bad port", "redis://agent:" + secret + "@127.0.0.1:notaport/0", agentd.KindInvalid},
		{"bad host", "redis://agent:" + secret + "@bad host/0", agentd.KindInvalid},
		{"unknown option", "redis://agent:" + secret + "@127.0.0.1:6379/0?bogus=1", agentd.KindInvalid},
		{"bad database", "redis://agent:" + secret + "@127.0.0.1:6379/x", agentd.KindInvalid},
		{"escaped password", "redis://agent:" + url.QueryEscape(secret+"/?#") + "@127.0.0.1:notaport/0", agentd.KindInvalid},
		{"wrong password", "", agentd.KindStorageUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.url == "" {
				real, err := url.Parse(redisURL(t))
				if err != nil {
					t.Fatal(err)
				}
				real.User = url.UserPassword("agentd-test-nobody", secret)
				tt.url = real.String()
			}
			kv, err := redis.OpenKV(t.Context(), tt.url)
			if err == nil {
				kv.Close()
				t.Fatal("OpenKV succeeded")
			}
			wantKind(t, err, tt.want, "OpenKV")
			for _, e := range errorChain(err) {
				if strings.Contains(e.Error(), secret) || strings.Contains(e.Error(), url.QueryEscape(secret)) {
					t.Errorf("error %T %q contains the password", e, e)
				}
			}
		})
	}
}

// TestRedisExpiry checks the Redis TTL that lets Redis reclaim memory by
// itself, and the expiry index.
func TestRedisExpiry(t *testing.T) {
	clock := testClock()
	kv := openKV(t, redis.WithClock(clock))
	raw := rawClient(t)
	mustPut(t, kv, "ttl", "v", agentd.KVPutOptions{ExpirationTTL: time.Hour})
	mustPut(t, kv, "forever", "v", agentd.KVPutOptions{})
	// A fake clock years from the real time: the TTL is relative, so Redis
	// keeps the entry for the TTL however far the clock is.
	mustPut(t, kv, "abs", "v", agentd.KVPutOptions{Expiration: clock.Now().Add(2 * time.Hour)})

	ctx := t.Context()
	for key, want := range map[string]time.Duration{"ttl": time.Hour, "abs": 2 * time.Hour} {
		entry, _, exp, _ := redis.Layout(kv, key)
		pttl, err := raw.PTTL(ctx, entry).Result()
		if err != nil {
			t.Fatal(err)
		}
		if pttl <= want || pttl > want+time.Minute {
			t.Errorf("PTTL %s = %v, want a little over %v", entry, pttl, want)
		}
		if _, err := raw.ZScore(ctx, exp, key).Result(); err != nil {
			t.Errorf("ZSCORE exp %s: %v", key, err)
		}
	}
	entry, _, exp, _ := redis.Layout(kv, "forever")
	if pttl, err := raw.PTTL(ctx, entry).Result(); err != nil || pttl != -1 {
		t.Errorf("PTTL of a key without expiry = %v, %v; want none (-1)", pttl, err)
	}
	if err := raw.ZScore(ctx, exp, "forever").Err(); !errors.Is(err, goredis.Nil) {
		t.Errorf("a key without expiry is in the expiry index: %v", err)
	}
	// Overwriting without expiry drops the Redis TTL and the index entry.
	mustPut(t, kv, "ttl", "v2", agentd.KVPutOptions{})
	entry, _, _, _ = redis.Layout(kv, "ttl")
	if pttl, _ := raw.PTTL(ctx, entry).Result(); pttl != -1 {
		t.Errorf("PTTL after an overwrite without expiry = %v, want -1", pttl)
	}
	if err := raw.ZScore(ctx, exp, "ttl").Err(); !errors.Is(err, goredis.Nil) {
		t.Errorf("overwritten key still in the expiry index: %v", err)
	}
}

// TestExpiryAroundEpoch runs expiry across 1970, where Unix nanoseconds
// change sign, which the scripts compare as decimal strings.
func TestExpiryAroundEpoch(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(1969, time.December, 31, 23, 58, 30, 0, time.UTC))
	kv := openKV(t, redis.WithClock(clock))
	ctx := t.Context()
	neg, err := kv.CompareAndSwap(ctx, "neg", 0, []byte("v"), agentd.KVPutOptions{ExpirationTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	pos, err := kv.CompareAndSwap(ctx, "pos", 0, []byte("v"), agentd.KVPutOptions{ExpirationTTL: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute - 1)
	if _, err := kv.CompareAndSwap(ctx, "neg", 0, []byte("w"), agentd.KVPutOptions{}); agentd.KindOf(err) != agentd.KindConflict {
		t.Errorf("CompareAndSwap(neg, 0) a nanosecond before expiry: %v, want a conflict", err)
	}
	clock.Advance(1)
	if _, err := kv.CompareAndSwap(ctx, "neg", neg, []byte("w"), agentd.KVPutOptions{}); agentd.KindOf(err) != agentd.KindConflict {
		t.Errorf("CompareAndSwap(neg) with the expired version: %v, want a conflict", err)
	}
	if _, err := kv.CompareAndSwap(ctx, "pos", pos, []byte("w"), agentd.KVPutOptions{ExpirationTTL: time.Minute}); err != nil {
		t.Errorf("CompareAndSwap(pos) while live: %v", err)
	}
	if n, err := kv.Sweep(ctx); err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v; want the one expired key", n, err)
	}
	if got := listNames(t, kv, agentd.KVListOptions{}); !slices.Equal(got, []string{"pos"}) {
		t.Errorf("List = %q, want [pos]", got)
	}
}

func TestSweep(t *testing.T) {
	clock := testClock()
	kv := openKV(t, redis.WithClock(clock))
	raw := rawClient(t)
	ctx := t.Context()
	for _, k := range []string{"e1", "e2", "e3"} {
		mustPut(t, kv, k, "v", agentd.KVPutOptions{ExpirationTTL: time.Minute})
	}
	mustPut(t, kv, "late", "v", agentd.KVPutOptions{ExpirationTTL: time.Minute + time.Nanosecond})
	mustPut(t, kv, "forever", "v", agentd.KVPutOptions{})

	if n, err := kv.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep before expiry = %d, %v; want 0", n, err)
	}
	clock.Advance(time.Minute)
	// "late" is due by its millisecond score but live by a nanosecond.
	if n, err := kv.Sweep(ctx); err != nil || n != 3 {
		t.Fatalf("Sweep = %d, %v; want 3", n, err)
	}
	_, idx, exp, _ := redis.Layout(kv, "")
	if got, _ := raw.ZRange(ctx, idx, 0, -1).Result(); !slices.Equal(got, []string{"forever", "late"}) {
		t.Errorf("key index after Sweep = %q", got)
	}
	if got, _ := raw.ZRange(ctx, exp, 0, -1).Result(); !slices.Equal(got, []string{"late"}) {
		t.Errorf("expiry index after Sweep = %q", got)
	}
	entry, _, _, _ := redis.Layout(kv, "e1")
	if n, _ := raw.Exists(ctx, entry).Result(); n != 0 {
		t.Errorf("expired entry %s still in Redis", entry)
	}
	clock.Advance(time.Nanosecond)
	if n, err := kv.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}

	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	_, err := kv.Sweep(ctx2)
	wantKind(t, err, agentd.KindTimeout, "Sweep with a cancelled context")
}

func TestSweepManyBatches(t *testing.T) {
	clock := testClock()
	kv := openKV(t, redis.WithClock(clock))
	const n = 1234 // more than two sweep batches
	for i := range n {
		mustPut(t, kv, fmt.Sprintf("k%05d", i), "v", agentd.KVPutOptions{ExpirationTTL: time.Minute})
	}
	clock.Advance(time.Minute)
	if got, err := kv.Sweep(t.Context()); err != nil || got != n {
		t.Fatalf("Sweep = %d, %v; want %d", got, err, n)
	}
	_, idx, _, _ := redis.Layout(kv, "")
	if c, _ := rawClient(t).ZCard(t.Context(), idx).Result(); c != 0 {
		t.Errorf("key index holds %d after sweeping everything", c)
	}
}

func TestBackgroundSweeper(t *testing.T) {
	clock := testClock()
	swept := make(chan int, 100)
	kv := openKV(t, redis.WithClock(clock), redis.WithSweepInterval(time.Millisecond),
		redis.WithSweepHook(func(n int, err error) {
			if err != nil {
				t.Errorf("background Sweep: %v", err)
			}
			select {
			case swept <- n:
			default: // the test stopped counting
			}
		}))
	const expired = 20
	for i := range expired {
		mustPut(t, kv, fmt.Sprintf("old%02d", i), "v", agentd.KVPutOptions{ExpirationTTL: time.Minute})
	}
	clock.Advance(time.Minute)

	// Writers keep going while the sweeper runs, for the race detector.
	var wg sync.WaitGroup
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	for w := range 4 {
		wg.Go(func() {
			key := fmt.Sprintf("live%d", w)
			var version uint64
			for ctx.Err() == nil {
				v, err := kv.CompareAndSwap(ctx, key, version, []byte("x"), agentd.KVPutOptions{ExpirationTTL: time.Hour})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("CompareAndSwap: %v", err)
					}
					return
				}
				version = v
			}
		})
	}
	for total := 0; total < expired; {
		select {
		case n := <-swept:
			total += n
		case <-time.After(10 * time.Second):
			t.Fatalf("the background sweeper removed %d of %d expired keys", total, expired)
		}
	}
	stop()
	wg.Wait()
	// Only the writers' keys are left (each may or may not have written
	// before the sweeper finished).
	_, idx, _, _ := redis.Layout(kv, "")
	got, err := rawClient(t).ZRange(t.Context(), idx, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range got {
		if !strings.HasPrefix(name, "live") {
			t.Errorf("key index after sweeping = %q, want only live keys", got)
			break
		}
	}
}

// TestListPrunesVanishedEntries covers entries Redis removed on its own
// (its TTL) while their names stay in the index.
func TestListPrunesVanishedEntries(t *testing.T) {
	kv := openKV(t)
	raw := rawClient(t)
	ctx := t.Context()
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		mustPut(t, kv, k, "v", agentd.KVPutOptions{})
	}
	for _, k := range []string{"b", "c", "d"} {
		entry, _, _, _ := redis.Layout(kv, k)
		if err := raw.Del(ctx, entry).Err(); err != nil {
			t.Fatal(err)
		}
	}
	res, err := kv.List(ctx, agentd.KVListOptions{Limit: 1, Cursor: agentd.EncodeCursor("a")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Keys) != 1 || res.Keys[0].Name != "e" || !res.ListComplete {
		t.Errorf("List after a = %+v, want [e] complete", res)
	}
	_, idx, _, _ := redis.Layout(kv, "")
	if got, _ := raw.ZRange(ctx, idx, 0, -1).Result(); !slices.Equal(got, []string{"a", "e"}) {
		t.Errorf("key index after List = %q, want the vanished names pruned", got)
	}
	if _, err := kv.Get(ctx, "c"); agentd.KindOf(err) != agentd.KindNotFound {
		t.Errorf("Get of a vanished entry: %v", err)
	}
}

func TestSharedAcrossNodes(t *testing.T) {
	prefix := testPrefix(t)
	a := openKVAt(t, redisURL(t), prefix)
	b := openKVAt(t, redisURL(t), prefix)
	ctx := t.Context()
	v1, err := a.CompareAndSwap(ctx, "conv", 0, []byte("one"), agentd.KVPutOptions{Metadata: json.RawMessage(`{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	e, err := b.Get(ctx, "conv")
	if err != nil || string(e.Value) != "one" || e.Version != v1 {
		t.Fatalf("other node reads %+v, %v", e, err)
	}
	v2, err := b.CompareAndSwap(ctx, "conv", v1, []byte("two"), agentd.KVPutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.CompareAndSwap(ctx, "conv", v1, []byte("stale"), agentd.KVPutOptions{})
	wantKind(t, err, agentd.KindConflict, "stale CompareAndSwap from the first node")
	if v2 <= v1 {
		t.Errorf("versions %d then %d", v1, v2)
	}
	if got := listNames(t, a, agentd.KVListOptions{}); !slices.Equal(got, []string{"conv"}) {
		t.Errorf("List = %q", got)
	}
}

// TestRetriedWriteIsIdempotent replays a CompareAndSwap the way go-redis
// resends a command whose reply was lost: the replay must report the write
// that landed, not a conflict with itself.
func TestRetriedWriteIsIdempotent(t *testing.T) {
	kv := openKV(t)
	ctx := t.Context()
	v1, err := redis.CompareAndSwapAs(ctx, kv, "id-1", "k", 0, []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := redis.CompareAndSwapAs(ctx, kv, "id-1", "k", 0, []byte("one"))
	if err != nil || again != v1 {
		t.Fatalf("replayed CompareAndSwap = %d, %v; want %d", again, err, v1)
	}
	_, err = redis.CompareAndSwapAs(ctx, kv, "id-2", "k", 0, []byte("other"))
	wantKind(t, err, agentd.KindConflict, "a different call expecting 0")
	if e, err := kv.Get(ctx, "k"); err != nil || e.Version != v1 || string(e.Value) != "one" {
		t.Errorf("Get = %+v, %v", e, err)
	}
}

func TestCancelledContextKeepsCause(t *testing.T) {
	kv := openKV(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := kv.Get(ctx, "k")
	wantKind(t, err, agentd.KindTimeout, "Get")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("errors.Is(%v, context.Canceled) = false", err)
	}
}

func TestCorruptEntry(t *testing.T) {
	kv := openKV(t)
	entry, _, _, _ := redis.Layout(kv, "k")
	if err := rawClient(t).HSet(t.Context(), entry, "v", "not a number").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := kv.Get(t.Context(), "k")
	wantKind(t, err, agentd.KindInternal, "Get of a corrupt entry")
}

// TestCutLink puts a TCP proxy between the store and Redis: with the link
// cut, operations fail with KindStorageUnavailable within the operation
// timeout instead of hanging, and once it is restored the same store works
// again.
func TestCutLink(t *testing.T) {
	target, err := url.Parse(redisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := tcpproxy.Start(target.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	viaProxy := *target
	viaProxy.Host = proxy.Addr()
	q := viaProxy.Query()
	q.Set("op_timeout", "300ms")
	viaProxy.RawQuery = q.Encode()

	kv := openKVAt(t, viaProxy.String(), testPrefix(t))
	locker := kv.Locker()
	defer locker.Close()
	ctx := t.Context()
	mustPut(t, kv, "k", "before", agentd.KVPutOptions{})

	proxy.Cut()
	_, err = kv.Get(ctx, "k")
	wantKind(t, err, agentd.KindStorageUnavailable, "Get over a cut link")
	err = kv.Put(ctx, "k", []byte("during"), agentd.KVPutOptions{})
	wantKind(t, err, agentd.KindStorageUnavailable, "Put over a cut link")
	_, err = kv.CompareAndSwap(ctx, "k", 0, []byte("during"), agentd.KVPutOptions{})
	wantKind(t, err, agentd.KindStorageUnavailable, "CompareAndSwap over a cut link")
	_, err = kv.List(ctx, agentd.KVListOptions{})
	wantKind(t, err, agentd.KindStorageUnavailable, "List over a cut link")
	_, err = locker.Lock(ctx, "conv")
	wantKind(t, err, agentd.KindStorageUnavailable, "Lock over a cut link")

	proxy.Restore()
	mustPut(t, kv, "k", "after", agentd.KVPutOptions{})
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value) != "after" {
		t.Fatalf("Get after Restore = %q, %v", e.Value, err)
	}
	lease, err := locker.Lock(ctx, "conv")
	if err != nil {
		t.Fatalf("Lock after Restore: %v", err)
	}
	lease.Unlock()
}

// BenchmarkGetCompareAndSwap is one turn of a conversation's storage: read
// it, write it back conditionally, with an 8 KiB value.
func BenchmarkGetCompareAndSwap(b *testing.B) {
	kv := openKV(b)
	ctx := context.Background()
	value := make([]byte, 8<<10)
	_, _ = rand.Read(value)
	if _, err := kv.CompareAndSwap(ctx, "conv", 0, value, agentd.KVPutOptions{}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(value)))
	b.ReportAllocs()
	for b.Loop() {
		e, err := kv.Get(ctx, "conv")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := kv.CompareAndSwap(ctx, "conv", e.Version, value, agentd.KVPutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
