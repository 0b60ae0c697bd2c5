package storetest

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/agentd/agentd"
)

// BlobSuiteOption adapts the Blob suite to what a backend's test setup can
// hold. Every option names a reason, which the skipped subtests report.
type BlobSuiteOption func(*blobSuite)

type blobSuite struct {
	// Why a subtest is skipped; "" runs it.
	skipPathLikeKeys, skipMaxLengthKeys string
}

// SkipPathLikeKeys skips the subtests that store keys no file tree can hold
// side by side: a key and keys under it ("a" and "a/b"), a key ending in
// "/" with a body, an empty segment ("a//b", which a path collapses to
// "a/b"). It is for test servers that store each key as a file path, not
// for backends: agentd's Blob holds such keys on every backend.
func SkipPathLikeKeys(reason string) BlobSuiteOption {
	return func(s *blobSuite) { s.skipPathLikeKeys = orReason(reason, "the test server stores keys as file paths") }
}

// SkipMaxLengthKeys skips the subtest that stores keys of the full 1024
// bytes: for a test setup that adds a key prefix of its own (to isolate
// runs in a shared bucket), which counts toward the store's limit.
func SkipMaxLengthKeys(reason string) BlobSuiteOption {
	return func(s *blobSuite) { s.skipMaxLengthKeys = orReason(reason, "the test setup prefixes keys") }
}

func orReason(reason, fallback string) string {
	if reason == "" {
		return fallback
	}
	return reason
}

// TestBlob runs the conformance suite of the Blob binding against the backend
// open returns. open must return a fresh, empty store isolated from every
// other call's, and register its own cleanup: the suite never closes a store,
// so a backend may share one server between tests and drop a bucket or prefix
// when each test ends. opts skip the subtests a backend's test setup cannot
// hold; with none, every subtest runs.
func TestBlob(t *testing.T, open func(t *testing.T) agentd.Blob, opts ...BlobSuiteOption) {
	var suite blobSuite
	for _, o := range opts {
		o(&suite)
	}
	tests := []struct {
		name string
		run  func(t *testing.T, b agentd.Blob)
		skip string // why the setup cannot run it; "" if it can
	}{
		{"RoundTrip", testBlobRoundTrip, ""},
		{"DefaultContentType", testBlobDefaultContentType, ""},
		{"Overwrite", testBlobOverwrite, ""},
		{"Absent", testBlobAbsent, ""},
		{"Delete", testBlobDelete, ""},
		{"Range", testBlobRange, ""},
		{"Conditions", testBlobConditions, ""},
		{"InvalidKeys", testBlobInvalidKeys, ""},
		{"KeyLength", testBlobKeyLength, suite.skipMaxLengthKeys},
		{"UnusualKeys", testBlobUnusualKeys, ""},
		{"PathLikeKeys", testBlobPathLikeKeys, suite.skipPathLikeKeys},
		{"MetadataLimit", testBlobMetadataLimit, ""},
		{"NestedKeysCoexist", testBlobNestedKeysCoexist, suite.skipPathLikeKeys},
		{"ListOrder", testBlobListOrder, suite.skipPathLikeKeys},
		{"ListPrefix", testBlobListPrefix, suite.skipPathLikeKeys},
		{"ListPagination", testBlobListPagination, ""},
		{"ListBadOptions", testBlobListBadOptions, ""},
		{"ListStartAfter", testBlobListStartAfter, suite.skipPathLikeKeys},
		{"ListDelimiter", testBlobListDelimiter, suite.skipPathLikeKeys},
		{"ListDelimiterPages", testBlobListDelimiterPages, ""},
		{"EmptyBody", testBlobEmptyBody, ""},
		{"LargeBody", testBlobLargeBody, ""},
		{"ConcurrentOverwrite", testBlobConcurrentOverwrite, ""},
		{"FailedBodyKeepsOld", testBlobFailedBodyKeepsOld, ""},
		{"Cancelled", testBlobCancelled, ""},
		{"CancelledDuringPut", testBlobCancelledDuringPut, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			tc.run(t, open(t))
		})
	}
}

func testBlobRoundTrip(t *testing.T, b agentd.Blob) {
	body := []byte("hello, blob\n")
	meta := map[string]string{"author": "agent", "note": "ünïcode ok"}
	opts := agentd.BlobPutOptions{ContentType: "text/plain; charset=utf-8", CustomMetadata: meta}
	want := agentd.BlobObject{
		Key:            "notes/today.txt",
		Size:           int64(len(body)),
		ETag:           md5Hex(body),
		ContentType:    opts.ContentType,
		CustomMetadata: maps.Clone(meta),
	}

	put := putBlob(t, b, want.Key, body, opts)
	// The store must have copied the map: a caller reusing it does not
	// rewrite the stored object.
	meta["author"] = "someone else"
	checkObject(t, "Put", put, want)
	if put.Uploaded.IsZero() {
		t.Error("Put: Uploaded is zero")
	}

	head, err := b.Head(t.Context(), want.Key)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	checkObject(t, "Head", head, want)
	if head.Uploaded.IsZero() {
		t.Error("Head: Uploaded is zero")
	}

	got, data := getBlob(t, b, want.Key, agentd.BlobGetOptions{})
	checkObject(t, "Get", got.BlobObject, want)
	if !got.Uploaded.Equal(head.Uploaded) {
		t.Errorf("Get: Uploaded = %v, Head said %v", got.Uploaded, head.Uploaded)
	}
	if !bytes.Equal(data, body) {
		t.Errorf("Get: body = %q, want %q", data, body)
	}
	if got.Offset != 0 || got.Length != int64(len(body)) {
		t.Errorf("Get: Offset, Length = %d, %d, want 0, %d", got.Offset, got.Length, len(body))
	}
}

