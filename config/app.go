package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/coord"
	"github.com/agentd/agentd/decision"
	"github.com/agentd/agentd/memory"
	"github.com/agentd/agentd/model/anthropic"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/model/resilient"
	"github.com/agentd/agentd/server"
	"github.com/agentd/agentd/store"
	"github.com/agentd/agentd/store/migrate"
	"github.com/agentd/agentd/telemetry"
	"github.com/jonboulle/clockwork"
)

// ModelMode says what answers the agents.
type ModelMode string

// The model modes.
const (
	ModelAnthropic   ModelMode = "anthropic"   // the Claude API
	ModelOffline     ModelMode = "offline"     // the built-in fake model (agentd dev without a key, or --offline)
	ModelUnavailable ModelMode = "unavailable" // no key: agents answer 503 model_unavailable
)

// OfflineModelLabel is what replies of the offline model report as "model".
const OfflineModelLabel = "offline"

// Options say how to run a project.
type Options struct {
	// Dev runs the project for development: embedded stores under
	// DIR/.agentd (store URL environment overrides are ignored), and the
	// offline model when no API key is set.
	Dev bool
	// Offline forces the offline model even when a key is set (dev only).
	Offline bool
	// Getenv reads the environment; nil means os.Getenv. Tests pass their own.
	Getenv func(string) string
	Logger *slog.Logger
	// Clock is the time of expiry, audit and budgets; when it is also a
	// clockwork.Clock (a test's fake), retry backoff and the circuit
	// breakers wait on it too.
	Clock agentd.Clock
}

// App is a project wired to its stores, model and agents.
type App struct {
	Config    *Config
	KV        agentd.KV
	Blob      agentd.Blob
	DB        agentd.DB
	Auditor   *telemetry.Auditor
	Metrics   *telemetry.Metrics
	Tracing   *telemetry.Tracing
	Decisions *decision.Store
	Chats     map[string]*agent.Chat
	Tasks     map[string]*agent.Task
	Customs   map[string]*agent.Custom // agents written in Go, added with Handle
	ModelMode ModelMode
	// URLs are the store URLs in use, for the start banner.
	URLs Bindings
	// Dev says the app runs under agentd dev.
	Dev bool

	logger  *slog.Logger
	model   agentd.Model
	clock   agentd.Clock
	tel     agent.Telemetry
	closers []func(context.Context) error
}

