package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/store/migrate"
	"github.com/agentd/agentd/store/storetest"
	"github.com/jackc/pgx/v5"
	"github.com/jonboulle/clockwork"
)

// The tests in this file need a Postgres server: they run when
// AGENTD_TEST_POSTGRES_URL names one, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable, and skip
// otherwise. Each test works in a schema of its own, dropped when it ends.

const envURL = "AGENTD_TEST_POSTGRES_URL"

func baseURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(envURL)
	if u == "" {
		t.Skip("set " + envURL + " to run against Postgres")
	}
	return u
}

// withParam returns raw with a query parameter added.
func withParam(raw, key, value string) string {
	sep := "?"
	if strings.Contains(raw, "?") {
		sep = "&"
	}
	return raw + sep + url.QueryEscape(key) + "=" + url.QueryEscape(value)
}

// testSchema creates a schema for one test and returns the URL whose
// connections use it, and a connection of its own into it — the "other
// process" that changes rows behind the cache's back.
func testSchema(t testing.TB) (string, *pgx.Conn) {
	t.Helper()
	base := baseURL(t)
	ctx := context.Background()
	name := fmt.Sprintf("agentd_test_%016x", rand.Uint64())
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		admin.Close(ctx)
		t.Fatalf("create schema: %v", err)
	}
	// Registered first, so it runs after the DB's own cleanups.
	t.Cleanup(func() {
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
		admin.Close(ctx)
	})
	if _, err := admin.Exec(ctx, "SET search_path = "+name); err != nil {
		t.Fatal(err)
	}
	return withParam(base, "search_path", name), admin
}

