// Package redis is agentd's shared KV backend and lock service on Redis, for
// a fleet of stateless nodes that must see one store and serialize work on
// one conversation across machines.
//
// # Data layout
//
// Every Redis key a KV uses starts with its prefix (default "agentd:kv:")
// followed by a hash tag, "{kv}:" unless the prefix already has one, so that
// all of a store's keys live in one Redis Cluster slot and one Lua script may
// touch them together. With base = prefix + "{kv}:":
//
//	base+"e:"+key  hash: v version, d value, m metadata (absent: none),
//	               x expiration in Unix ns (absent: never), w write id;
//	               a Redis TTL a little past the expiration, when it has one
//	base+"seq"     string: the version counter (INCR; never reset)
//	base+"idx"     sorted set: every key, all scores 0, for listing in byte order
//	base+"exp"     sorted set: keys with an expiration, scored by it in Unix ms,
//	               so Sweep finds the expired ones without a full scan
//
// Lua scripts update the entry, both sorted sets and the counter together.
// Expiry is decided by the store's clock to the nanosecond; the Redis TTL
// only lets Redis reclaim memory without a sweeper. Index members whose entry
// is gone are removed while listing and by Sweep.
//
// A Locker keeps, under its prefix (default "agentd:lock:", or the store's
// prefix + "lock:" for KV.Locker), per lock name n with hash tag h = FNV-1a
// of n: prefix+"{h}"+n+":l", a string holding the holder's token with a
// TTL, and prefix+"{h}"+n+":f", the fencing counter; releases are announced
// on the channel prefix+"released".
package redis

import (
	"context"
	"crypto/rand"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd"
	goredis "github.com/redis/go-redis/v9"
)

// Defaults of the options.
const (
	DefaultPrefix     = "agentd:kv:"
	defaultOpTimeout  = 5 * time.Second
	defaultSweepEvery = time.Minute
	// expiryGrace is how long Redis keeps an entry past its expiration. Expiry
	// itself is decided by the clock of the node that reads; the grace keeps
	// Redis from deleting an entry that a node whose clock runs slightly
	// behind the writer's still considers live.
	expiryGrace = 30 * time.Second
	// sweepBatch is how many expired keys one Sweep script removes, so no
	// script blocks Redis for long.
	sweepBatch = 500
	// clusterTag is the hash tag added to a prefix that has none.
	clusterTag = "{kv}:"
)

// Entry hash fields.
const (
	fieldVersion    = "v"
	fieldExpiration = "x"
	fieldMetadata   = "m"
	fieldData       = "d"
)

// KV is an agentd.KV in Redis, shared by every node that opens it with the
// same prefix. It is safe for concurrent use.
type KV struct {
	client    goredis.UniversalClient
	ownClient bool // Close closes client: OpenKV made it
	clock     agentd.Clock
	prefix    string
	opTimeout time.Duration
	scripts   kvScripts

	// Redis keys of the store (see the package comment).
	base, seqKey, idxKey, expKey string

	stopSweeper context.CancelFunc
	sweeperDone chan struct{}
	onSweep     func(removed int, err error) // test hook: after each background sweep

	closeOnce sync.Once
	closeErr  error
}

// Compile-time check that KV implements the binding.
var _ agentd.KV = (*KV)(nil)

// Option configures OpenKV. Options override the URL's parameters.
type Option func(*config)

type config struct {
	clock      agentd.Clock
	prefix     string
	opTimeout  time.Duration
	sweepEvery time.Duration
	client     goredis.UniversalClient
	onSweep    func(removed int, err error) // test hook, see export_test.go
}

// WithClock sets the source of "now" for expiry and TTLs. The default is the
// wall clock; tests pass a fake clock to test expiry without sleeping.
func WithClock(c agentd.Clock) Option {
	return func(cfg *config) {
		if c != nil {
			cfg.clock = c
		}
	}
}

