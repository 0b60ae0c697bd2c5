// Package s3 is the Blob backend over S3 and S3-compatible object stores:
// AWS S3, Cloudflare R2 (region "auto"), MinIO, versitygw and the like. A
// store is opened by URL:
//
//	s3://bucket[/prefix]?endpoint=https://host&region=auto&path_style=true
//
// The path, if any, is a key prefix inside the bucket: every key is stored
// under it and listings strip it, so several deployments (or test runs) can
// share a bucket. endpoint defaults to the AWS configuration's
// (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL) or AWS's own, region to the AWS
// configuration's or us-east-1, and path_style to true for an IP address or
// localhost endpoint and to false otherwise.
//
// Credentials never come from the URL: they come from WithCredentials or
// else from the AWS SDK's default chain (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, then the shared files, then
// the platform's roles), and never appear in errors.
//
// It wraps aws-sdk-go-v2, with request checksums sent only where S3
// requires them: the SDK's newer default (a CRC32 trailer on every upload,
// in aws-chunked encoding) is refused by several S3-compatible servers.
// Uploads carry Content-MD5 instead, which every S3-compatible server checks.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/agentd/agentd"
)

const (
	defaultOpTimeout   = 30 * time.Second
	defaultContentType = "application/octet-stream"
	defaultRegion      = "us-east-1"

	// Listing describes each object by a HEAD (S3's listing has no content
	// type or metadata); this many run at once.
	headConcurrency = 16

	// Idle connections kept per host: enough for the HEADs of a listing
	// and a few concurrent operations besides.
	maxIdleConnsPerHost = 64
)

// Store is a Blob over an S3 bucket. It is safe for concurrent use.
type Store struct {
	client    *awss3.Client
	bucket    string
	prefix    string // "" or ends with "/"
	clock     agentd.Clock
	opTimeout time.Duration
	closed    atomic.Bool
}

var _ agentd.Blob = (*Store)(nil)

// settings collects what the Options set.
type settings struct {
	clock           agentd.Clock
	accessKeyID     string
	secretAccessKey string
	httpClient      *http.Client
	opTimeout       time.Duration
	// maxAttempts bounds the SDK's retries; 0 keeps the SDK's default (3).
	// Unexported: only tests, which fail fast on purpose, change it.
	maxAttempts int
}

// Option configures a Store.
type Option func(*settings)

// WithClock sets the clock that stamps Put's Uploaded when the server's
// answer has no Date header. Object times otherwise come from the server, as
// S3's Last-Modified, since that is what Head and List report. A nil clock
// keeps the wall clock.
func WithClock(c agentd.Clock) Option {
	return func(s *settings) {
		if c != nil {
			s.clock = c
		}
	}
}

// WithCredentials sets the access key pair to sign requests with, instead
// of the AWS SDK's default chain (environment, shared files, roles).
func WithCredentials(accessKeyID, secretAccessKey string) Option {
	return func(s *settings) {
		s.accessKeyID, s.secretAccessKey = accessKeyID, secretAccessKey
	}
}

// WithHTTPClient sets the HTTP client requests to the bucket go through.
// The default is the AWS SDK's, which honours AWS_CA_BUNDLE and has no
// overall timeout (reads stream; see WithOpTimeout); a client given here is
// used as it is, AWS_CA_BUNDLE included or not as the caller built it.
func WithHTTPClient(c *http.Client) Option {
	return func(s *settings) { s.httpClient = c }
}

// WithOpTimeout bounds each request to the server, retries included
// (default 30 s). A Get's bound ends when the server starts to answer: the
// body streams for as long as the caller reads it.
func WithOpTimeout(d time.Duration) Option {
	return func(s *settings) { s.opTimeout = d }
}

