// Package postgres is the agentd.DB backend for a Postgres server, on pgx
// with a pgxpool connection pool, fronted by a read cache with the semantics
// of Cloudflare Hyperdrive (cache.go): non-mutating queries are cached for
// max_age (60 s), then served stale for stale_while_revalidate (15 s) while
// one background query refreshes them. Beyond Hyperdrive, a write made
// through the same DB drops the cached results that read the tables it
// wrote.
//
// Open takes a postgres:// (or postgresql://) URL as pgx does, plus
// parameters agentd reads and removes before pgx sees the URL:
//
//	cache=on|off                        the read cache (on)
//	cache_max_age=60s                   how long a result is fresh (at most 1h)
//	cache_stale_while_revalidate=15s    how long a stale result is served while refreshed (0: never)
//	cache_max_bytes=1048576             the largest result cached, in bytes
//	query_timeout=5s                    the deadline of every operation
//
// pool_max_conns (20 unless given) and the other pool_* parameters are
// pgxpool's; search_path and other unknown parameters become session
// settings. A URL parameter overrides the matching Option.
//
// Every operation — acquiring a connection, each statement, BEGIN, COMMIT —
// runs under the query timeout unless the caller's context ends sooner, so
// a lost link fails in seconds with KindStorageUnavailable instead of
// hanging. When a connection breaks the pool is reset, dropping idle
// connections that are likely broken too; the next operation dials anew,
// so the same DB works again once Postgres is back.
//
// Queries use `$1` parameters; a Go slice binds as an array, so
// `WHERE id = ANY($1)` takes a []int64 or []string. Values come back
// normalized as readRows describes. The URL's password never appears in
// errors or logs.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of the options.
const (
	defaultQueryTimeout = 5 * time.Second
	defaultMaxConns     = 20
)

// cancelGrace is how long after an operation's context ends its connection
// waits for the server to acknowledge the cancellation before it is closed.
const cancelGrace = time.Second

// DB is a pool of connections to a Postgres database with a read cache. It
// is safe for concurrent use.
type DB struct {
	pool    *pgxpool.Pool
	cache   *queryCache // nil when the cache is off
	timeout time.Duration
	log     *slog.Logger
	red     redactor
	resets  atomic.Int64

	closeOnce sync.Once
	closed    atomic.Bool
}

var _ agentd.DB = (*DB)(nil)

// Option configures Open.
type Option func(*options)

type options struct {
	clock     agentd.Clock
	cache     CacheConfig
	timeout   time.Duration
	log       *slog.Logger
	onRefresh func(error)
}

// WithClock sets the clock the cache measures the age of results by; tests
// pass a fake one. The default is the system clock.
func WithClock(c agentd.Clock) Option { return func(o *options) { o.clock = c } }

// WithCache configures the read cache; URL parameters override its fields.
func WithCache(c CacheConfig) Option { return func(o *options) { o.cache = c } }