// WithPrefix sets the namespace of every Redis key the store uses (default
// "agentd:kv:"; URL parameter "prefix"). Stores with different prefixes are
// independent. A prefix may carry a Redis Cluster hash tag, e.g.
// "{tenant1}:kv:", to choose the store's slot.
func WithPrefix(p string) Option {
	return func(cfg *config) { cfg.prefix = p }
}

// WithOpTimeout bounds every operation (default 5 s; URL parameter
// "op_timeout"), so a request fails fast with KindStorageUnavailable when the
// link to Redis is cut, instead of waiting for TCP to notice. A non-positive
// value keeps the default.
func WithOpTimeout(d time.Duration) Option {
	return func(cfg *config) {
		if d > 0 {
			cfg.opTimeout = d
		}
	}
}

// WithSweepInterval sets how often a background goroutine runs Sweep
// (default one minute; URL parameter "sweep_interval"); 0 disables it.
// Redis deletes expired entries itself; sweeping only drops their names from
// the listing index, which List also does for the names it passes.
func WithSweepInterval(d time.Duration) Option {
	return func(cfg *config) { cfg.sweepEvery = max(d, 0) }
}

// WithClient makes the store use client instead of connecting itself; the
// URL must then be empty, and Close leaves the client open. Enable the
// client's ContextTimeoutEnabled, or the operation timeout cannot interrupt
// a read from a dead connection.
func WithClient(c goredis.UniversalClient) Option {
	return func(cfg *config) { cfg.client = c }
}

// OpenKV connects to the Redis at rawURL,
// redis://[user:pass@]host:port/db?prefix=…&op_timeout=…&sweep_interval=…
// (rediss:// for TLS; any go-redis URL parameter, e.g. pool_size, also
// works), checks that it answers, and returns the store. The caller must
// Close it. Errors never contain the URL's credentials.
func OpenKV(ctx context.Context, rawURL string, opts ...Option) (*KV, error) {
	const op = "kv.open"
	cfg := config{
		clock:      agentd.SystemClock{},
		prefix:     DefaultPrefix,
		opTimeout:  defaultOpTimeout,
		sweepEvery: defaultSweepEvery,
	}
	secrets := urlSecrets(rawURL)
	var ropts *goredis.Options
	// The options are applied after the URL so they win over its
	// parameters, but whether one of them brings a client decides whether
	// there is a URL to parse: look first.
	probe := config{}
	for _, o := range opts {
		o(&probe)
	}
	if probe.client != nil {
		if rawURL != "" {
			return nil, agentd.InvalidField(op, "url", "pass a URL or WithClient, not both")
		}
	} else {
		var err error
		ropts, err = parseURL(rawURL, &cfg)
		if err != nil {
			return nil, &agentd.Error{Kind: agentd.KindInvalid, Op: op, Field: "url", Message: "invalid redis URL", Err: scrub(err, secrets...)}
		}
	}
	for _, o := range opts {
		o(&cfg)
	}
	base, err := storeBase(cfg.prefix)
	if err != nil {
		return nil, err
	}

	client, own := cfg.client, false
	if client == nil {
		// Without this go-redis bounds socket reads by its own ReadTimeout
		// and ignores the context's deadline.
		ropts.ContextTimeoutEnabled = true
		client, own = goredis.NewClient(ropts), true
	}
	kv := &KV{
		client:    client,
		ownClient: own,
		clock:     cfg.clock,
		prefix:    cfg.prefix,
		opTimeout: cfg.opTimeout,
		scripts:   newKVScripts(),
		base:      base,
		seqKey:    base + "seq",
		idxKey:    base + "idx",
		expKey:    base + "exp",
		onSweep:   cfg.onSweep,
	}
	err = kv.do(ctx, op, func(ctx context.Context) error {
		return client.Ping(ctx).Err()
	})
	if err != nil {
		if own {
			// The open already failed; a close error adds nothing.
			_ = client.Close()
		}
		return nil, scrub(err, secrets...)
	}
	if cfg.sweepEvery > 0 {
		sctx, cancel := context.WithCancel(context.Background())
		kv.stopSweeper = cancel
		kv.sweeperDone = make(chan struct{})
		go kv.sweepLoop(sctx, cfg.sweepEvery)
	}
	return kv, nil
}

