package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
)

// fakeSecret is the secret key of the tests against fake servers: if it
// showed in an error, the tests would find it.
const fakeSecret = "fake-secret-Wb7Rq2Zt9Xk4Mn6"

// withMaxAttempts bounds the SDK's retries, so that tests of failures do
// not wait out its backoff.
func withMaxAttempts(n int) Option { return func(s *settings) { s.maxAttempts = n } }

// fakeS3 is a server that answers Open's probe (a one-key listing) and
// hands every other request to handle.
func fakeS3(t *testing.T, handle http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Method == http.MethodGet && r.URL.Path == "/bucket" && q.Get("list-type") == "2" && q.Get("max-keys") == "1" && !q.Has("start-after") {
			w.Header().Set("Content-Type", "application/xml")
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bucket</Name><KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>`)
			return
		}
		handle(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// openFake opens a store on the fake server, with the prefix "pre/".
func openFake(t *testing.T, srv *httptest.Server, opts ...Option) *Store {
	t.Helper()
	opts = append([]Option{WithCredentials("AKIDFAKE", fakeSecret), withMaxAttempts(1)}, opts...)
	s, err := Open(t.Context(), "s3://bucket/pre?region=us-east-1&endpoint="+srv.URL, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// s3Error answers as S3 does when it refuses a request. The message echoes
// the request's Authorization header, as a careless server might: it holds
// the access key ID and a signature, never the secret.
func s3Error(w http.ResponseWriter, r *http.Request, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	if r.Method == http.MethodHead || status == http.StatusNotModified {
		return // no body, as S3 sends none
	}
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>refused; you sent %s</Message><RequestId>req-1</RequestId></Error>`,
		code, r.Header.Get("Authorization"))
}

func TestKindOf(t *testing.T) {
	tests := []struct {
		status int
		code   string
		want   agentd.Kind
	}{
		{404, "NoSuchKey", agentd.KindNotFound},
		{404, "", agentd.KindNotFound}, // a HEAD's answer has no code
		{404, "NoSuchBucket", agentd.KindStorageUnavailable},
		{412, "PreconditionFailed", agentd.KindPreconditionFailed},
		{412, "", agentd.KindPreconditionFailed},
		{304, "", agentd.KindPreconditionFailed},
		{304, "NotModified", agentd.KindPreconditionFailed},
		{416, "InvalidRange", agentd.KindInvalid},
		{400, "InvalidArgument", agentd.KindInvalid},
		{400, "", agentd.KindInvalid},
		{400, "EntityTooLarge", agentd.KindTooLarge},
		{400, "KeyTooLongError", agentd.KindTooLarge},
		{400, "MetadataTooLarge", agentd.KindTooLarge},
		{413, "", agentd.KindTooLarge},
		{400, "RequestTimeout", agentd.KindStorageUnavailable},
		{409, "OperationAborted", agentd.KindConflict},
		{403, "AccessDenied", agentd.KindStorageUnavailable},
		{403, "SignatureDoesNotMatch", agentd.KindStorageUnavailable},
		{403, "InvalidAccessKeyId", agentd.KindStorageUnavailable},
		{403, "RequestTimeTooSkewed", agentd.KindStorageUnavailable},
		{401, "", agentd.KindStorageUnavailable},
		{429, "", agentd.KindStorageUnavailable},
		{500, "InternalError", agentd.KindStorageUnavailable},
		{502, "", agentd.KindStorageUnavailable},
		{503, "SlowDown", agentd.KindStorageUnavailable},
		{503, "ServiceUnavailable", agentd.KindStorageUnavailable},
		{0, "", agentd.KindStorageUnavailable}, // no answer at all
	}
	for _, tc := range tests {
		if got, _ := kindOf(tc.status, tc.code); got != tc.want {
			t.Errorf("kindOf(%d, %q) = %q, want %q", tc.status, tc.code, got, tc.want)
		}
	}
}

