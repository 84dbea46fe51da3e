// Package pushemu emulates the two push providers nudge talks to, Firebase
// Cloud Messaging (HTTP v1) and the Apple Push Notification service
// (HTTP/2), closely enough that the unmodified Google and apns2 SDKs talk to
// it. Tests start it in-process with [New] and [Emulator.Start]; the
// cmd/pushemu binary runs it as a standalone server.
//
// An [Emulator] serves four listeners:
//
//   - FCM: HTTP/2 over TLS, POST /v1/projects/{project}/messages:send,
//     checking the OAuth bearer token and validating messages as FCM does;
//   - APNs production and APNs sandbox: HTTP/2 over TLS, POST
//     /3/device/{token}, verifying ES256 provider JWTs (or a TLS client
//     certificate) and validating headers and payload as APNs does;
//   - control: plain HTTP/1.1 serving the fake OAuth2 token endpoint
//     (POST /token, the token_uri of the generated service account) and the
//     inspection API under /admin/ (see [Emulator.AdminHandler]).
//
// Every accepted push is recorded as a [Delivery]. Tests inspect them with
// [Emulator.Deliveries], [Emulator.Count], wait for them with
// [Emulator.WaitCount] and [Emulator.WaitToken], or stream them with
// [Emulator.Subscribe]. Faults (provider errors, latency, Retry-After,
// GOAWAY) are injected with [Emulator.AddFault], by rate, on a schedule or
// for chosen tokens. [Emulator.WriteCredentials] writes ready-made sender
// credentials: a service-account JSON whose token_uri points at the fake, an
// APNs .p8 key, a client certificate and the CA that signs every listener.
//
// Reasons the emulator returns that Apple does not document for the case
// (Apple accepts and silently drops such pushes) are: BadPriority for a
// background push whose apns-priority is not 5, and InvalidPushType for a
// background push whose aps carries alert, sound or badge or lacks
// content-available: 1.
package pushemu

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nudge-dev/nudge/internal/service"
)

// Provider names a push provider emulated here.
type Provider string

// The emulated providers.
const (
	FCM  Provider = "fcm"
	APNs Provider = "apns"
)

// APNs environments, as recorded in [Delivery.Environment].
const (
	Production = "production"
	Sandbox    = "sandbox"
)

// Config configures an [Emulator]. The zero value is usable: every listener
// binds a free loopback port.
type Config struct {
	// FCMAddr, APNsAddr, APNsSandboxAddr and ControlAddr are the listen
	// addresses; default "127.0.0.1:0".
	FCMAddr         string
	APNsAddr        string
	APNsSandboxAddr string
	ControlAddr     string
	// Hosts are extra DNS names or IPs put in the TLS server certificate
	// (localhost and loopback are always there).
	Hosts []string
	// ProjectID is the Firebase project; default "nudge-emu".
	ProjectID string
	// TeamID and KeyID identify the APNs auth key; defaults "EMUTEAM001"
	// and "EMUKEY0001".
	TeamID string
	KeyID  string
	// Topic is the app's bundle id, the only apns-topic accepted besides
	// its ".voip" variant; default "dev.nudge.app".
	Topic string
	// MaxConcurrentStreams is advertised by the HTTP/2 listeners; default
	// 1000, as APNs does.
	MaxConcurrentStreams uint32
	// StrictTokens rejects tokens that were not added with AddToken (APNs:
	// 400 BadDeviceToken; FCM: 404 UNREGISTERED). By default any
	// well-formed token is accepted.
	StrictTokens bool
	// Latency is added to every provider response.
	Latency time.Duration
	// KeepPerToken bounds how many deliveries are kept per token (counts
	// are always exact); default 64.
	KeepPerToken int
	// Seed seeds the random source used for rate-based faults; default 1.
	Seed uint64
}

