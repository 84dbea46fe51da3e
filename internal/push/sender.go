package push

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/service"
)

// Config configures a Sender. The dispatcher maps each field from the
// environment variable named in its comment.
//
// The apps come from Apps; without it, the single-app fields (FCM* and
// APNS* credentials, topic and hosts) define the one app apps.Default, and
// at least one provider must be configured. Messages for an app or
// provider that is not configured get a Permanent result (ErrUnknownApp,
// ErrProviderNotConfigured).
type Config struct {
	// Apps is the app catalogue; nil: the single-app fields below.
	Apps apps.Source
	// CredentialPoll is how often the credential files are hashed and the
	// catalogue read for changes (rotation without restart); default 2s.
	CredentialPoll time.Duration

	// FCMCredentialsFile is the service-account JSON
	// (NUDGE_FCM_CREDENTIALS_FILE). Empty disables FCM.
	FCMCredentialsFile string
	// FCMEndpoint overrides the FCM base URL; it must end in /v1
	// (NUDGE_FCM_ENDPOINT). Default: production FCM.
	FCMEndpoint string
	// FCMProjectID overrides the credentials' project_id
	// (NUDGE_FCM_PROJECT_ID).
	FCMProjectID string
	// FCMConcurrency is how many SendEach calls (of up to 500 messages,
	// 50 requests in flight each) run at once (NUDGE_FCM_CONCURRENCY);
	// default 4.
	FCMConcurrency int

	// APNSKeyFile is the .p8 token-auth key (NUDGE_APNS_KEY_FILE); needs
	// APNSKeyID (NUDGE_APNS_KEY_ID) and APNSTeamID (NUDGE_APNS_TEAM_ID).
	APNSKeyFile string
	APNSKeyID   string
	APNSTeamID  string
	// APNSCertFile is a .p12 or .pem client certificate for certificate
	// auth (NUDGE_APNS_CERT_FILE), with the password in
	// APNSCertPasswordFile (NUDGE_APNS_CERT_PASSWORD_FILE). Use either the
	// key or the certificate.
	APNSCertFile         string
	APNSCertPasswordFile string
	// APNSTopic is the app's bundle id (NUDGE_APNS_TOPIC); required with
	// APNs.
	APNSTopic string
	// APNSHost overrides the APNs host for both environments
	// (NUDGE_APNS_HOST), e.g. the emulator's https://127.0.0.1:port.
	APNSHost string
	// APNSSandboxHost overrides the sandbox host alone
	// (NUDGE_APNS_SANDBOX_HOST); default APNSHost if set, else Apple's.
	APNSSandboxHost string
	// APNSConcurrency is the number of APNs pushes in flight
	// (NUDGE_APNS_CONCURRENCY); default 128.
	APNSConcurrency int
	// APNSTokenRefresh is how long one provider JWT is reused
	// (NUDGE_APNS_TOKEN_REFRESH); Apple wants 20–60 minutes; default 40m.
	APNSTokenRefresh time.Duration

	// CAFile is a PEM bundle of extra CAs to trust for FCM and APNs, e.g.
	// the emulator's (NUDGE_PUSH_CA_FILE).
	CAFile string
	// SyncTask is the data field task, the name of the app's background
	// task (NUDGE_SYNC_TASK); default "nudge.sync".
	SyncTask string
	// DefaultTTL applies to messages with TTL 0 (NUDGE_PUSH_TTL); default
	// 1h. FCM caps TTL at 28 days.
	DefaultTTL time.Duration
	// SendTimeout bounds one APNs push or one FCM SendEach call
	// (NUDGE_PUSH_SEND_TIMEOUT); default 10s.
	SendTimeout time.Duration
	// DeviceBackoff is the minimum BackoffDevice duration
	// (NUDGE_PUSH_DEVICE_BACKOFF); default 1m.
	DeviceBackoff time.Duration
	// ProviderPause is the minimum PauseProvider duration
	// (NUDGE_PUSH_PROVIDER_PAUSE); default 1m, at least 1m.
	ProviderPause time.Duration
}

