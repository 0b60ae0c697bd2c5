package main

import (
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/config"
	"github.com/agentd/agentd/store"
)

// withBlob opens the Blob store of the project in dir for the length of fn.
func (e *env) withBlob(cmd *cobra.Command, dir string, fn func(b agentd.Blob) error) error {
	cfg, err := config.Load(dir)
	if err != nil {
		return err
	}
	urls := config.StoreURLs(cfg.Bindings, false, e.getenv)
	b, err := store.OpenBlob(cmd.Context(), urls.Blob, cfg.Dir, agentd.SystemClock{})
	if err != nil {
		return fmt.Errorf("blob %s: %w", urls.Blob, err)
	}
	defer b.Close()
	return fn(b)
}

func (e *env) blobCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "blob",
		Short: "Read and write the project's blob store",
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", ".", "project directory")

	var (
		contentType string
		meta        []string
	)
	put := &cobra.Command{
		Use:   "put KEY FILE",
		Short: "Store FILE (- for stdin) under KEY",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, file := args[0], args[1]
			opts := agentd.BlobPutOptions{ContentType: contentType}
			if opts.ContentType == "" {
				opts.ContentType = mime.TypeByExtension(filepath.Ext(key))
			}
			if len(meta) > 0 {
				opts.CustomMetadata = map[string]string{}
				for _, kv := range meta {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return fmt.Errorf("--meta %q: write it as key=value", kv)
					}
					opts.CustomMetadata[k] = v
				}
			}
			var body io.Reader = e.stdin
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				body = f
			}
			return e.withBlob(cmd, dir, func(b agentd.Blob) error {
				obj, err := b.Put(cmd.Context(), key, body, opts)
				if err != nil {
					return err
				}
				return e.printJSON(obj)
			})
		},
	}
	put.Flags().StringVar(&contentType, "content-type", "", "content type (default: from the key's extension)")
	put.Flags().StringArrayVar(&meta, "meta", nil, "custom metadata key=value (repeatable)")

	var out string
	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Write the object at KEY to stdout (or -o FILE)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withBlob(cmd, dir, func(b agentd.Blob) error {
				body, err := b.Get(cmd.Context(), args[0], agentd.BlobGetOptions{})
				if err != nil {
					return err
				}
				defer body.Body.Close()
				var w io.Writer = e.stdout
				if out != "" {
					f, err := os.Create(out)
					if err != nil {
						return err
					}
					defer f.Close()
					w = f
				}
				_, err = io.Copy(w, body.Body)
				return err
			})
		},
	}
	get.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of stdout")

	var (
		delimiter, cursor string
		limit             int
	)
	ls := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List objects as JSON, in UTF-8 byte order of their keys",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := agentd.BlobListOptions{Delimiter: delimiter, Cursor: cursor, Limit: limit}
			if len(args) == 1 {
				opts.Prefix = args[0]
			}
			return e.withBlob(cmd, dir, func(b agentd.Blob) error {
				res, err := b.List(cmd.Context(), opts)
				if err != nil {
					return err
				}
				return e.printJSON(res)
			})
		},
	}
	ls.Flags().StringVar(&delimiter, "delimiter", "", "group keys by this delimiter (e.g. /)")
	ls.Flags().StringVar(&cursor, "cursor", "", "continue after a previous page")
	ls.Flags().IntVar(&limit, "limit", 0, "at most this many entries (default and maximum 1000)")

	rm := &cobra.Command{
		Use:   "rm KEY...",
		Short: "Delete objects",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.withBlob(cmd, dir, func(b agentd.Blob) error {
				return b.Delete(cmd.Context(), args...)
			})
		},
	}
	cmd.AddCommand(put, get, ls, rm)
	return cmd
}
