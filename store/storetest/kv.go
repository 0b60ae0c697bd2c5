package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/jonboulle/clockwork"
)

// KVOpener returns a fresh, empty store, isolated from every other store it
// returned, that takes "now" from clock for every expiry and TTL decision.
//
// The suite never closes a store: the opener registers its Close with
// t.Cleanup (and may fail the test there if Close errs). The suite's subtests
// run one after another, so an opener need not be safe for parallel use.
type KVOpener = func(t *testing.T, clock agentd.Clock) agentd.KV

// TestKV runs the conformance suite of the KV binding against the stores open
// returns. Every rule of agentd.KV has a subtest; each subtest opens its own
// store with its own fake clock, which the suite advances instead of
// sleeping.
func TestKV(t *testing.T, open KVOpener) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, h *kvHarness)
	}{
		{"GetAbsent", testKVGetAbsent},
		{"PutGet", testKVPutGet},
		{"ValuesAreCopied", testKVValuesAreCopied},
		{"Overwrite", testKVOverwrite},
		{"Delete", testKVDelete},
		{"KeyRules", testKVKeyRules},
		{"ValueLimit", testKVValueLimit},
		{"MetadataRules", testKVMetadataRules},
		{"ExpirationOptions", testKVExpirationOptions},
		{"Expiry", testKVExpiry},
		{"ExpiredKeyRewritten", testKVExpiredKeyRewritten},
		{"ListOrder", testKVListOrder},
		{"ListPrefix", testKVListPrefix},
		{"ListLimit", testKVListLimit},
		{"ListDefaultLimit", testKVListDefaultLimit},
		{"ListPagination", testKVListPagination},
		{"ListPaginationExactMultiple", testKVListPaginationExactMultiple},
		{"ListCursorStartsAfter", testKVListCursorStartsAfter},
		{"ListInvalidCursor", testKVListInvalidCursor},
		{"ListMetadataAndExpiration", testKVListMetadataAndExpiration},
		{"ListSkipsExpired", testKVListSkipsExpired},
		{"CompareAndSwap", testKVCompareAndSwap},
		{"CompareAndSwapABA", testKVCompareAndSwapABA},
		{"CompareAndSwapExpired", testKVCompareAndSwapExpired},
		{"CompareAndSwapOptions", testKVCompareAndSwapOptions},
		{"VersionsNeverReused", testKVVersionsNeverReused},
		{"ConcurrentCompareAndSwap", testKVConcurrentCompareAndSwap},
		{"CancelledContext", testKVCancelledContext},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := clockwork.NewFakeClockAt(kvStart())
			kv := open(t, clock)
			if kv == nil {
				t.Fatal("open returned a nil store")
			}
			tt.fn(t, &kvHarness{t: t, kv: kv, clock: clock, ctx: t.Context()})
		})
	}
}

// kvStart is the fake clock's starting time. It has a nanosecond part so a
// store that rounds expirations (to seconds or milliseconds) fails.
func kvStart() time.Time {
	return time.Date(2030, time.March, 4, 5, 6, 7, 123456789, time.UTC)
}

// kvHarness bundles a subtest's store and clock with assertion helpers that
// fail the test with the operation that went wrong.
type kvHarness struct {
	t     *testing.T
	kv    agentd.KV
	clock *clockwork.FakeClock
	ctx   context.Context
}

func (h *kvHarness) now() time.Time { return h.clock.Now() }

func (h *kvHarness) put(key, value string, opts agentd.KVPutOptions) {
	h.t.Helper()
	if err := h.kv.Put(h.ctx, key, []byte(value), opts); err != nil {
		h.t.Fatalf("Put(%q): %v", key, err)
	}
}

func (h *kvHarness) get(key string) agentd.KVEntry {
	h.t.Helper()
	e, err := h.kv.Get(h.ctx, key)
	if err != nil {
		h.t.Fatalf("Get(%q): %v", key, err)
	}
	if e.Key != key {
		h.t.Errorf("Get(%q).Key = %q", key, e.Key)
	}
	if e.Version == 0 {
		h.t.Errorf("Get(%q).Version = 0, want a non-zero version", key)
	}
	return e
}

// getValue asserts key holds value and returns its entry.
func (h *kvHarness) getValue(key, value string) agentd.KVEntry {
	h.t.Helper()
	e := h.get(key)
	if string(e.Value) != value {
		h.t.Errorf("Get(%q).Value = %q, want %q", key, kvAbbrev(e.Value), kvAbbrev([]byte(value)))
	}
	return e
}

// absent asserts key reads as not found.
func (h *kvHarness) absent(key string) {
	h.t.Helper()
	e, err := h.kv.Get(h.ctx, key)
	if err == nil {
		h.t.Errorf("Get(%q) = %q (version %d), want not found", key, kvAbbrev(e.Value), e.Version)
		return
	}
	kvWantKind(h.t, err, agentd.KindNotFound, fmt.Sprintf("Get(%q)", key))
}

func (h *kvHarness) cas(key string, expect uint64, value string, opts agentd.KVPutOptions) uint64 {
	h.t.Helper()
	v, err := h.kv.CompareAndSwap(h.ctx, key, expect, []byte(value), opts)
	if err != nil {
		h.t.Fatalf("CompareAndSwap(%q, %d): %v", key, expect, err)
	}
	if v == 0 {
		h.t.Fatalf("CompareAndSwap(%q, %d) returned version 0", key, expect)
	}
	return v
}

func (h *kvHarness) list(opts agentd.KVListOptions) agentd.KVListResult {
	h.t.Helper()
	res, err := h.kv.List(h.ctx, opts)
	if err != nil {
		h.t.Fatalf("List(%+v): %v", opts, err)
	}
	if res.ListComplete && res.Cursor != "" {
		h.t.Errorf("List(%+v): complete page has cursor %q, want none", opts, res.Cursor)
	}
	if !res.ListComplete && res.Cursor == "" {
		h.t.Fatalf("List(%+v): incomplete page without a cursor", opts)
	}
	if limit := kvPageLimit(opts.Limit); len(res.Keys) > limit {
		h.t.Errorf("List(%+v): %d keys, more than the limit %d", opts, len(res.Keys), limit)
	}
	return res
}

