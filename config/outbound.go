package config

import (
	"net/http"

	"github.com/agentd/agentd/internal/netguard"
)

// defaultOutboundTimeout bounds one outbound request when [outbound] sets
// no timeout.
const defaultOutboundTimeout = 30_000_000_000 // 30s

// newOutbound returns the HTTP client agents use for http context sources
// and webhook effects, and the check of a URL against [outbound]: only
// allowed URL prefixes, never a private, loopback, link-local or metadata
// address unless its host is listed in allow_private, checked again on
// every redirect and on the address actually dialled.
func newOutbound(o Outbound) (*http.Client, func(string) error, error) {
	p := netguard.Policy{Allow: o.Allow, AllowPrivate: o.AllowPrivate}
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	timeout := o.Timeout.Duration
	if timeout == 0 {
		timeout = defaultOutboundTimeout
	}
	return p.Client(timeout), p.Check, nil
}