// parseURL reads agentd's own parameters of rawURL into cfg and returns the
// go-redis options of the rest. go-redis rejects parameters it does not know,
// so agentd's are removed before it parses the URL.
func parseURL(rawURL string, cfg *config) (*goredis.Options, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	for _, name := range []string{"prefix", "op_timeout", "sweep_interval"} {
		if !q.Has(name) {
			continue
		}
		v := q.Get(name)
		q.Del(name)
		switch name {
		case "prefix":
			cfg.prefix = v
		case "op_timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("op_timeout %q is not a positive duration", v)
			}
			cfg.opTimeout = d
		case "sweep_interval":
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, fmt.Errorf("sweep_interval %q is not a duration", v)
			}
			cfg.sweepEvery = max(d, 0)
		}
	}
	u.RawQuery = q.Encode()
	return goredis.ParseURL(u.String())
}

// storeBase is the start of every Redis key of the store with this prefix:
// the prefix and a hash tag, unless the prefix has its own.
func storeBase(prefix string) (string, error) {
	i := strings.IndexByte(prefix, '{')
	if i < 0 {
		return prefix + clusterTag, nil
	}
	j := strings.IndexByte(prefix[i+1:], '}')
	switch {
	case j > 0:
		return prefix, nil // the prefix's own tag picks the slot
	case j < 0:
		// An unclosed '{': the '}' of our tag closes it, and the tag
		// (the prefix's tail plus "{kv") is still common to all keys.
		return prefix + clusterTag, nil
	}
	// "{}" makes Redis hash whole keys, which would scatter the store.
	return "", agentd.InvalidField("kv.open", "prefix", "prefix %q has an empty hash tag {}", prefix)
}

// Close stops the sweeper and, if OpenKV connected, closes the connections.
// Calling it again returns the first call's result. A Locker made by
// KV.Locker uses the same connections: close it first.
func (kv *KV) Close() error {
	kv.closeOnce.Do(func() {
		if kv.stopSweeper != nil {
			kv.stopSweeper()
			<-kv.sweeperDone
		}
		if kv.ownClient {
			if err := kv.client.Close(); err != nil {
				kv.closeErr = agentd.E(agentd.KindStorageUnavailable, "kv.close", err)
			}
		}
	})
	return kv.closeErr
}

// Get returns the entry of key, or an error of KindNotFound if it is absent
// or expired.
func (kv *KV) Get(ctx context.Context, key string) (agentd.KVEntry, error) {
	const op = "kv.get"
	if err := agentd.ValidateKVKey(key); err != nil {
		return agentd.KVEntry{}, err
	}
	var entry agentd.KVEntry
	found := false
	err := kv.do(ctx, op, func(ctx context.Context) error {
		vals, err := kv.client.HMGet(ctx, kv.entryKey(key), fieldVersion, fieldExpiration, fieldMetadata, fieldData).Result()
		if err != nil {
			return err
		}
		rec, ok, err := decodeEntry(op, key, vals)
		if err != nil || !ok || agentd.Expired(rec.Expiration, kv.clock.Now()) {
			return err
		}
		found = true
		entry = rec
		return nil
	})
	if err != nil {
		return agentd.KVEntry{}, err
	}
	if !found {
		return agentd.KVEntry{}, agentd.Errorf(agentd.KindNotFound, op, "key %q not found", key)
	}
	return entry, nil
}

// Put writes value under key, replacing any entry, with a new version.
func (kv *KV) Put(ctx context.Context, key string, value []byte, opts agentd.KVPutOptions) error {
	_, err := kv.write(ctx, "kv.put", key, "", value, opts)
	return err
}

// CompareAndSwap writes value under key only if the key's current version is
// expect (0: absent or expired) and returns the new version. One Lua script
// checks and writes, so nothing can come between.
func (kv *KV) CompareAndSwap(ctx context.Context, key string, expect uint64, value []byte, opts agentd.KVPutOptions) (uint64, error) {
	return kv.write(ctx, "kv.cas", key, strconv.FormatUint(expect, 10), value, opts)
}

