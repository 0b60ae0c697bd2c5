package bolt_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/store/bolt"
	"github.com/agentd/agentd/store/storetest"
	"github.com/jonboulle/clockwork"
	bbolt "go.etcd.io/bbolt"
)

func TestKVConformance(t *testing.T) {
	storetest.TestKV(t, func(t *testing.T, clock agentd.Clock) agentd.KV {
		// The sweeper is off: the suite checks that expiry works without
		// it. TestBackgroundSweeper covers the sweeper.
		return open(t, filepath.Join(t.TempDir(), "kv.db"), bolt.WithClock(clock), bolt.WithSweepInterval(0))
	})
}

// open opens a store for the test and closes it when the test ends.
func open(t testing.TB, path string, opts ...bolt.Option) *bolt.KV {
	t.Helper()
	kv, err := bolt.Open(path, opts...)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := kv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return kv
}

func testClock() *clockwork.FakeClock {
	return clockwork.NewFakeClockAt(time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC))
}

func put(t *testing.T, kv agentd.KV, key, value string, opts agentd.KVPutOptions) {
	t.Helper()
	if err := kv.Put(t.Context(), key, []byte(value), opts); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func rawCount(t *testing.T, kv *bolt.KV) int {
	t.Helper()
	n, err := bolt.RawCount(t.Context(), kv)
	if err != nil {
		t.Fatalf("RawCount: %v", err)
	}
	return n
}

// fileCount counts the records in a closed store's file with bbolt itself,
// independent of this package's code.
func fileCount(t *testing.T, path string) int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("bbolt.Open: %v", err)
	}
	defer db.Close()
	n := 0
	err = db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("entries"))
		if b == nil {
			return fmt.Errorf("no entries bucket")
		}
		return b.ForEach(func(k, v []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatalf("counting records: %v", err)
	}
	return n
}

func TestSweep(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	clock := testClock()
	kv, err := bolt.Open(path, bolt.WithClock(clock), bolt.WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	// Batches of 3 records: the sweep spans several transactions and must
	// resume after the last key it examined, deleted or not.
	bolt.SetSweepBatch(kv, 3)

	for i := range 10 {
		var opts agentd.KVPutOptions
		switch i % 3 {
		case 0:
			opts.ExpirationTTL = time.Minute
		case 1:
			opts.ExpirationTTL = time.Hour
		}
		put(t, kv, fmt.Sprintf("k%02d", i), "v", opts)
	}
	if n, err := kv.Sweep(t.Context()); err != nil || n != 0 {
		t.Fatalf("Sweep before any expiry = %d, %v; want 0", n, err)
	}
	clock.Advance(time.Minute)
	if n := rawCount(t, kv); n != 10 {
		t.Fatalf("%d records before the sweep, want 10 (expired ones still on disk)", n)
	}
	n, err := kv.Sweep(t.Context())
	if err != nil || n != 4 { // k00, k03, k06, k09
		t.Fatalf("Sweep = %d, %v; want 4", n, err)
	}
	if n := rawCount(t, kv); n != 6 {
		t.Errorf("%d records after the sweep, want 6", n)
	}
	if n, err := kv.Sweep(t.Context()); err != nil || n != 0 {
		t.Errorf("second Sweep = %d, %v; want 0", n, err)
	}
	clock.Advance(time.Hour)
	if n, err := kv.Sweep(t.Context()); err != nil || n != 3 {
		t.Errorf("Sweep after an hour = %d, %v; want 3", n, err)
	}
	for _, k := range []string{"k02", "k05", "k08"} {
		if _, err := kv.Get(t.Context(), k); err != nil {
			t.Errorf("Get(%q) of a key without expiry after sweeping: %v", k, err)
		}
	}
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}
	if n := fileCount(t, path); n != 3 {
		t.Errorf("the file holds %d records, want 3", n)
	}
}

func TestSweepCancelled(t *testing.T) {
	kv := open(t, filepath.Join(t.TempDir(), "kv.db"), bolt.WithSweepInterval(0))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := kv.Sweep(ctx); err == nil {
		t.Error("Sweep with a cancelled context: no error")
	}
}