// listAll follows cursors until the listing is complete and returns every
// name. It allows empty incomplete pages (the interface does) but not
// endless ones.
func (h *kvHarness) listAll(prefix string, limit int) []string {
	h.t.Helper()
	var names []string
	cursor := ""
	for range 2*agentd.MaxKVListLimit + 10 {
		res := h.list(agentd.KVListOptions{Prefix: prefix, Cursor: cursor, Limit: limit})
		names = append(names, kvKeyNames(res.Keys)...)
		if res.ListComplete {
			return names
		}
		cursor = res.Cursor
	}
	h.t.Fatalf("List(prefix %q, limit %d) never completed", prefix, limit)
	return nil
}

// kvPageLimit is the limit a List with this option applies.
func kvPageLimit(limit int) int {
	if limit == 0 {
		return agentd.MaxKVListLimit
	}
	return limit
}

func kvKeyNames(keys []agentd.KVKey) []string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Name
	}
	return names
}

// kvWantKind asserts err is an *agentd.Error of kind want, also through
// errors.Is with the kind's sentinel when there is one.
func kvWantKind(t testing.TB, err error, want agentd.Kind, what string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want kind %q", what, want)
		return
	}
	if got := agentd.KindOf(err); got != want {
		t.Errorf("%s: error %q has kind %q, want %q", what, err, got, want)
		return
	}
	if sentinel := kvSentinel(want); sentinel != nil && !errors.Is(err, sentinel) {
		t.Errorf("%s: errors.Is(%q, sentinel of %q) = false", what, err, want)
	}
}

func kvSentinel(k agentd.Kind) error {
	switch k {
	case agentd.KindNotFound:
		return agentd.ErrNotFound
	case agentd.KindInvalid:
		return agentd.ErrInvalid
	case agentd.KindConflict:
		return agentd.ErrConflict
	case agentd.KindTooLarge:
		return agentd.ErrTooLarge
	}
	return nil
}

// kvJSONEqual compares JSON documents by meaning, so a store may re-encode
// metadata (e.g. drop insignificant spaces) as long as it keeps its value.
func kvJSONEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// kvAbbrev shortens a value for a failure message.
func kvAbbrev(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("%s... (%d bytes)", b[:64], len(b))
	}
	return string(b)
}

func testKVGetAbsent(t *testing.T, h *kvHarness) {
	_, err := h.kv.Get(h.ctx, "missing")
	kvWantKind(t, err, agentd.KindNotFound, `Get("missing")`)
	if !errors.Is(err, agentd.ErrNotFound) {
		t.Errorf("errors.Is(%v, ErrNotFound) = false", err)
	}
}

func testKVPutGet(t *testing.T, h *kvHarness) {
	tests := []struct {
		name  string
		key   string
		value []byte
		meta  json.RawMessage
	}{
		{"plain", "plain", []byte("hello"), nil},
		{"empty value", "empty", []byte{}, nil},
		{"binary value", "binary", []byte{0, 1, 0xff, 0, '\n', 0xc3}, nil},
		{"object metadata", "obj", []byte("v"), json.RawMessage(`{"a":1,"b":[true,null,"x"]}`)},
		{"string metadata", "str", []byte("v"), json.RawMessage(`"just a string"`)},
		{"number metadata", "num", []byte("v"), json.RawMessage(`42`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := h.kv.Put(h.ctx, tt.key, tt.value, agentd.KVPutOptions{Metadata: tt.meta}); err != nil {
				t.Fatalf("Put: %v", err)
			}
			e, err := h.kv.Get(h.ctx, tt.key)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if e.Key != tt.key {
				t.Errorf("Key = %q, want %q", e.Key, tt.key)
			}
			if !bytes.Equal(e.Value, tt.value) {
				t.Errorf("Value = %q, want %q", e.Value, tt.value)
			}
			switch {
			case tt.meta == nil && e.Metadata != nil:
				t.Errorf("Metadata = %q, want nil when none was stored", e.Metadata)
			case tt.meta != nil && !kvJSONEqual(e.Metadata, tt.meta):
				t.Errorf("Metadata = %s, want %s", e.Metadata, tt.meta)
			}
			if !e.Expiration.IsZero() {
				t.Errorf("Expiration = %v, want zero for a key without expiry", e.Expiration)
			}
			if e.Version == 0 {
				t.Error("Version = 0, want non-zero")
			}
		})
	}
}