// write runs writeScript; expect is "" for an unconditional Put.
func (kv *KV) write(ctx context.Context, op, key, expect string, value []byte, opts agentd.KVPutOptions) (uint64, error) {
	id, err := writeID()
	if err != nil {
		return 0, agentd.E(agentd.KindInternal, op, err)
	}
	return kv.writeAs(ctx, op, id, key, expect, value, opts)
}

// writeAs is write with the write id given, so a test can replay a call as
// go-redis does when it retries.
func (kv *KV) writeAs(ctx context.Context, op, id, key, expect string, value []byte, opts agentd.KVPutOptions) (uint64, error) {
	now := kv.clock.Now()
	exp, err := agentd.ValidateKVPut(key, value, opts, now)
	if err != nil {
		return 0, err
	}
	if !exp.IsZero() && !representable(exp) {
		return 0, agentd.InvalidField(op, "expiration", "expiration must be before the year 2262")
	}
	var expNanos, expScore string
	var ttlMillis int64
	if !exp.IsZero() {
		expNanos = strconv.FormatInt(exp.UnixNano(), 10)
		expScore = strconv.FormatInt(exp.UnixMilli(), 10)
		// Relative to the store's clock, not an absolute PEXPIREAT: with a
		// clock that is not Redis's (a test's fake clock, a skewed node)
		// an absolute time could make Redis drop the entry at once.
		// Sub saturates instead of overflowing; +1 rounds up.
		ttlMillis = exp.Sub(now).Milliseconds() + 1 + expiryGrace.Milliseconds()
	}
	var version uint64
	err = kv.do(ctx, op, func(ctx context.Context) error {
		keys := []string{kv.seqKey, kv.idxKey, kv.expKey, kv.entryKey(key)}
		res, err := kv.scripts.write.Run(ctx, kv.client, keys,
			key, expect, strconv.FormatInt(now.UnixNano(), 10), id,
			value, []byte(opts.Metadata), expNanos, expScore, ttlMillis).Slice()
		if err != nil {
			return err
		}
		ok, v, err := writeReply(op, res)
		if err != nil {
			return err
		}
		if !ok {
			if v == 0 {
				return agentd.Errorf(agentd.KindConflict, op, "key %q is absent, not at version %s", key, expect)
			}
			return agentd.Errorf(agentd.KindConflict, op, "key %q is at version %d, not %s", key, v, expect)
		}
		version = v
		return nil
	})
	return version, err
}

// Delete removes key. Deleting an absent key is not an error.
func (kv *KV) Delete(ctx context.Context, key string) error {
	const op = "kv.delete"
	if err := agentd.ValidateKVKey(key); err != nil {
		return err
	}
	return kv.do(ctx, op, func(ctx context.Context) error {
		// MULTI/EXEC: the entry and its index members go together.
		_, err := kv.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.Del(ctx, kv.entryKey(key))
			p.ZRem(ctx, kv.idxKey, key)
			p.ZRem(ctx, kv.expKey, key)
			return nil
		})
		return err
	})
}

