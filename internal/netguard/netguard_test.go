package netguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		policy  Policy
		inError []string // "" entries: want no error
	}{
		{"good", Policy{
			Allow:        []string{"https://api.example.com/v1/", "http://127.0.0.1:8080", "HTTPS://A.COM:443/x"},
			AllowPrivate: []string{"127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8", "localhost", "sink.internal."},
		}, nil},
		{"zero", Policy{}, nil},
		{"bad prefixes", Policy{Allow: []string{
			"ftp://a.com/", "a.com/v1", "https://", "https://u:secret@a.com/", "https://a.com/v1?key=secret",
			"https://a.com/#frag", "https://a.com/v1/../admin", "https://a.com:99999/", "mailto:x@a.com", "http://a.com:0/",
		}}, []string{
			"allow[0]", "allow[1]", "allow[2]: ", "allow[3]", "allow[4]", "allow[5]", "allow[6]", "allow[7]", "allow[8]", "allow[9]",
		}},
		{"bad private entries", Policy{AllowPrivate: []string{"10.0.0.0/33", "", "not a host", "*.internal", "1.2.3.4/x"}},
			[]string{"allowPrivate[0]", "allowPrivate[1]", "allowPrivate[2]", "allowPrivate[3]", "allowPrivate[4]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Validate()
			if len(tt.inError) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if agentd.KindOf(err) != agentd.KindInvalid {
				t.Fatalf("Validate = %v, want KindInvalid", err)
			}
			for _, want := range tt.inError {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != len(tt.inError) {
				t.Errorf("%d errors, want %d: %v", n, len(tt.inError), err)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	p := Policy{
		Allow: []string{
			"https://a.com/v1", "https://api.example.com/hooks/", "http://b.com:8080/", "https://c.com",
			"http://10.1.2.3/", "http://169.254.169.254/", "http://[::1]/", "http://127.0.0.1:9/", "http://[::ffff:127.0.0.1]/",
		},
		AllowPrivate: []string{"127.0.0.1", "169.254.0.0/16"},
	}
	tests := []struct {
		url string
		ok  bool
		why string // in the error
	}{
		{"https://a.com/v1", true, ""},
		{"https://a.com/v1/", true, ""},
		{"https://a.com/v1/x/y?q=1", true, ""},
		{"https://A.COM./v1/x", true, ""},
		{"https://a.com:443/v1", true, ""},
		{"https://a.com/v10", false, "no allowed URL prefix"},
		{"https://a.com/v", false, "no allowed URL prefix"},
		{"https://a.com/", false, "no allowed URL prefix"},
		{"https://a.com/V1", false, "no allowed URL prefix"},
		{"http://a.com/v1", false, "no allowed URL prefix"},
		{"https://a.com:8443/v1", false, "no allowed URL prefix"},
		{"https://a.com.evil.com/v1", false, "no allowed URL prefix"},
		{"https://a.com@evil.com/v1", false, "no allowed URL prefix"},
		{"https://a.com:443@evil.com/v1", false, "no allowed URL prefix"},
		{"https://evil.com/https://a.com/v1", false, "no allowed URL prefix"},
		{"https://a.com/v1/../admin", false, "dot segments"},
		{"https://a.com/v1/%2e%2e/admin", false, "dot segments"},
		{"https://a.com/v1%2F..%2Fadmin", false, "dot segments"},
		{"https://a.com/v1/..;/admin", false, "dot segments"},
		{`https://a.com/v1\..\admin`, false, "dot segments"},
		{"https://a.com/v1/./x", false, "dot segments"},
		{"https://a.com/v1/..x", true, ""},
		{"https://api.example.com/hooks/", true, ""},
		{"https://api.example.com/hooks/42", true, ""},
		{"https://api.example.com/hooks", false, "no allowed URL prefix"},
		{"https://api.example.com/hooksx", false, "no allowed URL prefix"},
		{"http://b.com:8080/any", true, ""},
		{"http://b.com/any", false, "no allowed URL prefix"},
		{"https://c.com", true, ""},
		{"https://c.com/anything/at/all", true, ""},
		{"https://user:pw@c.com/x", true, ""},
		{"ftp://c.com/", false, "only absolute http and https"},
		{"//c.com/", false, "only absolute http and https"},
		{"/relative", false, "only absolute http and https"},
		{"https:c.com", false, "no host"},
		{"https:///path", false, "no host"},
		{"https://c.com:0/", false, "not a port number"},
		{"http://10.1.2.3/x", false, "10.1.2.3 is a private address"},
		{"http://169.254.169.254/latest/meta-data/", false, "169.254.169.254 is a cloud metadata address"},
		{"http://[::1]/", false, "::1 is a loopback address"},
		{"http://[0:0::1]/", false, "::1 is a loopback address"},
		{"http://127.0.0.1:9/", true, ""},
		{"http://[::ffff:127.0.0.1]/", true, ""}, // the same address as 127.0.0.1, which is allowed
		{"http://%zz/", false, "not a valid URL"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := p.Check(tt.url)
			if tt.ok {
				if err != nil {
					t.Fatalf("Check = %v, want allowed", err)
				}
				return
			}
			if agentd.KindOf(err) != agentd.KindForbidden || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("Check = %v, want KindForbidden with %q", err, tt.why)
			}
		})
	}
}

func TestCheckRedacts(t *testing.T) {
	p := Policy{Allow: []string{"https://a.com/v1/"}}
	err := p.Check("https://alice:hunter2@evil.com/v1/x?token=abc123#frag")
	if err == nil {
		t.Fatal("allowed")
	}
	msg := err.Error()
	for _, secret := range []string{"alice", "hunter2", "token", "abc123", "frag"} {
		if strings.Contains(msg, secret) {
			t.Errorf("error %q shows %q", msg, secret)
		}
	}
	if !strings.Contains(msg, `"https://evil.com/v1/x"`) {
		t.Errorf("error %q does not name the host and path", msg)
	}
}

func TestRefused(t *testing.T) {
	tests := []struct{ ip, want string }{
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:7f00:1", "loopback"},
		{"::127.0.0.1", "loopback"},
		{"64:ff9b::7f00:1", "loopback"},
		{"10.1.2.3", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.1.1", "private"},
		{"::ffff:192.168.1.1", "private"},
		{"fc00::1", "private"},
		{"fd12:3456::1", "private"},
		{"169.254.169.254", "cloud metadata"},
		{"::ffff:169.254.169.254", "cloud metadata"},
		{"64:ff9b::a9fe:a9fe", "cloud metadata"},
		{"fd00:ec2::254", "cloud metadata"},
		{"169.254.1.1", "link-local"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "unspecified"},
		{"::", "unspecified"},
		{"224.0.0.1", "link-local"},
		{"239.1.2.3", "multicast"},
		{"ff02::1", "link-local"},
		{"ff05::1", "multicast"},
		{"100.64.0.1", "shared (CGNAT)"},
		{"100.127.255.255", "shared (CGNAT)"},
		{"100.100.100.200", "shared (CGNAT)"},
		{"240.0.0.1", "reserved"},
		{"255.255.255.255", "reserved"},
		{"172.32.0.1", ""},
		{"100.128.0.1", ""},
		{"8.8.8.8", ""},
		{"2001:4860:4860::8888", ""},
		{"64:ff9b::808:808", ""},
		{"::ffff:8.8.8.8", ""},
	}
	for _, tt := range tests {
		if got := refused(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("refused(%s) = %q, want %q", tt.ip, got, tt.want)
		}
	}
}

func TestPrivateAllowed(t *testing.T) {
	p := Policy{AllowPrivate: []string{"sink.internal", "127.0.0.1", "10.0.0.0/8", "169.254.0.0/16", "fc00::/7", "::ffff:192.168.0.0/120"}}.compile()
	exact := Policy{AllowPrivate: []string{"169.254.169.254", "fd00:ec2::254"}}.compile()
	tests := []struct {
		c    compiled
		host string
		ip   string
		want bool
	}{
		{p, "sink.internal", "192.168.9.9", true},
		{p, "SINK.internal.", "192.168.9.9", true},
		{p, "other.internal", "192.168.9.9", false},
		{p, "other.internal", "192.168.0.9", true}, // the mapped CIDR is an IPv4 one
		{p, "x", "127.0.0.1", true},
		{p, "x", "::ffff:127.0.0.1", true},
		{p, "x", "127.0.0.2", false},
		{p, "x", "10.200.0.1", true},
		{p, "x", "169.254.1.1", true},
		{p, "x", "169.254.169.254", false}, // a CIDR does not open metadata
		{p, "sink.internal", "169.254.169.254", false},
		{p, "x", "fd00:ec2::254", false},
		{p, "x", "fd00::1", true},
		{exact, "x", "169.254.169.254", true},
		{exact, "x", "::ffff:169.254.169.254", true},
		{exact, "x", "fd00:ec2::254", true},
		{exact, "x", "169.254.1.1", false},
	}
	for _, tt := range tests {
		if got := tt.c.privateAllowed(tt.host, netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("privateAllowed(%s, %s) = %v, want %v", tt.host, tt.ip, got, tt.want)
		}
	}
}

// server is an httptest server on 127.0.0.1 that counts its requests.
type server struct {
	*httptest.Server
	hits atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) port() string { return s.URL[strings.LastIndex(s.URL, ":")+1:] }

func get(t *testing.T, c *http.Client, u string) (string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestClientLoopback(t *testing.T) {
	srv := newServer(t, nil)
	tests := []struct {
		name    string
		url     string
		private []string
		ok      bool
	}{
		{"ip refused", srv.URL + "/x", nil, false},
		{"ip allowed", srv.URL + "/x", []string{"127.0.0.1"}, true},
		{"ip allowed by CIDR", srv.URL + "/x", []string{"127.0.0.0/8"}, true},
		{"name resolving to loopback refused", "http://localhost:" + srv.port() + "/x", nil, false},
		{"name allowed", "http://localhost:" + srv.port() + "/x", []string{"localhost"}, true},
		{"another name does not allow it", "http://localhost:" + srv.port() + "/x", []string{"sink.internal"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.hits.Load()
			p := Policy{Allow: []string{tt.url}, AllowPrivate: tt.private}
			body, err := get(t, p.Client(10*time.Second), tt.url)
			if tt.ok {
				if err != nil || body != "ok" {
					t.Fatalf("GET = %q, %v", body, err)
				}
				return
			}
			if agentd.KindOf(err) != agentd.KindForbidden {
				t.Fatalf("GET = %q, %v; want KindForbidden", body, err)
			}
			if srv.hits.Load() != before {
				t.Error("the server was reached")
			}
		})
	}
}

// resolver answers lookups from a table and records what was dialled.
type resolver struct {
	mu     sync.Mutex
	addrs  map[string][]string
	calls  int
	dialed []netip.AddrPort
}

func (r *resolver) dialer() *dialer {
	return &dialer{
		lookup: func(_ context.Context, _, host string) ([]netip.Addr, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.calls++
			as, ok := r.addrs[host]
			if !ok {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
			var out []netip.Addr
			for _, a := range as {
				out = append(out, netip.MustParseAddr(a))
			}
			return out, nil
		},
		onDial: func(ap netip.AddrPort) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.dialed = append(r.dialed, ap)
		},
	}
}

func TestClientResolvedAddresses(t *testing.T) {
	srv := newServer(t, nil)
	port := srv.port()
	loop := netip.MustParseAddrPort("127.0.0.1:" + port)
	tests := []struct {
		name       string
		addrs      []string
		private    []string
		wantDialed []netip.AddrPort // nil: refused without dialling
	}{
		{"private refused", []string{"10.0.0.1"}, nil, nil},
		{"loopback refused", []string{"127.0.0.1"}, nil, nil},
		{"mapped loopback refused", []string{"::ffff:127.0.0.1"}, nil, nil},
		{"IPv6 loopback refused", []string{"::1"}, nil, nil},
		{"allowed by host name", []string{"127.0.0.1"}, []string{"svc.test"}, []netip.AddrPort{loop}},
		{"allowed by IP", []string{"127.0.0.1"}, []string{"127.0.0.1"}, []netip.AddrPort{loop}},
		{"another host's entry does not count", []string{"127.0.0.1"}, []string{"other.test"}, nil},
		{"metadata refused though the host is listed", []string{"169.254.169.254"}, []string{"svc.test", "169.254.0.0/16"}, nil},
		{"mapped metadata refused", []string{"::ffff:169.254.169.254"}, []string{"svc.test", "169.254.0.0/16"}, nil},
		{"IPv6 metadata refused", []string{"fd00:ec2::254"}, []string{"svc.test", "fc00::/7"}, nil},
		{"refused addresses are skipped, not dialled", []string{"10.0.0.1", "169.254.169.254", "127.0.0.1"}, []string{"127.0.0.1"}, []netip.AddrPort{loop}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.hits.Load()
			r := &resolver{addrs: map[string][]string{"svc.test": tt.addrs}}
			u := "http://svc.test:" + port + "/x"
			c := Policy{Allow: []string{u}, AllowPrivate: tt.private}.client(10*time.Second, r.dialer())
			body, err := get(t, c, u)
			if fmt.Sprint(r.dialed) != fmt.Sprint(tt.wantDialed) {
				t.Errorf("dialled %v, want %v", r.dialed, tt.wantDialed)
			}
			if tt.wantDialed != nil {
				if err != nil || body != "ok" {
					t.Fatalf("GET = %q, %v", body, err)
				}
				return
			}
			if agentd.KindOf(err) != agentd.KindForbidden || !strings.Contains(err.Error(), "svc.test resolves only to refused addresses") {
				t.Fatalf("GET = %q, %v; want KindForbidden", body, err)
			}
			if srv.hits.Load() != before {
				t.Error("the server was reached")
			}
		})
	}
}

// TestClientDialsTheCheckedAddress shows that a rebinding DNS answer does
// not matter: each connection dials the address its own lookup returned
// and checked, never a second resolution.
func TestClientDialsTheCheckedAddress(t *testing.T) {
	srv := newServer(t, nil)
	r := &resolver{addrs: map[string][]string{"svc.test": {"127.0.0.1"}}}
	d := r.dialer()
	lookup := d.lookup
	d.lookup = func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		as, err := lookup(ctx, network, host)
		// From now on the name "rebinds" to the metadata address.
		r.mu.Lock()
		r.addrs["svc.test"] = []string{"169.254.169.254"}
		r.mu.Unlock()
		return as, err
	}
	u := "http://svc.test:" + srv.port() + "/x"
	c := Policy{Allow: []string{u}, AllowPrivate: []string{"127.0.0.1"}}.client(10*time.Second, d)
	c.Transport.(*guard).next.(*http.Transport).DisableKeepAlives = true // each request dials anew
	if body, err := get(t, c, u); err != nil || body != "ok" {
		t.Fatalf("first GET = %q, %v", body, err)
	}
	if _, err := get(t, c, u); agentd.KindOf(err) != agentd.KindForbidden {
		t.Fatalf("second GET = %v, want KindForbidden", err)
	}
	if r.calls != 2 || len(r.dialed) != 1 || r.dialed[0].Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("%d lookups, dialled %v", r.calls, r.dialed)
	}
}

func TestClientRedirects(t *testing.T) {
	outside := newServer(t, nil)
	var inside *server
	inside = newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/out":
			http.Redirect(w, r, outside.URL+"/stolen", http.StatusFound)
		case r.URL.Path == "/metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		case r.URL.Path == "/in":
			http.Redirect(w, r, "/api/final", http.StatusFound)
		case r.URL.Path == "/escape":
			http.Redirect(w, r, "/private", http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/api/hop/"):
			n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/api/hop/"))
			if n < 6 {
				http.Redirect(w, r, fmt.Sprintf("/api/hop/%d", n+1), http.StatusFound)
				return
			}
			io.WriteString(w, "ok")
		default:
			io.WriteString(w, "ok")
		}
	})
	p := Policy{
		Allow:        []string{inside.URL + "/out", inside.URL + "/in", inside.URL + "/escape", inside.URL + "/metadata", inside.URL + "/api/", "http://169.254.169.254/"},
		AllowPrivate: []string{"127.0.0.1", "169.254.0.0/16"},
	}
	tests := []struct {
		path string
		ok   bool
		why  string
	}{
		{"/in", true, ""},
		{"/api/hop/1", true, ""}, // 5 redirects
		{"/api/hop/0", false, "stopped after 5 redirects"},
		{"/out", false, "no allowed URL prefix"},
		{"/escape", false, "no allowed URL prefix"},
		{"/metadata", false, "169.254.169.254 is a cloud metadata address"},
	}
	c := p.Client(10 * time.Second)
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			body, err := get(t, c, inside.URL+tt.path)
			if tt.ok {
				if err != nil || body != "ok" {
					t.Fatalf("GET = %q, %v", body, err)
				}
				return
			}
			if agentd.KindOf(err) != agentd.KindForbidden || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("GET = %q, %v; want KindForbidden with %q", body, err, tt.why)
			}
		})
	}
	if n := outside.hits.Load(); n != 0 {
		t.Errorf("the server outside the allowlist got %d requests", n)
	}
}

