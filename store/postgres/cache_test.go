package postgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/jonboulle/clockwork"
)

// These tests drive the cache with a fake query function; db_test.go shows
// the same rules against Postgres.

func newTestCache(t *testing.T, cfg CacheConfig) (*queryCache, *clockwork.FakeClock) {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	clock := clockwork.NewFakeClock()
	c := newQueryCache(cfg, clock, slog.New(slog.DiscardHandler))
	t.Cleanup(c.close)
	return c, clock
}

// source is a fake table: fetch reads its current value, and may be made to
// block or fail.
type source struct {
	mu    sync.Mutex
	value any
	err   error
	gate  chan struct{} // if set, fetch waits for it to close
	calls atomic.Int64
}

func (s *source) set(v any) {
	s.mu.Lock()
	s.value = v
	s.mu.Unlock()
}

func (s *source) fetch(ctx context.Context) (*agentd.Rows, error) {
	s.calls.Add(1)
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	return &agentd.Rows{Columns: []string{"v"}, Values: [][]any{{s.value}}}, nil
}

func readsOf(tables ...string) readInfo { return readInfo{cacheable: true, tables: tables} }

func mustGet(t *testing.T, c *queryCache, key string, info readInfo, src *source) any {
	t.Helper()
	rows, err := c.get(t.Context(), "test", key, info, src.fetch)
	if err != nil {
		t.Fatalf("get(%q): %v", key, err)
	}
	return rows.Values[0][0]
}

func stats(c *queryCache) Stats {
	var s Stats
	c.cacheStats(&s)
	return s
}

// waitFor spins (yielding, never sleeping) until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 10_000_000 {
		if cond() {
			return
		}
		runtime.Gosched()
	}
	t.Fatalf("gave up waiting for %s", what)
}

func TestCacheFreshStaleExpired(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	refreshed := make(chan error, 1)
	c.onRefresh = func(err error) { refreshed <- err }
	src := &source{value: "v1"}
	info := readsOf("t")

	if got := mustGet(t, c, "k", info, src); got != "v1" {
		t.Fatalf("first get = %v", got)
	}
	src.set("v2")
	clock.Advance(59 * time.Second)
	if got := mustGet(t, c, "k", info, src); got != "v1" {
		t.Fatalf("fresh get = %v, want the cached v1", got)
	}
	if s := stats(c); s.CacheMisses != 1 || s.CacheHits != 1 || src.calls.Load() != 1 {
		t.Fatalf("after a miss and a hit: %+v, %d fetches", s, src.calls.Load())
	}

	// Past max_age, within stale_while_revalidate: stale, refreshed once
	// in the background.
	clock.Advance(time.Second)
	if got := mustGet(t, c, "k", info, src); got != "v1" {
		t.Fatalf("stale get = %v, want the stale v1", got)
	}
	if err := <-refreshed; err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if got := mustGet(t, c, "k", info, src); got != "v2" {
		t.Fatalf("get after refresh = %v, want v2", got)
	}
	if s := stats(c); s.CacheStaleServes != 1 || s.CacheRefreshes != 1 || s.CacheHits != 2 || src.calls.Load() != 2 {
		t.Fatalf("after the refresh: %+v, %d fetches", s, src.calls.Load())
	}

	// Past max_age + stale_while_revalidate of the refreshed result: a
	// miss.
	src.set("v3")
	clock.Advance(75 * time.Second)
	if got := mustGet(t, c, "k", info, src); got != "v3" {
		t.Fatalf("expired get = %v, want v3", got)
	}
	if s := stats(c); s.CacheMisses != 2 || s.CacheStaleServes != 1 {
		t.Fatalf("after expiry: %+v", s)
	}
}

func TestCacheStaleRefreshesOnce(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{MaxAge: time.Minute, StaleWhileRevalidate: time.Minute})
	refreshed := make(chan error, 4)
	c.onRefresh = func(err error) { refreshed <- err }
	src := &source{value: "old"}
	mustGet(t, c, "k", readsOf(), src)

	gate := make(chan struct{})
	src.mu.Lock()
	src.gate, src.value = gate, "new"
	src.mu.Unlock()
	clock.Advance(90 * time.Second)
	for range 5 {
		if got := mustGet(t, c, "k", readsOf(), src); got != "old" {
			t.Fatalf("stale get = %v, want old", got)
		}
	}
	close(gate)
	if err := <-refreshed; err != nil {
		t.Fatal(err)
	}
	if n := src.calls.Load(); n != 2 {
		t.Errorf("%d fetches, want 2: the first and one refresh", n)
	}
	if s := stats(c); s.CacheStaleServes != 5 || s.CacheRefreshes != 1 {
		t.Errorf("stats %+v, want 5 stale serves and 1 refresh", s)
	}
	if got := mustGet(t, c, "k", readsOf(), src); got != "new" {
		t.Errorf("after the refresh: %v, want new", got)
	}
}

