package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/jonboulle/clockwork"
)

// These tests show the cache rules against Postgres, with a fake clock. The
// admin connection is another client: its writes do not pass through the
// DB, so only max_age and revalidation bring them into view — which is how
// they show that a cached result was served without a round trip.

// openCacheTest opens a DB in a fresh schema holding table kv with one row
// k='a', v='v1', and returns a channel that receives the end of each
// background refresh.
func openCacheTest(t *testing.T, opts ...Option) (*DB, func(sql string, args ...any), func(d time.Duration), chan error) {
	t.Helper()
	refreshed := make(chan error, 16)
	db, admin, clock := openTest(t, append([]Option{withRefreshHook(func(err error) { refreshed <- err })}, opts...)...)
	exec(t, db, `CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)`)
	exec(t, db, `CREATE TABLE other (k TEXT PRIMARY KEY, v TEXT NOT NULL)`)
	exec(t, db, `INSERT INTO kv (k, v) VALUES ('a', 'v1')`)
	exec(t, db, `INSERT INTO other (k, v) VALUES ('a', 'o1')`)
	behind := func(sql string, args ...any) { adminExec(t, admin, sql, args...) }
	return db, behind, clock.Advance, refreshed
}

const readKV = `SELECT v FROM kv WHERE k = $1`

func TestCacheHitServesWithoutRoundTrip(t *testing.T) {
	db, behind, advance, refreshed := openCacheTest(t)
	ctx := t.Context()
	if v := one(t, ctx, db, readKV, "a"); v != "v1" {
		t.Fatalf("first read = %v", v)
	}
	s0 := db.Stats()
	behind(`UPDATE kv SET v = 'v2' WHERE k = 'a'`)
	if v := one(t, ctx, db, readKV, "a"); v != "v1" {
		t.Fatalf("read after a write behind the cache = %v, want the cached v1", v)
	}
	s1 := db.Stats()
	if s1.CacheHits != s0.CacheHits+1 || s1.CacheMisses != s0.CacheMisses || s1.AcquireCount != s0.AcquireCount {
		t.Errorf("a hit went to Postgres: before %+v, after %+v", s0, s1)
	}
	// Other arguments are another query.
	if rows, err := db.Query(ctx, readKV, "b"); err != nil || len(rows.Values) != 0 {
		t.Errorf("read of b: %v, %v", rows, err)
	}

	advance(59 * time.Second)
	if v := one(t, ctx, db, readKV, "a"); v != "v1" {
		t.Fatalf("read at 59 s = %v, want the cached v1", v)
	}
	// At max_age, stale while revalidating: served once more, refreshed
	// in the background.
	advance(time.Second)
	if v := one(t, ctx, db, readKV, "a"); v != "v1" {
		t.Fatalf("stale read = %v, want v1", v)
	}
	if err := <-refreshed; err != nil {
		t.Fatalf("background refresh: %v", err)
	}
	if v := one(t, ctx, db, readKV, "a"); v != "v2" {
		t.Fatalf("read after the refresh = %v, want v2", v)
	}
	s2 := db.Stats()
	if s2.CacheStaleServes != 1 || s2.CacheRefreshes != 1 {
		t.Errorf("stats %+v, want 1 stale serve and 1 refresh", s2)
	}

	// Past max_age + stale_while_revalidate: a plain miss.
	behind(`UPDATE kv SET v = 'v3' WHERE k = 'a'`)
	advance(75 * time.Second)
	if v := one(t, ctx, db, readKV, "a"); v != "v3" {
		t.Fatalf("read past stale_while_revalidate = %v, want v3", v)
	}
	if s3 := db.Stats(); s3.CacheMisses != s2.CacheMisses+1 || s3.CacheStaleServes != 1 {
		t.Errorf("past stale_while_revalidate: %+v, want one more miss and no stale serve", s3)
	}
	select {
	case err := <-refreshed:
		t.Errorf("an unexpected background refresh: %v", err)
	default:
	}
}

