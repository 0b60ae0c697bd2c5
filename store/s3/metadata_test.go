package s3

import (
	"maps"
	"strings"
	"testing"

	"github.com/agentd/agentd"
)

func TestMetadataRoundTrip(t *testing.T) {
	meta := map[string]string{
		"plain":         "value",
		"Upper":         "x",
		"":              "empty name",
		"~tilde":        "x",
		"with space":    "x",
		"ünï":           "x",
		"spaces":        " around ",
		"unicode":       "ünïcode ok",
		"control":       "tab\tnewline\n",
		"looks-encoded": "=?UTF-8?B?aGk=?=",
		"empty":         "",
		"long":          strings.Repeat("v", 2000),
	}
	enc := encodeMetadata(meta)
	for k, v := range enc {
		if !plainMetaName(k) && !strings.HasPrefix(k, encodedNameMark) {
			t.Errorf("name %q is not a header token", k)
		}
		if strings.ToLower(k) != k {
			t.Errorf("name %q is not lowercase: S3 would change it", k)
		}
		for _, c := range []byte(v) {
			if c < 0x20 || c > 0x7e {
				t.Errorf("value %q of %q is not printable ASCII", v, k)
				break
			}
		}
		if strings.TrimSpace(v) != v {
			t.Errorf("value %q of %q has spaces HTTP would trim", v, k)
		}
	}
	// Plain names and values go as they are, readable to other tools.
	if enc["plain"] != "value" || enc["long"] != meta["long"] {
		t.Errorf("plain metadata was encoded: %q", enc["plain"])
	}
	if got := decodeMetadata(enc); !maps.Equal(got, meta) {
		t.Errorf("round trip: %q, want %q", got, meta)
	}
}

// TestMetadataFromOtherTools decodes what other tools and servers write:
// names and values as they are, AWS's RFC 2047 answer for non-ASCII.
func TestMetadataFromOtherTools(t *testing.T) {
	got := decodeMetadata(map[string]string{
		"author":  "someone",
		"note":    "=?UTF-8?B?w7xuw69jb2Rl?=",
		"q":       "=?UTF-8?Q?caf=C3=A9?=",
		"odd":     "=?not an encoded word?=",
		"~!!":     "name that is not base32",
		"percent": "100%",
	})
	want := map[string]string{
		"author":  "someone",
		"note":    "ünïcode",
		"q":       "café",
		"odd":     "=?not an encoded word?=",
		"~!!":     "name that is not base32",
		"percent": "100%",
	}
	if !maps.Equal(got, want) {
		t.Errorf("decoded %q, want %q", got, want)
	}
	if decodeMetadata(nil) != nil || encodeMetadata(map[string]string{}) != nil {
		t.Error("no metadata should stay nil")
	}
}

func TestRangeHeader(t *testing.T) {
	tests := []struct {
		r    *agentd.ByteRange
		want string // "" for no header
	}{
		{nil, ""},
		{&agentd.ByteRange{}, ""},
		{&agentd.ByteRange{Offset: 2, Length: 3}, "bytes=2-4"},
		{&agentd.ByteRange{Offset: 7}, "bytes=7-"},
		{&agentd.ByteRange{Length: 1}, "bytes=0-0"},
		{&agentd.ByteRange{Suffix: 3}, "bytes=-3"},
		{&agentd.ByteRange{Offset: 5, Length: 1<<63 - 1}, "bytes=5-"},
	}
	for _, tc := range tests {
		got := ""
		if h := rangeHeader(tc.r); h != nil {
			got = *h
		}
		if got != tc.want {
			t.Errorf("rangeHeader(%+v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		h                  string
		first, last, total int64
		partial            bool
	}{
		{"bytes 2-4/10", 2, 4, 10, true},
		{"bytes 0-0/1", 0, 0, 1, true},
		{"", 0, 0, 0, false},
		{"bytes */10", 0, 0, 0, false},
		{"bytes 4-2/10", 0, 0, 0, false},
		{"bytes 2-10/10", 0, 0, 0, false},
		{"items 2-4/10", 0, 0, 0, false},
		{"bytes 2-4/*", 0, 0, 0, false},
	}
	for _, tc := range tests {
		f, l, n, ok := parseContentRange(tc.h)
		if f != tc.first || l != tc.last || n != tc.total || ok != tc.partial {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v", tc.h, f, l, n, ok)
		}
	}
}
