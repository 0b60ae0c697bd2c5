package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentd/agentd"
	"golang.org/x/sync/errgroup"
)

// SourceKind says where a context source reads from.
type SourceKind string

// The kinds of context source.
const (
	SourceSQL  SourceKind = "sql"
	SourceBlob SourceKind = "blob"
	SourceKV   SourceKind = "kv"
	SourceHTTP SourceKind = "http"
)

// Default size limits of what one source may bring into a request.
const (
	DefaultBlobSourceMaxBytes = 10 << 20
	DefaultHTTPSourceMaxBytes = 1 << 20
)

// Source is one named piece of context a task gathers before it asks the
// model: a SQL query, a blob, a KV value or an HTTP GET, addressed by
// expressions and templates over the input (and over other sources, which
// are then fetched first). Sources that do not depend on each other are
// fetched concurrently.
type Source struct {
	Name string
	Kind SourceKind

	Query string  // sql: the statement, with $1… parameters
	Args  []*Expr // sql: the parameters, CEL over input and context
	Many  bool    // sql: every row (a list) rather than the first (an object)

	Key *Template // blob and kv: the key

	URL     *Template            // http: the URL, which the outbound policy must allow
	Headers map[string]*Template // http

	// Required makes a missing row, object or key answer 404 naming the
	// source, instead of an empty value.
	Required bool
	// Attach adds the source to the prompt as content blocks: blobs by type
	// (text, PDF document, image), other sources as JSON text. Blobs attach
	// by default.
	Attach bool
	// CacheTTL keeps a blob's bytes in the KV this long (the two-tier cache:
	// the blob store is the truth, the KV the hot copy); 0 does not cache.
	CacheTTL time.Duration
	// MaxBytes refuses a larger blob or HTTP body; 0 means the default.
	MaxBytes int64
}

// Depends names the sources this one reads from.
func (s *Source) Depends() []string {
	var deps []string
	add := func(t *Template) {
		if t != nil {
			deps = append(deps, t.ContextRefs()...)
		}
	}
	add(s.Key)
	add(s.URL)
	for _, h := range s.Headers {
		add(h)
	}
	for _, a := range s.Args {
		deps = append(deps, a.ContextRefs()...)
	}
	slices.Sort(deps)
	return slices.Compact(deps)
}

// Static reports whether the source reads the same thing for every
// request: it depends on no input, directly or through other sources. Its
// blocks then go first in the prompt, before a cache breakpoint.
func (s *Source) static(staticSources map[string]bool) bool {
	free := func(t *Template) bool {
		if t == nil {
			return true
		}
		if !t.inputFree {
			return false
		}
		for _, r := range t.ContextRefs() {
			if !staticSources[r] {
				return false
			}
		}
		return true
	}
	if !free(s.Key) || !free(s.URL) {
		return false
	}
	for _, h := range s.Headers {
		if !free(h) {
			return false
		}
	}
	for _, a := range s.Args {
		if !a.inputFree() {
			return false
		}
		for _, r := range a.ContextRefs() {
			if !staticSources[r] {
				return false
			}
		}
	}
	return true
}

// SourceOrder checks that sources' dependencies name sources that exist
// and form no cycle, and returns them in waves: each wave depends only on
// earlier ones, so its sources can be fetched at once.
func SourceOrder(sources []Source) ([][]int, error) {
	index := map[string]int{}
	for i, s := range sources {
		index[s.Name] = i
	}
	deps := make([][]int, len(sources))
	for i := range sources {
		for _, d := range sources[i].Depends() {
			j, ok := index[d]
			if !ok {
				return nil, agentd.Errorf(agentd.KindInvalid, "context", "source %q reads context.%s, which no source provides", sources[i].Name, d)
			}
			if j == i {
				return nil, agentd.Errorf(agentd.KindInvalid, "context", "source %q reads itself", sources[i].Name)
			}
			deps[i] = append(deps[i], j)
		}
	}
	done := make([]bool, len(sources))
	var waves [][]int
	for left := len(sources); left > 0; {
		var wave []int
		for i := range sources {
			if done[i] {
				continue
			}
			ready := true
			for _, j := range deps[i] {
				ready = ready && done[j]
			}
			if ready {
				wave = append(wave, i)
			}
		}
		if len(wave) == 0 {
			var names []string
			for i := range sources {
				if !done[i] {
					names = append(names, sources[i].Name)
				}
			}
			return nil, agentd.Errorf(agentd.KindInvalid, "context", "sources %s depend on each other in a cycle", strings.Join(names, ", "))
		}
		for _, i := range wave {
			done[i] = true
		}
		left -= len(wave)
		waves = append(waves, wave)
	}
	return waves, nil
}