// List returns the live keys with opts.Prefix in UTF-8 byte order, starting
// after the key the cursor names.
//
// It walks the key index, whose members all have score 0, so Redis orders
// them by their bytes (memcmp), which is UTF-8 byte order. Names whose entry
// is expired or gone are skipped and pruned from the index; the walk goes on
// until the page is full and one more live key shows there is a next page,
// so a complete listing never ends with an empty page and, with only live
// keys, every page but the last is full.
func (kv *KV) List(ctx context.Context, opts agentd.KVListOptions) (agentd.KVListResult, error) {
	const op = "kv.list"
	opts, err := agentd.NormalizeKVList(opts)
	if err != nil {
		return agentd.KVListResult{}, err
	}
	after, err := agentd.DecodeCursor(opts.Cursor)
	if err != nil {
		return agentd.KVListResult{}, err
	}
	// Start at the later of the prefix and the key after the cursor's: a
	// cursor before the prefix must not list keys outside it.
	lo := "-"
	switch {
	case after != "" && after >= opts.Prefix:
		lo = "(" + after
	case opts.Prefix != "":
		lo = "[" + opts.Prefix
	}
	hi := "+"
	if end, ok := prefixEnd(opts.Prefix); ok {
		hi = "(" + end
	}

	res := agentd.KVListResult{Keys: []agentd.KVKey{}, ListComplete: true}
	err = kv.do(ctx, op, func(ctx context.Context) error {
		now := kv.clock.Now()
		for {
			want := opts.Limit + 1 - len(res.Keys)
			names, err := kv.client.ZRangeArgs(ctx, goredis.ZRangeArgs{
				Key: kv.idxKey, Start: lo, Stop: hi, ByLex: true, Count: int64(want),
			}).Result()
			if err != nil {
				return err
			}
			if len(names) == 0 {
				return nil
			}
			cmds := make([]*goredis.SliceCmd, len(names))
			_, err = kv.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
				for i, name := range names {
					cmds[i] = p.HMGet(ctx, kv.entryKey(name), fieldVersion, fieldExpiration, fieldMetadata)
				}
				return nil
			})
			if err != nil {
				return err
			}
			var dead []string
			for i, name := range names {
				if !strings.HasPrefix(name, opts.Prefix) {
					return nil // past the prefix: prefixEnd makes this unreachable
				}
				rec, ok, err := decodeEntry(op, name, cmds[i].Val())
				if err != nil {
					return err
				}
				if !ok || agentd.Expired(rec.Expiration, now) {
					dead = append(dead, name)
					continue
				}
				if len(res.Keys) == opts.Limit {
					// A live key follows a full page: there is more.
					res.ListComplete = false
					res.Cursor = agentd.EncodeCursor(res.Keys[len(res.Keys)-1].Name)
					break
				}
				res.Keys = append(res.Keys, agentd.KVKey{Name: name, Expiration: rec.Expiration, Metadata: rec.Metadata})
			}
			if len(dead) > 0 {
				// Best effort: pruning only saves later listings the
				// skipping, and the page is right without it.
				_, _ = kv.prune(ctx, now, dead)
			}
			if !res.ListComplete || len(names) < want {
				return nil
			}
			lo = "(" + names[len(names)-1]
		}
	})
	if err != nil {
		return agentd.KVListResult{}, err
	}
	return res, nil
}

// Sweep removes the entries that have expired by the store's clock, with
// their index members, and returns how many it removed. It reads the expiry
// index, so its cost follows the number of expired keys, not of all keys.
// It stops between batches when ctx is done, returning the count so far
// with the context's error.
func (kv *KV) Sweep(ctx context.Context) (int, error) {
	const op = "kv.sweep"
	total := 0
	var offset int64 // expiry-index members examined and kept
	for {
		var batch []string
		err := kv.do(ctx, op, func(ctx context.Context) error {
			now := kv.clock.Now()
			var err error
			batch, err = kv.client.ZRangeArgs(ctx, goredis.ZRangeArgs{
				Key: kv.expKey, Start: "-inf", Stop: strconv.FormatInt(now.UnixMilli(), 10),
				ByScore: true, Offset: offset, Count: sweepBatch,
			}).Result()
			if err != nil || len(batch) == 0 {
				return err
			}
			n, err := kv.prune(ctx, now, batch)
			if err != nil {
				return err
			}
			total += n
			// Scores are milliseconds and expiry is exact to the
			// nanosecond, so a member can be due by its score and still
			// live; step over the ones kept.
			offset += int64(len(batch) - n)
			return nil
		})
		if err != nil {
			return total, err
		}
		if len(batch) < sweepBatch {
			return total, nil
		}
	}
}

