package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/internal/netguard"
	"github.com/agentd/agentd/store"
	"github.com/agentd/agentd/telemetry"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// FileName is the project file agentd reads from a project directory.
const FileName = "agentd.toml"

// Defaults for keys a project leaves out.
const (
	DefaultModel          = "claude-sonnet-4-6"
	DefaultMaxTokens      = 1024
	DefaultListen         = "127.0.0.1:8787"
	DefaultMaxBodyBytes   = 1 << 20
	DefaultRequestTimeout = 2 * time.Minute
	DefaultModelTimeout   = 60 * time.Second
	DefaultMaxRetries     = 2
	DefaultMaxTurns       = 10
	DefaultMemoryTTL      = 30 * 24 * time.Hour
	DefaultMaxMessage     = 32 << 10

	DefaultKVURL   = "bolt://.agentd/kv.db"
	DefaultBlobURL = "file://.agentd/blob"
	DefaultDBURL   = "sqlite://.agentd/agentd.db"
)

// Config is a parsed, defaulted agentd.toml.
type Config struct {
	Name     string   `toml:"name"`
	Bindings Bindings `toml:"bindings"`
	Model    Model    `toml:"model"`
	Server   Server   `toml:"server"`
	Outbound Outbound `toml:"outbound"`
	Seed     Seed     `toml:"seed"`
	Tracing  Tracing  `toml:"tracing"`
	// Pricing overrides or adds model prices, USD per million tokens, over
	// the table agentd ships.
	Pricing map[string]telemetry.Price `toml:"pricing"`
	// Vars are values templates and rules read as .vars / vars;
	// AGENTD_VAR_<NAME> (upper case) overrides one at start.
	Vars   map[string]any `toml:"vars"`
	Agents []Agent        `toml:"agents"`

	// Dir is the project directory; relative paths in the file are relative to it.
	Dir string `toml:"-"`
}

// Bindings name the stores by URL.
type Bindings struct {
	KV   string `toml:"kv"`
	Blob string `toml:"blob"`
	DB   string `toml:"db"`
}

// Model is the default model of the project's agents. The API key is never
// read from the file: it comes from ANTHROPIC_API_KEY.
type Model struct {
	Name       string   `toml:"name"`
	MaxTokens  int      `toml:"max_tokens"`
	Timeout    Duration `toml:"timeout"`
	MaxRetries *int     `toml:"max_retries"`
	// BreakerThreshold is how many consecutive failed calls open a
	// model's circuit breaker (0: 5; negative: never).
	BreakerThreshold int `toml:"breaker_threshold"`
	// BreakerCooldown is how long an open breaker fails fast before it
	// lets one probe through (0: 30s).
	BreakerCooldown Duration `toml:"breaker_cooldown"`
	BaseURL         string   `toml:"base_url"`

	APIKey string `toml:"-"`
}

// Tracing is [tracing]: OpenTelemetry spans over OTLP/HTTP, off unless an
// endpoint is set (here or in OTEL_EXPORTER_OTLP_ENDPOINT).
type Tracing struct {
	Endpoint    string            `toml:"endpoint"`
	Headers     map[string]string `toml:"headers"`
	ServiceName string            `toml:"service_name"`
	SampleRatio float64           `toml:"sample_ratio"`
}

// Server configures the HTTP server.
type Server struct {
	Listen         string   `toml:"listen"`
	MaxBodyBytes   int64    `toml:"max_body_bytes"`
	RequestTimeout Duration `toml:"request_timeout"`
}

// Agent declares one agent.
type Agent struct {
	Name            string      `toml:"name"`
	Kind            string      `toml:"kind"`   // chat or task
	System          string      `toml:"system"` // path of the system prompt file (a template for task agents)
	Model           string      `toml:"model"`
	MaxTokens       int         `toml:"max_tokens"`
	MaxMessageBytes int         `toml:"max_message_bytes"`
	Memory          Memory      `toml:"memory"`
	Fallback        Fallback    `toml:"fallback"`
	Limits          Limits      `toml:"limits"`
	Cache           PromptCache `toml:"cache"`

	// Task agents.
	Input          string             `toml:"input"`           // JSON Schema file of requests
	Output         string             `toml:"output"`          // JSON Schema file of answers
	Prompt         string             `toml:"prompt"`          // the user message template file
	IdempotencyKey string             `toml:"idempotency_key"` // a template naming a decision
	User           string             `toml:"user"`            // a template naming the request's user
	Response       string             `toml:"response"`        // CEL mapping the decision to the response body
	Context        []ContextSource    `toml:"context"`
	Preconditions  []PreconditionRule `toml:"preconditions"`
	Effects        []EffectRule       `toml:"effects"`
	Review         *ReviewRule        `toml:"review"`

	// SystemPrompt is the text of the System file, read by Load.
	SystemPrompt string `toml:"-"`
	// Task is a task agent's compiled declaration, made by Load.
	Task *agent.TaskConfig `toml:"-"`
	// ChatFallback is a chat agent's compiled fallback chain.
	ChatFallback agent.ChatFallback `toml:"-"`
}