func TestCacheStaleServesRefreshOnce(t *testing.T) {
	db, behind, advance, refreshed := openCacheTest(t, WithCache(CacheConfig{MaxAge: 10 * time.Second, StaleWhileRevalidate: time.Minute}))
	ctx := t.Context()
	one(t, ctx, db, readKV, "a")
	behind(`UPDATE kv SET v = 'v2' WHERE k = 'a'`)
	advance(10 * time.Second)
	// However many stale reads come before the refresh is noticed, one
	// refresh runs.
	for range 3 {
		if v := one(t, ctx, db, readKV, "a"); v != "v1" && v != "v2" {
			t.Fatalf("stale read = %v", v)
		}
	}
	if err := <-refreshed; err != nil {
		t.Fatal(err)
	}
	if v := one(t, ctx, db, readKV, "a"); v != "v2" {
		t.Fatalf("after the refresh: %v", v)
	}
	if s := db.Stats(); s.CacheRefreshes != 1 {
		t.Errorf("%d refreshes, want 1", s.CacheRefreshes)
	}
}

func TestCacheWriteInvalidatesItsTables(t *testing.T) {
	db, behind, _, _ := openCacheTest(t)
	ctx := t.Context()
	readOther := `SELECT v FROM other WHERE k = $1`
	one(t, ctx, db, readKV, "a")
	one(t, ctx, db, readOther, "a")
	behind(`UPDATE other SET v = 'o2'`)

	// A write through the DB to kv drops reads of kv, not of other.
	exec(t, db, `UPDATE kv SET v = 'v2' WHERE k = $1`, "a")
	if v := one(t, ctx, db, readKV, "a"); v != "v2" {
		t.Errorf("read of kv after a write to it = %v, want v2", v)
	}
	if v := one(t, ctx, db, readOther, "a"); v != "o1" {
		t.Errorf("read of other after a write to kv = %v, want the cached o1", v)
	}

	// A committed Tx drops what it wrote; a rolled back one nothing.
	err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		_, err := tx.Exec(ctx, `INSERT INTO "other" (k, v) VALUES ($1, $2)`, "b", "x")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := one(t, ctx, db, readOther, "a"); v != "o2" {
		t.Errorf("read of other after a Tx wrote it = %v, want o2", v)
	}
	behind(`UPDATE other SET v = 'o3'`)
	_ = db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		exec(t, tx, `DELETE FROM other`)
		return context.Canceled // roll back
	})
	if v := one(t, ctx, db, readOther, "a"); v != "o2" {
		t.Errorf("read of other after a rolled back Tx = %v, want the cached o2", v)
	}

	// INSERT … RETURNING through Query is a write too.
	behind(`UPDATE kv SET v = 'v3'`)
	if _, err := db.Query(ctx, `INSERT INTO kv (k, v) VALUES ('c', 'z') RETURNING k`); err != nil {
		t.Fatal(err)
	}
	if v := one(t, ctx, db, readKV, "a"); v != "v3" {
		t.Errorf("read of kv after INSERT RETURNING = %v, want v3", v)
	}
	// DDL whose reach is unknown drops everything.
	behind(`UPDATE other SET v = 'o4'`)
	exec(t, db, `CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql`)
	if v := one(t, ctx, db, readOther, "a"); v != "o4" {
		t.Errorf("read of other after CREATE FUNCTION = %v, want o4", v)
	}
	// A user function may write anything: calling one drops everything.
	exec(t, db, `CREATE FUNCTION set_kv(val text) RETURNS void AS $$ UPDATE kv SET v = val $$ LANGUAGE sql`)
	one(t, ctx, db, readKV, "a")
	exec(t, db, `SELECT set_kv($1)`, "by-function")
	if v := one(t, ctx, db, readKV, "a"); v != "by-function" {
		t.Errorf("read of kv after a function wrote it = %v, want by-function", v)
	}
	if s := db.Stats(); s.CacheInvalidations == 0 {
		t.Errorf("no invalidations counted: %+v", s)
	}
}