func (c Config) withDefaults() Config {
	c.FCMConcurrency = cmp.Or(c.FCMConcurrency, 4)
	c.APNSConcurrency = cmp.Or(c.APNSConcurrency, 128)
	c.APNSTokenRefresh = cmp.Or(c.APNSTokenRefresh, 40*time.Minute)
	c.SyncTask = cmp.Or(c.SyncTask, "nudge.sync")
	c.DefaultTTL = cmp.Or(c.DefaultTTL, time.Hour)
	c.SendTimeout = cmp.Or(c.SendTimeout, 10*time.Second)
	c.DeviceBackoff = cmp.Or(c.DeviceBackoff, time.Minute)
	c.ProviderPause = cmp.Or(c.ProviderPause, time.Minute)
	c.APNSSandboxHost = cmp.Or(c.APNSSandboxHost, c.APNSHost)
	c.CredentialPoll = cmp.Or(c.CredentialPoll, 2*time.Second)
	return c
}

// SingleApp is the app apps.Default that the single-app fields define.
func (c Config) SingleApp() apps.App {
	var ap *apps.APNs
	var fp *apps.FCM
	if c.apnsEnabled() {
		ap = &apps.APNs{Topic: c.APNSTopic, CertFile: c.APNSCertFile, CertPasswordFile: c.APNSCertPasswordFile,
			Host: c.APNSHost, SandboxHost: c.APNSSandboxHost}
		if c.APNSKeyFile != "" {
			ap.KeyFile, ap.KeyID, ap.TeamID = c.APNSKeyFile, c.APNSKeyID, c.APNSTeamID
		}
	}
	if c.fcmEnabled() {
		fp = &apps.FCM{CredentialsFile: c.FCMCredentialsFile, ProjectID: c.FCMProjectID, Endpoint: c.FCMEndpoint}
	}
	return apps.Single(ap, fp)
}

func (c Config) fcmEnabled() bool  { return c.FCMCredentialsFile != "" }
func (c Config) apnsEnabled() bool { return c.APNSKeyFile != "" || c.APNSCertFile != "" }

func (c Config) validate() error {
	var errs []error
	if c.Apps == nil && !c.fcmEnabled() && !c.apnsEnabled() {
		errs = append(errs, errors.New("no push provider configured: set NUDGE_FCM_CREDENTIALS_FILE for FCM and/or NUDGE_APNS_KEY_FILE (or NUDGE_APNS_CERT_FILE) for APNs"))
	}
	if c.FCMEndpoint != "" && (!strings.HasPrefix(c.FCMEndpoint, "http") || !strings.HasSuffix(c.FCMEndpoint, "/v1")) {
		errs = append(errs, fmt.Errorf("NUDGE_FCM_ENDPOINT=%q must be an http(s) URL ending in /v1, e.g. https://127.0.0.1:8443/v1", c.FCMEndpoint))
	}
	if c.apnsEnabled() {
		if c.APNSKeyFile != "" && c.APNSCertFile != "" {
			errs = append(errs, errors.New("set either NUDGE_APNS_KEY_FILE (token auth) or NUDGE_APNS_CERT_FILE (certificate auth), not both"))
		}
		if c.APNSKeyFile != "" && (c.APNSKeyID == "" || c.APNSTeamID == "") {
			errs = append(errs, errors.New("APNs token auth needs NUDGE_APNS_KEY_ID (10-character key id) and NUDGE_APNS_TEAM_ID (10-character team id)"))
		}
		if c.APNSTopic == "" {
			errs = append(errs, errors.New("APNs needs NUDGE_APNS_TOPIC, the app's bundle id"))
		}
	}
	if c.APNSTokenRefresh < 20*time.Minute || c.APNSTokenRefresh >= 60*time.Minute {
		errs = append(errs, fmt.Errorf("NUDGE_APNS_TOKEN_REFRESH=%s must be at least 20m and under 60m (Apple rejects older tokens and throttles faster updates)", c.APNSTokenRefresh))
	}
	if c.FCMConcurrency < 1 || c.APNSConcurrency < 1 {
		errs = append(errs, errors.New("NUDGE_FCM_CONCURRENCY and NUDGE_APNS_CONCURRENCY must be at least 1"))
	}
	if c.DefaultTTL < 0 || c.SendTimeout <= 0 || c.DeviceBackoff < 0 || c.CredentialPoll <= 0 {
		errs = append(errs, errors.New("NUDGE_PUSH_TTL, NUDGE_PUSH_SEND_TIMEOUT, NUDGE_PUSH_DEVICE_BACKOFF and the credential poll must be positive"))
	}
	if c.ProviderPause < time.Minute {
		errs = append(errs, fmt.Errorf("NUDGE_PUSH_PROVIDER_PAUSE=%s must be at least 1m", c.ProviderPause))
	}
	return errors.Join(errs...)
}

