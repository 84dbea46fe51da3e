package push

//lint:file-ignore SA1019 apns2.Client is built on x/net/http2.Transport; its TLS and ping settings live there.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/redact"
)

// apnsCred is an APNs credential as read from its files: a token-auth key
// or a client certificate.
type apnsCred struct {
	key    *ecdsa.PrivateKey // token auth
	keyID  string
	teamID string
	cert   *tls.Certificate // certificate auth
}

// loadAPNsCred parses an APNs credential from the contents of its files
// (files[0] the .p8 key or the certificate, files[1] the certificate's
// password, if any). It is the validation a rotated credential must pass.
func loadAPNsCred(p *apps.APNs, files [][]byte, now time.Time) (apnsCred, error) {
	if p.KeyFile != "" {
		key, err := token.AuthKeyFromBytes(files[0])
		if err != nil {
			return apnsCred{}, fmt.Errorf("load APNs key %s (an AuthKey_*.p8 file): %w", p.KeyFile, err)
		}
		return apnsCred{key: key, keyID: p.KeyID, teamID: p.TeamID}, nil
	}
	var password string
	if len(files) > 1 {
		password = string(bytes.TrimRight(files[1], "\r\n"))
	}
	var (
		cert tls.Certificate
		err  error
	)
	if strings.EqualFold(filepath.Ext(p.CertFile), ".p12") {
		cert, err = certificate.FromP12Bytes(files[0], password)
	} else {
		cert, err = certificate.FromPemBytes(files[0], password)
	}
	if err != nil {
		return apnsCred{}, fmt.Errorf("load APNs certificate %s (check its password file): %w", p.CertFile, err)
	}
	if len(cert.Certificate) == 0 {
		return apnsCred{}, fmt.Errorf("load APNs certificate %s: no certificate in the file", p.CertFile)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return apnsCred{}, fmt.Errorf("parse APNs certificate %s: %w", p.CertFile, err)
	}
	if now.After(leaf.NotAfter) {
		return apnsCred{}, fmt.Errorf("APNs certificate %s expired on %s", p.CertFile, leaf.NotAfter.Format(time.DateOnly))
	}
	return apnsCred{cert: &cert}, nil
}

// apnsClient is one long-lived client for one credential and one host
// (environment). Its Host is set once here and never changed.
type apnsClient struct {
	client    *apns2.Client
	transport *http2.Transport
	signer    *jwtSigner // nil with certificate auth
}

// newAPNsClient builds the client of one credential and host; signer
// signs its JWTs (nil with certificate auth).
func newAPNsClient(cred apnsCred, host string, tlsCfg *tls.Config, conns *connCounter, signer *jwtSigner) *apnsClient {
	a := &apnsClient{signer: signer}
	tc := tlsCfg.Clone()
	if cred.cert != nil {
		tc.Certificates = []tls.Certificate{*cred.cert}
	}
	a.transport = &http2.Transport{
		TLSClientConfig: tc,
		DialTLSContext:  conns.dialTLS,
		ReadIdleTimeout: 15 * time.Second,
		PingTimeout:     15 * time.Second,
		// StrictMaxConcurrentStreams stays false: when a connection is
		// full the transport opens another instead of stalling.
	}
	a.client = &apns2.Client{Host: host, HTTPClient: &http.Client{Transport: &apnsTransport{base: a.transport}}}
	if signer != nil {
		// apns2 reads the bearer from Token. Without an AuthKey it can
		// never re-sign on its own clock; jwtSigner sets Bearer.
		a.client.Token = &token.Token{KeyID: cred.keyID, TeamID: cred.teamID}
	}
	if cred.cert != nil {
		a.client.Certificate = *cred.cert
	}
	return a
}

// sendAPNs pushes the APNs messages of idx through slot sl with at most
// APNSConcurrency in flight; topics[i] is message i's apns-topic, its
// app's. Each push takes the slot's current client as it starts, so a
// rotated credential is used from the next push on, while pushes in
// flight finish on the client they started on.
func (s *Sender) sendAPNs(ctx context.Context, sl *slot, msgs []Message, topics []string, idx []int, results []Result, now time.Time, done func(int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(s.cfg.APNSConcurrency, len(idx)) {
		wg.Go(func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= len(idx) {
					return
				}
				i := idx[k]
				g := sl.acquire()
				g.apns.push(ctx, s, &msgs[i], topics[i], &results[i], now)
				g.release()
				done(i)
			}
		})
	}
	wg.Wait()
}

func (a *apnsClient) push(ctx context.Context, s *Sender, m *Message, topic string, r *Result, now time.Time) {
	fl := newFields(m, s.cfg.SyncTask, now)
	ttl := m.TTL
	if ttl <= 0 {
		ttl = s.cfg.DefaultTTL
	}
	n, err := apnsNotification(m, &fl, topic, ttl, now)
	if err != nil {
		s.refuse(r, m, "InvalidMessage", fmt.Errorf("push %s: %w", m.ID, err))
		return
	}
	if err := ctx.Err(); err != nil {
		s.finish(ctx, r, m, classifyTransport(err), fmt.Errorf("apns push: %w", err))
		return
	}
	if a.signer != nil {
		if err := a.signer.install(a.client.Token); err != nil {
			s.finish(ctx, r, m, outcome{action: PauseProvider, reason: "SignProviderToken"}, err)
			return
		}
	}
	var meta respMeta
	pctx, cancel := context.WithTimeout(context.WithValue(ctx, respMetaKey{}, &meta), s.cfg.SendTimeout)
	start := time.Now()
	resp, err := a.client.PushWithContext(pctx, n)
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

func (a *apnsClient) close() { a.transport.CloseIdleConnections() }

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
