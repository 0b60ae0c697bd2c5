package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/agentd/agentd"
)

// TestDB runs the conformance suite of the DB binding. open returns a fresh,
// empty database for each subtest; the suite closes it when the subtest
// ends (so Close must tolerate a second call if open also registers one).
//
// The SQL is portable between SQLite and Postgres (TEXT, BIGINT, DOUBLE
// PRECISION, `$N` parameters); only the binary column type differs, chosen
// by Dialect.
func TestDB(t *testing.T, open func(t *testing.T) agentd.DB) {
	fresh := func(t *testing.T) agentd.DB {
		t.Helper()
		db := open(t)
		t.Cleanup(func() {
			if err := db.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return db
	}

	t.Run("Dialect", func(t *testing.T) {
		db := fresh(t)
		if d := db.Dialect(); d != "sqlite" && d != "postgres" {
			t.Fatalf("Dialect() = %q, want sqlite or postgres", d)
		}
	})

	t.Run("CreateTableInsertQuery", func(t *testing.T) {
		db := fresh(t)
		ctx := t.Context()
		dbCreateItems(t, db)
		res := dbExec(t, db, `INSERT INTO items (id, name, score, note, data) VALUES ($1, $2, $3, $4, $5)`,
			1, "one", 2.5, "a note", []byte{0, 1, 2, 255})
		if res.RowsAffected != 1 {
			t.Errorf("insert RowsAffected = %d, want 1", res.RowsAffected)
		}
		// A row of NULLs reads back as nil in every column type.
		dbExec(t, db, `INSERT INTO items (id, name, score, note, data) VALUES ($1, $2, $3, $4, $5)`,
			2, nil, nil, nil, nil)

		rows, err := db.Query(ctx, `SELECT id, name, score, note, data FROM items ORDER BY id`)
		if err != nil {
			t.Fatalf("Query: %v", err)
		}
		wantCols := []string{"id", "name", "score", "note", "data"}
		if !reflect.DeepEqual(rows.Columns, wantCols) {
			t.Fatalf("Columns = %q, want %q", rows.Columns, wantCols)
		}
		if len(rows.Values) != 2 {
			t.Fatalf("got %d rows, want 2", len(rows.Values))
		}
		dbCheckValue(t, "id", rows.Values[0][0], int64(1))
		dbCheckValue(t, "name", rows.Values[0][1], "one")
		dbCheckValue(t, "score", rows.Values[0][2], 2.5)
		dbCheckValue(t, "note", rows.Values[0][3], "a note")
		dbCheckValue(t, "data", rows.Values[0][4], []byte{0, 1, 2, 255})
		dbCheckValue(t, "id", rows.Values[1][0], int64(2))
		for i := 1; i < len(wantCols); i++ {
			dbCheckValue(t, wantCols[i]+" (NULL)", rows.Values[1][i], nil)
		}
	})

	t.Run("Params", func(t *testing.T) {
		db := fresh(t)
		ctx := t.Context()
		dbExec(t, db, `CREATE TABLE params (a BIGINT, b TEXT, c BIGINT)`)
		// Out of order and repeated: $N is the N-th argument wherever and
		// however often it appears.
		dbExec(t, db, `INSERT INTO params (a, b, c) VALUES ($2, $1, $2)`, "x", 7)
		rows, err := db.Query(ctx, `SELECT '$1 stays text' AS lit, b, c FROM params WHERE a = $1 AND c = $1 AND b = $2`, 7, "x")
		if err != nil {
			t.Fatalf("Query: %v", err)
		}
		if len(rows.Values) != 1 {
			t.Fatalf("got %d rows, want 1", len(rows.Values))
		}
		dbCheckValue(t, "lit", rows.Values[0][0], "$1 stays text")
		dbCheckValue(t, "b", rows.Values[0][1], "x")
		dbCheckValue(t, "c", rows.Values[0][2], int64(7))
	})

	t.Run("RowsAffected", func(t *testing.T) {
		db := fresh(t)
		dbCreateItems(t, db)
		for i := 1; i <= 3; i++ {
			dbExec(t, db, `INSERT INTO items (id, name) VALUES ($1, $2)`, i, fmt.Sprint("n", i))
		}
		if res := dbExec(t, db, `UPDATE items SET note = $1 WHERE id < $2`, "x", 3); res.RowsAffected != 2 {
			t.Errorf("UPDATE RowsAffected = %d, want 2", res.RowsAffected)
		}
		if res := dbExec(t, db, `DELETE FROM items WHERE id = $1`, 42); res.RowsAffected != 0 {
			t.Errorf("DELETE of nothing: RowsAffected = %d, want 0", res.RowsAffected)
		}
		if res := dbExec(t, db, `DELETE FROM items`); res.RowsAffected != 3 {
			t.Errorf("DELETE all: RowsAffected = %d, want 3", res.RowsAffected)
		}
	})

	t.Run("EmptyResult", func(t *testing.T) {
		db := fresh(t)
		dbCreateItems(t, db)
		rows, err := db.Query(t.Context(), `SELECT id, name FROM items WHERE id = $1`, 1)
		if err != nil {
			t.Fatalf("Query: %v", err)
		}
		if !reflect.DeepEqual(rows.Columns, []string{"id", "name"}) {
			t.Errorf("Columns = %q, want [id name]", rows.Columns)
		}
		if len(rows.Values) != 0 {
			t.Errorf("Values = %v, want none", rows.Values)
		}
		if m := rows.Maps(); len(m) != 0 {
			t.Errorf("Maps() = %v, want none", m)
		}
	})

	t.Run("Maps", func(t *testing.T) {
		db := fresh(t)
		dbCreateItems(t, db)
		dbExec(t, db, `INSERT INTO items (id, name, score) VALUES ($1, $2, $3), ($4, $5, $6)`, 1, "a", 1.5, 2, "b", nil)
		rows, err := db.Query(t.Context(), `SELECT id, name, score FROM items ORDER BY id`)
		if err != nil {
			t.Fatalf("Query: %v", err)
		}
		want := []map[string]any{
			{"id": int64(1), "name": "a", "score": 1.5},
			{"id": int64(2), "name": "b", "score": nil},
		}
		if got := rows.Maps(); !reflect.DeepEqual(got, want) {
			t.Errorf("Maps() = %v, want %v", got, want)
		}
	})

	t.Run("TxCommit", func(t *testing.T) {
		db := fresh(t)
		ctx := t.Context()
		dbCreateItems(t, db)
		err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
			for i := 1; i <= 2; i++ {
				if _, err := tx.Exec(ctx, `INSERT INTO items (id, name) VALUES ($1, $2)`, i, "t"); err != nil {
					return err
				}
			}
			// The transaction sees its own writes.
			if n := dbCount(t, ctx, tx, `SELECT COUNT(*) FROM items`); n != 2 {
				return fmt.Errorf("inside the transaction: count = %d, want 2", n)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Tx: %v", err)
		}
		if n := dbCount(t, ctx, db, `SELECT COUNT(*) FROM items`); n != 2 {
			t.Errorf("after commit: count = %d, want 2", n)
		}
	})

	t.Run("TxRollbackOnError", func(t *testing.T) {
		db := fresh(t)
		ctx := t.Context()
		dbCreateItems(t, db)
		errBoom := errors.New("boom")
		err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
			if _, err := tx.Exec(ctx, `INSERT INTO items (id, name) VALUES ($1, $2)`, 1, "t"); err != nil {
				return err
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("Tx error = %v, want fn's error", err)
		}
		if n := dbCount(t, ctx, db, `SELECT COUNT(*) FROM items`); n != 0 {
			t.Errorf("after rollback: count = %d, want 0", n)
		}
	})

	t.Run("TxRollbackOnPanic", func(t *testing.T) {
		db := fresh(t)
		ctx := t.Context()
		dbCreateItems(t, db)
		func() {
			defer func() {
				if r := recover(); r != "boom" {
					t.Errorf("recovered %v, want the panic of fn to go on", r)
				}
			}()
			_ = db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
				if _, err := tx.Exec(ctx, `INSERT INTO items (id, name) VALUES ($1, $2)`, 1, "t"); err != nil {
					return err
				}
				panic("boom")
			})
		}()
		if n := dbCount(t, ctx, db, `SELECT COUNT(*) FROM items`); n != 0 {
			t.Errorf("after panic: count = %d, want 0", n)
		}
	})

	t.Run("UniqueViolationIsConflict", func(t *testing.T) {
		db := fresh(t)
		dbCreateItems(t, db)
		dbExec(t, db, `INSERT INTO items (id, name) VALUES ($1, $2)`, 1, "a")
		_, err := db.Exec(t.Context(), `INSERT INTO items (id, name) VALUES ($1, $2)`, 1, "b")
		dbCheckKind(t, err, agentd.KindConflict)
		// The same inside a transaction, which then rolls back.
		err = db.Tx(t.Context(), func(ctx context.Context, tx agentd.Querier) error {
			_, err := tx.Exec(ctx, `INSERT INTO items (id, name) VALUES ($1, $2)`, 1, "c")
			return err
		})
		dbCheckKind(t, err, agentd.KindConflict)
	})

	t.Run("SyntaxErrorIsInvalid", func(t *testing.T) {
		db := fresh(t)
		_, err := db.Exec(t.Context(), `CREATE TABLLE nope (a BIGINT)`)
		dbCheckKind(t, err, agentd.KindInvalid)
		_, err = db.Query(t.Context(), `SELEKT 1`)
		dbCheckKind(t, err, agentd.KindInvalid)
	})

	t.Run("UnknownTableIsInvalid", func(t *testing.T) {
		db := fresh(t)
		_, err := db.Query(t.Context(), `SELECT a FROM no_such_table`)
		dbCheckKind(t, err, agentd.KindInvalid)
	})

	t.Run("CancelledContext", func(t *testing.T) {
		db := fresh(t)
		dbCreateItems(t, db)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := db.Exec(ctx, `INSERT INTO items (id, name) VALUES ($1, $2)`, 1, "a")
		dbCheckCancelled(t, "Exec", err)
		_, err = db.Query(ctx, `SELECT id FROM items`)
		dbCheckCancelled(t, "Query", err)
		ran := false
		err = db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
			ran = true
			_, err := tx.Exec(ctx, `INSERT INTO items (id, name) VALUES ($1, $2)`, 2, "b")
			return err
		})
		dbCheckCancelled(t, "Tx", err)
		if n := dbCount(t, t.Context(), db, `SELECT COUNT(*) FROM items`); n != 0 {
			t.Errorf("count = %d after cancelled writes (fn ran: %v), want 0", n, ran)
		}
	})

	t.Run("ConcurrentInserts", func(t *testing.T) {
		db := fresh(t)
		dbCreateItems(t, db)
		const n = 20
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				if _, err := db.Exec(t.Context(), `INSERT INTO items (id, name) VALUES ($1, $2)`, i, fmt.Sprint("g", i)); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("concurrent insert: %v", err)
		}
		if got := dbCount(t, t.Context(), db, `SELECT COUNT(*) FROM items`); got != n {
			t.Errorf("count = %d, want %d", got, n)
		}
	})

	t.Run("ConcurrentTx", func(t *testing.T) {
		db := fresh(t)
		dbExec(t, db, `CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)`)
		dbExec(t, db, `INSERT INTO counters (id, n) VALUES (1, 0)`)
		const n = 20
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				// Read, then write: transactions must not lose updates or
				// fail each other.
				err := db.Tx(t.Context(), func(ctx context.Context, tx agentd.Querier) error {
					if _, err := tx.Exec(ctx, `UPDATE counters SET n = n + 1 WHERE id = $1`, 1); err != nil {
						return err
					}
					_, err := tx.Query(ctx, `SELECT n FROM counters WHERE id = $1`, 1)
					return err
				})
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("concurrent Tx: %v", err)
		}
		if got := dbCount(t, t.Context(), db, `SELECT n FROM counters WHERE id = 1`); got != n {
			t.Errorf("counter = %d, want %d", got, n)
		}
	})
}