func testBlobDefaultContentType(t *testing.T, b agentd.Blob) {
	put := putBlob(t, b, "raw", []byte{0, 1, 2}, agentd.BlobPutOptions{})
	if put.ContentType != "application/octet-stream" {
		t.Errorf("Put: ContentType = %q, want application/octet-stream", put.ContentType)
	}
	head, err := b.Head(t.Context(), "raw")
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if head.ContentType != "application/octet-stream" {
		t.Errorf("Head: ContentType = %q, want application/octet-stream", head.ContentType)
	}
	if len(head.CustomMetadata) != 0 {
		t.Errorf("Head: CustomMetadata = %v, want none", head.CustomMetadata)
	}
}

func testBlobOverwrite(t *testing.T, b agentd.Blob) {
	v1 := putBlob(t, b, "doc", []byte("first version"), agentd.BlobPutOptions{
		ContentType: "text/plain", CustomMetadata: map[string]string{"v": "1"},
	})
	body2 := []byte("second, longer version")
	v2 := putBlob(t, b, "doc", body2, agentd.BlobPutOptions{ContentType: "text/markdown"})
	if v1.ETag == v2.ETag {
		t.Errorf("overwrite kept etag %q", v1.ETag)
	}
	// An overwrite replaces the whole object, metadata included.
	want := agentd.BlobObject{Key: "doc", Size: int64(len(body2)), ETag: md5Hex(body2), ContentType: "text/markdown"}
	checkObject(t, "Put", v2, want)
	got, data := getBlob(t, b, "doc", agentd.BlobGetOptions{})
	checkObject(t, "Get", got.BlobObject, want)
	if !bytes.Equal(data, body2) {
		t.Errorf("Get: body = %q, want %q", data, body2)
	}
}

func testBlobAbsent(t *testing.T, b agentd.Blob) {
	putBlob(t, b, "present", []byte("x"), agentd.BlobPutOptions{})
	ctx := t.Context()
	_, err := b.Head(ctx, "absent")
	wantKind(t, "Head", err, agentd.KindNotFound)
	if !errors.Is(err, agentd.ErrNotFound) {
		t.Errorf("Head: errors.Is(%v, ErrNotFound) = false", err)
	}
	for name, opts := range map[string]agentd.BlobGetOptions{
		"plain":       {},
		"range":       {Range: &agentd.ByteRange{Offset: 1}},
		"ifMatch":     {IfMatch: "abc"},
		"ifNoneMatch": {IfNoneMatch: "abc"},
	} {
		res, err := b.Get(ctx, "absent", opts)
		if err == nil {
			res.Body.Close()
		}
		wantKind(t, "Get "+name, err, agentd.KindNotFound)
		if !errors.Is(err, agentd.ErrNotFound) {
			t.Errorf("Get %s: errors.Is(%v, ErrNotFound) = false", name, err)
		}
	}
	// A key that is a prefix of a stored key is not stored itself.
	_, err = b.Head(ctx, "pres")
	wantKind(t, "Head of a prefix", err, agentd.KindNotFound)
}

func testBlobDelete(t *testing.T, b agentd.Blob) {
	ctx := t.Context()
	for _, k := range []string{"a", "b", "c", "d"} {
		putBlob(t, b, k, []byte(k), agentd.BlobPutOptions{})
	}
	if err := b.Delete(ctx, "a"); err != nil {
		t.Fatalf("Delete(a): %v", err)
	}
	_, err := b.Head(ctx, "a")
	wantKind(t, "Head after Delete", err, agentd.KindNotFound)
	if err := b.Delete(ctx, "b", "c", "never-stored"); err != nil {
		t.Fatalf("Delete(b, c, never-stored): %v", err)
	}
	for _, k := range []string{"b", "c"} {
		_, err := b.Head(ctx, k)
		wantKind(t, "Head("+k+") after Delete", err, agentd.KindNotFound)
	}
	if err := b.Delete(ctx, "a"); err != nil {
		t.Errorf("Delete of a deleted key: %v", err)
	}
	if err := b.Delete(ctx); err != nil {
		t.Errorf("Delete of no keys: %v", err)
	}
	// A bad key fails the whole call.
	wantKind(t, "Delete with a bad key", b.Delete(ctx, "d", "../d"), agentd.KindInvalid)
	if got := listAll(t, b, agentd.BlobListOptions{}).keys; !slices.Equal(got, []string{"d"}) {
		t.Errorf("listed %q after deletes, want [d]", got)
	}
	// A key deleted and written again is back.
	putBlob(t, b, "a", []byte("again"), agentd.BlobPutOptions{})
	if _, data := getBlob(t, b, "a", agentd.BlobGetOptions{}); string(data) != "again" {
		t.Errorf("Get after rewrite = %q, want again", data)
	}
}

