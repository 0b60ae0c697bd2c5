// Package fsblob is the embedded Blob backend: it keeps objects as files in a
// directory, for a runtime that runs without an object store server.
//
// A root holds:
//
//	objects/ab/abcd…  one file per object, named by the hex SHA-256 of its key
//	tmp/              writes in progress, renamed into objects/ when complete
//
// An object file is a header followed by the body (see format.go). The header
// holds the key, size, etag, content type, custom metadata and upload time,
// so data and metadata change together with one rename: a reader that opened
// the old file reads the old object to its end, a reader that opens after the
// rename reads the new one, and a crash cannot pair one body with another
// body's metadata.
//
// Naming files by a hash of the key means no key can name a path outside the
// root, "a" and "a/b" coexist, and keys that differ only in case or Unicode
// normalization stay apart on file systems that fold names. The price is
// that file names carry no order, so listing reads every header (see List).
//
// Writes rely on POSIX rename replacing the destination atomically, even
// while readers hold it open.
package fsblob

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd"
)

const (
	// Objects are an agent's private data: only the owner of the process
	// reads them. os.CreateTemp already makes files 0600.
	dirPerm = 0o700

	defaultContentType = "application/octet-stream"

	// A temp file this old belongs to a write that crashed, not to one in
	// progress: a write keeps touching its file while it copies.
	staleTempAge = time.Hour

	copyBufferSize = 64 << 10
)

// Store is a Blob over a directory. It is safe for concurrent use, and
// several Stores (in one process or several) may share a root: every change
// is a rename or an unlink, which the file system orders.
type Store struct {
	objects string // root/objects
	tmp     string // root/tmp
	clock   agentd.Clock
	closed  atomic.Bool
}

var _ agentd.Blob = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock that stamps Uploaded times; the default is the
// wall clock. A nil clock keeps the default.
func WithClock(c agentd.Clock) Option {
	return func(s *Store) {
		if c != nil {
			s.clock = c
		}
	}
}

// Open opens the store at root, creating the directory if needed, and
// removes temp files that crashed writes left behind.
func Open(root string, opts ...Option) (*Store, error) {
	const op = "fsblob.open"
	if root == "" {
		return nil, agentd.InvalidField(op, "root", "root must not be empty")
	}
	s := &Store{
		objects: filepath.Join(root, "objects"),
		tmp:     filepath.Join(root, "tmp"),
		clock:   agentd.SystemClock{},
	}
	for _, o := range opts {
		o(s)
	}
	for _, dir := range []string{s.objects, s.tmp} {
		if err := os.MkdirAll(dir, dirPerm); err != nil {
			return nil, storageErr(op, err)
		}
	}
	if err := s.removeStaleTemps(); err != nil {
		return nil, storageErr(op, err)
	}
	return s, nil
}