// dbCreateItems creates the suite's table. Only the binary column's type
// differs between the dialects.
func dbCreateItems(t *testing.T, db agentd.DB) {
	t.Helper()
	blob := "BLOB"
	if db.Dialect() == "postgres" {
		blob = "BYTEA"
	}
	dbExec(t, db, `CREATE TABLE items (
		id BIGINT PRIMARY KEY,
		name TEXT,
		score DOUBLE PRECISION,
		note TEXT,
		data `+blob+`
	)`)
}

func dbExec(t *testing.T, db agentd.Querier, query string, args ...any) agentd.ExecResult {
	t.Helper()
	res, err := db.Exec(t.Context(), query, args...)
	if err != nil {
		t.Fatalf("Exec(%q): %v", query, err)
	}
	return res
}

// dbCount runs a query of one integer and returns it.
func dbCount(t *testing.T, ctx context.Context, q agentd.Querier, query string, args ...any) int64 {
	t.Helper()
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		t.Fatalf("Query(%q): %v", query, err)
	}
	if len(rows.Values) != 1 || len(rows.Values[0]) != 1 {
		t.Fatalf("Query(%q) = %v, want one value", query, rows.Values)
	}
	n, ok := rows.Values[0][0].(int64)
	if !ok {
		t.Fatalf("Query(%q) = %T %v, want an int64", query, rows.Values[0][0], rows.Values[0][0])
	}
	return n
}

