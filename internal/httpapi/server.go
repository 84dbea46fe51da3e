// Package httpapi is nudge's REST API: the chi router, its middleware and
// its handlers. routes.go lists the whole API. Handlers return an error and
// one function (toHTTPError) maps every error to a JSON error response
// {"error": {"code", "message", "field"}}.
package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/receipts"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Config configures the HTTP layer.
type Config struct {
	// MaxBodyBytes caps request bodies (413 above). Default 16 KiB.
	MaxBodyBytes int64
	// RegisterRateLimit is how many registrations one client IP may make
	// per RegisterRateWindow (429 with Retry-After above). Default 600;
	// negative disables the limit.
	RegisterRateLimit int
	// RegisterRateWindow is the window of RegisterRateLimit. Default 1m.
	RegisterRateWindow time.Duration
	// RequestTimeout is the deadline of device and public routes (/v1
	// without an API key): a request that cannot finish in time, because
	// Redis stalls or is gone, answers 503 with Retry-After within it.
	// Default 1s (NUDGE_REQUEST_TIMEOUT).
	RequestTimeout time.Duration
	// KeyRequestTimeout is the deadline of editor and admin routes, which
	// read more (the console overview) or write more (deleting a feed
	// clears its bitmaps). Default 10s (NUDGE_KEY_REQUEST_TIMEOUT).
	KeyRequestTimeout time.Duration
	// ReadyTimeout is the budget of /readyz: it answers 503 within it when
	// Redis does not answer a PING. Default 1s.
	ReadyTimeout time.Duration
	// TokenRateLimit is how many times one push token may be registered
	// (or PATCHed onto a device) per TokenRateWindow, across replicas; 429
	// above. Default 10; negative disables it.
	TokenRateLimit int
	// TokenRateWindow is the window of TokenRateLimit. Default 1h.
	TokenRateWindow time.Duration
	// ItemCacheBytes bounds the in-process cache of closed ranges of the
	// sync read (itemCache). Default 32 MiB; negative disables the cache
	// (NUDGE_ITEM_CACHE_BYTES=0).
	ItemCacheBytes int64
	// ItemsMaxAge is the max-age of a closed range's Cache-Control.
	// Default 24h (NUDGE_ITEMS_MAX_AGE).
	ItemsMaxAge time.Duration
	// MetricsElsewhere leaves /metrics out of the router: Run serves it on
	// its own listener (NUDGE_METRICS_ADDR) instead.
	MetricsElsewhere bool
}

func (c *Config) validate() error {
	if c.MaxBodyBytes < 1024 {
		return fmt.Errorf("httpapi: MaxBodyBytes %d: want at least 1024", c.MaxBodyBytes)
	}
	if c.RegisterRateWindow < time.Second {
		return errors.New("httpapi: RegisterRateWindow: want at least 1s (NUDGE_REGISTER_RATE_WINDOW)")
	}
	if c.RequestTimeout < 10*time.Millisecond || c.KeyRequestTimeout < 10*time.Millisecond || c.ReadyTimeout < 10*time.Millisecond {
		return errors.New("httpapi: RequestTimeout, KeyRequestTimeout and ReadyTimeout: want at least 10ms (NUDGE_REQUEST_TIMEOUT, NUDGE_KEY_REQUEST_TIMEOUT)")
	}
	if c.ItemsMaxAge < time.Second {
		return errors.New("httpapi: ItemsMaxAge: want at least 1s (NUDGE_ITEMS_MAX_AGE)")
	}
	return nil
}

// Deps are the dependencies of the API. The stores come in through the
// small interfaces this package defines where it uses them; OpenStores
// opens the concrete ones as Run does.
type Deps struct {
	// Redis is pinged by /readyz; audit records, feed health, poll-now and
	// the token rate limit use it directly.
	Redis    redis.UniversalClient
	Keys     *auth.Keys
	Gatherer prometheus.Gatherer // served on /metrics

	Devices    Registry      // device registration, PATCH and DELETE
	DeviceAuth Authenticator // the device routes' secrets
	Throttle   Forgetter     // a deleted device's throttle state
	Catalog    Catalog       // the feed catalogue, read
	FeedEditor FeedEditor    // the feed catalogue, written (admin routes)
	Items      Items         // the feeds' item logs
	Stats      Stats         // receipts and the console's figures
	Syncs      Submitter     // editors' syncs into the pipeline
	Events     Events        // a sync's audience and progress
	Schedule   Schedule      // editors' syncs scheduled for later

	Apps          Apps               // the app catalogue, read and edited (admin routes)
	SyncState     SyncState          // receipts' cursors and sync times
	Freshness     Freshness          // time-to-fresh: receipts counted, read
	Subscriptions Subscriptions      // a deleted feed's subscriptions
	Tokens        TokenRegistrations // the token takeover limit
	Responsive    Responsiveness     // receipts resume devices; the console's count
	// Queues are the job queues the console shows, by the name it shows.
	Queues map[string]QueueSizer
}