func TestCacheRefreshFailureIsRetried(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	refreshed := make(chan error, 4)
	c.onRefresh = func(err error) { refreshed <- err }
	src := &source{value: "old"}
	mustGet(t, c, "k", readsOf(), src)

	errDown := errors.New("down")
	src.mu.Lock()
	src.err = errDown
	src.mu.Unlock()
	clock.Advance(61 * time.Second)
	if got := mustGet(t, c, "k", readsOf(), src); got != "old" {
		t.Fatalf("stale get = %v", got)
	}
	if err := <-refreshed; !errors.Is(err, errDown) {
		t.Fatalf("refresh error = %v, want %v", err, errDown)
	}
	src.mu.Lock()
	src.err, src.value = nil, "new"
	src.mu.Unlock()
	// The next stale serve tries again.
	if got := mustGet(t, c, "k", readsOf(), src); got != "old" {
		t.Fatalf("stale get = %v", got)
	}
	if err := <-refreshed; err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, c, "k", readsOf(), src); got != "new" {
		t.Fatalf("after the second refresh: %v", got)
	}
	if s := stats(c); s.CacheRefreshFailures != 1 || s.CacheRefreshes != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestCacheConcurrentMissesRunOneQuery(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	gate := make(chan struct{})
	src := &source{value: "v", gate: gate}
	const n = 10
	var wg sync.WaitGroup
	got := make([]any, n)
	for i := range n {
		wg.Go(func() {
			rows, err := c.get(t.Context(), "test", "k", readsOf(), src.fetch)
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = rows.Values[0][0]
		})
	}
	waitFor(t, "all callers to join the query", func() bool { return stats(c).CacheMisses == n })
	close(gate)
	wg.Wait()
	if calls := src.calls.Load(); calls != 1 {
		t.Errorf("%d queries ran for %d concurrent misses, want 1", calls, n)
	}
	for i, v := range got {
		if v != "v" {
			t.Errorf("caller %d got %v", i, v)
		}
	}
}

func TestCacheCallerGivingUpDoesNotFailOthers(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	gate := make(chan struct{})
	src := &source{value: "v", gate: gate}
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() {
		_, err := c.get(ctx, "test", "k", readsOf(), src.fetch)
		first <- err
	}()
	waitFor(t, "the first caller to start the query", func() bool { return stats(c).CacheMisses == 1 })
	second := make(chan any, 1)
	go func() { second <- mustGet(t, c, "k", readsOf(), src) }()
	waitFor(t, "the second caller to join", func() bool { return stats(c).CacheMisses == 2 })
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v, want context.Canceled", err)
	}
	close(gate)
	if v := <-second; v != "v" {
		t.Fatalf("other caller got %v", v)
	}
}

func TestCacheInvalidation(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	src := &source{value: 1}
	infos := map[string]readInfo{
		"a":    readsOf("a"),
		"b":    readsOf("b"),
		"ab":   readsOf("a", "b"),
		"any":  {cacheable: true, anyTable: true},
		"none": readsOf(),
	}
	fill := func() {
		for k, info := range infos {
			mustGet(t, c, k, info, src)
		}
	}
	cached := func(k string) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.entries[k] != nil
	}
	fill()
	c.invalidate(writeInfo{tables: []string{"a"}})
	for k, want := range map[string]bool{"a": false, "b": true, "ab": false, "any": false, "none": true} {
		if cached(k) != want {
			t.Errorf("after a write to a: %s cached = %v, want %v", k, !want, want)
		}
	}
	if s := stats(c); s.CacheInvalidations != 3 {
		t.Errorf("invalidations = %d, want 3", s.CacheInvalidations)
	}
	c.invalidate(writeInfo{}) // nothing written: nothing dropped
	if !cached("b") {
		t.Error("an empty write dropped b")
	}
	fill()
	c.invalidate(writeInfo{all: true})
	for k := range infos {
		if cached(k) {
			t.Errorf("after a write to everything: %s still cached", k)
		}
	}
	if s := stats(c); s.CacheEntries != 0 || s.CacheBytes != 0 {
		t.Errorf("after a write to everything: %d entries, %d bytes", s.CacheEntries, s.CacheBytes)
	}
}