// Memory is a chat agent's memory policy.
type Memory struct {
	// Strategy bounds a history: "prune" keeps the last max_turns
	// exchanges (the prompt's start moves every turn, so the prompt cache
	// misses); "compact" folds the oldest exchanges into a summary in
	// chunks once the history passes compact_at_tokens (the prompt's start
	// stays put between compactions, so the cache hits).
	Strategy        string   `toml:"strategy"`
	MaxTurns        *int     `toml:"max_turns"`
	CompactAtTokens int      `toml:"compact_at_tokens"`
	KeepTurns       int      `toml:"keep_turns"`
	TTL             Duration `toml:"ttl"`
	Namespace       string   `toml:"namespace"`
}

// PromptCache is [agents.cache]: automatic prompt-cache breakpoints.
type PromptCache struct {
	// TTL is "5m" (the default), "1h", or "off" to place none.
	TTL string `toml:"ttl"`
}

// Duration is a time.Duration written as a Go duration string ("90s",
// "1h30m") or a number of days ("30d").
type Duration struct{ time.Duration }

var daysPattern = regexp.MustCompile(`^(\d+)d(.*)$`)

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	var days time.Duration
	if m := daysPattern.FindStringSubmatch(s); m != nil {
		n, err := strconv.Atoi(m[1])
		if err != nil {
			return fmt.Errorf("invalid duration %q", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = m[2]
	}
	var rest time.Duration
	if s != "" {
		var err error
		if rest, err = time.ParseDuration(s); err != nil {
			return fmt.Errorf("invalid duration %q: write it like \"90s\", \"2h\" or \"30d\"", string(b))
		}
	}
	d.Duration = days + rest
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Problem is one thing wrong with a project, where it is.
type Problem struct {
	File    string
	Line    int // 0 when the problem has no line
	Message string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Message)
	}
	return fmt.Sprintf("%s: %s", p.File, p.Message)
}

// Problems is every problem found in a project; it is the error Load returns.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// removedSamplingKeys are keys the Claude API version agentd speaks
// (2026-10-21) removed; a project that sets them gets a reason, not just
// "unknown key".
var removedSamplingKeys = []string{"temperature", "top_p", "top_k"}

var agentNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Load reads and validates the project in dir. On any problem it returns
// Problems, listing every one found, each with its file and line.
func Load(dir string) (*Config, error) {
	return load(dir, false)
}

// LoadEmbedded is Load for a Go program that embeds agentd and serves
// agents of its own (App.Handle): the project may declare none.
func LoadEmbedded(dir string) (*Config, error) {
	return load(dir, true)
}

func load(dir string, embedded bool) (*Config, error) {
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(absDir, FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, Problems{{File: path, Message: "no agentd.toml here (run `agentd init DIR` to create a project)"}}
		}
		return nil, Problems{{File: path, Message: err.Error()}}
	}
	l := &loader{file: filepath.Join(dir, FileName), dir: absDir, embedded: embedded}
	cfg := l.parse(data)
	if cfg != nil {
		cfg.Dir = absDir
		l.defaults(cfg)
		l.validate(cfg)
	}
	if len(l.problems) > 0 {
		return nil, l.problems
	}
	return cfg, nil
}

type loader struct {
	embedded bool   // agents may come from Go code rather than the file
	file     string // as shown in problems
	dir      string
	lines    map[string]int // key path ("agents.0.system") → line
	problems Problems
}

func (l *loader) add(line int, format string, args ...any) {
	l.problems = append(l.problems, Problem{File: l.file, Line: line, Message: fmt.Sprintf(format, args...)})
}

// at returns the line of a key path, or of its closest enclosing table.
func (l *loader) at(path ...any) int {
	parts := make([]string, len(path))
	for i, p := range path {
		parts[i] = fmt.Sprint(p)
	}
	for n := len(parts); n > 0; n-- {
		if line, ok := l.lines[strings.Join(parts[:n], ".")]; ok {
			return line
		}
	}
	return 0
}