func testBlobRange(t *testing.T, b agentd.Blob) {
	body := []byte("0123456789")
	putBlob(t, b, "digits", body, agentd.BlobPutOptions{})
	tests := []struct {
		name         string
		r            agentd.ByteRange
		want         string
		offset, size int64
		kind         agentd.Kind // "" when the read succeeds
	}{
		{name: "offset and length", r: agentd.ByteRange{Offset: 2, Length: 3}, want: "234", offset: 2, size: 3},
		{name: "offset only", r: agentd.ByteRange{Offset: 7}, want: "789", offset: 7, size: 3},
		{name: "first byte", r: agentd.ByteRange{Length: 1}, want: "0", offset: 0, size: 1},
		{name: "last byte", r: agentd.ByteRange{Offset: 9}, want: "9", offset: 9, size: 1},
		{name: "suffix", r: agentd.ByteRange{Suffix: 3}, want: "789", offset: 7, size: 3},
		{name: "suffix past start", r: agentd.ByteRange{Suffix: 50}, want: "0123456789", offset: 0, size: 10},
		{name: "length past end", r: agentd.ByteRange{Offset: 8, Length: 100}, want: "89", offset: 8, size: 2},
		{name: "offset at end", r: agentd.ByteRange{Offset: 10}, kind: agentd.KindInvalid},
		{name: "offset past end", r: agentd.ByteRange{Offset: 11, Length: 1}, kind: agentd.KindInvalid},
		{name: "negative offset", r: agentd.ByteRange{Offset: -1}, kind: agentd.KindInvalid},
		{name: "suffix with offset", r: agentd.ByteRange{Offset: 1, Suffix: 2}, kind: agentd.KindInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r
			opts := agentd.BlobGetOptions{Range: &r}
			if tc.kind != "" {
				res, err := b.Get(t.Context(), "digits", opts)
				if err == nil {
					res.Body.Close()
				}
				wantKind(t, "Get", err, tc.kind)
				return
			}
			res, data := getBlob(t, b, "digits", opts)
			if string(data) != tc.want {
				t.Errorf("body = %q, want %q", data, tc.want)
			}
			if res.Offset != tc.offset || res.Length != tc.size {
				t.Errorf("Offset, Length = %d, %d, want %d, %d", res.Offset, res.Length, tc.offset, tc.size)
			}
			// The description is of the whole object, not of the range.
			if res.Size != int64(len(body)) || res.ETag != md5Hex(body) {
				t.Errorf("Size, ETag = %d, %q, want %d, %q", res.Size, res.ETag, len(body), md5Hex(body))
			}
		})
	}
}

func testBlobConditions(t *testing.T, b agentd.Blob) {
	body := []byte("conditional")
	etag := putBlob(t, b, "c", body, agentd.BlobPutOptions{}).ETag
	if etag != md5Hex(body) {
		t.Fatalf("etag = %q, want %q", etag, md5Hex(body))
	}
	other := md5Hex([]byte("something else"))
	tests := []struct {
		name string
		opts agentd.BlobGetOptions
		ok   bool
	}{
		{"IfMatch matching", agentd.BlobGetOptions{IfMatch: etag}, true},
		{"IfMatch quoted", agentd.BlobGetOptions{IfMatch: `"` + etag + `"`}, true},
		{"IfMatch star", agentd.BlobGetOptions{IfMatch: "*"}, true},
		{"IfMatch other", agentd.BlobGetOptions{IfMatch: other}, false},
		{"IfMatch quoted other", agentd.BlobGetOptions{IfMatch: `"` + other + `"`}, false},
		{"IfNoneMatch matching", agentd.BlobGetOptions{IfNoneMatch: etag}, false},
		{"IfNoneMatch quoted", agentd.BlobGetOptions{IfNoneMatch: `"` + etag + `"`}, false},
		{"IfNoneMatch weak", agentd.BlobGetOptions{IfNoneMatch: `W/"` + etag + `"`}, false},
		{"IfNoneMatch star", agentd.BlobGetOptions{IfNoneMatch: "*"}, false},
		{"IfNoneMatch other", agentd.BlobGetOptions{IfNoneMatch: other}, true},
		{"both holding", agentd.BlobGetOptions{IfMatch: etag, IfNoneMatch: other}, true},
		{"with range", agentd.BlobGetOptions{IfMatch: etag, Range: &agentd.ByteRange{Suffix: 4}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok {
				res, err := b.Get(t.Context(), "c", tc.opts)
				if err == nil {
					res.Body.Close()
				}
				wantKind(t, "Get", err, agentd.KindPreconditionFailed)
				return
			}
			res, data := getBlob(t, b, "c", tc.opts)
			if want := body[res.Offset : res.Offset+res.Length]; !bytes.Equal(data, want) || len(data) == 0 {
				t.Errorf("body = %q, want %q", data, want)
			}
		})
	}
}

func testBlobInvalidKeys(t *testing.T, b agentd.Blob) {
	for _, key := range []string{
		"", "/abs", "../x", "a/../b", "a/./b", "..", ".", "a/..", "x/.", "./x",
		"nul\x00byte", `back\slash`, "\xff\xfe", "ok/\xc3",
	} {
		t.Run(key, func(t *testing.T) {
			ctx := t.Context()
			_, err := b.Put(ctx, key, strings.NewReader("x"), agentd.BlobPutOptions{})
			wantKind(t, "Put", err, agentd.KindInvalid)
			res, err := b.Get(ctx, key, agentd.BlobGetOptions{})
			if err == nil {
				res.Body.Close()
			}
			wantKind(t, "Get", err, agentd.KindInvalid)
			_, err = b.Head(ctx, key)
			wantKind(t, "Head", err, agentd.KindInvalid)
			wantKind(t, "Delete", b.Delete(ctx, key), agentd.KindInvalid)
		})
	}
	if got := listAll(t, b, agentd.BlobListOptions{}).keys; len(got) != 0 {
		t.Errorf("refused keys were stored: %q", got)
	}
}

func testBlobKeyLength(t *testing.T, b agentd.Blob) {
	ctx := t.Context()
	ascii := "long/" + strings.Repeat("k", agentd.MaxBlobKeyBytes-len("long/"))
	wide := strings.Repeat("é", agentd.MaxBlobKeyBytes/2) // 2 bytes each
	for _, key := range []string{ascii, wide} {
		if len(key) != agentd.MaxBlobKeyBytes {
			t.Fatalf("test key has %d bytes", len(key))
		}
		putBlob(t, b, key, []byte(key[:8]), agentd.BlobPutOptions{})
		res, data := getBlob(t, b, key, agentd.BlobGetOptions{})
		if res.Key != key || string(data) != key[:8] {
			t.Errorf("Get of a 1024-byte key: Key has %d bytes, body %q", len(res.Key), data)
		}
	}
	if got := listAll(t, b, agentd.BlobListOptions{}).keys; !slices.Equal(got, []string{ascii, wide}) {
		t.Errorf("listed %d keys, want the two 1024-byte keys", len(got))
	}
	for _, key := range []string{ascii + "k", wide + "x"} {
		_, err := b.Put(ctx, key, strings.NewReader("x"), agentd.BlobPutOptions{})
		wantKind(t, "Put of a 1025-byte key", err, agentd.KindTooLarge)
		_, err = b.Head(ctx, key)
		wantKind(t, "Head of a 1025-byte key", err, agentd.KindTooLarge)
		res, err := b.Get(ctx, key, agentd.BlobGetOptions{})
		if err == nil {
			res.Body.Close()
		}
		wantKind(t, "Get of a 1025-byte key", err, agentd.KindTooLarge)
	}
}

