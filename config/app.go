package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/memory"
	"github.com/agentd/agentd/model/anthropic"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/server"
	"github.com/agentd/agentd/store"
	"github.com/agentd/agentd/store/migrate"
	"github.com/agentd/agentd/telemetry"
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
	Clock  agentd.Clock
}

// App is a project wired to its stores, model and agents.
type App struct {
	Config    *Config
	KV        agentd.KV
	Blob      agentd.Blob
	DB        agentd.DB
	Auditor   *telemetry.Auditor
	Chats     map[string]*agent.Chat
	ModelMode ModelMode
	// URLs are the store URLs in use, for the start banner.
	URLs Bindings

	logger  *slog.Logger
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
	app := &App{Config: cfg, Chats: map[string]*agent.Chat{}, logger: logger, URLs: cfg.Bindings}
	defer func() {
		if err != nil {
			_ = app.Close(context.WithoutCancel(ctx))
		}
	}()

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
	app.Auditor = telemetry.NewAuditor(app.DB, telemetry.WithLogger(logger))
	// Closers run in reverse: the auditor flushes before the DB closes.
	app.closers = append(app.closers, app.Auditor.Close)

	model, mode, err := newModel(cfg, opts, getenv)
	if err != nil {
		return nil, err
	}
	app.ModelMode = mode
	if mode == ModelUnavailable {
		logger.Warn("no API key configured: agents will answer 503 model_unavailable until ANTHROPIC_API_KEY is set")
	}

	locks, releaseLocks := store.LockerFor(app.KV)
	app.closers = append(app.closers, func(context.Context) error { return releaseLocks() })
	for _, a := range cfg.Agents {
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
		}, agent.ChatDeps{
			Model:  model,
			Memory: memory.New(app.KV, memory.Options{Namespace: a.Memory.Namespace, TTL: a.Memory.TTL.Duration, Clock: clock}),
			Locks:  locks,
			Audit:  app.Auditor,
			Clock:  clock,
		})
	}
	return app, nil
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
		fake := anthropictest.New()
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
	retries := *cfg.Model.MaxRetries
	if retries == 0 {
		retries = -1 // anthropic.Config: 0 would mean the SDK default
	}
	m, err := anthropic.New(anthropic.Config{
		APIKey:     key,
		BaseURL:    baseURL,
		MaxRetries: retries,
		Timeout:    cfg.Model.Timeout.Duration,
	})
	return m, ModelAnthropic, err
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
		MaxBodyBytes:   a.Config.Server.MaxBodyBytes,
		RequestTimeout: a.Config.Server.RequestTimeout.Duration,
		Logger:         logger,
		Ready:          a.Ready,
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
