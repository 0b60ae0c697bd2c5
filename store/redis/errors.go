package redis

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/agentd/agentd"
	goredis "github.com/redis/go-redis/v9"
)

// classify turns an error from go-redis into an *agentd.Error. ctx is the
// caller's context and opCtx the one bounded by the operation timeout: when
// the caller gave up, the error is the caller's (KindTimeout, with
// context.Canceled or DeadlineExceeded in the chain); when only the
// operation timeout ran out, Redis did not answer in time, which is the
// store being unavailable, not the request being slow.
func classify(ctx, opCtx context.Context, op string, timeout time.Duration, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return agentd.E("", op, cerr)
	}
	var ae *agentd.Error
	if errors.As(err, &ae) {
		return err
	}
	if errors.Is(err, goredis.Nil) {
		return agentd.E(agentd.KindNotFound, op, err)
	}
	if opCtx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return &agentd.Error{
			Kind:    agentd.KindStorageUnavailable,
			Op:      op,
			Message: fmt.Sprintf("redis did not answer within %s", timeout),
			Err:     err,
		}
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		// These replies mean the server cannot serve us right now
		// (starting up, failing over, a read-only replica, out of memory,
		// refusing our credentials), not that we sent something wrong: a
		// 503, as the request may succeed later or on another node.
		for _, p := range []string{
			"LOADING", "READONLY", "CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN", "BUSY",
			"NOREPLICAS", "MISCONF", "OOM", "NOAUTH", "WRONGPASS", "NOPERM",
		} {
			if goredis.HasErrorPrefix(err, p) {
				return agentd.E(agentd.KindStorageUnavailable, op, err)
			}
		}
		if goredis.IsMaxClientsError(err) {
			return agentd.E(agentd.KindStorageUnavailable, op, err)
		}
		// Any other reply (WRONGTYPE, a script error) means this package
		// sent something wrong or someone else wrote into its keys.
		return agentd.E(agentd.KindInternal, op, err)
	}
	// Everything else comes from the network or the client's pool (refused,
	// reset, EOF, pool timeout, a closed client): Redis is unreachable.
	return agentd.E(agentd.KindStorageUnavailable, op, err)
}

// scrub removes secrets from err's text. url.Parse quotes the whole URL,
// password included, in its errors, and a future go-redis might too; when
// the text holds a secret, the cause is replaced by its redacted text, so
// not even errors.Unwrap reaches the original.
//
// An *agentd.Error keeps its kind: its message and cause are scrubbed in a
// copy.
func scrub(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	redact := func(s string) string {
		for _, secret := range secrets {
			if secret != "" {
				s = strings.ReplaceAll(s, secret, "xxxxx")
			}
		}
		return s
	}
	if ae, ok := err.(*agentd.Error); ok {
		clean := *ae
		clean.Message = redact(ae.Message)
		clean.Err = scrub(ae.Err, secrets...)
		return &clean
	}
	msg := err.Error()
	if clean := redact(msg); clean != msg {
		return errors.New(clean)
	}
	return err
}

// urlSecrets returns the parts of a Redis URL that must not appear in an
// error: the whole user-info part and the password alone, both as written
// and decoded. It works on the raw string, so it also covers URLs that
// url.Parse rejects.
func urlSecrets(rawURL string) []string {
	rest := rawURL
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return nil
	}
	userinfo := rest[:at]
	secrets := []string{userinfo}
	if i := strings.IndexByte(userinfo, ':'); i >= 0 {
		pass := userinfo[i+1:]
		secrets = append(secrets, pass)
		if dec, err := url.PathUnescape(pass); err == nil && dec != pass {
			secrets = append(secrets, dec)
		}
	}
	return secrets
}
