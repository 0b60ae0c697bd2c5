package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/store/postgres"
)

// TestMain lets the test binary stand in for the agentd binary: a child
// started with AGENTD_TEST_RUN_MAIN=1 runs agentd's main with its arguments.
// The two-node test runs real separate processes this way without a build
// step.
func TestMain(m *testing.M) {
	if os.Getenv("AGENTD_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// sharedStores returns store URLs over the real engines, isolated for this
// test (a Postgres schema, a Redis key prefix, an S3 key prefix), or skips.
func sharedStores(t *testing.T) (env []string) {
	t.Helper()
	pg, rd, s3 := os.Getenv("AGENTD_TEST_POSTGRES_URL"), os.Getenv("AGENTD_TEST_REDIS_URL"), os.Getenv("AGENTD_TEST_S3_ENDPOINT")
	if pg == "" || rd == "" || s3 == "" {
		t.Skip("set AGENTD_TEST_POSTGRES_URL, AGENTD_TEST_REDIS_URL and AGENTD_TEST_S3_* (scripts/test-services.sh does) to run two nodes over shared engines")
	}
	suffix := randomHex(t)
	schema := "agentd_twonode_" + suffix

	ctx := context.Background()
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

	pgURL := withQuery(t, pg, "search_path", schema)
	rdURL := withQuery(t, rd, "prefix", "agentd-twonode-"+suffix+":")
	s3URL := fmt.Sprintf("s3://%s/twonode-%s?endpoint=%s&region=%s&path_style=true",
		os.Getenv("AGENTD_TEST_S3_BUCKET"), suffix, url.QueryEscape(s3), os.Getenv("AGENTD_TEST_S3_REGION"))
	return []string{
		"AGENTD_DB_URL=" + pgURL,
		"AGENTD_KV_URL=" + rdURL,
		"AGENTD_BLOB_URL=" + s3URL,
		"AWS_ACCESS_KEY_ID=" + os.Getenv("AGENTD_TEST_S3_ACCESS_KEY"),
		"AWS_SECRET_ACCESS_KEY=" + os.Getenv("AGENTD_TEST_S3_SECRET_KEY"),
	}
}

func randomHex(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func withQuery(t *testing.T, raw, key, value string) string {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// startNode runs `agentd serve DIR` as a child process and returns its URL.
func startNode(t *testing.T, dir string, env []string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", dir, "--listen", "127.0.0.1:0")
	cmd.Env = append(append(os.Environ(), "AGENTD_TEST_RUN_MAIN=1"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	// The node logs one JSON line with the address it bound.
	lines := bufio.NewScanner(stderr)
	var logged []string
	for lines.Scan() {
		logged = append(logged, lines.Text())
		var entry struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(lines.Bytes(), &entry) == nil && entry.Msg == "agentd serving" {
			go func() { _, _ = io.Copy(io.Discard, stderr) }()
			return "http://" + entry.Addr
		}
	}
	t.Fatalf("node exited before serving:\n%s", strings.Join(logged, "\n"))
	return ""
}

// Two agentd processes over the same Postgres, Redis and S3 behave as one:
// 200 concurrent messages to one user, spread over both nodes, end as 400
// stored entries, alternating, none lost, none interleaved.
func TestTwoNodesBehaveAsOne(t *testing.T) {
	env := sharedStores(t)
	fake, fakeURL := anthropictest.NewServer(t)
	fake.SetResponder(func(req anthropictest.Request) anthropictest.Reply {
		// A little model time makes the turns overlap across the nodes.
		return anthropictest.Echo(req).WithDelay(2 * time.Millisecond)
	})
	env = append(env, "ANTHROPIC_API_KEY=sk-ant-twonode", "ANTHROPIC_BASE_URL="+fakeURL)

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "agentd.toml"), `
[model]
max_retries = 0
[[agents]]
name = "support-chat"
kind = "chat"
system = "prompt.md"
[agents.memory]
max_turns = 1000
`)
	writeFile(t, filepath.Join(dir, "prompt.md"), "You help.")
	nodes := []string{startNode(t, dir, env), startNode(t, dir, env)}

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"userId":"u1","message":"message %03d"}`, i)
			resp, err := http.Post(nodes[i%2]+"/agents/support-chat", "application/json", strings.NewReader(body))
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				raw, _ := io.ReadAll(resp.Body)
				errs <- fmt.Sprintf("node %d: %d %s", i%2, resp.StatusCode, raw)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	for _, node := range nodes { // both nodes see the same history
		resp, err := http.Get(node + "/agents/support-chat/conversations/u1")
		if err != nil {
			t.Fatal(err)
		}
		var conv struct {
			Messages []struct{ Role, Content string }
		}
		err = json.NewDecoder(resp.Body).Decode(&conv)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(conv.Messages) != 2*n {
			t.Fatalf("%s stores %d entries, want %d", node, len(conv.Messages), 2*n)
		}
		seen := map[string]bool{}
		for i := 0; i < len(conv.Messages); i += 2 {
			u, a := conv.Messages[i], conv.Messages[i+1]
			if u.Role != "user" || a.Role != "assistant" {
				t.Fatalf("entries %d,%d are %s,%s: roles do not alternate", i, i+1, u.Role, a.Role)
			}
			if !strings.Contains(a.Content, u.Content) || seen[u.Content] {
				t.Fatalf("entry %d: %q answered by %q (interleaved or duplicated)", i, u.Content, a.Content)
			}
			seen[u.Content] = true
		}
	}
}
