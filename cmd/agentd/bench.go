package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/agentd/agentd/bench"
)

func (e *env) benchCmd() *cobra.Command {
	cfg := bench.Default()
	var (
		smoke                       bool
		agentdPath, jsonOut, svgOut string
		skip                        []string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure agentd's added latency, throughput, capacity, lost turns and cost against a fake model",
		Long: `Measure agentd against a fake Claude API with a set model latency, side by side with the
direct call to the fake (the floor) and the naive Workers recipe (KV get, model call, KV put).

It generates a temporary project, starts agentd on it as a child process (this binary's
serve, or --agentd), and drives it with an open-loop load generator: requests are sent at a
fixed rate and their latency counts from when they were due. It reports the latency agentd
adds to the model's, the highest rate whose p99 stays under --added-limit, how many waiting
turns one node holds and the memory each costs, turns lost under concurrent messages to one
conversation, and billed input tokens per conversation; it prints a table and writes JSON
(--json) and an SVG chart (--svg). A full run takes a few minutes; --smoke takes seconds and
fails if agentd loses a turn or fails a request.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if smoke {
				cfg = smokeConfig(cfg, cmd.Flags())
			}
			for _, part := range skip {
				switch part {
				case "latency":
					cfg.ModelLatencies = nil
				case "throughput":
					cfg.ThroughputRates = nil
				case "capacity":
					cfg.Capacity = nil
				default:
					return fmt.Errorf("--skip %s: the parts that can be skipped are latency, throughput and capacity", part)
				}
			}
			if agentdPath == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("finding this binary to run as agentd (use --agentd): %w", err)
				}
				agentdPath = exe
			}
			cfg.Agentd = []string{agentdPath}
			cfg.Env = os.Environ()
			cfg.Command = commandLine(cmd)
			cfg.Progress = e.stderr
			rep, err := bench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if err := rep.WriteTable(e.stdout); err != nil {
				return err
			}
			if err := writeOutput(jsonOut, rep.WriteJSON); err != nil {
				return err
			}
			if err := writeOutput(svgOut, rep.WriteSVG); err != nil {
				return err
			}
			if failures := rep.Failures(); len(failures) > 0 {
				fmt.Fprintln(e.stderr, "agentd bench: FAILED:", strings.Join(failures, "; "))
				return exitError{code: 1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&smoke, "smoke", false, "a run of a few seconds (tiny rates and counts; load flags given explicitly still apply)")
	f.DurationSliceVar(&cfg.ModelLatencies, "model-latency", cfg.ModelLatencies, "model latencies of the latency table")
	f.Float64Var(&cfg.Rate, "rate", cfg.Rate, "requests per second of the latency table")
	f.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "warm-up of each scenario, not counted")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time of each scenario")
	f.Float64SliceVar(&cfg.ThroughputRates, "throughput-rates", cfg.ThroughputRates, "rates tried in turn for the throughput bound")
	f.DurationVar(&cfg.ThroughputLatency, "throughput-latency", cfg.ThroughputLatency, "model latency of the throughput steps")
	f.DurationVar(&cfg.AddedLimit, "added-limit", cfg.AddedLimit, "p99 added latency a throughput step must stay under")
	f.IntSliceVar(&cfg.Capacity, "capacity", cfg.Capacity, "in-flight turns of each capacity step")
	f.DurationVar(&cfg.CapacityLatency, "capacity-latency", cfg.CapacityLatency, "model latency of the capacity steps")
	f.IntVar(&cfg.Conversations, "conversations", cfg.Conversations, "conversations of the correctness scenario")
	f.IntVar(&cfg.Messages, "messages", cfg.Messages, "overlapping messages to each conversation of the correctness scenario")
	f.DurationVar(&cfg.CorrectnessLatency, "correctness-latency", cfg.CorrectnessLatency, "model latency of the correctness scenario")
	f.IntVar(&cfg.CostConversations, "cost-conversations", cfg.CostConversations, "conversations of the cost scenario")
	f.IntVar(&cfg.CostTurns, "cost-turns", cfg.CostTurns, "turns of each conversation of the cost scenario")
	f.IntVar(&cfg.HistoryTurns, "history-turns", cfg.HistoryTurns, "exchanges of history of each measured turn")
	f.IntVar(&cfg.MessageBytes, "message-bytes", cfg.MessageBytes, "size of each message")
	f.StringVar(&cfg.KVURL, "kv-url", "", "agentd's KV (AGENTD_KV_URL); default: the project's embedded bolt")
	f.StringVar(&cfg.BlobURL, "blob-url", "", "agentd's blob store (AGENTD_BLOB_URL); default: embedded files")
	f.StringVar(&cfg.DBURL, "db-url", "", "agentd's database (AGENTD_DB_URL); default: embedded SQLite")
	f.StringVar(&cfg.Dir, "dir", "", "where to make the temporary project (default: the system's temporary directory)")
	f.BoolVar(&cfg.Keep, "keep", false, "keep the temporary project afterwards")
	f.StringVar(&agentdPath, "agentd", "", "the agentd binary to measure (default: this one)")
	f.StringSliceVar(&skip, "skip", nil, "parts not to run: latency, throughput, capacity")
	f.StringVar(&jsonOut, "json", "", "write the report as JSON to this file")
	f.StringVar(&svgOut, "svg", "", "write a chart of added latency to this SVG file")
	return cmd
}

// smokeConfig is the smoke run's load, except what was given by flag.
func smokeConfig(cfg bench.Config, flags *pflag.FlagSet) bench.Config {
	s := bench.Smoke()
	unless := func(flag string, apply func()) {
		if !flags.Changed(flag) {
			apply()
		}
	}
	unless("model-latency", func() { cfg.ModelLatencies = s.ModelLatencies })
	unless("rate", func() { cfg.Rate = s.Rate })
	unless("warmup", func() { cfg.Warmup = s.Warmup })
	unless("duration", func() { cfg.Duration = s.Duration })
	unless("throughput-rates", func() { cfg.ThroughputRates = s.ThroughputRates })
	unless("throughput-latency", func() { cfg.ThroughputLatency = s.ThroughputLatency })
	unless("added-limit", func() { cfg.AddedLimit = s.AddedLimit })
	unless("capacity", func() { cfg.Capacity = s.Capacity })
	unless("capacity-latency", func() { cfg.CapacityLatency = s.CapacityLatency })
	unless("conversations", func() { cfg.Conversations = s.Conversations })
	unless("messages", func() { cfg.Messages = s.Messages })
	unless("correctness-latency", func() { cfg.CorrectnessLatency = s.CorrectnessLatency })
	unless("cost-conversations", func() { cfg.CostConversations = s.CostConversations })
	unless("cost-turns", func() { cfg.CostTurns = s.CostTurns })
	unless("history-turns", func() { cfg.HistoryTurns = s.HistoryTurns })
	unless("message-bytes", func() { cfg.MessageBytes = s.MessageBytes })
	cfg.Smoke = true
	return cfg
}

// commandLine is the command as given, for the report.
func commandLine(cmd *cobra.Command) string {
	parts := []string{cmd.CommandPath()}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		v := f.Value.String()
		switch f.Value.Type() {
		case "bool":
			parts = append(parts, "--"+f.Name)
			return
		case "durationSlice", "float64Slice", "intSlice", "stringSlice":
			v = strings.Trim(v, "[]")
		}
		parts = append(parts, "--"+f.Name+"="+v)
	})
	return strings.Join(parts, " ")
}

// writeOutput writes to path with write, when a path was given.
func writeOutput(path string, write func(w io.Writer) error) (err error) {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	return write(f)
}
