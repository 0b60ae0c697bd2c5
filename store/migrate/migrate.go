// Package migrate keeps the schema of agentd's own tables (audit events and
// the like) versioned, in SQLite and in Postgres alike.
//
// A migration is a numbered list of statements per dialect. Apply runs the
// ones a database has not seen, each in a transaction of its own together
// with the row that records it, so a migration either happened completely or
// not at all, and a crash between two migrations resumes where it stopped.
// Migrations are never edited once released: a change is a new version.
package migrate

import (
	"context"
	"fmt"
	"time"

	"github.com/agentd/agentd"
)

// Migration is one step of a schema.
type Migration struct {
	// Version orders the migrations of a set; it is never reused.
	Version int
	// Name says what the migration does, for people reading the
	// agentd_migrations table. A database that recorded a version under
	// another name was migrated by a different set, and Apply refuses it.
	Name string
	// SQL holds the statements of each dialect ("sqlite", "postgres"), run
	// in order. A list instead of one script because drivers differ on
	// running several statements in one call, and splitting SQL text
	// correctly means parsing it.
	SQL map[string][]string
}

// lockID is the key of the Postgres advisory lock that serializes processes
// migrating the same database at once ("agentd" in ASCII). SQLite needs none:
// its transactions take the write lock when they begin.
const lockID = 0x6167656e7464

const op = "migrate"

// Apply brings db up to the last version of set. It creates the
// agentd_migrations table if need be and runs, in order, each migration whose
// version the database has not recorded, in one transaction with its
// bookkeeping row. Applying an applied set does nothing.
//
// Apply fails before changing anything if set is not strictly increasing in
// Version, if a migration has no SQL for the database's dialect, or if the
// database records a version that set does not have: a newer agentd migrated
// it, and running an older one against that schema is not safe.
func Apply(ctx context.Context, db agentd.DB, set []Migration) error {
	dialect := db.Dialect()
	if err := check(set, dialect); err != nil {
		return err
	}
	err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		if err := lock(ctx, tx, dialect); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS agentd_migrations (
			version BIGINT PRIMARY KEY,
			name TEXT NOT NULL,
			applied_at BIGINT NOT NULL
		)`)
		return err
	})
	if err != nil {
		return agentd.E("", op, err)
	}
	applied, err := appliedVersions(ctx, db)
	if err != nil {
		return err
	}
	if err := checkApplied(set, applied); err != nil {
		return err
	}
	for _, m := range set {
		if _, ok := applied[m.Version]; ok {
			continue
		}
		if err := apply(ctx, db, dialect, m); err != nil {
			return err
		}
	}
	return nil
}

// check validates a set against itself and the dialect.
func check(set []Migration, dialect string) error {
	for i, m := range set {
		if m.Version <= 0 {
			return agentd.Errorf(agentd.KindInternal, op, "migration %q has version %d; versions start at 1", m.Name, m.Version)
		}
		if i > 0 && m.Version <= set[i-1].Version {
			return agentd.Errorf(agentd.KindInternal, op, "migration versions are not strictly increasing: %d (%s) follows %d (%s)",
				m.Version, m.Name, set[i-1].Version, set[i-1].Name)
		}
		if len(m.SQL[dialect]) == 0 {
			return agentd.Errorf(agentd.KindInternal, op, "migration %d (%s) has no SQL for dialect %q", m.Version, m.Name, dialect)
		}
	}
	return nil
}

// appliedVersions returns the recorded versions and their names.
func appliedVersions(ctx context.Context, q agentd.Querier) (map[int]string, error) {
	rows, err := q.Query(ctx, `SELECT version, name FROM agentd_migrations ORDER BY version`)
	if err != nil {
		return nil, agentd.E("", op, err)
	}
	applied := make(map[int]string, len(rows.Values))
	for _, r := range rows.Values {
		v, ok1 := r[0].(int64)
		name, ok2 := r[1].(string)
		if !ok1 || !ok2 {
			return nil, agentd.Errorf(agentd.KindInternal, op, "agentd_migrations holds a row of unexpected types (%T, %T)", r[0], r[1])
		}
		applied[int(v)] = name
	}
	return applied, nil
}

// checkApplied refuses a database migrated by a set this one does not
// extend.
func checkApplied(set []Migration, applied map[int]string) error {
	known := make(map[int]string, len(set))
	latest := 0
	for _, m := range set {
		known[m.Version] = m.Name
		latest = m.Version
	}
	newest := 0
	for v := range applied {
		newest = max(newest, v)
	}
	for v, name := range applied {
		want, ok := known[v]
		switch {
		case !ok && v > latest:
			return agentd.Errorf(agentd.KindInternal, op,
				"the database schema is at version %d (%s), newer than this binary knows (up to %d): it was migrated by a newer agentd; run that version or restore a backup",
				newest, applied[newest], latest)
		case !ok:
			return agentd.Errorf(agentd.KindInternal, op,
				"the database records migration %d (%s), which this binary does not know: it was migrated by a different build", v, name)
		case want != name:
			return agentd.Errorf(agentd.KindInternal, op,
				"the database records migration %d as %q but this binary has %q there: it was migrated by a different build", v, name, want)
		}
	}
	return nil
}

// apply runs one migration and records it, in one transaction.
func apply(ctx context.Context, db agentd.DB, dialect string, m Migration) error {
	err := db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		if err := lock(ctx, tx, dialect); err != nil {
			return err
		}
		// Another process may have applied it since we looked; with the
		// lock held, what we read now stays true until we commit.
		rows, err := tx.Query(ctx, `SELECT name FROM agentd_migrations WHERE version = $1`, m.Version)
		if err != nil {
			return err
		}
		if len(rows.Values) > 0 {
			return nil
		}
		for i, stmt := range m.SQL[dialect] {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("statement %d: %w", i+1, err)
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO agentd_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			m.Version, m.Name, time.Now().UnixNano())
		return err
	})
	if err != nil {
		return &agentd.Error{Kind: agentd.KindOf(err), Op: op, Message: fmt.Sprintf("migration %d (%s) failed and was rolled back", m.Version, m.Name), Err: err}
	}
	return nil
}

// lock takes, on Postgres, a transaction-scoped advisory lock so concurrent
// Apply calls from several processes run one at a time.
func lock(ctx context.Context, tx agentd.Querier, dialect string) error {
	if dialect != "postgres" {
		return nil
	}
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(lockID))
	return err
}
