package s3

import (
	"strings"
	"testing"

	"github.com/agentd/agentd"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		raw  string
		want location
	}{
		{"s3://bucket", location{bucket: "bucket"}},
		{"s3://bucket/", location{bucket: "bucket"}},
		{"s3://my.bucket-1/runs/abc", location{bucket: "my.bucket-1", prefix: "runs/abc/"}},
		{"s3://bucket/runs/abc/", location{bucket: "bucket", prefix: "runs/abc/"}},
		{"s3://bucket/with%20space", location{bucket: "bucket", prefix: "with space/"}},
		{
			"s3://agents?endpoint=https://acct.r2.cloudflarestorage.com&region=auto",
			location{bucket: "agents", endpoint: "https://acct.r2.cloudflarestorage.com", region: "auto"},
		},
		{
			"s3://b12/p?endpoint=http://127.0.0.1:7070&region=us-east-1",
			location{bucket: "b12", prefix: "p/", endpoint: "http://127.0.0.1:7070", region: "us-east-1", pathStyle: true},
		},
		{
			"s3://b12?endpoint=http://localhost:9000/",
			location{bucket: "b12", endpoint: "http://localhost:9000", pathStyle: true},
		},
		{
			"s3://b12?endpoint=http://[::1]:9000",
			location{bucket: "b12", endpoint: "http://[::1]:9000", pathStyle: true},
		},
		{
			"s3://b12?endpoint=http://127.0.0.1:9000&path_style=false",
			location{bucket: "b12", endpoint: "http://127.0.0.1:9000"},
		},
		{
			"s3://b12?endpoint=https://minio.internal&path_style=true",
			location{bucket: "b12", endpoint: "https://minio.internal", pathStyle: true},
		},
	}
	for _, tc := range tests {
		got, err := parseURL(tc.raw)
		if err != nil {
			t.Errorf("parseURL(%q): %v", tc.raw, err)
			continue
		}
		if got != tc.want {
			t.Errorf("parseURL(%q) = %+v, want %+v", tc.raw, got, tc.want)
		}
	}
}

func TestParseURLRefuses(t *testing.T) {
	const secret = "SeCrEt-in-url-7f3a9c"
	tests := []struct {
		raw, want string // want: a part of the message
	}{
		{"", "empty"},
		{"bucket", "scheme"},
		{"file://bucket", `scheme "file" is not s3`},
		{"s3:bucket", "names no bucket"},
		{"s3:///prefix", "names no bucket"},
		{"s3://ab", "bucket name"},
		{"s3://-bucket", "bucket name"},
		{"s3://buck%20et", "not a valid URL"},
		{"s3://bucket:9000", "has a port"},
		{"s3://bucket#frag", "fragment"},
		{"s3://bucket/a//b", "empty"},
		{"s3://bucket/a/../b", `".."`},
		{"s3://bucket/./b", `"."`},
		{"s3://bucket/a%5Cb", "backslash"},
		{"s3://bucket/" + strings.Repeat("p", 1023), "no room"},
		{"s3://bucket?region=", "region"},
		{"s3://bucket?region=us east", "region"},
		{"s3://bucket?path_style=yes", "path_style"},
		{"s3://bucket?endpoint=ftp://host", "https://"},
		{"s3://bucket?endpoint=https://", "no host"},
		{"s3://bucket?endpoint=https://host/path", "no path"},
		{"s3://bucket?endpoint=https://host:99999", "port"},
		{"s3://bucket?endpoint=https://host?x=1", "no path or query"},
		{"s3://bucket?region=a&region=b", "2 times"},
		{"s3://bucket?colour=blue", `unknown parameter "colour"`},
		{"s3://bucket?%zz", "malformed"},
		// Credentials, in every place someone might try: refused, and not
		// echoed.
		{"s3://AKID:" + secret + "@bucket", "credentials do not belong in the URL"},
		{"s3://" + secret + "@bucket", "credentials do not belong in the URL"},
		{"s3://bucket?secret_key=" + secret, "credentials do not belong in the URL"},
		{"s3://bucket?access_key=AKID&secret=" + secret, "credentials do not belong in the URL"},
		{"s3://bucket?endpoint=https://AKID:" + secret + "@host", "must not carry credentials"},
		{"s3://AKID:" + secret + "@bucket:bad-port", "not a valid URL"},
	}
	for _, tc := range tests {
		_, err := parseURL(tc.raw)
		if agentd.KindOf(err) != agentd.KindInvalid {
			t.Errorf("parseURL(%q): err = %v, want KindInvalid", tc.raw, err)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) {
			t.Errorf("parseURL(%q): %q does not say %q", tc.raw, msg, tc.want)
		}
		if strings.Contains(msg, secret) {
			t.Errorf("parseURL(%q): the error shows the secret: %q", tc.raw, msg)
		}
	}
}

// TestOpenRefusesBadInput shows that Open checks the URL and options before
// it makes any request.
func TestOpenRefusesBadInput(t *testing.T) {
	ctx := t.Context()
	_, err := Open(ctx, "s3://AKID:secret@bucket")
	if agentd.KindOf(err) != agentd.KindInvalid {
		t.Errorf("Open with credentials in the URL: %v, want KindInvalid", err)
	}
	_, err = Open(ctx, "s3://bucket?endpoint=http://127.0.0.1:1", WithOpTimeout(0))
	if agentd.KindOf(err) != agentd.KindInvalid {
		t.Errorf("Open with a zero timeout: %v, want KindInvalid", err)
	}
	_, err = Open(ctx, "s3://bucket?endpoint=http://127.0.0.1:1", WithCredentials("AKID", ""))
	if agentd.KindOf(err) != agentd.KindInvalid {
		t.Errorf("Open with half the credentials: %v, want KindInvalid", err)
	}
}