// testBlobUnusualKeys stores keys that are legal but awkward for a backend
// that maps keys to files or URLs.
func testBlobUnusualKeys(t *testing.T, b agentd.Blob) {
	testBlobKeys(t, b, []string{
		"...", ".hidden", "a..b", "x/.y", "with space",
		"tab\tand\nnewline", "percent%2Fslash", "question?hash#", "~user", "C:",
		"CON", "emoji 🙂", "e\u0301", "\u00e9", "trailing.",
	})
}

// testBlobPathLikeKeys stores keys that look like paths no file tree can
// hold side by side: a "directory" key with a body next to a key under it,
// and an empty segment.
func testBlobPathLikeKeys(t *testing.T, b agentd.Blob) {
	testBlobKeys(t, b, []string{"dir/", "dir/x", "a//b"})
}

// testBlobKeys stores keys, reads each back, and lists them all.
func testBlobKeys(t *testing.T, b agentd.Blob, keys []string) {
	for i, k := range keys {
		putBlob(t, b, k, []byte{byte(i)}, agentd.BlobPutOptions{})
	}
	for i, k := range keys {
		res, data := getBlob(t, b, k, agentd.BlobGetOptions{})
		if res.Key != k || !bytes.Equal(data, []byte{byte(i)}) {
			t.Errorf("Get(%q): Key %q, body %v, want body %v", k, res.Key, data, []byte{byte(i)})
		}
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	if got := listAll(t, b, agentd.BlobListOptions{}).keys; !slices.Equal(got, want) {
		t.Errorf("listed %q, want %q", got, want)
	}
}

func testBlobMetadataLimit(t *testing.T, b agentd.Blob) {
	ctx := t.Context()
	// Keys and values both count toward the limit.
	full := map[string]string{"k": strings.Repeat("v", agentd.MaxBlobCustomMetadataBytes-1)}
	putBlob(t, b, "full", []byte("x"), agentd.BlobPutOptions{CustomMetadata: full})
	head, err := b.Head(ctx, "full")
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if !maps.Equal(head.CustomMetadata, full) {
		t.Errorf("metadata of exactly 2048 bytes did not round trip (%d entries)", len(head.CustomMetadata))
	}

	for name, meta := range map[string]map[string]string{
		"one big value": {"k": strings.Repeat("v", agentd.MaxBlobCustomMetadataBytes)},
		"many entries":  {"aaaa": strings.Repeat("1", 1000), "bbbb": strings.Repeat("2", 1000), "cccc": strings.Repeat("3", 100)},
	} {
		_, err := b.Put(ctx, "over", strings.NewReader("x"), agentd.BlobPutOptions{CustomMetadata: meta})
		wantKind(t, "Put with "+name, err, agentd.KindTooLarge)
	}
	_, err = b.Head(ctx, "over")
	wantKind(t, "Head after refused puts", err, agentd.KindNotFound)
}

func testBlobNestedKeysCoexist(t *testing.T, b agentd.Blob) {
	ctx := t.Context()
	// In both orders: a backend on files must not turn "a" into a directory
	// or "a/b" into a child of a file.
	putBlob(t, b, "a", []byte("file a"), agentd.BlobPutOptions{})
	putBlob(t, b, "a/b", []byte("file a/b"), agentd.BlobPutOptions{})
	putBlob(t, b, "x/y/z", []byte("deep"), agentd.BlobPutOptions{})
	putBlob(t, b, "x/y", []byte("middle"), agentd.BlobPutOptions{})
	putBlob(t, b, "x", []byte("top"), agentd.BlobPutOptions{})
	for k, want := range map[string]string{"a": "file a", "a/b": "file a/b", "x": "top", "x/y": "middle", "x/y/z": "deep"} {
		if _, data := getBlob(t, b, k, agentd.BlobGetOptions{}); string(data) != want {
			t.Errorf("Get(%q) = %q, want %q", k, data, want)
		}
	}
	if err := b.Delete(ctx, "a", "x/y"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, data := getBlob(t, b, "a/b", agentd.BlobGetOptions{}); string(data) != "file a/b" {
		t.Errorf("Get(a/b) after deleting a = %q", data)
	}
	if got := listAll(t, b, agentd.BlobListOptions{}).keys; !slices.Equal(got, []string{"a/b", "x", "x/y/z"}) {
		t.Errorf("listed %q, want [a/b x x/y/z]", got)
	}
}

func testBlobListOrder(t *testing.T, b agentd.Blob) {
	// UTF-8 byte order: upper case before lower, "-" (0x2d) before "/"
	// (0x2f), a decomposed "é" before the precomposed one, and U+FF5E before
	// U+1F600 (UTF-16 order would put the emoji first).
	want := []string{"B", "Z", "a", "a-c", "a/b", "aa", "b", "e\u0301", "\u00e9", "\uff5e", "\U0001F600"}
	shuffled := slices.Clone(want)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) {
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	})
	heads := map[string]agentd.BlobObject{}
	for _, k := range shuffled {
		putBlob(t, b, k, []byte("body of "+k), agentd.BlobPutOptions{
			ContentType: "text/plain", CustomMetadata: map[string]string{"k": k},
		})
		h, err := b.Head(t.Context(), k)
		if err != nil {
			t.Fatalf("Head(%q): %v", k, err)
		}
		heads[k] = h
	}
	res, err := b.List(t.Context(), agentd.BlobListOptions{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if got := objectKeys(res.Objects); !slices.Equal(got, want) {
		t.Errorf("listed %q, want %q", got, want)
	}
	if res.Truncated {
		t.Error("a listing of every key is truncated")
	}
	if len(res.DelimitedPrefixes) != 0 {
		t.Errorf("DelimitedPrefixes = %q without a delimiter", res.DelimitedPrefixes)
	}
	// A listed object is described as Head describes it.
	for _, o := range res.Objects {
		h := heads[o.Key]
		checkObject(t, "List "+o.Key, o, agentd.BlobObject{
			Key: h.Key, Size: h.Size, ETag: h.ETag, ContentType: h.ContentType, CustomMetadata: h.CustomMetadata,
		})
		if !o.Uploaded.Equal(h.Uploaded) {
			t.Errorf("List %q: Uploaded = %v, Head said %v", o.Key, o.Uploaded, h.Uploaded)
		}
	}
}

func testBlobListPrefix(t *testing.T, b agentd.Blob) {
	for _, k := range []string{"p", "p/1", "p/2", "p2", "q", "o"} {
		putBlob(t, b, k, []byte(k), agentd.BlobPutOptions{})
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"p/", []string{"p/1", "p/2"}},
		{"p", []string{"p", "p/1", "p/2", "p2"}},
		{"p/2", []string{"p/2"}},
		{"zz", nil},
		{"", []string{"o", "p", "p/1", "p/2", "p2", "q"}},
	}
	for _, tc := range tests {
		if got := listAll(t, b, agentd.BlobListOptions{Prefix: tc.prefix}).keys; !slices.Equal(got, tc.want) {
			t.Errorf("prefix %q: listed %q, want %q", tc.prefix, got, tc.want)
		}
	}
	res, err := b.List(t.Context(), agentd.BlobListOptions{Prefix: "zz"})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	// Objects is never nil, so the listing encodes as "objects": [].
	if res.Objects == nil || res.Truncated {
		t.Errorf("empty listing: Objects = %#v, Truncated = %v; want [] and false", res.Objects, res.Truncated)
	}
}

func testBlobListPagination(t *testing.T, b agentd.Blob) {
	ctx := t.Context()
	for _, k := range []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6"} {
		putBlob(t, b, k, []byte(k), agentd.BlobPutOptions{})
	}
	var got []string
	opts := agentd.BlobListOptions{Limit: 3}
	for page := 0; ; page++ {
		if page == 10 {
			t.Fatalf("listing did not end after %d pages", page)
		}
		res, err := b.List(ctx, opts)
		if err != nil {
			t.Fatalf("List page %d: %v", page, err)
		}
		if len(res.Objects) > opts.Limit {
			t.Errorf("page %d holds %d objects, limit %d", page, len(res.Objects), opts.Limit)
		}
		if page == 0 && len(res.Objects) != 3 {
			t.Fatalf("first page holds %q, want 3 keys", objectKeys(res.Objects))
		}
		got = append(got, objectKeys(res.Objects)...)
		if page == 0 {
			// Writes between pages: a key after the cursor shows on the
			// next page, a key before it does not.
			putBlob(t, b, "k2a", []byte("late"), agentd.BlobPutOptions{})
			putBlob(t, b, "k0a", []byte("late"), agentd.BlobPutOptions{})
		}
		if !res.Truncated {
			break
		}
		if res.Cursor == "" {
			t.Fatalf("page %d is truncated but has no cursor", page)
		}
		opts.Cursor = res.Cursor
	}
	if want := []string{"k0", "k1", "k2", "k2a", "k3", "k4", "k5", "k6"}; !slices.Equal(got, want) {
		t.Errorf("paged through %q, want %q", got, want)
	}
	// A limit of one walks every key once.
	l := listAll(t, b, agentd.BlobListOptions{Limit: 1})
	if want := []string{"k0", "k0a", "k1", "k2", "k2a", "k3", "k4", "k5", "k6"}; !slices.Equal(l.keys, want) {
		t.Errorf("limit 1: paged through %q, want %q", l.keys, want)
	}
	if l.pages < len(l.keys) {
		t.Errorf("limit 1: %d keys came in %d pages", len(l.keys), l.pages)
	}
}

