package push

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/redact"
)

// fcmBatch is SendEach's limit.
const fcmBatch = 500

const fcmScope = "https://www.googleapis.com/auth/firebase.messaging"

// fcmClient sends through one firebase messaging client: one service
// account, project and endpoint.
type fcmClient struct {
	project string
	client  *messaging.Client
	base    *http.Transport
	sem     chan struct{}
}

// serviceAccount holds the fields of a service-account JSON that the
// validation of a (rotated) FCM credential checks.
type serviceAccount struct {
	Type        string `json:"type"`
	ProjectID   string `json:"project_id"`
	ClientEmail string `json:"client_email"`
	PrivateKey  string `json:"private_key"`
}

// loadServiceAccount checks a service-account JSON: its type, its client
// email, that its private key parses, and a project (p.ProjectID or the
// file's project_id). It returns the project.
func loadServiceAccount(p *apps.FCM, raw []byte) (string, error) {
	var sa serviceAccount
	if err := json.Unmarshal(raw, &sa); err != nil {
		return "", fmt.Errorf("parse FCM credentials %s as service-account JSON: %w", p.CredentialsFile, err)
	}
	if sa.Type != "service_account" || sa.ClientEmail == "" {
		return "", fmt.Errorf("FCM credentials %s: want a service-account JSON (type service_account, client_email)", p.CredentialsFile)
	}
	block, _ := pem.Decode([]byte(sa.PrivateKey))
	if block == nil {
		return "", fmt.Errorf("FCM credentials %s: private_key holds no PEM key", p.CredentialsFile)
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if _, err1 := x509.ParsePKCS1PrivateKey(block.Bytes); err1 != nil {
			return "", fmt.Errorf("FCM credentials %s: parse private_key: %w", p.CredentialsFile, err)
		}
	}
	project := cmp.Or(p.ProjectID, sa.ProjectID)
	if project == "" {
		return "", fmt.Errorf("FCM credentials %s have no project_id: set the app's fcm.project_id (NUDGE_FCM_PROJECT_ID)", p.CredentialsFile)
	}
	return project, nil
}

func newFCMClient(ctx context.Context, cfg Config, p *apps.FCM, raw []byte, tlsCfg *tls.Config, conns *connCounter, fetches prometheus.Counter) (*fcmClient, error) {
	project, err := loadServiceAccount(p, raw)
	if err != nil {
		return nil, err
	}
	// Our own HTTP/2 base transport (custom CA; one multiplexed
	// connection carries a SendEach call's 50 concurrent requests, and the
	// idle pool holds enough for an HTTP/1.1 endpoint), wrapped by
	// Google's transport that adds the OAuth credentials.
	// option.WithHTTPClient with a plain client would drop the
	// credentials; with this transport it carries them. Dials are counted
	// (nudge_push_connections_opened_total{provider="fcm"}), and while
	// none is open a request goes alone (firstAlone), so a cold burst
	// dials one connection rather than one per request.
	base := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         conns.dial,
		TLSClientConfig:     tlsCfg.Clone(),
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	rt, err := htransport.NewTransport(ctx, &firstAlone{base: base, conns: conns, fetches: fetches},
		option.WithAuthCredentialsJSON(option.ServiceAccount, raw),
		option.WithScopes(fcmScope),
		option.WithTelemetryDisabled(),
	)
	if err != nil {
		return nil, fmt.Errorf("FCM credentials %s: %w", p.CredentialsFile, err)
	}
	opts := []option.ClientOption{option.WithHTTPClient(&http.Client{Transport: &fcmTransport{base: rt}}), option.WithTelemetryDisabled()}
	if p.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(p.Endpoint))
	}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: project}, opts...)
	if err != nil {
		return nil, fmt.Errorf("firebase app: %w", err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("firebase messaging client: %w", err)
	}
	return &fcmClient{project: project, client: client, base: base, sem: make(chan struct{}, cfg.FCMConcurrency)}, nil
}

