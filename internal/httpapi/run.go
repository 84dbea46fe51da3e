package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/startstop"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Settings lists every setting of the api binary: flag, environment
// variable, default and help. docs/operations.md documents the same list.
func Settings() []config.Setting {
	return slices.Concat(config.RedisSettings(), config.LogSettings(), []config.Setting{
		{Flag: "http-addr", Env: "NUDGE_HTTP_ADDR", Default: ":8080", Help: "HTTP listen address"},
		{Flag: "metrics-addr", Env: "NUDGE_METRICS_ADDR", Default: "",
			Help: "listen address of /metrics on its own listener, off the public port (e.g. :9091); empty: /metrics on NUDGE_HTTP_ADDR"},
		{Flag: "api-keys-file", Env: "NUDGE_API_KEYS_FILE", Default: "",
			Help: `API keys file: lines "<name> <role> <sha256 hex> [app,app…]" (make one with: api mint-key <name> <role> [app,app…]); without the apps column a key acts for every app; empty: no key is accepted`},
		{Flag: "apps-file", Env: "NUDGE_APPS_FILE", Default: "",
			Help: "YAML apps file (ids, names, credential file paths, policies, feeds), reloaded when it changes; empty: one app, default. Give the dispatcher the same file"},
		{Flag: "feeds-file", Env: "NUDGE_FEEDS_FILE", Default: "", Help: "JSON or YAML list of feeds upserted into the catalogue at start"},
		{Flag: "shutdown-timeout", Env: "NUDGE_SHUTDOWN_TIMEOUT", Default: "15s", Help: "how long SIGTERM waits for in-flight requests"},
		{Flag: "register-rate-limit", Env: "NUDGE_REGISTER_RATE_LIMIT", Default: "600",
			Help: "registrations per client IP per window (-1 disables)"},
		{Flag: "register-rate-window", Env: "NUDGE_REGISTER_RATE_WINDOW", Default: "1m", Help: "window of NUDGE_REGISTER_RATE_LIMIT"},
		{Flag: "max-feeds-per-device", Env: "NUDGE_MAX_FEEDS_PER_DEVICE", Default: "64", Help: "most feeds one device may subscribe to"},
		{Flag: "token-rate-limit", Env: "NUDGE_TOKEN_RATE_LIMIT", Default: "10",
			Help: "registrations of one push token (or PATCHes onto it) per window, across replicas (-1 disables)"},
		{Flag: "token-rate-window", Env: "NUDGE_TOKEN_RATE_WINDOW", Default: "1h", Help: "window of NUDGE_TOKEN_RATE_LIMIT"},
		{Flag: "api-keys-reload", Env: "NUDGE_API_KEYS_RELOAD", Default: "1s",
			Help: "how often the API keys file is checked for changes (SIGHUP also reloads it); a removed key stops working within this"},
		{Flag: "request-timeout", Env: "NUDGE_REQUEST_TIMEOUT", Default: "1s",
			Help: "deadline of device and public requests; past it they answer 503 with Retry-After (Redis stalled or down)"},
		{Flag: "item-cache-bytes", Env: "NUDGE_ITEM_CACHE_BYTES", Default: "33554432",
			Help: "bytes of the in-process cache of closed item ranges (the sync read of a push's range); 0 disables it"},
		{Flag: "items-max-age", Env: "NUDGE_ITEMS_MAX_AGE", Default: "24h",
			Help: "max-age of the Cache-Control of a closed item range (immutable): how long a CDN or shared cache may keep it"},
		{Flag: "key-request-timeout", Env: "NUDGE_KEY_REQUEST_TIMEOUT", Default: "10s",
			Help: "deadline of editor and admin requests (console overview, syncs, feed edits)"},
	})
}