func testBlobListBadOptions(t *testing.T, b agentd.Blob) {
	putBlob(t, b, "k", []byte("k"), agentd.BlobPutOptions{})
	for name, opts := range map[string]agentd.BlobListOptions{
		"negative limit":  {Limit: -1},
		"limit over 1000": {Limit: agentd.MaxBlobListLimit + 1},
		"foreign cursor":  {Cursor: "not a cursor!"},
	} {
		_, err := b.List(t.Context(), opts)
		wantKind(t, name, err, agentd.KindInvalid)
	}
	res, err := b.List(t.Context(), agentd.BlobListOptions{Limit: agentd.MaxBlobListLimit})
	if err != nil || len(res.Objects) != 1 {
		t.Errorf("List with limit 1000: %d objects, err %v", len(res.Objects), err)
	}
}

func testBlobListStartAfter(t *testing.T, b agentd.Blob) {
	for _, k := range []string{"a", "b", "b/1", "c", "d", "p/1", "p/2"} {
		putBlob(t, b, k, []byte(k), agentd.BlobPutOptions{})
	}
	tests := []struct {
		opts agentd.BlobListOptions
		want []string
	}{
		{agentd.BlobListOptions{StartAfter: "b"}, []string{"b/1", "c", "d", "p/1", "p/2"}},
		{agentd.BlobListOptions{StartAfter: "bb"}, []string{"c", "d", "p/1", "p/2"}},
		{agentd.BlobListOptions{StartAfter: "0"}, []string{"a", "b", "b/1", "c", "d", "p/1", "p/2"}},
		{agentd.BlobListOptions{StartAfter: "z"}, nil},
		{agentd.BlobListOptions{StartAfter: "a", Prefix: "p/"}, []string{"p/1", "p/2"}},
		{agentd.BlobListOptions{StartAfter: "p/1", Prefix: "p/"}, []string{"p/2"}},
		// Pages after the first go on from the cursor, past StartAfter.
		{agentd.BlobListOptions{StartAfter: "b", Limit: 2}, []string{"b/1", "c", "d", "p/1", "p/2"}},
	}
	for _, tc := range tests {
		if got := listAll(t, b, tc.opts).keys; !slices.Equal(got, tc.want) {
			t.Errorf("%+v: listed %q, want %q", tc.opts, got, tc.want)
		}
	}
}

