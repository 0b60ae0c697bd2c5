package fsblob

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.TestBlob(t, func(t *testing.T) agentd.Blob { return openStore(t, t.TempDir()) })
}

func openStore(t testing.TB, root string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(root, opts...)
	if err != nil {
		t.Fatalf("Open(%q): %v", root, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

func TestReopenSeesObjects(t *testing.T) {
	root := t.TempDir()
	// A clock in another zone, with nanoseconds: Uploaded comes back as the
	// same instant.
	at := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3*3600))
	s := openStore(t, root, WithClock(fixedClock(at)))
	ctx := t.Context()
	put, err := s.Put(ctx, "dir/a", strings.NewReader("alpha"), agentd.BlobPutOptions{
		ContentType: "text/plain", CustomMetadata: map[string]string{"m": "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !put.Uploaded.Equal(at) {
		t.Errorf("Put: Uploaded = %v, want %v", put.Uploaded, at)
	}
	if _, err := s.Put(ctx, "b", strings.NewReader("beta"), agentd.BlobPutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openStore(t, root)
	head, err := s2.Head(ctx, "dir/a")
	if err != nil {
		t.Fatalf("Head after reopen: %v", err)
	}
	if head.Size != 5 || head.ETag != put.ETag || head.ContentType != "text/plain" || head.CustomMetadata["m"] != "1" || !head.Uploaded.Equal(at) {
		t.Errorf("Head after reopen = %+v, want what Put returned: %+v", head, put)
	}
	res, err := s2.List(ctx, agentd.BlobListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range res.Objects {
		keys = append(keys, o.Key)
	}
	if !slices.Equal(keys, []string{"b", "dir/a"}) {
		t.Errorf("List after reopen = %q, want [b dir/a]", keys)
	}
}

func TestClosed(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	if _, err := s.Put(ctx, "k", strings.NewReader("v"), agentd.BlobPutOptions{}); err != nil {
		t.Fatal(err)
	}
	// A body opened before Close stays readable.
	body, err := s.Get(ctx, "k", agentd.BlobGetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer body.Body.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if data, err := io.ReadAll(body.Body); err != nil || string(data) != "v" {
		t.Errorf("reading a body after Close = %q, %v", data, err)
	}
	_, err = s.Put(ctx, "k", strings.NewReader("v"), agentd.BlobPutOptions{})
	wantKind(t, "Put", err, agentd.KindStorageUnavailable)
	_, err = s.Get(ctx, "k", agentd.BlobGetOptions{})
	wantKind(t, "Get", err, agentd.KindStorageUnavailable)
	_, err = s.Head(ctx, "k")
	wantKind(t, "Head", err, agentd.KindStorageUnavailable)
	wantKind(t, "Delete", s.Delete(ctx, "k"), agentd.KindStorageUnavailable)
	_, err = s.List(ctx, agentd.BlobListOptions{})
	wantKind(t, "List", err, agentd.KindStorageUnavailable)
}

func TestOpenErrors(t *testing.T) {
	_, err := Open("")
	wantKind(t, "Open of an empty root", err, agentd.KindInvalid)

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(file)
	wantKind(t, "Open of a file", err, agentd.KindStorageUnavailable)
}

// TestLayout pins the on-disk format: files written by one version must be
// readable by the next.
func TestLayout(t *testing.T) {
	root := t.TempDir()
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s := openStore(t, root, WithClock(fixedClock(at)))
	if _, err := s.Put(t.Context(), "a/b", strings.NewReader("body"), agentd.BlobPutOptions{ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	// sha256("a/b")
	const name = "c14cddc033f64b9dea80ea675cf280a015e672516090a5626781153dc68fea11"
	p := filepath.Join(root, "objects", name[:2], name)
	if p != s.path("a/b") {
		t.Fatalf("path(a/b) = %q, want %q", s.path("a/b"), p)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(data[:4]) != "AGB1" {
		t.Fatalf("file starts with %q", data[:4])
	}
	n := binary.BigEndian.Uint32(data[4:8])
	if int(n)+8+4 != len(data) || string(data[8+n:]) != "body" {
		t.Fatalf("header length %d in a %d-byte file", n, len(data))
	}
	var h map[string]any
	if err := json.Unmarshal(data[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"key": "a/b", "size": 4.0, "etag": "841a2d689ad86bd1611447453c22c6fc",
		"contentType": "text/plain", "uploaded": "2030-01-02T03:04:05Z",
	}
	if len(h) != len(want) {
		t.Errorf("header = %v, want %v", h, want)
	}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("header[%q] = %v, want %v", k, h[k], v)
		}
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"objects", "tmp"}) {
		t.Errorf("root holds %q, want [objects tmp]", names)
	}
}

func TestNoTempFilesAfterFailedPut(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root)
	ctx := t.Context()
	if _, err := s.Put(ctx, "k", strings.NewReader("old"), agentd.BlobPutOptions{}); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	failures := []struct {
		name string
		ctx  context.Context
		body func() io.Reader
		opts agentd.BlobPutOptions
	}{
		{"body fails", ctx, func() io.Reader {
			return io.MultiReader(strings.NewReader(strings.Repeat("x", 200<<10)), errReader{})
		}, agentd.BlobPutOptions{}},
		{"body fails at once", ctx, func() io.Reader { return errReader{} }, agentd.BlobPutOptions{}},
		{"cancelled", cancelled, func() io.Reader { return strings.NewReader("new") }, agentd.BlobPutOptions{}},
		{"metadata too large", ctx, func() io.Reader { return strings.NewReader("new") }, agentd.BlobPutOptions{
			CustomMetadata: map[string]string{"k": strings.Repeat("v", 4096)},
		}},
	}
	for _, f := range failures {
		for _, key := range []string{"k", "fresh"} {
			if _, err := s.Put(f.ctx, key, f.body(), f.opts); err == nil {
				t.Fatalf("%s: Put(%q) succeeded", f.name, key)
			}
			if got := dirNames(t, filepath.Join(root, "tmp")); len(got) != 0 {
				t.Errorf("%s: tmp holds %q after a failed Put", f.name, got)
			}
		}
	}
	if got := objectFiles(t, root); len(got) != 1 || got[0] != s.path("k") {
		t.Errorf("object files %q, want only k's", got)
	}
	res, err := s.Get(ctx, "k", agentd.BlobGetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if data, _ := io.ReadAll(res.Body); string(data) != "old" {
		t.Errorf("k = %q after failed puts, want old", data)
	}
}

func TestStaleTempsRemovedOnOpen(t *testing.T) {
	root := t.TempDir()
	openStore(t, root).Close()
	tmp := filepath.Join(root, "tmp")
	for _, name := range []string{"put-stale", "put-fresh"} {
		if err := os.WriteFile(filepath.Join(tmp, name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTempAge)
	if err := os.Chtimes(filepath.Join(tmp, "put-stale"), old, old); err != nil {
		t.Fatal(err)
	}
	openStore(t, root)
	// The fresh one may be another Store's write in progress.
	if got := dirNames(t, tmp); !slices.Equal(got, []string{"put-fresh"}) {
		t.Errorf("tmp holds %q after Open, want [put-fresh]", got)
	}
}

// TestReaderKeepsItsObject checks, without any timing, that a body opened
// before an overwrite or a delete reads the object it opened, whole.
func TestReaderKeepsItsObject(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	old := bytes.Repeat([]byte("old."), 50<<10)
	if _, err := s.Put(ctx, "k", bytes.NewReader(old), agentd.BlobPutOptions{}); err != nil {
		t.Fatal(err)
	}
	first, err := s.Get(ctx, "k", agentd.BlobGetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	second, err := s.Get(ctx, "k", agentd.BlobGetOptions{Range: &agentd.ByteRange{Offset: 4}})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Body.Close()
	// Half of the first body read before the overwrite, half after.
	half := make([]byte, len(old)/2)
	if _, err := io.ReadFull(first.Body, half); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "k", strings.NewReader("new"), agentd.BlobPutOptions{}); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(first.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(half, rest...); !bytes.Equal(got, old) {
		t.Errorf("body read across an overwrite: %d bytes, not the old object", len(got))
	}
	if err := s.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(second.Body); err != nil || !bytes.Equal(got, old[4:]) {
		t.Errorf("body read after a delete: %d bytes, %v; want the old object from 4", len(got), err)
	}
}

func TestCorruptObject(t *testing.T) {
	valid := func(t *testing.T, s *Store, key string) []byte {
		t.Helper()
		if _, err := s.Put(t.Context(), key, strings.NewReader("some body"), agentd.BlobPutOptions{}); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(s.path(key))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	withLength := func(data []byte, n uint32) []byte {
		data = bytes.Clone(data)
		binary.BigEndian.PutUint32(data[4:8], n)
		return data
	}
	tests := []struct {
		name    string
		content func(t *testing.T, s *Store) []byte
	}{
		{"empty", func(*testing.T, *Store) []byte { return nil }},
		{"short", func(*testing.T, *Store) []byte { return []byte("AGB") }},
		{"bad magic", func(t *testing.T, s *Store) []byte {
			d := valid(t, s, "k")
			copy(d, "XXXX")
			return d
		}},
		{"huge header length", func(t *testing.T, s *Store) []byte { return withLength(valid(t, s, "k"), 0xFFFFFFFF) }},
		{"header past the end", func(t *testing.T, s *Store) []byte {
			d := valid(t, s, "k")
			return withLength(d, uint32(len(d)))
		}},
		{"header not JSON", func(*testing.T, *Store) []byte { return rawFile("{{{{", "body") }},
		{"header not an object", func(*testing.T, *Store) []byte { return rawFile("[]", "") }},
		{"no key", func(*testing.T, *Store) []byte { return rawFile(`{"size":0} `, "") }},
		{"invalid key", func(*testing.T, *Store) []byte { return rawFile(`{"key":"../k","size":0}`, "") }},
		{"negative size", func(*testing.T, *Store) []byte { return rawFile(`{"key":"k","size":-1}`, "") }},
		{"size not a number", func(*testing.T, *Store) []byte { return rawFile(`{"key":"k","size":"4"}`, "body") }},
		{"body truncated", func(t *testing.T, s *Store) []byte {
			d := valid(t, s, "k")
			return d[:len(d)-3]
		}},
		{"body too long", func(t *testing.T, s *Store) []byte { return append(valid(t, s, "k"), "extra"...) }},
		{"another key's file", func(t *testing.T, s *Store) []byte { return valid(t, s, "other") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			ctx := t.Context()
			content := tc.content(t, s)
			s.Delete(ctx, "other") // only the corrupt file is left
			p := s.path("k")
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, content, 0o600); err != nil {
				t.Fatal(err)
			}
			wantCorrupt := func(what string, err error) {
				t.Helper()
				wantKind(t, what, err, agentd.KindInternal)
				var ae *agentd.Error
				if !errors.As(err, &ae) || ae.Message != "object file is corrupt" || !strings.Contains(err.Error(), p) {
					t.Errorf("%s: err = %v; want a corrupt-file error naming the file", what, err)
				}
			}
			_, err := s.Head(ctx, "k")
			wantCorrupt("Head", err)
			res, err := s.Get(ctx, "k", agentd.BlobGetOptions{})
			if err == nil {
				res.Body.Close()
			}
			wantCorrupt("Get", err)
			_, err = s.List(ctx, agentd.BlobListOptions{})
			wantCorrupt("List", err)
			// A corrupt object can still be replaced or deleted.
			if _, err := s.Put(ctx, "k", strings.NewReader("fixed"), agentd.BlobPutOptions{}); err != nil {
				t.Fatalf("Put over a corrupt file: %v", err)
			}
			if err := s.Delete(ctx, "k"); err != nil {
				t.Fatalf("Delete: %v", err)
			}
		})
	}
}

// FuzzKey feeds arbitrary keys to Put, Get, List and Delete: a key the root
// package accepts must round trip; one it refuses must be refused with the
// same kind; and no key may create a file anywhere but in the store's own
// layout under root.
func FuzzKey(f *testing.F) {
	for _, k := range []string{
		"a", "a/b", "dir/", "a//b", "é", "e\u0301", "...", ".hidden", "C:", "C:\\x",
		"", ".", "..", "../x", "a/../b", "a/./b", "/abs", "//x", "a\x00b", `a\b`, "\xff",
		"../../../../tmp/escape", "objects/../../escape", "tmp/x", "objects/00/x",
		strings.Repeat("x", 1024), strings.Repeat("x", 1025), strings.Repeat("../", 300),
	} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		parent := t.TempDir()
		root := filepath.Join(parent, "root")
		s := openStore(t, root)
		ctx := t.Context()
		body := []byte("body of " + key)

		_, putErr := s.Put(ctx, key, bytes.NewReader(body), agentd.BlobPutOptions{})
		valid := agentd.ValidateBlobKey(key)
		if valid != nil {
			if agentd.KindOf(putErr) != agentd.KindOf(valid) {
				t.Fatalf("Put(%q) = %v, ValidateBlobKey says %v", key, putErr, valid)
			}
			_, err := s.Head(ctx, key)
			if agentd.KindOf(err) != agentd.KindOf(valid) {
				t.Fatalf("Head(%q) = %v, ValidateBlobKey says %v", key, err, valid)
			}
			checkConfined(t, parent, root, 0)
			return
		}
		if putErr != nil {
			t.Fatalf("Put(%q): %v", key, putErr)
		}
		checkConfined(t, parent, root, 1)
		res, err := s.Get(ctx, key, agentd.BlobGetOptions{})
		if err != nil {
			t.Fatalf("Get(%q): %v", key, err)
		}
		data, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.Key != key || !bytes.Equal(data, body) {
			t.Fatalf("Get(%q) = key %q, body %q, %v", key, res.Key, data, err)
		}
		list, err := s.List(ctx, agentd.BlobListOptions{Prefix: key})
		if err != nil || len(list.Objects) != 1 || list.Objects[0].Key != key {
			t.Fatalf("List(prefix %q) = %+v, %v", key, list, err)
		}
		if err := s.Delete(ctx, key); err != nil {
			t.Fatalf("Delete(%q): %v", key, err)
		}
		checkConfined(t, parent, root, 0)
	})
}

// checkConfined fails unless parent holds only root, and root holds only the
// store's layout with objects object files and no temp files.
func checkConfined(t *testing.T, parent, root string, objects int) {
	t.Helper()
	if got := dirNames(t, parent); !slices.Equal(got, []string{"root"}) {
		t.Fatalf("%s holds %q, want only root", parent, got)
	}
	if got := dirNames(t, filepath.Join(root, "tmp")); len(got) != 0 {
		t.Fatalf("tmp holds %q", got)
	}
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		ok := false
		switch {
		case rel == "." || rel == "objects" || rel == "tmp":
			ok = d.IsDir()
		case len(parts) == 2 && parts[0] == "objects":
			ok = d.IsDir() && isLowerHex(parts[1], 2)
		case len(parts) == 3 && parts[0] == "objects":
			ok = d.Type().IsRegular() && isLowerHex(parts[2], 64) && parts[2][:2] == parts[1]
			n++
		}
		if !ok {
			t.Errorf("unexpected entry %q under root", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != objects {
		t.Fatalf("%d object files, want %d", n, objects)
	}
}

func BenchmarkPutGet64KiB(b *testing.B) {
	s := openStore(b, b.TempDir())
	ctx := b.Context()
	body := bytes.Repeat([]byte("0123456789abcdef"), 4<<10)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := s.Put(ctx, "bench/object", bytes.NewReader(body), agentd.BlobPutOptions{}); err != nil {
			b.Fatal(err)
		}
		res, err := s.Get(ctx, "bench/object", agentd.BlobGetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || n != int64(len(body)) {
			b.Fatalf("read %d bytes, %v", n, err)
		}
	}
}

// Helpers.

func wantKind(t *testing.T, what string, err error, kind agentd.Kind) {
	t.Helper()
	if got := agentd.KindOf(err); got != kind {
		t.Errorf("%s: err = %v (kind %q), want kind %q", what, err, got, kind)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// objectFiles lists the files under root/objects.
func objectFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(root, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// rawFile builds an object file from a header and a body.
func rawFile(header, body string) []byte {
	b := binary.BigEndian.AppendUint32([]byte("AGB1"), uint32(len(header)))
	return append(append(b, header...), body...)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("body failed") }
