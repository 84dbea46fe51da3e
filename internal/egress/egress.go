// Package egress is nudge's policy for outbound connections to addresses
// that a user chose, which today means feed URLs: an admin key registers a
// URL, the dispatcher fetches it, and the unauthenticated items route
// publishes what came back. Without a policy that is a server-side request
// forgery channel into loopback services, the cloud metadata endpoint
// (169.254.169.254) and the private network.
//
// The policy is enforced where it cannot be bypassed: at connect time. A
// Policy's Client resolves the host itself (through a Resolver, so tests
// can make a name resolve anywhere), checks every resolved address and
// dials only the checked address; the dialer's Control re-checks the
// address the socket actually connects to. DNS rebinding (a name that
// resolves to a public address when the URL is saved and to 127.0.0.1 when
// it is fetched) and redirects to internal hosts therefore hit the same
// check as the first request. CheckRedirect refuses redirects to other
// schemes, to URLs with user info and to literal blocked addresses before
// any connection is tried, so the error says why.
//
// Refused: loopback, private (RFC 1918, fc00::/7), link-local,
// multicast, unspecified, carrier-grade NAT, benchmarking and reserved
// ranges, and IPv6 forms that embed such an IPv4 address (IPv4-mapped,
// NAT64, 6to4). Hosts written as legacy numeric IPv4 forms (decimal
// "2130706433", octal "0177.0.0.1", hex "0x7f.1", short "127.1") are
// decoded the way inet_aton would and checked as that address. An
// allowlist of CIDRs (NUDGE_FEED_ALLOW_NETS) admits exactly the addresses
// it contains; the devstack and the tests allow 127.0.0.1/32 for their
// local feed servers.
package egress

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
)

// ErrRefused is the sentinel of every address the policy refuses.
var ErrRefused = errors.New("egress refused")

// RefusedError names a refused address and why it is refused.
type RefusedError struct {
	Host   string     // the host as written, if known
	Addr   netip.Addr // the address that was refused
	Reason string     // e.g. "loopback", "link-local"
}

// Error says which address is refused, why, and which setting admits it.
func (e *RefusedError) Error() string {
	host := ""
	if e.Host != "" && e.Host != e.Addr.String() {
		host = e.Host + " is "
	}
	return fmt.Sprintf("%s%s: %s address refused (allow it with NUDGE_FEED_ALLOW_NETS)", host, e.Addr, e.Reason)
}

// Unwrap makes errors.Is(err, ErrRefused) hold.
func (e *RefusedError) Unwrap() error { return ErrRefused }

// Resolver looks up the addresses of a host name. *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Policy decides which addresses outbound connections may reach.
type Policy struct {
	allow []netip.Prefix
}

