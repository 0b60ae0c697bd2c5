package s3

import (
	"encoding/base32"
	"encoding/base64"
	"mime"
	"strings"
)

// Custom metadata travels as x-amz-meta-* headers, which cannot carry every
// map[string]string: header names are case-insensitive (S3 lowercases them)
// and limited to token characters, and header values lose surrounding spaces
// and may not hold control characters; AWS answers non-ASCII values in RFC
// 2047 form. So that any metadata a caller gives comes back unchanged, the
// awkward names and values are encoded, and the plain ones, the common case,
// go as they are and so stay readable to other S3 tools and count once
// against S3's 2 KiB metadata limit.
//
//   - A name is sent as is when it is non-empty, lowercase ASCII token
//     characters, and does not start with '~'; otherwise as '~' followed by
//     its unpadded lowercase base32hex ('~' alone for the empty name).
//   - A value is sent as is when it is printable ASCII without leading or
//     trailing spaces and does not start with "=?"; otherwise as one RFC 2047
//     encoded word, "=?UTF-8?B?…?=".

const encodedNameMark = "~"

// nameEncoding is base32hex without padding: its lowercase form is header
// token characters, and it sorts like the names it encodes.
func nameEncoding() *base32.Encoding { return base32.HexEncoding.WithPadding(base32.NoPadding) }

func encodeMetadata(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[encodeMetaName(k)] = encodeMetaValue(v)
	}
	return out
}

// decodeMetadata reverses encodeMetadata. Names and values it did not encode
// (objects written by other tools) are returned as the server gave them,
// except that RFC 2047 values are decoded.
func decodeMetadata(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[decodeMetaName(k)] = decodeMetaValue(v)
	}
	return out
}

func encodeMetaName(name string) string {
	if plainMetaName(name) {
		return name
	}
	return encodedNameMark + strings.ToLower(nameEncoding().EncodeToString([]byte(name)))
}

func decodeMetaName(name string) string {
	rest, ok := strings.CutPrefix(name, encodedNameMark)
	if !ok {
		return name
	}
	b, err := nameEncoding().DecodeString(strings.ToUpper(rest))
	if err != nil {
		return name // not ours
	}
	return string(b)
}

func plainMetaName(name string) bool {
	if name == "" || strings.HasPrefix(name, encodedNameMark) {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func encodeMetaValue(v string) string {
	if plainMetaValue(v) {
		return v
	}
	return "=?UTF-8?B?" + base64.StdEncoding.EncodeToString([]byte(v)) + "?="
}

func decodeMetaValue(v string) string {
	if !strings.HasPrefix(v, "=?") || !strings.HasSuffix(v, "?=") {
		return v
	}
	var d mime.WordDecoder
	s, err := d.DecodeHeader(v)
	if err != nil {
		return v // not an encoded word after all
	}
	return s
}

func plainMetaValue(v string) bool {
	if strings.HasPrefix(v, "=?") || strings.HasPrefix(v, " ") || strings.HasSuffix(v, " ") {
		return false
	}
	for _, c := range []byte(v) {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}
