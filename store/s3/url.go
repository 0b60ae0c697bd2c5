package s3

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/agentd/agentd"
)

// location is what an s3:// URL names.
type location struct {
	bucket string
	// prefix is prepended to every key: "" or a path ending in "/".
	prefix string
	// endpoint is the server's base URL, "" for AWS's own endpoints.
	endpoint string
	// region is "" when the URL names none.
	region string
	// pathStyle puts the bucket in the URL's path instead of its host name.
	pathStyle bool
}

// parseURL reads s3://bucket[/prefix]?endpoint=…&region=…&path_style=….
//
// Its errors never quote the URL whole: a URL may carry what someone
// mistook for a place for credentials, and errors end up in logs and
// answers.
func parseURL(raw string) (location, error) {
	invalid := func(format string, args ...any) (location, error) {
		return location{}, agentd.InvalidField("s3.open", "url", "s3 URL: "+format, args...)
	}
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		return invalid("empty; write it like s3://bucket/prefix?endpoint=https://host&region=auto")
	case err != nil:
		// url's error quotes the input, so it is not wrapped.
		return invalid("not a valid URL; write it like s3://bucket/prefix?endpoint=https://host&region=auto")
	case u.Scheme != "s3":
		return invalid("scheme %q is not s3", u.Scheme)
	case u.User != nil:
		return invalid("credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
	case u.Opaque != "" || u.Host == "":
		return invalid("names no bucket; write it like s3://bucket/prefix")
	case u.Fragment != "" || strings.HasSuffix(raw, "#"):
		return invalid("a fragment (#…) means nothing here")
	case u.Port() != "":
		return invalid("bucket %q has a port; the server's address goes in ?endpoint=", u.Hostname())
	}
	loc := location{bucket: u.Host}
	if !validBucket(loc.bucket) {
		return invalid("bucket name %q is not valid: 3 to 63 letters, digits, '.', '-' or '_', starting and ending with a letter or digit", loc.bucket)
	}
	if loc.prefix, err = parsePrefix(u.Path); err != nil {
		return location{}, err
	}

	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return invalid("the query is malformed")
	}
	pathStyleSet := false
	for name, values := range query {
		if len(values) != 1 {
			return invalid("parameter %q is given %d times", name, len(values))
		}
		v := values[0]
		switch name {
		case "endpoint":
			if loc.endpoint, err = parseEndpoint(v); err != nil {
				return location{}, err
			}
		case "region":
			if !validRegion(v) {
				return invalid("region must be letters, digits, '-' or '_', like us-east-1 or auto")
			}
			loc.region = v
		case "path_style":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return invalid("path_style must be true or false")
			}
			loc.pathStyle, pathStyleSet = b, true
		default:
			if credentialParam(name) {
				return invalid("credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
			}
			return invalid("unknown parameter %q; known: endpoint, region, path_style", name)
		}
	}
	if !pathStyleSet && loc.endpoint != "" {
		// A bucket cannot be a subdomain of an IP address or of localhost,
		// so virtual-hosted style could never work there: the local
		// servers of tests and development need no path_style=true.
		e, _ := url.Parse(loc.endpoint)
		h := e.Hostname()
		loc.pathStyle = net.ParseIP(h) != nil || h == "localhost"
	}
	return loc, nil
}

// parsePrefix turns the URL's path into a key prefix. The path names a
// "directory": s3://b/runs/x and s3://b/runs/x/ both store key k as
// runs/x/k, so one prefix never holds another's keys (runs/x2/…).
func parsePrefix(path string) (string, error) {
	p := strings.TrimPrefix(path, "/")
	if p == "" {
		return "", nil
	}
	p = strings.TrimSuffix(p, "/")
	invalid := func(format string, args ...any) (string, error) {
		return "", agentd.InvalidField("s3.open", "url", "s3 URL: key prefix "+format, args...)
	}
	switch {
	case !utf8.ValidString(p):
		return invalid("is not valid UTF-8")
	case strings.ContainsAny(p, "\x00\\"):
		return invalid("must not contain NUL or backslash")
	case len(p)+1 >= agentd.MaxBlobKeyBytes:
		return invalid("leaves no room for keys in S3's %d bytes", agentd.MaxBlobKeyBytes)
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return invalid("must not have an empty, \".\" or \"..\" segment")
		}
	}
	return p + "/", nil
}

// parseEndpoint checks the server's base URL: http(s)://host[:port], no more.
func parseEndpoint(v string) (string, error) {
	invalid := func(format string, args ...any) (string, error) {
		return "", agentd.InvalidField("s3.open", "url", "s3 URL: endpoint "+format, args...)
	}
	e, err := url.Parse(v)
	switch {
	case err != nil:
		return invalid("is not a valid URL")
	case e.Scheme != "http" && e.Scheme != "https":
		return invalid("must start with https:// or http://")
	case e.User != nil:
		return invalid("must not carry credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
	case e.Host == "" || e.Hostname() == "":
		return invalid("names no host")
	case (e.Path != "" && e.Path != "/") || e.RawQuery != "" || e.Fragment != "":
		return invalid("must be just scheme://host[:port], with no path or query")
	}
	if p := e.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return invalid("port must be a number from 1 to 65535")
		}
	}
	return e.Scheme + "://" + e.Host, nil
}

func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for i, c := range []byte(b) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		switch {
		case alnum:
		case (c == '.' || c == '-' || c == '_') && i > 0 && i < len(b)-1:
		default:
			return false
		}
	}
	return true
}

func validRegion(r string) bool {
	if r == "" || len(r) > 64 {
		return false
	}
	for _, c := range []byte(r) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// credentialParam reports whether a query parameter looks like someone
// tried to put credentials in the URL, to answer with the right advice.
func credentialParam(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"key", "secret", "token", "password", "credential"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}
