// Package netguard holds agentd's outbound HTTP policy: which URLs agents'
// context sources, effects (webhooks) and the model's tools may reach, and
// an http.Client that enforces it on every request, every redirect and
// every connection — so that neither a URL built from user input nor a DNS
// answer can steer a request to loopback, the private network or a cloud
// metadata service.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentd/agentd"
)

const op = "netguard"

// MaxRedirects is how many redirects a Client follows; the next one is
// refused.
const MaxRedirects = 5

// Policy says where outbound HTTP may go. The zero Policy allows nothing.
//
// An Allow prefix is an absolute http or https URL without credentials,
// query or fragment. A URL matches it when the scheme, the host (without
// case, and a trailing dot) and the port (the scheme's default when absent)
// are equal, and the path continues the prefix's path at a segment
// boundary: "https://a.com/v1" matches /v1, /v1/ and /v1/x but not /v10,
// and "https://a.com/v1/" matches /v1/ and below but not /v1 itself. A
// prefix without a path allows the whole origin. Paths are compared
// decoded, and URLs whose path has dot segments ("..", ".", also
// percent-encoded or with ";params") are refused outright, since servers
// would resolve them to a path the prefix may not cover.
//
// Every address a Client connects to is checked after name resolution:
// loopback, private (RFC 1918, fc00::/7), link-local (169.254.0.0/16,
// fe80::/10), unspecified, "this network" (0.0.0.0/8), multicast, reserved
// (240.0.0.0/4 and broadcast) and shared CGNAT (100.64.0.0/10) addresses
// are refused, in their IPv4-mapped, IPv4-compatible and NAT64
// (64:ff9b::/96) forms too, unless AllowPrivate allows them.
type Policy struct {
	// Allow lists URL prefixes, e.g. "https://api.example.com/v1/".
	Allow []string
	// AllowPrivate lists what may be reached at a refused address: a host
	// name (any address it resolves to, e.g. "localhost" or "sink.internal"),
	// an IP ("127.0.0.1", for a dev sink) or a CIDR ("10.0.0.0/8": any
	// allowed host resolving into it). The cloud metadata addresses
	// 169.254.169.254 and fd00:ec2::254 are allowed only by an entry of
	// exactly that IP: neither a name, nor a wider CIDR, opens them.
	AllowPrivate []string
}

// Validate reports every malformed entry of the policy, as KindInvalid
// errors naming the field ("allow[0]", "allowPrivate[2]"). Entries that do
// not validate match nothing.
func (p Policy) Validate() error {
	var errs []error
	for i, a := range p.Allow {
		if _, err := parsePrefix(a); err != nil {
			field := fmt.Sprintf("allow[%d]", i)
			errs = append(errs, agentd.InvalidField(op, field, "%s: %v", field, err))
		}
	}
	for i, a := range p.AllowPrivate {
		if _, err := parsePrivate(a); err != nil {
			field := fmt.Sprintf("allowPrivate[%d]", i)
			errs = append(errs, agentd.InvalidField(op, field, "%s: %v", field, err))
		}
	}
	return errors.Join(errs...)
}

// Check reports whether the policy allows a request to rawURL: an allowed
// prefix must match it, and an IP-literal host must not be a refused
// address. A refusal is a KindForbidden *agentd.Error that names the URL
// without its credentials, query or fragment, and says why. Check does not
// resolve names: a Client checks the addresses it connects to.
func (p Policy) Check(rawURL string) error {
	return p.compile().check(rawURL)
}

// Client returns an HTTP client that keeps to the policy: each request and
// each redirect (at most MaxRedirects) must pass Check, and each connection
// is made to an address resolved and checked beforehand — the checked
// address is the one dialled, so a DNS answer that changes between the
// check and the connection (rebinding) cannot bypass it. No proxy is used,
// whatever the environment says. timeout bounds each request, redirects
// included; 0 means none.
//
// Refusals are KindForbidden *agentd.Errors inside the *url.Error the
// client returns. Report the inner error (agentd.AsError) to clients: the
// *url.Error's text holds the URL with its query.
func (p Policy) Client(timeout time.Duration) *http.Client {
	return p.client(timeout, &dialer{lookup: net.DefaultResolver.LookupNetIP})
}