func testKVValuesAreCopied(t *testing.T, h *kvHarness) {
	in := []byte("original")
	meta := json.RawMessage(`{"k":"original"}`)
	if err := h.kv.Put(h.ctx, "k", in, agentd.KVPutOptions{Metadata: meta}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	// The caller owns its slices after Put returns...
	copy(in, "CHANGED!")
	copy(meta, `{"k":"CHANGED!"}`)
	e := h.getValue("k", "original")
	if !kvJSONEqual(e.Metadata, json.RawMessage(`{"k":"original"}`)) {
		t.Errorf("Metadata = %s after the caller changed its slice", e.Metadata)
	}
	// ...and the slices Get returns.
	copy(e.Value, "CHANGED!")
	if len(e.Metadata) > 0 {
		e.Metadata[0] = '['
	}
	e = h.getValue("k", "original")
	if !kvJSONEqual(e.Metadata, json.RawMessage(`{"k":"original"}`)) {
		t.Errorf("Metadata = %s after the caller changed a returned slice", e.Metadata)
	}
}

func testKVOverwrite(t *testing.T, h *kvHarness) {
	h.put("k", "first", agentd.KVPutOptions{
		Metadata:      json.RawMessage(`{"n":1}`),
		ExpirationTTL: time.Hour,
	})
	first := h.getValue("k", "first")
	h.put("k", "second", agentd.KVPutOptions{})
	second := h.getValue("k", "second")
	if second.Metadata != nil {
		t.Errorf("Metadata = %s after an overwrite without metadata, want nil", second.Metadata)
	}
	if !second.Expiration.IsZero() {
		t.Errorf("Expiration = %v after an overwrite without expiry, want zero", second.Expiration)
	}
	if second.Version == first.Version {
		t.Errorf("overwrite kept version %d, want a new one", first.Version)
	}
	if got := h.listAll("", 0); !slices.Equal(got, []string{"k"}) {
		t.Errorf("List = %q, want one key", got)
	}
}

func testKVDelete(t *testing.T, h *kvHarness) {
	h.put("k", "v", agentd.KVPutOptions{})
	h.put("other", "v", agentd.KVPutOptions{})
	if err := h.kv.Delete(h.ctx, "k"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	h.absent("k")
	h.getValue("other", "v")
	if got := h.listAll("", 0); !slices.Equal(got, []string{"other"}) {
		t.Errorf("List after Delete = %q, want [other]", got)
	}
	if err := h.kv.Delete(h.ctx, "k"); err != nil {
		t.Errorf("Delete of a deleted key: %v, want nil", err)
	}
	if err := h.kv.Delete(h.ctx, "never-written"); err != nil {
		t.Errorf("Delete of an absent key: %v, want nil", err)
	}
}

func testKVKeyRules(t *testing.T, h *kvHarness) {
	tests := []struct {
		name string
		key  string
		want agentd.Kind // "" when the key is valid
	}{
		{"empty", "", agentd.KindInvalid},
		{"dot", ".", agentd.KindInvalid},
		{"dot dot", "..", agentd.KindInvalid},
		{"three dots", "...", ""},
		{"dot slash", "./a", ""},
		{"512 bytes", strings.Repeat("k", agentd.MaxKVKeyBytes), ""},
		{"513 bytes", strings.Repeat("k", agentd.MaxKVKeyBytes+1), agentd.KindTooLarge},
		// 256 two-byte runes: the limit counts bytes, not characters.
		{"512 bytes multibyte", strings.Repeat("é", agentd.MaxKVKeyBytes/2), ""},
		{"513 bytes in 257 runes", strings.Repeat("é", agentd.MaxKVKeyBytes/2) + "x", agentd.KindTooLarge},
		{"invalid UTF-8", "\xff", agentd.KindInvalid},
		{"truncated UTF-8", "a\xc3", agentd.KindInvalid},
		{"spaces and slashes", "a b/c d", ""},
		{"emoji", "😀/x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *h
			h.t = t
			if tt.want != "" {
				kvWantKind(t, h.kv.Put(h.ctx, tt.key, []byte("v"), agentd.KVPutOptions{}), tt.want, "Put")
				_, err := h.kv.Get(h.ctx, tt.key)
				kvWantKind(t, err, tt.want, "Get")
				kvWantKind(t, h.kv.Delete(h.ctx, tt.key), tt.want, "Delete")
				_, err = h.kv.CompareAndSwap(h.ctx, tt.key, 0, []byte("v"), agentd.KVPutOptions{})
				kvWantKind(t, err, tt.want, "CompareAndSwap")
				return
			}
			h.put(tt.key, "value of "+tt.key, agentd.KVPutOptions{})
			h.getValue(tt.key, "value of "+tt.key)
			res := h.list(agentd.KVListOptions{Prefix: tt.key, Limit: 1})
			if len(res.Keys) != 1 || res.Keys[0].Name != tt.key {
				t.Errorf("List(prefix key) = %q, want the key first", kvKeyNames(res.Keys))
			}
			if err := h.kv.Delete(h.ctx, tt.key); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			h.absent(tt.key)
		})
	}
}

func testKVValueLimit(t *testing.T, h *kvHarness) {
	// One buffer serves both sizes, so the test allocates 25 MiB once.
	buf := make([]byte, agentd.MaxKVValueBytes+1)
	copy(buf, "head")
	copy(buf[agentd.MaxKVValueBytes-4:], "tail")
	maxValue := buf[:agentd.MaxKVValueBytes]

	if err := h.kv.Put(h.ctx, "big", maxValue, agentd.KVPutOptions{}); err != nil {
		t.Fatalf("Put of exactly 25 MiB: %v", err)
	}
	e := h.get("big")
	if !bytes.Equal(e.Value, maxValue) {
		t.Errorf("Get of the 25 MiB value: got %d bytes, not the value put", len(e.Value))
	}
	first := e.Version
	e.Value = nil // let the copy go before the next allocation

	kvWantKind(t, h.kv.Put(h.ctx, "big", buf, agentd.KVPutOptions{}), agentd.KindTooLarge, "Put of 25 MiB + 1")
	if e := h.get("big"); e.Version != first || len(e.Value) != agentd.MaxKVValueBytes {
		t.Errorf("a rejected Put changed the entry: version %d, %d bytes", e.Version, len(e.Value))
	}
	_, err := h.kv.CompareAndSwap(h.ctx, "big2", 0, buf, agentd.KVPutOptions{})
	kvWantKind(t, err, agentd.KindTooLarge, "CompareAndSwap of 25 MiB + 1")
	h.absent("big2")
}

func testKVMetadataRules(t *testing.T, h *kvHarness) {
	// A JSON string of exactly n bytes, quotes included.
	jsonString := func(n int) json.RawMessage {
		return json.RawMessage(`"` + strings.Repeat("m", n-2) + `"`)
	}
	tests := []struct {
		name string
		meta json.RawMessage
		want agentd.Kind
	}{
		{"1024 bytes", jsonString(agentd.MaxKVMetadataBytes), ""},
		{"1025 bytes", jsonString(agentd.MaxKVMetadataBytes + 1), agentd.KindTooLarge},
		{"invalid JSON", json.RawMessage(`{"a":`), agentd.KindInvalid},
		{"not JSON", json.RawMessage(`hello`), agentd.KindInvalid},
		{"two documents", json.RawMessage(`{} {}`), agentd.KindInvalid},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *h
			h.t = t
			key := fmt.Sprintf("meta-%d", i)
			opts := agentd.KVPutOptions{Metadata: tt.meta}
			if tt.want != "" {
				kvWantKind(t, h.kv.Put(h.ctx, key, []byte("v"), opts), tt.want, "Put")
				_, err := h.kv.CompareAndSwap(h.ctx, key, 0, []byte("v"), opts)
				kvWantKind(t, err, tt.want, "CompareAndSwap")
				h.absent(key)
				return
			}
			h.put(key, "v", opts)
			if e := h.getValue(key, "v"); !kvJSONEqual(e.Metadata, tt.meta) {
				t.Errorf("Metadata = %d bytes, want the %d stored", len(e.Metadata), len(tt.meta))
			}
		})
	}
}