func (l *loader) parse(data []byte) *Config {
	var cfg Config
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	err := dec.Decode(&cfg)
	var strict *toml.StrictMissingError
	var de *toml.DecodeError
	switch {
	case errors.As(err, &strict):
	case errors.As(err, &de):
		row, _ := de.Position()
		l.add(row, "%s", de.Error())
		return nil
	case err != nil:
		l.add(0, "%v", err)
		return nil
	}
	// The document is valid TOML: index where its keys are, so problems
	// found from here on can name their lines.
	if err := l.index(data); err != nil {
		l.add(0, "%v", err)
		return nil
	}
	if strict != nil {
		paths := make(map[int]string, len(l.lines))
		for path, line := range l.lines {
			if len(path) > len(paths[line]) {
				paths[line] = path
			}
		}
		for _, e := range strict.Errors {
			row, _ := e.Position()
			key := strings.Join(e.Key(), ".")
			if indexed, ok := paths[row]; ok {
				key = indexed // names the array element: agents.1.memory.max_turn
			}
			last := key[strings.LastIndex(key, ".")+1:]
			switch {
			case slices.Contains(removedSamplingKeys, last):
				l.add(row, "%s: %s is not supported: Claude API version 2026-10-21 removed temperature, top_p and top_k; consistent answers come from precise prompts and cached decisions, not sampling settings", key, last)
			case last == "api_key":
				l.add(row, "%s: keep secrets out of agentd.toml; set ANTHROPIC_API_KEY in the environment", key)
			default:
				l.add(row, "unknown key %s", key)
			}
		}
	}
	return &cfg
}

// index records the line of every key, so problems found after decoding can
// say where they are. It is also the syntax check.
func (l *loader) index(data []byte) error {
	l.lines = make(map[string]int)
	var p unstable.Parser
	p.Reset(data)
	var table []string
	arrays := map[string]int{} // array-of-tables path → elements so far
	keyOf := func(n *unstable.Node) ([]string, int) {
		var parts []string
		line := 0
		it := n.Key()
		for it.Next() {
			k := it.Node()
			parts = append(parts, string(k.Data))
			if line == 0 {
				line = p.Shape(k.Raw).Start.Line
			}
		}
		return parts, line
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			parts, line := keyOf(e)
			table = l.resolve(parts, arrays)
			l.lines[strings.Join(table, ".")] = line
		case unstable.ArrayTable:
			parts, line := keyOf(e)
			// The header's own last part names the array, not an element.
			base := strings.Join(append(l.resolve(parts[:len(parts)-1], arrays), parts[len(parts)-1]), ".")
			idx := arrays[base]
			arrays[base] = idx + 1
			table = append(strings.Split(base, "."), strconv.Itoa(idx))
			l.lines[strings.Join(table, ".")] = line
		case unstable.KeyValue:
			parts, line := keyOf(e)
			l.lines[strings.Join(append(slices.Clone(table), parts...), ".")] = line
		}
	}
	return p.Error()
}

// resolve maps a table header's key onto indexed paths: [agents.memory]
// after the second [[agents]] is agents.1.memory.
func (l *loader) resolve(parts []string, arrays map[string]int) []string {
	var out []string
	for _, part := range parts {
		out = append(out, part)
		if n, ok := arrays[strings.Join(out, ".")]; ok && n > 0 {
			out = append(out, strconv.Itoa(n-1))
		}
	}
	return out
}

