package agentd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"time"
	"unicode/utf8"
)

// Limits of the KV binding, the same as Workers KV's so projects move between
// the platforms unchanged.
const (
	MaxKVKeyBytes      = 512
	MaxKVValueBytes    = 25 << 20
	MaxKVMetadataBytes = 1024
	MinKVTTL           = 60 * time.Second
	MaxKVListLimit     = 1000
)

// KV is a key-value store with Workers-KV semantics: values with optional
// JSON metadata and expiration, listing in UTF-8 byte order with a
// "start after" cursor. Expired keys read as absent at once and are not
// listed.
//
// Unlike Workers KV it is strongly consistent and has CompareAndSwap, which
// the runtime uses to update one key atomically.
type KV interface {
	// Get returns the entry of key, or an error of KindNotFound.
	Get(ctx context.Context, key string) (KVEntry, error)
	// Put writes value under key, replacing any entry.
	Put(ctx context.Context, key string, value []byte, opts KVPutOptions) error
	// CompareAndSwap writes value under key only if the key's current version
	// is expect (0: the key is absent or expired), and returns the new
	// version. A mismatch is an error of KindConflict and writes nothing.
	CompareAndSwap(ctx context.Context, key string, expect uint64, value []byte, opts KVPutOptions) (uint64, error)
	// Delete removes key. Deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns keys in UTF-8 byte order.
	List(ctx context.Context, opts KVListOptions) (KVListResult, error)
	// Close releases the store.
	Close() error
}

// KVEntry is one stored value.
type KVEntry struct {
	Key        string
	Value      []byte
	Metadata   json.RawMessage // nil when none was stored
	Expiration time.Time       // zero when the key never expires
	// Version identifies this write of the key. It is never 0 for a stored
	// entry and is never reused within a store, even after a delete, so a
	// CompareAndSwap cannot be fooled by a key deleted and written again.
	Version uint64
}

// KVPutOptions are the options of a write. At most one of ExpirationTTL and
// Expiration may be set.
type KVPutOptions struct {
	ExpirationTTL time.Duration // at least MinKVTTL
	Expiration    time.Time     // at least MinKVTTL from now
	Metadata      json.RawMessage
}

// KVListOptions select keys to list.
type KVListOptions struct {
	Prefix string
	Cursor string // from a previous KVListResult
	Limit  int    // 0 means MaxKVListLimit
}

// KVKey is one listed key.
type KVKey struct {
	Name       string          `json:"name"`
	Expiration time.Time       `json:"expiration,omitzero"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
}

// KVListResult is one page of a listing. When ListComplete is false, pass
// Cursor to get the next page; a page may be empty and still not complete.
type KVListResult struct {
	Keys         []KVKey `json:"keys"`
	ListComplete bool    `json:"list_complete"`
	Cursor       string  `json:"cursor,omitempty"`
}

// ValidateKVKey checks a key against the binding's rules.
func ValidateKVKey(key string) error {
	const op = "kv"
	switch {
	case key == "":
		return InvalidField(op, "key", "key must not be empty")
	case key == "." || key == "..":
		return InvalidField(op, "key", "key must not be %q", key)
	case len(key) > MaxKVKeyBytes:
		return &Error{Kind: KindTooLarge, Op: op, Field: "key", Message: "key is longer than 512 bytes"}
	case !utf8.ValidString(key):
		return InvalidField(op, "key", "key is not valid UTF-8")
	}
	return nil
}

// ValidateKVPut checks a write against the binding's limits and returns the
// absolute expiration it asks for (zero: never), relative to now.
func ValidateKVPut(key string, value []byte, opts KVPutOptions, now time.Time) (time.Time, error) {
	const op = "kv.put"
	if err := ValidateKVKey(key); err != nil {
		return time.Time{}, err
	}
	if len(value) > MaxKVValueBytes {
		return time.Time{}, &Error{Kind: KindTooLarge, Op: op, Field: "value", Message: "value is larger than 25 MiB"}
	}
	if opts.Metadata != nil {
		if len(opts.Metadata) > MaxKVMetadataBytes {
			return time.Time{}, &Error{Kind: KindTooLarge, Op: op, Field: "metadata", Message: "metadata is larger than 1024 bytes"}
		}
		if !json.Valid(opts.Metadata) {
			return time.Time{}, InvalidField(op, "metadata", "metadata is not valid JSON")
		}
	}
	switch {
	case opts.ExpirationTTL != 0 && !opts.Expiration.IsZero():
		return time.Time{}, InvalidField(op, "expiration", "set expirationTtl or expiration, not both")
	case opts.ExpirationTTL != 0:
		if opts.ExpirationTTL < MinKVTTL {
			return time.Time{}, InvalidField(op, "expirationTtl", "expirationTtl must be at least 60 seconds, got %s", opts.ExpirationTTL)
		}
		return now.Add(opts.ExpirationTTL), nil
	case !opts.Expiration.IsZero():
		if opts.Expiration.Before(now.Add(MinKVTTL)) {
			return time.Time{}, InvalidField(op, "expiration", "expiration must be at least 60 seconds in the future")
		}
		return opts.Expiration, nil
	}
	return time.Time{}, nil
}

// Expired reports whether an entry with this expiration is gone at now.
func Expired(expiration, now time.Time) bool {
	return !expiration.IsZero() && !now.Before(expiration)
}

// NormalizeKVList validates list options and fills in the default limit.
func NormalizeKVList(opts KVListOptions) (KVListOptions, error) {
	const op = "kv.list"
	switch {
	case opts.Limit < 0:
		return opts, InvalidField(op, "limit", "limit must not be negative")
	case opts.Limit == 0:
		opts.Limit = MaxKVListLimit
	case opts.Limit > MaxKVListLimit:
		return opts, InvalidField(op, "limit", "limit must be at most %d", MaxKVListLimit)
	}
	return opts, nil
}

// EncodeCursor turns the last key of a page into an opaque cursor. Every
// backend uses it, so a cursor means "start after this key" everywhere.
func EncodeCursor(lastKey string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(lastKey))
}

// DecodeCursor returns the key a cursor starts after ("" for no cursor).
func DecodeCursor(cursor string) (string, error) {
	if cursor == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return "", InvalidField("list", "cursor", "cursor is not one this store returned")
	}
	return string(b), nil
}