func (c Config) withDefaults() Config {
	loop := "127.0.0.1:0"
	c.FCMAddr = cmp.Or(c.FCMAddr, loop)
	c.APNsAddr = cmp.Or(c.APNsAddr, loop)
	c.APNsSandboxAddr = cmp.Or(c.APNsSandboxAddr, loop)
	c.ControlAddr = cmp.Or(c.ControlAddr, loop)
	c.ProjectID = cmp.Or(c.ProjectID, "nudge-emu")
	c.TeamID = cmp.Or(c.TeamID, "EMUTEAM001")
	c.KeyID = cmp.Or(c.KeyID, "EMUKEY0001")
	c.Topic = cmp.Or(c.Topic, "dev.nudge.app")
	c.MaxConcurrentStreams = cmp.Or(c.MaxConcurrentStreams, 1000)
	c.KeepPerToken = cmp.Or(c.KeepPerToken, 64)
	c.Seed = cmp.Or(c.Seed, 1)
	return c
}

func (c Config) validate() error {
	if c.KeepPerToken < 0 {
		return errors.New("pushemu: KeepPerToken must not be negative")
	}
	if c.Latency < 0 {
		return errors.New("pushemu: Latency must not be negative")
	}
	return nil
}

// ErrNotStarted is returned by methods that need the listeners before
// Start has run.
var ErrNotStarted = errors.New("pushemu: emulator not started")

// Emulator is an in-process FCM and APNs emulator. Create it with [New],
// then call Start; Stop releases the listeners.
type Emulator struct {
	cfg  Config
	now  func() time.Time // the clock of JWT age checks and timestamps
	log  *slog.Logger     // request-level errors
	ca   *authority
	keys *keys
	// serverCert is presented by the TLS listeners.
	serverCert tls.Certificate
	clientCert []byte // PEM cert + key for APNs certificate auth

	rec      *recorder
	faults   *faultSet
	inFlight atomic.Int64 // APNs requests being answered
	tokens   *registry
	auth     *authState

	mu      sync.Mutex
	started bool
	stopped bool
	servers []*http.Server
	fcmURL  string
	apnsURL string
	sandURL string
	ctrlURL string
	wg      sync.WaitGroup
}

// New builds an emulator: it generates its CA, TLS certificates, the
// service-account key and the APNs auth key. It does not listen yet. a's
// clock checks JWT ages and stamps deliveries; a's logger receives
// request-level errors.
func New(a service.Archetype, cfg Config) (*Emulator, error) {
	a = a.WithDefaults()
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ca, err := newAuthority()
	if err != nil {
		return nil, err
	}
	srvCert, _, _, err := ca.issue("pushemu", 2, true, cfg.Hosts)
	if err != nil {
		return nil, err
	}
	_, cliCert, cliKey, err := ca.issue(cfg.Topic, 3, false, nil)
	if err != nil {
		return nil, err
	}
	k, err := newKeys()
	if err != nil {
		return nil, err
	}
	e := &Emulator{
		cfg:        cfg,
		now:        a.Clock,
		log:        a.Logger,
		ca:         ca,
		keys:       k,
		serverCert: srvCert,
		clientCert: append(cliCert, cliKey...),
		rec:        newRecorder(cfg.KeepPerToken),
		faults:     newFaultSet(cfg.Seed),
		tokens:     newRegistry(),
		auth:       newAuthState(),
	}
	e.auth.apnsKeys = []APNsKey{newAPNsKey(cfg.KeyID, cfg.TeamID, k.apns, k.apnsKeyPEM)}
	e.auth.topics[cfg.Topic] = true
	e.auth.saKeys = []*rsa.PublicKey{&k.sa.PublicKey}
	e.auth.projects[cfg.ProjectID] = true
	return e, nil
}