// send composes the FCM messages of idx and sends them in SendEach
// batches, at most cap(sem) at once.
func (f *fcmClient) send(ctx context.Context, s *Sender, msgs []Message, idx []int, results []Result, now time.Time, done func(int)) {
	batch := make([]*messaging.Message, 0, min(len(idx), fcmBatch))
	pos := make([]int, 0, cap(batch))
	var wg sync.WaitGroup
	flush := func() {
		if len(batch) == 0 {
			return
		}
		b, p := batch, pos
		batch = make([]*messaging.Message, 0, cap(batch))
		pos = make([]int, 0, cap(pos))
		select {
		case f.sem <- struct{}{}:
		case <-ctx.Done():
			for _, i := range p {
				s.finish(ctx, &results[i], &msgs[i], classifyTransport(ctx.Err()), fmt.Errorf("fcm send: %w", ctx.Err()))
				done(i)
			}
			return
		}
		wg.Go(func() {
			defer func() { <-f.sem }()
			f.sendBatch(ctx, s, msgs, b, p, results, done)
		})
	}
	for _, i := range idx {
		m := &msgs[i]
		fl := newFields(m, s.cfg.SyncTask, now)
		ttl := m.TTL
		if ttl <= 0 {
			ttl = s.cfg.DefaultTTL
		}
		fm, err := fcmMessage(m, &fl, ttl, now)
		if err != nil {
			s.refuse(&results[i], m, "InvalidMessage", fmt.Errorf("push %s: %w", m.ID, err))
			done(i)
			continue
		}
		batch = append(batch, fm)
		pos = append(pos, i)
		if len(batch) == fcmBatch {
			flush()
		}
	}
	flush()
	wg.Wait()
}

func (f *fcmClient) sendBatch(ctx context.Context, s *Sender, msgs []Message, batch []*messaging.Message, pos []int, results []Result, done func(int)) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	defer cancel()
	start := time.Now()
	br, err := f.client.SendEach(ctx, batch)
	s.m.fcmLatency.Observe(time.Since(start).Seconds())
	now := s.now()
	if err != nil {
		// The whole call failed before sending (we validate every message
		// first, so this is unexpected): classify the call's error.
		o := classifyFCM(err, now)
		for _, i := range pos {
			s.finish(ctx, &results[i], &msgs[i], o, fmt.Errorf("fcm send each: %w", err))
			done(i)
		}
		return
	}
	for k, i := range pos {
		r := br.Responses[k]
		if r.Success {
			s.finish(ctx, &results[i], &msgs[i], outcome{action: Delivered, status: http.StatusOK}, nil)
			done(i)
			continue
		}
		// Classify first: messaging.Is* do not see through wrapping.
		o := classifyFCM(r.Error, now)
		s.finish(ctx, &results[i], &msgs[i], o, fmt.Errorf("fcm send to %s: %w", redact.Token(msgs[i].Token), r.Error))
		done(i)
	}
}

func (f *fcmClient) close() { f.base.CloseIdleConnections() }

// The Firebase SDK retries a 503 and any transport error by itself, up to
// four times, sleeping for the Retry-After (or its own backoff) inside the
// caller's send deadline; it cannot be configured off. A 30 s Retry-After
// then ends as a bare timeout and the provider's wait is lost. fcmTransport
// keeps every answer out of the SDK's retry:
//
//   - a 503 gets Retry-After set past the SDK's 2-minute retry cap (which
//     makes it give up at once); the provider's own value, possibly empty,
//     travels in headerRetryAfter, which classifyFCM reads instead;
//   - a transport error becomes a synthetic 503 UNAVAILABLE answer marked
//     with headerTransportError, which classifyFCM turns back into a
//     transport Retry.
//
// The retry then happens in the queue, after the provider's own wait.
type fcmTransport struct {
	base http.RoundTripper
}

const (
	headerRetryAfter     = "X-Nudge-Retry-After"
	headerTransportError = "X-Nudge-Transport-Error"
	// sdkNoRetry is a Retry-After beyond the SDK's 2-minute MaxDelay.
	sdkNoRetry = "86400"
)

// RoundTrip implements http.RoundTripper.
func (t *fcmTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, err // the SDK stops at once on a done context
		}
		body, _ := json.Marshal(map[string]any{"error": map[string]any{
			"code": http.StatusServiceUnavailable, "status": "UNAVAILABLE", "message": "transport: " + err.Error(),
		}})
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		h.Set("Retry-After", sdkNoRetry)
		h.Set(headerTransportError, strconv.Quote(err.Error()))
		return &http.Response{
			Status: "503 Service Unavailable", StatusCode: http.StatusServiceUnavailable,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
			Request: req,
		}, nil
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		resp.Header.Set(headerRetryAfter, resp.Header.Get("Retry-After"))
		resp.Header.Set("Retry-After", sdkNoRetry)
	}
	return resp, nil
}