// TestServerErrors drives each operation into each kind of refusal, through
// the SDK, and checks the kind and that the secret is nowhere.
func TestServerErrors(t *testing.T) {
	tests := []struct {
		status int
		code   string
		want   agentd.Kind
	}{
		{404, "NoSuchKey", agentd.KindNotFound},
		{404, "NoSuchBucket", agentd.KindStorageUnavailable},
		{403, "SignatureDoesNotMatch", agentd.KindStorageUnavailable},
		{400, "InvalidArgument", agentd.KindInvalid},
		{500, "InternalError", agentd.KindStorageUnavailable},
		{503, "SlowDown", agentd.KindStorageUnavailable},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.status, tc.code), func(t *testing.T) {
			srv := fakeS3(t, func(w http.ResponseWriter, r *http.Request) { s3Error(w, r, tc.status, tc.code) })
			s := openFake(t, srv)
			ctx := t.Context()
			check := func(op string, err error) {
				t.Helper()
				want := tc.want
				switch {
				case op == "Delete" && want == agentd.KindNotFound:
					want = "" // deleting an absent key is no error
				case op == "Head" && tc.status == http.StatusNotFound:
					// A HEAD's answer has no body, so no code to tell a
					// missing bucket from a missing key.
					want = agentd.KindNotFound
				}
				if got := agentd.KindOf(err); got != want {
					t.Errorf("%s: err = %v (kind %q), want kind %q", op, err, got, want)
				}
				if err != nil && strings.Contains(err.Error(), fakeSecret) {
					t.Errorf("%s: the error shows the secret: %v", op, err)
				}
			}
			_, err := s.Put(ctx, "k", strings.NewReader("body"), agentd.BlobPutOptions{})
			check("Put", err)
			res, err := s.Get(ctx, "k", agentd.BlobGetOptions{})
			if err == nil {
				res.Body.Close()
			}
			check("Get", err)
			_, err = s.Head(ctx, "k")
			check("Head", err)
			check("Delete", s.Delete(ctx, "k"))
			_, err = s.List(ctx, agentd.BlobListOptions{})
			if tc.want == agentd.KindNotFound {
				// A listing is never "not found"; the fake's 404 for
				// it is a server error of sorts, classified as S3's.
				if err == nil {
					t.Error("List: no error from a refusing server")
				}
			} else {
				check("List", err)
			}
		})
	}
}

func TestConditionalAnswers(t *testing.T) {
	for _, status := range []int{http.StatusPreconditionFailed, http.StatusNotModified} {
		srv := fakeS3(t, func(w http.ResponseWriter, r *http.Request) { s3Error(w, r, status, "") })
		s := openFake(t, srv)
		res, err := s.Get(t.Context(), "k", agentd.BlobGetOptions{IfMatch: "abc"})
		if err == nil {
			res.Body.Close()
		}
		if !errors.Is(err, agentd.ErrPreconditionFailed) {
			t.Errorf("Get answered %d: err = %v, want KindPreconditionFailed", status, err)
		}
	}
}

// TestWrongCredentialsOnOpen shows Open failing on a server that refuses
// the signature, as storage that cannot be used, without the secret.
func TestWrongCredentialsOnOpen(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s3Error(w, r, http.StatusForbidden, "SignatureDoesNotMatch")
	}))
	defer srv.Close()
	_, err := Open(t.Context(), "s3://bucket?endpoint="+srv.URL, WithCredentials("AKIDFAKE", fakeSecret), withMaxAttempts(1))
	if agentd.KindOf(err) != agentd.KindStorageUnavailable {
		t.Errorf("Open: err = %v, want KindStorageUnavailable", err)
	}
	if err != nil && (strings.Contains(err.Error(), fakeSecret) || !strings.Contains(err.Error(), "credentials")) {
		t.Errorf("Open: %v; want it to blame the credentials, and not show the secret", err)
	}
}

