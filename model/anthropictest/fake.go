package anthropictest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// MaxBodyBytes is the API's request size limit: larger bodies get 413
// request_too_large.
const MaxBodyBytes = 32 << 20

// Fake is a fake Anthropic Messages API. It is an http.Handler, safe for
// concurrent use.
type Fake struct {
	// Options, fixed by New.
	minCacheTokens int64
	now            func() time.Time
	apiKey         string
	maxLog         int

	mu        sync.Mutex // guards what follows
	seq       int
	queue     []Reply
	responder func(Request) Reply
	requests  []*Request // each updated in place as its answer is decided
	cache     map[[32]byte]cacheEntry
}

// Option configures a Fake.
type Option func(*Fake)

// WithMinCacheTokens sets the minimum cacheable prefix, in tokens (default
// [DefaultMinCacheTokens]; 4096 for Opus 4.5+ and Haiku 4.5).
func WithMinCacheTokens(n int) Option {
	return func(f *Fake) { f.minCacheTokens = int64(n) }
}

// WithClock sets the clock of cache expiry (default time.Now), so tests can
// expire the prompt cache without waiting.
func WithClock(now func() time.Time) Option {
	return func(f *Fake) { f.now = now }
}

// WithAPIKey makes the fake accept only key; by default any non-empty
// credential is accepted.
func WithAPIKey(key string) Option {
	return func(f *Fake) { f.apiKey = key }
}

// WithMaxRequests keeps only the last n requests in the log, so that a
// long offline session does not hold every request (default: all).
func WithMaxRequests(n int) Option {
	return func(f *Fake) { f.maxLog = n }
}

// New returns a Fake that answers with [Echo] until replies are scripted.
func New(opts ...Option) *Fake {
	f := &Fake{minCacheTokens: DefaultMinCacheTokens, now: time.Now}
	for _, o := range opts {
		o(f)
	}
	f.Reset()
	return f
}

// TB is the part of testing.TB that NewServer needs; it is an interface of
// its own so that agentd's binary, which uses the fake offline, does not
// link package testing.
type TB interface {
	Helper()
	Cleanup(func())
}

// NewServer starts the fake on an httptest server, closed by t.Cleanup, and
// returns it with its base URL.
func NewServer(t TB, opts ...Option) (*Fake, string) {
	t.Helper()
	f := New(opts...)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

// Enqueue scripts replies: each valid request to /v1/messages takes the
// next one, in order. Invalid requests are answered by the validator and
// take none.
func (f *Fake) Enqueue(replies ...Reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, replies...)
}

// SetResponder sets what answers a valid request when the queue is empty
// (default: Echo; nil restores it). It is called without locks held, maybe
// concurrently.
func (f *Fake) SetResponder(fn func(Request) Reply) {
	if fn == nil {
		fn = Echo
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.responder = fn
}

// Requests returns every request received so far (the last n with
// WithMaxRequests), valid or not, in order of arrival.
func (f *Fake) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Request, len(f.requests))
	for i, r := range f.requests {
		out[i] = *r
	}
	return out
}

// Reset forgets the queue, the log, the prompt cache and the responder, as
// if the fake were new. Request ids start again from 1.
func (f *Fake) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq = 0
	f.queue = nil
	f.responder = Echo
	f.requests = nil
	f.cache = map[[32]byte]cacheEntry{}
}

// exchange is one request being answered. req is the handler's own; entry
// is its copy in the log, which others read under f.mu.
type exchange struct {
	f     *Fake
	entry *Request
	w     http.ResponseWriter
	req   Request
}

// sync copies req to the log.
func (x *exchange) sync() {
	x.f.mu.Lock()
	defer x.f.mu.Unlock()
	*x.entry = x.req
}

// record logs how the request is answered. It runs before the answer is
// written, so a client that has the answer finds it in the log.
func (x *exchange) record(status int, errType, msg string) {
	x.req.Status, x.req.ErrorType, x.req.ErrorMessage = status, errType, msg
	x.sync()
}

func (x *exchange) fail(e *apiError) {
	x.record(e.status, e.typ, e.message)
	writeError(x.w, e.status, e.typ, e.message, x.req.RequestID)
}

