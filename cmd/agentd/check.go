package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/agentd/agentd/config"
)

func (e *env) checkCmd() *cobra.Command {
	var embedded bool
	cmd := &cobra.Command{
		Use:   "check [DIR]",
		Short: "Validate agentd.toml and the prompt, schema and seed files it names; print every problem with file and line",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			load := config.Load
			if embedded {
				load = config.LoadEmbedded
			}
			cfg, err := load(projectDir(args))
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "ok: %s — %d agent(s)\n", config.FileName, len(cfg.Agents))
			return nil
		},
	}
	cmd.Flags().BoolVar(&embedded, "embedded", false, "the project is embedded in a Go program that adds its own agents: it may declare none")
	return cmd
}