func TestUnreachable(t *testing.T) {
	// A port nothing listens on: bind one, then free it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Open(t.Context(), "s3://bucket?endpoint=http://"+addr, WithCredentials("AKIDFAKE", fakeSecret), withMaxAttempts(1))
	if agentd.KindOf(err) != agentd.KindStorageUnavailable {
		t.Errorf("Open of an unreachable server: err = %v, want KindStorageUnavailable", err)
	}
	if err != nil && strings.Contains(err.Error(), fakeSecret) {
		t.Errorf("the error shows the secret: %v", err)
	}
}

// hangingServer accepts requests past Open's probe and answers none until
// the client gives up; arrived receives each one as it comes.
func hangingServer(t *testing.T) (*httptest.Server, chan struct{}) {
	arrived := make(chan struct{}, 16)
	srv := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		// The server notices a client gone, and ends r's context, only
		// once the request's body is read.
		io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	return srv, arrived
}

func TestOpTimeout(t *testing.T) {
	srv, _ := hangingServer(t)
	s := openFake(t, srv, WithOpTimeout(50*time.Millisecond))
	ctx := t.Context()
	_, err := s.Head(ctx, "k")
	if agentd.KindOf(err) != agentd.KindStorageUnavailable || !strings.Contains(err.Error(), "did not answer within 50ms") {
		t.Errorf("Head of a server that does not answer: err = %v, want KindStorageUnavailable, no answer within 50ms", err)
	}
	res, err := s.Get(ctx, "k", agentd.BlobGetOptions{})
	if err == nil {
		res.Body.Close()
	}
	if agentd.KindOf(err) != agentd.KindStorageUnavailable {
		t.Errorf("Get of a server that does not answer: err = %v, want KindStorageUnavailable", err)
	}
}

// TestCallerCancels cancels calls while the server holds them: the error is
// the caller's own, KindTimeout wrapping context.Canceled.
func TestCallerCancels(t *testing.T) {
	srv, arrived := hangingServer(t)
	s := openFake(t, srv)
	calls := map[string]func(ctx context.Context) error{
		"Head": func(ctx context.Context) error { _, err := s.Head(ctx, "k"); return err },
		"Get": func(ctx context.Context) error {
			res, err := s.Get(ctx, "k", agentd.BlobGetOptions{})
			if err == nil {
				res.Body.Close()
			}
			return err
		},
		"Put": func(ctx context.Context) error {
			_, err := s.Put(ctx, "k", strings.NewReader("x"), agentd.BlobPutOptions{})
			return err
		},
		"Delete": func(ctx context.Context) error { return s.Delete(ctx, "a", "b") },
		"List":   func(ctx context.Context) error { _, err := s.List(ctx, agentd.BlobListOptions{}); return err },
	}
	for name, call := range calls {
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			<-arrived
			cancel()
		}()
		err := call(ctx)
		cancel()
		if !errors.Is(err, context.Canceled) || agentd.KindOf(err) != agentd.KindTimeout {
			t.Errorf("%s cancelled while the server held it: err = %v (kind %q), want KindTimeout wrapping context.Canceled",
				name, err, agentd.KindOf(err))
		}
	}
}

// TestBodyOutlivesContext shows a Get's body readable after the context of
// the call is cancelled, as with the embedded backend.
func TestBodyOutlivesContext(t *testing.T) {
	release := make(chan struct{})
	srv := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
		w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "hello")
		w.(http.Flusher).Flush()
		<-release // the rest comes after the caller's context is gone
		io.WriteString(w, "world")
	})
	s := openFake(t, srv)
	ctx, cancel := context.WithCancel(t.Context())
	res, err := s.Get(ctx, "k", agentd.BlobGetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	cancel()
	close(release)
	data, err := io.ReadAll(res.Body)
	if err != nil || string(data) != "helloworld" {
		t.Errorf("read %q, %v after cancelling; want helloworld", data, err)
	}
	want := time.Date(2006, 1, 2, 15, 4, 5, 0, time.UTC)
	if res.ETag != "0123456789abcdef0123456789abcdef" || res.Size != 10 || !res.Uploaded.Equal(want) {
		t.Errorf("Get = %+v", res.BlobObject)
	}
}