func TestCacheNeverCaches(t *testing.T) {
	db, behind, _, _ := openCacheTest(t)
	ctx := t.Context()
	// Each read must see each write made behind the cache's back.
	check := func(what string, read func() any) {
		t.Helper()
		for _, want := range []string{"x-" + what, "y-" + what} {
			behind(`UPDATE kv SET v = $1 WHERE k = 'a'`, want)
			if got := read(); got != want {
				t.Errorf("%s: read %v, want %v: it was cached", what, got, want)
			}
		}
	}
	before := db.Stats()

	// A volatile function.
	check("now", func() any {
		rows, err := db.Query(ctx, `SELECT v, now() FROM kv WHERE k = $1`, "a")
		if err != nil {
			t.Fatal(err)
		}
		return rows.Values[0][0]
	})
	// Inside a transaction.
	check("tx", func() any {
		var v any
		err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
			v = one(t, ctx, tx, readKV, "a")
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return v
	})
	// Marked by the caller.
	check("marked", func() any { return one(t, agentd.WithoutQueryCache(ctx), db, readKV, "a") })
	// FOR UPDATE.
	// Locking rows.
	check("for update", func() any { return one(t, ctx, db, readKV+` FOR UPDATE`, "a") })

	after := db.Stats()
	if after.CacheHits != before.CacheHits || after.CacheEntries != 0 {
		t.Errorf("something was cached: before %+v, after %+v", before, after)
	}
	// The volatile, marked and locking reads count as uncacheable; reads
	// in a Tx are not the cache's business.
	if n := after.CacheUncacheable - before.CacheUncacheable; n != 6 {
		t.Errorf("uncacheable = %d, want 6", n)
	}

	// A marked read also sees what the cache would hide.
	one(t, ctx, db, readKV, "a")
	behind(`UPDATE kv SET v = 'latest' WHERE k = 'a'`)
	if v := one(t, agentd.WithoutQueryCache(ctx), db, readKV, "a"); v != "latest" {
		t.Errorf("WithoutQueryCache read = %v, want latest", v)
	}
	if v := one(t, ctx, db, readKV, "a"); v == "latest" {
		t.Errorf("the cached read changed: the marked read wrote to the cache")
	}
}

func TestCacheResultSizeCap(t *testing.T) {
	raw, admin := testSchema(t)
	db := openAt(t, withParam(raw, "cache_max_bytes", "1024"))
	exec(t, db, `CREATE TABLE big (id BIGINT PRIMARY KEY, body TEXT NOT NULL)`)
	exec(t, db, `INSERT INTO big (id, body) VALUES (1, $1), (2, 'small')`, strings.Repeat("x", 4096))
	ctx := t.Context()
	for range 2 {
		one(t, ctx, db, `SELECT body FROM big WHERE id = $1`, 1)
		one(t, ctx, db, `SELECT body FROM big WHERE id = $1`, 2)
	}
	s := db.Stats()
	if s.CacheEntries != 1 || s.CacheHits != 1 || s.CacheUncacheable != 2 {
		t.Errorf("stats %+v, want only the small result cached", s)
	}
	adminExec(t, admin, `UPDATE big SET body = 'changed'`)
	if v := one(t, ctx, db, `SELECT body FROM big WHERE id = $1`, 1); v != "changed" {
		t.Errorf("the big result was cached")
	}
}

func TestCacheOffByURL(t *testing.T) {
	raw, admin := testSchema(t)
	db := openAt(t, withParam(raw, "cache", "off"))
	exec(t, db, `CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)`)
	exec(t, db, `INSERT INTO kv (k, v) VALUES ('a', 'v1')`)
	one(t, t.Context(), db, readKV, "a")
	adminExec(t, admin, `UPDATE kv SET v = 'v2'`)
	if v := one(t, t.Context(), db, readKV, "a"); v != "v2" {
		t.Errorf("cache=off served %v, want v2", v)
	}
	s := db.Stats()
	if s.CacheHits != 0 || s.CacheMisses != 0 || s.CacheUncacheable != 0 || s.CacheEntries != 0 {
		t.Errorf("cache=off counted cache traffic: %+v", s)
	}
}

func TestCacheURLParameters(t *testing.T) {
	raw, admin := testSchema(t)
	clock := clockwork.NewFakeClock()
	db := openAt(t, withParam(withParam(raw, "cache_max_age", "5s"), "cache_stale_while_revalidate", "0"), WithClock(clock))
	exec(t, db, `CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)`)
	exec(t, db, `INSERT INTO kv (k, v) VALUES ('a', 'v1')`)
	one(t, t.Context(), db, readKV, "a")
	adminExec(t, admin, `UPDATE kv SET v = 'v2'`)
	clock.Advance(5 * time.Second)
	// max_age 5 s and no stale serving: a miss at 5 s.
	if v := one(t, t.Context(), db, readKV, "a"); v != "v2" {
		t.Errorf("read at 5 s = %v, want v2", v)
	}
	if s := db.Stats(); s.CacheStaleServes != 0 || s.CacheMisses != 2 {
		t.Errorf("stats %+v", s)
	}
}
