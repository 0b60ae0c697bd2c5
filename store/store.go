// Package store opens agentd's bindings by URL: it maps a scheme to the
// backend package that wraps that dependency (bolt://, file://, sqlite://
// now; redis://, s3://, postgres:// as they land). The backends themselves
// live in the sub-packages named after what they wrap.
package store

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/store/bolt"
	"github.com/agentd/agentd/store/fsblob"
	"github.com/agentd/agentd/store/sqlite"
)

// schemes lists the URL schemes a binding accepts.
func schemes(binding string) []string {
	switch binding {
	case "kv":
		return []string{"bolt"}
	case "blob":
		return []string{"file"}
	case "db":
		return []string{"sqlite"}
	}
	return nil
}

// CheckURL reports whether raw is a URL the binding ("kv", "blob" or "db")
// can open, without opening it.
func CheckURL(binding, raw string) error {
	scheme, rest, ok := strings.Cut(raw, "://")
	allowed := schemes(binding)
	switch {
	case allowed == nil:
		return fmt.Errorf("unknown binding %q", binding)
	case !ok || scheme == "":
		return fmt.Errorf("%q is not a URL; write it like %s://path", raw, allowed[0])
	case !slices.Contains(allowed, scheme):
		return fmt.Errorf("scheme %s:// is not supported for %s; use one of: %s://", scheme, binding, strings.Join(allowed, "://, "))
	case rest == "":
		return fmt.Errorf("%q names no path", raw)
	}
	return nil
}

// localPath returns the file path of an embedded store's URL: everything
// after "scheme://", relative to baseDir unless absolute (bolt:///var/x.db).
func localPath(raw, baseDir string) string {
	_, rest, _ := strings.Cut(raw, "://")
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i]
	}
	if filepath.IsAbs(rest) {
		return filepath.Clean(rest)
	}
	return filepath.Join(baseDir, rest)
}

// OpenKV opens the KV binding at raw.
func OpenKV(ctx context.Context, raw, baseDir string, clock agentd.Clock) (agentd.KV, error) {
	if err := CheckURL("kv", raw); err != nil {
		return nil, agentd.E(agentd.KindInvalid, "store.kv", err)
	}
	return bolt.Open(localPath(raw, baseDir), bolt.WithClock(clock))
}

// OpenBlob opens the Blob binding at raw.
func OpenBlob(ctx context.Context, raw, baseDir string, clock agentd.Clock) (agentd.Blob, error) {
	if err := CheckURL("blob", raw); err != nil {
		return nil, agentd.E(agentd.KindInvalid, "store.blob", err)
	}
	return fsblob.Open(localPath(raw, baseDir), fsblob.WithClock(clock))
}

// OpenDB opens the DB binding at raw.
func OpenDB(ctx context.Context, raw, baseDir string) (agentd.DB, error) {
	if err := CheckURL("db", raw); err != nil {
		return nil, agentd.E(agentd.KindInvalid, "store.db", err)
	}
	return sqlite.Open(ctx, localPath(raw, baseDir))
}