// TestPutRequest checks what a Put sends: the length and MD5 of the body,
// no checksum trailer or chunked encoding (which S3-compatible servers
// refuse), the key under the store's prefix, and metadata as headers. A
// body that fails sends nothing.
func TestPutRequest(t *testing.T) {
	var puts atomic.Int32
	var got *http.Request
	var gotBody []byte
	srv := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut {
			s3Error(w, r, http.StatusNotImplemented, "NotImplemented")
			return
		}
		puts.Add(1)
		got = r
		gotBody, _ = io.ReadAll(r.Body)
		w.Header().Set("ETag", `"5d41402abc4b2a76b9719d911017c592"`)
		w.Header().Set("Date", "Tue, 03 Jan 2006 10:00:00 GMT")
	})
	s := openFake(t, srv)
	ctx := t.Context()

	_, err := s.Put(ctx, "k", &failingReader{data: []byte("hel"), err: errors.New("boom")}, agentd.BlobPutOptions{})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Put of a failing body: err = %v, want boom", err)
	}
	if n := puts.Load(); n != 0 {
		t.Fatalf("Put of a failing body sent %d requests", n)
	}

	obj, err := s.Put(ctx, "dir/k", onlyReader{strings.NewReader("hello")}, agentd.BlobPutOptions{
		CustomMetadata: map[string]string{"plain": "v", "Mixed Case": "ünï"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.URL.Path != "/bucket/pre/dir/k" || string(gotBody) != "hello" {
		t.Errorf("PUT %s with %q", got.URL.Path, gotBody)
	}
	h := got.Header
	if got.ContentLength != 5 || h.Get("Content-MD5") != "XUFAKrxLKna5cZ2REBfFkg==" || h.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("PUT: Content-Length %d, Content-MD5 %q, Content-Type %q", got.ContentLength, h.Get("Content-MD5"), h.Get("Content-Type"))
	}
	for name := range h {
		n := strings.ToLower(name)
		if strings.HasPrefix(n, "x-amz-checksum") || n == "x-amz-trailer" || strings.Contains(h.Get(name), "aws-chunked") {
			t.Errorf("PUT has %s: %s", name, h.Get(name))
		}
	}
	if len(got.TransferEncoding) != 0 {
		t.Errorf("PUT is sent %v", got.TransferEncoding)
	}
	if h.Get("X-Amz-Meta-Plain") != "v" || h.Get(`X-Amz-Meta-`+encodeMetaName("Mixed Case")) != encodeMetaValue("ünï") {
		t.Errorf("PUT metadata headers: %v", h)
	}
	if obj.ETag != "5d41402abc4b2a76b9719d911017c592" || obj.Size != 5 ||
		!obj.Uploaded.Equal(time.Date(2006, 1, 3, 10, 0, 0, 0, time.UTC)) || obj.CustomMetadata["Mixed Case"] != "ünï" {
		t.Errorf("Put = %+v", obj)
	}
}

// TestEnvironmentCredentials shows a store without WithCredentials signing
// with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
func TestEnvironmentCredentials(t *testing.T) {
	// Only the environment: no shared files of whoever runs the test.
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", fakeSecret)
	t.Setenv("AWS_SESSION_TOKEN", "token-from-env")
	var auth, token atomic.Value
	srv := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Authorization"))
		token.Store(r.Header.Get("X-Amz-Security-Token"))
		s3Error(w, r, http.StatusNotFound, "NoSuchKey")
	})
	s, err := Open(t.Context(), "s3://bucket?endpoint="+srv.URL, withMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Head(t.Context(), "k")
	if agentd.KindOf(err) != agentd.KindNotFound {
		t.Fatalf("Head: %v", err)
	}
	if a, _ := auth.Load().(string); !strings.Contains(a, "Credential=AKIDFROMENV/") {
		t.Errorf("Authorization = %q, want the access key from the environment", a)
	}
	if tok, _ := token.Load().(string); tok != "token-from-env" {
		t.Errorf("X-Amz-Security-Token = %q, want the session token from the environment", tok)
	}
}