// Open wires cfg into a running App. Close it when done.
func Open(ctx context.Context, cfg *Config, opts Options) (_ *App, err error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	clock := opts.Clock
	if clock == nil {
		clock = agentd.SystemClock{}
	}
	app := &App{Config: cfg, Chats: map[string]*agent.Chat{}, Tasks: map[string]*agent.Task{}, Customs: map[string]*agent.Custom{},
		logger: logger, clock: clock, URLs: cfg.Bindings}
	defer func() {
		if err != nil {
			_ = app.Close(context.WithoutCancel(ctx))
		}
	}()

	app.Dev = opts.Dev
	app.URLs = StoreURLs(cfg.Bindings, opts.Dev, getenv)
	if app.KV, err = store.OpenKV(ctx, app.URLs.KV, cfg.Dir, clock); err != nil {
		return nil, fmt.Errorf("kv %s: %w", app.URLs.KV, err)
	}
	app.closers = append(app.closers, func(context.Context) error { return app.KV.Close() })
	if app.Blob, err = store.OpenBlob(ctx, app.URLs.Blob, cfg.Dir, clock); err != nil {
		return nil, fmt.Errorf("blob %s: %w", app.URLs.Blob, err)
	}
	app.closers = append(app.closers, func(context.Context) error { return app.Blob.Close() })
	if app.DB, err = store.OpenDB(ctx, app.URLs.DB, cfg.Dir, clock, logger); err != nil {
		return nil, fmt.Errorf("db %s: %w", app.URLs.DB, err)
	}
	app.closers = append(app.closers, func(context.Context) error { return app.DB.Close() })
	if err := migrate.Apply(ctx, app.DB, migrate.Runtime()); err != nil {
		return nil, fmt.Errorf("migrating the runtime's tables: %w", err)
	}
	if err := applySeed(ctx, cfg, app.DB, app.Blob, clock); err != nil {
		return nil, err
	}
	app.Decisions = decision.New(app.DB, clock)
	app.Auditor = telemetry.NewAuditor(app.DB, telemetry.WithLogger(logger))
	// Closers run in reverse: the auditor flushes before the DB closes.
	app.closers = append(app.closers, app.Auditor.Close)
	app.Metrics = telemetry.NewMetrics()
	tcfg := telemetry.TracingConfig{Endpoint: cfg.Tracing.Endpoint, Headers: cfg.Tracing.Headers, ServiceName: cfg.Tracing.ServiceName, SampleRatio: cfg.Tracing.SampleRatio}
	if tcfg.Endpoint == "" {
		tcfg.Endpoint = getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if app.Tracing, err = telemetry.NewTracing(ctx, tcfg); err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	app.closers = append(app.closers, app.Tracing.Shutdown)
	pricing, err := telemetry.NewPricing(cfg.Pricing)
	if err != nil {
		return nil, err
	}

	model, mode, err := newModel(cfg, opts, getenv)
	if err != nil {
		return nil, err
	}
	if mode != ModelUnavailable {
		model = resilientModel(model, cfg, clock, app.Metrics, logger)
	}
	app.ModelMode = mode
	app.model = model
	tel := agent.Telemetry{Pricing: pricing, Metrics: app.Metrics, Tracer: app.Tracing.Tracer()}
	if mode != ModelAnthropic {
		tel.Pricing = nil // the offline model costs nothing
	}
	app.tel = tel
	if mode == ModelUnavailable {
		logger.Warn("no API key configured: agents will answer 503 model_unavailable until ANTHROPIC_API_KEY is set")
	}

	locks, releaseLocks := store.LockerFor(app.KV)
	app.closers = append(app.closers, func(context.Context) error { return releaseLocks() })
	vars := Vars(cfg.Vars, getenv)
	limiter, budgets := coord.NewRateLimiter(app.KV, clock), coord.NewBudgets(app.KV, clock)
	outbound, checkURL, err := newOutbound(OutboundFromEnv(cfg.Outbound, getenv))
	if err != nil {
		return nil, err
	}
	for _, a := range cfg.Agents {
		if a.Kind == "task" {
			tc := *a.Task
			tc.Vars = vars
			if mode == ModelOffline {
				tc.ModelLabel = OfflineModelLabel
			}
			task, err := agent.NewTask(tc, agent.TaskDeps{
				Model:     model,
				Sources:   agent.SourceDeps{KV: app.KV, Blob: app.Blob, DB: app.DB, HTTP: outbound, CheckURL: checkURL},
				Effects:   agent.EffectDeps{KV: app.KV, Decisions: app.Decisions, Locks: locks, HTTP: outbound, CheckURL: checkURL, Clock: clock},
				Audit:     app.Auditor,
				Clock:     clock,
				Logger:    logger,
				Telemetry: tel,
				Guard:     a.Limits.guard(limiter, budgets),
			})
			if err != nil {
				return nil, fmt.Errorf("agent %s: %w", a.Name, err)
			}
			app.Tasks[a.Name] = task
			continue
		}
		if a.Kind != "chat" {
			continue
		}
		label := ""
		if mode == ModelOffline {
			label = OfflineModelLabel
		}
		app.Chats[a.Name] = agent.NewChat(agent.ChatConfig{
			Name:            a.Name,
			Model:           a.Model,
			ModelLabel:      label,
			System:          a.SystemPrompt,
			MaxTokens:       a.MaxTokens,
			MaxTurns:        *a.Memory.MaxTurns,
			MaxMessageBytes: a.MaxMessageBytes,
			Limits:          agent.Limits{MaxSteps: a.Limits.MaxSteps, MaxTokens: a.Limits.MaxTokens},
			Compact:         compactPolicy(a.Memory),
			Cache:           cachePolicy(a.Cache),
			Fallback:        a.ChatFallback,
		}, agent.ChatDeps{
			Model:     model,
			Memory:    memory.New(app.KV, memory.Options{Namespace: a.Memory.Namespace, TTL: a.Memory.TTL.Duration, Clock: clock}),
			Locks:     locks,
			Audit:     app.Auditor,
			Clock:     clock,
			Telemetry: tel,
			KV:        app.KV,
			Reviews:   app.Decisions,
			Logger:    logger,
			Guard:     a.Limits.guard(limiter, budgets),
		})
	}
	if len(app.Tasks) > 0 {
		app.startResumer()
	}
	return app, nil
}

// Handle serves an agent written in Go at POST /agents/{name}: h gets the
// request body and an agent.Env with the project's bindings and its model
// (behind the same retries, limits and audit as declared agents). Call it
// before building the server. The name must not be a declared agent's.
func (a *App) Handle(name string, h agent.HandlerFunc, limits agent.Limits) error {
	if _, ok := a.Config.Agent(name); ok {
		return agentd.Errorf(agentd.KindConflict, "handle", "agent %q is declared in agentd.toml", name)
	}
	if _, ok := a.Customs[name]; ok {
		return agentd.Errorf(agentd.KindConflict, "handle", "agent %q has a handler already", name)
	}
	c, err := agent.NewCustom(name, h, agent.CustomDeps{
		Model: a.model, ModelName: a.Config.Model.Name, KV: a.KV, Blob: a.Blob, DB: a.DB, Decisions: a.Decisions,
		Audit: a.Auditor, Clock: a.clock, Logger: a.logger, Limits: limits, Telemetry: a.tel,
	})
	if err != nil {
		return err
	}
	a.Customs[name] = c
	return nil
}

// startResumer finishes, in the background, the effects of decisions a
// crash or a failed effect left pending. Every node runs one; the
// per-decision lock keeps two from applying the same decision.
func (a *App) startResumer() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(resumeInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for name, task := range a.Tasks {
				if n, err := task.Resume(ctx, resumeIdle); err != nil {
					a.logger.Warn("resuming pending effects failed", "agent", name, "error", err)
				} else if n > 0 {
					a.logger.Info("resumed pending effects", "agent", name, "decisions", n)
				}
			}
		}
	}()
	a.closers = append(a.closers, func(context.Context) error {
		cancel()
		<-done
		return nil
	})
}

