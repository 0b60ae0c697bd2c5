package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/agentd/agentd"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// classify wraps err, the failure of an operation run for a caller whose
// context is ctx, as an *agentd.Error of the kind its cause deserves. broken
// says the connection it ran on is closed now.
func classify(op string, ctx context.Context, err error, broken bool) error {
	if err == nil {
		return nil
	}
	var ae *agentd.Error
	if errors.As(err, &ae) {
		return err
	}
	// The caller's context ended: its deadline or cancellation, not a
	// fault of the store. agentd.E gives it the root's kind for that; the
	// context's error goes in the chain for errors.Is even if pgx reported
	// the interrupted read instead.
	if cerr := ctx.Err(); cerr != nil {
		if !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		return agentd.E("", op, err)
	}
	// The caller's context is alive, so a deadline is the query timeout's:
	// Postgres did not answer in time, most likely because it cannot be
	// reached.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || pgconn.Timeout(err) {
		return &agentd.Error{Kind: agentd.KindStorageUnavailable, Op: op, Message: "Postgres did not answer within the query timeout", Err: err}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return agentd.E(kindOfSQLState(pgErr.Code), op, err)
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	if broken || errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return agentd.E(agentd.KindStorageUnavailable, op, err)
	}
	if errors.Is(err, pgx.ErrTxCommitRollback) {
		// A statement in the transaction failed and fn went on to
		// return nil: Postgres rolled everything back. (SQLite would
		// have committed the other statements.)
		return &agentd.Error{Kind: agentd.KindInternal, Op: op, Message: "the transaction was rolled back because a statement in it failed", Err: err}
	}
	// pgx reports arguments it cannot send as plain errors, before sending
	// anything.
	msg := err.Error()
	for _, s := range []string{"failed to encode args", "mismatched param and argument count", "arguments, got", "unable to encode", "cannot encode"} {
		if strings.Contains(msg, s) {
			return agentd.E(agentd.KindInvalid, op, err)
		}
	}
	return agentd.E(agentd.KindInternal, op, err)
}

// kindOfSQLState maps a Postgres SQLSTATE to a kind.
// https://www.postgresql.org/docs/current/errcodes-appendix.html
func kindOfSQLState(code string) agentd.Kind {
	switch code {
	case "57014": // query_canceled: a statement_timeout or a cancel request
		return agentd.KindStorageUnavailable
	case "57P01", "57P02", "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
		return agentd.KindStorageUnavailable
	case "54000", "54001": // program_limit_exceeded, statement_too_complex
		return agentd.KindTooLarge
	}
	if len(code) < 2 {
		return agentd.KindInternal
	}
	switch code[:2] {
	case "23": // integrity constraint violation: unique, foreign key, check, not null, exclusion
		// The SQLite backend maps every constraint violation to
		// KindConflict; so does this one.
		return agentd.KindConflict
	case "40": // transaction rollback: serialization failure, deadlock
		// Another transaction got there first; retrying may succeed.
		return agentd.KindConflict
	case "42", "22", "21", "2F", "0A", "44", "34", "26":
		// Syntax or access rule (undefined table or column, …), data
		// exception (bad input value, division by zero, …), cardinality,
		// SQL routine, feature not supported, WITH CHECK OPTION, invalid
		// cursor or statement name.
		return agentd.KindInvalid
	case "08", "28", "53", "57", "58", "XX":
		// Connection exception, invalid authorization (agentd's own
		// credentials: its store is unusable, the client is not at
		// fault), insufficient resources (too many connections, disk
		// full, out of memory), operator intervention, system error,
		// internal error.
		return agentd.KindStorageUnavailable
	case "25": // invalid transaction state, e.g. read-only transaction
		return agentd.KindInvalid
	}
	return agentd.KindInternal
}
