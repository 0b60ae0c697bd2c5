package postgres

import (
	"container/list"
	"context"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd"
	"golang.org/x/sync/singleflight"
)

// The read cache follows Cloudflare Hyperdrive: a cacheable query's result is
// fresh for MaxAge; for StaleWhileRevalidate after that it is still served,
// and the first such serve refreshes it in the background, once; after that
// it is gone and the next query misses. Concurrent misses of one query run it
// once (singleflight).
//
// What is cacheable is decided by analyzeRead (classify.go): one SELECT,
// VALUES, TABLE, SHOW or WITH statement without data-modifying CTEs, FOR
// UPDATE/SHARE or volatile functions, with arguments of types whose encoding
// is known (cacheKey), outside a Tx, not under agentd.WithoutQueryCache, and a
// result no larger than MaxResultBytes.
//
// Beyond Hyperdrive, a write made through this DB — Exec, a Query of a
// writing statement, or a committed Tx — drops the cached results that read
// a table it wrote (analyzeWrite). Results of queries whose tables cannot be
// named (they call a function the classifier does not know) are dropped by
// every write; writes whose tables cannot be named drop everything. Writes by
// other processes, triggers, cascades and functions are not seen: the
// results they change are served until max_age, as Hyperdrive would.

// Cache defaults, from Hyperdrive's.
const (
	defaultMaxAge               = 60 * time.Second
	maxMaxAge                   = time.Hour
	defaultStaleWhileRevalidate = 15 * time.Second
	defaultMaxResultBytes       = 1 << 20
	defaultMaxEntries           = 10_000
	defaultMaxBytes             = 64 << 20
)

// CacheConfig configures the read cache. Zero fields take the defaults.
type CacheConfig struct {
	// Disabled turns the cache off: every query goes to Postgres.
	Disabled bool
	// MaxAge is how long a result is served without asking Postgres again:
	// 60 s by default, at most 1 h.
	MaxAge time.Duration
	// StaleWhileRevalidate is how long after MaxAge a result is still
	// served while one background query refreshes it: 15 s by default;
	// negative for none.
	StaleWhileRevalidate time.Duration
	// MaxResultBytes is the largest result kept, as estimated in memory:
	// 1 MiB by default.
	MaxResultBytes int64
	// MaxEntries bounds the number of results kept; the least recently
	// used goes first. 10,000 by default.
	MaxEntries int
	// MaxBytes bounds the estimated memory of all results kept: 64 MiB by
	// default.
	MaxBytes int64
}

// withDefaults fills zero fields and checks the rest.
func (c CacheConfig) withDefaults() (CacheConfig, error) {
	if c.MaxAge == 0 {
		c.MaxAge = defaultMaxAge
	}
	if c.StaleWhileRevalidate == 0 {
		c.StaleWhileRevalidate = defaultStaleWhileRevalidate
	}
	if c.StaleWhileRevalidate < 0 {
		c.StaleWhileRevalidate = 0
	}
	if c.MaxResultBytes == 0 {
		c.MaxResultBytes = defaultMaxResultBytes
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = defaultMaxEntries
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = max(defaultMaxBytes, c.MaxResultBytes)
	}
	switch {
	case c.MaxAge < 0 || c.MaxAge > maxMaxAge:
		return c, fmt.Errorf("cache max age %v is out of range (0, %v]", c.MaxAge, maxMaxAge)
	case c.MaxResultBytes < 0:
		return c, fmt.Errorf("cache max result bytes %d is negative", c.MaxResultBytes)
	case c.MaxEntries < 0:
		return c, fmt.Errorf("cache max entries %d is negative", c.MaxEntries)
	case c.MaxBytes < c.MaxResultBytes:
		return c, fmt.Errorf("cache max bytes %d is less than max result bytes %d", c.MaxBytes, c.MaxResultBytes)
	}
	return c, nil
}

// maxMemoized bounds the number of SQL texts whose analysis is remembered.
// Programs run a bounded set of statements, so this is rarely reached; past
// it the memo starts over.
const maxMemoized = 4096

