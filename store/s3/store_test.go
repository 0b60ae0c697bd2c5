package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/store/storetest"
)

// testServer is the S3-compatible server the environment names, as
// scripts/s3-test-server.sh prints it.
type testServer struct {
	endpoint, bucket, accessKey, secretKey, region string
	// kind names the server when its quirks matter to the tests:
	// "versitygw-posix", or "" for one that behaves like S3.
	kind string
}

// serverFromEnv returns the test server, or skips t when none is set.
func serverFromEnv(t testing.TB) testServer {
	t.Helper()
	srv := testServer{
		endpoint:  os.Getenv("AGENTD_TEST_S3_ENDPOINT"),
		bucket:    os.Getenv("AGENTD_TEST_S3_BUCKET"),
		accessKey: os.Getenv("AGENTD_TEST_S3_ACCESS_KEY"),
		secretKey: os.Getenv("AGENTD_TEST_S3_SECRET_KEY"),
		region:    os.Getenv("AGENTD_TEST_S3_REGION"),
		kind:      os.Getenv("AGENTD_TEST_S3_SERVER"),
	}
	if srv.endpoint == "" || srv.bucket == "" || srv.accessKey == "" || srv.secretKey == "" || srv.region == "" {
		t.Skip("no S3 server: set AGENTD_TEST_S3_ENDPOINT, _BUCKET, _ACCESS_KEY, _SECRET_KEY and _REGION " +
			`(eval "$(scripts/s3-test-server.sh)" starts one)`)
	}
	return srv
}

// url names a fresh random prefix in the server's bucket.
func (srv testServer) url(t testing.TB) string {
	t.Helper()
	var b [8]byte
	rand.Read(b[:])
	q := url.Values{"endpoint": {srv.endpoint}, "region": {srv.region}, "path_style": {"true"}}
	return "s3://" + srv.bucket + "/agentd-test/" + hex.EncodeToString(b[:]) + "?" + q.Encode()
}

