package coord_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/redistest"
	"github.com/agentd/agentd/store/bolt"
	"github.com/agentd/agentd/store/redis"
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
	prefix := redistest.Prefix(t)
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