// tlsConfig trusts the system roots plus CAFile.
func (c Config) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read NUDGE_PUSH_CA_FILE: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("NUDGE_PUSH_CA_FILE=%s holds no PEM certificate", c.CAFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// Sender sends pushes through FCM and APNs, each message through the
// clients of its app (Message.App). Apps that name the same credential
// share its client. It is safe for concurrent use.
type Sender struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time
	ctx    context.Context // the Google auth library's, for token refreshes
	tls    *tls.Config
	m      *metrics
	src    apps.Source

	mu     sync.Mutex
	set    *apps.Set // the catalogue the routes were last checked against
	routes map[string]*route
	slots  map[string]*slot

	// One JWT signer per APNs key (id and contents), shared by its
	// production and sandbox clients.
	signersMu sync.Mutex
	signers   map[string]*jwtSigner

	stop      chan struct{}
	watching  sync.WaitGroup
	closeOnce sync.Once
}

// New builds a Sender. Clients are created on each app's first message;
// with the single-app settings the default app's are created here, so a
// bad credential fails New. The Google auth library keeps ctx for token
// refreshes, so pass a context that lives as long as the Sender. It reads
// a's clock, logs to a's logger and registers its metrics on a's
// registerer. Until Close it polls the credential files and the catalogue
// every Config.CredentialPoll and swaps rotated credentials in.
func New(ctx context.Context, a service.Archetype, cfg Config) (*Sender, error) {
	a = a.WithDefaults()
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("push config: %w", err)
	}
	src := cfg.Apps
	if src == nil {
		set, err := apps.NewSet(cfg.SingleApp())
		if err != nil {
			return nil, fmt.Errorf("push config: %w", err)
		}
		src = set
	}
	m, err := newMetrics(a)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	s := &Sender{cfg: cfg, logger: a.Logger, now: a.Clock, ctx: ctx, tls: tlsCfg, m: m, src: src,
		set: src.Current(), routes: map[string]*route{}, slots: map[string]*slot{}, signers: map[string]*jwtSigner{}, stop: make(chan struct{})}
	// The apps there are at start have their clients built now. When no
	// app's credentials load, that is a start-up error (a single-app
	// deployment's bad key fails at once); otherwise an app whose
	// credential does not load is logged and its pushes pause, as for one
	// that breaks later, and the other apps send: an admin edit naming a
	// bad file must not stop every app at the next restart.
	var errs []error
	s.mu.Lock()
	all := s.set.All()
	for _, app := range all {
		rt := s.buildRouteLocked(app)
		s.routes[app.ID] = rt
		var appErrs []error
		for _, pr := range []provRoute{rt.apns[0], rt.apns[1], rt.fcm} {
			if pr.err != nil {
				appErrs = append(appErrs, pr.err)
				s.logger.Error("push credential unusable: its pushes pause until it is fixed", "app", app.ID, "scope", pr.scope, "err", pr.err)
				s.m.reloads.WithLabelValues(string(providerOfScope(pr.scope)), "rejected").Inc()
			}
		}
		if len(appErrs) > 0 {
			errs = append(errs, fmt.Errorf("app %s: %w", app.ID, errors.Join(appErrs...)))
		}
	}
	s.mu.Unlock()
	if len(errs) > 0 && len(errs) == len(all) {
		s.Close()
		return nil, fmt.Errorf("push config: %w", errors.Join(errs...))
	}
	s.watching.Add(1)
	go s.watch()
	return s, nil
}

// Send delivers msgs and returns one Result per message, in order. FCM and
// APNs messages are sent concurrently. Send returns when every message has
// a result; ctx cancellation yields Retry results for unsent messages.
func (s *Sender) Send(ctx context.Context, msgs []Message) []Result {
	return s.SendEach(ctx, msgs, nil)
}

