package postgres

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd"
)

func TestParseURL(t *testing.T) {
	c, err := parseURL("postgres://u:p%40ss@h1:5432,h2:5433/db?sslmode=disable&cache=off&cache_max_age=30s&cache_stale_while_revalidate=0&cache_max_bytes=2048&query_timeout=750ms&search_path=s1&pool_max_conns=7")
	if err != nil {
		t.Fatal(err)
	}
	// The user info and the hosts reach pgx as written; agentd's
	// parameters do not reach it.
	if want := "postgres://u:p%40ss@h1:5432,h2:5433/db?pool_max_conns=7&search_path=s1&sslmode=disable"; c.connString != want {
		t.Errorf("connString = %q, want %q", c.connString, want)
	}
	if c.cacheOff == nil || !*c.cacheOff {
		t.Error("cache=off not read")
	}
	if c.maxAge == nil || *c.maxAge != 30*time.Second {
		t.Errorf("cache_max_age = %v", c.maxAge)
	}
	if c.swr == nil || *c.swr >= 0 {
		t.Errorf("cache_stale_while_revalidate=0 = %v, want negative (none)", c.swr)
	}
	if c.maxBytes == nil || *c.maxBytes != 2048 {
		t.Errorf("cache_max_bytes = %v", c.maxBytes)
	}
	if c.queryTimeout == nil || *c.queryTimeout != 750*time.Millisecond {
		t.Errorf("query_timeout = %v", c.queryTimeout)
	}
	if !c.maxConnsSet {
		t.Error("pool_max_conns not seen")
	}

	c, err = parseURL("postgresql://h/db")
	if err != nil {
		t.Fatal(err)
	}
	if c.connString != "postgresql://h/db" || c.maxConnsSet || c.cacheOff != nil || c.maxAge != nil || c.queryTimeout != nil {
		t.Errorf("plain URL: %+v", c)
	}
}

func TestParseURLErrorsHideThePassword(t *testing.T) {
	const pw = "s3cr3t-Pw"
	for _, raw := range []string{
		"mysql://u:" + pw + "@h/db",
		"postgres://u:" + pw + "@h/db?cache=maybe",
		"postgres://u:" + pw + "@h/db?cache_max_age=2h",
		"postgres://u:" + pw + "@h/db?cache_max_age=0s",
		"postgres://u:" + pw + "@h/db?cache_max_age=soon",
		"postgres://u:" + pw + "@h/db?cache_stale_while_revalidate=-1s",
		"postgres://u:" + pw + "@h/db?cache_max_bytes=lots",
		"postgres://u:" + pw + "@h/db?query_timeout=0",
		"postgres://u:" + pw + "@h/db?a=%zz",
		"postgres://h/db?password=" + pw + "&query_timeout=x",
	} {
		_, err := Open(t.Context(), raw)
		if err == nil {
			t.Errorf("Open(%q): no error", raw)
			continue
		}
		if agentd.KindOf(err) != agentd.KindInvalid {
			t.Errorf("Open(%q): %v, want KindInvalid", raw, err)
		}
		checkNoSecret(t, err, pw)
	}
}

func TestSecrets(t *testing.T) {
	got := secrets("postgres://user:p%40ss@host:5432/db?sslmode=disable&password=q%26w")
	for _, want := range []string{"p%40ss", "p@ss", "q%26w", "q&w"} {
		found := false
		for _, s := range got {
			found = found || s == want
		}
		if !found {
			t.Errorf("secrets = %q, missing %q", got, want)
		}
	}
	if s := secrets("postgres://user@host/db"); len(s) != 0 {
		t.Errorf("no password: secrets = %q", s)
	}
	r := newRedactor("postgres://user:hunter2@host/db")
	if got := r.redact("failed: postgres://user:hunter2@host/db"); strings.Contains(got, "hunter2") {
		t.Errorf("redact = %q", got)
	}
	plain := errors.New("no secret here")
	if r.err(plain) != plain {
		t.Error("an error without the password was replaced")
	}
}

// checkNoSecret fails if any error in err's chain shows secret.
func checkNoSecret(t *testing.T, err error, secret string) {
	t.Helper()
	for e := err; e != nil; e = errors.Unwrap(e) {
		if strings.Contains(e.Error(), secret) {
			t.Errorf("error shows the password: %v", e)
			return
		}
		if ae, ok := e.(*agentd.Error); ok && strings.Contains(ae.Message, secret) {
			t.Errorf("error message shows the password: %v", ae.Message)
		}
	}
}