// removeStaleTemps deletes temp files older than staleTempAge. Younger ones
// may belong to another Store writing to the same root right now. File
// times come from the OS's wall clock, so they are compared with time.Now,
// not with the injected clock.
func (s *Store) removeStaleTemps() error {
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return err
	}
	for _, e := range entries {
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // renamed or removed by its writer meanwhile
		}
		if err != nil {
			return err
		}
		if time.Since(info.ModTime()) < staleTempAge {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.tmp, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Close marks the store closed; later calls fail. Bodies already returned by
// Get stay readable until their own Close.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// Put streams body to a temp file, then renames it over the object's file.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, opts agentd.BlobPutOptions) (agentd.BlobObject, error) {
	const op = "blob.put"
	if err := agentd.ValidateBlobPut(key, opts); err != nil {
		return agentd.BlobObject{}, err
	}
	if err := s.ready(ctx, op); err != nil {
		return agentd.BlobObject{}, err
	}
	h := header{Key: key, ContentType: opts.ContentType}
	if h.ContentType == "" {
		h.ContentType = defaultContentType
	}
	if len(opts.CustomMetadata) > 0 {
		// A copy: the caller may reuse its map.
		h.CustomMetadata = maps.Clone(opts.CustomMetadata)
	}
	reserved, err := reservedHeaderSize(h)
	if err != nil {
		return agentd.BlobObject{}, agentd.E(agentd.KindInternal, op, err)
	}

	f, err := os.CreateTemp(s.tmp, "put-*")
	if err != nil {
		return agentd.BlobObject{}, storageErr(op, err)
	}
	committed := false
	defer func() {
		if !committed {
			// Errors are moot here: the put already failed, and a
			// leftover file is removed by a later Open.
			f.Close()
			os.Remove(f.Name())
		}
	}()

	// Space for the header first, the body after it, the header written
	// last into its space once size and etag are known: one pass over the
	// body, one file.
	if _, err := f.Write(make([]byte, prefixSize+reserved)); err != nil {
		return agentd.BlobObject{}, storageErr(op, err)
	}
	sum := md5.New()
	src := &bodyReader{ctx: ctx, r: body}
	n, err := io.CopyBuffer(io.MultiWriter(f, sum), src, make([]byte, copyBufferSize))
	if err != nil {
		if src.err != nil {
			// The body failed (or ctx ended), not the disk: keep the
			// reader's classification, if it has one.
			return agentd.BlobObject{}, agentd.E("", op, fmt.Errorf("reading the body: %w", src.err))
		}
		return agentd.BlobObject{}, storageErr(op, err)
	}
	h.Size = n
	h.ETag = hex.EncodeToString(sum.Sum(nil))
	// Stamped once the body is in, so Uploaded orders writes as they
	// complete. UTC, so the value returned here is the one read back.
	h.Uploaded = s.clock.Now().UTC()
	head, err := encodeHeader(h, reserved)
	if err != nil {
		return agentd.BlobObject{}, agentd.E(agentd.KindInternal, op, err)
	}
	if _, err := f.WriteAt(head, 0); err != nil {
		return agentd.BlobObject{}, storageErr(op, err)
	}
	// Sync before the rename, so the name never points to data that a crash
	// could lose.
	if err := f.Sync(); err != nil {
		return agentd.BlobObject{}, storageErr(op, err)
	}
	if err := f.Close(); err != nil {
		return agentd.BlobObject{}, storageErr(op, err)
	}
	// Last chance to honour a cancellation: after the rename the write is
	// done.
	if err := ctx.Err(); err != nil {
		return agentd.BlobObject{}, agentd.E("", op, err)
	}
	dst := s.path(key)
	if err := os.MkdirAll(filepath.Dir(dst), dirPerm); err != nil {
		return agentd.BlobObject{}, storageErr(op, err)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return agentd.BlobObject{}, storageErr(op, err)
	}
	committed = true
	// The object is visible now; syncing the directory makes the rename
	// survive a crash. If that fails the caller hears of it, although
	// readers may already see the new object (as with a network store that
	// times out after committing).
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return agentd.BlobObject{}, storageErr(op, err)
	}
	return h.object(), nil
}

// Get opens the object's file and returns a reader over the requested bytes
// of it. The file stays open until the body is closed, so the body is the
// object as it was when Get ran, even if it is overwritten or deleted
// meanwhile. ctx covers opening, not reading the body.
func (s *Store) Get(ctx context.Context, key string, opts agentd.BlobGetOptions) (*agentd.BlobBody, error) {
	const op = "blob.get"
	if err := agentd.ValidateBlobKey(key); err != nil {
		return nil, err
	}
	if err := s.ready(ctx, op); err != nil {
		return nil, err
	}
	f, h, start, err := s.openObject(op, key)
	if err != nil {
		return nil, err
	}
	if err := agentd.CheckBlobConditions(opts, h.ETag); err != nil {
		f.Close()
		return nil, err
	}
	offset, length, err := agentd.ResolveRange(opts.Range, h.Size)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &agentd.BlobBody{
		BlobObject: h.object(),
		Body:       &fileBody{SectionReader: io.NewSectionReader(f, start+offset, length), f: f},
		Offset:     offset,
		Length:     length,
	}, nil
}

