package main

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/agentd/agentd/config"
)

func (e *env) devCmd() *cobra.Command {
	var (
		port    int
		offline bool
	)
	cmd := &cobra.Command{
		Use:   "dev [DIR]",
		Short: "Serve the project in DIR for development, on embedded stores",
		Long: `Serve the project in DIR (default .) on 127.0.0.1:8787 with embedded stores under
DIR/.agentd. With ANTHROPIC_API_KEY set, agents talk to Claude; without one (or with
--offline) they talk to a built-in offline model that echoes, so the whole loop runs
with no setup.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := projectDir(args)
			cfg, err := config.Load(dir)
			if err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			app, err := config.Open(cmd.Context(), cfg, config.Options{Dev: true, Offline: offline, Getenv: e.getenv, Logger: logger})
			if err != nil {
				return err
			}
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			return e.serveApp(cmd.Context(), app, addr, logger, func(bound net.Addr) {
				e.banner(dir, app, bound)
			})
		},
	}
	cmd.Flags().IntVar(&port, "port", 8787, "port to listen on (127.0.0.1)")
	cmd.Flags().BoolVar(&offline, "offline", false, "use the built-in offline model even when ANTHROPIC_API_KEY is set")
	return cmd
}

func (e *env) banner(dir string, app *config.App, addr net.Addr) {
	w := e.stderr
	fmt.Fprintf(w, "agentd dev: serving %s on http://%s\n", dir, addr)
	switch app.ModelMode {
	case config.ModelOffline:
		fmt.Fprintln(w, "  model:  OFFLINE — no ANTHROPIC_API_KEY (or --offline): a built-in model echoes chat messages and")
		fmt.Fprintln(w, "          fills task outputs with placeholders from their schemas; replies say \"model\": \"offline\".")
		fmt.Fprintln(w, "          Set ANTHROPIC_API_KEY to talk to Claude.")
	default:
		fmt.Fprintf(w, "  model:  %s via the Claude API\n", app.Config.Model.Name)
	}
	fmt.Fprintf(w, "  stores: kv %s, blob %s, db %s\n", app.URLs.KV, app.URLs.Blob, app.URLs.DB)
	names := make([]string, 0, len(app.Chats))
	for name := range app.Chats {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(w, "  agent:  curl -s http://%s/agents/%s -d '{\"userId\":\"u1\",\"message\":\"Hello\"}'\n", addr, name)
	}
	tasks := make([]string, 0, len(app.Tasks))
	for name := range app.Tasks {
		tasks = append(tasks, name)
	}
	slices.Sort(tasks)
	for _, name := range tasks {
		a, _ := app.Config.Agent(name)
		input := "a JSON object"
		if a.Input != "" {
			input = "a JSON object matching " + a.Input
		}
		fmt.Fprintf(w, "  agent:  POST http://%s/agents/%s with %s\n", addr, name, input)
	}
	if len(tasks) > 0 {
		fmt.Fprintf(w, "  review: curl -s 'http://%s/reviews?status=pending'   webhooks sent: http://%s/_dev/webhooks/{name}\n", addr, addr)
	}
}