func testKVExpirationOptions(t *testing.T, h *kvHarness) {
	now := h.now()
	tests := []struct {
		name string
		opts agentd.KVPutOptions
		want agentd.Kind
		exp  time.Time // the expiration a valid write reports
	}{
		{"ttl 60s", agentd.KVPutOptions{ExpirationTTL: 60 * time.Second}, "", now.Add(60 * time.Second)},
		{"ttl 1h", agentd.KVPutOptions{ExpirationTTL: time.Hour}, "", now.Add(time.Hour)},
		{"ttl 59s", agentd.KVPutOptions{ExpirationTTL: 59 * time.Second}, agentd.KindInvalid, time.Time{}},
		{"ttl 60s minus 1ns", agentd.KVPutOptions{ExpirationTTL: 60*time.Second - 1}, agentd.KindInvalid, time.Time{}},
		{"negative ttl", agentd.KVPutOptions{ExpirationTTL: -time.Hour}, agentd.KindInvalid, time.Time{}},
		{"ttl and expiration", agentd.KVPutOptions{ExpirationTTL: time.Hour, Expiration: now.Add(time.Hour)}, agentd.KindInvalid, time.Time{}},
		{"expiration now+60s", agentd.KVPutOptions{Expiration: now.Add(60 * time.Second)}, "", now.Add(60 * time.Second)},
		{"expiration now+59s", agentd.KVPutOptions{Expiration: now.Add(59 * time.Second)}, agentd.KindInvalid, time.Time{}},
		{"expiration now+60s minus 1ns", agentd.KVPutOptions{Expiration: now.Add(60*time.Second - 1)}, agentd.KindInvalid, time.Time{}},
		{"expiration in the past", agentd.KVPutOptions{Expiration: now.Add(-time.Hour)}, agentd.KindInvalid, time.Time{}},
		{
			"expiration in another zone",
			agentd.KVPutOptions{Expiration: now.Add(2 * time.Hour).In(time.FixedZone("UTC+5", 5*3600))},
			"", now.Add(2 * time.Hour),
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *h
			h.t = t
			putKey, casKey := fmt.Sprintf("put-%d", i), fmt.Sprintf("cas-%d", i)
			if tt.want != "" {
				kvWantKind(t, h.kv.Put(h.ctx, putKey, []byte("v"), tt.opts), tt.want, "Put")
				_, err := h.kv.CompareAndSwap(h.ctx, casKey, 0, []byte("v"), tt.opts)
				kvWantKind(t, err, tt.want, "CompareAndSwap")
				h.absent(putKey)
				h.absent(casKey)
				return
			}
			h.put(putKey, "v", tt.opts)
			h.cas(casKey, 0, "v", tt.opts)
			for _, key := range []string{putKey, casKey} {
				if e := h.getValue(key, "v"); !e.Expiration.Equal(tt.exp) {
					t.Errorf("Get(%q).Expiration = %v, want %v", key, e.Expiration, tt.exp)
				}
			}
		})
	}
}

func testKVExpiry(t *testing.T, h *kvHarness) {
	now := h.now()
	tests := []struct {
		name string
		opts agentd.KVPutOptions
		exp  time.Time
	}{
		{"ttl", agentd.KVPutOptions{ExpirationTTL: 90 * time.Second}, now.Add(90 * time.Second)},
		// An odd nanosecond: expiry is exact, not rounded to a second.
		{"absolute", agentd.KVPutOptions{Expiration: now.Add(10*time.Minute + 7)}, now.Add(10*time.Minute + 7)},
	}
	// The cases share the store and its clock, so they run in order of
	// expiry on distinct keys, each advancing the clock to its own expiry.
	h.put("ttl", "v", tests[0].opts)
	h.put("absolute", "v", tests[1].opts)
	h.put("forever", "v", agentd.KVPutOptions{})
	for _, tt := range tests {
		t.Run(tt.name+"/before", func(t *testing.T) {
			h := *h
			h.t = t
			h.clock.Advance(tt.exp.Sub(h.now()) - 1) // one nanosecond before expiry
			e := h.getValue(tt.name, "v")
			// Absolute, not a remaining TTL: it is the same after the clock moved.
			if !e.Expiration.Equal(tt.exp) {
				t.Errorf("Expiration = %v, want %v", e.Expiration, tt.exp)
			}
			if !slices.Contains(h.listAll("", 0), tt.name) {
				t.Errorf("List one nanosecond before expiry lacks %q", tt.name)
			}
		})
		t.Run(tt.name+"/at", func(t *testing.T) {
			h := *h
			h.t = t
			h.clock.Advance(1)
			h.absent(tt.name)
			if names := h.listAll("", 0); slices.Contains(names, tt.name) {
				t.Errorf("List at expiry = %q, still has %q", names, tt.name)
			}
			if res := h.list(agentd.KVListOptions{Prefix: tt.name}); len(res.Keys) != 0 {
				t.Errorf("List(prefix %q) at expiry = %q, want none", tt.name, kvKeyNames(res.Keys))
			}
		})
	}
	h.clock.Advance(365 * 24 * time.Hour)
	h.getValue("forever", "v")
}

