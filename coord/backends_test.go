package coord_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/store/bolt"
	"github.com/agentd/agentd/store/redis"
	goredis "github.com/redis/go-redis/v9"
)

// backend opens KV stores for the shared scenarios.
type backend struct {
	name string
	// open returns n handles on one fresh store, as n nodes sharing it
	// would hold them, each taking "now" from clock. The handles are
	// closed when the test ends.
	open func(t testing.TB, clock agentd.Clock, n int) []agentd.KV
}

// backends lists bolt always and Redis when AGENTD_TEST_REDIS_URL is set,
// as the store packages' own tests do.
func backends() []backend {
	bs := []backend{{name: "bolt", open: openBolt}}
	if url := os.Getenv("AGENTD_TEST_REDIS_URL"); url != "" {
		bs = append(bs, backend{name: "redis", open: func(t testing.TB, clock agentd.Clock, n int) []agentd.KV {
			return openRedis(t, url, clock, n)
		}})
	}
	return bs
}

// openBolt returns the one handle of a bolt file n times: bolt locks its
// file, so only one process, one "node", can have it open, and that node's
// components share the handle.
func openBolt(t testing.TB, clock agentd.Clock, n int) []agentd.KV {
	t.Helper()
	kv, err := bolt.Open(filepath.Join(t.TempDir(), "kv.db"), bolt.WithClock(clock), bolt.WithSweepInterval(0))
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := kv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	kvs := make([]agentd.KV, n)
	for i := range kvs {
		kvs[i] = kv
	}
	return kvs
}

// openRedis opens n separate connections to one store under a fresh
// prefix, as n nodes would, and deletes the prefix's keys when the test
// ends. The server is shared with other tests, so nothing else is touched.
func openRedis(t testing.TB, url string, clock agentd.Clock, n int) []agentd.KV {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "agentdtest:coord:" + hex.EncodeToString(b[:]) + ":"
	cleanRedisPrefix(t, url, prefix)
	kvs := make([]agentd.KV, n)
	for i := range kvs {
		kv, err := redis.OpenKV(context.Background(), url, redis.WithPrefix(prefix), redis.WithClock(clock), redis.WithSweepInterval(0))
		if err != nil {
			t.Fatalf("redis.OpenKV: %v", err)
		}
		t.Cleanup(func() {
			if err := kv.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		kvs[i] = kv
	}
	return kvs
}

// cleanRedisPrefix deletes every key under prefix when the test ends.
func cleanRedisPrefix(t testing.TB, url, prefix string) {
	t.Helper()
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatalf("ParseURL: %v", err)
	}
	c := goredis.NewClient(opts)
	t.Cleanup(func() {
		defer func() { _ = c.Close() }()
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// The prefix is hex and colons: no glob characters to escape.
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("cleanup: SCAN %s*: %v", prefix, err)
			return
		}
		for batch := range slices.Chunk(keys, 500) {
			if err := c.Del(ctx, batch...).Err(); err != nil {
				t.Errorf("cleanup: DEL: %v", err)
			}
		}
	})
}