func testBlobListDelimiter(t *testing.T, b agentd.Blob) {
	for _, k := range []string{"a", "dir/x", "dir/y", "dir/sub/z", "dir/sub/w", "dir2/w", "other/q", "top", "dir"} {
		putBlob(t, b, k, []byte(k), agentd.BlobPutOptions{})
	}
	tests := []struct {
		opts     agentd.BlobListOptions
		keys     []string
		prefixes []string
	}{
		{agentd.BlobListOptions{Delimiter: "/"}, []string{"a", "dir", "top"}, []string{"dir/", "dir2/", "other/"}},
		{agentd.BlobListOptions{Delimiter: "/", Prefix: "dir/"}, []string{"dir/x", "dir/y"}, []string{"dir/sub/"}},
		{agentd.BlobListOptions{Delimiter: "/", Prefix: "dir"}, []string{"dir"}, []string{"dir/", "dir2/"}},
		{agentd.BlobListOptions{Delimiter: "/", Prefix: "dir/sub/"}, []string{"dir/sub/w", "dir/sub/z"}, nil},
		{agentd.BlobListOptions{Delimiter: "/", Prefix: "nothing/"}, nil, nil},
	}
	for _, tc := range tests {
		res, err := b.List(t.Context(), tc.opts)
		if err != nil {
			t.Fatalf("List(%+v): %v", tc.opts, err)
		}
		if got := objectKeys(res.Objects); !slices.Equal(got, tc.keys) {
			t.Errorf("%+v: objects %q, want %q", tc.opts, got, tc.keys)
		}
		if !slices.Equal(res.DelimitedPrefixes, tc.prefixes) {
			t.Errorf("%+v: prefixes %q, want %q", tc.opts, res.DelimitedPrefixes, tc.prefixes)
		}
		if res.Truncated {
			t.Errorf("%+v: truncated", tc.opts)
		}
	}
}

func testBlobListDelimiterPages(t *testing.T, b agentd.Blob) {
	// Enough keys under each prefix that a prefix would show on several
	// pages if a backend did not skip past it.
	keys := []string{"a", "c", "e"}
	for i := range 5 {
		keys = append(keys, "b/"+string(rune('0'+i)), "d/x/"+string(rune('0'+i)))
	}
	keys = append(keys, "d/1")
	for _, k := range keys {
		putBlob(t, b, k, []byte(k), agentd.BlobPutOptions{})
	}
	for _, limit := range []int{1, 2, 3, 0} {
		l := listAll(t, b, agentd.BlobListOptions{Delimiter: "/", Limit: limit})
		if !slices.Equal(l.keys, []string{"a", "c", "e"}) || !slices.Equal(l.prefixes, []string{"b/", "d/"}) {
			t.Errorf("limit %d: objects %q, prefixes %q; want [a c e] and [b/ d/]", limit, l.keys, l.prefixes)
		}
		l = listAll(t, b, agentd.BlobListOptions{Delimiter: "/", Prefix: "d/", Limit: limit})
		if !slices.Equal(l.keys, []string{"d/1"}) || !slices.Equal(l.prefixes, []string{"d/x/"}) {
			t.Errorf("limit %d, prefix d/: objects %q, prefixes %q; want [d/1] and [d/x/]", limit, l.keys, l.prefixes)
		}
	}
}

func testBlobEmptyBody(t *testing.T, b agentd.Blob) {
	put := putBlob(t, b, "empty", nil, agentd.BlobPutOptions{ContentType: "text/plain"})
	want := agentd.BlobObject{Key: "empty", Size: 0, ETag: "d41d8cd98f00b204e9800998ecf8427e", ContentType: "text/plain"}
	checkObject(t, "Put", put, want)
	res, data := getBlob(t, b, "empty", agentd.BlobGetOptions{})
	checkObject(t, "Get", res.BlobObject, want)
	if len(data) != 0 || res.Offset != 0 || res.Length != 0 {
		t.Errorf("Get: %d bytes, Offset %d, Length %d; want nothing", len(data), res.Offset, res.Length)
	}
	res, data = getBlob(t, b, "empty", agentd.BlobGetOptions{Range: &agentd.ByteRange{Suffix: 5}})
	if len(data) != 0 || res.Offset != 0 || res.Length != 0 {
		t.Errorf("Get suffix: %d bytes, Offset %d, Length %d; want nothing", len(data), res.Offset, res.Length)
	}
	r, err := b.Get(t.Context(), "empty", agentd.BlobGetOptions{Range: &agentd.ByteRange{Offset: 1}})
	if err == nil {
		r.Body.Close()
	}
	wantKind(t, "Get past the end of an empty object", err, agentd.KindInvalid)
}