// SourceDeps are what sources read from.
type SourceDeps struct {
	KV   agentd.KV
	Blob agentd.Blob
	DB   agentd.DB
	// HTTP fetches http sources. It must enforce the outbound policy (see
	// internal/netguard); CheckURL is asked first, for a clear error.
	HTTP     *http.Client
	CheckURL func(rawURL string) error
}

// gathered is what one source brought.
type gathered struct {
	value  any            // what templates and expressions see as context.NAME
	blocks []agentd.Block // what is attached to the prompt
	ref    map[string]any // what the audit records: where it came from, not what it said
}

// gather fetches every source, wave by wave, each wave concurrently.
func gather(ctx context.Context, deps SourceDeps, sources []Source, waves [][]int, input any, vars map[string]any, now time.Time) ([]gathered, map[string]any, error) {
	out := make([]gathered, len(sources))
	values := map[string]any{}
	for _, wave := range waves {
		g, gctx := errgroup.WithContext(ctx)
		for _, i := range wave {
			tdata := TemplateData{Input: input, Context: values, Vars: vars}
			edata := ExprData{Input: input, Context: values, Vars: vars, Now: now}
			g.Go(func() error {
				got, err := fetch(gctx, deps, &sources[i], tdata, edata)
				if err != nil {
					return err
				}
				out[i] = got
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, nil, err
		}
		// Only between waves does the map grow: the wave's goroutines
		// read it, none writes it.
		values = maps.Clone(values)
		for _, i := range wave {
			values[sources[i].Name] = out[i].value
		}
	}
	return out, values, nil
}

func fetch(ctx context.Context, deps SourceDeps, s *Source, tdata TemplateData, edata ExprData) (gathered, error) {
	switch s.Kind {
	case SourceSQL:
		return fetchSQL(ctx, deps, s, edata)
	case SourceBlob:
		return fetchBlob(ctx, deps, s, tdata)
	case SourceKV:
		return fetchKV(ctx, deps, s, tdata)
	case SourceHTTP:
		return fetchHTTP(ctx, deps, s, tdata)
	}
	return gathered{}, agentd.Errorf(agentd.KindInternal, "context", "source %q has unknown kind %q", s.Name, s.Kind)
}

func sourceErr(s *Source, err error) error {
	ae := agentd.AsError(err)
	return &agentd.Error{Kind: ae.Kind, Op: "context." + s.Name, Message: fmt.Sprintf("context source %q: %s", s.Name, clientText(err)), Err: err, Field: ae.Field}
}

// clientText is an error's most specific message.
func clientText(err error) string {
	msg := err.Error()
	for e := err; e != nil; {
		if ae, ok := e.(*agentd.Error); ok {
			if ae.Message != "" {
				msg = ae.Message
			}
			e = ae.Err
			continue
		}
		break
	}
	return msg
}

func notFound(s *Source, what string) error {
	return agentd.Errorf(agentd.KindNotFound, "context."+s.Name, "context source %q: %s not found", s.Name, what)
}

func fetchSQL(ctx context.Context, deps SourceDeps, s *Source, edata ExprData) (gathered, error) {
	args := make([]any, len(s.Args))
	for i, a := range s.Args {
		v, err := a.Value(edata)
		if err != nil {
			return gathered{}, sourceErr(s, err)
		}
		args[i] = sqlArg(v)
	}
	rows, err := deps.DB.Query(ctx, s.Query, args...)
	if err != nil {
		return gathered{}, sourceErr(s, err)
	}
	ref := map[string]any{"sql": s.Query, "args": args, "rows": len(rows.Values)}
	maps := rows.Maps()
	var value any
	switch {
	case s.Many:
		list := make([]any, len(maps))
		for i, m := range maps {
			list[i] = m
		}
		value = list
	case len(maps) > 0:
		value = maps[0]
	case s.Required:
		return gathered{}, notFound(s, fmt.Sprintf("no row for %s", argsText(args)))
	}
	g := gathered{value: value, ref: ref}
	if s.Attach {
		g.blocks = []agentd.Block{jsonBlock(s.Name, value)}
	}
	return g, nil
}

// sqlArg turns an expression's JSON-shaped value into a driver argument: a
// whole float is passed as an integer, so `id = $1` with a JSON number
// matches an integer column in both dialects.
func sqlArg(v any) any {
	if f, ok := v.(float64); ok && f == float64(int64(f)) && f >= -1<<53 && f <= 1<<53 {
		return int64(f)
	}
	return v
}

func argsText(args []any) string {
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = fmt.Sprintf("%v", a)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func jsonBlock(name string, v any) agentd.Block {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		b = []byte(fmt.Sprintf("%v", v))
	}
	return agentd.TextBlock(fmt.Sprintf("<context name=%q>\n%s\n</context>", name, b))
}

// blobCachePrefix is where blobs are kept in the KV, by blob key.
const blobCachePrefix = "blobcache:"

// blobMeta is what the KV copy of a blob keeps beside its bytes.
type blobMeta struct {
	ETag        string `json:"etag"`
	ContentType string `json:"contentType"`
}

func fetchBlob(ctx context.Context, deps SourceDeps, s *Source, tdata TemplateData) (gathered, error) {
	key, err := s.Key.Execute(tdata)
	if err != nil {
		return gathered{}, sourceErr(s, err)
	}
	if err := agentd.ValidateBlobKey(key); err != nil {
		return gathered{}, sourceErr(s, err)
	}
	limit := s.MaxBytes
	if limit <= 0 {
		limit = DefaultBlobSourceMaxBytes
	}
	data, meta, cached, err := readBlob(ctx, deps, s, key, limit)
	if err != nil {
		if agentd.KindOf(err) == agentd.KindNotFound {
			if s.Required {
				return gathered{}, notFound(s, "blob "+key)
			}
			return gathered{ref: map[string]any{"blob": key, "found": false}}, nil
		}
		return gathered{}, sourceErr(s, err)
	}
	ctype := contentType(meta.ContentType, key, data)
	g := gathered{ref: map[string]any{"blob": key, "etag": meta.ETag, "contentType": ctype, "size": len(data), "cached": cached}}
	block, text := blobBlock(s.Name, key, ctype, data)
	if text {
		g.value = string(data)
	} else {
		g.value = map[string]any{"key": key, "contentType": ctype, "size": len(data), "etag": meta.ETag}
	}
	if s.Attach {
		g.blocks = []agentd.Block{block}
	}
	return g, nil
}

// readBlob reads a blob whole, from the KV copy when there is one.
func readBlob(ctx context.Context, deps SourceDeps, s *Source, key string, limit int64) ([]byte, blobMeta, bool, error) {
	if s.CacheTTL > 0 && deps.KV != nil {
		if e, err := deps.KV.Get(ctx, blobCachePrefix+key); err == nil {
			var m blobMeta
			if json.Unmarshal(e.Metadata, &m) == nil {
				return e.Value, m, true, nil
			}
		}
	}
	body, err := deps.Blob.Get(ctx, key, agentd.BlobGetOptions{})
	if err != nil {
		return nil, blobMeta{}, false, err
	}
	defer body.Body.Close()
	if body.Size > limit {
		return nil, blobMeta{}, false, agentd.Errorf(agentd.KindTooLarge, "context", "blob %s is %d bytes, over the source's limit of %d", key, body.Size, limit)
	}
	data, err := io.ReadAll(io.LimitReader(body.Body, limit+1))
	if err != nil {
		return nil, blobMeta{}, false, agentd.E(agentd.KindStorageUnavailable, "context", err)
	}
	if int64(len(data)) > limit {
		return nil, blobMeta{}, false, agentd.Errorf(agentd.KindTooLarge, "context", "blob %s is over the source's limit of %d bytes", key, limit)
	}
	meta := blobMeta{ETag: body.ETag, ContentType: body.ContentType}
	if s.CacheTTL > 0 && deps.KV != nil && len(data) <= agentd.MaxKVValueBytes {
		md, _ := json.Marshal(meta)
		// A failed cache write costs only the next read's speed.
		_ = deps.KV.Put(ctx, blobCachePrefix+key, data, agentd.KVPutOptions{ExpirationTTL: max(s.CacheTTL, agentd.MinKVTTL), Metadata: md})
	}
	return data, meta, false, nil
}

// contentType settles a blob's media type: the stored one, unless it is
// missing or generic, then the key's extension, then the bytes.
func contentType(stored, key string, data []byte) string {
	if mt, _, err := mime.ParseMediaType(stored); err == nil && mt != "" && mt != "application/octet-stream" && mt != "binary/octet-stream" {
		return mt
	}
	switch strings.ToLower(path.Ext(key)) {
	case ".pdf":
		return "application/pdf"
	case ".md", ".markdown":
		return "text/markdown"
	case ".txt":
		return "text/plain"
	case ".json":
		return "application/json"
	case ".csv":
		return "text/csv"
	case ".html", ".htm":
		return "text/html"
	case ".png":
		return "image/png"
	case ".jpg", ".jpeg":
		return "image/jpeg"
	case ".gif":
		return "image/gif"
	case ".webp":
		return "image/webp"
	}
	mt, _, _ := mime.ParseMediaType(http.DetectContentType(data))
	return mt
}

// blobBlock turns a blob into what Claude reads: a PDF as a document block
// (Claude reads PDFs natively; casting their bytes to text gives garbage),
// an image as an image block, text as a text block. text reports whether
// the blob is text. Other binary types are refused: there is nothing
// honest to send.
func blobBlock(name, key, ctype string, data []byte) (agentd.Block, bool) {
	switch {
	case ctype == "application/pdf":
		return agentd.Block{Type: agentd.BlockDocument, MediaType: "application/pdf", Data: data, Title: key}, false
	case ctype == "image/png" || ctype == "image/jpeg" || ctype == "image/gif" || ctype == "image/webp":
		return agentd.Block{Type: agentd.BlockImage, MediaType: ctype, Data: data}, false
	case isText(ctype) || utf8.Valid(data) && !bytes.ContainsRune(data, 0):
		return agentd.TextBlock(fmt.Sprintf("<document name=%q key=%q>\n%s\n</document>", name, key, data)), true
	}
	return agentd.TextBlock(fmt.Sprintf("<document name=%q key=%q>(binary %s, %d bytes, not shown)</document>", name, key, ctype, len(data))), false
}

func isText(ctype string) bool {
	return strings.HasPrefix(ctype, "text/") || ctype == "application/json" || strings.HasSuffix(ctype, "+json") ||
		ctype == "application/xml" || strings.HasSuffix(ctype, "+xml") || ctype == "application/yaml"
}

func fetchKV(ctx context.Context, deps SourceDeps, s *Source, tdata TemplateData) (gathered, error) {
	key, err := s.Key.Execute(tdata)
	if err != nil {
		return gathered{}, sourceErr(s, err)
	}
	e, err := deps.KV.Get(ctx, key)
	switch {
	case agentd.KindOf(err) == agentd.KindNotFound:
		if s.Required {
			return gathered{}, notFound(s, "KV key "+key)
		}
		return gathered{ref: map[string]any{"kv": key, "found": false}}, nil
	case err != nil:
		return gathered{}, sourceErr(s, err)
	}
	g := gathered{value: decodeValue(e.Value), ref: map[string]any{"kv": key, "version": e.Version}}
	if s.Attach {
		g.blocks = []agentd.Block{jsonBlock(s.Name, g.value)}
	}
	return g, nil
}

// decodeValue reads stored bytes as JSON when they are JSON, else as text.
func decodeValue(b []byte) any {
	var v any
	if json.Unmarshal(b, &v) == nil {
		return v
	}
	return string(b)
}

func fetchHTTP(ctx context.Context, deps SourceDeps, s *Source, tdata TemplateData) (gathered, error) {
	url, err := s.URL.Execute(tdata)
	if err != nil {
		return gathered{}, sourceErr(s, err)
	}
	if deps.HTTP == nil {
		return gathered{}, agentd.Errorf(agentd.KindForbidden, "context."+s.Name, "context source %q: outbound HTTP is not configured", s.Name)
	}
	if deps.CheckURL != nil {
		if err := deps.CheckURL(url); err != nil {
			return gathered{}, sourceErr(s, err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return gathered{}, sourceErr(s, agentd.E(agentd.KindInvalid, "http", err))
	}
	req.Header.Set("Accept", "application/json, text/*;q=0.9")
	for k, t := range s.Headers {
		v, err := t.Execute(tdata)
		if err != nil {
			return gathered{}, sourceErr(s, err)
		}
		req.Header.Set(k, v)
	}
	resp, err := deps.HTTP.Do(req)
	if err != nil {
		return gathered{}, sourceErr(s, agentd.E(agentd.KindStorageUnavailable, "http", err))
	}
	defer resp.Body.Close()
	limit := s.MaxBytes
	if limit <= 0 {
		limit = DefaultHTTPSourceMaxBytes
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return gathered{}, sourceErr(s, agentd.E(agentd.KindStorageUnavailable, "http", err))
	}
	ref := map[string]any{"http": RedactURL(url), "status": resp.StatusCode}
	switch {
	case resp.StatusCode == http.StatusNotFound && !s.Required:
		return gathered{ref: ref}, nil
	case resp.StatusCode == http.StatusNotFound:
		return gathered{}, notFound(s, RedactURL(url))
	case resp.StatusCode >= 300:
		return gathered{}, agentd.Errorf(agentd.KindStorageUnavailable, "context."+s.Name, "context source %q: %s answered %d", s.Name, RedactURL(url), resp.StatusCode)
	case int64(len(body)) > limit:
		return gathered{}, agentd.Errorf(agentd.KindTooLarge, "context."+s.Name, "context source %q: the answer is over %d bytes", s.Name, limit)
	}
	g := gathered{ref: ref}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" || strings.HasSuffix(mt, "+json") {
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			return gathered{}, agentd.Errorf(agentd.KindStorageUnavailable, "context."+s.Name, "context source %q: the answer is not valid JSON", s.Name)
		}
		g.value = v
	} else {
		g.value = string(body)
	}
	if s.Attach {
		g.blocks = []agentd.Block{jsonBlock(s.Name, g.value)}
	}
	return g, nil
}

// RedactURL drops a URL's user info and query, which may hold secrets,
// from what is audited or shown.
func RedactURL(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if scheme, rest, ok := strings.Cut(raw, "://"); ok {
		host, p, _ := strings.Cut(rest, "/")
		if at := strings.LastIndex(host, "@"); at >= 0 {
			host = host[at+1:]
		}
		raw = scheme + "://" + host
		if p != "" {
			raw += "/" + p
		}
	}
	return raw
}
