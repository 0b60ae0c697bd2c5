// Package bolt is agentd's embedded KV backend: an agentd.KV kept in a single
// bbolt file, for a runtime that runs on one machine with no external
// services.
//
// The file holds one bucket of entries. Each bolt value is a record: a fixed
// binary header (version, expiration, metadata length), then the metadata,
// then the value. Versions come from the bucket's sequence, so they are never
// reused, even after a key is deleted and written again. Expired records read
// as absent at once; a background sweeper (and Sweep) deletes them from the
// file later, so expiry never depends on the sweeper having run.
//
// bbolt allows one writer at a time, which is what makes CompareAndSwap
// atomic, and locks the file, so only one process can open it.
package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentd/agentd"
	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// entriesBucket is the name of the bucket that holds every entry.
const entriesBucket = "entries"

// Defaults of the options.
const (
	defaultSweepInterval = time.Minute
	// defaultLockTimeout bounds the wait for the file lock: a second process
	// opening the same file fails with a clear error instead of hanging.
	defaultLockTimeout = time.Second
	// sweepScanBatch is how many records one sweep batch examines. Batches
	// keep each transaction short, so a large file neither pins one long
	// read transaction nor makes writers wait for a whole-file scan.
	sweepScanBatch = 10_000
)

// KV is an agentd.KV in a bbolt file. It is safe for concurrent use.
type KV struct {
	db    *bbolt.DB
	clock agentd.Clock
	// sweepBatch is how many records one sweep transaction examines;
	// sweepScanBatch except in tests, which shrink it to cover batching.
	sweepBatch int

	// stopSweeper cancels the sweeper's context and sweeperDone is closed
	// when it has returned; both are nil when sweeping is disabled.
	stopSweeper context.CancelFunc
	sweeperDone chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Compile-time check that KV implements the binding.
var _ agentd.KV = (*KV)(nil)

// Option configures Open.
type Option func(*config)

type config struct {
	clock         agentd.Clock
	sweepInterval time.Duration
	lockTimeout   time.Duration
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

// WithSweepInterval sets how often a background goroutine deletes expired
// records from the file. The default is one minute; 0 (or less) disables the
// sweeper, leaving deletion to explicit Sweep calls. Expired keys read as
// absent either way: sweeping only reclaims space.
func WithSweepInterval(d time.Duration) Option {
	return func(cfg *config) { cfg.sweepInterval = max(d, 0) }
}

// WithLockTimeout sets how long Open waits for another process to release the
// file lock before failing. The default is one second. A non-positive value
// keeps the default: waiting forever is what this bound exists to prevent.
func WithLockTimeout(d time.Duration) Option {
	return func(cfg *config) {
		if d > 0 {
			cfg.lockTimeout = d
		}
	}
}

// Open opens (creating it and its parent directories if needed) the KV file at
// path. If another process holds the file, Open fails after the lock timeout
// with an error of KindStorageUnavailable. The caller must Close the KV.
func Open(path string, opts ...Option) (*KV, error) {
	const op = "kv.open"
	cfg := config{
		clock:         agentd.SystemClock{},
		sweepInterval: defaultSweepInterval,
		lockTimeout:   defaultLockTimeout,
	}
	for _, o := range opts {
		o(&cfg)
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, agentd.E(agentd.KindStorageUnavailable, op, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: cfg.lockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, &agentd.Error{
			Kind:    agentd.KindStorageUnavailable,
			Op:      op,
			Message: fmt.Sprintf("%s is locked by another process (waited %s)", path, cfg.lockTimeout),
			Err:     err,
		}
	}
	if err != nil {
		return nil, agentd.E(agentd.KindStorageUnavailable, op, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(entriesBucket))
		return err
	})
	if err != nil {
		// The open already failed; the close error adds nothing a caller
		// could act on.
		_ = db.Close()
		return nil, agentd.E(agentd.KindStorageUnavailable, op, err)
	}

	s := &KV{db: db, clock: cfg.clock, sweepBatch: sweepScanBatch}
	if cfg.sweepInterval > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopSweeper = cancel
		s.sweeperDone = make(chan struct{})
		go s.sweepLoop(ctx, cfg.sweepInterval)
	}
	return s, nil
}

// Close stops the sweeper, waiting for a sweep in progress to stop, and closes
// the file. Calling it again returns the first call's result.
func (s *KV) Close() error {
	s.closeOnce.Do(func() {
		if s.stopSweeper != nil {
			s.stopSweeper()
			<-s.sweeperDone
		}
		if err := s.db.Close(); err != nil {
			s.closeErr = agentd.E(agentd.KindStorageUnavailable, "kv.close", err)
		}
	})
	return s.closeErr
}

// Get returns the entry of key, or an error of KindNotFound if it is absent
// or expired.
func (s *KV) Get(ctx context.Context, key string) (agentd.KVEntry, error) {
	const op = "kv.get"
	if err := agentd.ValidateKVKey(key); err != nil {
		return agentd.KVEntry{}, err
	}
	var entry agentd.KVEntry
	found := false
	err := s.view(ctx, op, func(b *bbolt.Bucket) error {
		rec := b.Get([]byte(key))
		if rec == nil {
			return nil
		}
		h, ok := decodeHeader(rec)
		if !ok {
			return corrupt(op, key)
		}
		exp := h.expirationTime()
		if agentd.Expired(exp, s.clock.Now()) {
			return nil
		}
		found = true
		entry = agentd.KVEntry{
			Key:        key,
			Value:      h.value(rec),
			Metadata:   h.metadata(rec),
			Expiration: exp,
			Version:    h.version,
		}
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
func (s *KV) Put(ctx context.Context, key string, value []byte, opts agentd.KVPutOptions) error {
	const op = "kv.put"
	rec, err := s.prepare(op, key, value, opts)
	if err != nil {
		return err
	}
	return s.update(ctx, op, func(b *bbolt.Bucket) error {
		_, err := stamp(b, key, rec)
		return err
	})
}

// CompareAndSwap writes value under key only if the key's current version is
// expect (0: absent or expired) and returns the new version. bbolt runs one
// write transaction at a time, so the check and the write are atomic.
func (s *KV) CompareAndSwap(ctx context.Context, key string, expect uint64, value []byte, opts agentd.KVPutOptions) (uint64, error) {
	const op = "kv.cas"
	rec, err := s.prepare(op, key, value, opts)
	if err != nil {
		return 0, err
	}
	var version uint64
	err = s.update(ctx, op, func(b *bbolt.Bucket) error {
		var current uint64
		if old := b.Get([]byte(key)); old != nil {
			h, ok := decodeHeader(old)
			if !ok {
				return corrupt(op, key)
			}
			// An expired entry counts as absent, as it does for Get.
			if !agentd.Expired(h.expirationTime(), s.clock.Now()) {
				current = h.version
			}
		}
		if current != expect {
			if current == 0 {
				return agentd.Errorf(agentd.KindConflict, op, "key %q is absent, not at version %d", key, expect)
			}
			return agentd.Errorf(agentd.KindConflict, op, "key %q is at version %d, not %d", key, current, expect)
		}
		var err error
		version, err = stamp(b, key, rec)
		return err
	})
	if err != nil {
		return 0, err
	}
	return version, nil
}

// Delete removes key. Deleting an absent key is not an error.
func (s *KV) Delete(ctx context.Context, key string) error {
	const op = "kv.delete"
	if err := agentd.ValidateKVKey(key); err != nil {
		return err
	}
	return s.update(ctx, op, func(b *bbolt.Bucket) error {
		return b.Delete([]byte(key))
	})
}

// List returns the live keys with opts.Prefix in UTF-8 byte order (bolt's key
// order), starting after the key the cursor names.
func (s *KV) List(ctx context.Context, opts agentd.KVListOptions) (agentd.KVListResult, error) {
	const op = "kv.list"
	opts, err := agentd.NormalizeKVList(opts)
	if err != nil {
		return agentd.KVListResult{}, err
	}
	after, err := agentd.DecodeCursor(opts.Cursor)
	if err != nil {
		return agentd.KVListResult{}, err
	}
	prefix := []byte(opts.Prefix)

	res := agentd.KVListResult{Keys: []agentd.KVKey{}, ListComplete: true}
	err = s.view(ctx, op, func(b *bbolt.Bucket) error {
		now := s.clock.Now()
		c := b.Cursor()
		var k, v []byte
		// Start at the later of the prefix and the key after the cursor's:
		// a cursor before the prefix must not list keys outside it.
		if after != "" && after >= opts.Prefix {
			k, v = c.Seek([]byte(after))
			if k != nil && string(k) == after {
				k, v = c.Next()
			}
		} else {
			k, v = c.Seek(prefix)
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			h, ok := decodeHeader(v)
			if !ok {
				return corrupt(op, string(k))
			}
			exp := h.expirationTime()
			if agentd.Expired(exp, now) {
				continue
			}
			if len(res.Keys) == opts.Limit {
				// A live key follows a full page: there is more. Looking
				// ahead this way means a complete listing never ends with
				// an empty page.
				last := res.Keys[len(res.Keys)-1].Name
				res.ListComplete = false
				res.Cursor = agentd.EncodeCursor(last)
				return nil
			}
			res.Keys = append(res.Keys, agentd.KVKey{
				Name:       string(k), // string() copies out of the bolt page
				Expiration: exp,
				Metadata:   h.metadata(v),
			})
		}
		return nil
	})
	if err != nil {
		return agentd.KVListResult{}, err
	}
	return res, nil
}

// Sweep deletes the expired records now and returns how many it deleted.
//
// It scans in batches: a read transaction finds the expired keys of a batch
// and, only if there are some, a short write transaction deletes them. So an
// idle store costs no writes, and writers are never held up for a whole-file
// scan. It stops between batches when ctx is done, returning the count so far
// with the context's error.
func (s *KV) Sweep(ctx context.Context) (int, error) {
	const op = "kv.sweep"
	total := 0
	var resume []byte // the last key examined; nil: start at the first key
	for {
		var expired [][]byte
		var finished bool
		err := s.view(ctx, op, func(b *bbolt.Bucket) error {
			now := s.clock.Now()
			c := b.Cursor()
			var k, v []byte
			if resume == nil {
				k, v = c.First()
			} else if k, v = c.Seek(resume); k != nil && bytes.Equal(k, resume) {
				k, v = c.Next()
			}
			var last []byte
			for range s.sweepBatch {
				if k == nil {
					break
				}
				// A record that cannot be decoded is left alone: the
				// sweeper must not destroy data it does not understand.
				if h, ok := decodeHeader(v); ok && agentd.Expired(h.expirationTime(), now) {
					expired = append(expired, clone(k))
				}
				last = k
				k, v = c.Next()
			}
			finished = k == nil
			if last != nil {
				resume = clone(last)
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		if len(expired) > 0 {
			var deleted int
			err := s.update(ctx, op, func(b *bbolt.Bucket) error {
				now := s.clock.Now()
				for _, key := range expired {
					// Check again: the key may have been written anew
					// since the scan.
					rec := b.Get(key)
					if rec == nil {
						continue
					}
					if h, ok := decodeHeader(rec); !ok || !agentd.Expired(h.expirationTime(), now) {
						continue
					}
					if err := b.Delete(key); err != nil {
						return err
					}
					deleted++
				}
				return nil
			})
			if err != nil {
				// A failed transaction, even one failing at commit,
				// deleted nothing, so only committed batches count.
				return total, err
			}
			total += deleted
		}
		if finished {
			return total, nil
		}
	}
}

// sweepLoop runs Sweep every interval until ctx is cancelled by Close.
func (s *KV) sweepLoop(ctx context.Context, every time.Duration) {
	defer close(s.sweeperDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Errors are dropped: expired keys already read as absent, so
			// a failed sweep only delays reclaiming space, and the next
			// tick retries.
			_, _ = s.Sweep(ctx)
		}
	}
}

// prepare validates a write and encodes its record outside the transaction,
// so copying a value of up to 25 MiB does not hold bolt's writer lock. The
// version is filled in by stamp.
func (s *KV) prepare(op, key string, value []byte, opts agentd.KVPutOptions) ([]byte, error) {
	exp, err := agentd.ValidateKVPut(key, value, opts, s.clock.Now())
	if err != nil {
		return nil, err
	}
	if !representable(exp) {
		return nil, agentd.InvalidField(op, "expiration", "expiration must be before the year 2262")
	}
	return encodeRecord(0, exp, opts.Metadata, value), nil
}

// stamp gives rec the bucket's next sequence number as its version and stores
// it. The sequence only grows, so versions are never reused.
func stamp(b *bbolt.Bucket, key string, rec []byte) (uint64, error) {
	version, err := b.NextSequence()
	if err != nil {
		return 0, err
	}
	setVersion(rec, version)
	return version, b.Put([]byte(key), rec)
}

// view runs fn in a read transaction on the entries bucket.
func (s *KV) view(ctx context.Context, op string, fn func(*bbolt.Bucket) error) error {
	if err := ctx.Err(); err != nil {
		return agentd.E("", op, err)
	}
	return classify(op, s.db.View(func(tx *bbolt.Tx) error {
		return fn(tx.Bucket([]byte(entriesBucket)))
	}))
}

// update runs fn in a write transaction on the entries bucket; an error from
// fn rolls it back.
func (s *KV) update(ctx context.Context, op string, fn func(*bbolt.Bucket) error) error {
	if err := ctx.Err(); err != nil {
		return agentd.E("", op, err)
	}
	return classify(op, s.db.Update(func(tx *bbolt.Tx) error {
		return fn(tx.Bucket([]byte(entriesBucket)))
	}))
}

// classify passes on the *agentd.Error a transaction function returned and
// wraps anything else, which comes from bbolt or the file system, as
// KindStorageUnavailable.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var ae *agentd.Error
	if errors.As(err, &ae) {
		return err
	}
	return agentd.E(agentd.KindStorageUnavailable, op, err)
}

// corrupt is the error for a record this package cannot decode.
func corrupt(op, key string) error {
	return agentd.Errorf(agentd.KindInternal, op, "stored record of key %q is corrupt", key)
}
