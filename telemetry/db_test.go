package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/store/migrate"
	"github.com/agentd/agentd/store/postgres"
	"github.com/agentd/agentd/store/sqlite"
)

// The tests that read and write audit_events run on SQLite always and on
// Postgres when AGENTD_TEST_POSTGRES_URL names a server, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable, each in a schema
// of its own, dropped when the test ends.
const envPostgresURL = "AGENTD_TEST_POSTGRES_URL"

// dialect is a database a test runs on: open returns an empty one, to
// which set is applied.
type dialect struct {
	name string
	open func(t testing.TB, set []migrate.Migration) agentd.DB
}

func dialects() []dialect {
	out := []dialect{{"sqlite", openSQLite}}
	if os.Getenv(envPostgresURL) != "" {
		out = append(out, dialect{"postgres", openPostgres})
	}
	return out
}

// forEachDB runs f on a database of each dialect migrated by
// migrate.Runtime.
func forEachDB(t *testing.T, f func(t *testing.T, db agentd.DB)) {
	t.Helper()
	for _, d := range dialects() {
		t.Run(d.name, func(t *testing.T) { f(t, d.open(t, migrate.Runtime())) })
	}
}

func openSQLite(t testing.TB, set []migrate.Migration) agentd.DB {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "audit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := migrate.Apply(t.Context(), db, set); err != nil {
		t.Fatal(err)
	}
	return db
}

func openPostgres(t testing.TB, set []migrate.Migration) agentd.DB {
	t.Helper()
	base := os.Getenv(envPostgresURL)
	ctx := context.Background()
	quiet := postgres.WithLogger(slog.New(slog.DiscardHandler))
	admin, err := postgres.Open(ctx, withParam(base, "cache", "off"), quiet)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	schema := fmt.Sprintf("agentd_telemetry_%016x", rand.Uint64())
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	// Registered first, so it runs after the DB's own cleanup.
	t.Cleanup(func() {
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
		admin.Close()
	})
	// The query cache stays on, as in production: the Auditor's reads must
	// see its own writes through it.
	db, err := postgres.Open(ctx, withParam(base, "search_path", schema), quiet)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := migrate.Apply(ctx, db, set); err != nil {
		t.Fatal(err)
	}
	return db
}

// withParam returns raw with a query parameter added.
func withParam(raw, key, value string) string {
	sep := "?"
	if strings.Contains(raw, "?") {
		sep = "&"
	}
	return raw + sep + url.QueryEscape(key) + "=" + url.QueryEscape(value)
}
