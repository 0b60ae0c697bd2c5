package config

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentd/agentd"
)

// applySeed loads a project's demo data: each [seed] sql file runs once per
// database (recorded in agentd_seeds, in the transaction that runs it),
// and each file under [seed] blob is put in the blob store unless an
// object of that key exists. Running it again does nothing new, so every
// start may call it.
func applySeed(ctx context.Context, cfg *Config, db agentd.DB, blob agentd.Blob, clock agentd.Clock) error {
	for _, f := range cfg.Seed.SQL {
		if err := seedSQL(ctx, cfg.Dir, f, db, clock); err != nil {
			return err
		}
	}
	if cfg.Seed.Blob != "" {
		if err := seedBlobs(ctx, cfg.Dir, cfg.Seed.Blob, blob); err != nil {
			return err
		}
	}
	return nil
}

func seedSQL(ctx context.Context, dir, file string, db agentd.DB, clock agentd.Clock) error {
	file = dialectFile(dir, file, db.Dialect())
	p := file
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("seed %s: %w", file, err)
	}
	sum := sha256.Sum256(data)
	err = db.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		rows, err := tx.Query(ctx, `SELECT sha256 FROM agentd_seeds WHERE name = $1`, file)
		if err != nil {
			return err
		}
		if len(rows.Values) > 0 {
			return nil // applied before; an edited file is not re-run over its own data
		}
		for i, stmt := range splitSQL(string(data)) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("statement %d: %w", i+1, err)
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO agentd_seeds (name, sha256, applied_at) VALUES ($1, $2, $3)`, file, hex.EncodeToString(sum[:]), clock.Now().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("seed %s: %w", file, err)
	}
	return nil
}

// dialectFile picks the variant of a seed file written for the database's
// dialect — seed.sql becomes seed.sqlite.sql or seed.postgres.sql when
// that file exists — for data that needs the dialect's own functions
// (dates relative to now, say). Otherwise the file is portable SQL.
func dialectFile(dir, file, dialect string) string {
	ext := filepath.Ext(file)
	variant := strings.TrimSuffix(file, ext) + "." + dialect + ext
	p := variant
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	if _, err := os.Stat(p); err == nil {
		return variant
	}
	return file
}

// seedFileExists reports whether a seed file or one of its dialect
// variants exists.
func seedFileExists(dir, file string) bool {
	for _, d := range []string{"", "sqlite", "postgres"} {
		f := file
		if d != "" {
			f = dialectFile(dir, file, d)
		}
		p := f
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// splitSQL splits a seed file into statements at semicolons that end a
// line, outside quotes, dropping comment lines. Seed files are plain DDL
// and INSERTs; this is not a SQL parser, and says so.
func splitSQL(src string) []string {
	var stmts []string
	var cur strings.Builder
	inQuote := false
	for _, line := range strings.SplitAfter(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if !inQuote && (trimmed == "" || strings.HasPrefix(trimmed, "--")) {
			continue
		}
		cur.WriteString(line)
		inQuote = inQuote != (strings.Count(line, "'")%2 == 1)
		if !inQuote && strings.HasSuffix(trimmed, ";") {
			stmt := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
			if stmt != "" {
				stmts = append(stmts, stmt)
			}
			cur.Reset()
		}
	}
	if rest := strings.TrimSpace(cur.String()); rest != "" {
		stmts = append(stmts, rest)
	}
	return stmts
}

func seedBlobs(ctx context.Context, dir, sub string, blob agentd.Blob) error {
	root := sub
	if !filepath.IsAbs(root) {
		root = filepath.Join(dir, root)
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if _, err := blob.Head(ctx, key); err == nil {
			return nil
		} else if agentd.KindOf(err) != agentd.KindNotFound {
			return fmt.Errorf("seed blob %s: %w", key, err)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		ctype := mime.TypeByExtension(path.Ext(key))
		if strings.HasSuffix(key, ".md") {
			ctype = "text/markdown; charset=utf-8"
		}
		if _, err := blob.Put(ctx, key, f, agentd.BlobPutOptions{ContentType: ctype}); err != nil {
			return fmt.Errorf("seed blob %s: %w", key, err)
		}
		return nil
	})
}

// resumeInterval is how often a node looks for decisions whose effects
// were left pending, and resumeIdle how long one must sit untouched before
// it is picked up (a request finishing it touches it).
const (
	resumeInterval = 30 * time.Second
	resumeIdle     = time.Minute
)