// compactPolicy is a chat agent's compaction policy, nil when it prunes.
func compactPolicy(m Memory) *memory.CompactPolicy {
	if m.Strategy != "compact" {
		return nil
	}
	return &memory.CompactPolicy{TriggerTokens: m.CompactAtTokens, KeepTurns: m.KeepTurns}
}

// Vars are the project's [vars] with the environment's overrides:
// AGENTD_VAR_<NAME> (the key upper-cased, '-' as '_') replaces a value.
func Vars(vars map[string]any, getenv func(string) string) map[string]any {
	out := make(map[string]any, len(vars))
	for k, v := range vars {
		out[k] = jsonShape(v)
		if env := getenv("AGENTD_VAR_" + strings.ToUpper(strings.ReplaceAll(k, "-", "_"))); env != "" {
			out[k] = env
		}
	}
	return out
}

// OutboundFromEnv adds to [outbound] what the environment allows:
// AGENTD_OUTBOUND_ALLOW and AGENTD_OUTBOUND_ALLOW_PRIVATE, comma-separated,
// so a deployment can point an agent's webhook elsewhere (with
// AGENTD_VAR_…) without editing the project.
func OutboundFromEnv(o Outbound, getenv func(string) string) Outbound {
	split := func(v string) []string {
		var out []string
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out
	}
	o.Allow = append(append([]string(nil), o.Allow...), split(getenv("AGENTD_OUTBOUND_ALLOW"))...)
	o.AllowPrivate = append(append([]string(nil), o.AllowPrivate...), split(getenv("AGENTD_OUTBOUND_ALLOW_PRIVATE"))...)
	return o
}

// StoreURLs applies the store URL overrides of the environment, or, for
// dev, keeps every store embedded.
func StoreURLs(b Bindings, dev bool, getenv func(string) string) Bindings {
	if dev {
		if !store.Embedded(b.KV) {
			b.KV = DefaultKVURL
		}
		if !store.Embedded(b.Blob) {
			b.Blob = DefaultBlobURL
		}
		if !store.Embedded(b.DB) {
			b.DB = DefaultDBURL
		}
		return b
	}
	for env, dst := range map[string]*string{"AGENTD_KV_URL": &b.KV, "AGENTD_BLOB_URL": &b.Blob, "AGENTD_DB_URL": &b.DB} {
		if v := getenv(env); v != "" {
			*dst = v
		}
	}
	return b
}

