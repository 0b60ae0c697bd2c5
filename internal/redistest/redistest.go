// Package redistest gives tests a Redis key space of their own: a fresh key
// prefix on the server AGENTD_TEST_REDIS_URL names (scripts/
// test-services.sh sets it), every key under it deleted when the test ends.
// The server is shared with other tests, so nothing else is touched (no
// FLUSHDB). Without the variable the test is skipped and says why. It is
// for tests only; no runtime package imports it.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"slices"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// EnvURL names the variable that points the tests at a server.
const EnvURL = "AGENTD_TEST_REDIS_URL"

// URL returns the server's URL, or skips t.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		t.Skipf("set %s (scripts/test-services.sh does) to run this test on Redis", EnvURL)
	}
	return u
}

// Prefix returns a fresh key prefix, "agentdtest:HEX:", and deletes every
// key under it when t ends.
func Prefix(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "agentdtest:" + hex.EncodeToString(b[:]) + ":"
	Clean(t, URL(t), prefix)
	return prefix
}

// Clean deletes every key under prefix on the server at rawURL when t
// ends. The prefix must hold no glob characters.
func Clean(t testing.TB, rawURL, prefix string) {
	t.Helper()
	opts, err := goredis.ParseURL(rawURL)
	if err != nil {
		t.Fatalf("redistest: ParseURL: %v", err)
	}
	c := goredis.NewClient(opts)
	t.Cleanup(func() {
		defer func() { _ = c.Close() }()
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("redistest: cleanup: SCAN %s*: %v", prefix, err)
			return
		}
		for batch := range slices.Chunk(keys, 500) {
			if err := c.Del(ctx, batch...).Err(); err != nil {
				t.Errorf("redistest: cleanup: DEL: %v", err)
			}
		}
	})
}
