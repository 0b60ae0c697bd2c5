package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// result is what a command printed and returned.
type result struct {
	code           int
	stdout, stderr string
}

// runAgentd runs the command in-process with the given environment.
func runAgentd(t *testing.T, environ map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut, func(k string) string { return environ[k] })
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		toml     string
		prompt   bool
		wantCode int
		want     []string // each must appear in the output
	}{
		{
			name:     "valid",
			toml:     "[[agents]]\nname = \"a\"\nkind = \"chat\"\nsystem = \"p.md\"\n",
			prompt:   true,
			wantCode: 0,
			want:     []string{"ok"},
		},
		{
			name:     "unknown key and missing prompt file, both named with lines",
			toml:     "[model]\nname = \"claude-sonnet-4-6\"\nmax_tokenz = 5\n\n[[agents]]\nname = \"a\"\nkind = \"chat\"\nsystem = \"missing.md\"\n",
			wantCode: 1,
			want:     []string{"agentd.toml:3: unknown key model.max_tokenz", "agentd.toml:8: agent \"a\": prompt file missing.md does not exist"},
		},
		{
			name:     "temperature is refused with the reason",
			toml:     "[model]\ntemperature = 0.2\n[[agents]]\nname = \"a\"\nkind = \"chat\"\nsystem = \"p.md\"\n",
			prompt:   true,
			wantCode: 1,
			want:     []string{"agentd.toml:2:", "temperature", "2026-10-21"},
		},
		{
			name:     "sampling keys in an agent table too",
			toml:     "[[agents]]\nname = \"a\"\nkind = \"chat\"\nsystem = \"p.md\"\ntop_p = 0.9\n",
			prompt:   true,
			wantCode: 1,
			want:     []string{"agentd.toml:5:", "agents.0.top_p", "removed"},
		},
		{
			name:     "unknown key in the second agent's memory table",
			toml:     "[[agents]]\nname = \"a\"\nkind = \"chat\"\nsystem = \"p.md\"\n[[agents]]\nname = \"b\"\nkind = \"chat\"\nsystem = \"p.md\"\n[agents.memory]\nnamespace = \"b\"\nmax_turn = 3\n",
			prompt:   true,
			wantCode: 1,
			want:     []string{"agentd.toml:11: unknown key agents.1.memory.max_turn"},
		},
		{
			name:     "semantic problems all reported",
			toml:     "[bindings]\nkv = \"memcache://x\"\n[[agents]]\nname = \"Bad Name\"\nkind = \"workflow\"\nsystem = \"p.md\"\n[agents.memory]\nmax_turns = 0\nttl = \"10s\"\n",
			prompt:   true,
			wantCode: 1,
			want:     []string{"agentd.toml:2: bindings.kv", "agentd.toml:4:", "Bad Name", "agentd.toml:5:", "\"workflow\"", "agentd.toml:8:", "max_turns", "agentd.toml:9:", "ttl"},
		},
		{
			name:     "syntax error with its line",
			toml:     "[model\nname = 1\n",
			wantCode: 1,
			want:     []string{"agentd.toml:1:"},
		},
		{
			name:     "two chat agents sharing conversations",
			toml:     "[[agents]]\nname = \"a\"\nkind = \"chat\"\nsystem = \"p.md\"\n[[agents]]\nname = \"b\"\nkind = \"chat\"\nsystem = \"p.md\"\n",
			prompt:   true,
			wantCode: 1,
			want:     []string{"would share conversations"},
		},
		{
			name:     "api key in the file",
			toml:     "[model]\napi_key = \"sk-ant-xyz\"\n[[agents]]\nname = \"a\"\nkind = \"chat\"\nsystem = \"p.md\"\n",
			prompt:   true,
			wantCode: 1,
			want:     []string{"agentd.toml:2:", "ANTHROPIC_API_KEY"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "agentd.toml"), tt.toml)
			if tt.prompt {
				writeFile(t, filepath.Join(dir, "p.md"), "You help.")
			}
			r := runAgentd(t, nil, "", "check", dir)
			out := r.stdout + r.stderr
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d; output:\n%s", r.code, tt.wantCode, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "sk-ant-xyz") {
				t.Error("check echoed the secret")
			}
		})
	}
}