// newModel picks what answers the agents.
func newModel(cfg *Config, opts Options, getenv func(string) string) (agentd.Model, ModelMode, error) {
	key := getenv("ANTHROPIC_API_KEY")
	if opts.Dev && (opts.Offline || key == "") {
		// Offline answers chat with an echo and a forced tool call (a task's
		// structured output) with a value synthesized from its schema.
		fake := anthropictest.New()
		fake.SetResponder(anthropictest.Offline)
		m, err := anthropic.New(anthropic.Config{
			APIKey:     "offline",
			BaseURL:    "http://offline.agentd.invalid",
			HTTPClient: fake.HTTPClient(),
			MaxRetries: -1,
		})
		return m, ModelOffline, err
	}
	if key == "" {
		return unavailableModel{}, ModelUnavailable, nil
	}
	baseURL := cfg.Model.BaseURL
	if v := getenv("ANTHROPIC_BASE_URL"); v != "" {
		baseURL = v
	}
	// The SDK's retries stay off: model/resilient is the one retry layer.
	m, err := anthropic.New(anthropic.Config{
		APIKey:     key,
		BaseURL:    baseURL,
		MaxRetries: -1,
		Timeout:    cfg.Model.Timeout.Duration,
	})
	return m, ModelAnthropic, err
}

// resilientModel wraps the model in the one retry layer and a circuit
// breaker per model, reporting both to the metrics.
func resilientModel(inner agentd.Model, cfg *Config, clock agentd.Clock, metrics *telemetry.Metrics, logger *slog.Logger) *resilient.Model {
	rc := resilient.Config{
		MaxRetries:       *cfg.Model.MaxRetries,
		FailureThreshold: cfg.Model.BreakerThreshold,
		OpenFor:          cfg.Model.BreakerCooldown.Duration,
		OnRetry: func(model string, wait time.Duration, err error) {
			metrics.Retry(model)
		},
		OnBreakerChange: func(model string, from, to resilient.State) {
			metrics.BreakerState(model, to.String())
			logger.Warn("circuit breaker changed", "model", model, "from", from.String(), "to", to.String())
		},
	}
	if rc.MaxRetries == 0 {
		rc.MaxRetries = -1 // resilient.Config: 0 would mean its default
	}
	if c, ok := clock.(clockwork.Clock); ok {
		rc.Clock = c // tests drive backoff and the breaker with their clock
	}
	return resilient.New(inner, rc)
}

// unavailableModel answers every call with model_unavailable: the server
// still starts without a key, so health checks and stored data work.
type unavailableModel struct{}

func (unavailableModel) Generate(context.Context, agentd.ModelRequest) (agentd.ModelResponse, error) {
	return agentd.ModelResponse{}, agentd.Errorf(agentd.KindModelUnavailable, "model", "no API key configured: set ANTHROPIC_API_KEY and restart")
}

// ServerConfig is the configuration of the HTTP API that serves the app:
// its agents, the project's limits, and its readiness check.
func (a *App) ServerConfig(logger *slog.Logger) server.Config {
	return server.Config{
		Chats:          a.Chats,
		Tasks:          a.Tasks,
		Customs:        a.Customs,
		Decisions:      a.Decisions,
		MaxBodyBytes:   a.Config.Server.MaxBodyBytes,
		RequestTimeout: a.Config.Server.RequestTimeout.Duration,
		Logger:         logger,
		Ready:          a.Ready,
		DevWebhooks:    a.Dev,
		Auditor:        a.Auditor,
		Metrics:        a.Metrics,
		Tracer:         a.Tracing.Tracer(),
	}
}

// Ready checks that every store answers.
func (a *App) Ready(ctx context.Context) error {
	if _, err := a.KV.Get(ctx, "agentd:readyz"); err != nil && agentd.KindOf(err) != agentd.KindNotFound {
		return fmt.Errorf("kv: %w", err)
	}
	if _, err := a.Blob.Head(ctx, "agentd-readyz"); err != nil && agentd.KindOf(err) != agentd.KindNotFound {
		return fmt.Errorf("blob: %w", err)
	}
	if _, err := a.DB.Query(ctx, "SELECT 1"); err != nil {
		return fmt.Errorf("db: %w", err)
	}
	return nil
}

// Close flushes the audit log and closes the stores.
func (a *App) Close(ctx context.Context) error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i](ctx))
	}
	a.closers = nil
	return errors.Join(errs...)
}