// Run is the whole api process; cmd/api's main only calls it, and the
// devstack runs it in-process. It returns when ctx ends
// or on SIGINT/SIGTERM, after draining in-flight requests.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "mint-key" {
		return mintKey(args[1:], stdout)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP reloads the API keys file; without this handler it would
	// terminate the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	v, err := config.Parse("api", Settings(), args, getenv, stderr)
	if err != nil {
		return err
	}
	if len(v.Args()) > 0 {
		return fmt.Errorf("unexpected argument %q (subcommands: mint-key)", v.Args()[0])
	}
	level, err := v.LogLevel()
	shutdownTimeout, err2 := v.Duration("shutdown-timeout")
	rateLimit, err3 := v.Int("register-rate-limit")
	rateWindow, err4 := v.Duration("register-rate-window")
	maxFeeds, err5 := v.Int("max-feeds-per-device")
	keysReload, err6 := positive(v, "api-keys-reload")
	reqTimeout, err7 := positive(v, "request-timeout")
	keyReqTimeout, err8 := positive(v, "key-request-timeout")
	redisTimeouts, err9 := v.RedisTimeouts()
	tokenLimit, err10 := v.Int("token-rate-limit")
	tokenWindow, err11 := positive(v, "token-rate-window")
	cacheBytes, err12 := v.Int("item-cache-bytes")
	itemsMaxAge, err13 := positive(v, "items-max-age")
	if err12 == nil && cacheBytes < 0 {
		err12 = v.Invalid("item-cache-bytes", "want a number of bytes ≥ 0 (0 disables the cache)")
	}
	if err := errors.Join(err, err2, err3, err4, err5, err6, err7, err8, err9, err10, err11, err12, err13); err != nil {
		return err
	}
	if v.String("http-addr") == "" {
		return v.Invalid("http-addr", "set a listen address such as :8080")
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))

	keys, err := auth.LoadKeys(v.String("api-keys-file"))
	if err != nil {
		return err
	}
	if keys.Len() == 0 {
		log.WarnContext(ctx, "no API keys configured: admin and editor routes answer 401; set NUDGE_API_KEYS_FILE")
	}
	var seed []catalog.Feed
	if path := v.String("feeds-file"); path != "" {
		if seed, err = catalog.LoadFile(path); err != nil {
			return err
		}
	}

	rdb, err := config.OpenRedisTimeouts(ctx, service.Archetype{Logger: log}, v.String("redis-url"), v.String("embedded-redis-addr"), redisTimeouts)
	if err != nil {
		return err
	}
	defer rdb.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st, err := OpenStores(ctx, service.Archetype{Logger: log, Registerer: reg}, rdb.Client, maxFeeds,
		apps.Config{File: v.String("apps-file")})
	if err != nil {
		return err
	}
	if err := st.Catalog.Seed(ctx, seed); err != nil {
		return err
	}
	if len(seed) > 0 {
		log.InfoContext(ctx, "feed catalogue seeded", "file", v.String("feeds-file"), "feeds", len(seed))
	}
	// The api knows no push credentials: without an apps file its default
	// app has no provider details; the dispatcher's settings hold them.
	if err := st.Apps.Start(ctx); err != nil {
		return fmt.Errorf("start the app catalogue: %w", err)
	}
	defer st.Apps.Stop()
	srv, err := NewServer(service.Archetype{Logger: log, Registerer: reg}, st.Wire(Deps{
		Redis: rdb.Client, Keys: keys, Gatherer: reg,
	}), Config{RegisterRateLimit: rateLimit, RegisterRateWindow: rateWindow,
		RequestTimeout: reqTimeout, KeyRequestTimeout: keyReqTimeout,
		TokenRateLimit: tokenLimit, TokenRateWindow: tokenWindow, ItemCacheBytes: cacheBytesConfig(cacheBytes),
		ItemsMaxAge: itemsMaxAge, MetricsElsewhere: v.String("metrics-addr") != ""})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", v.String("http-addr"))
	if err != nil {
		return fmt.Errorf("listen on %s (NUDGE_HTTP_ADDR): %w", v.String("http-addr"), err)
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		// Requests outlive the signal: Shutdown drains them, and a
		// cancelled request context then means the client hung up (499).
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- hs.Serve(ln) }()
	if addr := v.String("metrics-addr"); addr != "" {
		mln, err := net.Listen("tcp", addr)
		if err != nil {
			_ = hs.Close()
			return fmt.Errorf("listen on %s (NUDGE_METRICS_ADDR): %w", addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
		go func() {
			if err := ms.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("metrics listener: %w", err)
			}
		}()
		defer ms.Close()
		log.InfoContext(ctx, "metrics served on their own listener", "metrics_addr", mln.Addr().String())
	}
	// The API keys reloader: the file every keysReload, and on SIGHUP.
	var reloader startstop.Base
	if err := reloader.Start(ctx, startstop.Loop(func(ctx context.Context) { keys.Watch(ctx, keysReload, hup, log) })); err != nil {
		_ = hs.Close()
		return fmt.Errorf("start the API keys reloader: %w", err)
	}
	defer reloader.Stop()
	log.InfoContext(ctx, config.ReadyAPI, "addr", ln.Addr().String(), "cluster", rdb.Cluster, "embedded_redis", rdb.Embedded != nil)

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	log.InfoContext(ctx, "shutting down: draining in-flight requests", "timeout", shutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("drain http requests: %w", err)
	}
	<-serveErr
	log.InfoContext(sctx, "stopped")
	return nil
}

// cacheBytesConfig maps NUDGE_ITEM_CACHE_BYTES to Config.ItemCacheBytes:
// 0 (disabled) is negative there, where 0 takes the default.
func cacheBytesConfig(n int) int64 {
	if n == 0 {
		return -1
	}
	return int64(n)
}

// mintKey implements "api mint-key <name> <role> [app,app…]".
func mintKey(args []string, stdout io.Writer) error {
	if len(args) != 2 && len(args) != 3 {
		return errors.New("usage: api mint-key <name> <role> [app,app…]   (role: editor or admin; apps: the only apps the key may act for, default every app)")
	}
	var limit []string
	if len(args) == 3 {
		limit = strings.Split(args[2], ",")
	}
	m, err := auth.Mint(args[0], auth.Role(args[1]), limit...)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "API key for %s (%s), shown only this once; store it in your secret manager:\n\n  %s\n\n", args[0], args[1], m.Key)
	fmt.Fprintf(stdout, "Add this line to the API keys file (NUDGE_API_KEYS_FILE); it holds only the key's hash:\n\n%s\n", m.Line)
	return nil
}

// positive reads a duration setting that must be above zero.
func positive(v *config.Values, flag string) (time.Duration, error) {
	d, err := v.Duration(flag)
	if err == nil && d <= 0 {
		err = v.Invalid(flag, "want a positive duration")
	}
	return d, err
}