// ParseAllowNets parses a comma- or space-separated list of CIDRs (a bare
// address means just that address). The error names NUDGE_FEED_ALLOW_NETS.
func ParseAllowNets(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if p, err := netip.ParsePrefix(f); err == nil {
			if p != p.Masked() {
				return nil, fmt.Errorf("NUDGE_FEED_ALLOW_NETS: %q has host bits set: write %s", f, p.Masked())
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("NUDGE_FEED_ALLOW_NETS: %q: want a CIDR such as 10.1.0.0/16 or 127.0.0.1/32", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// New returns a Policy that refuses internal addresses except those in allow.
func New(allow []netip.Prefix) *Policy {
	p := &Policy{}
	for _, a := range allow {
		if a.Addr().Is4In6() {
			a = netip.PrefixFrom(a.Addr().Unmap(), max(a.Bits()-96, 0))
		}
		p.allow = append(p.allow, a)
	}
	return p
}

// special are the ranges refused besides those netip classifies itself.
var special = []struct {
	prefix netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("100::/64"), "discard"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
}

// classify returns why a is refused, or "" for a public address.
func classify(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return "multicast"
	case a.IsPrivate():
		return "private"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "broadcast"
	}
	for _, s := range special {
		if s.prefix.Contains(a) {
			return s.reason
		}
	}
	return ""
}

// embeddedV4 returns the IPv4 address an IPv6 transition form carries:
// NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
func embeddedV4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	switch {
	case netip.MustParsePrefix("64:ff9b::/96").Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case netip.MustParsePrefix("2002::/16").Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// Check returns a *RefusedError (wrapping ErrRefused) when a is refused.
// host is the name as written, for the message; it may be empty.
func (p *Policy) Check(host string, a netip.Addr) error {
	a = a.Unmap().WithZone("")
	for _, n := range p.allow {
		if n.Contains(a) {
			return nil
		}
	}
	if r := classify(a); r != "" {
		return &RefusedError{Host: host, Addr: a, Reason: r}
	}
	if v4, ok := embeddedV4(a); ok {
		if r := classify(v4); r != "" {
			return &RefusedError{Host: host, Addr: a, Reason: r + " (embeds " + v4.String() + ")"}
		}
	}
	return nil
}

// Control is a net.Dialer Control function: it refuses to connect to an
// address the policy refuses. It sees the address the socket is about to
// connect to, after every resolution.
func (p *Policy) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("egress: connect to %s: %w", address, ErrRefused)
	}
	return p.Check("", ap.Addr())
}

// literalAddr returns the address a URL host denotes without DNS: a
// literal IPv4 or IPv6 address, or a legacy numeric IPv4 form.
func literalAddr(host string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, true
	}
	return legacyIPv4(host)
}

// legacyIPv4 decodes the numeric IPv4 forms that inet_aton (and so curl,
// browsers and many resolvers) accept: one to four parts, each decimal,
// octal (leading 0) or hex (0x), the last part filling the remaining
// bytes. "2130706433", "0x7f000001", "0177.0.0.1" and "127.1" are all
// 127.0.0.1.
func legacyIPv4(host string) (netip.Addr, bool) {
	parts := strings.Split(host, ".")
	if len(parts) > 4 || host == "" {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, s := range parts {
		if s == "" {
			return netip.Addr{}, false
		}
		v, err := strconv.ParseUint(s, 0, 32) // base 0: 0x hex, leading-0 octal, else decimal
		if err != nil || strings.Contains(s, "_") || strings.HasPrefix(strings.ToLower(s), "0b") || strings.HasPrefix(strings.ToLower(s), "0o") {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 255 {
			return netip.Addr{}, false
		}
		n |= v << (8 * (3 - i))
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*(4-len(vals)+1)) {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// CheckURL checks what can be checked of a URL without DNS: an http or
// https scheme, no user info, and a host that, if it is an address in any
// notation, is not refused. Catalogue validation and CheckRedirect use it.
func (p *Policy) CheckURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("egress: scheme %q: want http or https: %w", u.Scheme, ErrRefused)
	}
	if u.User != nil {
		return fmt.Errorf("egress: URL with user info: %w", ErrRefused)
	}
	if a, ok := literalAddr(u.Hostname()); ok {
		return p.Check(u.Hostname(), a)
	}
	return nil
}

// CheckRedirect is an http.Client CheckRedirect that applies CheckURL to
// every redirect target. The connection to it is checked again at dial.
func (p *Policy) CheckRedirect(req *http.Request, _ []*http.Request) error {
	if err := p.CheckURL(req.URL); err != nil {
		return fmt.Errorf("redirect to %s: %w", req.URL.Redacted(), err)
	}
	return nil
}

// Config configures the client a Policy builds.
type Config struct {
	// Resolver resolves host names; default net.DefaultResolver. Tests
	// pass one that maps names to chosen addresses.
	Resolver Resolver
	// DialTimeout bounds one connection attempt; default 10s.
	DialTimeout time.Duration
	// Dial connects to a checked address; default a net.Dialer with the
	// policy's Control. Tests may wrap it; it must not resolve names.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// dialContext returns the transport's dial function: it resolves the
// host through the resolver, checks every address, and connects to the
// first permitted one that answers. A host whose every address is refused
// fails with the first *RefusedError.
func (p *Policy) dialContext(cfg Config) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, fmt.Errorf("egress: dial %s: %w", address, err)
		}
		var addrs []netip.Addr
		if a, ok := literalAddr(host); ok {
			addrs = []netip.Addr{a}
		} else {
			addrs, err = cfg.Resolver.LookupNetIP(ctx, "ip", host)
			if err != nil {
				return nil, fmt.Errorf("egress: resolve %s: %w", host, err)
			}
		}
		var firstErr error
		for _, a := range addrs {
			if err := p.Check(host, a); err != nil {
				firstErr = cmpErr(firstErr, err)
				continue
			}
			c, err := cfg.Dial(ctx, network, netip.AddrPortFrom(a.Unmap(), mustPort(port)).String())
			if err == nil {
				return c, nil
			}
			firstErr = cmpErr(firstErr, err)
		}
		if firstErr == nil {
			firstErr = fmt.Errorf("egress: %s resolves to no address", host)
		}
		return nil, firstErr
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func mustPort(s string) uint16 {
	n, _ := strconv.ParseUint(s, 10, 16)
	return uint16(n)
}

// Client returns an HTTP client whose every connection goes through the
// policy: names resolved and checked by the policy, the socket's address
// checked again by the dialer's Control, redirects checked by
// CheckRedirect, no proxy from the environment (a proxy would connect on
// our behalf, unchecked).
func (p *Policy) Client(cfg Config) *http.Client {
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second, Control: p.Control}
		cfg.Dial = d.DialContext
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = p.dialContext(cfg)
	return &http.Client{Transport: tr, CheckRedirect: p.CheckRedirect}
}
