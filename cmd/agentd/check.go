package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/agentd/agentd/config"
)

func (e *env) checkCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check [DIR]",
		Short: "Validate agentd.toml and its prompt files; print every problem with file and line",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(projectDir(args))
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "ok: %s — %d agent(s)\n", config.FileName, len(cfg.Agents))
			return nil
		},
	}
}