// openAt opens the DB at raw, closed when the test ends.
func openAt(t testing.TB, raw string, opts ...Option) *DB {
	t.Helper()
	// Warnings (a pool reset in the fault tests) would only clutter the
	// output; a test that wants the logs passes its own logger.
	opts = append([]Option{WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	db, err := Open(context.Background(), raw, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openTest opens a DB in a fresh schema with a fake clock, and returns the
// other connection into the schema.
func openTest(t testing.TB, opts ...Option) (*DB, *pgx.Conn, *clockwork.FakeClock) {
	t.Helper()
	raw, admin := testSchema(t)
	clock := clockwork.NewFakeClock()
	db := openAt(t, raw, append([]Option{WithClock(clock)}, opts...)...)
	return db, admin, clock
}

func exec(t testing.TB, q agentd.Querier, sql string, args ...any) {
	t.Helper()
	if _, err := q.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("Exec(%q): %v", sql, err)
	}
}

func adminExec(t testing.TB, admin *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := admin.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("admin Exec(%q): %v", sql, err)
	}
}

// one runs a query of one value.
func one(t testing.TB, ctx context.Context, q agentd.Querier, sql string, args ...any) any {
	t.Helper()
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("Query(%q): %v", sql, err)
	}
	if len(rows.Values) != 1 || len(rows.Values[0]) != 1 {
		t.Fatalf("Query(%q) = %v, want one value", sql, rows.Values)
	}
	return rows.Values[0][0]
}

func TestConformance(t *testing.T) {
	baseURL(t)
	storetest.TestDB(t, func(t *testing.T) agentd.DB {
		db, _, _ := openTest(t)
		return db
	})
}

func TestConformanceWithoutCache(t *testing.T) {
	baseURL(t)
	storetest.TestDB(t, func(t *testing.T) agentd.DB {
		raw, _ := testSchema(t)
		return openAt(t, withParam(raw, "cache", "off"))
	})
}

func TestMigrateTwice(t *testing.T) {
	db, _, _ := openTest(t)
	for i := range 2 {
		if err := migrate.Apply(t.Context(), db, migrate.Runtime()); err != nil {
			t.Fatalf("Apply #%d: %v", i+1, err)
		}
	}
	rows, err := db.Query(t.Context(), `SELECT version, name FROM agentd_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows.Values) != len(migrate.Runtime()) {
		t.Fatalf("recorded %v, want %d versions", rows.Values, len(migrate.Runtime()))
	}
	if n := one(t, t.Context(), db, `SELECT COUNT(*) FROM audit_events`); n != int64(0) {
		t.Errorf("audit_events count = %v", n)
	}
}

func TestArrayParams(t *testing.T) {
	db, _, _ := openTest(t)
	exec(t, db, `CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL)`)
	exec(t, db, `INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')`)
	for _, c := range []struct {
		query string
		arg   any
	}{
		{`SELECT id FROM items WHERE id = ANY($1) ORDER BY id`, []int64{1, 3, 99}},
		{`SELECT id FROM items WHERE id = ANY($1) ORDER BY id`, []int{1, 3}},
		{`SELECT id FROM items WHERE id = ANY($1) ORDER BY id`, []int32{1, 3}},
		{`SELECT id FROM items WHERE name = ANY($1) ORDER BY id`, []string{"a", "c", "zz"}},
	} {
		for _, ctx := range []context.Context{t.Context(), agentd.WithoutQueryCache(t.Context())} {
			rows, err := db.Query(ctx, c.query, c.arg)
			if err != nil {
				t.Fatalf("Query(%q, %T): %v", c.query, c.arg, err)
			}
			want := [][]any{{int64(1)}, {int64(3)}}
			if !reflect.DeepEqual(rows.Values, want) {
				t.Errorf("Query(%q, %#v) = %v, want %v", c.query, c.arg, rows.Values, want)
			}
		}
	}
	// An empty slice matches nothing.
	rows, err := db.Query(t.Context(), `SELECT id FROM items WHERE id = ANY($1)`, []int64{})
	if err != nil || len(rows.Values) != 0 {
		t.Errorf("empty slice: %v, %v", rows, err)
	}
}

func TestValueTypes(t *testing.T) {
	db, _, _ := openTest(t)
	at := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	rows, err := db.Query(t.Context(), `SELECT
		1::smallint AS i2, 2::integer AS i4, 3::bigint AS i8,
		1.1::real AS f4, 2.5::double precision AS f8,
		12.50::numeric(10,2) AS num, 'NaN'::numeric AS nan,
		'text'::text AS t, 'vc'::varchar(5) AS vc, 'c'::char(3) AS ch,
		'\x00ff'::bytea AS by, ''::bytea AS empty_by, true AS b,
		$1::timestamptz AS tstz, '2024-05-06 07:08:09'::timestamp AS ts, '2024-05-06'::date AS d,
		'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,
		'{"b": [1, 2], "a": null}'::json AS j, '{"b": [1, 2], "a": null}'::jsonb AS jb, 'null'::jsonb AS jnull,
		ARRAY[1, 2]::int[] AS ints, ARRAY['x', NULL] AS texts,
		'1 day 02:00:00'::interval AS iv, '10.0.0.0/8'::cidr AS net,
		NULL::text AS nt, NULL::bigint AS ni, NULL::jsonb AS nj`, at)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"i2": int64(1), "i4": int64(2), "i8": int64(3),
		"f4": 1.1, "f8": 2.5,
		"num": "12.50", "nan": "NaN",
		"t": "text", "vc": "vc", "ch": "c  ",
		"by": []byte{0, 0xff}, "empty_by": []byte{}, "b": true,
		"tstz": at, "ts": time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC), "d": time.Date(2024, 5, 6, 0, 0, 0, 0, time.UTC),
		"u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"j": `{"b": [1, 2], "a": null}`, "jb": `{"a": null, "b": [1, 2]}`, "jnull": "null",
		"ints": []any{int64(1), int64(2)}, "texts": []any{"x", nil},
		"iv": "1 day 02:00:00", "net": "10.0.0.0/8",
		"nt": nil, "ni": nil, "nj": nil,
	}
	got := rows.Maps()[0]
	for col, w := range want {
		g, ok := got[col]
		if !ok {
			t.Errorf("no column %s", col)
			continue
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s = %T %#v, want %T %#v", col, g, g, w, w)
		}
		if tm, ok := g.(time.Time); ok && tm.Location() != time.UTC {
			t.Errorf("%s is in %v, want UTC", col, tm.Location())
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d columns, want %d", len(got), len(want))
	}
}