func testKVExpiredKeyRewritten(t *testing.T, h *kvHarness) {
	h.put("k", "old", agentd.KVPutOptions{ExpirationTTL: time.Minute, Metadata: json.RawMessage(`{"old":true}`)})
	h.clock.Advance(time.Minute)
	h.absent("k")
	h.put("k", "new", agentd.KVPutOptions{})
	e := h.getValue("k", "new")
	if !e.Expiration.IsZero() || e.Metadata != nil {
		t.Errorf("rewritten key kept expiration %v / metadata %s of the expired one", e.Expiration, e.Metadata)
	}
	h.clock.Advance(time.Hour)
	h.getValue("k", "new")
}

func testKVListOrder(t *testing.T, h *kvHarness) {
	// UTF-8 byte order: upper case before lower, '-' (0x2d) before '/'
	// (0x2f), a key before its extensions, and U+FF21 (EF BC A1) before
	// U+1F600 (F0 ...), which UTF-16 order would swap.
	want := []string{"B", "a", "a-c", "a/b", "aa", "z", "é", "\uff21", "😀"}
	for _, k := range []string{"z", "é", "😀", "a-c", "B", "\uff21", "a/b", "aa", "a"} {
		h.put(k, "v", agentd.KVPutOptions{})
	}
	res := h.list(agentd.KVListOptions{})
	if got := kvKeyNames(res.Keys); !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
	if !res.ListComplete {
		t.Error("List of 9 keys is not complete")
	}
	if got := h.listAll("", 2); !slices.Equal(got, want) {
		t.Errorf("List in pages of 2 = %q, want %q", got, want)
	}
}

func testKVListPrefix(t *testing.T, h *kvHarness) {
	for _, k := range []string{
		"a", "a.b", "axb", "a_b", "a/b", "a/b/c", "A/b", "ab", "b", "é", "é/x", "%", "%a", "[a]", "[a]b",
	} {
		h.put(k, "v", agentd.KVPutOptions{})
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"%", "%a", "A/b", "[a]", "[a]b", "a", "a.b", "a/b", "a/b/c", "a_b", "ab", "axb", "b", "é", "é/x"}},
		{"a", []string{"a", "a.b", "a/b", "a/b/c", "a_b", "ab", "axb"}},
		{"a.", []string{"a.b"}},          // not a regular expression
		{"a_", []string{"a_b"}},          // not SQL LIKE
		{"%", []string{"%", "%a"}},       // not SQL LIKE
		{"[a]", []string{"[a]", "[a]b"}}, // not a glob
		{"a/", []string{"a/b", "a/b/c"}},
		{"a/b", []string{"a/b", "a/b/c"}}, // the prefix itself is a key
		{"A", []string{"A/b"}},            // case-sensitive
		{"B", nil},
		{"é", []string{"é", "é/x"}},
		{"zz", nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.prefix), func(t *testing.T) {
			h := *h
			h.t = t
			res := h.list(agentd.KVListOptions{Prefix: tt.prefix})
			if got := kvKeyNames(res.Keys); !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("List(prefix %q) = %q, want %q", tt.prefix, got, tt.want)
			}
			if !res.ListComplete {
				t.Errorf("List(prefix %q) is not complete", tt.prefix)
			}
			if got := h.listAll(tt.prefix, 1); !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("List(prefix %q) in pages of 1 = %q, want %q", tt.prefix, got, tt.want)
			}
		})
	}
}

func testKVListLimit(t *testing.T, h *kvHarness) {
	for i := range 3 {
		h.put(fmt.Sprintf("k%d", i), "v", agentd.KVPutOptions{})
	}
	tests := []struct {
		limit int
		want  agentd.Kind
		keys  int
	}{
		{-1, agentd.KindInvalid, 0},
		{agentd.MaxKVListLimit + 1, agentd.KindInvalid, 0},
		{agentd.MaxKVListLimit, "", 3},
		{1, "", 1},
		{3, "", 3},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.limit), func(t *testing.T) {
			res, err := h.kv.List(h.ctx, agentd.KVListOptions{Limit: tt.limit})
			if tt.want != "" {
				kvWantKind(t, err, tt.want, fmt.Sprintf("List(limit %d)", tt.limit))
				return
			}
			if err != nil {
				t.Fatalf("List(limit %d): %v", tt.limit, err)
			}
			if len(res.Keys) != tt.keys {
				t.Errorf("List(limit %d) = %d keys, want %d", tt.limit, len(res.Keys), tt.keys)
			}
		})
	}
}

func testKVListDefaultLimit(t *testing.T, h *kvHarness) {
	n := agentd.MaxKVListLimit + 1
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("k%04d", i)
		h.put(want[i], "", agentd.KVPutOptions{})
	}
	for _, limit := range []int{0, agentd.MaxKVListLimit} {
		res := h.list(agentd.KVListOptions{Limit: limit})
		if got := kvKeyNames(res.Keys); !slices.Equal(got, want[:agentd.MaxKVListLimit]) {
			t.Errorf("List(limit %d) = %d keys from %q, want the first %d", limit, len(got), got[:min(1, len(got))], agentd.MaxKVListLimit)
		}
		if res.ListComplete {
			t.Errorf("List(limit %d) of %d keys is complete", limit, n)
		}
		next := h.list(agentd.KVListOptions{Limit: limit, Cursor: res.Cursor})
		if got := kvKeyNames(next.Keys); !slices.Equal(got, want[agentd.MaxKVListLimit:]) || !next.ListComplete {
			t.Errorf("second page = %q (complete %v), want [%s] complete", got, next.ListComplete, want[n-1])
		}
	}
}

