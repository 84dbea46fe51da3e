package push

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"

	"github.com/nudge-dev/nudge/internal/redact"
)

// apnsSender holds one long-lived client per environment. Their Host is
// set once here and never changed.
type apnsSender struct {
	prod, sandbox *apns2.Client
	transports    []*http2.Transport
	topic         string
	conc          int
	signer        *jwtSigner // nil with certificate auth
}

func newAPNsSender(cfg Config, tlsCfg *tls.Config, now func() time.Time, m *metrics) (*apnsSender, error) {
	a := &apnsSender{topic: cfg.APNSTopic, conc: cfg.APNSConcurrency}
	tc := tlsCfg.Clone()
	if cfg.APNSKeyFile != "" {
		key, err := token.AuthKeyFromFile(cfg.APNSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load NUDGE_APNS_KEY_FILE %s (an AuthKey_*.p8 file): %w", cfg.APNSKeyFile, err)
		}
		a.signer = &jwtSigner{key: key, keyID: cfg.APNSKeyID, teamID: cfg.APNSTeamID, refresh: cfg.APNSTokenRefresh, now: now, rotations: m.rotations}
	} else {
		var (
			cert tls.Certificate
			err  error
		)
		if strings.EqualFold(filepath.Ext(cfg.APNSCertFile), ".p12") {
			cert, err = certificate.FromP12File(cfg.APNSCertFile, cfg.APNSCertPassword)
		} else {
			cert, err = certificate.FromPemFile(cfg.APNSCertFile, cfg.APNSCertPassword)
		}
		if err != nil {
			return nil, fmt.Errorf("load NUDGE_APNS_CERT_FILE %s (check NUDGE_APNS_CERT_PASSWORD): %w", cfg.APNSCertFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	client := func(host string) *apns2.Client {
		tr := &http2.Transport{
			TLSClientConfig: tc.Clone(),
			ReadIdleTimeout: 15 * time.Second,
			PingTimeout:     15 * time.Second,
			// StrictMaxConcurrentStreams stays false: when a connection is
			// full the transport opens another instead of stalling.
		}
		a.transports = append(a.transports, tr)
		var rt http.RoundTripper = &apnsTransport{base: tr, signer: a.signer}
		c := &apns2.Client{Host: host, HTTPClient: &http.Client{Transport: rt}}
		if len(tc.Certificates) > 0 {
			c.Certificate = tc.Certificates[0]
		}
		return c
	}
	a.prod = client(cmpOr(cfg.APNSHost, apns2.HostProduction))
	a.sandbox = client(cmpOr(cfg.APNSSandboxHost, apns2.HostDevelopment))
	return a, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// send pushes the APNs messages of idx with at most a.conc in flight.
func (a *apnsSender) send(ctx context.Context, s *Sender, msgs []Message, idx []int, results []Result, now time.Time) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(a.conc, len(idx)) {
		wg.Go(func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= len(idx) {
					return
				}
				i := idx[k]
				a.push(ctx, s, &msgs[i], &results[i], now)
			}
		})
	}
	wg.Wait()
}

func (a *apnsSender) push(ctx context.Context, s *Sender, m *Message, r *Result, now time.Time) {
	fl := newFields(m, s.cfg.SyncTask, now)
	ttl := m.TTL
	if ttl <= 0 {
		ttl = s.cfg.DefaultTTL
	}
	n, err := apnsNotification(m, &fl, a.topic, ttl, now)
	if err != nil {
		s.refuse(r, m, "InvalidMessage", fmt.Errorf("push %s: %w", m.ID, err))
		return
	}
	if err := ctx.Err(); err != nil {
		s.finish(ctx, r, m, classifyTransport(err), fmt.Errorf("apns push: %w", err))
		return
	}
	client := a.prod
	if m.Environment == Sandbox {
		client = a.sandbox
	}
	var meta respMeta
	pctx, cancel := context.WithTimeout(context.WithValue(ctx, respMetaKey{}, &meta), s.cfg.SendTimeout)
	start := time.Now()
	resp, err := client.PushWithContext(pctx, n)
	cancel()
	s.m.latency.WithLabelValues(string(APNs)).Observe(time.Since(start).Seconds())
	if err != nil {
		s.finish(ctx, r, m, classifyTransport(err), fmt.Errorf("apns push to %s: %w", redact.Token(m.Token), err))
		return
	}
	o := classifyAPNs(resp.StatusCode, resp.Reason, parseRetryAfter(meta.retryAfter, s.now()))
	var perr error
	if o.action != Delivered {
		perr = &RejectedError{Provider: APNs, Status: resp.StatusCode, Reason: resp.Reason}
		if !resp.Timestamp.IsZero() {
			r.UnregisteredAt = resp.Timestamp.Time
		}
		if resp.Reason == apns2.ReasonExpiredProviderToken && a.signer != nil {
			a.signer.expire()
		}
	}
	s.finish(ctx, r, m, o, perr)
}

func (a *apnsSender) close() {
	for _, t := range a.transports {
		t.CloseIdleConnections()
	}
}

// respMeta carries response headers apns2 does not expose (Retry-After)
// from the transport back to the push.
type respMeta struct{ retryAfter string }

type respMetaKey struct{}

// apnsTransport adds the provider JWT to each request and captures the
// Retry-After header. apns2's own token handling cannot take a clock, so
// the client is built without a Token and auth happens here.
type apnsTransport struct {
	base   http.RoundTripper
	signer *jwtSigner
}

// RoundTrip implements http.RoundTripper.
func (t *apnsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.signer != nil {
		bearer, err := t.signer.token()
		if err != nil {
			return nil, err
		}
		r2 := *req
		r2.Header = req.Header.Clone()
		r2.Header.Set("authorization", "bearer "+bearer)
		req = &r2
	}
	resp, err := t.base.RoundTrip(req)
	if err == nil {
		if meta, ok := req.Context().Value(respMetaKey{}).(*respMeta); ok {
			meta.retryAfter = resp.Header.Get("Retry-After")
		}
	}
	return resp, err
}

// jwtSigner signs the APNs provider token (ES256, kid, iss, iat) and
// reuses it for refresh, measured on the injected clock.
type jwtSigner struct {
	key       *ecdsa.PrivateKey
	keyID     string
	teamID    string
	refresh   time.Duration
	now       func() time.Time
	rotations interface{ Inc() }

	mu      sync.Mutex
	bearer  string
	issued  time.Time
	expired bool
}

// minJWTAge is how long a JWT is kept even after APNs calls it expired:
// APNs answers TooManyProviderTokenUpdates to faster rotation.
const minJWTAge = 20 * time.Minute

func (j *jwtSigner) token() (string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.now()
	age := now.Sub(j.issued)
	if j.bearer != "" && age < j.refresh && (!j.expired || age < minJWTAge) {
		return j.bearer, nil
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": j.teamID, "iat": now.Unix()})
	t.Header["kid"] = j.keyID
	s, err := t.SignedString(j.key)
	if err != nil {
		return "", fmt.Errorf("sign apns provider token: %w", err)
	}
	j.bearer, j.issued, j.expired = s, now, false
	j.rotations.Inc()
	return s, nil
}

// expire asks for a new token (after ExpiredProviderToken) as soon as the
// current one is at least minJWTAge old.
func (j *jwtSigner) expire() {
	j.mu.Lock()
	j.expired = true
	j.mu.Unlock()
}