func TestCheckExamples(t *testing.T) {
	dirs, err := filepath.Glob("../../examples/*/agentd.toml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range dirs {
		args := []string{"check", filepath.Dir(f)}
		if goFiles, _ := filepath.Glob(filepath.Join(filepath.Dir(f), "*.go")); len(goFiles) > 0 {
			// It embeds agentd: its agents are registered by its Go code.
			args = []string{"check", "--embedded", filepath.Dir(f)}
			if r := runAgentd(t, nil, "", "check", filepath.Dir(f)); r.code == 0 {
				t.Errorf("check without --embedded accepted %s, which declares no agents", f)
			}
		}
		if r := runAgentd(t, nil, "", args...); r.code != 0 {
			t.Errorf("check %s: exit %d\n%s", f, r.code, r.stderr)
		}
	}
}

func TestInitScaffoldsAProjectThatChecks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "My Bot")
	r := runAgentd(t, nil, "", "init", dir)
	if r.code != 0 {
		t.Fatalf("init: %d %s", r.code, r.stderr)
	}
	for _, f := range []string{"agentd.toml", "prompts/system.md", "README.md", ".gitignore"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("init did not create %s", f)
		}
	}
	if r := runAgentd(t, nil, "", "check", dir); r.code != 0 {
		t.Fatalf("check of a fresh project: %d %s", r.code, r.stderr)
	}
	toml, _ := os.ReadFile(filepath.Join(dir, "agentd.toml"))
	if !strings.Contains(string(toml), `name = "my-bot"`) {
		t.Errorf("agent name not derived from the directory:\n%s", toml)
	}
	if r := runAgentd(t, nil, "", "init", dir); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("second init: %d %s, want a refusal", r.code, r.stderr)
	}
}

func TestKVCommands(t *testing.T) {
	dir := t.TempDir()
	if r := runAgentd(t, nil, "", "init", dir); r.code != 0 {
		t.Fatal(r.stderr)
	}
	steps := []struct {
		args  []string
		stdin string
		code  int
		out   string
	}{
		{[]string{"kv", "put", "--dir", dir, "greeting", "hello"}, "", 0, ""},
		{[]string{"kv", "put", "--dir", dir, "from-stdin", "--file", "-", "--ttl", "1h", "--metadata", `{"a":1}`}, "piped", 0, ""},
		{[]string{"kv", "get", "--dir", dir, "greeting"}, "", 0, "hello"},
		{[]string{"kv", "get", "--dir", dir, "from-stdin", "--metadata"}, "", 0, `"metadata": {`},
		{[]string{"kv", "list", "--dir", dir}, "", 0, `"name": "from-stdin"`},
		{[]string{"kv", "list", "--dir", dir, "--prefix", "gr"}, "", 0, `"name": "greeting"`},
		{[]string{"kv", "put", "--dir", dir, "short", "x", "--ttl", "5s"}, "", 1, "60 seconds"},
		{[]string{"kv", "delete", "--dir", dir, "greeting"}, "", 0, ""},
		{[]string{"kv", "get", "--dir", dir, "greeting"}, "", 1, "not found"},
	}
	for _, s := range steps {
		r := runAgentd(t, nil, s.stdin, s.args...)
		if r.code != s.code || !strings.Contains(r.stdout+r.stderr, s.out) {
			t.Fatalf("agentd %s: exit %d, output %q%q; want exit %d with %q", strings.Join(s.args, " "), r.code, r.stdout, r.stderr, s.code, s.out)
		}
	}
}