func testKVListPagination(t *testing.T, h *kvHarness) {
	for _, k := range []string{"p/1", "p/2", "p/3", "p/4", "p/5", "o", "q", "p"} {
		h.put(k, "v", agentd.KVPutOptions{})
	}
	// With only live keys, every page but the last is full.
	pages := [][]string{{"p/1", "p/2"}, {"p/3", "p/4"}, {"p/5"}}
	cursor := ""
	for i, want := range pages {
		res := h.list(agentd.KVListOptions{Prefix: "p/", Limit: 2, Cursor: cursor})
		if got := kvKeyNames(res.Keys); !slices.Equal(got, want) {
			t.Fatalf("page %d = %q, want %q", i, got, want)
		}
		if last := i == len(pages)-1; res.ListComplete != last {
			t.Fatalf("page %d: ListComplete = %v, want %v", i, res.ListComplete, last)
		}
		// A cursor is stateless: using it again gives the same page.
		if cursor != "" {
			again := h.list(agentd.KVListOptions{Prefix: "p/", Limit: 2, Cursor: cursor})
			if got := kvKeyNames(again.Keys); !slices.Equal(got, want) {
				t.Errorf("page %d again = %q, want %q", i, got, want)
			}
		}
		cursor = res.Cursor
	}

	// A cursor is "start after this key" whatever listing it came from: one
	// naming a key before the prefix lists the prefix from its start, one
	// inside it continues from there.
	var before, inside string
	for cursor := ""; ; {
		res := h.list(agentd.KVListOptions{Limit: 1, Cursor: cursor})
		if len(res.Keys) == 1 && res.Keys[0].Name == "o" {
			before = res.Cursor
		}
		if len(res.Keys) == 1 && res.Keys[0].Name == "p/2" {
			inside = res.Cursor
			break
		}
		if res.ListComplete {
			t.Fatal("listing all keys in pages of 1 never reached p/2")
		}
		cursor = res.Cursor
	}
	for _, tt := range []struct {
		name, cursor string
		want         []string
	}{
		{"cursor before the prefix", before, []string{"p/1", "p/2"}},
		{"cursor inside the prefix", inside, []string{"p/3", "p/4"}},
	} {
		res := h.list(agentd.KVListOptions{Prefix: "p/", Limit: 2, Cursor: tt.cursor})
		if got := kvKeyNames(res.Keys); !slices.Equal(got, tt.want) || res.ListComplete {
			t.Errorf("%s: List(prefix p/) = %q (complete %v), want %q incomplete", tt.name, got, res.ListComplete, tt.want)
		}
	}
}

func testKVListPaginationExactMultiple(t *testing.T, h *kvHarness) {
	want := []string{"k1", "k2", "k3", "k4"}
	for _, k := range want {
		h.put(k, "v", agentd.KVPutOptions{})
	}
	res := h.list(agentd.KVListOptions{Limit: 2})
	if got := kvKeyNames(res.Keys); !slices.Equal(got, want[:2]) || res.ListComplete {
		t.Fatalf("first page = %q (complete %v), want %q incomplete", got, res.ListComplete, want[:2])
	}
	// The page holding the last key may or may not be complete (an empty
	// complete page may follow); the listing as a whole must be exact.
	if got := h.listAll("", 2); !slices.Equal(got, want) {
		t.Errorf("List in pages of 2 = %q, want %q", got, want)
	}
}