// sweepLoop runs Sweep every interval until ctx is cancelled by Close.
func (kv *KV) sweepLoop(ctx context.Context, every time.Duration) {
	defer close(kv.sweeperDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Errors are dropped: expired keys already read as absent, and
			// the next tick retries.
			n, err := kv.Sweep(ctx)
			if ctx.Err() != nil {
				return // Close interrupted the sweep
			}
			if kv.onSweep != nil {
				kv.onSweep(n, err)
			}
		}
	}
}

// prune runs pruneScript on names and returns how many it removed.
func (kv *KV) prune(ctx context.Context, now time.Time, names []string) (int, error) {
	keys := make([]string, 0, len(names)+2)
	keys = append(keys, kv.idxKey, kv.expKey)
	args := make([]any, 0, len(names)+1)
	args = append(args, strconv.FormatInt(now.UnixNano(), 10))
	for _, name := range names {
		keys = append(keys, kv.entryKey(name))
		args = append(args, name)
	}
	n, err := kv.scripts.prune.Run(ctx, kv.client, keys, args...).Int()
	return n, err
}

// do runs fn with the operation timeout and classifies its error. A context
// that is already done fails before anything is sent, so a cancelled write
// never reaches Redis.
func (kv *KV) do(ctx context.Context, op string, fn func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return agentd.E("", op, err)
	}
	opCtx, cancel := context.WithTimeout(ctx, kv.opTimeout)
	defer cancel()
	return classify(ctx, opCtx, op, kv.opTimeout, fn(opCtx))
}

func (kv *KV) entryKey(key string) string { return kv.base + "e:" + key }

// decodeEntry reads the reply of HMGET v x m [d]. ok is false when the entry
// does not exist.
func decodeEntry(op, key string, vals []any) (e agentd.KVEntry, ok bool, err error) {
	if len(vals) < 3 || vals[0] == nil {
		return e, false, nil
	}
	str := func(v any) (string, bool) { s, ok := v.(string); return s, ok }
	vs, okv := str(vals[0])
	version, perr := strconv.ParseUint(vs, 10, 64)
	if !okv || perr != nil || version == 0 {
		return e, false, corrupt(op, key)
	}
	e = agentd.KVEntry{Key: key, Version: version}
	if vals[1] != nil {
		xs, okx := str(vals[1])
		x, perr := strconv.ParseInt(xs, 10, 64)
		if !okx || perr != nil {
			return e, false, corrupt(op, key)
		}
		e.Expiration = time.Unix(0, x).UTC()
	}
	if vals[2] != nil {
		ms, okm := str(vals[2])
		if !okm {
			return e, false, corrupt(op, key)
		}
		e.Metadata = []byte(ms)
	}
	if len(vals) > 3 {
		ds, okd := str(vals[3])
		if !okd {
			return e, false, corrupt(op, key)
		}
		// A fresh slice, never nil, so an empty value reads as empty
		// rather than absent.
		e.Value = []byte(ds)
	}
	return e, true, nil
}

// writeReply reads writeScript's {ok, version} reply.
func writeReply(op string, res []any) (ok bool, version uint64, err error) {
	if len(res) == 2 {
		flag, okf := res[0].(int64)
		vs, okv := res[1].(string)
		if okf && okv {
			if v, perr := strconv.ParseUint(vs, 10, 64); perr == nil {
				return flag == 1, v, nil
			}
		}
	}
	return false, 0, agentd.Errorf(agentd.KindInternal, op, "unexpected reply from redis: %v", res)
}

// writeID returns a random id for one write call (see writeScript).
func writeID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return string(b[:]), nil
}

// prefixEnd returns the least string greater than every string with prefix
// p, for an exclusive upper bound; false when there is none (p is empty or
// all 0xff bytes).
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// representable reports whether t fits an int64 of Unix nanoseconds (up to
// the year 2262); beyond it UnixNano would wrap.
func representable(t time.Time) bool {
	return !t.After(time.Unix(0, math.MaxInt64))
}

// corrupt is the error for an entry this package cannot decode.
func corrupt(op, key string) error {
	return agentd.Errorf(agentd.KindInternal, op, "stored entry of key %q is corrupt", key)
}
