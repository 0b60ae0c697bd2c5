// Package sqlite is the embedded agentd.DB backend, on modernc.org/sqlite:
// pure Go, no cgo, so agentd stays one static binary.
//
// Queries use Postgres-style `$1`, `$2` … parameters, the same text the
// Postgres backend runs. SQLite itself treats `$1` as a parameter named "$1";
// modernc.org/sqlite binds a parameter named `$N` (or `?N`) to the N-th
// positional argument, so the text needs no rewriting: parameters may come in
// any order and may repeat. One trap: SQLite lets a `$` parameter name carry
// "::" (Tcl syntax), so a Postgres cast like `$1::text` is read as one
// parameter named "$1::text" and fails as a missing argument. Portable SQL has
// no such casts anyway; use CAST($1 AS TEXT).
//
// Every pooled connection is opened with WAL journaling (readers do not block
// the writer), synchronous=NORMAL (durable across process crashes; a power
// loss may lose the last commits, never corrupt), a busy timeout (concurrent
// writers wait for the write lock instead of failing at once) and foreign
// keys on. Transactions begin IMMEDIATE: they take the write lock up front,
// so two transactions that read then write cannot deadlock each other into a
// SQLITE_BUSY that no timeout resolves.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/agentd/agentd"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// busyTimeoutMillis is how long a statement waits for another connection's
// lock before failing with SQLITE_BUSY. Writes are short; five seconds only
// runs out when something holds the lock far longer than it should.
const busyTimeoutMillis = 5000

// maxIdleConns keeps a few connections open between bursts: opening one
// re-runs the PRAGMAs and re-reads the schema.
const maxIdleConns = 8

// DB is an SQLite database. It is safe for concurrent use.
type DB struct {
	db *sql.DB
}

var _ agentd.DB = (*DB)(nil)

// Open opens, creating it and its parent directories if need be, the SQLite
// database at path, a file system path (not a "file:" URI). The path
// ":memory:" opens a private in-memory database held by a single connection,
// for tests; with it a Tx's fn must use its tx, not the DB, or it waits
// forever for the one connection.
func Open(ctx context.Context, path string) (*DB, error) {
	const op = "sqlite.open"
	if path == "" {
		return nil, agentd.InvalidField(op, "path", "path must not be empty")
	}
	// The driver cuts the DSN at the first '?' and reads "file:" names as
	// URIs, so such a path would silently open another file.
	if strings.Contains(path, "?") || strings.HasPrefix(path, "file:") {
		return nil, agentd.InvalidField(op, "path", "path must be a plain file path without '?' and not a file: URI")
	}
	memory := path == ":memory:"
	if !memory {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, &agentd.Error{Kind: agentd.KindStorageUnavailable, Op: op, Message: "cannot create the database directory", Err: err}
		}
	}

	// PRAGMAs go in the DSN because database/sql opens connections on its
	// own: the driver runs these on every one it opens, which a one-off Exec
	// after sql.Open would not. busy_timeout comes first so switching to WAL
	// waits for a lock held by another process instead of failing.
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMillis))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	// A time.Time argument is written as sortable UTC text with nanoseconds
	// instead of the driver's default time.String(), which carries the
	// monotonic clock reading and the local zone.
	q.Set("_time_format", "sqlite")
	q.Set("_timezone", "UTC")
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, classify(op, err)
	}
	if memory {
		// Each connection to ":memory:" is a database of its own.
		db.SetMaxOpenConns(1)
	}
	db.SetMaxIdleConns(maxIdleConns)
	// Open the first connection now so a bad path or a file that is not a
	// database fails here, not on the first request.
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, classify(op, err)
	}
	return &DB{db: db}, nil
}

// Dialect returns "sqlite".
func (d *DB) Dialect() string { return "sqlite" }

// Close closes the database. Closing twice is not an error.
func (d *DB) Close() error {
	if err := d.db.Close(); err != nil {
		return classify("sqlite.close", err)
	}
	return nil
}

// Exec runs a statement that returns no rows.
func (d *DB) Exec(ctx context.Context, query string, args ...any) (agentd.ExecResult, error) {
	return execOn(ctx, d.db, query, args)
}

// Query runs a query and reads its whole result.
func (d *DB) Query(ctx context.Context, query string, args ...any) (*agentd.Rows, error) {
	return queryOn(ctx, d.db, query, args)
}

// Tx runs fn in a transaction: committed if fn returns nil, rolled back if it
// returns an error (returned as is) or panics (the panic goes on).
func (d *DB) Tx(ctx context.Context, fn func(ctx context.Context, tx agentd.Querier) error) (err error) {
	const op = "sqlite.tx"
	sqlTx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return classify(op, err)
	}
	committed := false
	defer func() {
		if !committed {
			// The rollback's own error is not reported: fn's error or panic
			// is the news, and a failed rollback still ends the
			// transaction when the connection goes back to the pool.
			_ = sqlTx.Rollback()
		}
	}()
	if err := fn(ctx, tx{sqlTx}); err != nil {
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			// database/sql rolled back when ctx ended, and Commit then says
			// only sql.ErrTxDone; the context is the reason.
			return classify(op, cerr)
		}
		return classify(op, err)
	}
	committed = true
	return nil
}