func TestErrorKinds(t *testing.T) {
	db, _, _ := openTest(t)
	ctx := t.Context()
	exec(t, db, `CREATE TABLE parent (id BIGINT PRIMARY KEY)`)
	exec(t, db, `CREATE TABLE child (id BIGINT PRIMARY KEY, parent BIGINT NOT NULL REFERENCES parent (id), n BIGINT CHECK (n > 0))`)
	exec(t, db, `INSERT INTO parent (id) VALUES (1)`)
	exec(t, db, `INSERT INTO child (id, parent, n) VALUES (1, 1, 1)`)
	for _, c := range []struct {
		sql  string
		args []any
		want agentd.Kind
	}{
		{`INSERT INTO child (id, parent, n) VALUES (1, 1, 1)`, nil, agentd.KindConflict},               // unique
		{`INSERT INTO child (id, parent, n) VALUES (2, 42, 1)`, nil, agentd.KindConflict},              // foreign key
		{`INSERT INTO child (id, parent, n) VALUES (3, 1, -1)`, nil, agentd.KindConflict},              // check
		{`INSERT INTO child (id, parent, n) VALUES (4, NULL, 1)`, nil, agentd.KindConflict},            // not null
		{`SELEKT 1`, nil, agentd.KindInvalid},                                                          // syntax
		{`SELECT nope FROM child`, nil, agentd.KindInvalid},                                            // undefined column
		{`SELECT * FROM nope`, nil, agentd.KindInvalid},                                                // undefined table
		{`SELECT 'abc'::bigint`, nil, agentd.KindInvalid},                                              // invalid input
		{`SELECT 1 / 0`, nil, agentd.KindInvalid},                                                      // division by zero
		{`SELECT id FROM child WHERE id = $1`, nil, agentd.KindInvalid},                                // missing argument
		{`SELECT id FROM child WHERE id = $1`, []any{1, 2}, agentd.KindInvalid},                        // extra argument
		{`SELECT id FROM child WHERE id = $1`, []any{make(chan int)}, agentd.KindInvalid},              // unencodable
		{`SELECT id FROM child WHERE id = $1`, []any{"not a number"}, agentd.KindInvalid},              // wrong type
		{`INSERT INTO child (id, parent, n) VALUES ($1, 1, 1)`, []any{struct{}{}}, agentd.KindInvalid}, // unencodable
	} {
		var err error
		if strings.HasPrefix(c.sql, "INSERT") {
			_, err = db.Exec(ctx, c.sql, c.args...)
		} else {
			_, err = db.Query(ctx, c.sql, c.args...)
		}
		if got := agentd.KindOf(err); got != c.want {
			t.Errorf("%s %v: error %v (kind %q), want kind %s", c.sql, c.args, err, got, c.want)
		}
	}
	// The connection survives those errors.
	if n := one(t, ctx, db, `SELECT COUNT(*) FROM child`); n != int64(1) {
		t.Errorf("count = %v", n)
	}
}

func TestTimeouts(t *testing.T) {
	raw, _ := testSchema(t)
	db := openAt(t, withParam(raw, "query_timeout", "300ms"))
	// pg_sleep is volatile, so these go to Postgres.
	_, err := db.Query(t.Context(), `SELECT pg_sleep(10)`)
	if agentd.KindOf(err) != agentd.KindStorageUnavailable {
		t.Errorf("a query past the query timeout: %v, want KindStorageUnavailable", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Errorf("the query timeout reads as a cancellation: %v", err)
	}

	// The caller's own sooner deadline is the caller's: KindTimeout, with
	// the context's error in the chain.
	db2 := openAt(t, withParam(raw, "query_timeout", "1m"))
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err = db2.Exec(ctx, `SELECT pg_sleep(10)`)
	if agentd.KindOf(err) != agentd.KindTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a query past the caller's deadline: %v (kind %s), want KindTimeout and DeadlineExceeded", err, agentd.KindOf(err))
	}

	// A caller who cancels mid-query gets context.Canceled.
	ctx, cancel = context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := db2.Query(ctx, `SELECT pg_sleep(10)`)
		done <- err
	}()
	waitFor(t, "the query to start", func() bool { return db2.Stats().AcquiredConns == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled query: %v, want context.Canceled", err)
	}
	// Both DBs still work.
	for _, d := range []*DB{db, db2} {
		if v := one(t, t.Context(), d, `SELECT 1`); v != int64(1) {
			t.Errorf("SELECT 1 = %v", v)
		}
	}
}

