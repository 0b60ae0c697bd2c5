package migrate_test

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/store/migrate"
	"github.com/agentd/agentd/store/sqlite"
)

func openDB(t *testing.T) agentd.DB {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func sqliteOnly(version int, name string, stmts ...string) migrate.Migration {
	return migrate.Migration{Version: version, Name: name, SQL: map[string][]string{"sqlite": stmts}}
}

// applied returns the recorded versions with their applied_at.
func applied(t *testing.T, db agentd.DB) map[int64]int64 {
	t.Helper()
	rows, err := db.Query(t.Context(), `SELECT version, applied_at FROM agentd_migrations`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]int64{}
	for _, r := range rows.Values {
		out[r[0].(int64)] = r[1].(int64)
	}
	return out
}

func tableExists(t *testing.T, db agentd.DB, name string) bool {
	t.Helper()
	rows, err := db.Query(t.Context(), `SELECT name FROM sqlite_master WHERE type = 'table' AND name = $1`, name)
	if err != nil {
		t.Fatal(err)
	}
	return len(rows.Values) == 1
}

func TestRuntimeApplyTwiceIsNoOp(t *testing.T) {
	db := openDB(t)
	if err := migrate.Apply(t.Context(), db, migrate.Runtime()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	first := applied(t, db)
	if len(first) != len(migrate.Runtime()) {
		t.Fatalf("recorded %v, want %d versions", first, len(migrate.Runtime()))
	}
	if !tableExists(t, db, "audit_events") {
		t.Fatal("audit_events was not created")
	}
	if err := migrate.Apply(t.Context(), db, migrate.Runtime()); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if second := applied(t, db); len(second) != len(first) || second[1] != first[1] {
		t.Errorf("second Apply changed the record: %v, then %v", first, second)
	}
}

func TestRuntimeHasBothDialects(t *testing.T) {
	for _, m := range migrate.Runtime() {
		for _, d := range []string{"sqlite", "postgres"} {
			if len(m.SQL[d]) == 0 {
				t.Errorf("migration %d (%s) has no %s SQL", m.Version, m.Name, d)
			}
		}
	}
	// Each call builds its own set.
	a := migrate.Runtime()
	a[0].SQL["sqlite"][0] = "mangled"
	if migrate.Runtime()[0].SQL["sqlite"][0] == "mangled" {
		t.Error("Runtime returns shared, mutable migrations")
	}
}

func TestAppliesOnlyMissingVersionsInOrder(t *testing.T) {
	db := openDB(t)
	v1 := sqliteOnly(1, "a", `CREATE TABLE a (x BIGINT)`)
	if err := migrate.Apply(t.Context(), db, []migrate.Migration{v1}); err != nil {
		t.Fatal(err)
	}
	// v3 depends on v2 having run first.
	set := []migrate.Migration{
		v1,
		sqliteOnly(2, "b", `CREATE TABLE b (x BIGINT)`),
		sqliteOnly(3, "c", `CREATE TABLE c (x BIGINT)`, `INSERT INTO b (x) SELECT 1`),
	}
	if err := migrate.Apply(t.Context(), db, set); err != nil {
		t.Fatal(err)
	}
	if got := applied(t, db); len(got) != 3 {
		t.Errorf("recorded %v, want versions 1 to 3", got)
	}
	for _, table := range []string{"a", "b", "c"} {
		if !tableExists(t, db, table) {
			t.Errorf("table %s missing", table)
		}
	}
}

func TestPartialFailureRollsBackThatMigration(t *testing.T) {
	db := openDB(t)
	set := []migrate.Migration{
		sqliteOnly(1, "ok", `CREATE TABLE ok (x BIGINT)`),
		sqliteOnly(2, "broken", `CREATE TABLE half (x BIGINT)`, `CREATE TABLLE oops (x BIGINT)`),
		sqliteOnly(3, "later", `CREATE TABLE later (x BIGINT)`),
	}
	err := migrate.Apply(t.Context(), db, set)
	if err == nil {
		t.Fatal("Apply of a broken migration succeeded")
	}
	if !strings.Contains(err.Error(), "migration 2 (broken)") || !strings.Contains(err.Error(), "statement 2") {
		t.Errorf("error %q does not name the migration and statement", err)
	}
	if agentd.KindOf(err) != agentd.KindInvalid {
		t.Errorf("kind %s, want the cause's %s", agentd.KindOf(err), agentd.KindInvalid)
	}
	got := applied(t, db)
	if _, ok := got[1]; !ok || len(got) != 1 {
		t.Errorf("recorded %v, want only version 1", got)
	}
	if tableExists(t, db, "half") {
		t.Error("the failed migration's first statement was not rolled back")
	}
	if tableExists(t, db, "later") {
		t.Error("a migration after the failed one ran")
	}

	// Fixed, the set applies from where it stopped.
	set[1] = sqliteOnly(2, "broken", `CREATE TABLE half (x BIGINT)`)
	if err := migrate.Apply(t.Context(), db, set); err != nil {
		t.Fatal(err)
	}
	if got := applied(t, db); len(got) != 3 {
		t.Errorf("recorded %v, want versions 1 to 3", got)
	}
}

func TestRefusesDatabaseFromNewerBinary(t *testing.T) {
	db := openDB(t)
	newer := []migrate.Migration{
		sqliteOnly(1, "a", `CREATE TABLE a (x BIGINT)`),
		sqliteOnly(2, "b", `CREATE TABLE b (x BIGINT)`),
	}
	if err := migrate.Apply(t.Context(), db, newer); err != nil {
		t.Fatal(err)
	}
	err := migrate.Apply(t.Context(), db, newer[:1])
	if err == nil || !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("Apply of an older set: %v, want an error about a newer schema at version 2", err)
	}
}

func TestRefusesForeignHistory(t *testing.T) {
	db := openDB(t)
	if err := migrate.Apply(t.Context(), db, []migrate.Migration{
		sqliteOnly(1, "a", `CREATE TABLE a (x BIGINT)`),
		sqliteOnly(2, "b", `CREATE TABLE b (x BIGINT)`),
		sqliteOnly(3, "c", `CREATE TABLE c (x BIGINT)`),
	}); err != nil {
		t.Fatal(err)
	}
	// Same versions, another name: a different branch of history.
	err := migrate.Apply(t.Context(), db, []migrate.Migration{
		sqliteOnly(1, "a", `CREATE TABLE a (x BIGINT)`),
		sqliteOnly(2, "other", `CREATE TABLE other (x BIGINT)`),
		sqliteOnly(3, "c", `CREATE TABLE c (x BIGINT)`),
	})
	if err == nil || !strings.Contains(err.Error(), "migration 2") {
		t.Errorf("renamed migration: %v, want an error naming migration 2", err)
	}
	// A version missing from the middle of the set.
	err = migrate.Apply(t.Context(), db, []migrate.Migration{
		sqliteOnly(1, "a", `CREATE TABLE a (x BIGINT)`),
		sqliteOnly(3, "c", `CREATE TABLE c (x BIGINT)`),
	})
	if err == nil || !strings.Contains(err.Error(), "migration 2") {
		t.Errorf("set without version 2: %v, want an error naming migration 2", err)
	}
}

func TestRefusesBadSets(t *testing.T) {
	for name, set := range map[string][]migrate.Migration{
		"decreasing": {sqliteOnly(2, "b", `CREATE TABLE b (x BIGINT)`), sqliteOnly(1, "a", `CREATE TABLE a (x BIGINT)`)},
		"duplicate":  {sqliteOnly(1, "a", `CREATE TABLE a (x BIGINT)`), sqliteOnly(1, "b", `CREATE TABLE b (x BIGINT)`)},
		"zero":       {sqliteOnly(0, "a", `CREATE TABLE a (x BIGINT)`)},
		"no sqlite":  {{Version: 1, Name: "pg", SQL: map[string][]string{"postgres": {`CREATE TABLE a (x BIGINT)`}}}},
	} {
		t.Run(name, func(t *testing.T) {
			db := openDB(t)
			if err := migrate.Apply(t.Context(), db, set); err == nil {
				t.Fatal("Apply accepted the set")
			}
			// Refused before touching the database.
			if tableExists(t, db, "agentd_migrations") || tableExists(t, db, "a") || tableExists(t, db, "b") {
				t.Error("a refused set changed the database")
			}
		})
	}
}

func TestConcurrentApply(t *testing.T) {
	db := openDB(t)
	set := []migrate.Migration{
		sqliteOnly(1, "a", `CREATE TABLE a (x BIGINT)`),
		sqliteOnly(2, "b", `CREATE TABLE b (x BIGINT)`),
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := migrate.Apply(t.Context(), db, set); err != nil {
				t.Errorf("Apply: %v", err)
			}
		})
	}
	wg.Wait()
	if got := applied(t, db); len(got) != 2 {
		t.Errorf("recorded %v, want versions 1 and 2 once each", got)
	}
}
