package postgres

import (
	"context"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/tcpproxy"
)

// openBehindProxy opens a DB in a fresh schema whose connections go through
// a TCP proxy the test can cut.
func openBehindProxy(t *testing.T, opts ...Option) (*DB, *tcpproxy.Proxy) {
	t.Helper()
	raw, _ := testSchema(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	if _, _, err := net.SplitHostPort(target); err != nil {
		target = net.JoinHostPort(target, "5432")
	}
	p, err := tcpproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	u.Host = p.Addr()
	return openAt(t, withParam(u.String(), "query_timeout", "500ms"), opts...), p
}

func wantUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	if agentd.KindOf(err) != agentd.KindStorageUnavailable {
		t.Errorf("%s with the link cut: %v (kind %q), want KindStorageUnavailable", what, err, agentd.KindOf(err))
	}
}

func TestFaultLinkCutAndRestored(t *testing.T) {
	db, p := openBehindProxy(t)
	ctx := t.Context()
	fresh := agentd.WithoutQueryCache(ctx)
	exec(t, db, `CREATE TABLE items (id BIGINT PRIMARY KEY)`)
	exec(t, db, `INSERT INTO items (id) VALUES (1)`)
	exec(t, db, `CREATE TABLE other (id BIGINT PRIMARY KEY)`)
	// Warm the pool with several connections, all of which the cut
	// breaks.
	if err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		return db.Tx(ctx, func(ctx context.Context, tx2 agentd.Querier) error {
			_, err := db.Query(fresh, `SELECT 1`)
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	cached := one(t, ctx, db, `SELECT COUNT(*) FROM other`)

	p.Cut()
	_, err := db.Query(fresh, `SELECT id FROM items`)
	wantUnavailable(t, "Query", err)
	_, err = db.Exec(ctx, `INSERT INTO items (id) VALUES (2)`)
	wantUnavailable(t, "Exec", err)
	err = db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		_, err := tx.Exec(ctx, `INSERT INTO items (id) VALUES (3)`)
		return err
	})
	wantUnavailable(t, "Tx", err)
	for range 3 { // more than one: no dead idle connection is left to fail later
		_, err = db.Query(fresh, `SELECT 1`)
		wantUnavailable(t, "Query", err)
	}
	// A result cached before the cut is still served, as Hyperdrive
	// would.
	if v := one(t, ctx, db, `SELECT COUNT(*) FROM other`); v != cached {
		t.Errorf("cached read during the outage = %v, want %v", v, cached)
	}

	p.Restore()
	// The same DB works again, first time, without reopening.
	if _, err := db.Exec(ctx, `INSERT INTO items (id) VALUES (4)`); err != nil {
		t.Fatalf("Exec after Restore: %v", err)
	}
	rows, err := db.Query(fresh, `SELECT id FROM items ORDER BY id`)
	if err != nil {
		t.Fatalf("Query after Restore: %v", err)
	}
	// Nothing tried during the cut was written.
	if len(rows.Values) != 2 || rows.Values[0][0] != int64(1) || rows.Values[1][0] != int64(4) {
		t.Errorf("rows after Restore = %v, want [[1] [4]]", rows.Values)
	}
	if s := db.Stats(); s.PoolResets == 0 {
		t.Errorf("no pool reset counted: %+v", s)
	}
}

// TestFaultTxCutMidway cuts the link between two statements of a
// transaction: it fails, and none of it is written.
func TestFaultTxCutMidway(t *testing.T) {
	db, p := openBehindProxy(t)
	ctx := t.Context()
	exec(t, db, `CREATE TABLE items (id BIGINT PRIMARY KEY)`)
	errFn := errors.New("unreachable")
	err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		if _, err := tx.Exec(ctx, `INSERT INTO items (id) VALUES (1)`); err != nil {
			return errFn
		}
		p.Cut()
		_, err := tx.Exec(ctx, `INSERT INTO items (id) VALUES (2)`)
		wantUnavailable(t, "a statement in a Tx", err)
		return err
	})
	wantUnavailable(t, "Tx", err)
	if errors.Is(err, errFn) {
		t.Fatal("the first insert failed before the cut")
	}
	p.Restore()
	if n := one(t, agentd.WithoutQueryCache(ctx), db, `SELECT COUNT(*) FROM items`); n != int64(0) {
		t.Errorf("count after a cut Tx = %v, want 0", n)
	}
	// A cut during fn with fn returning nil: COMMIT fails, nothing
	// written.
	err = db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		if _, err := tx.Exec(ctx, `INSERT INTO items (id) VALUES (3)`); err != nil {
			return errFn
		}
		p.Cut()
		return nil
	})
	wantUnavailable(t, "COMMIT", err)
	p.Restore()
	if n := one(t, agentd.WithoutQueryCache(ctx), db, `SELECT COUNT(*) FROM items`); n != int64(0) {
		t.Errorf("count after a cut COMMIT = %v, want 0", n)
	}
}

// TestFaultOpenUnreachable: Open fails at once, as unavailable, when
// nothing answers.
func TestFaultOpenUnreachable(t *testing.T) {
	baseURL(t)
	raw, _ := testSchema(t)
	u, _ := url.Parse(raw)
	p, err := tcpproxy.Start(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Cut()
	u.Host = p.Addr()
	_, err = Open(t.Context(), u.String(), WithQueryTimeout(500*time.Millisecond))
	wantUnavailable(t, "Open", err)
}
