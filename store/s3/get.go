package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/agentd/agentd"
)

// getAttempts bounds how often Get asks again when the object changes
// between its GET and the HEAD that explains a refused range.
const getAttempts = 3

// Get opens key with one GetObject, with the range and conditions in the
// request, so S3 checks them against the object it serves.
//
// As with the embedded backend, ctx (and the store's operation timeout)
// covers the request until the server starts to answer, not reading the
// body: the body is read until it ends or the caller closes it.
func (s *Store) Get(ctx context.Context, key string, opts agentd.BlobGetOptions) (*agentd.BlobBody, error) {
	const op = "blob.get"
	if err := s.checkKey(key); err != nil {
		return nil, err
	}
	if opts.Range != nil {
		// The checks that need no size: negative values, a suffix with
		// an offset.
		if _, _, err := agentd.ResolveRange(opts.Range, math.MaxInt64); err != nil {
			return nil, err
		}
	}
	if err := s.ready(ctx, op); err != nil {
		return nil, err
	}
	if opts.IfNoneMatch == "*" {
		// Every object matches "*", so the get fails whenever the key
		// exists; S3 servers differ on "*" in a GET, and a HEAD says it
		// without opening a body.
		if _, err := s.head(ctx, op, key); err != nil {
			return nil, err
		}
		return nil, agentd.Errorf(agentd.KindPreconditionFailed, op, "the object exists and If-None-Match is *")
	}
	for range getAttempts {
		res, again, err := s.getOnce(ctx, op, key, opts)
		if !again {
			return res, err
		}
	}
	return nil, agentd.Errorf(agentd.KindStorageUnavailable, op, "the object changed under %d reads in a row", getAttempts)
}

// getOnce makes one GetObject. again reports an object that changed between
// the GET and the HEAD that followed a refused range.
func (s *Store) getOnce(ctx context.Context, op, key string, opts agentd.BlobGetOptions) (res *agentd.BlobBody, again bool, err error) {
	in := &awss3.GetObjectInput{Bucket: aws.String(s.bucket), Key: s.fullKey(key)}
	if opts.IfMatch != "" && opts.IfMatch != "*" {
		// "*" holds for any object that exists, which a successful GET
		// shows; S3 servers differ on "*" itself.
		in.IfMatch = aws.String(quoteETag(opts.IfMatch))
	}
	if opts.IfNoneMatch != "" {
		in.IfNoneMatch = aws.String(quoteETag(opts.IfNoneMatch))
	}
	in.Range = rangeHeader(opts.Range)

	// The request's context is detached from ctx so that the body outlives
	// the call; ctx and the timeout cancel it only until the answer comes.
	rctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stopCaller := context.AfterFunc(ctx, func() { cancel(ctx.Err()) })
	timer := time.AfterFunc(s.opTimeout, func() { cancel(&timeoutError{s.opTimeout}) })
	out, err := s.client.GetObject(rctx, in)
	callerStopped, timerStopped := stopCaller(), timer.Stop()
	switch {
	case err != nil:
	case !callerStopped:
		// ctx ended as the answer came, so the body is cut off. (The
		// AfterFunc only starts once ctx is done.)
		out.Body.Close()
		err = ctx.Err()
	case !timerStopped:
		// The timeout struck as the answer came. Its cancel may still be
		// on its way: set the cause here, so fail sees it.
		out.Body.Close()
		te := &timeoutError{s.opTimeout}
		cancel(te)
		err = te
	}
	if err != nil {
		cancel(nil)
		ferr := s.fail(ctx, rctx, op, err)
		if agentd.KindOf(ferr) == agentd.KindInvalid && opts.Range != nil && isRangeRefusal(err) {
			return s.explainRange(ctx, op, key, opts)
		}
		return nil, false, ferr
	}
	closeBody := func() error {
		err := out.Body.Close()
		cancel(context.Canceled)
		return err
	}

	obj := s.object(key, out.ContentLength, out.ETag, out.ContentType, out.Metadata, out.LastModified)
	// A server that ignores If-Match or If-None-Match must not hand out
	// the wrong object: check again here.
	if err := agentd.CheckBlobConditions(opts, obj.ETag); err != nil {
		closeBody()
		return nil, false, err
	}
	var body io.Reader = out.Body
	start, end, total, partial := parseContentRange(aws.ToString(out.ContentRange))
	if partial {
		obj.Size = total
	}
	offset, length, err := agentd.ResolveRange(opts.Range, obj.Size)
	if err != nil {
		closeBody()
		return nil, false, err
	}
	switch {
	case partial && (start != offset || end-start+1 != length):
		closeBody()
		return nil, false, agentd.Errorf(agentd.KindStorageUnavailable, op,
			"the store answered bytes %d-%d of %d for a range that covers %d bytes from %d", start, end, total, length, offset)
	case !partial && (offset != 0 || length != obj.Size):
		// The server sent the whole object (it ignored the range, or the
		// range covers it all): cut the range out here.
		if _, err := io.CopyN(io.Discard, out.Body, offset); err != nil {
			closeBody()
			return nil, false, s.fail(ctx, rctx, op, err)
		}
		body = io.LimitReader(out.Body, length)
	}
	return &agentd.BlobBody{
		BlobObject: obj,
		Body:       &readCloser{Reader: body, close: closeBody},
		Offset:     offset,
		Length:     length,
	}, false, nil
}