// WithQueryTimeout sets the deadline of every operation (5 s by default),
// applied unless the caller's context has a sooner one.
func WithQueryTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithLogger sets where warnings go (a reset pool, a failed background
// refresh). The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// withRefreshHook makes the cache call f when a background refresh ends, so
// tests can wait for one without sleeping.
func withRefreshHook(f func(error)) Option { return func(o *options) { o.onRefresh = f } }

// Open connects to the database at rawURL and checks that it answers.
func Open(ctx context.Context, rawURL string, opts ...Option) (*DB, error) {
	const op = "postgres.open"
	red := newRedactor(rawURL)
	o := options{clock: agentd.SystemClock{}, timeout: defaultQueryTimeout, log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.clock == nil {
		o.clock = agentd.SystemClock{}
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	uc, err := parseURL(rawURL)
	if err != nil {
		return nil, &agentd.Error{Kind: agentd.KindInvalid, Op: op, Field: "url", Message: red.redact(err.Error())}
	}
	if uc.queryTimeout != nil {
		o.timeout = *uc.queryTimeout
	}
	if o.timeout <= 0 {
		return nil, agentd.InvalidField(op, "query_timeout", "the query timeout must be positive")
	}
	if uc.cacheOff != nil {
		o.cache.Disabled = *uc.cacheOff
	}
	if uc.maxAge != nil {
		o.cache.MaxAge = *uc.maxAge
	}
	if uc.swr != nil {
		o.cache.StaleWhileRevalidate = *uc.swr
	}
	if uc.maxBytes != nil {
		o.cache.MaxResultBytes = *uc.maxBytes
	}
	cacheCfg, err := o.cache.withDefaults()
	if err != nil {
		return nil, &agentd.Error{Kind: agentd.KindInvalid, Op: op, Field: "cache", Message: err.Error()}
	}

	cfg, err := pgxpool.ParseConfig(uc.connString)
	if err != nil {
		// pgx redacts the password it can find; red makes sure.
		return nil, &agentd.Error{Kind: agentd.KindInvalid, Op: op, Field: "url", Message: "cannot parse the Postgres URL", Err: red.err(err)}
	}
	if !uc.maxConnsSet {
		cfg.MaxConns = defaultMaxConns
	}
	// When an operation's context ends mid-statement, ask the server to
	// cancel the statement, so a query that ran out of time stops using
	// the server too, and the connection usually survives. pgx's default
	// only closes the socket, leaving the statement running. If the server
	// does not answer the cancel within cancelGrace (the link is down),
	// the socket is closed anyway.
	cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelGrace}
	}

	pool, err := pgxpool.NewWithConfig(context.WithoutCancel(ctx), cfg)
	if err != nil {
		return nil, &agentd.Error{Kind: agentd.KindInvalid, Op: op, Field: "url", Message: "cannot configure the pool", Err: red.err(err)}
	}
	d := &DB{pool: pool, timeout: o.timeout, log: o.log, red: red}
	if !cacheCfg.Disabled {
		d.cache = newQueryCache(cacheCfg, o.clock, o.log)
		d.cache.onRefresh = o.onRefresh
	}
	// Connect now, so a wrong URL or an unreachable server fails here and
	// not on the first request.
	pctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		d.Close()
		return nil, d.redact(classify(op, ctx, err, false))
	}
	o.log.Debug("postgres: opened", "url", red.redact(rawURL), "max_conns", cfg.MaxConns,
		"cache", !cacheCfg.Disabled, "query_timeout", d.timeout)
	return d, nil
}

// Dialect returns "postgres".
func (d *DB) Dialect() string { return "postgres" }

// Close stops background cache refreshes and closes the pool, waiting for
// connections in use to be released. Closing twice is not an error.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		if d.cache != nil {
			d.cache.close()
		}
		d.pool.Close()
	})
	return nil
}

// Stats is a snapshot of the DB's counters.
type Stats struct {
	// The read cache; all zero when it is off.
	CacheHits        int64 // served fresh from the cache
	CacheMisses      int64 // cacheable, but not in the cache (or past stale)
	CacheStaleServes int64 // served stale while a background refresh runs
	CacheRefreshes   int64 // background refreshes that succeeded
	// CacheRefreshFailures counts background refreshes that failed; the
	// stale result stays until it expires.
	CacheRefreshFailures int64
	CacheInvalidations   int64 // results dropped by writes through this DB
	// CacheUncacheable counts queries outside a Tx the cache could not
	// serve or keep: not cacheable statements or arguments, contexts
	// marked with agentd.WithoutQueryCache, results over the size cap.
	CacheUncacheable int64
	CacheEvictions   int64 // results dropped to stay within the bounds
	CacheEntries     int
	CacheBytes       int64 // estimated memory of the results kept

	// The pool, from pgxpool.Stat.
	AcquireCount    int64         // connections acquired
	AcquireWaits    int64         // acquires that waited: no idle connection
	AcquireWaitTime time.Duration // total time those waited
	TotalConns      int32
	IdleConns       int32
	AcquiredConns   int32
	MaxConns        int32
	PoolResets      int64 // resets after a connection broke
}

// Stats returns the counters of the cache and the pool.
func (d *DB) Stats() Stats {
	var s Stats
	if d.cache != nil {
		d.cache.cacheStats(&s)
	}
	ps := d.pool.Stat()
	s.AcquireCount = ps.AcquireCount()
	s.AcquireWaits = ps.EmptyAcquireCount()
	s.AcquireWaitTime = ps.EmptyAcquireWaitTime()
	s.TotalConns = ps.TotalConns()
	s.IdleConns = ps.IdleConns()
	s.AcquiredConns = ps.AcquiredConns()
	s.MaxConns = ps.MaxConns()
	s.PoolResets = d.resets.Load()
	return s
}

