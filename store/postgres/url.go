package postgres

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// urlConfig is what Open takes from the URL's query parameters before
// handing the rest to pgx. A nil field was not given.
type urlConfig struct {
	connString   string // the URL without agentd's parameters
	maxConnsSet  bool
	cacheOff     *bool
	maxAge       *time.Duration
	swr          *time.Duration
	maxBytes     *int64
	queryTimeout *time.Duration
}

// parseURL splits agentd's parameters off a postgres:// URL. It edits only
// the query string, never re-encoding the rest: pgx accepts URLs net/url
// rejects (several hosts: postgres://a:5432,b:5432/db), and the user info
// must reach pgx as written. Errors never quote the URL.
func parseURL(raw string) (urlConfig, error) {
	var c urlConfig
	if !strings.HasPrefix(raw, "postgres://") && !strings.HasPrefix(raw, "postgresql://") {
		return c, errors.New("the URL must start with postgres:// or postgresql://")
	}
	base, query, _ := strings.Cut(raw, "?")
	values, err := url.ParseQuery(query)
	if err != nil {
		return c, errors.New("the URL's query parameters are malformed")
	}
	take := func(name string) (string, bool) {
		vs, ok := values[name]
		if !ok {
			return "", false
		}
		delete(values, name)
		if len(vs) == 0 {
			return "", true
		}
		return vs[len(vs)-1], true
	}
	duration := func(name string, allowZero bool) (*time.Duration, error) {
		s, ok := take(name)
		if !ok {
			return nil, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d == 0 && !allowZero {
			return nil, fmt.Errorf("URL parameter %s=%q is not a positive duration such as 30s", name, s)
		}
		return &d, nil
	}

	if s, ok := take("cache"); ok {
		var off bool
		switch strings.ToLower(s) {
		case "on", "true", "1":
		case "off", "false", "0":
			off = true
		default:
			return c, fmt.Errorf("URL parameter cache=%q must be on or off", s)
		}
		c.cacheOff = &off
	}
	if c.maxAge, err = duration("cache_max_age", false); err != nil {
		return c, err
	}
	if c.maxAge != nil && *c.maxAge > maxMaxAge {
		return c, fmt.Errorf("URL parameter cache_max_age=%v is more than the maximum of %v", *c.maxAge, maxMaxAge)
	}
	if c.swr, err = duration("cache_stale_while_revalidate", true); err != nil {
		return c, err
	}
	if c.swr != nil && *c.swr == 0 {
		none := time.Duration(-1) // CacheConfig's "none"
		c.swr = &none
	}
	if s, ok := take("cache_max_bytes"); ok {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("URL parameter cache_max_bytes=%q is not a positive number of bytes", s)
		}
		c.maxBytes = &n
	}
	if c.queryTimeout, err = duration("query_timeout", false); err != nil {
		return c, err
	}
	_, c.maxConnsSet = values["pool_max_conns"]

	c.connString = base
	if len(values) > 0 {
		c.connString += "?" + values.Encode()
	}
	return c, nil
}

// secrets returns the forms in which the URL's password may appear in a
// message: as written in the user info or a password= parameter, and
// decoded.
func secrets(raw string) []string {
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		for _, o := range out {
			if o == s {
				return
			}
		}
		out = append(out, s)
	}
	addForms := func(s string) {
		add(s)
		if d, err := url.PathUnescape(s); err == nil {
			add(d)
			add(url.QueryEscape(d))
			add(url.PathEscape(d))
		}
		if d, err := url.QueryUnescape(s); err == nil {
			add(d)
		}
	}
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		rest = raw
	}
	authority, query, _ := strings.Cut(rest, "?")
	if i := strings.IndexByte(authority, '/'); i >= 0 {
		authority = authority[:i]
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		if _, pw, ok := strings.Cut(authority[:at], ":"); ok {
			addForms(pw)
		}
	}
	for _, kv := range strings.Split(query, "&") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.EqualFold(k, "password") {
			addForms(v)
		}
	}
	return out
}

// redactor hides a URL's password in text.
type redactor struct{ secrets []string }

func newRedactor(raw string) redactor { return redactor{secrets: secrets(raw)} }

const redactedPassword = "xxxxx"

func (r redactor) redact(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, redactedPassword)
	}
	return s
}

// err returns err unchanged if its message shows no password, and otherwise
// an error with the redacted message only: the original must not stay in the
// chain, where anything printing a cause would print the password.
func (r redactor) err(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if red := r.redact(msg); red != msg {
		return errors.New(red)
	}
	return err
}