func TestBackgroundSweeper(t *testing.T) {
	clock := testClock()
	kv := open(t, filepath.Join(t.TempDir(), "kv.db"), bolt.WithClock(clock), bolt.WithSweepInterval(time.Millisecond))
	for i := range 20 {
		put(t, kv, fmt.Sprintf("old%02d", i), "v", agentd.KVPutOptions{ExpirationTTL: time.Minute})
	}
	clock.Advance(time.Minute)

	// Writers keep going while the sweeper runs, for the race detector.
	var wg sync.WaitGroup
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	// Each writer reports its first write, so every live key exists before
	// the sweep is awaited: otherwise a writer scheduled late could find
	// the wait over before it wrote anything, and its key missing.
	wrote := make(chan struct{}, 4)
	for w := range 4 {
		wg.Go(func() {
			key := fmt.Sprintf("live%d", w)
			var version uint64
			for ctx.Err() == nil {
				v, err := kv.CompareAndSwap(ctx, key, version, []byte("x"), agentd.KVPutOptions{ExpirationTTL: time.Hour})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("CompareAndSwap: %v", err)
					}
					return
				}
				if version == 0 {
					wrote <- struct{}{}
				}
				version = v
			}
		})
	}
	for range 4 {
		<-wrote
	}

	// The sweeper runs on the wall clock, so wait for it, bounded.
	deadline := time.Now().Add(10 * time.Second)
	for rawCount(t, kv) > 4 {
		if time.Now().After(deadline) {
			t.Fatalf("the background sweeper left %d records", rawCount(t, kv))
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	wg.Wait()
	for w := range 4 {
		if _, err := kv.Get(t.Context(), fmt.Sprintf("live%d", w)); err != nil {
			t.Errorf("live key swept: %v", err)
		}
	}
	// Close must stop the sweeper and return; a leaked or stuck sweeper
	// would hang here (and the race detector would flag a racy one).
	closed := make(chan error, 1)
	go func() { closed <- kv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
}

func TestReopenPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	clock := testClock()
	kv, err := bolt.Open(path, bolt.WithClock(clock), bolt.WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	meta := json.RawMessage(`{"title":"chat"}`)
	exp := clock.Now().Add(time.Hour)
	put(t, kv, "conv", "hello", agentd.KVPutOptions{Metadata: meta, Expiration: exp})
	before, err := kv.Get(t.Context(), "conv")
	if err != nil {
		t.Fatal(err)
	}
	gone, err := kv.CompareAndSwap(t.Context(), "gone", 0, []byte("x"), agentd.KVPutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(t.Context(), "gone"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}

	kv = open(t, path, bolt.WithClock(clock), bolt.WithSweepInterval(0))
	after, err := kv.Get(t.Context(), "conv")
	if err != nil {
		t.Fatalf("Get after reopen: %v", err)
	}
	if string(after.Value) != "hello" || string(after.Metadata) != string(meta) ||
		!after.Expiration.Equal(exp) || after.Version != before.Version {
		t.Errorf("after reopen: %+v, want %+v", after, before)
	}
	if _, err := kv.Get(t.Context(), "gone"); agentd.KindOf(err) != agentd.KindNotFound {
		t.Errorf("deleted key after reopen: %v", err)
	}
	// The version sequence survives the reopen too.
	v, err := kv.CompareAndSwap(t.Context(), "gone", 0, []byte("x"), agentd.KVPutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v == gone || v == before.Version {
		t.Errorf("version %d reused after reopen", v)
	}
	clock.Advance(time.Hour)
	if _, err := kv.Get(t.Context(), "conv"); agentd.KindOf(err) != agentd.KindNotFound {
		t.Errorf("expired key after reopen: %v", err)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	first, err := bolt.Open(path, bolt.WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		opts  []bolt.Option
		bound time.Duration
	}{
		{"default timeout", nil, 10 * time.Second},
		{"short timeout", []bolt.Option{bolt.WithLockTimeout(20 * time.Millisecond)}, 5 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			second, err := bolt.Open(path, tt.opts...)
			if err == nil {
				second.Close()
				t.Fatal("second Open of a locked file succeeded")
			}
			if elapsed := time.Since(start); elapsed > tt.bound {
				t.Errorf("second Open took %s", elapsed)
			}
			if agentd.KindOf(err) != agentd.KindStorageUnavailable {
				t.Errorf("error kind %q, want %q: %v", agentd.KindOf(err), agentd.KindStorageUnavailable, err)
			}
			if !strings.Contains(err.Error(), "locked by another process") {
				t.Errorf("error %q does not say the file is locked", err)
			}
		})
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// Released on Close: the file opens again.
	open(t, path, bolt.WithSweepInterval(0))
}

func TestClose(t *testing.T) {
	kv, err := bolt.Open(filepath.Join(t.TempDir(), "kv.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := kv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// A closed store answers with an error, not a panic.
	_, err = kv.Get(t.Context(), "k")
	if agentd.KindOf(err) != agentd.KindStorageUnavailable {
		t.Errorf("Get after Close: %v, want kind %q", err, agentd.KindStorageUnavailable)
	}
	if err := kv.Put(t.Context(), "k", []byte("v"), agentd.KVPutOptions{}); agentd.KindOf(err) != agentd.KindStorageUnavailable {
		t.Errorf("Put after Close: %v, want kind %q", err, agentd.KindStorageUnavailable)
	}
}

func TestOpenCreatesParents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "c", "kv.db")
	kv := open(t, path)
	put(t, kv, "k", "v", agentd.KVPutOptions{})
	if _, err := os.Stat(path); err != nil {
		t.Errorf("file not created: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("not a database, and not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		dir,                          // a directory, not a file
		filepath.Join(file, "kv.db"), // parent is a file
		file,                         // not a bbolt file
	} {
		kv, err := bolt.Open(path, bolt.WithLockTimeout(100*time.Millisecond))
		if err == nil {
			kv.Close()
			t.Errorf("Open(%s) succeeded", path)
			continue
		}
		if agentd.KindOf(err) != agentd.KindStorageUnavailable {
			t.Errorf("Open(%s): %v, want kind %q", path, err, agentd.KindStorageUnavailable)
		}
	}
}

func TestCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	kv, err := bolt.Open(path, bolt.WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("entries")).Put([]byte("bad"), []byte("short"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	kv = open(t, path, bolt.WithSweepInterval(0))
	_, err = kv.Get(t.Context(), "bad")
	if agentd.KindOf(err) != agentd.KindInternal {
		t.Errorf("Get of a corrupt record: %v, want kind %q", err, agentd.KindInternal)
	}
	if _, err := kv.List(t.Context(), agentd.KVListOptions{}); agentd.KindOf(err) != agentd.KindInternal {
		t.Errorf("List over a corrupt record: %v, want kind %q", err, agentd.KindInternal)
	}
	if n, err := kv.Sweep(t.Context()); err != nil || n != 0 {
		t.Errorf("Sweep = %d, %v; want the corrupt record left alone", n, err)
	}
	// It can be replaced.
	put(t, kv, "bad", "good", agentd.KVPutOptions{})
	if e, err := kv.Get(t.Context(), "bad"); err != nil || string(e.Value) != "good" {
		t.Errorf("Get after replacing the corrupt record = %q, %v", e.Value, err)
	}
}

func TestExpirationTooFar(t *testing.T) {
	kv := open(t, filepath.Join(t.TempDir(), "kv.db"), bolt.WithClock(testClock()), bolt.WithSweepInterval(0))
	for _, opts := range []agentd.KVPutOptions{
		{Expiration: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)},
		{ExpirationTTL: math.MaxInt64},
	} {
		err := kv.Put(t.Context(), "k", []byte("v"), opts)
		if agentd.KindOf(err) != agentd.KindInvalid {
			t.Errorf("Put with %+v: %v, want kind %q", opts, err, agentd.KindInvalid)
		}
	}
	if _, err := kv.Get(t.Context(), "k"); agentd.KindOf(err) != agentd.KindNotFound {
		t.Errorf("Get after rejected puts: %v", err)
	}
}

// BenchmarkGetPut measures the runtime's hot path: read a conversation of
// about 20 messages (~8 KiB), append, CompareAndSwap it back.
func BenchmarkGetPut(b *testing.B) {
	kv := open(b, filepath.Join(b.TempDir(), "kv.db"), bolt.WithSweepInterval(0))
	msgs := make([]map[string]string, 20)
	for i := range msgs {
		role := []string{"user", "assistant"}[i%2]
		msgs[i] = map[string]string{"role": role, "content": strings.Repeat(fmt.Sprintf("message %d ", i), 36)}
	}
	value, err := json.Marshal(msgs)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := kv.CompareAndSwap(ctx, "conversation/1", 0, value, agentd.KVPutOptions{}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(value)))
	b.ReportAllocs()
	for b.Loop() {
		e, err := kv.Get(ctx, "conversation/1")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := kv.CompareAndSwap(ctx, "conversation/1", e.Version, e.Value, agentd.KVPutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