// open opens a store on a fresh prefix of the test server, and empties and
// closes it when t ends.
func (srv testServer) open(t testing.TB, opts ...Option) *Store {
	t.Helper()
	opts = append([]Option{WithCredentials(srv.accessKey, srv.secretKey)}, opts...)
	s, err := Open(t.Context(), srv.url(t), opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		// t.Context is done by now.
		ctx := context.Background()
		defer s.Close()
		opts := agentd.BlobListOptions{}
		for {
			res, err := s.List(ctx, opts)
			if err != nil {
				t.Errorf("cleanup: List: %v", err)
				return
			}
			keys := make([]string, 0, len(res.Objects))
			for _, o := range res.Objects {
				keys = append(keys, o.Key)
			}
			if err := s.Delete(ctx, keys...); err != nil {
				t.Errorf("cleanup: Delete: %v", err)
				return
			}
			if !res.Truncated {
				return
			}
			opts.Cursor = res.Cursor
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	srv := serverFromEnv(t)
	opts := []storetest.BlobSuiteOption{
		storetest.SkipMaxLengthKeys("each test's random key prefix counts toward S3's 1024-byte key limit, " +
			"so 1024-byte keys do not fit under it (the store refuses them as too large, see TestPrefixCountsTowardKeyLimit)"),
	}
	if srv.kind == "versitygw-posix" {
		opts = append(opts, storetest.SkipPathLikeKeys("versitygw's POSIX backend stores each key as a file path, "+
			`so "a" and "a/b" cannot coexist, "dir/" cannot have a body and "a//b" becomes "a/b"; `+
			"S3 and R2 hold them (TestListingWithoutPathLikeKeys covers the listing cases here)"))
	}
	storetest.TestBlob(t, func(t *testing.T) agentd.Blob { return srv.open(t) }, opts...)
}

// BenchmarkPutGet64KiB measures one Put and one whole Get of 64 KiB, the
// size of a typical context document, over the test server.
func BenchmarkPutGet64KiB(b *testing.B) {
	srv := serverFromEnv(b)
	s := srv.open(b)
	body := make([]byte, 64<<10)
	rand.Read(body)
	ctx := b.Context()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := s.Put(ctx, "bench", bytes.NewReader(body), agentd.BlobPutOptions{}); err != nil {
			b.Fatal(err)
		}
		res, err := s.Get(ctx, "bench", agentd.BlobGetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, res.Body); err != nil {
			b.Fatal(err)
		}
		res.Body.Close()
	}
}

// TestListingWithoutPathLikeKeys lists keys that a file tree can hold (no
// key is a "directory" of another) with every combination of the listing
// options, a page size at a time, and compares with a plain model of the
// listing. It covers, on servers that store keys as file paths, what the
// suite's listing subtests that need such keys cover elsewhere.
func TestListingWithoutPathLikeKeys(t *testing.T) {
	srv := serverFromEnv(t)
	s := srv.open(t)
	ctx := t.Context()
	keys := []string{
		"B", "Z", "a-c", "a.b", "aa/1", "b/1", "b/2", "b/sub/w", "b/sub/z", "b2/w", "c",
		"e\u0301", "\u00e9", "\uff5e", "\U0001F600", "p/1", "p/2", "p2", "q/x/y/z",
	}
	heads := map[string]agentd.BlobObject{}
	for i, k := range keys {
		meta := map[string]string{"n": strconv.Itoa(i)}
		if _, err := s.Put(ctx, k, strings.NewReader(k), agentd.BlobPutOptions{ContentType: "text/plain", CustomMetadata: meta}); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
		h, err := s.Head(ctx, k)
		if err != nil {
			t.Fatalf("Head(%q): %v", k, err)
		}
		heads[k] = h
	}

	res, err := s.List(ctx, agentd.BlobListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range res.Objects {
		// A listed object is described as Head describes it.
		if h := heads[o.Key]; !reflect.DeepEqual(o, h) {
			t.Errorf("List: %+v, Head said %+v", o, h)
		}
	}

	for _, prefix := range []string{"", "b", "b/", "b/sub/", "p", "zz"} {
		for _, delim := range []string{"", "/", "sub"} {
			for _, after := range []string{"", "a", "b/1", "b/", "b/sub/w", "p2"} {
				for _, limit := range []int{1, 2, 3, 0} {
					opts := agentd.BlobListOptions{Prefix: prefix, Delimiter: delim, StartAfter: after, Limit: limit}
					wantObjs, wantPrefixes := modelListing(keys, opts)
					gotObjs, gotPrefixes := pageThrough(t, s, opts)
					if !slices.Equal(gotObjs, wantObjs) || !slices.Equal(gotPrefixes, wantPrefixes) {
						t.Errorf("%+v: objects %q, prefixes %q; want %q, %q", opts, gotObjs, gotPrefixes, wantObjs, wantPrefixes)
					}
				}
			}
		}
	}
}

// modelListing is what a listing of keys with opts holds, all pages
// together: the keys after StartAfter with the prefix, those with the
// delimiter after the prefix grouped into one prefix each.
func modelListing(keys []string, opts agentd.BlobListOptions) (objs, prefixes []string) {
	for _, k := range slices.Sorted(slices.Values(keys)) {
		if !strings.HasPrefix(k, opts.Prefix) || k <= opts.StartAfter {
			continue
		}
		if opts.Delimiter != "" {
			if i := strings.Index(k[len(opts.Prefix):], opts.Delimiter); i >= 0 {
				p := k[:len(opts.Prefix)+i+len(opts.Delimiter)]
				if !slices.Contains(prefixes, p) {
					prefixes = append(prefixes, p)
				}
				continue
			}
		}
		objs = append(objs, k)
	}
	return objs, prefixes
}

// pageThrough lists every page, checking that no page is over its limit and
// that no entry shows twice or out of order.
func pageThrough(t *testing.T, s *Store, opts agentd.BlobListOptions) (objs, prefixes []string) {
	t.Helper()
	last := ""
	for range 100 {
		res, err := s.List(t.Context(), opts)
		if err != nil {
			t.Fatalf("List(%+v): %v", opts, err)
		}
		if opts.Limit > 0 && len(res.Objects)+len(res.DelimitedPrefixes) > opts.Limit {
			t.Errorf("List(%+v): %d entries on a page", opts, len(res.Objects)+len(res.DelimitedPrefixes))
		}
		var entries []string
		for _, o := range res.Objects {
			objs = append(objs, o.Key)
			entries = append(entries, o.Key)
		}
		prefixes = append(prefixes, res.DelimitedPrefixes...)
		entries = append(entries, res.DelimitedPrefixes...)
		slices.Sort(entries)
		for _, e := range entries {
			if e <= last && last != "" {
				t.Errorf("List(%+v): %q after %q", opts, e, last)
			}
			last = e
		}
		if !res.Truncated {
			return objs, prefixes
		}
		opts.Cursor = res.Cursor
	}
	t.Fatalf("List(%+v) did not end", opts)
	return nil, nil
}

// TestWrongSecret shows a store that refuses the credentials: Open fails,
// as storage that cannot be used, and its error does not hold the secret.
func TestWrongSecret(t *testing.T) {
	srv := serverFromEnv(t)
	const secret = "wrong-secret-Zq8vX2kL9pR4"
	_, err := Open(t.Context(), srv.url(t), WithCredentials(srv.accessKey, secret))
	if got := agentd.KindOf(err); got != agentd.KindStorageUnavailable {
		t.Errorf("Open with a wrong secret: err = %v (kind %q), want %q", err, got, agentd.KindStorageUnavailable)
	}
	if err != nil && strings.Contains(err.Error(), secret) {
		t.Errorf("the error shows the secret: %v", err)
	}
}