func writeError(w http.ResponseWriter, status int, errType, msg, requestID string) {
	writeJSON(w, status, map[string]any{
		"type":       "error",
		"error":      map[string]string{"type": errType, "message": msg},
		"request_id": requestID,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// versionOK reports whether v has the shape of an anthropic-version: a
// date, YYYY-MM-DD.
func versionOK(v string) bool {
	if len(v) != len("2006-01-02") {
		return false
	}
	for i, c := range v {
		if i == 4 || i == 7 {
			if c != '-' {
				return false
			}
		} else if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ServeHTTP answers one request like the API does. The order of checks is
// the API's: route, credential, version, size, body; only then is a
// scripted reply consumed.
func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.seq++
	seq := f.seq
	x := &exchange{f: f, w: w, entry: &Request{}}
	x.req = Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), RequestID: fmt.Sprintf("req_fake_%06d", seq)}
	*x.entry = x.req
	f.requests = append(f.requests, x.entry)
	if f.maxLog > 0 && len(f.requests) > f.maxLog {
		f.requests = slices.Delete(f.requests, 0, len(f.requests)-f.maxLog)
	}
	f.mu.Unlock()
	w.Header().Set("request-id", x.req.RequestID)

	// A body announced as too large is not read: it is not logged either.
	// Otherwise read one byte past the limit to tell "at" from "over".
	var body []byte
	tooLarge := r.ContentLength > MaxBodyBytes
	if !tooLarge {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
		if err != nil {
			x.fail(&apiError{status: http.StatusBadRequest, typ: "invalid_request_error", message: "could not read the request body"})
			return
		}
		tooLarge = len(body) > MaxBodyBytes
		x.req.Raw = body
		x.sync()
	}

	count := r.URL.Path == "/v1/messages/count_tokens"
	if r.Method != http.MethodPost || (r.URL.Path != "/v1/messages" && !count) {
		x.fail(&apiError{status: http.StatusNotFound, typ: "not_found_error", message: fmt.Sprintf("Not found: %s %s", r.Method, r.URL.Path)})
		return
	}
	if e := f.authenticate(r.Header); e != nil {
		x.fail(e)
		return
	}
	version := r.Header.Get("anthropic-version")
	if version == "" {
		x.fail(invalid("anthropic-version", "header is required"))
		return
	}
	if !versionOK(version) {
		x.fail(invalid("anthropic-version", "%q is not a valid version", version))
		return
	}
	if tooLarge {
		// Drain the rest so the client reads the answer instead of a reset
		// connection; a test fake can afford to.
		io.Copy(io.Discard, r.Body)
		x.fail(&apiError{status: http.StatusRequestEntityTooLarge, typ: "request_too_large", message: fmt.Sprintf("Request exceeds the maximum allowed number of bytes. The maximum request size is %d MB.", MaxBodyBytes>>20)})
		return
	}

	e := parseRequest(body, &x.req, count, version)
	x.sync()
	if e != nil {
		x.fail(e)
		return
	}
	if count {
		x.record(http.StatusOK, "", "")
		writeJSON(w, http.StatusOK, map[string]int64{"input_tokens": inputTokens(&x.req)})
		return
	}

	reply := f.next(x.req)
	x.answer(r.Context(), reply, seq)
}

// authenticate accepts a key in Authorization: Bearer (what the v2 SDKs
// send) or in x-api-key (v1 SDKs, curl).
func (f *Fake) authenticate(h http.Header) *apiError {
	key, what := h.Get("x-api-key"), "x-api-key"
	if v := h.Get("Authorization"); len(v) > len("Bearer ") && strings.EqualFold(v[:len("Bearer ")], "Bearer ") {
		key, what = v[len("Bearer "):], "bearer token"
	}
	switch {
	case key == "":
		return &apiError{status: http.StatusUnauthorized, typ: "authentication_error", message: "missing credentials: send an x-api-key header or Authorization: Bearer <key>"}
	case f.apiKey != "" && key != f.apiKey:
		return &apiError{status: http.StatusUnauthorized, typ: "authentication_error", message: "invalid " + what}
	}
	return nil
}

// next takes the next scripted reply or asks the responder.
func (f *Fake) next(req Request) Reply {
	f.mu.Lock()
	if len(f.queue) > 0 {
		r := f.queue[0]
		f.queue = f.queue[1:]
		f.mu.Unlock()
		return r
	}
	fn := f.responder
	f.mu.Unlock()
	return fn(req)
}

// answer writes reply to a valid messages request.
func (x *exchange) answer(ctx context.Context, reply Reply, seq int) {
	// A scripted header replaces the fake's own (request-id).
	for k, vs := range reply.header {
		x.w.Header()[k] = vs
	}
	if reply.delay > 0 {
		t := time.NewTimer(reply.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return // the client went away: nobody reads an answer
		}
	}

	switch {
	case reply.status >= 400:
		x.fail(&apiError{status: reply.status, typ: reply.errType, message: reply.errMessage})
		return
	case reply.cut && !x.req.Stream:
		// Dropped before the status: the client sees a reset connection.
		panic(http.ErrAbortHandler)
	case reply.errEvent != nil && !x.req.Stream:
		x.fail(&apiError{status: errorStatus(reply.errEvent.typ), typ: reply.errEvent.typ, message: reply.errEvent.message})
		return
	}

	m := x.message(reply, seq)
	if x.req.Stream {
		x.stream(ctx, m, reply)
		return
	}
	x.record(http.StatusOK, "", "")
	writeJSON(x.w, http.StatusOK, m)
}