// dbCheckValue checks a value's Go type as well as its value.
func dbCheckValue(t *testing.T, name string, got, want any) {
	t.Helper()
	if reflect.TypeOf(got) != reflect.TypeOf(want) {
		t.Errorf("%s: got %T %v, want %T %v", name, got, got, want, want)
		return
	}
	if b, ok := want.([]byte); ok {
		if !bytes.Equal(got.([]byte), b) {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
		return
	}
	if got != want {
		t.Errorf("%s: got %v, want %v", name, got, want)
	}
}

// dbCheckKind checks that err is an *agentd.Error of the kind.
func dbCheckKind(t *testing.T, err error, want agentd.Kind) {
	t.Helper()
	if err == nil {
		t.Errorf("got no error, want one of kind %s", want)
		return
	}
	var ae *agentd.Error
	if !errors.As(err, &ae) {
		t.Errorf("error %v (%T) is not an *agentd.Error", err, err)
		return
	}
	if got := agentd.KindOf(err); got != want {
		t.Errorf("error %v: kind %s, want %s", err, got, want)
	}
}

// dbCheckCancelled checks that an operation under a cancelled context failed,
// with the context's error in the chain so callers can tell it apart.
func dbCheckCancelled(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s with a cancelled context: no error", what)
		return
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("%s with a cancelled context: %v, want context.Canceled in the chain", what, err)
	}
}
