package s3

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"

	"github.com/agentd/agentd"
)

const (
	// maxDeleteKeys is the most keys one DeleteObjects takes.
	maxDeleteKeys = 1000

	// maxListRequests bounds the ListObjectsV2 calls behind one page. One
	// or two suffice unless the listing skips many entries (see List);
	// past the bound the page ends early, truncated, with a cursor.
	maxListRequests = 20

	// afterPrefix marks a cursor that starts after a delimited prefix and
	// everything under it: no UTF-8 key contains this byte, so prefix+0xFF
	// sorts after every key with the prefix. The embedded backend's cursors
	// mean the same.
	afterPrefix = "\xff"
)

// Delete removes keys: one DeleteObject for one key, DeleteObjects in
// chunks of 1000 for more. Every key is validated before any is deleted,
// so a bad key deletes nothing. Absent keys are not an error. If a chunk
// fails, the chunks before it stay deleted.
func (s *Store) Delete(ctx context.Context, keys ...string) error {
	const op = "blob.delete"
	for _, k := range keys {
		if err := s.checkKey(k); err != nil {
			return err
		}
	}
	if err := s.ready(ctx, op); err != nil {
		return err
	}
	if len(keys) == 1 {
		rctx, cancel := s.opContext(ctx)
		defer cancel()
		_, err := s.client.DeleteObject(rctx, &awss3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: s.fullKey(keys[0])})
		if err != nil {
			if err := s.fail(ctx, rctx, op, err); agentd.KindOf(err) != agentd.KindNotFound {
				return err
			}
		}
		return nil
	}
	keys = slices.Compact(slices.Sorted(slices.Values(keys)))
	for chunk := range slices.Chunk(keys, maxDeleteKeys) {
		if err := s.deleteChunk(ctx, op, chunk); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) deleteChunk(ctx context.Context, op string, keys []string) error {
	if err := ctx.Err(); err != nil {
		return agentd.E("", op, err)
	}
	ids := make([]types.ObjectIdentifier, len(keys))
	for i, k := range keys {
		ids[i] = types.ObjectIdentifier{Key: s.fullKey(k)}
	}
	rctx, cancel := s.opContext(ctx)
	defer cancel()
	out, err := s.client.DeleteObjects(rctx, &awss3.DeleteObjectsInput{
		Bucket: aws.String(s.bucket),
		Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
	})
	if err != nil {
		return s.fail(ctx, rctx, op, err)
	}
	for _, e := range out.Errors {
		code := aws.ToString(e.Code)
		if code == "NoSuchKey" {
			continue
		}
		key, _ := s.stripPrefix(aws.ToString(e.Key))
		// A per-key error has a code and no status; an unknown code is
		// taken as the server's failure, as a 500 would be.
		kind, _ := kindOf(http.StatusInternalServerError, code)
		return agentd.Errorf(kind, op, "the store did not delete %q (%s: %s)", key, code, aws.ToString(e.Message))
	}
	return nil
}

// List pages through the bucket with ListObjectsV2 from StartAfter, never
// with S3's continuation tokens: the cursor is "start after this entry", as
// in every backend, so a key written after the cursor shows on the next
// page and a cursor never expires.
//
// A page that ends with a delimited prefix has the cursor prefix+0xFF. S3
// cannot be asked to start there (0xFF is not UTF-8), so the next page
// starts after the prefix itself, which S3 may answer with the same prefix
// first; it is dropped here, as is anything else at or before the cursor.
// A request therefore asks for two entries more than the page needs. A
// StartAfter inside a delimited prefix costs one request more (see
// groupOf).
//
// S3's listing has no content type or custom metadata, which a Blob listing
// carries, so each listed object is described by a HEAD, 16 at a time. An
// object deleted between the listing and its HEAD is left out.
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
	switch {
	case !utf8.ValidString(strings.TrimSuffix(after, afterPrefix)):
		return agentd.BlobListResult{}, agentd.InvalidField(op, "cursor", "cursor is not one this store returned")
	case !utf8.ValidString(opts.StartAfter):
		return agentd.BlobListResult{}, agentd.InvalidField(op, "startAfter", "startAfter is not valid UTF-8")
	case !utf8.ValidString(opts.Prefix):
		return agentd.BlobListResult{}, agentd.InvalidField(op, "prefix", "prefix is not valid UTF-8")
	case !utf8.ValidString(opts.Delimiter):
		return agentd.BlobListResult{}, agentd.InvalidField(op, "delimiter", "delimiter is not valid UTF-8")
	}
	after = max(after, opts.StartAfter)
	if err := s.ready(ctx, op); err != nil {
		return agentd.BlobListResult{}, err
	}

	// Objects is never nil, so an empty page encodes as "objects": [].
	res := agentd.BlobListResult{Objects: []agentd.BlobObject{}}
	var keys []string
	entries := 0
	if g, ok := groupOf(opts, after); ok {
		// The listing starts inside a delimited prefix, which belongs on
		// the page if some of its keys come after the start. S3 servers
		// differ on listing it then (versitygw does not), so ask, and
		// start the listing proper after the whole prefix.
		in, err := s.keysAfter(ctx, op, g, after)
		if err != nil {
			return agentd.BlobListResult{}, err
		}
		if in {
			res.DelimitedPrefixes = append(res.DelimitedPrefixes, g)
			entries++
		}
		after = g + afterPrefix
	}
	// At least one request, even for a page already full, to tell whether
	// there is more.
	for request := 0; request == 0 || entries < opts.Limit; request++ {
		if request == maxListRequests {
			res.Truncated = true
			break
		}
		page, more, err := s.listPage(ctx, op, opts, after, opts.Limit-entries+2)
		if err != nil {
			return agentd.BlobListResult{}, err
		}
		for _, e := range page {
			pos := e.name
			if e.prefix {
				pos += afterPrefix
			}
			if pos <= after {
				continue // at or before the cursor
			}
			if entries == opts.Limit {
				res.Truncated = true
				break
			}
			entries++
			after = pos
			if e.prefix {
				res.DelimitedPrefixes = append(res.DelimitedPrefixes, e.name)
			} else {
				keys = append(keys, e.name)
			}
		}
		if res.Truncated {
			break
		}
		if !more {
			break
		}
		if len(page) == 0 {
			return agentd.BlobListResult{}, agentd.Errorf(agentd.KindStorageUnavailable, op,
				"the store answered an empty listing page that it says is truncated")
		}
		// S3 may hold more entries than it sent: if this page is full,
		// the listing goes on.
		res.Truncated = entries == opts.Limit
	}
	if res.Truncated {
		res.Cursor = agentd.EncodeCursor(after)
	}

	objs, err := s.headAll(ctx, op, keys)
	if err != nil {
		return agentd.BlobListResult{}, err
	}
	res.Objects = append(res.Objects, objs...)
	return res, nil
}

