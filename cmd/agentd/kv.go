package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/config"
	"github.com/agentd/agentd/store"
)

// withKV opens the KV of the project in dir (its URL from agentd.toml and
// AGENTD_KV_URL, as serve would) for the length of fn.
func (e *env) withKV(cmd *cobra.Command, dir string, fn func(kv agentd.KV) error) error {
	cfg, err := config.Load(dir)
	if err != nil {
		return err
	}
	urls := config.StoreURLs(cfg.Bindings, false, e.getenv)
	kv, err := store.OpenKV(cmd.Context(), urls.KV, cfg.Dir, agentd.SystemClock{})
	if err != nil {
		return fmt.Errorf("kv %s: %w", urls.KV, err)
	}
	defer kv.Close()
	return fn(kv)
}

func (e *env) kvCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Read and write the project's KV store",
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", ".", "project directory")

	var withMeta bool
	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Print the value of KEY (with --metadata: a JSON object with metadata and expiration)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withKV(cmd, dir, func(kv agentd.KV) error {
				entry, err := kv.Get(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if !withMeta {
					_, err = e.stdout.Write(entry.Value)
					return err
				}
				return e.printJSON(struct {
					Key        string          `json:"key"`
					Value      string          `json:"value"`
					Metadata   json.RawMessage `json:"metadata,omitempty"`
					Expiration time.Time       `json:"expiration,omitzero"`
				}{entry.Key, string(entry.Value), entry.Metadata, entry.Expiration})
			})
		},
	}
	get.Flags().BoolVar(&withMeta, "metadata", false, "print metadata and expiration too, as JSON")

	var (
		file     string
		ttl      time.Duration
		metadata string
	)
	put := &cobra.Command{
		Use:   "put KEY [VALUE]",
		Short: "Write VALUE (or --file PATH, or - for stdin) under KEY",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var value []byte
			switch {
			case len(args) == 2 && file != "":
				return fmt.Errorf("give VALUE or --file, not both")
			case len(args) == 2:
				value = []byte(args[1])
			case file == "-":
				b, err := io.ReadAll(io.LimitReader(e.stdin, agentd.MaxKVValueBytes+1))
				if err != nil {
					return err
				}
				value = b
			case file != "":
				b, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				value = b
			default:
				return fmt.Errorf("give VALUE, or --file PATH (- for stdin)")
			}
			opts := agentd.KVPutOptions{ExpirationTTL: ttl}
			if metadata != "" {
				opts.Metadata = json.RawMessage(metadata)
			}
			return e.withKV(cmd, dir, func(kv agentd.KV) error {
				return kv.Put(cmd.Context(), args[0], value, opts)
			})
		},
	}
	put.Flags().StringVar(&file, "file", "", "read the value from a file (- for stdin)")
	put.Flags().DurationVar(&ttl, "ttl", 0, "expire the key after this long (at least 60s)")
	put.Flags().StringVar(&metadata, "metadata", "", "JSON metadata to store with the value (at most 1024 bytes)")

	var (
		prefix, cursor string
		limit          int
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List keys as JSON, in UTF-8 byte order",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withKV(cmd, dir, func(kv agentd.KV) error {
				res, err := kv.List(cmd.Context(), agentd.KVListOptions{Prefix: prefix, Cursor: cursor, Limit: limit})
				if err != nil {
					return err
				}
				return e.printJSON(res)
			})
		},
	}
	list.Flags().StringVar(&prefix, "prefix", "", "only keys starting with this")
	list.Flags().StringVar(&cursor, "cursor", "", "continue after a previous page")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many keys (default and maximum 1000)")

	del := &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete KEY",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withKV(cmd, dir, func(kv agentd.KV) error {
				return kv.Delete(cmd.Context(), args[0])
			})
		},
	}
	cmd.AddCommand(get, put, list, del)
	return cmd
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