func (p Policy) client(timeout time.Duration, d *dialer) *http.Client {
	c := p.compile()
	d.policy = c
	t := &http.Transport{
		Proxy:                 nil, // never from the environment: a proxy would connect where we did not check
		DialContext:           d.dialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: &guard{policy: c, next: t},
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > MaxRedirects {
				return forbidden(redact(req.URL), fmt.Sprintf("stopped after %d redirects", MaxRedirects))
			}
			return c.checkURL(req.URL)
		},
	}
}

// guard checks every request before the transport sends it, so the
// allowlist holds for redirects and for users of the transport alone.
type guard struct {
	policy compiled
	next   http.RoundTripper
}

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := g.policy.checkURL(req.URL); err != nil {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, err
	}
	return g.next.RoundTrip(req)
}

// compiled is a parsed policy; malformed entries are left out, so they
// allow nothing.
type compiled struct {
	prefixes []prefix
	names    []string      // host names allowed to resolve to refused addresses
	nets     []privateCIDR // addresses allowed although refused
}

type privateCIDR struct {
	net netip.Prefix
	// exact is an entry of one IP: the only kind that opens a metadata
	// address.
	exact bool
}

func (p Policy) compile() compiled {
	var c compiled
	for _, a := range p.Allow {
		if pr, err := parsePrefix(a); err == nil {
			c.prefixes = append(c.prefixes, pr)
		}
	}
	for _, a := range p.AllowPrivate {
		e, err := parsePrivate(a)
		switch {
		case err != nil:
		case e.name != "":
			c.names = append(c.names, e.name)
		default:
			c.nets = append(c.nets, e.cidr)
		}
	}
	return c
}

func (c compiled) check(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		// The text may hold secrets, and cannot be told apart from them.
		return forbidden("", "it is not a valid URL")
	}
	return c.checkURL(u)
}

func (c compiled) checkURL(u *url.URL) error {
	shown := redact(u)
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme != "http" && scheme != "https":
		return forbidden(shown, "only absolute http and https URLs may be fetched")
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return forbidden(shown, "it has no host")
	case hasDotSegment(u.Path):
		return forbidden(shown, "its path has dot segments")
	}
	host := normalizeHost(u.Hostname())
	port, err := portOf(scheme, u.Port())
	if err != nil {
		return forbidden(shown, err.Error())
	}
	path := u.Path
	if path == "" {
		path = "/"
	}
	matched := false
	for _, pr := range c.prefixes {
		if pr.matches(scheme, host, port, path) {
			matched = true
			break
		}
	}
	if !matched {
		return forbidden(shown, "no allowed URL prefix matches it")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if why := refused(ip); why != "" && !c.privateAllowed(host, ip) {
			return forbidden(shown, fmt.Sprintf("%s is a %s address", ip, why))
		}
	}
	return nil
}

// privateAllowed reports whether AllowPrivate lets a connection for host
// reach the refused address ip.
func (c compiled) privateAllowed(host string, ip netip.Addr) bool {
	ip = effective(ip)
	meta := isMetadata(ip)
	for _, n := range c.nets {
		if n.net.Contains(ip) && (!meta || n.exact) {
			return true
		}
	}
	if meta {
		return false
	}
	host = normalizeHost(host)
	for _, n := range c.names {
		if n == host {
			return true
		}
	}
	return false
}

// prefix is a parsed Allow entry.
type prefix struct {
	scheme, host, port, path string
}

func parsePrefix(raw string) (prefix, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return prefix{}, errors.New("not a URL")
	}
	shown := redact(u)
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme != "http" && scheme != "https":
		return prefix{}, fmt.Errorf("%q: a prefix is an absolute http or https URL", shown)
	case u.Opaque != "" || u.Hostname() == "":
		return prefix{}, fmt.Errorf("%q: a prefix needs a host", shown)
	case u.User != nil:
		return prefix{}, fmt.Errorf("%q: a prefix must not hold credentials", shown)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#"):
		return prefix{}, fmt.Errorf("%q: a prefix must not have a query or a fragment", shown)
	case hasDotSegment(u.Path):
		return prefix{}, fmt.Errorf("%q: a prefix must not have dot segments", shown)
	}
	port, err := portOf(scheme, u.Port())
	if err != nil {
		return prefix{}, fmt.Errorf("%q: %v", shown, err)
	}
	path := u.Path
	if path == "" {
		path = "/"
	}
	return prefix{scheme: scheme, host: normalizeHost(u.Hostname()), port: port, path: path}, nil
}

