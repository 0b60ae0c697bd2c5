package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentd/agentd/config"
	"github.com/agentd/agentd/server"
)

func (e *env) serveCmd() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "serve [DIR]",
		Short: "Serve the project in DIR for production",
		Long: `Serve the project in DIR (default .) for production. Stores come from agentd.toml,
overridden by AGENTD_KV_URL, AGENTD_BLOB_URL and AGENTD_DB_URL. The address is --listen,
else AGENTD_LISTEN, else server.listen from agentd.toml. Without ANTHROPIC_API_KEY the
server still starts and agents answer 503 model_unavailable.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(projectDir(args))
			if err != nil {
				return err
			}
			addr := listen
			if addr == "" {
				addr = e.getenv("AGENTD_LISTEN")
			}
			if addr == "" {
				addr = cfg.Server.Listen
			}
			logger := slog.New(slog.NewJSONHandler(e.stderr, nil))
			app, err := config.Open(cmd.Context(), cfg, config.Options{Getenv: e.getenv, Logger: logger})
			if err != nil {
				return err
			}
			return e.serveApp(cmd.Context(), app, addr, logger, func(bound net.Addr) {
				logger.Info("agentd serving", "addr", bound.String(), "agents", len(app.Chats), "model", string(app.ModelMode),
					"kv", app.URLs.KV, "blob", app.URLs.Blob, "db", app.URLs.DB)
			})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen on (host:port)")
	return cmd
}

// serveApp serves app on addr until ctx is done, then drains requests in
// flight, flushes the audit log and closes the stores.
func (e *env) serveApp(ctx context.Context, app *config.App, addr string, logger *slog.Logger, started func(net.Addr)) (err error) {
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		err = errors.Join(err, app.Close(closeCtx))
	}()
	handler := server.New(app.ServerConfig(logger))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	started(ln.Addr())
	if e.onListen != nil {
		e.onListen(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down: draining requests in flight")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
