// Command reconcile-go embeds agentd and serves an agent written in Go: a
// reconciliation loop over the project's database, with the model behind
// agentd's retries, circuit breaker, limits, audit and cost ledger.
//
//	go run ./examples/reconcile-go                 # serves on 127.0.0.1:8787
//	curl -s -X POST localhost:8787/agents/reconcile
//
// Without ANTHROPIC_API_KEY it runs agentd's offline model, as agentd dev
// does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/agentd/agentd/config"
	"github.com/agentd/agentd/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "reconcile-go:", err)
		os.Exit(1)
	}
}

func run() error {
	_, self, _, _ := runtime.Caller(0)
	dir := flag.String("dir", filepath.Dir(self), "the project directory (agentd.toml)")
	addr := flag.String("listen", "127.0.0.1:8787", "address to serve on")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	cfg, err := config.LoadEmbedded(*dir)
	if err != nil {
		return err
	}
	app, err := config.Open(ctx, cfg, config.Options{Dev: true, Logger: logger})
	if err != nil {
		return err
	}
	defer app.Close(context.Background())
	if err := Register(app); err != nil {
		return err
	}

	srv := &http.Server{Addr: *addr, Handler: server.New(app.ServerConfig(logger)), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	logger.Info("serving", "addr", "http://"+*addr, "model", app.ModelMode, "agent", "POST /agents/reconcile")
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
