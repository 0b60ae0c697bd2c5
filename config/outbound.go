package config

import (
	"net/http"
	"strings"

	"github.com/agentd/agentd"
)

// newOutbound returns the HTTP client agents use for http context sources
// and webhook effects, and the check of a URL against [outbound].
func newOutbound(o Outbound) (*http.Client, func(string) error, error) {
	check := func(raw string) error {
		for _, p := range o.Allow {
			if strings.HasPrefix(raw, p) {
				return nil
			}
		}
		return agentd.Errorf(agentd.KindForbidden, "outbound", "%s is not allowed by [outbound] allow", raw)
	}
	timeout := o.Timeout.Duration
	if timeout == 0 {
		timeout = 30_000_000_000
	}
	return &http.Client{Timeout: timeout}, check, nil
}
