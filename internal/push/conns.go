package push

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// connCounter counts the provider connections a Sender dials and how many
// are open: nudge_push_connections_opened_total and
// nudge_push_connections_open, by provider and credential. A sender that reuses its
// connections keeps the first flat after warm-up.
type connCounter struct {
	opened prometheus.Counter
	open   prometheus.Gauge
	dialer net.Dialer

	mu sync.Mutex
	to map[string]int // dialed address -> connections open now
}

// conns counts the connections of the clients of one credential.
func (m *metrics) conns(p Provider, credential string) *connCounter {
	return &connCounter{
		opened: m.connsOpened.WithLabelValues(string(p), credential),
		open:   m.connsOpen.WithLabelValues(string(p), credential),
		dialer: net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second},
		to:     map[string]int{},
	}
}

// dial opens a TCP connection and counts it until it is closed.
func (c *connCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := c.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c.opened.Inc()
	c.open.Inc()
	c.mu.Lock()
	c.to[addr]++
	c.mu.Unlock()
	return &countedConn{Conn: conn, c: c, addr: addr}, nil
}

// dialTLS is dial plus the TLS handshake, for x/net/http2's Transport.
func (c *connCounter) dialTLS(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
	conn, err := c.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
	}
	return tc, nil
}

// countedConn leaves the open count once, on its first Close.
type countedConn struct {
	net.Conn
	c    *connCounter
	addr string
	once sync.Once
}

// Close implements net.Conn.
func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.c.open.Dec()
		c.c.mu.Lock()
		if c.c.to[c.addr]--; c.c.to[c.addr] <= 0 {
			delete(c.c.to, c.addr)
		}
		c.c.mu.Unlock()
	})
	return c.Conn.Close()
}

// addrOf is the address dial sees for a request to u.
func addrOf(u *url.URL) string {
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return u.Host
}

// openTo reports whether a connection to addr is open.
func (c *connCounter) openTo(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.to[addr] > 0
}

// firstAlone lets one request to a host go alone until one has come back
// while a connection to the host is open. net/http dials a connection for
// every request that finds none idle, and learns only after the TLS
// handshake that the endpoint speaks HTTP/2 and one connection would have
// carried them all: a cold burst of 4 SendEach calls of 50 requests each
// dialed 200 to 300 connections to keep 1 to 3. Once a request has come
// back, the others find its HTTP/2 connection (or, with an HTTP/1.1
// endpoint, dial their own as before).
//
// Below Google's auth transport, it also sees each request's bearer and
// counts the OAuth tokens fetched (fetches): one per new bearer.
type firstAlone struct {
	base    http.RoundTripper
	conns   *connCounter
	fetches prometheus.Counter
	mu      sync.Mutex // held by the request that goes alone

	bearerMu sync.Mutex
	bearer   string

	warmMu sync.Mutex
	warm   map[string]bool // address -> a request to it came back
}

func (f *firstAlone) isWarm(addr string) bool {
	f.warmMu.Lock()
	w := f.warm[addr]
	f.warmMu.Unlock()
	return w && f.conns.openTo(addr)
}

// RoundTrip implements http.RoundTripper.
func (f *firstAlone) RoundTrip(req *http.Request) (*http.Response, error) {
	if b := req.Header.Get("Authorization"); b != "" && f.fetches != nil {
		f.bearerMu.Lock()
		if b != f.bearer {
			f.bearer = b
			f.fetches.Inc()
		}
		f.bearerMu.Unlock()
	}
	addr := addrOf(req.URL)
	if f.isWarm(addr) {
		return f.base.RoundTrip(req)
	}
	f.mu.Lock()
	if f.isWarm(addr) {
		f.mu.Unlock()
		return f.base.RoundTrip(req)
	}
	defer f.mu.Unlock()
	resp, err := f.base.RoundTrip(req)
	if err == nil {
		f.warmMu.Lock()
		if f.warm == nil {
			f.warm = map[string]bool{}
		}
		f.warm[addr] = true
		f.warmMu.Unlock()
	}
	return resp, err
}