// memo remembers the analyses of SQL texts: lexing a query costs about as
// much as serving it from the cache. Analyses are shared and never changed.
type memo struct {
	mu     sync.RWMutex
	reads  map[string]readInfo
	writes map[string]writeInfo
}

func (m *memo) read(sql string) readInfo {
	m.mu.RLock()
	info, ok := m.reads[sql]
	m.mu.RUnlock()
	if ok {
		return info
	}
	info = analyzeRead(sql)
	m.mu.Lock()
	if m.reads == nil || len(m.reads) >= maxMemoized {
		m.reads = map[string]readInfo{}
	}
	m.reads[sql] = info
	m.mu.Unlock()
	return info
}

func (m *memo) write(sql string) writeInfo {
	m.mu.RLock()
	info, ok := m.writes[sql]
	m.mu.RUnlock()
	if ok {
		return info
	}
	info = analyzeWrite(sql)
	m.mu.Lock()
	if m.writes == nil || len(m.writes) >= maxMemoized {
		m.writes = map[string]writeInfo{}
	}
	m.writes[sql] = info
	m.mu.Unlock()
	return info
}

// fetchFunc runs a query for the cache.
type fetchFunc func(ctx context.Context) (*agentd.Rows, error)

// entry is one cached result.
type entry struct {
	key        string
	rows       *agentd.Rows // never handed out: callers get copies
	size       int64
	readAt     time.Time // when the query that produced it started
	tables     []string
	anyTable   bool
	refreshing bool // a background refresh is running or done for this entry
	elem       *list.Element
}

// queryCache is the read cache of one DB. It is safe for concurrent use.
type queryCache struct {
	cfg   CacheConfig
	clock agentd.Clock
	log   *slog.Logger
	// onRefresh, if set, is called when a background refresh ends, with its
	// error; tests wait on it instead of sleeping.
	onRefresh func(error)

	analyses memo
	flights  singleflight.Group
	// closing is cancelled by close; it stops background refreshes and
	// detached fills.
	closing context.Context
	cancel  context.CancelFunc
	bg      sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	entries  map[string]*entry
	lru      list.List // front: most recently used; values are *entry
	bytes    int64
	byTable  map[string]map[*entry]struct{}
	anyTable map[*entry]struct{}
	// Invalidation sequence numbers. Every write that invalidates
	// anything bumps seq; a fill remembers seq when its query starts and
	// keeps its result only if no write it depends on came since, so a
	// result read before a write is not stored after the write dropped
	// the entries.
	seq      uint64
	writeSeq uint64            // last write of any kind
	flushSeq uint64            // last write that dropped everything
	tableSeq map[string]uint64 // last write to each table

	hits, misses, stale, refreshes, refreshFailures, invalidations, uncacheable, evictions atomic.Int64
}

func newQueryCache(cfg CacheConfig, clock agentd.Clock, log *slog.Logger) *queryCache {
	ctx, cancel := context.WithCancel(context.Background())
	return &queryCache{
		cfg:      cfg,
		clock:    clock,
		log:      log,
		closing:  ctx,
		cancel:   cancel,
		entries:  map[string]*entry{},
		byTable:  map[string]map[*entry]struct{}{},
		anyTable: map[*entry]struct{}{},
		tableSeq: map[string]uint64{},
	}
}

// close stops background refreshes and waits for them, and empties the
// cache.
func (c *queryCache) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.bg.Wait()
	c.mu.Lock()
	c.dropAllLocked()
	c.mu.Unlock()
}