// explainRange answers a GET whose range S3 refused (416): a HEAD gives the
// size to say why, as the other backends do. The refusal may also be S3's
// way with an empty object, where a range from 0 is fine for agentd and
// the answer is no bytes.
func (s *Store) explainRange(ctx context.Context, op, key string, opts agentd.BlobGetOptions) (*agentd.BlobBody, bool, error) {
	obj, err := s.head(ctx, op, key)
	if err != nil {
		return nil, false, err
	}
	if err := agentd.CheckBlobConditions(opts, obj.ETag); err != nil {
		return nil, false, err
	}
	offset, length, err := agentd.ResolveRange(opts.Range, obj.Size)
	switch {
	case err != nil:
		return nil, false, err
	case obj.Size == 0:
		return &agentd.BlobBody{BlobObject: obj, Body: io.NopCloser(bytes.NewReader(nil)), Offset: offset, Length: length}, false, nil
	}
	// The range fits the object there is now: it changed since the GET.
	return nil, true, nil
}

// head is Head for op, without the checks the caller already made.
func (s *Store) head(ctx context.Context, op, key string) (agentd.BlobObject, error) {
	rctx, cancel := s.opContext(ctx)
	defer cancel()
	out, err := s.client.HeadObject(rctx, &awss3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: s.fullKey(key)})
	if err != nil {
		return agentd.BlobObject{}, s.fail(ctx, rctx, op, err)
	}
	return s.object(key, out.ContentLength, out.ETag, out.ContentType, out.Metadata, out.LastModified), nil
}

// Head describes key with a HeadObject.
func (s *Store) Head(ctx context.Context, key string) (agentd.BlobObject, error) {
	const op = "blob.head"
	if err := s.checkKey(key); err != nil {
		return agentd.BlobObject{}, err
	}
	if err := s.ready(ctx, op); err != nil {
		return agentd.BlobObject{}, err
	}
	return s.head(ctx, op, key)
}

// rangeHeader is the HTTP Range of r, nil for the whole object. The zero
// range is the whole object too, and is sent as none: S3 refuses "bytes=0-"
// on an empty object, which agentd reads as empty.
func rangeHeader(r *agentd.ByteRange) *string {
	switch {
	case r == nil || *r == (agentd.ByteRange{}):
		return nil
	case r.Suffix > 0:
		return aws.String(fmt.Sprintf("bytes=-%d", r.Suffix))
	case r.Length > 0 && r.Length <= math.MaxInt64-r.Offset:
		return aws.String(fmt.Sprintf("bytes=%d-%d", r.Offset, r.Offset+r.Length-1))
	}
	return aws.String(fmt.Sprintf("bytes=%d-", r.Offset))
}

// parseContentRange reads "bytes first-last/total". partial is false when
// the header is absent or not of that form.
func parseContentRange(h string) (first, last, total int64, partial bool) {
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, 0, 0, false
	}
	span, size, ok := strings.Cut(spec, "/")
	if !ok {
		return 0, 0, 0, false
	}
	a, b, ok := strings.Cut(span, "-")
	if !ok {
		return 0, 0, 0, false
	}
	var err [3]error
	first, err[0] = strconv.ParseInt(a, 10, 64)
	last, err[1] = strconv.ParseInt(b, 10, 64)
	total, err[2] = strconv.ParseInt(size, 10, 64)
	if errors.Join(err[:]...) != nil || first < 0 || last < first || total <= last {
		return 0, 0, 0, false
	}
	return first, last, total, true
}

// quoteETag puts an etag in the quotes HTTP conditions carry.
func quoteETag(etag string) string {
	return `"` + agentd.TrimETag(etag) + `"`
}

// isRangeRefusal reports a 416 answer or S3's InvalidRange code.
func isRangeRefusal(err error) bool {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable {
		return true
	}
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "InvalidRange"
}
