package telemetry

import (
	"path/filepath"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/pgtest"
	"github.com/agentd/agentd/store/migrate"
	"github.com/agentd/agentd/store/sqlite"
)

// The tests that read and write audit_events run on SQLite always and on
// Postgres when AGENTD_TEST_POSTGRES_URL names a server, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable, each in a schema
// of its own, dropped when the test ends.

// dialect is a database a test runs on: open returns an empty one, to
// which set is applied.
type dialect struct {
	name string
	open func(t testing.TB, set []migrate.Migration) agentd.DB
}

func dialects() []dialect {
	out := []dialect{{"sqlite", openSQLite}}
	if pgtest.Available() {
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
	// The query cache stays on, as in production: the Auditor's reads must
	// see its own writes through it.
	return pgtest.Open(t, "agentd_telemetry", set)
}