// SendEach is Send that also calls each(i, result) as soon as message i
// has its final result: per APNs push as its answer arrives, per FCM
// SendEach call for its messages. each runs on the sending goroutines,
// concurrently, and should return quickly; nil means no calls. A caller
// records provider answers there, so a crash loses only the answers not
// yet recorded rather than a whole batch's.
//
// Each client sends its messages with its own concurrency, so a slow or
// failing credential of one app does not hold up another's pushes.
func (s *Sender) SendEach(ctx context.Context, msgs []Message, each func(i int, r Result)) []Result {
	results := make([]Result, len(msgs))
	done := func(i int) {
		if each != nil {
			each(i, results[i])
		}
	}
	now := s.now()
	routes := s.routesOf(msgs)
	var topics []string // apns-topic per message
	groups := map[*slot][]int{}
	var order []*slot
	for i := range msgs {
		m := &msgs[i]
		results[i].PushID = m.ID
		if err := checkMessage(m); err != nil {
			s.refuse(&results[i], m, "InvalidMessage", err)
			done(i)
			continue
		}
		if m.Provider != FCM && m.Provider != APNs {
			s.refuse(&results[i], m, "InvalidMessage", fmt.Errorf("push %s: provider %q is not fcm or apns: %w", m.ID, m.Provider, ErrInvalidMessage))
			done(i)
			continue
		}
		rt := routes[appOf(m)]
		if rt == nil {
			s.refuse(&results[i], m, "UnknownApp", fmt.Errorf("push %s: app %q is not in the app catalogue: %w", m.ID, appOf(m), ErrUnknownApp))
			done(i)
			continue
		}
		pr := rt.prov(m)
		switch {
		case pr.err != nil:
			s.finish(ctx, &results[i], m, outcome{action: PauseProvider, reason: "CredentialUnusable"}, pr.err)
			done(i)
			continue
		case pr.slot == nil:
			s.refuse(&results[i], m, "ProviderNotConfigured", fmt.Errorf("push %s: app %s: %s: %w", m.ID, appOf(m), m.Provider, ErrProviderNotConfigured))
			done(i)
			continue
		}
		if m.Provider == APNs {
			if topics == nil {
				topics = make([]string, len(msgs))
			}
			topics[i] = rt.app.APNs.Topic
		}
		if groups[pr.slot] == nil {
			order = append(order, pr.slot)
		}
		groups[pr.slot] = append(groups[pr.slot], i)
	}
	var wg sync.WaitGroup
	for _, sl := range order {
		idx := groups[sl]
		wg.Go(func() {
			if sl.spec.provider == APNs {
				s.sendAPNs(ctx, sl, msgs, topics, idx, results, now, done)
				return
			}
			g := sl.acquire()
			defer g.release()
			g.fcm.send(ctx, s, msgs, idx, results, now, done)
		})
	}
	wg.Wait()
	return results
}

// PauseScope names what a PauseProvider answer to m pauses: the
// credential of m's app, as narrowly as the provider meant it. APNs
// credential errors hold for one environment and one key or certificate
// ("apns:sandbox:<key id>", "apns:production:cert-<digest>"), FCM's for
// one project ("fcm:<project>"). A sandbox build's bad setup thus never
// stops production pushes, nor one app's credential another app's. The
// caller keys its pause by this name and checks each message's scope
// before sending.
func (s *Sender) PauseScope(m *Message) string {
	s.mu.Lock()
	rt := s.routeLocked(appOf(m))
	s.mu.Unlock()
	if rt == nil || (m.Provider != FCM && m.Provider != APNs) {
		return string(m.Provider)
	}
	if sc := rt.prov(m).scope; sc != "" {
		return sc
	}
	return string(m.Provider)
}

// refuse fills a Permanent result for a message refused before sending.
func (s *Sender) refuse(r *Result, m *Message, reason string, err error) {
	if errors.Is(err, ErrPayloadTooLarge) {
		reason = "PayloadTooLarge"
	}
	r.Action, r.Reason, r.Err = Permanent, reason, err
	s.m.result(appLabel(m, reason), m.Provider, Permanent)
}

// finish turns an outcome into the message's result, applying the minimum
// durations and logging what the caller will have to handle.
func (s *Sender) finish(ctx context.Context, r *Result, m *Message, o outcome, err error) {
	r.Action, r.Reason, r.Status, r.RetryAfter = o.action, o.reason, o.status, o.retryAfter
	switch o.action {
	case Delivered:
		r.Err = nil
	case BackoffDevice:
		r.RetryAfter = max(o.retryAfter, s.cfg.DeviceBackoff)
	case PauseProvider:
		r.RetryAfter = max(o.retryAfter, s.cfg.ProviderPause)
	}
	if o.action != Delivered {
		r.Err = err
		if o.action == PauseProvider || o.action == Permanent {
			s.logger.WarnContext(ctx, "push rejected", "app", appOf(m), "provider", string(m.Provider), "push_id", m.ID,
				"action", o.action.String(), "reason", o.reason, "status", o.status, "err", err)
		}
	}
	s.m.result(appOf(m), m.Provider, o.action)
}