// tx is the Querier a Tx's fn gets.
type tx struct{ tx *sql.Tx }

func (t tx) Exec(ctx context.Context, query string, args ...any) (agentd.ExecResult, error) {
	return execOn(ctx, t.tx, query, args)
}

func (t tx) Query(ctx context.Context, query string, args ...any) (*agentd.Rows, error) {
	return queryOn(ctx, t.tx, query, args)
}

// conn is what *sql.DB and *sql.Tx have in common.
type conn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func execOn(ctx context.Context, c conn, query string, args []any) (agentd.ExecResult, error) {
	const op = "sqlite.exec"
	if err := checkArgs(op, args); err != nil {
		return agentd.ExecResult{}, err
	}
	res, err := c.ExecContext(ctx, query, args...)
	if err != nil {
		return agentd.ExecResult{}, classify(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return agentd.ExecResult{}, classify(op, err)
	}
	return agentd.ExecResult{RowsAffected: n}, nil
}

func queryOn(ctx context.Context, c conn, query string, args []any) (*agentd.Rows, error) {
	const op = "sqlite.query"
	if err := checkArgs(op, args); err != nil {
		return nil, err
	}
	rows, err := c.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, classify(op, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, classify(op, err)
	}
	// Values is never nil, so an empty result encodes as [] rather than null.
	out := &agentd.Rows{Columns: cols, Values: [][]any{}}
	for rows.Next() {
		row := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range row {
			ptrs[i] = &row[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, classify(op, err)
		}
		for i, v := range row {
			// The driver reads an empty BLOB as a nil []byte; keep it apart
			// from NULL, which scans as an untyped nil.
			if b, ok := v.([]byte); ok && b == nil {
				row[i] = []byte{}
			}
		}
		out.Values = append(out.Values, row)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(op, err)
	}
	return out, nil
}

// checkArgs rejects arguments SQLite cannot bind, before database/sql does,
// so the error names the parameter and is KindInvalid. Slices (other than
// []byte) are the common mistake: the Postgres driver binds them as arrays,
// SQLite has no arrays.
func checkArgs(op string, args []any) error {
	for i, a := range args {
		if _, ok := a.(driver.Valuer); ok || a == nil {
			continue
		}
		v := reflect.ValueOf(a)
		if k := v.Kind(); (k == reflect.Slice || k == reflect.Array) && v.Type().Elem().Kind() != reflect.Uint8 {
			return agentd.InvalidField(op, "args", "argument $%d is a %T: SQLite cannot bind slices or arrays", i+1, a)
		}
		if _, err := driver.DefaultParameterConverter.ConvertValue(a); err != nil {
			return &agentd.Error{Kind: agentd.KindInvalid, Op: op, Field: "args", Message: fmt.Sprintf("argument $%d (%T) cannot be bound", i+1, a), Err: err}
		}
	}
	return nil
}

// classify wraps err as an *agentd.Error of the kind its cause deserves.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var ae *agentd.Error
	if errors.As(err, &ae) {
		return err
	}
	// A context error is the caller's deadline or cancellation, not a fault
	// of the store: agentd.E gives it the root's kind for that and keeps it
	// in the chain for errors.Is.
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return agentd.E("", op, err)
	}
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, driver.ErrBadConn) {
		return agentd.E(agentd.KindStorageUnavailable, op, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return agentd.E(kindOfCode(se.Code()), op, err)
	}
	// The driver reports argument mismatches as plain errors.
	msg := err.Error()
	for _, s := range []string{"missing argument", "missing named argument", "invalid driver.Value type", "sql: converting argument", "sql: expected"} {
		if strings.Contains(msg, s) {
			return agentd.E(agentd.KindInvalid, op, err)
		}
	}
	return agentd.E(agentd.KindInternal, op, err)
}

// kindOfCode maps an SQLite result code, extended or primary, to a kind.
func kindOfCode(code int) agentd.Kind {
	switch code & 0xff { // the primary code
	case sqlite3.SQLITE_CONSTRAINT:
		return agentd.KindConflict
	case sqlite3.SQLITE_ERROR, sqlite3.SQLITE_RANGE, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_AUTH:
		// SQLITE_ERROR is SQL the engine rejects: syntax, an unknown table
		// or column, a wrong number of values.
		return agentd.KindInvalid
	case sqlite3.SQLITE_TOOBIG:
		return agentd.KindTooLarge
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT,
		sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOTADB,
		sqlite3.SQLITE_READONLY, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_NOLFS,
		sqlite3.SQLITE_PERM:
		return agentd.KindStorageUnavailable
	default:
		return agentd.KindInternal
	}
}