func TestClientRefusesBeforeSending(t *testing.T) {
	r := &resolver{}
	c := Policy{Allow: []string{"https://a.com/v1/"}}.client(time.Second, r.dialer())
	body := &closeRecorder{Reader: strings.NewReader("payload")}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://a.com/v10", body)
	_, err := c.Do(req)
	var ue *url.Error
	if agentd.KindOf(err) != agentd.KindForbidden || !errors.As(err, &ue) {
		t.Fatalf("POST = %v, want a *url.Error with KindForbidden inside", err)
	}
	if r.calls != 0 || len(r.dialed) != 0 {
		t.Errorf("%d lookups, dialled %v", r.calls, r.dialed)
	}
	if !body.closed.Load() {
		t.Error("the request body was not closed")
	}
}

type closeRecorder struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeRecorder) Close() error { c.closed.Store(true); return nil }

func TestClientIgnoresEnvironmentProxy(t *testing.T) {
	c := Policy{}.Client(0)
	tr := c.Transport.(*guard).next.(*http.Transport)
	if tr.Proxy != nil {
		t.Error("the transport uses a proxy")
	}
}

func FuzzCheck(f *testing.F) {
	allow := []string{"https://api.example.com/v1/", "http://127.0.0.1:8080/hooks/", "https://b.example/x"}
	p := Policy{Allow: allow, AllowPrivate: []string{"127.0.0.1"}}
	for _, s := range []string{
		"https://api.example.com/v1/x", "https://api.example.com/v10", "https://a@api.example.com/v1/",
		"http://127.0.0.1:8080/hooks/1", "http://[::ffff:127.0.0.1]:8080/hooks/", "https://b.example/x/y",
		"https://b.example/xy", "https://api.example.com/v1/%2e%2e/", "HTTPS://API.EXAMPLE.COM:443/v1/?a=b",
		"https://api.example.com./v1/", "javascript:alert(1)", "http://[fe80::1%25eth0]/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := p.Check(raw)
		if err != nil {
			if agentd.KindOf(err) != agentd.KindForbidden {
				t.Fatalf("Check(%q) = %v, not KindForbidden", raw, err)
			}
		} else {
			// An allowed URL starts, once normalized, with an allowed
			// prefix, and a segment boundary follows.
			u, perr := url.Parse(raw)
			if perr != nil {
				t.Fatalf("Check(%q) allowed an unparseable URL", raw)
			}
			scheme := strings.ToLower(u.Scheme)
			port := u.Port()
			if port == "" || (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
				port = ""
			} else {
				port = ":" + port
			}
			norm := scheme + "://" + normalizeHost(u.Hostname()) + port + u.Path
			if strings.Contains(u.Hostname(), ":") {
				norm = scheme + "://[" + normalizeHost(u.Hostname()) + "]" + port + u.Path
			}
			ok := false
			for _, a := range allow {
				if strings.HasPrefix(norm, a) || norm+"/" == a || strings.HasPrefix(norm, a+"/") {
					ok = true
				}
			}
			if !ok && !strings.HasPrefix(norm, "http://127.0.0.1:8080/hooks/") {
				t.Fatalf("Check(%q) allowed %q, which no prefix covers", raw, norm)
			}
			if hasDotSegment(u.Path) {
				t.Fatalf("Check(%q) allowed dot segments", raw)
			}
		}
		// Whatever the URL, credentials and query never show in a refusal.
		u, perr := url.Parse(raw)
		if perr != nil || strings.Contains(raw, "s3cr3t") {
			return
		}
		u.User = url.UserPassword("user", "s3cr3t-pw")
		u.RawQuery = "token=s3cr3t-q"
		u.Host = "evil.example" // refused, so there is a message to read
		if err := p.Check(u.String()); err == nil {
			t.Fatalf("Check(%q) allowed evil.example", u)
		} else if strings.Contains(err.Error(), "s3cr3t") {
			t.Fatalf("Check(%q) = %v shows a secret", u, err)
		}
	})
}