func (p prefix) matches(scheme, host, port, path string) bool {
	if scheme != p.scheme || host != p.host || port != p.port {
		return false
	}
	if strings.HasSuffix(p.path, "/") {
		return strings.HasPrefix(path, p.path)
	}
	return path == p.path || strings.HasPrefix(path, p.path+"/")
}

// portOf is the port of a URL, the scheme's default when none is given.
func portOf(scheme, port string) (string, error) {
	if port == "" {
		if scheme == "https" {
			return "443", nil
		}
		return "80", nil
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", fmt.Errorf("port %q is not a port number", port)
	}
	return strconv.FormatUint(n, 10), nil
}

// normalizeHost lowercases a host name and drops a trailing dot; an IP is
// written in its canonical form.
func normalizeHost(h string) string {
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.String()
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// hasDotSegment reports whether a (decoded) path has a "." or ".."
// segment, counting backslashes as separators and ignoring ";params", as
// some servers do.
func hasDotSegment(path string) bool {
	for _, seg := range strings.FieldsFunc(path, func(r rune) bool { return r == '/' || r == '\\' }) {
		seg, _, _ = strings.Cut(seg, ";")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// privateEntry is a parsed AllowPrivate entry: a host name or addresses.
type privateEntry struct {
	name string
	cidr privateCIDR
}

func parsePrivate(raw string) (privateEntry, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return privateEntry{}, errors.New("an empty entry")
	}
	if strings.Contains(s, "/") {
		pr, err := netip.ParsePrefix(s)
		if err != nil {
			return privateEntry{}, fmt.Errorf("%q is not a CIDR", s)
		}
		pr = pr.Masked()
		if pr.Addr().Is4In6() && pr.Bits() >= 96 {
			pr = netip.PrefixFrom(pr.Addr().Unmap(), pr.Bits()-96)
		}
		return privateEntry{cidr: privateCIDR{net: pr, exact: pr.IsSingleIP()}}, nil
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		ip = ip.WithZone("").Unmap()
		return privateEntry{cidr: privateCIDR{net: netip.PrefixFrom(ip, ip.BitLen()), exact: true}}, nil
	}
	name := normalizeHost(s)
	if !validHostname(name) {
		return privateEntry{}, fmt.Errorf("%q is neither a host name, an IP nor a CIDR", s)
	}
	return privateEntry{name: name}, nil
}

func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// The address ranges refused besides what netip classifies, and the
// metadata addresses. They are functions, not variables, so nothing can
// change them.
func cgnat() netip.Prefix       { return netip.MustParsePrefix("100.64.0.0/10") }
func thisNetwork() netip.Prefix { return netip.MustParsePrefix("0.0.0.0/8") }
func reserved() netip.Prefix    { return netip.MustParsePrefix("240.0.0.0/4") } // and 255.255.255.255
func nat64() netip.Prefix       { return netip.MustParsePrefix("64:ff9b::/96") }
func v4compat() netip.Prefix    { return netip.MustParsePrefix("::/96") }
func metadata4() netip.Addr     { return netip.MustParseAddr("169.254.169.254") }
func metadata6() netip.Addr     { return netip.MustParseAddr("fd00:ec2::254") }

// effective is the address a connection to ip reaches for the purpose of
// the checks: without zone, and the IPv4 address an IPv4-mapped,
// IPv4-compatible or NAT64 address stands for.
func effective(ip netip.Addr) netip.Addr {
	ip = ip.WithZone("").Unmap()
	if ip.Is6() && (nat64().Contains(ip) || (v4compat().Contains(ip) && !ip.IsUnspecified() && !ip.IsLoopback())) {
		b := ip.As16()
		return netip.AddrFrom4([4]byte(b[12:]))
	}
	return ip
}

func isMetadata(ip netip.Addr) bool {
	ip = effective(ip)
	return ip == metadata4() || ip == metadata6()
}

// refused says what kind of refused address ip is, or "" when it may be
// reached.
func refused(ip netip.Addr) string {
	ip = effective(ip)
	switch {
	case !ip.IsValid():
		return "invalid"
	case isMetadata(ip):
		return "cloud metadata"
	case ip.IsUnspecified() || thisNetwork().Contains(ip):
		return "unspecified"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsPrivate():
		return "private"
	case ip.IsMulticast():
		return "multicast"
	case cgnat().Contains(ip):
		return "shared (CGNAT)"
	case reserved().Contains(ip):
		return "reserved"
	}
	return ""
}

// dialer connects to checked addresses only.
type dialer struct {
	policy compiled
	lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// onDial, when set, sees each address just before it is dialled
	// (tests).
	onDial func(addr netip.AddrPort)
}

func (d *dialer) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, agentd.E(agentd.KindInternal, op, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, agentd.Errorf(agentd.KindForbidden, op, "port %q is not a port number", portStr)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		family := "ip"
		switch network {
		case "tcp4":
			family = "ip4"
		case "tcp6":
			family = "ip6"
		}
		if ips, err = d.lookup(ctx, family, host); err != nil {
			// Unclassified (or KindTimeout when the context ended): the
			// caller knows whether a failed lookup is its effect's failure.
			return nil, agentd.E("", op, fmt.Errorf("resolving %s: %w", host, err))
		}
	}
	// Dial the allowed addresses in the resolver's order; skip, never
	// dial, the refused ones.
	var refusedAddrs []string
	var lastErr error
	for _, ip := range ips {
		if why := refused(ip); why != "" && !d.policy.privateAllowed(host, ip) {
			refusedAddrs = append(refusedAddrs, fmt.Sprintf("%s (%s)", ip, why))
			continue
		}
		ap := netip.AddrPortFrom(ip, uint16(port))
		if d.onDial != nil {
			d.onDial(ap)
		}
		nd := net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: d.control(host)}
		c, err := nd.DialContext(ctx, network, ap.String())
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	if lastErr != nil {
		return nil, lastErr
	}
	if len(refusedAddrs) == 0 {
		return nil, agentd.E("", op, fmt.Errorf("%s has no addresses", host))
	}
	return nil, agentd.Errorf(agentd.KindForbidden, op, "%s resolves only to refused addresses: %s", host, strings.Join(refusedAddrs, ", "))
}

// control checks the address the socket actually connects to, a second
// line behind dialContext's check, for any path that dials by name.
func (d *dialer) control(host string) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return agentd.Errorf(agentd.KindForbidden, op, "connecting to %q: not an address", address)
		}
		if why := refused(ap.Addr()); why != "" && !d.policy.privateAllowed(host, ap.Addr()) {
			return agentd.Errorf(agentd.KindForbidden, op, "%s is a %s address", ap.Addr(), why)
		}
		return nil
	}
}

// redact shows a URL without what may be secret: credentials, query and
// fragment. A long path is cut.
func redact(u *url.URL) string {
	if u == nil {
		return ""
	}
	var b strings.Builder
	if u.Scheme != "" {
		b.WriteString(u.Scheme + ":")
	}
	if u.Host != "" || u.User != nil {
		b.WriteString("//" + u.Host)
	}
	path := u.EscapedPath()
	if u.Opaque != "" {
		path = "…" // an opaque part may be anything, credentials included
	}
	if len(path) > 200 {
		path = path[:200] + "…"
	}
	b.WriteString(path)
	return b.String()
}

func forbidden(shown, why string) *agentd.Error {
	if shown == "" {
		return agentd.Errorf(agentd.KindForbidden, op, "the URL is not allowed: %s", why)
	}
	return agentd.Errorf(agentd.KindForbidden, op, "%q is not allowed: %s", shown, why)
}
