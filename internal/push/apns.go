package push

//lint:file-ignore SA1019 apns2.Client is built on x/net/http2.Transport; its TLS and ping settings live there.

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
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
	credential    string // key id, or "cert-" and a digest of the certificate
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
		a.credential = cfg.APNSKeyID
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
		if len(cert.Certificate) > 0 {
			sum := sha256.Sum256(cert.Certificate[0])
			a.credential = "cert-" + hex.EncodeToString(sum[:6])
		}
	}
	conns := m.conns(APNs)
	client := func(host string) *apns2.Client {
		tr := &http2.Transport{
			TLSClientConfig: tc.Clone(),
			DialTLSContext:  conns.dialTLS,
			ReadIdleTimeout: 15 * time.Second,
			PingTimeout:     15 * time.Second,
			// StrictMaxConcurrentStreams stays false: when a connection is
			// full the transport opens another instead of stalling.
		}
		a.transports = append(a.transports, tr)
		c := &apns2.Client{Host: host, HTTPClient: &http.Client{Transport: &apnsTransport{base: tr}}}
		if a.signer != nil {
			// apns2 reads the bearer from Token. Without an AuthKey it can
			// never re-sign on its own clock; jwtSigner sets Bearer.
			c.Token = &token.Token{KeyID: cfg.APNSKeyID, TeamID: cfg.APNSTeamID}
		}
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
func (a *apnsSender) send(ctx context.Context, s *Sender, msgs []Message, idx []int, results []Result, now time.Time, done func(int)) {
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
				done(i)
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
	if a.signer != nil {
		if err := a.signer.install(client.Token); err != nil {
			s.finish(ctx, r, m, outcome{action: PauseProvider, reason: "SignProviderToken"}, err)
			return
		}
	}
	var meta respMeta
	pctx, cancel := context.WithTimeout(context.WithValue(ctx, respMetaKey{}, &meta), s.cfg.SendTimeout)
	start := time.Now()
	resp, err := client.PushWithContext(pctx, n)
	cancel()
	s.m.apnsLatency.Observe(time.Since(start).Seconds())
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

// apnsTransport captures the Retry-After header, which apns2's Response
// does not expose, into the request's respMeta.
type apnsTransport struct {
	base http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *apnsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
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

// install puts the current bearer into an apns2 client's Token. apns2
// only re-signs when its own (real) clock says the token is 50 minutes
// old and it has an AuthKey; it has none, so the bearer set here is used.
func (j *jwtSigner) install(t *token.Token) error {
	bearer, err := j.token()
	if err != nil {
		return err
	}
	t.Lock()
	if t.Bearer != bearer {
		t.Bearer = bearer
		t.IssuedAt = time.Now().Unix()
	}
	t.Unlock()
	return nil
}

// expire asks for a new token (after ExpiredProviderToken) as soon as the
// current one is at least minJWTAge old.
func (j *jwtSigner) expire() {
	j.mu.Lock()
	j.expired = true
	j.mu.Unlock()
}
