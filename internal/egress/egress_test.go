package egress_test

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
	"strings"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/egress"
)

// mapResolver is the test resolver: each name resolves to the addresses
// listed for it, and unknown names fail as NXDOMAIN would.
type mapResolver map[string][]string

func (m mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	list, ok := m[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]netip.Addr, len(list))
	for i, s := range list {
		out[i] = netip.MustParseAddr(s)
	}
	return out, nil
}

func mustAllow(t *testing.T, s string) []netip.Prefix {
	t.Helper()
	p, err := egress.ParseAllowNets(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRefusedMatrix fetches every internal address form, directly, by a
// DNS name resolving to it, and by a redirect from an admitted server,
// and expects ErrRefused with a message naming the address and the
// setting. The admitted server itself is reached (the control case), so a
// refusal is the policy's, not a dead address.
func TestRefusedMatrix(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if to := r.URL.Query().Get("to"); to != "" {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	res := mapResolver{
		"feeds.example":    {"127.0.0.1"}, // the admitted origin (allowlisted below)
		"metadata.example": {"169.254.169.254"},
		"loop.example":     {"127.0.0.2"},
		"loop6.example":    {"::1"},
		"private.example":  {"10.1.2.3"},
		"private2.example": {"192.168.0.10"},
		"ula.example":      {"fd00::5"},
		"mapped.example":   {"::ffff:10.0.0.1"},
		"mixed.example":    {"172.16.5.4", "127.0.0.3"},
		"mcast.example":    {"224.0.0.251"},
	}
	p := egress.New(mustAllow(t, "127.0.0.1/32"))
	client := p.Client(egress.Config{Resolver: res, DialTimeout: 2 * time.Second})
	client.Timeout = 5 * time.Second

	get := func(raw string) error {
		resp, err := client.Get(raw)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	// Control: the allowlisted origin answers, by address and by name.
	for _, ok := range []string{srv.URL, "http://feeds.example:" + port + "/"} {
		if err := get(ok); err != nil {
			t.Fatalf("GET %s (allowlisted): %v", ok, err)
		}
	}

	cases := []struct {
		host   string // as it appears in the URL
		reason string // in the error
	}{
		{"127.0.0.2", "loopback"},
		{"[::1]", "loopback"},
		{"[::ffff:127.0.0.2]", "loopback"},
		{"2130706434", "loopback"}, // decimal 127.0.0.2
		{"0177.0.0.2", "loopback"}, // octal
		{"0x7f.0.0.2", "loopback"}, // hex
		{"127.2", "loopback"},      // short form: 127.0.0.2
		{"169.254.169.254", "link-local"},
		{"2852039166", "link-local"}, // decimal 169.254.169.254
		{"[fe80::1%25eth0]", "link-local"},
		{"10.0.0.1", "private"},
		{"012.0.0.1", "private"}, // octal 10.0.0.1
		{"172.16.0.1", "private"},
		{"192.168.1.1", "private"},
		{"[fc00::1]", "private"},
		{"[::ffff:169.254.169.254]", "link-local"},
		{"[64:ff9b::a9fe:a9fe]", "link-local"}, // NAT64 of 169.254.169.254
		{"[2002:7f00:1::]", "loopback"},        // 6to4 of 127.0.0.1
		{"0.0.0.0", "unspecified"},
		{"[::]", "unspecified"},
		{"224.0.0.1", "multicast"},
		{"[ff02::1]", "multicast"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"metadata.example", "link-local"},
		{"loop.example", "loopback"},
		{"loop6.example", "loopback"},
		{"private.example", "private"},
		{"private2.example", "private"},
		{"ula.example", "private"},
		{"mapped.example", "private"},
		{"mixed.example", "private"},
		{"mcast.example", "multicast"},
	}
	for _, c := range cases {
		direct := "http://" + c.host + ":" + port + "/latest/meta-data"
		redirect := srv.URL + "/?to=" + url.QueryEscape(direct)
		viaName := "http://feeds.example:" + port + "/?to=" + url.QueryEscape(direct)
		for _, u := range []string{direct, redirect, viaName} {
			t.Run(u, func(t *testing.T) {
				err := get(u)
				if !errors.Is(err, egress.ErrRefused) {
					t.Fatalf("GET %s: err %v, want egress.ErrRefused", u, err)
				}
				msg := err.Error()
				if !strings.Contains(msg, c.reason) || !strings.Contains(msg, "NUDGE_FEED_ALLOW_NETS") {
					t.Fatalf("GET %s: error %q does not say %q and name NUDGE_FEED_ALLOW_NETS", u, msg, c.reason)
				}
			})
		}
	}
	// Redirects to other schemes and to user info are refused as well.
	for _, to := range []string{"file:///etc/passwd", "http://user:pw@feeds.example:" + port + "/"} {
		if err := get(srv.URL + "/?to=" + url.QueryEscape(to)); !errors.Is(err, egress.ErrRefused) {
			t.Fatalf("redirect to %s: err %v, want egress.ErrRefused", to, err)
		}
	}
}

// TestAllowlistAdmitsExactlyItsCIDRs checks the boundaries of each
// allowed network, including the IPv4-mapped form of an allowed address.
func TestAllowlistAdmitsExactlyItsCIDRs(t *testing.T) {
	t.Parallel()
	p := egress.New(mustAllow(t, "127.0.0.1/32, 10.1.0.0/16 fd12::/64"))
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1", true}, {"::ffff:127.0.0.1", true}, {"127.0.0.2", false}, {"126.255.255.255", true},
		{"10.1.0.0", true}, {"10.1.255.255", true}, {"10.0.255.255", false}, {"10.2.0.0", false},
		{"fd12::1", true}, {"fd12:0:0:1::1", false}, {"::1", false}, {"169.254.169.254", false},
		{"93.184.216.34", true}, {"2606:2800:220:1:248:1893:25c8:1946", true}, // public: always admitted
	} {
		err := p.Check("", netip.MustParseAddr(c.addr))
		if (err == nil) != c.ok {
			t.Errorf("Check(%s) = %v, want admitted=%v", c.addr, err, c.ok)
		}
	}
}

// TestControlRefusesAtConnectTime dials a real loopback listener with a
// plain net.Dialer whose Control is the policy's: the address the socket
// connects to is checked, whatever resolved it.
func TestControlRefusesAtConnectTime(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	refused := &net.Dialer{Control: egress.New(nil).Control}
	if c, err := refused.Dial("tcp", ln.Addr().String()); !errors.Is(err, egress.ErrRefused) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial %s without allowlist: %v, want ErrRefused", ln.Addr(), err)
	}
	admitted := &net.Dialer{Control: egress.New(mustAllow(t, "127.0.0.1/32")).Control}
	c, err := admitted.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial %s with 127.0.0.1/32 allowed: %v", ln.Addr(), err)
	}
	c.Close()
}

// flipResolver answers first with first, then always with then: a DNS
// rebinding attacker's name.
type flipResolver struct {
	calls       chan struct{}
	first, then netip.Addr
}

func (f *flipResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	select {
	case f.calls <- struct{}{}:
		return []netip.Addr{f.first}, nil
	default:
		return []netip.Addr{f.then}, nil
	}
}

// TestRebindingIsCheckedOnEveryConnection: a name that resolved to an
// admitted address for the first connection and to the metadata address
// for the next is refused on the next connection.
func TestRebindingIsCheckedOnEveryConnection(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close") // every request dials again
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	res := &flipResolver{calls: make(chan struct{}, 1), first: netip.MustParseAddr("127.0.0.1"), then: netip.MustParseAddr("169.254.169.254")}
	client := egress.New(mustAllow(t, "127.0.0.1/32")).Client(egress.Config{Resolver: res})
	u := "http://rebind.example:" + port + "/"
	resp, err := client.Get(u)
	if err != nil {
		t.Fatalf("first GET: %v", err)
	}
	resp.Body.Close()
	if _, err := client.Get(u); !errors.Is(err, egress.ErrRefused) || !strings.Contains(err.Error(), "169.254.169.254") {
		t.Fatalf("second GET after rebinding: %v, want a refusal naming 169.254.169.254", err)
	}
}

func TestParseAllowNets(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"10.0.0.1/8", "nope", "10.0.0.0/33"} {
		if _, err := egress.ParseAllowNets(bad); err == nil || !strings.Contains(err.Error(), "NUDGE_FEED_ALLOW_NETS") {
			t.Errorf("ParseAllowNets(%q) = %v, want an error naming NUDGE_FEED_ALLOW_NETS", bad, err)
		}
	}
	got, err := egress.ParseAllowNets("127.0.0.1, ::1 10.0.0.0/8")
	if err != nil || len(got) != 3 || got[0].String() != "127.0.0.1/32" || got[1].String() != "::1/128" {
		t.Fatalf("ParseAllowNets = %v, %v", got, err)
	}
}

// TestCheckURL is what catalogue validation uses: no DNS, literal forms
// decoded.
func TestCheckURL(t *testing.T) {
	t.Parallel()
	p := egress.New(nil)
	for raw, ok := range map[string]bool{
		"https://news.example/feed.xml":    true,
		"http://93.184.216.34/rss":         true,
		"http://1.2.3.4.5/":                true, // not an address: a (bad) name, checked at dial
		"http://0x7f000001/":               false,
		"http://user:pw@news.example/feed": false,
		"ftp://news.example/feed":          false,
		"http://[::1]:8080/":               false,
		"http://127.0.0.1.nip.io/":         true, // a name: resolved and refused at dial
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.CheckURL(u); (err == nil) != ok {
			t.Errorf("CheckURL(%s) = %v, want ok=%v", raw, err, ok)
		}
	}
}