// A result read before a write must not be stored after the write dropped
// the table's entries, and a query after a write must not join a query that
// started before it.
func TestCacheWriteDuringQuery(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	gate := make(chan struct{})
	src := &source{value: "before", gate: gate}
	done := make(chan any, 1)
	go func() { done <- mustGet(t, c, "k", readsOf("a"), src) }()
	waitFor(t, "the query to start", func() bool { return src.calls.Load() == 1 })

	c.invalidate(writeInfo{tables: []string{"a"}})
	// A caller after the write gets a query of its own, which sees the
	// write.
	src2 := &source{value: "after"}
	if got := mustGet(t, c, "k", readsOf("a"), src2); got != "after" {
		t.Fatalf("read after the write = %v, want after", got)
	}
	close(gate)
	if v := <-done; v != "before" {
		t.Fatalf("the query that started first got %v", v)
	}
	// The late result of the first query did not overwrite the newer one.
	if got := mustGet(t, c, "k", readsOf("a"), src2); got != "after" {
		t.Fatalf("cached value = %v, want after", got)
	}

	// A write to another table does not stop a result being kept.
	gate2 := make(chan struct{})
	src3 := &source{value: "b", gate: gate2}
	done2 := make(chan any, 1)
	go func() { done2 <- mustGet(t, c, "kb", readsOf("b"), src3) }()
	waitFor(t, "the query of b to start", func() bool { return src3.calls.Load() == 1 })
	c.invalidate(writeInfo{tables: []string{"a"}})
	close(gate2)
	<-done2
	mustGet(t, c, "kb", readsOf("b"), src3)
	if n := src3.calls.Load(); n != 1 {
		t.Errorf("the result of b was not kept across a write to a: %d queries", n)
	}
}

func TestCacheBounds(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{MaxEntries: 3, MaxResultBytes: 1000})
	src := &source{value: "v"}
	for _, k := range []string{"k1", "k2", "k3"} {
		mustGet(t, c, k, readsOf(), src)
	}
	mustGet(t, c, "k1", readsOf(), src) // k1 is now the most recent
	mustGet(t, c, "k4", readsOf(), src) // evicts k2, the least recent
	calls := src.calls.Load()
	mustGet(t, c, "k1", readsOf(), src)
	mustGet(t, c, "k3", readsOf(), src)
	mustGet(t, c, "k4", readsOf(), src)
	if n := src.calls.Load(); n != calls {
		t.Errorf("k1, k3, k4 were not all kept")
	}
	mustGet(t, c, "k2", readsOf(), src)
	if n := src.calls.Load(); n != calls+1 {
		t.Errorf("k2 was not evicted")
	}
	if s := stats(c); s.CacheEntries != 3 || s.CacheEvictions != 2 {
		t.Errorf("stats %+v, want 3 entries and 2 evictions", s)
	}

	big := &source{value: strings.Repeat("x", 2000)}
	mustGet(t, c, "big", readsOf(), big)
	mustGet(t, c, "big", readsOf(), big)
	if n := big.calls.Load(); n != 2 {
		t.Errorf("a result over the size cap was cached")
	}
	if s := stats(c); s.CacheUncacheable != 2 {
		t.Errorf("uncacheable = %d, want 2", s.CacheUncacheable)
	}
}

func TestCacheHandsOutCopies(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	fetch := func(context.Context) (*agentd.Rows, error) {
		return &agentd.Rows{Columns: []string{"b", "arr"}, Values: [][]any{{[]byte("abc"), []any{"x"}}}}, nil
	}
	r1, err := c.get(t.Context(), "test", "k", readsOf(), fetch)
	if err != nil {
		t.Fatal(err)
	}
	r1.Values[0][0].([]byte)[0] = 'Z'
	r1.Values[0][1].([]any)[0] = "changed"
	r1.Columns[0] = "changed"
	r2, err := c.get(t.Context(), "test", "k", readsOf(), fetch)
	if err != nil {
		t.Fatal(err)
	}
	if string(r2.Values[0][0].([]byte)) != "abc" || r2.Values[0][1].([]any)[0] != "x" || r2.Columns[0] != "b" {
		t.Errorf("a caller's change reached the cache: %v %v", r2.Columns, r2.Values)
	}
}

