package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
)

func (e *env) initCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "init DIR",
		Short: "Scaffold a new project in DIR: agentd.toml, a prompt file and a README",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			files := scaffold(projectName(dir))
			for name := range files {
				if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
					return fmt.Errorf("%s already exists; init never overwrites a file", filepath.Join(dir, name))
				} else if !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			for name, body := range files {
				path := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
					return err
				}
			}
			fmt.Fprintf(e.stdout, "created %s: agentd.toml, prompts/system.md, README.md, .gitignore\nnext: agentd check %s && agentd dev %s\n", dir, dir, dir)
			return nil
		},
	}
}

var unsafeName = regexp.MustCompile(`[^a-z0-9_-]+`)

// projectName derives an agent name from the directory name.
func projectName(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	name := strings.Trim(unsafeName.ReplaceAllString(strings.ToLower(filepath.Base(abs)), "-"), "-_")
	if name == "" {
		name = "assistant"
	}
	return name
}

func scaffold(name string) map[string]string {
	return map[string]string{
		"agentd.toml": fmt.Sprintf(`# agentd project. Every key is documented in docs/config.md.
name = %[1]q

[bindings]
kv   = "bolt://.agentd/kv.db"        # conversation memory
blob = "file://.agentd/blob"         # documents
db   = "sqlite://.agentd/agentd.db"  # audit log and records

[model]
name = "claude-sonnet-4-6"
max_tokens = 1024

[[agents]]
name = %[1]q
kind = "chat"
system = "prompts/system.md"

[agents.memory]
max_turns = 10   # exchanges kept per conversation
ttl = "30d"      # a conversation untouched this long is forgotten
`, name),
		"prompts/system.md": "You are a helpful assistant. Answer concisely and ask for details when a request is ambiguous.\n",
		"README.md": fmt.Sprintf(`# %[1]s

An [agentd](https://github.com/agentd/agentd) project.

    agentd check .   # validate agentd.toml and the prompt
    agentd dev .     # serve on http://127.0.0.1:8787 (offline model without ANTHROPIC_API_KEY)

    curl -s localhost:8787/agents/%[1]s -d '{"userId":"u1","message":"Hello"}'
`, name),
		".gitignore": ".agentd/\n",
	}
}