func testBlobLargeBody(t *testing.T, b agentd.Blob) {
	const size = 5 << 20
	body := randomBytes(7, size)
	// onlyReader hides bytes.Reader's WriterTo and Seeker, so the backend
	// streams as it would from a network body.
	put, err := b.Put(t.Context(), "large", onlyReader{bytes.NewReader(body)}, agentd.BlobPutOptions{})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	checkObject(t, "Put", put, agentd.BlobObject{
		Key: "large", Size: size, ETag: md5Hex(body), ContentType: "application/octet-stream",
	})
	res, data := getBlob(t, b, "large", agentd.BlobGetOptions{})
	if !bytes.Equal(data, body) || res.Length != size {
		t.Errorf("Get: %d bytes (Length %d), equal %v; want the %d bytes put", len(data), res.Length, bytes.Equal(data, body), size)
	}
	res, data = getBlob(t, b, "large", agentd.BlobGetOptions{Range: &agentd.ByteRange{Offset: 3 << 20, Length: 1 << 20}})
	if !bytes.Equal(data, body[3<<20:4<<20]) || res.Offset != 3<<20 || res.Length != 1<<20 {
		t.Errorf("Get range: %d bytes at %d, equal %v", res.Length, res.Offset, bytes.Equal(data, body[3<<20:4<<20]))
	}
}

