package agentd

import (
	"context"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of the Blob binding, R2's.
const (
	MaxBlobKeyBytes            = 1024
	MaxBlobCustomMetadataBytes = 2048
	MaxBlobListLimit           = 1000
)

// Blob is an object store with R2/S3 semantics: objects with an etag, a
// content type and custom metadata; range reads; conditional gets; listing by
// prefix and delimiter with a cursor. Writes are atomic and strongly
// consistent: a reader sees the old object or the new one, never a mix.
type Blob interface {
	// Put stores the body under key and returns the stored object's description.
	Put(ctx context.Context, key string, body io.Reader, opts BlobPutOptions) (BlobObject, error)
	// Get opens key for reading. An absent key is KindNotFound; a condition
	// in opts that does not hold is KindPreconditionFailed; a range that does
	// not fit the object is KindInvalid. The caller closes the body.
	Get(ctx context.Context, key string, opts BlobGetOptions) (*BlobBody, error)
	// Head describes key without reading it.
	Head(ctx context.Context, key string) (BlobObject, error)
	// Delete removes keys. Absent keys are not an error.
	Delete(ctx context.Context, keys ...string) error
	// List returns objects in UTF-8 byte order of their keys.
	List(ctx context.Context, opts BlobListOptions) (BlobListResult, error)
	// Close releases the store.
	Close() error
}

// BlobObject describes a stored object.
type BlobObject struct {
	Key            string            `json:"key"`
	Size           int64             `json:"size"`
	ETag           string            `json:"etag"` // unquoted; the hex MD5 of the body for single-part objects
	ContentType    string            `json:"contentType,omitempty"`
	CustomMetadata map[string]string `json:"customMetadata,omitempty"`
	Uploaded       time.Time         `json:"uploaded"`
}

// BlobPutOptions are the options of a write.
type BlobPutOptions struct {
	ContentType    string
	CustomMetadata map[string]string
}

// ByteRange selects part of an object: Length bytes from Offset (Length 0:
// to the end), or, when Suffix is set, the last Suffix bytes.
type ByteRange struct {
	Offset int64
	Length int64
	Suffix int64
}

// BlobGetOptions are the options of a read. IfMatch and IfNoneMatch compare
// against the object's etag (quotes are ignored).
type BlobGetOptions struct {
	Range       *ByteRange
	IfMatch     string
	IfNoneMatch string
}

// BlobBody is an opened object. Offset and Length say which bytes Body holds.
type BlobBody struct {
	BlobObject
	Body   io.ReadCloser
	Offset int64
	Length int64
}

// BlobListOptions select objects to list. Delimiter groups keys that share a
// prefix up to the delimiter into DelimitedPrefixes.
type BlobListOptions struct {
	Prefix     string
	Delimiter  string
	Cursor     string
	StartAfter string
	Limit      int // 0 means MaxBlobListLimit
}

// BlobListResult is one page of a listing.
type BlobListResult struct {
	Objects           []BlobObject `json:"objects"`
	DelimitedPrefixes []string     `json:"delimitedPrefixes,omitempty"`
	Truncated         bool         `json:"truncated"`
	Cursor            string       `json:"cursor,omitempty"`
}

// ValidateBlobKey checks a key: 1 to 1024 bytes of UTF-8, no NUL or
// backslash, not absolute, and no "." or ".." path segment. The last rules go
// beyond R2's: a key that could escape a directory root is refused by every
// backend alike, so a project behaves the same on files and on S3.
func ValidateBlobKey(key string) error {
	const op = "blob"
	switch {
	case key == "":
		return InvalidField(op, "key", "key must not be empty")
	case len(key) > MaxBlobKeyBytes:
		return &Error{Kind: KindTooLarge, Op: op, Field: "key", Message: "key is longer than 1024 bytes"}
	case !utf8.ValidString(key):
		return InvalidField(op, "key", "key is not valid UTF-8")
	case strings.ContainsAny(key, "\x00\\"):
		return InvalidField(op, "key", "key must not contain NUL or backslash")
	case strings.HasPrefix(key, "/"):
		return InvalidField(op, "key", "key must not be an absolute path")
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "." || seg == ".." {
			return InvalidField(op, "key", "key must not contain a %q segment", seg)
		}
	}
	return nil
}

// ValidateBlobPut checks a write's options against the binding's limits.
func ValidateBlobPut(key string, opts BlobPutOptions) error {
	if err := ValidateBlobKey(key); err != nil {
		return err
	}
	n := 0
	for k, v := range opts.CustomMetadata {
		n += len(k) + len(v)
	}
	if n > MaxBlobCustomMetadataBytes {
		return &Error{Kind: KindTooLarge, Op: "blob.put", Field: "customMetadata", Message: "custom metadata is larger than 2048 bytes"}
	}
	return nil
}

// NormalizeBlobList validates list options and fills in the default limit.
func NormalizeBlobList(opts BlobListOptions) (BlobListOptions, error) {
	const op = "blob.list"
	switch {
	case opts.Limit < 0:
		return opts, InvalidField(op, "limit", "limit must not be negative")
	case opts.Limit == 0:
		opts.Limit = MaxBlobListLimit
	case opts.Limit > MaxBlobListLimit:
		return opts, InvalidField(op, "limit", "limit must be at most %d", MaxBlobListLimit)
	}
	return opts, nil
}

// ResolveRange turns a requested range into the offset and length it covers
// in an object of size bytes, or a KindInvalid error if it does not fit.
func ResolveRange(r *ByteRange, size int64) (offset, length int64, err error) {
	const op = "blob.get"
	if r == nil {
		return 0, size, nil
	}
	switch {
	case r.Offset < 0 || r.Length < 0 || r.Suffix < 0:
		return 0, 0, InvalidField(op, "range", "range values must not be negative")
	case r.Suffix > 0:
		if r.Offset != 0 || r.Length != 0 {
			return 0, 0, InvalidField(op, "range", "a suffix range takes no offset or length")
		}
		length = min(r.Suffix, size)
		return size - length, length, nil
	case r.Offset > size || (r.Offset == size && size > 0):
		return 0, 0, InvalidField(op, "range", "range starts at %d, past the end of a %d-byte object", r.Offset, size)
	}
	length = size - r.Offset
	if r.Length > 0 {
		length = min(r.Length, length)
	}
	return r.Offset, length, nil
}

// TrimETag removes the quotes an HTTP etag may carry.
func TrimETag(etag string) string {
	etag = strings.TrimPrefix(etag, "W/")
	return strings.Trim(etag, `"`)
}

// CheckBlobConditions applies the conditions of a get to an object's etag.
func CheckBlobConditions(opts BlobGetOptions, etag string) error {
	const op = "blob.get"
	if opts.IfMatch != "" && opts.IfMatch != "*" && TrimETag(opts.IfMatch) != etag {
		return Errorf(KindPreconditionFailed, op, "etag does not match If-Match")
	}
	if opts.IfNoneMatch != "" && (opts.IfNoneMatch == "*" || TrimETag(opts.IfNoneMatch) == etag) {
		return Errorf(KindPreconditionFailed, op, "etag matches If-None-Match")
	}
	return nil
}
