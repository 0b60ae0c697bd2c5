package anthropictest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// HTTPClient returns a client whose transport calls the fake's handler in
// memory, without a socket: agentd's offline mode gives it to the SDK. It
// behaves like a connection to a server: answers stream as they are
// written, a cancelled request context ends the handler's context and the
// body with the context's error, and a dropped answer (CutAfter) is an
// error, before the status or while reading the body.
func (f *Fake) HTTPClient() *http.Client {
	return &http.Client{Transport: memTransport{h: f}}
}

type memTransport struct{ h http.Handler }

func (t memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}

	// The handler's context ends when the client's does, when the client
	// closes the body, or when the handler returns, as a server's does.
	hctx, cancel := context.WithCancel(ctx)
	sreq := req.Clone(hctx)
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	sreq.URL = &url.URL{Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery}
	sreq.RequestURI = req.URL.RequestURI()
	if sreq.Host == "" {
		sreq.Host = req.URL.Host
	}
	sreq.RemoteAddr = "memory"
	sreq.Proto, sreq.ProtoMajor, sreq.ProtoMinor = "HTTP/1.1", 1, 1

	pr, pw := io.Pipe()
	w := &memWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	go func() {
		defer func() {
			sreq.Body.Close()
			if p := recover(); p != nil {
				w.abort(p)
			} else {
				w.finish()
			}
			cancel()
		}()
		t.h.ServeHTTP(w, sreq)
	}()

	select {
	case <-w.ready:
	case <-ctx.Done():
		cancel()
		pw.CloseWithError(ctx.Err())
		return nil, ctx.Err()
	}
	if w.dropped != nil {
		cancel()
		return nil, w.dropped
	}
	// A cancelled context fails reads of the body with its error, as a
	// closed connection would, instead of a clean EOF.
	stop := context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", w.status, http.StatusText(w.status)),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          &memBody{pr: pr, close: func() { stop(); cancel() }},
		ContentLength: -1,
		Request:       req,
	}, nil
}

// memWriter is the ResponseWriter of an in-memory exchange: the status and
// headers are handed over on the first write or flush, the body through a
// pipe, so the client reads each SSE event as it is flushed.
type memWriter struct {
	header  http.Header
	sent    http.Header
	status  int
	wrote   bool
	dropped error // set when the handler ended without a status
	pw      *io.PipeWriter
	ready   chan struct{}
}

func (w *memWriter) Header() http.Header { return w.header }

func (w *memWriter) WriteHeader(code int) {
	if w.wrote || code < 200 {
		return
	}
	w.wrote, w.status, w.sent = true, code, w.header.Clone()
	close(w.ready)
}

func (w *memWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(p)
}

// Flush sends the status and headers; the body is unbuffered already.
func (w *memWriter) Flush() { w.WriteHeader(http.StatusOK) }

func (w *memWriter) finish() {
	w.WriteHeader(http.StatusOK)
	w.pw.Close()
}

// abort is what a server does when its handler panics: drop the connection.
func (w *memWriter) abort(p any) {
	if !w.wrote {
		w.wrote = true
		if p == http.ErrAbortHandler {
			w.dropped = fmt.Errorf("anthropictest: connection dropped before the response: %w", io.EOF)
		} else {
			w.dropped = fmt.Errorf("anthropictest: handler panicked: %v", p)
		}
		close(w.ready)
	}
	w.pw.CloseWithError(io.ErrUnexpectedEOF)
}

type memBody struct {
	pr    *io.PipeReader
	close func()
}

func (b *memBody) Read(p []byte) (int, error) { return b.pr.Read(p) }

func (b *memBody) Close() error {
	b.pr.Close()
	b.close()
	return nil
}
