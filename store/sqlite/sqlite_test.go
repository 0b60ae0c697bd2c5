package sqlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/store/storetest"
)

func openTemp(t testing.TB) *DB {
	t.Helper()
	db, err := Open(t.Context(), filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	storetest.TestDB(t, func(t *testing.T) agentd.DB { return openTemp(t) })
}

func TestConformanceMemory(t *testing.T) {
	storetest.TestDB(t, func(t *testing.T) agentd.DB {
		db, err := Open(t.Context(), ":memory:")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return db
	})
}

func mustExec(t *testing.T, db agentd.Querier, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(t.Context(), q, args...); err != nil {
		t.Fatalf("Exec(%q): %v", q, err)
	}
}

func queryOne(t *testing.T, db agentd.Querier, q string, args ...any) []any {
	t.Helper()
	rows, err := db.Query(t.Context(), q, args...)
	if err != nil {
		t.Fatalf("Query(%q): %v", q, err)
	}
	if len(rows.Values) != 1 {
		t.Fatalf("Query(%q): %d rows, want 1", q, len(rows.Values))
	}
	return rows.Values[0]
}

// TestDollarParamsBindPositionally proves what the package doc claims:
// modernc.org/sqlite binds a parameter named $N to the N-th argument, in any
// order and however often it appears, so Postgres-style SQL runs unchanged.
func TestDollarParamsBindPositionally(t *testing.T) {
	db := openTemp(t)
	got := queryOne(t, db, `SELECT $2, $1, $2, $3, '$1', "$2" FROM (SELECT 'col' AS "$2")`, "a", int64(2), 3.5)
	want := []any{int64(2), "a", int64(2), 3.5, "$1", "col"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("column %d = %T %v, want %T %v", i, got[i], got[i], want[i], want[i])
		}
	}

	// Parameters past 9 are not read as $1 followed by a digit.
	args := make([]any, 12)
	for i := range args {
		args[i] = int64(i + 1)
	}
	got = queryOne(t, db, `SELECT $12, $10, $1`, args...)
	if got[0] != int64(12) || got[1] != int64(10) || got[2] != int64(1) {
		t.Errorf("SELECT $12, $10, $1 = %v, want [12 10 1]", got)
	}

	// A comment mentioning $1 binds nothing.
	got = queryOne(t, db, "SELECT $1 -- not $2\n", "x")
	if got[0] != "x" {
		t.Errorf("with comment: %v", got)
	}
}

func TestMissingArgumentIsInvalid(t *testing.T) {
	db := openTemp(t)
	_, err := db.Query(t.Context(), `SELECT $1, $2`, 1)
	if agentd.KindOf(err) != agentd.KindInvalid {
		t.Errorf("missing $2: %v (kind %s), want %s", err, agentd.KindOf(err), agentd.KindInvalid)
	}
	// A Postgres cast is read as part of the parameter's name.
	_, err = db.Query(t.Context(), `SELECT $1::text`, "x")
	if agentd.KindOf(err) != agentd.KindInvalid {
		t.Errorf("$1::text: %v (kind %s), want %s", err, agentd.KindOf(err), agentd.KindInvalid)
	}
}

func TestSliceArgIsInvalid(t *testing.T) {
	db := openTemp(t)
	for _, arg := range []any{[]string{"a"}, []int64{1}, [2]int{1, 2}, map[string]int{}, struct{}{}} {
		_, err := db.Query(t.Context(), `SELECT $1, $2`, 1, arg)
		var ae *agentd.Error
		if !errors.As(err, &ae) || ae.Kind != agentd.KindInvalid {
			t.Errorf("arg %T: %v, want a KindInvalid *agentd.Error", arg, err)
			continue
		}
		if ae.Field != "args" || !strings.Contains(ae.Error(), "$2") {
			t.Errorf("arg %T: %v (field %q), want it to name argument $2", arg, err, ae.Field)
		}
	}
	// Byte slices, named or not, are blobs.
	type raw []byte
	got := queryOne(t, db, `SELECT $1, $2`, []byte("a"), raw("b"))
	if string(got[0].([]byte)) != "a" || string(got[1].([]byte)) != "b" {
		t.Errorf("byte slices: %v", got)
	}
}

func TestValueTypes(t *testing.T) {
	db := openTemp(t)
	mustExec(t, db, `CREATE TABLE v (b BLOB, t TEXT, ts TIMESTAMP)`)
	when := time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.FixedZone("X", 3600))
	mustExec(t, db, `INSERT INTO v (b, t, ts) VALUES ($1, $2, $3)`, []byte{}, "text", when)
	mustExec(t, db, `INSERT INTO v (b, t, ts) VALUES (NULL, NULL, NULL)`)
	rows, err := db.Query(t.Context(), `SELECT b, t, ts FROM v ORDER BY rowid`)
	if err != nil {
		t.Fatal(err)
	}
	// An empty blob is an empty []byte, not NULL.
	if b, ok := rows.Values[0][0].([]byte); !ok || b == nil || len(b) != 0 {
		t.Errorf("empty blob = %#v, want []byte{}", rows.Values[0][0])
	}
	if s, ok := rows.Values[0][1].(string); !ok || s != "text" {
		t.Errorf("text = %#v, want a string", rows.Values[0][1])
	}
	if ts, ok := rows.Values[0][2].(time.Time); !ok || !ts.Equal(when) {
		t.Errorf("timestamp = %#v, want %v", rows.Values[0][2], when)
	}
	for i, v := range rows.Values[1] {
		if v != nil {
			t.Errorf("NULL column %d = %#v, want untyped nil", i, v)
		}
	}
	// Times are stored as sortable UTC text.
	if got := queryOne(t, db, `SELECT CAST(ts AS TEXT) FROM v WHERE ts IS NOT NULL`)[0]; got != "2025-03-04 04:06:07.891011121+00:00" {
		t.Errorf("stored time = %q", got)
	}
}