func (l *loader) defaults(cfg *Config) {
	if cfg.Bindings.KV == "" {
		cfg.Bindings.KV = DefaultKVURL
	}
	if cfg.Bindings.Blob == "" {
		cfg.Bindings.Blob = DefaultBlobURL
	}
	if cfg.Bindings.DB == "" {
		cfg.Bindings.DB = DefaultDBURL
	}
	if cfg.Model.Name == "" {
		cfg.Model.Name = DefaultModel
	}
	if cfg.Model.MaxTokens == 0 {
		cfg.Model.MaxTokens = DefaultMaxTokens
	}
	if cfg.Model.Timeout.Duration == 0 {
		cfg.Model.Timeout.Duration = DefaultModelTimeout
	}
	if cfg.Model.MaxRetries == nil {
		n := DefaultMaxRetries
		cfg.Model.MaxRetries = &n
	}
	if cfg.Server.Listen == "" {
		cfg.Server.Listen = DefaultListen
	}
	if cfg.Server.MaxBodyBytes == 0 {
		cfg.Server.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Server.RequestTimeout.Duration == 0 {
		cfg.Server.RequestTimeout.Duration = DefaultRequestTimeout
	}
	for i := range cfg.Agents {
		a := &cfg.Agents[i]
		if a.Model == "" {
			a.Model = cfg.Model.Name
		}
		if a.MaxTokens == 0 {
			a.MaxTokens = cfg.Model.MaxTokens
		}
		if a.MaxMessageBytes == 0 {
			a.MaxMessageBytes = DefaultMaxMessage
		}
		if a.Memory.MaxTurns == nil {
			n := DefaultMaxTurns
			a.Memory.MaxTurns = &n
		}
		if a.Memory.TTL.Duration == 0 {
			a.Memory.TTL.Duration = DefaultMemoryTTL
		}
	}
}

func (l *loader) validate(cfg *Config) {
	for name, u := range map[string]string{"kv": cfg.Bindings.KV, "blob": cfg.Bindings.Blob, "db": cfg.Bindings.DB} {
		if err := CheckStoreURL(name, u); err != nil {
			l.add(l.at("bindings", name), "bindings.%s: %v", name, err)
		}
	}
	if cfg.Model.MaxTokens < 0 {
		l.add(l.at("model", "max_tokens"), "model.max_tokens must be positive")
	}
	if *cfg.Model.MaxRetries < 0 || *cfg.Model.MaxRetries > 10 {
		l.add(l.at("model", "max_retries"), "model.max_retries must be between 0 and 10")
	}
	if cfg.Model.BreakerCooldown.Duration < 0 {
		l.add(l.at("model", "breaker_cooldown"), "model.breaker_cooldown must be positive")
	}
	if cfg.Model.Timeout.Duration < 0 {
		l.add(l.at("model", "timeout"), "model.timeout must be positive")
	}
	if cfg.Server.MaxBodyBytes < 0 {
		l.add(l.at("server", "max_body_bytes"), "server.max_body_bytes must be positive")
	}
	if cfg.Server.RequestTimeout.Duration < 0 {
		l.add(l.at("server", "request_timeout"), "server.request_timeout must be positive")
	}
	if len(cfg.Agents) == 0 {
		if !l.embedded {
			l.add(0, "no agents: declare at least one [[agents]] table")
		}
	}
	names := map[string]int{}
	namespaces := map[string]string{}
	for i := range cfg.Agents {
		a := &cfg.Agents[i]
		line := l.at("agents", i)
		switch {
		case a.Name == "":
			l.add(line, "agents[%d]: name is required", i)
		case !agentNamePattern.MatchString(a.Name):
			l.add(l.at("agents", i, "name"), "agents[%d]: name %q must be lowercase letters, digits, '-' or '_' (it is part of the URL)", i, a.Name)
		default:
			if first, dup := names[a.Name]; dup {
				l.add(l.at("agents", i, "name"), "agents[%d]: name %q is already used by agents[%d]", i, a.Name, first)
			}
			names[a.Name] = i
		}
		switch a.Kind {
		case "chat", "task":
		case "":
			l.add(line, "agent %q: kind is required (\"chat\" or \"task\")", a.Name)
		default:
			l.add(l.at("agents", i, "kind"), "agent %q: kind %q is not supported; use \"chat\" or \"task\"", a.Name, a.Kind)
		}
		l.checkLimits(a, i)
		if a.MaxTokens < 0 {
			l.add(l.at("agents", i, "max_tokens"), "agent %q: max_tokens must be positive", a.Name)
		}
		if a.MaxMessageBytes < 0 {
			l.add(l.at("agents", i, "max_message_bytes"), "agent %q: max_message_bytes must be positive", a.Name)
		}
		switch a.Cache.TTL {
		case "", "5m", "1h", "off":
		default:
			l.add(l.at("agents", i, "cache", "ttl"), "agent %q: cache.ttl must be \"5m\", \"1h\" or \"off\"", a.Name)
		}
		switch a.Memory.Strategy {
		case "", "prune", "compact":
		default:
			l.add(l.at("agents", i, "memory", "strategy"), "agent %q: memory.strategy must be \"prune\" or \"compact\"", a.Name)
		}
		if a.Memory.CompactAtTokens < 0 || a.Memory.KeepTurns < 0 {
			l.add(l.at("agents", i, "memory"), "agent %q: memory.compact_at_tokens and keep_turns must not be negative", a.Name)
		}
		if *a.Memory.MaxTurns < 1 {
			l.add(l.at("agents", i, "memory", "max_turns"), "agent %q: memory.max_turns must be at least 1", a.Name)
		}
		if a.Memory.TTL.Duration < time.Minute {
			l.add(l.at("agents", i, "memory", "ttl"), "agent %q: memory.ttl must be at least 60s (the KV minimum)", a.Name)
		}
		switch a.Kind {
		case "chat":
			l.compileChat(a, i)
			if other, dup := namespaces[a.Memory.Namespace]; dup {
				l.add(l.at("agents", i, "memory", "namespace"), "agents %q and %q would share conversations: give one a distinct memory.namespace", other, a.Name)
			}
			namespaces[a.Memory.Namespace] = a.Name
			l.readPrompt(a, i)
			for key, set := range map[string]bool{
				"input": a.Input != "", "output": a.Output != "", "prompt": a.Prompt != "", "idempotency_key": a.IdempotencyKey != "",
				"user": a.User != "", "response": a.Response != "", "context": len(a.Context) > 0,
				"preconditions": len(a.Preconditions) > 0, "effects": len(a.Effects) > 0, "review": a.Review != nil,
			} {
				if set {
					l.add(l.at("agents", i, key), "agent %q: %s is for task agents; this one is a chat agent", a.Name, key)
				}
			}
		case "task":
			if a.System != "" {
				l.readPrompt(a, i)
			}
			l.compileTask(cfg, a, i)
		default:
			l.readPrompt(a, i)
		}
	}
	l.validateOutbound(cfg)
	l.validateSeed(cfg)
	if _, err := telemetry.NewPricing(cfg.Pricing); err != nil {
		l.add(l.at("pricing"), "%s", clientMessage(err))
	}
	if r := cfg.Tracing.SampleRatio; r < 0 || r > 1 {
		l.add(l.at("tracing", "sample_ratio"), "tracing.sample_ratio must be between 0 and 1")
	}
}

func (l *loader) validateOutbound(cfg *Config) {
	p := netguard.Policy{Allow: cfg.Outbound.Allow, AllowPrivate: cfg.Outbound.AllowPrivate}
	if err := p.Validate(); err != nil {
		l.add(l.at("outbound"), "outbound: %s", err.Error())
	}
	if cfg.Outbound.Timeout.Duration < 0 {
		l.add(l.at("outbound", "timeout"), "outbound.timeout must be positive")
	}
}

func (l *loader) validateSeed(cfg *Config) {
	for j, f := range cfg.Seed.SQL {
		if !seedFileExists(l.dir, f) {
			l.add(l.at("seed", "sql"), "seed.sql[%d]: %s does not exist (nor a .sqlite or .postgres variant)", j, f)
		}
	}
	if d := cfg.Seed.Blob; d != "" {
		path := d
		if !filepath.IsAbs(path) {
			path = filepath.Join(l.dir, path)
		}
		if st, err := os.Stat(path); err != nil || !st.IsDir() {
			l.add(l.at("seed", "blob"), "seed.blob: %s is not a directory", d)
		}
	}
}

// readPrompt loads an agent's system prompt file and checks it.
func (l *loader) readPrompt(a *Agent, i int) {
	line := l.at("agents", i, "system")
	if a.System == "" {
		l.add(l.at("agents", i), "agent %q: system (a prompt file) is required", a.Name)
		return
	}
	path := a.System
	if !filepath.IsAbs(path) {
		path = filepath.Join(l.dir, path)
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		l.add(line, "agent %q: prompt file %s does not exist", a.Name, a.System)
		return
	case err != nil:
		l.add(line, "agent %q: prompt file %s: %v", a.Name, a.System, err)
		return
	}
	if !utf8.Valid(data) {
		bad := 1 + bytes.Count(data[:firstInvalidUTF8(data)], []byte("\n"))
		l.problems = append(l.problems, Problem{File: a.System, Line: bad, Message: "prompt file is not valid UTF-8"})
		return
	}
	if strings.TrimSpace(string(data)) == "" {
		l.add(line, "agent %q: prompt file %s is empty", a.Name, a.System)
		return
	}
	a.SystemPrompt = string(data)
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// Agent returns the agent of that name.
func (c *Config) Agent(name string) (*Agent, bool) {
	for i := range c.Agents {
		if c.Agents[i].Name == name {
			return &c.Agents[i], true
		}
	}
	return nil, false
}

// CheckStoreURL reports whether raw is a URL the binding can open.
func CheckStoreURL(binding, raw string) error { return store.CheckURL(binding, raw) }