// get serves the query from the cache or runs it with fetch, keeping the
// result. key identifies the query and its arguments; info is its analysis.
func (c *queryCache) get(ctx context.Context, op, key string, info readInfo, fetch fetchFunc) (*agentd.Rows, error) {
	now := c.clock.Now()
	c.mu.Lock()
	if e := c.entries[key]; e != nil {
		age := now.Sub(e.readAt)
		switch {
		case age < c.cfg.MaxAge:
			c.lru.MoveToFront(e.elem)
			rows := e.rows
			c.mu.Unlock()
			c.hits.Add(1)
			return cloneRows(rows), nil
		case age < c.cfg.MaxAge+c.cfg.StaleWhileRevalidate:
			c.lru.MoveToFront(e.elem)
			rows := e.rows
			start := !e.refreshing && !c.closed
			if start {
				e.refreshing = true
				c.bg.Add(1)
			}
			seq := c.seq
			c.mu.Unlock()
			c.stale.Add(1)
			if start {
				go c.refresh(ctx, key, info, fetch, seq)
			}
			return cloneRows(rows), nil
		default:
			c.removeLocked(e)
		}
	}
	seq := c.seq
	c.mu.Unlock()

	ch := c.flights.DoChan(flightKey(key, seq), func() (any, error) {
		return c.fill(ctx, key, info, fetch, seq)
	})
	// Counted after joining the flight, so a test that sees n misses
	// knows n callers share it.
	c.misses.Add(1)
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return cloneRows(res.Val.(*agentd.Rows)), nil
	case <-ctx.Done():
		// The shared query goes on for the others waiting on it, bounded
		// by the query timeout.
		return nil, agentd.E("", op, ctx.Err())
	}
}

// flightKey makes the singleflight key of a fill: queries started after a
// write do not join a flight that started before it, so a caller reads its
// own writes.
func flightKey(key string, seq uint64) string {
	return strconv.FormatUint(seq, 36) + "\x00" + key
}

// fill runs a query for the cache and keeps its result. It runs detached from
// the context of the caller who started it: others may be waiting for the
// same flight, and a caller who gives up must not fail them. The query
// timeout still bounds it, and closing the DB stops it.
func (c *queryCache) fill(ctx context.Context, key string, info readInfo, fetch fetchFunc, seq uint64) (*agentd.Rows, error) {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(c.closing, cancel)
	defer stop()
	readAt := c.clock.Now()
	rows, err := fetch(fctx)
	if err != nil {
		return nil, err
	}
	c.store(key, info, rows, readAt, seq)
	return rows, nil
}

// refresh re-runs a stale entry's query in the background.
func (c *queryCache) refresh(ctx context.Context, key string, info readInfo, fetch fetchFunc, seq uint64) {
	defer c.bg.Done()
	ch := c.flights.DoChan(flightKey(key, seq), func() (any, error) {
		return c.fill(ctx, key, info, fetch, seq)
	})
	res := <-ch
	if res.Err != nil {
		c.refreshFailures.Add(1)
		c.log.Warn("postgres: background refresh of a cached query failed", "err", res.Err)
		// Let a later stale serve try again.
		c.mu.Lock()
		if e := c.entries[key]; e != nil {
			e.refreshing = false
		}
		c.mu.Unlock()
	} else {
		c.refreshes.Add(1)
	}
	if c.onRefresh != nil {
		c.onRefresh(res.Err)
	}
}