// testBlobConcurrentOverwrite checks that writes are atomic: while one
// goroutine overwrites a key with two bodies in turn, readers see one body or
// the other whole, described by its own etag. Loops are bounded, so the test
// ends even against a backend that blocks readers.
func testBlobConcurrentOverwrite(t *testing.T, b agentd.Blob) {
	const (
		size    = 1 << 20
		writes  = 16
		readers = 4
		reads   = 200
	)
	ctx := t.Context()
	bodies := [2][]byte{randomBytes(1, size), randomBytes(2, size)}
	etags := [2]string{md5Hex(bodies[0]), md5Hex(bodies[1])}
	putBlob(t, b, "hot", bodies[0], agentd.BlobPutOptions{})

	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		defer done.Store(true)
		for i := range writes {
			if _, err := b.Put(ctx, "hot", bytes.NewReader(bodies[(i+1)%2]), agentd.BlobPutOptions{}); err != nil {
				t.Errorf("Put %d: %v", i, err)
				return
			}
		}
	})
	for r := range readers {
		wg.Go(func() {
			// Read until the writer is done, at least a few times, at most
			// reads times.
			for i := 0; i < reads && (i < 4 || !done.Load()); i++ {
				opts := agentd.BlobGetOptions{}
				from := 0
				if i%2 == 1 {
					from = size / 2
					opts.Range = &agentd.ByteRange{Offset: int64(from)}
				}
				res, err := b.Get(ctx, "hot", opts)
				if err != nil {
					t.Errorf("reader %d: Get: %v", r, err)
					return
				}
				data, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil {
					t.Errorf("reader %d: reading: %v", r, err)
					return
				}
				which := slices.Index(etags[:], res.ETag)
				switch {
				case which < 0:
					t.Errorf("reader %d: etag %q is of neither body", r, res.ETag)
					return
				case res.Size != size || !bytes.Equal(data, bodies[which][from:]):
					t.Errorf("reader %d: read %d bytes from %d that are not body %d, the one its etag names", r, len(data), from, which)
					return
				}
				h, err := b.Head(ctx, "hot")
				if err != nil || slices.Index(etags[:], h.ETag) < 0 {
					t.Errorf("reader %d: Head = %q, %v; want one of the two etags", r, h.ETag, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func testBlobFailedBodyKeepsOld(t *testing.T, b agentd.Blob) {
	ctx := t.Context()
	old := []byte("the old body")
	opts := agentd.BlobPutOptions{ContentType: "text/plain", CustomMetadata: map[string]string{"v": "old"}}
	before := putBlob(t, b, "keep", old, opts)
	errBoom := errors.New("boom")
	for _, n := range []int{0, 100 << 10} {
		_, err := b.Put(ctx, "keep", &failingReader{data: randomBytes(3, n), err: errBoom}, agentd.BlobPutOptions{})
		if err == nil {
			t.Fatalf("Put with a body failing after %d bytes succeeded", n)
		}
		res, data := getBlob(t, b, "keep", agentd.BlobGetOptions{})
		if !bytes.Equal(data, old) {
			t.Errorf("after a failed Put (%d bytes): body = %q, want %q", n, data, old)
		}
		checkObject(t, "Get after a failed Put", res.BlobObject, agentd.BlobObject{
			Key: "keep", Size: before.Size, ETag: before.ETag, ContentType: "text/plain", CustomMetadata: opts.CustomMetadata,
		})

		_, err = b.Put(ctx, "fresh", &failingReader{data: randomBytes(4, n), err: errBoom}, agentd.BlobPutOptions{})
		if err == nil {
			t.Fatalf("Put of a new key with a body failing after %d bytes succeeded", n)
		}
		_, err = b.Head(ctx, "fresh")
		wantKind(t, "Head after a failed Put of a new key", err, agentd.KindNotFound)
	}
	if got := listAll(t, b, agentd.BlobListOptions{}).keys; !slices.Equal(got, []string{"keep"}) {
		t.Errorf("listed %q after failed puts, want [keep]", got)
	}
}

func testBlobCancelled(t *testing.T, b agentd.Blob) {
	putBlob(t, b, "there", []byte("x"), agentd.BlobPutOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	wantCancelled := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: err = %v, want one wrapping context.Canceled", op, err)
		}
	}
	_, err := b.Put(ctx, "new", strings.NewReader("x"), agentd.BlobPutOptions{})
	wantCancelled("Put", err)
	res, err := b.Get(ctx, "there", agentd.BlobGetOptions{})
	if err == nil {
		res.Body.Close()
	}
	wantCancelled("Get", err)
	_, err = b.Head(ctx, "there")
	wantCancelled("Head", err)
	wantCancelled("Delete", b.Delete(ctx, "there"))
	_, err = b.List(ctx, agentd.BlobListOptions{})
	wantCancelled("List", err)

	// Nothing happened.
	if got := listAll(t, b, agentd.BlobListOptions{}).keys; !slices.Equal(got, []string{"there"}) {
		t.Errorf("listed %q after cancelled calls, want [there]", got)
	}
}

func testBlobCancelledDuringPut(t *testing.T, b agentd.Blob) {
	putBlob(t, b, "k", []byte("old"), agentd.BlobPutOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The body cancels the call after its first read, then keeps supplying
	// data: the store must notice and not commit.
	body := &cancellingReader{r: bytes.NewReader(randomBytes(5, 1<<20)), cancel: cancel}
	_, err := b.Put(ctx, "k", body, agentd.BlobPutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Put cancelled midway: err = %v, want one wrapping context.Canceled", err)
	}
	if _, data := getBlob(t, b, "k", agentd.BlobGetOptions{}); string(data) != "old" {
		t.Errorf("after a cancelled Put: %d bytes, want the old body", len(data))
	}
}

// Helpers.

func putBlob(t *testing.T, b agentd.Blob, key string, body []byte, opts agentd.BlobPutOptions) agentd.BlobObject {
	t.Helper()
	obj, err := b.Put(t.Context(), key, bytes.NewReader(body), opts)
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return obj
}

// getBlob reads key whole and closes the body.
func getBlob(t *testing.T, b agentd.Blob, key string, opts agentd.BlobGetOptions) (*agentd.BlobBody, []byte) {
	t.Helper()
	res, err := b.Get(t.Context(), key, opts)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	data, err := io.ReadAll(res.Body)
	if cerr := res.Body.Close(); cerr != nil {
		t.Errorf("Get(%q): closing the body: %v", key, cerr)
	}
	if err != nil {
		t.Fatalf("Get(%q): reading the body: %v", key, err)
	}
	if int64(len(data)) != res.Length {
		t.Errorf("Get(%q): read %d bytes, Length says %d", key, len(data), res.Length)
	}
	return res, data
}

// checkObject compares a description with want, all but Uploaded, which
// the caller checks where it can know it. Absent and empty metadata are the
// same.
func checkObject(t *testing.T, what string, got, want agentd.BlobObject) {
	t.Helper()
	if got.Key != want.Key || got.Size != want.Size || got.ETag != want.ETag || got.ContentType != want.ContentType {
		t.Errorf("%s: Key, Size, ETag, ContentType = %q, %d, %q, %q; want %q, %d, %q, %q", what,
			got.Key, got.Size, got.ETag, got.ContentType, want.Key, want.Size, want.ETag, want.ContentType)
	}
	if !maps.Equal(got.CustomMetadata, want.CustomMetadata) {
		t.Errorf("%s: CustomMetadata = %v, want %v", what, got.CustomMetadata, want.CustomMetadata)
	}
}

// wantKind fails unless err is an *agentd.Error of kind, found both by KindOf
// and by errors.Is with the kind's sentinel.
func wantKind(t *testing.T, what string, err error, kind agentd.Kind) {
	t.Helper()
	if got := agentd.KindOf(err); got != kind {
		t.Errorf("%s: err = %v (kind %q), want kind %q", what, err, got, kind)
		return
	}
	if !errors.Is(err, &agentd.Error{Kind: kind}) {
		t.Errorf("%s: errors.Is(%v, kind %q) = false", what, err, kind)
	}
}

// listing is the union of the pages of a listing.
type listing struct {
	keys, prefixes []string
	pages          int
}

// listAll pages through a listing, checking that every page keeps to the
// limit and the prefix, and that each page's entries, objects and prefixes
// together, come strictly after the previous page's, so no object or prefix
// shows twice.
func listAll(t *testing.T, b agentd.Blob, opts agentd.BlobListOptions) listing {
	t.Helper()
	const maxPages = 100 // a backend whose cursor does not advance fails, not hangs
	var out listing
	last, seen := "", false
	for {
		if out.pages == maxPages {
			t.Fatalf("List(%+v) did not end after %d pages", opts, maxPages)
		}
		res, err := b.List(t.Context(), opts)
		if err != nil {
			t.Fatalf("List(%+v): %v", opts, err)
		}
		out.pages++
		if opts.Limit > 0 && len(res.Objects)+len(res.DelimitedPrefixes) > opts.Limit {
			t.Errorf("List(%+v): %d objects and %d prefixes on a page", opts, len(res.Objects), len(res.DelimitedPrefixes))
		}
		keys := objectKeys(res.Objects)
		if !slices.IsSorted(keys) || !slices.IsSorted(res.DelimitedPrefixes) {
			t.Errorf("List(%+v): page not in order: %q, %q", opts, keys, res.DelimitedPrefixes)
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, opts.Prefix) {
				t.Errorf("List(%+v): listed %q", opts, k)
			}
		}
		for _, p := range res.DelimitedPrefixes {
			if opts.Delimiter == "" || !strings.HasPrefix(p, opts.Prefix) || !strings.HasSuffix(p, opts.Delimiter) {
				t.Errorf("List(%+v): delimited prefix %q", opts, p)
			}
		}
		entries := slices.Concat(keys, res.DelimitedPrefixes)
		slices.Sort(entries)
		for _, e := range entries {
			if seen && e <= last {
				t.Errorf("List(%+v): %q listed after %q", opts, e, last)
			}
			last, seen = e, true
		}
		out.keys = append(out.keys, keys...)
		out.prefixes = append(out.prefixes, res.DelimitedPrefixes...)
		if !res.Truncated {
			return out
		}
		if res.Cursor == "" {
			t.Fatalf("List(%+v): truncated page without a cursor", opts)
		}
		opts.Cursor = res.Cursor
	}
}

func objectKeys(objs []agentd.BlobObject) []string {
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

func md5Hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// randomBytes returns n bytes that depend on seed only, so failures repeat.
func randomBytes(seed byte, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// onlyReader hides every method of a reader but Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// failingReader yields data, then fails with err instead of io.EOF.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// cancellingReader cancels a context on its first read, then goes on
// reading.
type cancellingReader struct {
	r      io.Reader
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	c.cancel()
	return c.r.Read(p)
}