// Exec runs a statement that returns no rows, then drops the cached results
// it may have outdated.
func (d *DB) Exec(ctx context.Context, query string, args ...any) (agentd.ExecResult, error) {
	const op = "postgres.exec"
	var res agentd.ExecResult
	var execErr error
	err := d.withConn(ctx, op, func(ctx context.Context, c *pgx.Conn) error {
		tag, err := c.Exec(ctx, query, args...)
		res.RowsAffected = tag.RowsAffected()
		execErr = err
		return err
	})
	if err == nil || mayHaveRun(execErr) {
		d.invalidate(query)
	}
	if err != nil {
		return agentd.ExecResult{}, err
	}
	return res, nil
}

// Query runs a query and reads its whole result, from the cache if it may.
func (d *DB) Query(ctx context.Context, query string, args ...any) (*agentd.Rows, error) {
	const op = "postgres.query"
	if err := ctx.Err(); err != nil {
		return nil, agentd.E("", op, err)
	}
	if d.cache != nil && !agentd.QueryCacheDisabled(ctx) {
		if info := d.cache.analyses.read(query); info.cacheable {
			if key, ok := cacheKey(query, args); ok {
				return d.cache.get(ctx, op, key, info, func(ctx context.Context) (*agentd.Rows, error) {
					return d.query(ctx, op, query, args, nil)
				})
			}
		}
	}
	if d.cache != nil {
		d.cache.uncacheable.Add(1)
	}
	var queryErr error
	rows, err := d.query(ctx, op, query, args, &queryErr)
	// INSERT … RETURNING and the like come through Query too.
	if err == nil || mayHaveRun(queryErr) {
		d.invalidate(query)
	}
	return rows, err
}

// query runs a query on a pooled connection. If ran is not nil, it receives
// the error of the statement itself, nil if it never ran.
func (d *DB) query(ctx context.Context, op, query string, args []any, ran *error) (*agentd.Rows, error) {
	var out *agentd.Rows
	err := d.withConn(ctx, op, func(ctx context.Context, c *pgx.Conn) error {
		rows, err := c.Query(ctx, query, args...)
		if err == nil {
			out, err = readRows(rows)
		}
		if ran != nil {
			*ran = err
		}
		return err
	})
	return out, err
}

// mayHaveRun reports whether a statement that failed with err may still have
// changed the database: the link broke after it was sent, so it may have
// been committed with the answer lost. Postgres rejecting it, or pgx never
// sending it, changed nothing.
func mayHaveRun(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	return !errors.As(err, &pgErr) && !pgconn.SafeToRetry(err)
}

// withConn runs f on a pooled connection under the query timeout.
func (d *DB) withConn(ctx context.Context, op string, f func(ctx context.Context, c *pgx.Conn) error) error {
	if d.closed.Load() {
		return agentd.Errorf(agentd.KindStorageUnavailable, op, "the database is closed")
	}
	octx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	pc, err := d.pool.Acquire(octx)
	if err != nil {
		return d.acquireFailed(op, ctx, err)
	}
	err = f(octx, pc.Conn())
	broken := err != nil && pc.Conn().IsClosed()
	pc.Release()
	return d.failed(op, ctx, octx, err, broken)
}

// acquireFailed classifies the failure to get a connection. There is no
// connection to blame: an acquire that timed out waited for a busy pool or
// could not dial, and resetting the pool would only drop healthy
// connections.
func (d *DB) acquireFailed(op string, ctx context.Context, err error) error {
	switch {
	case d.closed.Load():
		return &agentd.Error{Kind: agentd.KindStorageUnavailable, Op: op, Message: "the database is closed", Err: err}
	case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		return d.redact(&agentd.Error{Kind: agentd.KindStorageUnavailable, Op: op,
			Message: fmt.Sprintf("no connection to Postgres within the query timeout of %v: every pooled connection is busy, or the server cannot be reached", d.timeout),
			Err:     err})
	}
	return d.redact(classify(op, ctx, err, false))
}

// redact hides the URL's password in err's cause. pgx's errors name the
// user, database and host, not the password, so this is a safety net.
func (d *DB) redact(err error) error {
	if ae, ok := err.(*agentd.Error); ok && len(d.red.secrets) > 0 {
		ae.Message = d.red.redact(ae.Message)
		ae.Err = d.red.err(ae.Err)
	}
	return err
}

