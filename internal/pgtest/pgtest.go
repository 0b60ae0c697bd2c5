// Package pgtest gives tests a PostgreSQL database of their own: a fresh
// schema on the server AGENTD_TEST_POSTGRES_URL names (scripts/
// test-services.sh sets it), dropped when the test ends, so runs never
// collide. Without the variable the test is skipped and says why. It is
// for tests only; no runtime package imports it.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/store/migrate"
	"github.com/agentd/agentd/store/postgres"
)

// EnvURL names the variable that points the tests at a server.
const EnvURL = "AGENTD_TEST_POSTGRES_URL"

// Available reports whether a server is configured.
func Available() bool { return os.Getenv(EnvURL) != "" }

// SchemaURL creates a schema named after prefix and returns the server's
// URL with search_path set to it. The schema is dropped when t ends.
func SchemaURL(t testing.TB, prefix string) string {
	t.Helper()
	base := os.Getenv(EnvURL)
	if base == "" {
		t.Skipf("set %s (scripts/test-services.sh does) to run this test on PostgreSQL", EnvURL)
	}
	ctx := context.Background()
	admin, err := postgres.Open(ctx, WithParam(base, "cache", "off"), postgres.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	schema := prefix + "_" + hex.EncodeToString(id[:])
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema: %v", err)
		}
		admin.Close()
	})
	return WithParam(base, "search_path", schema)
}

// Open returns a DB in a schema of its own, migrated by set (nil: none),
// with the binding's query cache on as in production.
func Open(t testing.TB, prefix string, set []migrate.Migration, opts ...postgres.Option) agentd.DB {
	t.Helper()
	u := SchemaURL(t, prefix)
	ctx := context.Background()
	opts = append([]postgres.Option{postgres.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	db, err := postgres.Open(ctx, u, opts...)
	if err != nil {
		t.Fatalf("pgtest: open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if set != nil {
		if err := migrate.Apply(ctx, db, set); err != nil {
			t.Fatalf("pgtest: migrate: %v", err)
		}
	}
	return db
}

// WithParam returns raw with a query parameter added.
func WithParam(raw, key, value string) string {
	sep := "?"
	if strings.Contains(raw, "?") {
		sep = "&"
	}
	return raw + sep + url.QueryEscape(key) + "=" + url.QueryEscape(value)
}