// Head reads the object's header.
func (s *Store) Head(ctx context.Context, key string) (agentd.BlobObject, error) {
	const op = "blob.head"
	if err := agentd.ValidateBlobKey(key); err != nil {
		return agentd.BlobObject{}, err
	}
	if err := s.ready(ctx, op); err != nil {
		return agentd.BlobObject{}, err
	}
	f, h, _, err := s.openObject(op, key)
	if err != nil {
		return agentd.BlobObject{}, err
	}
	f.Close() // read-only: nothing to lose
	return h.object(), nil
}

// Delete unlinks the objects' files. Every key is validated before any is
// deleted, so a bad key deletes nothing. Readers that have an object open
// finish reading it.
func (s *Store) Delete(ctx context.Context, keys ...string) error {
	const op = "blob.delete"
	for _, k := range keys {
		if err := agentd.ValidateBlobKey(k); err != nil {
			return err
		}
	}
	if err := s.ready(ctx, op); err != nil {
		return err
	}
	dirs := map[string]bool{}
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return agentd.E("", op, err)
		}
		p := s.path(k)
		switch err := os.Remove(p); {
		case err == nil:
			dirs[filepath.Dir(p)] = true
		case !errors.Is(err, fs.ErrNotExist):
			return storageErr(op, err)
		}
	}
	// Make the unlinks durable, once per shard directory touched.
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := syncDir(d); err != nil {
			return storageErr(op, err)
		}
	}
	return nil
}

// List reads the header of every object file, keeps the keys the options
// select, sorts them by their bytes and cuts a page.
//
// That is O(n) in the number of objects, in time and memory, for every page:
// file names are hashes, so they give no order to walk in. It is accepted for
// the embedded backend, which holds one deployment's files, not a bucket of
// millions; a store that outgrows it wants an index or a network backend.
//
// The cursor is the last key of the page, or, when the page ends with a
// delimited prefix, that prefix followed by 0xFF: no UTF-8 key contains that
// byte, so the next page starts after every key under the prefix and the
// prefix is not listed twice.
func (s *Store) List(ctx context.Context, opts agentd.BlobListOptions) (agentd.BlobListResult, error) {
	const op = "blob.list"
	opts, err := agentd.NormalizeBlobList(opts)
	if err != nil {
		return agentd.BlobListResult{}, err
	}
	after, err := agentd.DecodeCursor(opts.Cursor)
	if err != nil {
		return agentd.BlobListResult{}, err
	}
	after = max(after, opts.StartAfter)
	if err := s.ready(ctx, op); err != nil {
		return agentd.BlobListResult{}, err
	}
	heads, err := s.scan(ctx, op, opts.Prefix, after)
	if err != nil {
		return agentd.BlobListResult{}, err
	}
	slices.SortFunc(heads, func(a, b header) int { return strings.Compare(a.Key, b.Key) })

	// Objects is never nil, so an empty page encodes as "objects": [].
	res := agentd.BlobListResult{Objects: []agentd.BlobObject{}}
	entries, lastPrefix := 0, ""
	for _, h := range heads {
		prefix := ""
		if opts.Delimiter != "" {
			if i := strings.Index(h.Key[len(opts.Prefix):], opts.Delimiter); i >= 0 {
				prefix = h.Key[:len(opts.Prefix)+i+len(opts.Delimiter)]
			}
		}
		// The keys under one prefix are adjacent in byte order.
		if prefix != "" && prefix == lastPrefix {
			continue
		}
		if entries == opts.Limit {
			res.Truncated = true
			break
		}
		entries++
		if prefix != "" {
			res.DelimitedPrefixes = append(res.DelimitedPrefixes, prefix)
			res.Cursor = agentd.EncodeCursor(prefix + "\xff")
			lastPrefix = prefix
			continue
		}
		res.Objects = append(res.Objects, h.object())
		res.Cursor = agentd.EncodeCursor(h.Key)
	}
	if !res.Truncated {
		res.Cursor = ""
	}
	return res, nil
}

