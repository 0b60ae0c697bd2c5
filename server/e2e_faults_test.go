package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"os"
	"testing"

	"github.com/agentd/agentd/internal/redistest"
	"github.com/agentd/agentd/internal/tcpproxy"
	"github.com/agentd/agentd/store/postgres"
)

// proxied starts a TCP proxy in front of the host of raw and returns raw
// pointed at the proxy, with the extra query parameters.
func proxied(t *testing.T, raw string, params map[string]string) (string, *tcpproxy.Proxy) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.Start(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	u.Host = p.Addr()
	q := u.Query()
	for k, v := range params {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String(), p
}

func suffix(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// When the link to Redis or Postgres is cut, requests fail fast with 503
// storage_unavailable, nothing is half-written, and service resumes by
// itself when the link returns.
func TestStoreOutagesFailFastAndHeal(t *testing.T) {
	pg, rd := os.Getenv("AGENTD_TEST_POSTGRES_URL"), os.Getenv("AGENTD_TEST_REDIS_URL")
	if pg == "" || rd == "" {
		t.Skip("set AGENTD_TEST_POSTGRES_URL and AGENTD_TEST_REDIS_URL (scripts/test-services.sh does) to cut links to real engines")
	}
	ctx := context.Background()
	schema := "agentd_faults_" + suffix(t)
	admin, err := postgres.Open(ctx, pg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		_ = admin.Close()
	})
	prefix := "agentd-faults-" + suffix(t) + ":"
	redistest.Clean(t, rd, prefix)
	kvURL, redisLink := proxied(t, rd, map[string]string{"prefix": prefix, "op_timeout": "1s"})
	dbURL, pgLink := proxied(t, pg, map[string]string{"search_path": schema, "query_timeout": "1s"})
	p := newProject(t, projectOpts{env: map[string]string{"AGENTD_KV_URL": kvURL, "AGENTD_DB_URL": dbURL}})

	if r := p.chat("u1", "one"); r.status != http.StatusOK {
		t.Fatalf("before the outage: %d %s", r.status, r.raw)
	}

	redisLink.Cut()
	r := p.chat("u1", "two")
	if r.status != http.StatusServiceUnavailable || errorType(r) != "storage_unavailable" {
		t.Fatalf("chat with Redis cut: %d %s, want 503 storage_unavailable", r.status, r.raw)
	}
	if r := p.do("GET", "/readyz", ""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("readyz with Redis cut: %d %s", r.status, r.raw)
	}
	redisLink.Restore()
	p.eventually("chat after Redis returned", func() response { return p.chat("u1", "three") })
	hist := p.history("u1")
	if len(hist) != 4 || hist[0]["content"] != "one" || hist[2]["content"] != "three" {
		t.Fatalf("history after the outage = %v, want the turns one and three only", hist)
	}

	pgLink.Cut()
	if r := p.do("GET", "/readyz", ""); r.status != http.StatusServiceUnavailable || errorType(r) != "storage_unavailable" {
		t.Fatalf("readyz with Postgres cut: %d %s", r.status, r.raw)
	}
	// Conversations live in Redis: chat keeps working while the audit log's
	// database is away (its failed writes are logged and counted).
	if r := p.chat("u1", "four"); r.status != http.StatusOK {
		t.Fatalf("chat with Postgres cut: %d %s", r.status, r.raw)
	}
	pgLink.Restore()
	p.eventually("readyz after Postgres returned", func() response { return p.do("GET", "/readyz", "") })
}

// eventually retries a request until it answers 200, a bounded number of
// times: right after a link returns, a pooled connection broken by the cut
// may still be handed out once before the pool replaces it. What matters is
// that service resumes without a restart.
func (p *project) eventually(what string, do func() response) {
	p.t.Helper()
	var last response
	for range 20 {
		if last = do(); last.status == http.StatusOK {
			return
		}
	}
	p.t.Fatalf("%s: still %d %s after 20 tries", what, last.status, last.raw)
}