// TestPrefixCountsTowardKeyLimit: S3's 1024-byte limit is on the whole key,
// the store's prefix included, so the store refuses longer keys itself,
// as too large, before any request.
func TestPrefixCountsTowardKeyLimit(t *testing.T) {
	var requests atomic.Int32
	srv := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		s3Error(w, r, http.StatusNotFound, "NoSuchKey")
	})
	s := openFake(t, srv) // prefix "pre/": 4 bytes
	ctx := t.Context()
	long := strings.Repeat("k", agentd.MaxBlobKeyBytes-3)
	_, err := s.Put(ctx, long, strings.NewReader("x"), agentd.BlobPutOptions{})
	if agentd.KindOf(err) != agentd.KindTooLarge {
		t.Errorf("Put of a key too long with the prefix: %v, want KindTooLarge", err)
	}
	_, err = s.Head(ctx, long)
	if agentd.KindOf(err) != agentd.KindTooLarge {
		t.Errorf("Head of a key too long with the prefix: %v, want KindTooLarge", err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests for keys that cannot exist", n)
	}
	_, err = s.Head(ctx, long[1:])
	if agentd.KindOf(err) != agentd.KindNotFound {
		t.Errorf("Head of a key that just fits: %v, want KindNotFound from the server", err)
	}
}

// TestListDecodesURLEncoding feeds a listing in S3's url encoding type and
// checks the keys come back decoded, without the store's prefix, and that
// a cursor after a delimited prefix starts the next request at the prefix.
func TestListDecodesURLEncoding(t *testing.T) {
	var startAfter atomic.Value
	srv := fakeS3(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "1")
			w.Header().Set("ETag", `"e"`)
			return
		}
		if q.Get("list-type") != "2" || q.Get("encoding-type") != "url" || q.Get("prefix") != "pre/" {
			s3Error(w, r, http.StatusBadRequest, "InvalidArgument")
			return
		}
		startAfter.Store(q.Get("start-after"))
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>bucket</Name><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>`+
			`<Contents><Key>pre/a+b%0D%2Bc</Key><Size>1</Size></Contents>`+
			`<CommonPrefixes><Prefix>pre/d%2F</Prefix></CommonPrefixes></ListBucketResult>`)
	})
	s := openFake(t, srv)
	res, err := s.List(t.Context(), agentd.BlobListOptions{Delimiter: "/", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Objects) != 1 || res.Objects[0].Key != "a b\r+c" || len(res.DelimitedPrefixes) != 1 || res.DelimitedPrefixes[0] != "d/" {
		t.Fatalf("List = %+v", res)
	}
	if !res.Truncated || res.Cursor != agentd.EncodeCursor("d/\xff") {
		t.Errorf("Truncated, Cursor = %v, %q; want a cursor after d/", res.Truncated, res.Cursor)
	}
	if _, err := s.List(t.Context(), agentd.BlobListOptions{Delimiter: "/", Limit: 2, Cursor: res.Cursor}); err != nil {
		t.Fatal(err)
	}
	if sa, _ := startAfter.Load().(string); sa != "pre/d/" {
		t.Errorf("the page after d/ asked to start after %q, want pre/d/", sa)
	}
}

// failingReader yields data, then fails with err.
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

// onlyReader hides every method of a reader but Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// TestNoCredentials: with no credentials anywhere, Open says so, rather
// than that the server is unreachable.
func TestNoCredentials(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
	// The last link of the chain asks the EC2 metadata service, at an
	// address no test may reach.
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		s3Error(w, r, http.StatusForbidden, "AccessDenied")
	}))
	defer srv.Close()
	_, err := Open(t.Context(), "s3://bucket?endpoint="+srv.URL, withMaxAttempts(1))
	if agentd.KindOf(err) != agentd.KindStorageUnavailable || !strings.Contains(err.Error(), "no credentials") {
		t.Errorf("Open without credentials: err = %v; want KindStorageUnavailable, no credentials", err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests sent without credentials", n)
	}
}