// failed classifies err, and resets the pool if it broke a connection: when
// one connection to a server breaks, the idle ones usually are broken too
// (the server restarted, the link went down), and each would fail one more
// request before the pool noticed. Reset closes the idle ones now and those
// in use when they are released.
//
// ctx is the caller's context and octx the operation's, which adds the query
// timeout: if only octx ended, Postgres took longer than the timeout allows.
func (d *DB) failed(op string, ctx, octx context.Context, err error, broken bool) error {
	if err == nil {
		return nil
	}
	if ctx.Err() == nil && octx.Err() != nil {
		err = &agentd.Error{Kind: agentd.KindStorageUnavailable, Op: op,
			Message: fmt.Sprintf("Postgres did not answer within the query timeout of %v", d.timeout), Err: err}
	}
	cerr := d.redact(classify(op, ctx, err, broken))
	if broken && agentd.KindOf(cerr) == agentd.KindStorageUnavailable {
		d.resets.Add(1)
		d.pool.Reset()
		d.log.Warn("postgres: a connection broke; reset the pool", "op", op, "err", cerr)
	}
	return cerr
}

// invalidate drops the cached results a statement may have outdated.
func (d *DB) invalidate(query string) {
	if d.cache != nil {
		d.cache.invalidate(d.cache.analyses.write(query))
	}
}

// Tx runs fn in a transaction: committed if fn returns nil, rolled back if it
// returns an error (returned as is) or panics (the panic goes on). Queries
// in it bypass the cache; what it wrote is dropped from the cache when it
// commits. BEGIN, COMMIT and each statement get the query timeout; fn as a
// whole is bounded only by ctx.
func (d *DB) Tx(ctx context.Context, fn func(ctx context.Context, tx agentd.Querier) error) (err error) {
	const op = "postgres.tx"
	if d.closed.Load() {
		return agentd.Errorf(agentd.KindStorageUnavailable, op, "the database is closed")
	}
	bctx, cancel := context.WithTimeout(ctx, d.timeout)
	pc, err := d.pool.Acquire(bctx)
	if err != nil {
		cancel()
		return d.acquireFailed(op, ctx, err)
	}
	ptx, err := pc.Begin(bctx)
	if err != nil {
		broken := pc.Conn().IsClosed()
		pc.Release()
		err = d.failed(op, ctx, bctx, err, broken)
		cancel()
		return err
	}
	cancel()
	t := &tx{d: d, tx: ptx}
	done := false
	defer func() {
		if !done {
			// fn failed or panicked. The rollback's own error is not
			// reported: fn's error or panic is the news, and a failed
			// rollback closes the connection, which ends the
			// transaction on the server.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.timeout)
			_ = ptx.Rollback(rctx)
			cancel()
		}
		pc.Release()
	}()
	if err := fn(ctx, t); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	err = ptx.Commit(cctx)
	done = true
	// A failed COMMIT may still have committed (the link broke before the
	// answer came), so drop what it wrote either way.
	if d.cache != nil {
		d.cache.invalidate(t.writes)
	}
	if err != nil {
		return d.failed(op, ctx, cctx, err, pc.Conn().IsClosed())
	}
	return nil
}

// tx is the Querier a Tx's fn gets. Its statements run one at a time, so fn
// may share it between goroutines.
type tx struct {
	d      *DB
	mu     sync.Mutex
	tx     pgx.Tx
	writes writeInfo
}

func (t *tx) Exec(ctx context.Context, query string, args ...any) (agentd.ExecResult, error) {
	const op = "postgres.exec"
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.d.cache != nil {
		t.writes.merge(t.d.cache.analyses.write(query))
	}
	octx, cancel := context.WithTimeout(ctx, t.d.timeout)
	defer cancel()
	tag, err := t.tx.Exec(octx, query, args...)
	if err != nil {
		return agentd.ExecResult{}, t.d.failed(op, ctx, octx, err, t.tx.Conn().IsClosed())
	}
	return agentd.ExecResult{RowsAffected: tag.RowsAffected()}, nil
}

func (t *tx) Query(ctx context.Context, query string, args ...any) (*agentd.Rows, error) {
	const op = "postgres.query"
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.d.cache != nil {
		t.writes.merge(t.d.cache.analyses.write(query))
	}
	octx, cancel := context.WithTimeout(ctx, t.d.timeout)
	defer cancel()
	rows, err := t.tx.Query(octx, query, args...)
	if err == nil {
		var out *agentd.Rows
		if out, err = readRows(rows); err == nil {
			return out, nil
		}
	}
	return nil, t.d.failed(op, ctx, octx, err, t.tx.Conn().IsClosed())
}