// store keeps a result read by a query that started at readAt, when the
// invalidation sequence was seq, unless it is too large or a write since then
// may have outdated it.
func (c *queryCache) store(key string, info readInfo, rows *agentd.Rows, readAt time.Time, seq uint64) {
	size := rowsSize(rows)
	if size > c.cfg.MaxResultBytes {
		c.uncacheable.Add(1)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.flushSeq > seq || info.anyTable && c.writeSeq > seq {
		return
	}
	for _, t := range info.tables {
		if c.tableSeq[t] > seq {
			return
		}
	}
	if old := c.entries[key]; old != nil {
		c.removeLocked(old)
	}
	e := &entry{key: key, rows: rows, size: size, readAt: readAt, tables: info.tables, anyTable: info.anyTable}
	e.elem = c.lru.PushFront(e)
	c.entries[key] = e
	c.bytes += size
	if e.anyTable {
		c.anyTable[e] = struct{}{}
	}
	for _, t := range e.tables {
		set := c.byTable[t]
		if set == nil {
			set = map[*entry]struct{}{}
			c.byTable[t] = set
		}
		set[e] = struct{}{}
	}
	for len(c.entries) > c.cfg.MaxEntries || c.bytes > c.cfg.MaxBytes {
		last := c.lru.Back()
		if last == nil {
			break
		}
		c.removeLocked(last.Value.(*entry))
		c.evictions.Add(1)
	}
}

// invalidate drops the results a write may have outdated.
func (c *queryCache) invalidate(w writeInfo) {
	if w.empty() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	c.writeSeq = c.seq
	if w.all {
		c.flushSeq = c.seq
		c.invalidations.Add(int64(len(c.entries)))
		c.dropAllLocked()
		return
	}
	n := 0
	for e := range c.anyTable {
		c.removeLocked(e)
		n++
	}
	for _, t := range w.tables {
		c.tableSeq[t] = c.seq
		for e := range c.byTable[t] {
			c.removeLocked(e)
			n++
		}
	}
	c.invalidations.Add(int64(n))
	// The per-table sequence numbers grow with the number of distinct
	// tables written; past a bound, forget them and treat the moment as a
	// write to everything, which only makes fills running now not store.
	if len(c.tableSeq) > 4*max(c.cfg.MaxEntries, 1024) {
		clear(c.tableSeq)
		c.flushSeq = c.seq
	}
}

func (c *queryCache) removeLocked(e *entry) {
	if c.entries[e.key] != e {
		return
	}
	delete(c.entries, e.key)
	c.lru.Remove(e.elem)
	c.bytes -= e.size
	delete(c.anyTable, e)
	for _, t := range e.tables {
		if set := c.byTable[t]; set != nil {
			delete(set, e)
			if len(set) == 0 {
				delete(c.byTable, t)
			}
		}
	}
}

func (c *queryCache) dropAllLocked() {
	clear(c.entries)
	c.lru.Init()
	c.bytes = 0
	clear(c.byTable)
	clear(c.anyTable)
}

// cacheStats reads the counters into s.
func (c *queryCache) cacheStats(s *Stats) {
	s.CacheHits = c.hits.Load()
	s.CacheMisses = c.misses.Load()
	s.CacheStaleServes = c.stale.Load()
	s.CacheRefreshes = c.refreshes.Load()
	s.CacheRefreshFailures = c.refreshFailures.Load()
	s.CacheInvalidations = c.invalidations.Load()
	s.CacheUncacheable = c.uncacheable.Load()
	s.CacheEvictions = c.evictions.Load()
	c.mu.Lock()
	s.CacheEntries = len(c.entries)
	s.CacheBytes = c.bytes
	c.mu.Unlock()
}

// cacheKey encodes a query and its arguments canonically: equal keys mean
// Postgres is sent the same statement with the same parameter values. Each
// argument is tagged with its Go type, since pgx encodes types differently.
// It reports false for arguments it cannot encode faithfully (maps, structs
// other than time.Time, channels, …) and for strings that read as the current
// time when cast to a date/time type ('now', 'today', …).
func cacheKey(sql string, args []any) (string, bool) {
	b := make([]byte, 0, len(sql)+16*len(args)+1)
	b = append(b, sql...)
	b = append(b, 0)
	for _, a := range args {
		var ok bool
		if b, ok = appendArg(b, a, 0); !ok {
			return "", false
		}
	}
	return string(b), true
}

// maxArgDepth bounds the nesting of slices and pointers in an argument.
const maxArgDepth = 8

func appendArg(b []byte, a any, depth int) ([]byte, bool) {
	if depth > maxArgDepth {
		return b, false
	}
	// The common types first, without reflection.
	switch v := a.(type) {
	case nil:
		return append(b, 'n'), true
	case string:
		if isTimeLiteral(v) {
			return b, false
		}
		return appendString(append(b, 's'), v), true
	case []byte:
		if v == nil {
			return append(b, 'n'), true
		}
		return appendString(append(b, 'x'), string(v)), true
	case int:
		return strconv.AppendInt(append(b, 'i'), int64(v), 10), true
	case int64:
		return strconv.AppendInt(append(b, 'I'), v, 10), true
	case int32:
		return strconv.AppendInt(append(b, 'j'), int64(v), 10), true
	case bool:
		if v {
			return append(b, 'T'), true
		}
		return append(b, 'F'), true
	case float64:
		return strconv.AppendUint(append(b, 'd'), math.Float64bits(v), 16), true
	case time.Time:
		// The wall clock and the offset: pgx sends the instant for
		// timestamptz and the wall clock for timestamp.
		return v.AppendFormat(append(b, 't'), time.RFC3339Nano), true
	case []string:
		if v == nil {
			return append(b, 'n'), true
		}
		b = strconv.AppendInt(append(b, 'S'), int64(len(v)), 10)
		for _, s := range v {
			if isTimeLiteral(s) {
				return b, false
			}
			b = appendString(b, s)
		}
		return b, true
	case []int64:
		if v == nil {
			return append(b, 'n'), true
		}
		b = strconv.AppendInt(append(b, 'L'), int64(len(v)), 10)
		for _, n := range v {
			b = strconv.AppendInt(append(b, ','), n, 10)
		}
		return b, true
	}
	rv := reflect.ValueOf(a)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return append(b, 'n'), true
		}
	}
	if v, ok := a.(driver.Valuer); ok {
		val, err := safeValue(v)
		if err != nil {
			return b, false
		}
		b = appendString(append(b, 'V'), rv.Type().String())
		return appendArg(b, val, depth+1)
	}
	typ := rv.Type().String()
	switch rv.Kind() {
	case reflect.Pointer:
		return appendArg(append(b, '*'), rv.Elem().Interface(), depth+1)
	case reflect.Bool:
		return strconv.AppendBool(appendString(append(b, 'k'), typ), rv.Bool()), true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(appendString(append(b, 'k'), typ), rv.Int(), 10), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.AppendUint(appendString(append(b, 'k'), typ), rv.Uint(), 10), true
	case reflect.Float32, reflect.Float64:
		return strconv.AppendUint(appendString(append(b, 'k'), typ), math.Float64bits(rv.Float()), 16), true
	case reflect.String:
		if isTimeLiteral(rv.String()) {
			return b, false
		}
		return appendString(appendString(append(b, 'k'), typ), rv.String()), true
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return append(b, 'n'), true
		}
		b = strconv.AppendInt(appendString(append(b, 'a'), typ), int64(rv.Len()), 10)
		for i := range rv.Len() {
			var ok bool
			if b, ok = appendArg(b, rv.Index(i).Interface(), depth+1); !ok {
				return b, false
			}
		}
		return b, true
	}
	return b, false
}

