// Command agentd is the one binary of the agentd runtime: it serves projects
// (dev, serve), scaffolds and checks them (init, check), and reaches into
// their stores (kv, blob). Each subcommand is one file; the logic lives in
// the packages they call.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/agentd/agentd/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// env is what a command sees of its process, passed in so tests can run
// commands in-process.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// onListen, when set, is told the address a server bound (tests use
	// port 0).
	onListen func(net.Addr)
}

// exitError carries an exit code through cobra without printing twice.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	return e.execute(ctx, args)
}

func (e *env) execute(ctx context.Context, args []string) int {
	root := e.rootCmd()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.code
	}
	var problems config.Problems
	if errors.As(err, &problems) {
		for _, p := range problems {
			fmt.Fprintln(e.stderr, p)
		}
		return 1
	}
	fmt.Fprintln(e.stderr, "agentd:", err)
	return 1
}

func (e *env) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "agentd",
		Short:         "agentd runs stateful Claude agents",
		Long:          "agentd runs stateful Claude agents from a project directory holding agentd.toml:\nconversation memory in KV, documents in blob storage, records in SQL, every model call audited.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.AddCommand(e.devCmd(), e.serveCmd(), e.initCmd(), e.checkCmd(), e.kvCmd(), e.blobCmd(), e.benchCmd(), e.versionCmd())
	return root
}

// projectDir is the DIR argument, "." when absent.
func projectDir(args []string) string {
	if len(args) > 0 {
		return args[0]
	}
	return "."
}
