package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/agentd/agentd"
)

const (
	// maxPutBytes is the largest object one S3 PUT may create (5 GiB).
	// Larger ones need a multipart upload, whose etag is not the MD5 of the
	// body; this store does not make them.
	maxPutBytes = 5 << 30

	// A body of unknown length is held in memory up to this size, and in a
	// temp file beyond it.
	spoolMemoryBytes = 1 << 20

	copyBufferSize = 64 << 10
)

// Put stores body under key with one PutObject, which S3 applies whole or
// not at all.
//
// The body is read to its end before anything is sent, for its length and
// MD5: a body that fails midway fails the Put without a request, so the old
// object stays, and the request carries Content-Length and Content-MD5, so
// the server refuses a body that arrives truncated or altered rather than
// store it. A seekable body (a file, a bytes.Reader) is read twice, once to
// hash and once to send; any other is copied to memory, or past 1 MiB to a
// temp file in os.TempDir, removed when Put returns. The request may then be
// retried, since the body can be replayed.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, opts agentd.BlobPutOptions) (agentd.BlobObject, error) {
	const op = "blob.put"
	if err := agentd.ValidateBlobPut(key, opts); err != nil {
		return agentd.BlobObject{}, err
	}
	if err := s.checkFullKey(key); err != nil {
		return agentd.BlobObject{}, err
	}
	if err := s.ready(ctx, op); err != nil {
		return agentd.BlobObject{}, err
	}
	contentType := opts.ContentType
	if contentType == "" {
		contentType = defaultContentType
	}

	p, err := preparePayload(ctx, body)
	if err != nil {
		return agentd.BlobObject{}, agentd.E("", op, err)
	}
	defer p.close()
	// Last chance to honour a cancellation before the write can land.
	if err := ctx.Err(); err != nil {
		return agentd.BlobObject{}, agentd.E("", op, err)
	}

	rctx, cancel := s.opContext(ctx)
	defer cancel()
	out, err := s.client.PutObject(rctx, &awss3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           s.fullKey(key),
		Body:          p.body,
		ContentLength: aws.Int64(p.size),
		ContentMD5:    aws.String(base64.StdEncoding.EncodeToString(p.md5)),
		ContentType:   aws.String(contentType),
		Metadata:      encodeMetadata(opts.CustomMetadata),
	})
	if err != nil {
		return agentd.BlobObject{}, s.fail(ctx, rctx, op, err)
	}

	obj := agentd.BlobObject{
		Key:         key,
		Size:        p.size,
		ETag:        hex.EncodeToString(p.md5),
		ContentType: contentType,
		Uploaded:    s.uploaded(out.ResultMetadata),
	}
	if len(opts.CustomMetadata) > 0 {
		// A copy: the caller may reuse its map.
		obj.CustomMetadata = maps.Clone(opts.CustomMetadata)
	}
	// The server's etag is the one Head and List will report; it differs
	// from the MD5 only where S3 does not use MD5 etags (SSE-KMS).
	if e := agentd.TrimETag(aws.ToString(out.ETag)); e != "" {
		obj.ETag = e
	}
	return obj, nil
}

// uploaded is when the server says a Put happened: the Date of its answer,
// to the second like Last-Modified; the clock's time if it sent none.
func (s *Store) uploaded(md middleware.Metadata) time.Time {
	if resp, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok {
		if t, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
			return t.UTC()
		}
	}
	return s.clock.Now().UTC().Truncate(time.Second)
}

// payload is a Put's body, ready to send and to resend.
type payload struct {
	body  io.ReadSeeker
	size  int64
	md5   []byte
	close func()
}

// preparePayload reads body to its end for its size and MD5, and returns a
// replayable copy of it (or body itself, rewound, if it can seek). Its
// errors are the body's own or ctx's, or KindTooLarge.
func preparePayload(ctx context.Context, body io.Reader) (payload, error) {
	if body == nil {
		body = bytes.NewReader(nil)
	}
	sum := md5.New()
	if rs, ok := body.(io.ReadSeeker); ok {
		if start, err := rs.Seek(0, io.SeekCurrent); err == nil {
			n, err := copyBody(ctx, sum, rs, maxPutBytes)
			if err != nil {
				return payload{}, err
			}
			if _, err := rs.Seek(start, io.SeekStart); err != nil {
				return payload{}, fmt.Errorf("rewinding the body: %w", err)
			}
			return payload{body: rs, size: n, md5: sum.Sum(nil), close: func() {}}, nil
		}
		// Not seekable after all (a pipe, say): spool it like any reader.
	}

	var mem bytes.Buffer
	n, err := copyBody(ctx, io.MultiWriter(&mem, sum), io.LimitReader(body, spoolMemoryBytes+1), maxPutBytes)
	if err != nil {
		return payload{}, err
	}
	if n <= spoolMemoryBytes {
		return payload{body: bytes.NewReader(mem.Bytes()), size: n, md5: sum.Sum(nil), close: func() {}}, nil
	}
	f, err := os.CreateTemp("", "agentd-s3-put-*")
	if err != nil {
		return payload{}, agentd.E(agentd.KindInternal, "", fmt.Errorf("creating a temp file for the body: %w", err))
	}
	closeFile := func() {
		// Errors are moot: the file only ever held a copy.
		f.Close()
		os.Remove(f.Name())
	}
	if _, err := f.Write(mem.Bytes()); err != nil {
		closeFile()
		return payload{}, agentd.E(agentd.KindInternal, "", fmt.Errorf("writing the body's temp file: %w", err))
	}
	rest, err := copyBody(ctx, io.MultiWriter(f, sum), body, maxPutBytes-n)
	if err != nil {
		closeFile()
		return payload{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		closeFile()
		return payload{}, agentd.E(agentd.KindInternal, "", fmt.Errorf("rewinding the body's temp file: %w", err))
	}
	return payload{body: f, size: n + rest, md5: sum.Sum(nil), close: closeFile}, nil
}

// copyBody copies src to dst, checking ctx between reads, and fails with
// KindTooLarge past limit bytes. An error of src (or of ctx) is returned as
// it is, so a context error stays one; an error of dst, our own hash or
// temp file, is KindInternal.
func copyBody(ctx context.Context, dst io.Writer, src io.Reader, limit int64) (int64, error) {
	buf := make([]byte, copyBufferSize)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := src.Read(buf)
		if m > 0 {
			if n+int64(m) > limit {
				return n, &agentd.Error{Kind: agentd.KindTooLarge, Field: "body",
					Message: fmt.Sprintf("the body is larger than the %d bytes one S3 PUT may store", int64(maxPutBytes))}
			}
			if _, err := dst.Write(buf[:m]); err != nil {
				return n, agentd.E(agentd.KindInternal, "", fmt.Errorf("buffering the body: %w", err))
			}
			n += int64(m)
		}
		switch {
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, fmt.Errorf("reading the body: %w", rerr)
		}
	}
}