// scan returns the headers of the objects whose key has prefix and sorts
// after after, in no order.
func (s *Store) scan(ctx context.Context, op, prefix, after string) ([]header, error) {
	shards, err := os.ReadDir(s.objects)
	if err != nil {
		return nil, storageErr(op, err)
	}
	var heads []header
	for _, shard := range shards {
		if err := ctx.Err(); err != nil {
			return nil, agentd.E("", op, err)
		}
		if !shard.IsDir() || !isLowerHex(shard.Name(), 2) {
			continue // not ours
		}
		dir := filepath.Join(s.objects, shard.Name())
		files, err := os.ReadDir(dir)
		if err != nil {
			return nil, storageErr(op, err)
		}
		for _, file := range files {
			name := file.Name()
			if !isLowerHex(name, 2*sha256.Size) || name[:2] != shard.Name() {
				continue // not ours
			}
			p := filepath.Join(dir, name)
			f, h, _, err := openFile(op, p)
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted since ReadDir
			}
			if err != nil {
				return nil, err
			}
			f.Close()
			if fileName(h.Key) != name {
				return nil, corrupt(op, p, "it holds key %q, which belongs in another file", h.Key)
			}
			if h.Key > after && strings.HasPrefix(h.Key, prefix) {
				heads = append(heads, h)
			}
		}
	}
	return heads, nil
}

// openObject opens key's file and reads its header. An absent file is
// KindNotFound.
func (s *Store) openObject(op, key string) (*os.File, header, int64, error) {
	p := s.path(key)
	f, h, start, err := openFile(op, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, header{}, 0, agentd.Errorf(agentd.KindNotFound, op, "no object with key %q", key)
	}
	if err != nil {
		return nil, header{}, 0, err
	}
	if h.Key != key {
		f.Close()
		return nil, header{}, 0, corrupt(op, p, "it holds key %q, not %q", h.Key, key)
	}
	return f, h, start, nil
}

// openFile opens an object file and reads its header. The error of an
// absent file wraps fs.ErrNotExist.
func openFile(op, path string) (*os.File, header, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, header{}, 0, storageErr(op, err)
	}
	h, start, err := readHeader(op, path, f)
	if err != nil {
		f.Close()
		return nil, header{}, 0, err
	}
	return f, h, start, nil
}

// path is where key's object lives. The first two hex digits name a
// subdirectory so no directory grows past 1/256 of the objects.
func (s *Store) path(key string) string {
	name := fileName(key)
	return filepath.Join(s.objects, name[:2], name)
}

func fileName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// ready fails if the store is closed or ctx is done.
func (s *Store) ready(ctx context.Context, op string) error {
	if s.closed.Load() {
		return agentd.Errorf(agentd.KindStorageUnavailable, op, "the store is closed")
	}
	if err := ctx.Err(); err != nil {
		return agentd.E("", op, err)
	}
	return nil
}

func storageErr(op string, err error) error {
	return agentd.E(agentd.KindStorageUnavailable, op, err)
}

// corrupt reports an object file that is not one this package wrote. It is
// KindInternal, not KindStorageUnavailable: retrying will not help. The
// message is safe for clients; the path is in the cause, for logs.
func corrupt(op, path, format string, args ...any) error {
	return &agentd.Error{
		Kind:    agentd.KindInternal,
		Op:      op,
		Message: "object file is corrupt",
		Err:     fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)),
	}
}

// syncDir flushes a directory's entries, so a rename or unlink in it
// survives a crash. Windows cannot open a directory for syncing, so there
// the rename's durability is left to the file system.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// bodyReader reads a Put's body, failing once ctx is done, and remembers its
// own error so Put can tell a failing body from a failing disk.
type bodyReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		b.err = err
		return 0, err
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// fileBody is a Get's body: a section of the object file, closing the file.
type fileBody struct {
	*io.SectionReader
	f *os.File
}

func (b *fileBody) Close() error { return b.f.Close() }