func TestCacheCloseStopsRefresh(t *testing.T) {
	cfg, _ := CacheConfig{}.withDefaults()
	clock := clockwork.NewFakeClock()
	c := newQueryCache(cfg, clock, slog.New(slog.DiscardHandler))
	refreshed := make(chan error, 1)
	c.onRefresh = func(err error) { refreshed <- err }
	src := &source{value: "v"}
	mustGet(t, c, "k", readsOf(), src)
	src.mu.Lock()
	src.gate = make(chan struct{}) // never opens: only close ends the refresh
	src.mu.Unlock()
	clock.Advance(61 * time.Second)
	mustGet(t, c, "k", readsOf(), src)
	c.close()
	if err := <-refreshed; !errors.Is(err, context.Canceled) {
		t.Errorf("refresh ended with %v, want context.Canceled", err)
	}
}

func TestCacheConfig(t *testing.T) {
	cfg, err := CacheConfig{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := CacheConfig{MaxAge: time.Minute, StaleWhileRevalidate: 15 * time.Second, MaxResultBytes: 1 << 20, MaxEntries: 10_000, MaxBytes: 64 << 20}
	if cfg != want {
		t.Errorf("defaults = %+v, want %+v", cfg, want)
	}
	if cfg, _ := (CacheConfig{StaleWhileRevalidate: -1}).withDefaults(); cfg.StaleWhileRevalidate != 0 {
		t.Errorf("negative stale_while_revalidate = %v, want none", cfg.StaleWhileRevalidate)
	}
	for _, bad := range []CacheConfig{
		{MaxAge: 2 * time.Hour},
		{MaxAge: -time.Second},
		{MaxResultBytes: -1},
		{MaxEntries: -1},
		{MaxResultBytes: 100, MaxBytes: 10},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

type valuer struct{ s string }

func (v valuer) Value() (driver.Value, error) { return v.s, nil }

type nilValuer struct{ s string }

func (v *nilValuer) Value() (driver.Value, error) { return v.s, nil }

type myString string

func TestCacheKey(t *testing.T) {
	at := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	s := "x"
	var nilPtr *string
	var nilV *nilValuer
	distinct := [][]any{
		{},
		{nil},
		{1},
		{int64(1)},
		{int32(1)},
		{"1"},
		{1.0},
		{true},
		{false},
		{"a", "bc"},
		{"ab", "c"},
		{[]byte("ab")},
		{[]byte{}},
		{[]string{"a", "b"}},
		{[]string{"ab"}},
		{[]string{}},
		{[]int64{1, 2}},
		{[]int{1, 2}},
		{at},
		{at.In(time.FixedZone("x", 3600))},
		{&s},
		{myString("1")},
		{valuer{"v"}},
		{uint8(1)},
		{float32(1)},
		{[2]int{1, 2}},
		{[][]string{{"a"}, {"b"}}},
		{[][]string{{"a", "b"}}},
	}
	seen := map[string]int{}
	for i, args := range distinct {
		k, ok := cacheKey("SELECT $1", args)
		if !ok {
			t.Errorf("args %#v: not cacheable", args)
			continue
		}
		if j, dup := seen[k]; dup {
			t.Errorf("args %#v and %#v have the same key", distinct[j], args)
		}
		seen[k] = i
		if k2, _ := cacheKey("SELECT $1", args); k2 != k {
			t.Errorf("args %#v: key not deterministic", args)
		}
	}
	if k1, _ := cacheKey("SELECT 1", nil); k1 == func() string { k, _ := cacheKey("SELECT 2", nil); return k }() {
		t.Error("different SQL, same key")
	}
	// Same values, same key, whatever the pointer.
	s2 := "x"
	k1, _ := cacheKey("q", []any{&s})
	k2, _ := cacheKey("q", []any{&s2})
	if k1 != k2 {
		t.Error("pointers to equal strings have different keys")
	}
	// pgx sends a nil pointer or slice as NULL.
	kn1, _ := cacheKey("q", []any{nilPtr})
	kn2, _ := cacheKey("q", []any{nil})
	kn3, _ := cacheKey("q", []any{[]byte(nil)})
	if kn1 != kn2 || kn3 != kn2 {
		t.Error("a nil pointer, a nil slice and nil have different keys")
	}
	if _, ok := cacheKey("q", []any{nilV}); !ok {
		t.Error("a nil Valuer pointer is not cacheable")
	}

	for _, args := range [][]any{
		{map[string]any{"a": 1}},
		{struct{ A int }{1}},
		{make(chan int)},
		{func() {}},
		{"now"},
		{" Today "},
		{"tomorrow 10:00"},
		{[]string{"a", "yesterday"}},
		{myString("now")},
	} {
		if _, ok := cacheKey("q", args); ok {
			t.Errorf("args %#v: cacheable, want not", args)
		}
	}
}