func testKVListCursorStartsAfter(t *testing.T, h *kvHarness) {
	for _, k := range []string{"b", "d", "f", "h"} {
		h.put(k, "v", agentd.KVPutOptions{})
	}
	first := h.list(agentd.KVListOptions{Limit: 2})
	if got := kvKeyNames(first.Keys); !slices.Equal(got, []string{"b", "d"}) || first.ListComplete {
		t.Fatalf("first page = %q (complete %v), want [b d] incomplete", got, first.ListComplete)
	}
	// A cursor means "after the last key returned": keys written before
	// that position since do not show, keys after it do, and it still
	// works when the key it names is deleted.
	h.put("a", "v", agentd.KVPutOptions{})
	h.put("c", "v", agentd.KVPutOptions{})
	h.put("e", "v", agentd.KVPutOptions{})
	if err := h.kv.Delete(h.ctx, "d"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	second := h.list(agentd.KVListOptions{Limit: 2, Cursor: first.Cursor})
	if got := kvKeyNames(second.Keys); !slices.Equal(got, []string{"e", "f"}) || second.ListComplete {
		t.Fatalf("second page = %q (complete %v), want [e f] incomplete", got, second.ListComplete)
	}
	third := h.list(agentd.KVListOptions{Limit: 2, Cursor: second.Cursor})
	if got := kvKeyNames(third.Keys); !slices.Equal(got, []string{"h"}) || !third.ListComplete {
		t.Fatalf("third page = %q (complete %v), want [h] complete", got, third.ListComplete)
	}
}

func testKVListInvalidCursor(t *testing.T, h *kvHarness) {
	h.put("k", "v", agentd.KVPutOptions{})
	_, err := h.kv.List(h.ctx, agentd.KVListOptions{Cursor: "%%% not a cursor %%%"})
	kvWantKind(t, err, agentd.KindInvalid, "List(bad cursor)")
}

func testKVListMetadataAndExpiration(t *testing.T, h *kvHarness) {
	exp := h.now().Add(2 * time.Hour)
	h.put("m1", "v", agentd.KVPutOptions{Metadata: json.RawMessage(`{"title":"x"}`), Expiration: exp})
	h.put("m2", "v", agentd.KVPutOptions{})
	h.clock.Advance(time.Hour)
	res := h.list(agentd.KVListOptions{})
	if len(res.Keys) != 2 {
		t.Fatalf("List = %q, want [m1 m2]", kvKeyNames(res.Keys))
	}
	m1, m2 := res.Keys[0], res.Keys[1]
	if m1.Name != "m1" || !kvJSONEqual(m1.Metadata, json.RawMessage(`{"title":"x"}`)) {
		t.Errorf("first key = %q with metadata %s, want m1 with {\"title\":\"x\"}", m1.Name, m1.Metadata)
	}
	if !m1.Expiration.Equal(exp) {
		t.Errorf("m1 Expiration = %v, want %v (absolute, not remaining)", m1.Expiration, exp)
	}
	if m2.Name != "m2" || m2.Metadata != nil || !m2.Expiration.IsZero() {
		t.Errorf("second key = %+v, want m2 without metadata or expiration", m2)
	}
}

func testKVListSkipsExpired(t *testing.T, h *kvHarness) {
	for i := range 6 {
		var opts agentd.KVPutOptions
		if i == 1 || i == 2 || i == 4 {
			opts.ExpirationTTL = time.Minute
		}
		h.put(fmt.Sprintf("k%d", i), "v", opts)
	}
	all := []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	if got := h.listAll("", 2); !slices.Equal(got, all) {
		t.Fatalf("List before expiry = %q, want %q", got, all)
	}
	h.clock.Advance(time.Minute)
	live := []string{"k0", "k3", "k5"}
	res := h.list(agentd.KVListOptions{})
	if got := kvKeyNames(res.Keys); !slices.Equal(got, live) || !res.ListComplete {
		t.Errorf("List after expiry = %q (complete %v), want %q complete", got, res.ListComplete, live)
	}
	for _, limit := range []int{1, 2} {
		if got := h.listAll("", limit); !slices.Equal(got, live) {
			t.Errorf("List after expiry in pages of %d = %q, want %q", limit, got, live)
		}
	}
}

func testKVCompareAndSwap(t *testing.T, h *kvHarness) {
	v1 := h.cas("k", 0, "one", agentd.KVPutOptions{})
	if e := h.getValue("k", "one"); e.Version != v1 {
		t.Errorf("Get.Version = %d, want the %d CompareAndSwap returned", e.Version, v1)
	}

	tests := []struct {
		name   string
		key    string
		expect uint64
	}{
		{"expect 0 on an existing key", "k", 0},
		{"stale version", "k", v1 + 1000},
		{"version on an absent key", "absent", v1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *h
			h.t = t
			_, err := h.kv.CompareAndSwap(h.ctx, tt.key, tt.expect, []byte("clobbered"), agentd.KVPutOptions{})
			kvWantKind(t, err, agentd.KindConflict, "CompareAndSwap")
		})
	}
	// The conflicts wrote nothing.
	if e := h.getValue("k", "one"); e.Version != v1 {
		t.Errorf("a conflicting CompareAndSwap changed the version to %d", e.Version)
	}
	h.absent("absent")

	v2 := h.cas("k", v1, "two", agentd.KVPutOptions{})
	if v2 == v1 {
		t.Errorf("swap returned the old version %d", v1)
	}
	if e := h.getValue("k", "two"); e.Version != v2 {
		t.Errorf("Get.Version = %d, want %d", e.Version, v2)
	}
	_, err := h.kv.CompareAndSwap(h.ctx, "k", v1, []byte("stale"), agentd.KVPutOptions{})
	kvWantKind(t, err, agentd.KindConflict, "CompareAndSwap with the replaced version")
	h.getValue("k", "two")

	// A Put is a write like any other: it moves the version on.
	h.put("k", "three", agentd.KVPutOptions{})
	_, err = h.kv.CompareAndSwap(h.ctx, "k", v2, []byte("stale"), agentd.KVPutOptions{})
	kvWantKind(t, err, agentd.KindConflict, "CompareAndSwap after a Put")
	h.getValue("k", "three")
}