// appLabel is m's app as a metrics label: a message of an unknown app
// counts as "unknown", which keeps the label bounded by the catalogue.
func appLabel(m *Message, reason string) string {
	if reason == "UnknownApp" || !apps.ValidID(appOf(m)) {
		return "unknown"
	}
	return appOf(m)
}

// Close stops the credential watch and releases idle connections. Send
// must not be called afterwards.
func (s *Sender) Close() {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.watching.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, sl := range s.slots {
			sl.cur.Load().retire()
		}
	})
}

// metrics are the sender's Prometheus collectors. Labels are bounded by
// the catalogue: app ids, and credential ids (APNs key ids or certificate
// digests, FCM projects).
type metrics struct {
	results *prometheus.CounterVec
	latency *prometheus.HistogramVec
	// APNs provider JWTs signed and FCM OAuth tokens fetched, by credential.
	jwts, tokenFetches *prometheus.CounterVec
	// Rotated credentials applied or rejected, and replaced clients whose
	// pushes are still in flight.
	reloads  *prometheus.CounterVec
	draining *prometheus.GaugeVec
	// Provider connections dialed and open (conns.go).
	connsOpened *prometheus.CounterVec
	connsOpen   *prometheus.GaugeVec
	// Pre-resolved children, off the per-push path's label lookup.
	byApp                   sync.Map // app + "\x00" + provider -> []prometheus.Counter
	apnsLatency, fcmLatency prometheus.Observer
}

func newMetrics(a service.Archetype) (*metrics, error) {
	m := &metrics{
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_push_results_total",
			Help: "Push send outcomes by app, provider and action.",
		}, []string{"app", "provider", "action"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nudge_push_send_seconds",
			Help:    "Duration of one APNs push or one FCM SendEach call.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"provider"}),
		jwts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_push_apns_jwt_rotations_total",
			Help: "APNs provider JWTs signed, by credential (key id).",
		}, []string{"credential"}),
		tokenFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_push_fcm_token_fetches_total",
			Help: "FCM OAuth access tokens fetched (new bearer tokens used), by credential (project).",
		}, []string{"credential"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_push_credential_reloads_total",
			Help: "Changed push credentials (rotated files, catalogue changes) applied or rejected (unusable: the old one keeps sending), by provider.",
		}, []string{"provider", "result"}),
		draining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nudge_push_clients_draining",
			Help: "Replaced (rotated or removed) provider clients whose pushes are still in flight, by provider; 0 once the old credential is no longer used.",
		}, []string{"provider"}),
		connsOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_push_connections_opened_total",
			Help: "Connections dialed to a provider (TCP, each with its TLS handshake), by provider and credential; flat after warm-up when connections are reused.",
		}, []string{"provider", "credential"}),
		connsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nudge_push_connections_open",
			Help: "Connections to a provider open now, by provider and credential.",
		}, []string{"provider", "credential"}),
	}
	m.apnsLatency = m.latency.WithLabelValues(string(APNs))
	m.fcmLatency = m.latency.WithLabelValues(string(FCM))
	if err := a.Register(m.results, m.latency, m.jwts, m.tokenFetches, m.reloads, m.draining, m.connsOpened, m.connsOpen); err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	return m, nil
}

func (m *metrics) result(app string, p Provider, a Action) {
	if p != FCM && p != APNs {
		p = "unknown"
	}
	k := app + "\x00" + string(p)
	v, ok := m.byApp.Load(k)
	if !ok {
		cs := make([]prometheus.Counter, len(actionNames))
		for a := range actionNames {
			cs[a] = m.results.WithLabelValues(app, string(p), Action(a).String())
		}
		v, _ = m.byApp.LoadOrStore(k, cs)
	}
	cs := v.([]prometheus.Counter)
	if a < 0 || int(a) >= len(cs) {
		a = 0
	}
	cs[a].Inc()
}

// Validate reports every problem of the configuration, with the settings to
// change, without connecting to anything.
func (c Config) Validate() error { return c.withDefaults().validate() }