func TestTxCommitsAndRollsBack(t *testing.T) {
	db, _, _ := openTest(t)
	ctx := t.Context()
	exec(t, db, `CREATE TABLE items (id BIGINT PRIMARY KEY)`)
	// A statement fails inside the transaction and fn goes on: Postgres
	// has aborted the transaction, and Commit says so.
	err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		exec(t, tx, `INSERT INTO items (id) VALUES (1)`)
		_, err := tx.Exec(ctx, `INSERT INTO items (id) VALUES (1)`)
		if agentd.KindOf(err) != agentd.KindConflict {
			t.Errorf("duplicate in Tx: %v", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO items (id) VALUES (2)`)
		if agentd.KindOf(err) != agentd.KindInvalid {
			t.Errorf("statement after a failed one: %v, want KindInvalid (transaction aborted)", err)
		}
		return nil
	})
	if err == nil {
		t.Error("Tx committed a transaction Postgres had aborted")
	}
	if n := one(t, ctx, db, `SELECT COUNT(*) FROM items`); n != int64(0) {
		t.Errorf("count = %v, want 0", n)
	}
	if s := db.Stats(); s.AcquiredConns != 0 {
		t.Errorf("%d connections still acquired after Tx", s.AcquiredConns)
	}
}

// logBuffer is a slog handler's output, safe for concurrent writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestPasswordNeverShown(t *testing.T) {
	base := baseURL(t)
	const pw = "s3cr3t-Pw0rd"
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	user := "postgres"
	if u.User != nil {
		user = u.User.Username()
	}
	u.User = url.UserPassword(user, pw)
	withPW := u.String()

	var logs logBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// The server here trusts local connections, so the password is sent
	// and ignored: Open succeeds and logs the URL, redacted.
	db := openAt(t, withPW, WithLogger(logger))
	if _, err := db.Query(t.Context(), `SELECT * FROM no_such_table`); err != nil {
		checkNoSecret(t, err, pw)
	}

	bad := *u
	bad.Host = "127.0.0.1:1" // nothing listens there
	for _, raw := range []string{
		bad.String(),
		withParam(withPW, "pool_max_conns", "lots"),
		withParam(withPW, "sslmode", "bogus"),
		withParam(withPW, "connect_timeout", "x"),
		strings.Replace(withPW, u.Host, "127.0.0.1:notaport", 1),
		withParam(strings.Replace(base, "postgres://", "postgres://nobody@", 1), "password", pw) + "&pool_max_conns=x",
	} {
		_, err := Open(t.Context(), raw, WithLogger(logger), WithQueryTimeout(2*time.Second))
		if err == nil {
			t.Errorf("Open(%q): no error", strings.ReplaceAll(raw, pw, "PW"))
			continue
		}
		checkNoSecret(t, err, pw)
		if !strings.Contains(raw, ":1/") && agentd.KindOf(err) != agentd.KindInvalid {
			t.Errorf("%v: kind %s, want KindInvalid", err, agentd.KindOf(err))
		}
	}
	if _, err := Open(t.Context(), bad.String()); agentd.KindOf(err) != agentd.KindStorageUnavailable {
		t.Errorf("unreachable server: %v, want KindStorageUnavailable", err)
	}
	out := logs.String()
	if strings.Contains(out, pw) {
		t.Errorf("logs show the password:\n%s", out)
	}
	if !strings.Contains(out, redactedPassword) {
		t.Errorf("logs do not show the redacted URL:\n%s", out)
	}
}

func TestStats(t *testing.T) {
	db, _, _ := openTest(t)
	one(t, t.Context(), db, `SELECT 1`)
	s := db.Stats()
	if s.AcquireCount == 0 || s.MaxConns != defaultMaxConns || s.TotalConns == 0 {
		t.Errorf("pool stats %+v", s)
	}
	raw, _ := testSchema(t)
	db2 := openAt(t, withParam(raw, "pool_max_conns", "3"))
	if s := db2.Stats(); s.MaxConns != 3 {
		t.Errorf("pool_max_conns=3: MaxConns = %d", s.MaxConns)
	}
}

// TestConcurrent runs 20 goroutines of writes, cached reads and transactions
// against one DB, each checking that it reads its own writes through the
// cache.
func TestConcurrent(t *testing.T) {
	db, _, _ := openTest(t)
	exec(t, db, `CREATE TABLE events (g BIGINT NOT NULL, i BIGINT NOT NULL, PRIMARY KEY (g, i))`)
	exec(t, db, `CREATE TABLE totals (g BIGINT PRIMARY KEY, n BIGINT NOT NULL)`)
	const goroutines, rounds = 20, 15
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			ctx := t.Context()
			if _, err := db.Exec(ctx, `INSERT INTO totals (g, n) VALUES ($1, 0)`, g); err != nil {
				t.Error(err)
				return
			}
			for i := range rounds {
				err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
					if _, err := tx.Exec(ctx, `INSERT INTO events (g, i) VALUES ($1, $2)`, g, i); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, `UPDATE totals SET n = n + 1 WHERE g = $1`, g)
					return err
				})
				if err != nil {
					t.Errorf("goroutine %d round %d: Tx: %v", g, i, err)
					return
				}
				// Cacheable reads, right after the write: they must see
				// it, whatever the other goroutines cached meanwhile.
				rows, err := db.Query(ctx, `SELECT COUNT(*) FROM events WHERE g = $1`, g)
				if err != nil {
					t.Error(err)
					return
				}
				if n := rows.Values[0][0]; n != int64(i+1) {
					t.Errorf("goroutine %d round %d: read %v events, want %d", g, i, n, i+1)
				}
				rows, err = db.Query(ctx, `SELECT n FROM totals WHERE g = $1`, g)
				if err != nil {
					t.Error(err)
					return
				}
				if n := rows.Values[0][0]; n != int64(i+1) {
					t.Errorf("goroutine %d round %d: total %v, want %d", g, i, n, i+1)
				}
				// And one everyone shares.
				if _, err := db.Query(ctx, `SELECT COUNT(*) FROM totals`); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if n := one(t, t.Context(), db, `SELECT SUM(n)::bigint FROM totals`); n != int64(goroutines*rounds) {
		t.Errorf("total = %v, want %d", n, goroutines*rounds)
	}
}

// TestPoolExhausted: with every connection held, an operation waits for one
// until the query timeout, then fails as unavailable; the wait is counted.
func TestPoolExhausted(t *testing.T) {
	raw, _ := testSchema(t)
	db := openAt(t, withParam(withParam(raw, "pool_max_conns", "1"), "query_timeout", "300ms"))
	held := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- db.Tx(context.Background(), func(ctx context.Context, tx agentd.Querier) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	_, err := db.Query(agentd.WithoutQueryCache(t.Context()), `SELECT 1`)
	if agentd.KindOf(err) != agentd.KindStorageUnavailable {
		t.Errorf("Query with the pool exhausted: %v, want KindStorageUnavailable", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Tx: %v", err)
	}
	if s := db.Stats(); s.AcquireWaits == 0 || s.AcquireWaitTime < 0 || s.PoolResets != 0 {
		t.Errorf("stats %+v, want a counted wait and no reset", s)
	}
	if v := one(t, t.Context(), db, `SELECT 1`); v != int64(1) {
		t.Errorf("after the Tx: %v", v)
	}
}