func testKVCompareAndSwapABA(t *testing.T, h *kvHarness) {
	v1 := h.cas("k", 0, "A", agentd.KVPutOptions{})
	if err := h.kv.Delete(h.ctx, "k"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	h.absent("k")
	v2 := h.cas("k", 0, "A", agentd.KVPutOptions{})
	if v2 == v1 {
		t.Fatalf("the key written again after a delete got its old version %d back", v1)
	}
	_, err := h.kv.CompareAndSwap(h.ctx, "k", v1, []byte("B"), agentd.KVPutOptions{})
	kvWantKind(t, err, agentd.KindConflict, "CompareAndSwap with the version from before the delete")
	if e := h.getValue("k", "A"); e.Version != v2 {
		t.Errorf("Version = %d, want %d", e.Version, v2)
	}
}

func testKVCompareAndSwapExpired(t *testing.T, h *kvHarness) {
	old := h.cas("k", 0, "old", agentd.KVPutOptions{ExpirationTTL: time.Minute})
	h.clock.Advance(time.Minute)
	_, err := h.kv.CompareAndSwap(h.ctx, "k", old, []byte("x"), agentd.KVPutOptions{})
	kvWantKind(t, err, agentd.KindConflict, "CompareAndSwap with the version of an expired key")
	h.absent("k")
	v := h.cas("k", 0, "new", agentd.KVPutOptions{})
	if v == old {
		t.Errorf("the key written after expiry got its old version %d back", old)
	}
	if e := h.getValue("k", "new"); !e.Expiration.IsZero() {
		t.Errorf("Expiration = %v, want none", e.Expiration)
	}
}

func testKVCompareAndSwapOptions(t *testing.T, h *kvHarness) {
	start := h.now()
	meta := json.RawMessage(`{"turns":3}`)
	v1 := h.cas("k", 0, "one", agentd.KVPutOptions{ExpirationTTL: 5 * time.Minute, Metadata: meta})
	e := h.getValue("k", "one")
	if !e.Expiration.Equal(start.Add(5*time.Minute)) || !kvJSONEqual(e.Metadata, meta) {
		t.Errorf("after CompareAndSwap with options: expiration %v, metadata %s; want %v, %s",
			e.Expiration, e.Metadata, start.Add(5*time.Minute), meta)
	}
	if res := h.list(agentd.KVListOptions{}); len(res.Keys) != 1 || !kvJSONEqual(res.Keys[0].Metadata, meta) {
		t.Errorf("List after CompareAndSwap with metadata = %+v", res.Keys)
	}

	// A swap replaces the options too: without them, no expiry or metadata.
	h.clock.Advance(4 * time.Minute)
	h.cas("k", v1, "two", agentd.KVPutOptions{})
	h.clock.Advance(time.Hour)
	e = h.getValue("k", "two")
	if !e.Expiration.IsZero() || e.Metadata != nil {
		t.Errorf("swap without options kept expiration %v / metadata %s", e.Expiration, e.Metadata)
	}

	// The TTL of a swap counts from the clock's now.
	exp := h.now().Add(2 * time.Minute)
	h.cas("k", e.Version, "three", agentd.KVPutOptions{ExpirationTTL: 2 * time.Minute})
	if e := h.getValue("k", "three"); !e.Expiration.Equal(exp) {
		t.Errorf("Expiration = %v, want %v", e.Expiration, exp)
	}
	h.clock.Advance(2 * time.Minute)
	h.absent("k")
}

func testKVVersionsNeverReused(t *testing.T, h *kvHarness) {
	seen := map[uint64]string{}
	record := func(what string, v uint64) {
		t.Helper()
		if v == 0 {
			t.Errorf("%s: version 0", what)
		}
		if prev, ok := seen[v]; ok {
			t.Errorf("%s: version %d already used by %s", what, v, prev)
		}
		seen[v] = what
	}
	// Versions are unique within the store, across keys too.
	for i := range 3 {
		for _, k := range []string{"a", "b"} {
			h.put(k, "v", agentd.KVPutOptions{})
			record(fmt.Sprintf("put %s #%d", k, i), h.get(k).Version)
			record(fmt.Sprintf("cas %s #%d", k, i), h.cas(k, h.get(k).Version, "w", agentd.KVPutOptions{}))
			if err := h.kv.Delete(h.ctx, k); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			record(fmt.Sprintf("cas after delete %s #%d", k, i), h.cas(k, 0, "x", agentd.KVPutOptions{}))
		}
	}
}

func testKVConcurrentCompareAndSwap(t *testing.T, h *kvHarness) {
	// The runtime updates a conversation with read, change, CompareAndSwap,
	// retry on conflict. With 20 writers racing, every increment must land
	// exactly once.
	const writers = 20
	const maxAttempts = 10_000
	versions := make(chan uint64, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for range maxAttempts {
				var expect uint64
				n := 0
				e, err := h.kv.Get(h.ctx, "counter")
				switch {
				case agentd.KindOf(err) == agentd.KindNotFound:
				case err != nil:
					t.Errorf("writer %d: Get: %v", w, err)
					return
				default:
					expect = e.Version
					if n, err = strconv.Atoi(string(e.Value)); err != nil {
						t.Errorf("writer %d: counter holds %q", w, e.Value)
						return
					}
				}
				v, err := h.kv.CompareAndSwap(h.ctx, "counter", expect, []byte(strconv.Itoa(n+1)), agentd.KVPutOptions{})
				if agentd.KindOf(err) == agentd.KindConflict {
					continue
				}
				if err != nil {
					t.Errorf("writer %d: CompareAndSwap: %v", w, err)
					return
				}
				versions <- v
				return
			}
			t.Errorf("writer %d: no successful CompareAndSwap in %d attempts", w, maxAttempts)
		})
	}
	wg.Wait()
	close(versions)

	e := h.getValue("counter", strconv.Itoa(writers))
	seen := map[uint64]bool{}
	for v := range versions {
		if seen[v] {
			t.Errorf("two writers got version %d", v)
		}
		seen[v] = true
	}
	if len(seen) != writers {
		t.Errorf("%d successful swaps, want %d", len(seen), writers)
	}
	if !seen[e.Version] {
		t.Errorf("final version %d is none a writer got", e.Version)
	}
}

func testKVCancelledContext(t *testing.T, h *kvHarness) {
	h.put("k", "old", agentd.KVPutOptions{})
	before := h.get("k")
	ctx, cancel := context.WithCancel(h.ctx)
	cancel()

	ops := []struct {
		name string
		do   func() error
	}{
		{"Get", func() error { _, err := h.kv.Get(ctx, "k"); return err }},
		{"List", func() error { _, err := h.kv.List(ctx, agentd.KVListOptions{}); return err }},
		{"Put existing", func() error { return h.kv.Put(ctx, "k", []byte("new"), agentd.KVPutOptions{}) }},
		{"Put new", func() error { return h.kv.Put(ctx, "fresh", []byte("new"), agentd.KVPutOptions{}) }},
		{"CompareAndSwap existing", func() error {
			_, err := h.kv.CompareAndSwap(ctx, "k", before.Version, []byte("new"), agentd.KVPutOptions{})
			return err
		}},
		{"CompareAndSwap new", func() error {
			_, err := h.kv.CompareAndSwap(ctx, "fresh-cas", 0, []byte("new"), agentd.KVPutOptions{})
			return err
		}},
		{"Delete", func() error { return h.kv.Delete(ctx, "k") }},
	}
	for _, op := range ops {
		if err := op.do(); err == nil {
			t.Errorf("%s with a cancelled context: no error", op.name)
		}
	}
	// Nothing was written.
	if e := h.getValue("k", "old"); e.Version != before.Version {
		t.Errorf("version moved from %d to %d under a cancelled context", before.Version, e.Version)
	}
	h.absent("fresh")
	h.absent("fresh-cas")
}