// Start binds all listeners and serves until Stop. It returns once the
// listeners accept connections. ctx bounds only the start-up.
func (e *Emulator) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return errors.New("pushemu: already started")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start pushemu: %w", err)
	}
	var lc net.ListenConfig
	listen := func(addr string) (net.Listener, error) {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		return ln, nil
	}
	var lns []net.Listener
	fail := func(err error) error {
		for _, ln := range lns {
			ln.Close()
		}
		return err
	}
	addrs := []string{e.cfg.FCMAddr, e.cfg.APNsAddr, e.cfg.APNsSandboxAddr, e.cfg.ControlAddr}
	for _, a := range addrs {
		ln, err := listen(a)
		if err != nil {
			return fail(err)
		}
		lns = append(lns, ln)
	}
	e.fcmURL = "https://" + lns[0].Addr().String()
	e.apnsURL = "https://" + lns[1].Addr().String()
	e.sandURL = "https://" + lns[2].Addr().String()
	e.ctrlURL = "http://" + lns[3].Addr().String()

	handlers := []http.Handler{
		&fcmServer{e: e},
		&apnsServer{e: e, env: Production},
		&apnsServer{e: e, env: Sandbox},
		e.controlHandler(),
	}
	for i, ln := range lns {
		srv := &http.Server{
			Handler:           handlers[i],
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
		}
		if i < 3 {
			srv.TLSConfig = &tls.Config{
				Certificates: []tls.Certificate{e.serverCert},
				NextProtos:   []string{"h2", "http/1.1"},
				MinVersion:   tls.VersionTLS12,
			}
			srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: int(e.cfg.MaxConcurrentStreams)}
			if i > 0 {
				srv.TLSConfig.ClientAuth = tls.VerifyClientCertIfGiven
				srv.TLSConfig.ClientCAs = e.ca.pool
				srv.ConnState = e.auth.connState
			}
			ln = tls.NewListener(ln, srv.TLSConfig)
			// net/http enables HTTP/2 on a TLS listener it is handed only
			// when the config names h2, which it does.
		}
		e.servers = append(e.servers, srv)
		e.wg.Add(1)
		go func(srv *http.Server, ln net.Listener) {
			defer e.wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.log.Error("pushemu serve", "addr", ln.Addr().String(), "err", err)
			}
		}(srv, ln)
	}
	e.started = true
	return nil
}

// Stop closes all listeners and connections and waits for the servers to
// exit. It is safe to call twice or before Start.
func (e *Emulator) Stop() {
	e.mu.Lock()
	if !e.started || e.stopped {
		e.stopped = true
		e.mu.Unlock()
		return
	}
	e.stopped = true
	servers := e.servers
	e.mu.Unlock()
	for _, s := range servers {
		s.Close()
	}
	e.wg.Wait()
	e.rec.closeSubscribers()
}

// FCMEndpoint is the value for option.WithEndpoint (NUDGE_FCM_ENDPOINT): the
// FCM base URL ending in /v1.
func (e *Emulator) FCMEndpoint() string { return e.url(&e.fcmURL) + "/v1" }

// APNsHost is the production APNs host URL (NUDGE_APNS_HOST).
func (e *Emulator) APNsHost() string { return e.url(&e.apnsURL) }

// APNsSandboxHost is the sandbox APNs host URL (NUDGE_APNS_SANDBOX_HOST).
func (e *Emulator) APNsSandboxHost() string { return e.url(&e.sandURL) }

// ControlURL is the base URL of the plain HTTP listener that serves the
// OAuth2 token endpoint (/token) and the inspection API (/admin/).
func (e *Emulator) ControlURL() string { return e.url(&e.ctrlURL) }

// TokenURI is the fake OAuth2 token endpoint written as token_uri into the
// service-account JSON.
func (e *Emulator) TokenURI() string { return e.url(&e.ctrlURL) + "/token" }

// CAPEM returns the PEM certificate of the CA that signs the emulator's
// TLS listeners and its APNs client certificate.
func (e *Emulator) CAPEM() []byte { return append([]byte(nil), e.ca.certPEM...) }

// APNsInFlight is the number of APNs requests being answered now (held by
// a fault's latency, say).
func (e *Emulator) APNsInFlight() int { return int(e.inFlight.Load()) }

// ProjectID is the Firebase project the FCM emulator serves.
func (e *Emulator) ProjectID() string { return e.cfg.ProjectID }

// Topic is the APNs topic (bundle id) the APNs emulator accepts.
func (e *Emulator) Topic() string { return e.cfg.Topic }

func (e *Emulator) url(p *string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return *p
}

// GoAway makes both APNs listeners send GOAWAY on every open connection
// after the response in flight, as APNs does when it rotates servers.
// Clients reconnect; later requests are served normally.
func (e *Emulator) GoAway() {
	e.auth.mu.Lock()
	e.auth.goAway++
	e.auth.mu.Unlock()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// rng is a mutex-guarded random source shared by fault rules.
type rng struct {
	mu sync.Mutex
	r  *mrand.Rand
}

func (r *rng) float() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.r.Float64()
}