// TestPragmasOnEveryConnection holds several pooled connections at once and
// checks each was set up by the DSN, not only the first.
func TestPragmasOnEveryConnection(t *testing.T) {
	db := openTemp(t)
	ctx := t.Context()
	const n = 4
	for i := range n {
		c, err := db.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, p := range []struct {
			pragma string
			want   any
		}{
			{"journal_mode", "wal"},
			{"synchronous", int64(1)}, // NORMAL
			{"busy_timeout", int64(busyTimeoutMillis)},
			{"foreign_keys", int64(1)},
		} {
			var got any
			if err := c.QueryRowContext(ctx, "PRAGMA "+p.pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != p.want {
				t.Errorf("connection %d: %s = %v, want %v", i, p.pragma, got, p.want)
			}
		}
	}
}

func TestForeignKeysEnforced(t *testing.T) {
	db := openTemp(t)
	mustExec(t, db, `CREATE TABLE parent (id BIGINT PRIMARY KEY)`)
	mustExec(t, db, `CREATE TABLE child (id BIGINT PRIMARY KEY, parent BIGINT REFERENCES parent(id))`)
	_, err := db.Exec(t.Context(), `INSERT INTO child (id, parent) VALUES ($1, $2)`, 1, 99)
	if agentd.KindOf(err) != agentd.KindConflict {
		t.Errorf("dangling foreign key: %v, want %s", err, agentd.KindConflict)
	}
}

func TestOpenCreatesParentDirs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "c.db")
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database file: %v", err)
	}
	if db.Dialect() != "sqlite" {
		t.Errorf("Dialect() = %q", db.Dialect())
	}
}

func TestOpenRejectsURIs(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"", filepath.Join(dir, "x.db?mode=ro"), "file:" + filepath.Join(dir, "x.db")} {
		if _, err := Open(t.Context(), p); agentd.KindOf(err) != agentd.KindInvalid {
			t.Errorf("Open(%q): %v, want %s", p, err, agentd.KindInvalid)
		}
	}
}

func TestOpenNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(path, []byte("this is not an SQLite database, not at all, no"), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := Open(t.Context(), path)
	if err == nil {
		db.Close()
		t.Fatal("Open of a junk file succeeded")
	}
	if agentd.KindOf(err) != agentd.KindStorageUnavailable {
		t.Errorf("Open of a junk file: %v, want %s", err, agentd.KindStorageUnavailable)
	}
}

func TestBusyIsStorageUnavailable(t *testing.T) {
	if got := kindOfCode(5 /* SQLITE_BUSY */); got != agentd.KindStorageUnavailable {
		t.Errorf("SQLITE_BUSY: %s", got)
	}
	if got := kindOfCode(2067 /* SQLITE_CONSTRAINT_UNIQUE */); got != agentd.KindConflict {
		t.Errorf("SQLITE_CONSTRAINT_UNIQUE: %s", got)
	}
	if got := kindOfCode(261 /* SQLITE_BUSY_RECOVERY */); got != agentd.KindStorageUnavailable {
		t.Errorf("SQLITE_BUSY_RECOVERY: %s", got)
	}
}

func TestTxCommitCancelled(t *testing.T) {
	db := openTemp(t)
	mustExec(t, db, `CREATE TABLE t (a BIGINT)`)
	ctx, cancel := context.WithCancel(t.Context())
	err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		if _, err := tx.Exec(ctx, `INSERT INTO t (a) VALUES (1)`); err != nil {
			return err
		}
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Tx with ctx cancelled before commit: %v, want context.Canceled", err)
	}
	if n := queryOne(t, db, `SELECT COUNT(*) FROM t`)[0]; n != int64(0) {
		t.Errorf("count = %v, want 0", n)
	}
}

// TestWritersWaitForTheLock runs long write transactions side by side: the
// busy timeout and IMMEDIATE transactions make them take turns, none fails.
func TestWritersWaitForTheLock(t *testing.T) {
	db := openTemp(t)
	mustExec(t, db, `CREATE TABLE t (a BIGINT)`)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			err := db.Tx(t.Context(), func(ctx context.Context, tx agentd.Querier) error {
				if _, err := tx.Query(ctx, `SELECT COUNT(*) FROM t`); err != nil {
					return err
				}
				time.Sleep(10 * time.Millisecond)
				_, err := tx.Exec(ctx, `INSERT INTO t (a) VALUES ($1)`, i)
				return err
			})
			if err != nil {
				t.Errorf("Tx %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if n := queryOne(t, db, `SELECT COUNT(*) FROM t`)[0]; n != int64(8) {
		t.Errorf("count = %v, want 8", n)
	}
}