// appendString appends s with its length first, so no two sequences of
// strings encode alike.
func appendString(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

// safeValue calls a Valuer, which may panic on a nil receiver.
func safeValue(v driver.Valuer) (val driver.Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("Value panicked: %v", r)
		}
	}()
	return v.Value()
}

// rowsSize estimates the memory a result holds, to bound the cache.
func rowsSize(r *agentd.Rows) int64 {
	n := int64(48)
	for _, c := range r.Columns {
		n += 16 + int64(len(c))
	}
	for _, row := range r.Values {
		n += 24
		for _, v := range row {
			n += valueSize(v)
		}
	}
	return n
}

func valueSize(v any) int64 {
	switch x := v.(type) {
	case string:
		return 32 + int64(len(x))
	case []byte:
		return 40 + int64(len(x))
	case time.Time:
		return 40
	case []any:
		n := int64(40)
		for _, e := range x {
			n += valueSize(e)
		}
		return n
	default:
		return 16
	}
}

// cloneRows copies a result so a caller may change its copy without changing
// the cache's: slices are copied, and so are byte slices; strings and times
// are immutable.
func cloneRows(r *agentd.Rows) *agentd.Rows {
	out := &agentd.Rows{Columns: append([]string(nil), r.Columns...), Values: make([][]any, len(r.Values))}
	for i, row := range r.Values {
		cp := make([]any, len(row))
		for j, v := range row {
			cp[j] = cloneValue(v)
		}
		out.Values[i] = cp
	}
	return out
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case []byte:
		return append([]byte{}, x...)
	case []any:
		cp := make([]any, len(x))
		for i, e := range x {
			cp[i] = cloneValue(e)
		}
		return cp
	}
	return v
}
