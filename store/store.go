// Package store opens agentd's bindings by URL: it maps a scheme to the
// backend package that wraps that dependency — bolt:// and redis:// for KV,
// file:// and s3:// for Blob, sqlite:// and postgres:// for DB — and picks
// the per-conversation Locker that fits the KV (process-local for an
// embedded KV, Redis leases for a shared one). The backends themselves live
// in the sub-packages named after what they wrap.
package store

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/coord"
	"github.com/agentd/agentd/store/bolt"
	"github.com/agentd/agentd/store/fsblob"
	"github.com/agentd/agentd/store/postgres"
	"github.com/agentd/agentd/store/redis"
	"github.com/agentd/agentd/store/s3"
	"github.com/agentd/agentd/store/sqlite"
)

// schemes lists the URL schemes a binding accepts.
func schemes(binding string) []string {
	switch binding {
	case "kv":
		return []string{"bolt", "redis", "rediss"}
	case "blob":
		return []string{"file", "s3"}
	case "db":
		return []string{"sqlite", "postgres", "postgresql"}
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
	if strings.HasPrefix(raw, "redis") {
		return redis.OpenKV(ctx, raw, redis.WithClock(clock))
	}
	return bolt.Open(localPath(raw, baseDir), bolt.WithClock(clock))
}

// Embedded reports whether raw names an embedded store (a file or directory
// of this node) rather than a shared engine.
func Embedded(raw string) bool {
	scheme, _, _ := strings.Cut(raw, "://")
	return scheme == "bolt" || scheme == "file" || scheme == "sqlite"
}

// LockerFor returns the Locker that serializes conversations kept in kv: Redis
// leases when kv is shared through Redis, so every node sees the same locks;
// a process-local lock table otherwise. Call release when done.
func LockerFor(kv agentd.KV) (locker coord.Locker, release func() error) {
	if r, ok := kv.(*redis.KV); ok {
		l := r.Locker()
		return l, l.Close
	}
	return coord.NewLocal(), func() error { return nil }
}

// OpenBlob opens the Blob binding at raw.
func OpenBlob(ctx context.Context, raw, baseDir string, clock agentd.Clock) (agentd.Blob, error) {
	if err := CheckURL("blob", raw); err != nil {
		return nil, agentd.E(agentd.KindInvalid, "store.blob", err)
	}
	if strings.HasPrefix(raw, "s3://") {
		return s3.Open(ctx, raw, s3.WithClock(clock))
	}
	return fsblob.Open(localPath(raw, baseDir), fsblob.WithClock(clock))
}

// OpenDB opens the DB binding at raw.
func OpenDB(ctx context.Context, raw, baseDir string, clock agentd.Clock, logger *slog.Logger) (agentd.DB, error) {
	if err := CheckURL("db", raw); err != nil {
		return nil, agentd.E(agentd.KindInvalid, "store.db", err)
	}
	if strings.HasPrefix(raw, "postgres") {
		return postgres.Open(ctx, raw, postgres.WithClock(clock), postgres.WithLogger(logger))
	}
	return sqlite.Open(ctx, localPath(raw, baseDir))
}