func (d *Deps) validate() error {
	var errs []error
	for name, missing := range map[string]bool{
		"Redis": d.Redis == nil, "Keys": d.Keys == nil, "Gatherer": d.Gatherer == nil,
		"Devices": d.Devices == nil, "DeviceAuth": d.DeviceAuth == nil, "Throttle": d.Throttle == nil,
		"Catalog": d.Catalog == nil, "FeedEditor": d.FeedEditor == nil, "Items": d.Items == nil,
		"Stats": d.Stats == nil, "Syncs": d.Syncs == nil, "Events": d.Events == nil, "Schedule": d.Schedule == nil,
		"Subscriptions": d.Subscriptions == nil, "Tokens": d.Tokens == nil, "Apps": d.Apps == nil, "Responsive": d.Responsive == nil,
		"SyncState": d.SyncState == nil, "Freshness": d.Freshness == nil,
	} {
		if missing {
			errs = append(errs, fmt.Errorf("httpapi: Deps.%s is required", name))
		}
	}
	return errors.Join(errs...)
}

// Server is the API's http.Handler.
type Server struct {
	deps    Deps
	cfg     Config
	log     *slog.Logger
	clock   func() time.Time // nil: time.Now
	metrics *metrics
	router  chi.Router
	// receipts verifies the push ids of wake receipts.
	receipts *receipts.Signer
	rejected *prometheus.CounterVec
	// items caches closed ranges of the sync read; nil when disabled.
	items *itemCache
	// received counts receipts by source; fresh observes time-to-fresh.
	received *prometheus.CounterVec
	fresh    *prometheus.HistogramVec
}

// NewServer builds the router with every route of routes.go. It logs to
// a's logger, stamps audit records and schedules with a's clock and
// registers the HTTP metrics on a's registerer.
func NewServer(a service.Archetype, deps Deps, cfg Config) (*Server, error) {
	a = a.WithDefaults()
	cfg.MaxBodyBytes = cmp.Or(cfg.MaxBodyBytes, 16<<10)
	cfg.RegisterRateLimit = cmp.Or(cfg.RegisterRateLimit, 600)
	cfg.RegisterRateWindow = cmp.Or(cfg.RegisterRateWindow, time.Minute)
	cfg.TokenRateLimit = cmp.Or(cfg.TokenRateLimit, 10)
	cfg.TokenRateWindow = cmp.Or(cfg.TokenRateWindow, time.Hour)
	cfg.RequestTimeout = cmp.Or(cfg.RequestTimeout, time.Second)
	cfg.KeyRequestTimeout = cmp.Or(cfg.KeyRequestTimeout, 10*time.Second)
	cfg.ReadyTimeout = cmp.Or(cfg.ReadyTimeout, time.Second)
	cfg.ItemCacheBytes = cmp.Or(cfg.ItemCacheBytes, 32<<20)
	cfg.ItemsMaxAge = cmp.Or(cfg.ItemsMaxAge, 24*time.Hour)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := deps.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(a)
	if err != nil {
		return nil, fmt.Errorf("http metrics: %w", err)
	}
	rejected, err := newRejectedReceipts(a)
	if err != nil {
		return nil, fmt.Errorf("receipt metrics: %w", err)
	}
	received, fresh, err := newFreshnessMetrics(a)
	if err != nil {
		return nil, fmt.Errorf("freshness metrics: %w", err)
	}
	s := &Server{deps: deps, cfg: cfg, log: a.Logger, clock: a.Clock, metrics: m,
		receipts: receipts.NewSigner(deps.Redis), rejected: rejected, received: received, fresh: fresh}
	if cfg.ItemCacheBytes > 0 {
		if s.items, err = newItemCache(a, cfg.ItemCacheBytes, cfg.RequestTimeout); err != nil {
			return nil, fmt.Errorf("item cache metrics: %w", err)
		}
	}
	r := chi.NewRouter()
	r.Use(s.observe)
	r.NotFound(s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return &HTTPError{Code: http.StatusNotFound, Kind: "not_found", Msg: "no such route"}
	}))
	r.MethodNotAllowed(s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return &HTTPError{Code: http.StatusMethodNotAllowed, Kind: "method_not_allowed", Msg: "method not allowed on this route"}
	}))
	s.addRoutes(r)
	s.router = r
	return s, nil
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// Router returns the router, for walking the routes (docs checks).
func (s *Server) Router() chi.Routes { return s.router }

// handlerFunc is a handler that returns its error instead of writing it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle adapts a handlerFunc: a returned error becomes the JSON error response.
func (s *Server) handle(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			writeError(w, r, err)
		}
	}
}

// RequireRole is middleware that admits only requests with an API key
// whose role allows role, and puts the key in the request context
// (auth.KeyFrom). Use it on editor and admin routes.
func (s *Server) RequireRole(role auth.Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			k, err := s.deps.Keys.Check(r, role)
			if err != nil {
				if k.Name != "" {
					err = fmt.Errorf("api key %s: %w", k.Name, err)
				}
				writeError(w, r, err)
				return
			}
			ctx := auth.WithKey(r.Context(), k)
			ctx = context.WithValue(ctx, loggerCtx{}, logFrom(ctx).With("api_key", k.Name))
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}