// groupOf returns the delimited prefix that after, a plain key, lies in
// under opts: the one its keys would be listed as.
func groupOf(opts agentd.BlobListOptions, after string) (string, bool) {
	if opts.Delimiter == "" || strings.HasSuffix(after, afterPrefix) {
		return "", false
	}
	rest, ok := strings.CutPrefix(after, opts.Prefix)
	if !ok {
		return "", false
	}
	i := strings.Index(rest, opts.Delimiter)
	if i < 0 {
		return "", false
	}
	return opts.Prefix + rest[:i+len(opts.Delimiter)], true
}

// keysAfter reports whether some key under group sorts after after.
func (s *Store) keysAfter(ctx context.Context, op, group, after string) (bool, error) {
	rctx, cancel := s.opContext(ctx)
	defer cancel()
	out, err := s.client.ListObjectsV2(rctx, &awss3.ListObjectsV2Input{
		Bucket:     aws.String(s.bucket),
		Prefix:     aws.String(s.prefix + group),
		StartAfter: aws.String(s.prefix + after),
		MaxKeys:    aws.Int32(1),
	})
	if err != nil {
		return false, s.fail(ctx, rctx, op, err)
	}
	return len(out.Contents) > 0, nil
}

// entry is one listed key or delimited prefix, without the store's prefix.
type entry struct {
	name   string
	prefix bool
}

// listPage makes one ListObjectsV2 call for up to n entries after the
// position after, and returns its keys and prefixes merged in byte order,
// and whether S3 has more.
func (s *Store) listPage(ctx context.Context, op string, opts agentd.BlobListOptions, after string, n int) ([]entry, bool, error) {
	in := &awss3.ListObjectsV2Input{
		Bucket:  aws.String(s.bucket),
		Prefix:  aws.String(s.prefix + opts.Prefix),
		MaxKeys: aws.Int32(int32(min(n, agentd.MaxBlobListLimit))),
		// Keys may hold characters XML cannot carry (or that it
		// normalizes, like CR); servers that honour this send them
		// percent-encoded, and say so in the answer.
		EncodingType: types.EncodingTypeUrl,
	}
	if opts.Delimiter != "" {
		in.Delimiter = aws.String(opts.Delimiter)
	}
	if sa := strings.TrimSuffix(after, afterPrefix); sa != "" {
		in.StartAfter = aws.String(s.prefix + sa)
	}
	rctx, cancel := s.opContext(ctx)
	defer cancel()
	out, err := s.client.ListObjectsV2(rctx, in)
	if err != nil {
		return nil, false, s.fail(ctx, rctx, op, err)
	}
	decode := func(v string) (string, bool) {
		if out.EncodingType == types.EncodingTypeUrl {
			d, err := url.QueryUnescape(v)
			if err != nil {
				return "", false
			}
			v = d
		}
		return s.stripPrefix(v)
	}
	var keys, prefixes []entry
	for _, o := range out.Contents {
		if k, ok := decode(aws.ToString(o.Key)); ok {
			keys = append(keys, entry{name: k})
		}
	}
	for _, p := range out.CommonPrefixes {
		if k, ok := decode(aws.ToString(p.Prefix)); ok {
			prefixes = append(prefixes, entry{name: k, prefix: true})
		}
	}
	// S3 sends keys and prefixes in two sorted lists; the page is their
	// merge. A key never equals a prefix (it would be under it).
	page := slices.Concat(keys, prefixes)
	slices.SortFunc(page, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	return page, aws.ToBool(out.IsTruncated), nil
}

// headAll describes keys by HEAD, in order, leaving out those gone since.
func (s *Store) headAll(ctx context.Context, op string, keys []string) ([]agentd.BlobObject, error) {
	objs := make([]agentd.BlobObject, len(keys))
	found := make([]bool, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(headConcurrency)
	for i, k := range keys {
		g.Go(func() error {
			o, err := s.head(gctx, op, k)
			switch {
			case agentd.KindOf(err) == agentd.KindNotFound:
				return nil
			case err != nil:
				return err
			}
			objs[i], found[i] = o, true
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, agentd.E("", op, cerr)
		}
		return nil, err
	}
	out := objs[:0]
	for i, o := range objs {
		if found[i] {
			out = append(out, o)
		}
	}
	return out, nil
}
