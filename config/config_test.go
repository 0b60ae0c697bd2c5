package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"90s", 90 * time.Second, false},
		{"2h30m", 150 * time.Minute, false},
		{"30d", 30 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{" 7d ", 7 * 24 * time.Hour, false},
		{"d", 0, true},
		{"30 days", 0, true},
		{"1w", 0, true},
		{"", 0, false},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr || (err == nil && d.Duration != tt.want) {
			t.Errorf("Duration(%q) = %v, %v; want %v, error %v", tt.in, d.Duration, err, tt.want, tt.wantErr)
		}
	}
}

func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("agentd.toml", "[model]\nmax_tokens = 300\n[[agents]]\nname = \"a\"\nkind = \"chat\"\nsystem = \"p.md\"\n")
	write("p.md", "Be brief.")
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Agents[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"kv", cfg.Bindings.KV, DefaultKVURL},
		{"blob", cfg.Bindings.Blob, DefaultBlobURL},
		{"db", cfg.Bindings.DB, DefaultDBURL},
		{"model", a.Model, DefaultModel},
		{"agent max_tokens inherits [model]", a.MaxTokens, 300},
		{"max_turns", *a.Memory.MaxTurns, DefaultMaxTurns},
		{"ttl", a.Memory.TTL.Duration, 30 * 24 * time.Hour},
		{"listen", cfg.Server.Listen, DefaultListen},
		{"max body", cfg.Server.MaxBodyBytes, int64(1 << 20)},
		{"retries", *cfg.Model.MaxRetries, 2},
		{"prompt read", a.SystemPrompt, "Be brief."},
		{"dir absolute", filepath.IsAbs(cfg.Dir), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestStoreURLs(t *testing.T) {
	b := Bindings{KV: "bolt://a.db", Blob: "file://b", DB: "sqlite://c.db"}
	env := map[string]string{"AGENTD_KV_URL": "bolt:///tmp/other.db"}
	getenv := func(k string) string { return env[k] }
	if got := StoreURLs(b, false, getenv); got.KV != "bolt:///tmp/other.db" || got.Blob != "file://b" {
		t.Errorf("serve: %+v", got)
	}
	if got := StoreURLs(b, true, getenv); got.KV != "bolt://a.db" {
		t.Errorf("dev applied an environment override: %+v", got)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add("[[agents]]\nname = \"a\"\nkind = \"chat\"\nsystem = \"p.md\"\n")
	f.Add("[model\n")
	f.Add("[agents.memory]\nttl = \"3d\"\n[[agents]]\n")
	f.Add("[[agents]]\nname = \"t\"\nkind = \"task\"\noutput = \"o.json\"\nprompt = \"p.md\"\nidempotency_key = \"{{.id}}\"\n[[agents.context]]\nname = \"x\"\nsql = \"SELECT 1\"\nargs = [\"input.id\"]\n[[agents.effects]]\nkv = \"k\"\nvalue = \"{{json .output}}\"\nwhen = \"output.ok\"\n[agents.review]\nwhen = \"true\"\n")
	f.Add("[[agents]]\nname = \"c\"\nkind = \"chat\"\nsystem = \"p.md\"\n[agents.fallback]\ncanned = \"x\"\n[[agents.fallback.rules]]\nwhen = \"input.message == 'a'\"\nreply = \"b\"\n[agents.limits]\nrate = \"10/h\"\n")
	f.Fuzz(func(t *testing.T, toml string) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "agentd.toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(dir)
		if err == nil && len(cfg.Agents) == 0 {
			t.Fatal("a project with no agents passed validation")
		}
	})
}

func TestIndexNamesArrayElements(t *testing.T) {
	l := &loader{}
	doc := "name = \"x\"\n[[agents]]\nname = \"a\"\n[agents.memory]\nttl = \"1d\"\n[[agents]]\nname = \"b\"\n[agents.memory]\nmax_turns = 3\n"
	if err := l.index([]byte(doc)); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"name": 1, "agents.0": 2, "agents.0.name": 3, "agents.0.memory": 4, "agents.0.memory.ttl": 5,
		"agents.1": 6, "agents.1.name": 7, "agents.1.memory": 8, "agents.1.memory.max_turns": 9,
	}
	for path, line := range want {
		if l.lines[path] != line {
			t.Errorf("line of %s = %d, want %d", path, l.lines[path], line)
		}
	}
	if len(l.lines) != len(want) {
		t.Errorf("indexed %v, want exactly %v", l.lines, want)
	}
}