func TestBlobCommands(t *testing.T) {
	dir := t.TempDir()
	if r := runAgentd(t, nil, "", "init", dir); r.code != 0 {
		t.Fatal(r.stderr)
	}
	src := filepath.Join(t.TempDir(), "faq.md")
	writeFile(t, src, "# FAQ\nReturns: 30 days.\n")
	out := filepath.Join(t.TempDir(), "copy.md")
	steps := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"blob", "put", "--dir", dir, "docs/faq.md", src, "--meta", "lang=en"}, 0, `"contentType": "text/markdown`},
		{[]string{"blob", "get", "--dir", dir, "docs/faq.md"}, 0, "Returns: 30 days."},
		{[]string{"blob", "get", "--dir", dir, "docs/faq.md", "-o", out}, 0, ""},
		{[]string{"blob", "ls", "--dir", dir, "--delimiter", "/"}, 0, `"docs/"`},
		{[]string{"blob", "ls", "--dir", dir, "docs/"}, 0, `"lang": "en"`},
		{[]string{"blob", "put", "--dir", dir, "../escape", src}, 1, "segment"},
		{[]string{"blob", "rm", "--dir", dir, "docs/faq.md"}, 0, ""},
		{[]string{"blob", "get", "--dir", dir, "docs/faq.md"}, 1, `"docs/faq.md"`},
	}
	for _, s := range steps {
		r := runAgentd(t, nil, "", s.args...)
		if r.code != s.code || !strings.Contains(r.stdout+r.stderr, s.out) {
			t.Fatalf("agentd %s: exit %d, output %q%q; want exit %d with %q", strings.Join(s.args, " "), r.code, r.stdout, r.stderr, s.code, s.out)
		}
	}
	if b, err := os.ReadFile(out); err != nil || !strings.Contains(string(b), "Returns: 30 days.") {
		t.Fatalf("blob get -o wrote %q, %v", b, err)
	}
}

func TestVersion(t *testing.T) {
	r := runAgentd(t, nil, "", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "agentd ") {
		t.Fatalf("version: %d %q", r.code, r.stdout)
	}
}

// startServer runs a serving command in-process on port 0 and returns its
// base URL; the server stops when the test ends.
func startServer(t *testing.T, environ map[string]string, args ...string) (string, *syncWriter) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan net.Addr, 1)
	stderr := &syncWriter{w: &bytes.Buffer{}}
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: stderr, getenv: func(k string) string { return environ[k] },
		onListen: func(a net.Addr) { addrs <- a }}
	done := make(chan int, 1)
	go func() { done <- e.execute(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("%s exited %d: %s", args[0], code, stderr.String())
		}
	})
	select {
	case a := <-addrs:
		return "http://" + a.String(), stderr
	case code := <-done:
		t.Fatalf("%s exited %d before listening: %s", args[0], code, stderr.String())
	}
	return "", nil
}

func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, m
}

func TestServeWithoutKeyStartsAndAnswers503(t *testing.T) {
	dir := t.TempDir()
	runAgentd(t, nil, "", "init", filepath.Join(dir, "proj"))
	url, _ := startServer(t, map[string]string{}, "serve", filepath.Join(dir, "proj"), "--listen", "127.0.0.1:0")
	code, body := post(t, url+"/agents/proj", `{"userId":"u1","message":"hi"}`)
	if code != http.StatusServiceUnavailable || body["error"].(map[string]any)["type"] != "model_unavailable" {
		t.Fatalf("serve without a key: %d %v", code, body)
	}
}

func TestDevRunsOfflineAndSaysSo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "proj")
	runAgentd(t, nil, "", "init", dir)
	for _, tc := range []struct {
		name    string
		environ map[string]string
		args    []string
	}{
		{"no key", map[string]string{}, nil},
		{"--offline with a key", map[string]string{"ANTHROPIC_API_KEY": "sk-ant-not-used", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1"}, []string{"--offline"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, stderr := startServer(t, tc.environ, append([]string{"dev", dir, "--port", "0"}, tc.args...)...)
			code, body := post(t, url+"/agents/proj", `{"userId":"u1","message":"My order is late"}`)
			if code != http.StatusOK || body["model"] != "offline" || !strings.Contains(body["message"].(string), "My order is late") {
				t.Fatalf("dev offline: %d %v", code, body)
			}
			if !strings.Contains(stderr.String(), "OFFLINE") {
				t.Fatalf("banner does not say offline:\n%s", stderr.String())
			}
		})
	}
}