// Open opens the bucket rawURL names and checks that it can list it, so a
// wrong endpoint, bucket or credentials fail here and not at the first use.
func Open(ctx context.Context, rawURL string, opts ...Option) (*Store, error) {
	const op = "s3.open"
	loc, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	set := settings{clock: agentd.SystemClock{}, opTimeout: defaultOpTimeout}
	for _, o := range opts {
		o(&set)
	}
	switch {
	case set.opTimeout <= 0:
		return nil, agentd.InvalidField(op, "opTimeout", "the operation timeout must be positive")
	case (set.accessKeyID == "") != (set.secretAccessKey == ""):
		return nil, agentd.InvalidField(op, "credentials", "give both the access key ID and the secret access key, or neither")
	}

	s := &Store{bucket: loc.bucket, prefix: loc.prefix, clock: set.clock, opTimeout: set.opTimeout}
	load := []func(*config.LoadOptions) error{
		// The SDK's own client (a BuildableClient, which AWS_CA_BUNDLE
		// needs), keeping enough idle connections for a listing's HEADs.
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConnsPerHost = maxIdleConnsPerHost
		})),
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if loc.region != "" {
		load = append(load, config.WithRegion(loc.region))
	}
	if set.accessKeyID != "" {
		load = append(load, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(set.accessKeyID, set.secretAccessKey, "")))
	}
	if set.maxAttempts > 0 {
		load = append(load, config.WithRetryMaxAttempts(set.maxAttempts))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, &agentd.Error{Kind: agentd.KindInvalid, Op: op,
			Message: "loading the AWS configuration (AWS_* variables, ~/.aws files) failed", Err: err}
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	if cfg.Credentials != nil {
		cfg.Credentials = credentialsProvider{cfg.Credentials}
	}
	s.client = awss3.NewFromConfig(cfg, func(o *awss3.Options) {
		if loc.endpoint != "" {
			o.BaseEndpoint = aws.String(loc.endpoint)
		}
		o.UsePathStyle = loc.pathStyle
		if set.httpClient != nil {
			// Set here, not in the loaded config: there the SDK would
			// demand a client it can add AWS_CA_BUNDLE's roots to.
			o.HTTPClient = set.httpClient
		}
	})

	if err := s.probe(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// probe lists one key of the store's prefix.
func (s *Store) probe(ctx context.Context) error {
	const op = "s3.open"
	if err := ctx.Err(); err != nil {
		return agentd.E("", op, err)
	}
	rctx, cancel := s.opContext(ctx)
	defer cancel()
	_, err := s.client.ListObjectsV2(rctx, &awss3.ListObjectsV2Input{
		Bucket:  aws.String(s.bucket),
		Prefix:  aws.String(s.prefix),
		MaxKeys: aws.Int32(1),
	})
	if err != nil {
		return s.fail(ctx, rctx, op, err)
	}
	return nil
}

// Close marks the store closed, so later calls fail. Bodies already
// returned by Get stay readable until their own Close. The SDK's client
// offers no way to close its idle connections: they close by themselves
// after 90 seconds.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// ready fails if the store is closed or ctx is done.
func (s *Store) ready(ctx context.Context, op string) error {
	if s.closed.Load() {
		return agentd.Errorf(agentd.KindStorageUnavailable, op, "the store is closed")
	}
	if err := ctx.Err(); err != nil {
		return agentd.E("", op, err)
	}
	return nil
}

// checkKey validates key as every backend does, and then against S3's own
// limit, which counts the store's prefix too.
func (s *Store) checkKey(key string) error {
	if err := agentd.ValidateBlobKey(key); err != nil {
		return err
	}
	return s.checkFullKey(key)
}

func (s *Store) checkFullKey(key string) error {
	if len(s.prefix)+len(key) > agentd.MaxBlobKeyBytes {
		return &agentd.Error{Kind: agentd.KindTooLarge, Op: "blob", Field: "key",
			Message: fmt.Sprintf("key is longer than the %d bytes S3 allows once the store's %d-byte prefix is added",
				agentd.MaxBlobKeyBytes, len(s.prefix))}
	}
	return nil
}

// fullKey is key as stored in the bucket.
func (s *Store) fullKey(key string) *string { return aws.String(s.prefix + key) }

// timeoutError is the cause of a request context that ran out of the
// store's per-operation time.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string { return fmt.Sprintf("no answer within %s", e.d) }

// opContext bounds one operation's requests by the store's timeout.
func (s *Store) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, s.opTimeout, &timeoutError{s.opTimeout})
}

// fail classifies err, which a request made under rctx returned. rctx is
// derived from the caller's ctx (or detached from it, for a Get). A caller
// that gave up gets its context error back, kind KindTimeout; a request
// that ran out of the store's own time is KindStorageUnavailable; anything
// else is what the server or the network said.
func (s *Store) fail(ctx, rctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return agentd.E("", op, cerr)
	}
	var te *timeoutError
	if errors.As(context.Cause(rctx), &te) {
		return &agentd.Error{Kind: agentd.KindStorageUnavailable, Op: op,
			Message: fmt.Sprintf("the store did not answer within %s", te.d), Err: err}
	}
	return classify(op, err)
}

// credentialsProvider marks the errors of the credential chain, so that
// "no credentials" is reported as such and not as an unreachable server.
type credentialsProvider struct{ p aws.CredentialsProvider }

func (c credentialsProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	creds, err := c.p.Retrieve(ctx)
	if err != nil {
		return creds, &credentialsError{err}
	}
	return creds, nil
}

type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "resolving credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// object builds a description from what S3 says of an object.
func (s *Store) object(key string, size *int64, etag, contentType *string, meta map[string]string, modified *time.Time) agentd.BlobObject {
	o := agentd.BlobObject{
		Key:            key,
		Size:           aws.ToInt64(size),
		ETag:           agentd.TrimETag(aws.ToString(etag)),
		ContentType:    aws.ToString(contentType),
		CustomMetadata: decodeMetadata(meta),
	}
	if modified != nil {
		// To the second, in UTC: HTTP's Last-Modified has no finer
		// precision, and a listing's timestamps must equal Head's.
		o.Uploaded = modified.UTC().Truncate(time.Second)
	}
	return o
}

// stripPrefix removes the store's prefix from a key the bucket listed.
func (s *Store) stripPrefix(full string) (string, bool) {
	return strings.CutPrefix(full, s.prefix)
}

// readCloser joins a reader and the Close of what it reads.
type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }
