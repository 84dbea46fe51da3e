package dispatcher

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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/egress"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/push"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stale"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// Settings lists every setting of the dispatcher binary: flag, environment
// variable, default and help. docs/operations.md documents the same list.
func Settings() []config.Setting {
	return slices.Concat(config.RedisSettings(), config.LogSettings(), []config.Setting{
		{Flag: "http-addr", Env: "NUDGE_HTTP_ADDR", Default: ":9090", Help: "listen address of /healthz, /readyz and /metrics"},
		{Flag: "shutdown-timeout", Env: "NUDGE_SHUTDOWN_TIMEOUT", Default: "30s", Help: "how long SIGTERM waits for in-flight pushes"},

		{Flag: "apps-file", Env: "NUDGE_APPS_FILE", Default: "",
			Help: "YAML apps file (ids, names, credential file paths, policies, feeds), reloaded when it changes; empty: one app, default, from the NUDGE_APNS_* and NUDGE_FCM_* settings. Give the api the same file"},
		{Flag: "fcm-credentials-file", Env: "NUDGE_FCM_CREDENTIALS_FILE", Help: "FCM service-account JSON file (empty: FCM off)"},
		{Flag: "fcm-endpoint", Env: "NUDGE_FCM_ENDPOINT", Help: "FCM base URL ending in /v1 (empty: Google's; set for the emulator or a proxy)"},
		{Flag: "fcm-project-id", Env: "NUDGE_FCM_PROJECT_ID", Help: "Firebase project id (empty: the credentials' project_id)"},
		{Flag: "fcm-concurrency", Env: "NUDGE_FCM_CONCURRENCY", Default: "4", Help: "FCM SendEach calls in flight (each sends up to 500 messages, 50 at a time)"},
		{Flag: "apns-key-file", Env: "NUDGE_APNS_KEY_FILE", Help: "APNs token-auth .p8 key file (empty: APNs off unless a certificate is set)"},
		{Flag: "apns-key-id", Env: "NUDGE_APNS_KEY_ID", Help: "APNs key id (10 characters), with NUDGE_APNS_KEY_FILE"},
		{Flag: "apns-team-id", Env: "NUDGE_APNS_TEAM_ID", Help: "Apple developer team id (10 characters), with NUDGE_APNS_KEY_FILE"},
		{Flag: "apns-cert-file", Env: "NUDGE_APNS_CERT_FILE", Help: "APNs client certificate (.p12 or .pem), instead of a .p8 key"},
		{Flag: "apns-cert-password-file", Env: "NUDGE_APNS_CERT_PASSWORD_FILE", Help: "file holding the password of NUDGE_APNS_CERT_FILE"},
		{Flag: "apns-topic", Env: "NUDGE_APNS_TOPIC", Help: "the app's bundle id (apns-topic); required with APNs"},
		{Flag: "apns-host", Env: "NUDGE_APNS_HOST", Help: "APNs host for both environments (empty: Apple's; set for the emulator)"},
		{Flag: "apns-sandbox-host", Env: "NUDGE_APNS_SANDBOX_HOST", Help: "APNs sandbox host (empty: NUDGE_APNS_HOST if set, else Apple's)"},
		{Flag: "apns-concurrency", Env: "NUDGE_APNS_CONCURRENCY", Default: "128", Help: "APNs pushes in flight"},
		{Flag: "apns-token-refresh", Env: "NUDGE_APNS_TOKEN_REFRESH", Default: "40m", Help: "how long one APNs provider JWT is reused (20m to under 60m)"},
		{Flag: "push-ca-file", Env: "NUDGE_PUSH_CA_FILE", Help: "extra PEM CAs to trust for FCM and APNs (the emulator's)"},
		{Flag: "sync-task", Env: "NUDGE_SYNC_TASK", Default: "nudge.sync", Help: "task name in the payload, for the app's callbackDispatcher"},
		{Flag: "push-ttl", Env: "NUDGE_PUSH_TTL", Default: "1h", Help: "how long a provider keeps a push for an offline device"},
		{Flag: "push-send-timeout", Env: "NUDGE_PUSH_SEND_TIMEOUT", Default: "10s", Help: "deadline of one APNs push or one FCM SendEach call"},
		{Flag: "push-device-backoff", Env: "NUDGE_PUSH_DEVICE_BACKOFF", Default: "1m", Help: "least wait before retrying a device the provider says gets too many pushes"},
		{Flag: "push-provider-pause", Env: "NUDGE_PUSH_PROVIDER_PAUSE", Default: "1m", Help: "least pause of all sends to a provider after a project-level quota error (at least 1m)"},

		{Flag: "ios-push-limit", Env: "NUDGE_IOS_PUSH_LIMIT", Default: "3", Help: "iOS: most silent pushes per device in any NUDGE_IOS_PUSH_WINDOW"},
		{Flag: "ios-push-window", Env: "NUDGE_IOS_PUSH_WINDOW", Default: "1h", Help: "iOS: sliding window of NUDGE_IOS_PUSH_LIMIT"},
		{Flag: "ios-min-gap", Env: "NUDGE_IOS_MIN_GAP", Default: "10m", Help: "iOS: least time between two pushes to a device"},
		{Flag: "android-push-limit", Env: "NUDGE_ANDROID_PUSH_LIMIT", Default: "12", Help: "Android: most silent pushes per device in any NUDGE_ANDROID_PUSH_WINDOW"},
		{Flag: "android-push-window", Env: "NUDGE_ANDROID_PUSH_WINDOW", Default: "1h", Help: "Android: sliding window of NUDGE_ANDROID_PUSH_LIMIT"},
		{Flag: "android-min-gap", Env: "NUDGE_ANDROID_MIN_GAP", Default: "5m", Help: "Android: least time between two pushes to a device"},
		{Flag: "debounce", Env: "NUDGE_DEBOUNCE", Default: "2m", Help: "feed lane: how long a push waits for more updates to merge"},
		{Flag: "max-wait", Env: "NUDGE_MAX_WAIT", Default: "15m", Help: "feed lane: the debounce never delays a push more than this"},
		{Flag: "alert-limit", Env: "NUDGE_ALERT_LIMIT", Default: "4", Help: "most visible breaking alerts per device in any NUDGE_ALERT_WINDOW; more are sent silent"},
		{Flag: "wake-rate", Env: "NUDGE_WAKE_RATE", Default: "0",
			Help: "pushes per second per feed that a fan-out plans, across all replicas, so the apps' sync reads stay under the api's capacity (0: no pacing)"},
		{Flag: "alert-window", Env: "NUDGE_ALERT_WINDOW", Default: "1h", Help: "sliding window of NUDGE_ALERT_LIMIT"},
		{Flag: "stale-after", Env: "NUDGE_STALE_AFTER", Default: "6h", Help: "a device behind on a feed and left alone this long gets one stale push (0: stale pushes off)"},
		{Flag: "stale-window", Env: "NUDGE_STALE_WINDOW", Default: "30m", Help: "a stale sweep's pushes are spread evenly over this window; one sweep per window"},
		{Flag: "unresponsive-after", Env: "NUDGE_UNRESPONSIVE_AFTER", Default: "5", Help: "silent pushes without a receipt after which a device is unresponsive and its silent pushes back off"},
		{Flag: "unresponsive-probe", Env: "NUDGE_UNRESPONSIVE_PROBE", Default: "1h", Help: "wait before an unresponsive device's first probe push, doubled for each further probe"},
		{Flag: "unresponsive-probe-max", Env: "NUDGE_UNRESPONSIVE_PROBE_MAX", Default: "24h", Help: "longest wait between two probe pushes of an unresponsive device"},

		{Flag: "feed-default-interval", Env: "NUDGE_FEED_DEFAULT_INTERVAL", Default: "5m", Help: "poll interval of feeds whose catalogue entry has none"},
		{Flag: "feed-timeout", Env: "NUDGE_FEED_TIMEOUT", Default: "30s", Help: "deadline of one feed fetch, body included"},
		{Flag: "feed-max-bytes", Env: "NUDGE_FEED_MAX_BYTES", Default: "10485760", Help: "largest feed body accepted, in bytes"},
		{Flag: "feed-concurrency", Env: "NUDGE_FEED_CONCURRENCY", Default: "8", Help: "feeds one replica polls at once"},
		{Flag: "feed-max-per-host", Env: "NUDGE_FEED_MAX_PER_HOST", Help: "most of those slots the feeds of one host hold at once (empty: NUDGE_FEED_CONCURRENCY/4, at least 1)"},
		{Flag: "feed-fair-share", Env: "NUDGE_FEED_FAIR_SHARE", Help: "how long a fetch may run while due feeds wait for a slot (empty: NUDGE_FEED_TIMEOUT/3)"},
		{Flag: "feed-parse-budget", Env: "NUDGE_FEED_PARSE_BUDGET", Help: "feed bytes parsed at once by one replica (empty: 2×NUDGE_FEED_MAX_BYTES)"},
		{Flag: "feed-max-items", Env: "NUDGE_FEED_MAX_ITEMS", Default: "1000", Help: "most items taken from one feed document (the newest)"},
		{Flag: "feed-memory", Env: "NUDGE_FEED_MEMORY", Default: "720h", Help: "how long an announced article is remembered after it was last in its feed"},
		{Flag: "feed-credentials-dir", Env: "NUDGE_FEED_CREDENTIALS_DIR", Default: "",
			Help: "directory of the files that feeds name as credentials, each an Authorization header value (empty: none)"},
		{Flag: "feed-allow-nets", Env: "NUDGE_FEED_ALLOW_NETS", Default: "",
			Help: "CIDRs that feed fetches may reach although loopback, private or link-local (e.g. 10.20.0.0/16; empty: none)"},

		{Flag: "push-workers", Env: "NUDGE_PUSH_WORKERS", Default: "4", Help: "push batches sent at once by this replica"},
		{Flag: "push-batch", Env: "NUDGE_PUSH_BATCH", Default: "500", Help: "most push jobs per batch (one FCM SendEach call)"},
		{Flag: "max-deliveries", Env: "NUDGE_MAX_DELIVERIES", Default: "5", Help: "deliveries of a push cut short by replica crashes before it goes to the dead-letter queue (failed sends retry until NUDGE_PUSH_TTL)"},
		{Flag: "reclaim-after", Env: "NUDGE_RECLAIM_AFTER", Default: "60s", Help: "how long a replica's own unsettled job (its settle failed) waits before the replica runs it again"},
		{Flag: "heartbeat-ttl", Env: "NUDGE_HEARTBEAT_TTL", Default: "2s", Help: "lifetime of a replica's queue heartbeat; the jobs of a replica silent this long (plus 3/4 of it) move to the others"},
	})
}

// Run is the whole dispatcher process; cmd/dispatcher's main only calls
// it, and the devstack runs it in-process. It returns when ctx ends or
// on SIGINT/SIGTERM, after draining in-flight pushes.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	v, err := config.Parse("dispatcher", Settings(), args, getenv, stderr)
	if err != nil {
		return err
	}
	if len(v.Args()) > 0 {
		return fmt.Errorf("unexpected argument %q", v.Args()[0])
	}
	cfg, shutdown, err := dispatcherConfig(v)
	if err != nil {
		return err
	}
	level, err := v.LogLevel()
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))

	redisTimeouts, err := v.RedisTimeouts()
	if err != nil {
		return err
	}
	rdb, err := config.OpenRedisTimeouts(ctx, service.Archetype{Logger: log}, v.String("redis-url"), v.String("embedded-redis-addr"), redisTimeouts)
	if err != nil {
		return err
	}
	defer rdb.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	allow, err := egress.ParseAllowNets(v.String("feed-allow-nets"))
	if err != nil {
		return err
	}
	if dir := v.String("feed-credentials-dir"); dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("NUDGE_FEED_CREDENTIALS_DIR=%s: not a readable directory: set it to the directory that holds the feeds' credentials files", dir)
		}
	}
	feedClient := egress.New(allow).Client(egress.Config{})
	d, err := New(ctx, service.Archetype{Logger: log, Registerer: reg}, cfg, Deps{Redis: rdb.Client, FeedClient: feedClient})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", v.String("http-addr"))
	if err != nil {
		d.Stop()
		return fmt.Errorf("listen on %s (NUDGE_HTTP_ADDR): %w", v.String("http-addr"), err)
	}
	ping := func(ctx context.Context) error { return rdb.Client.Ping(ctx).Err() }
	hs := &http.Server{Handler: opsHandler(ping, reg), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()

	if err := d.Start(ctx); err != nil {
		_ = hs.Close()
		d.Stop()
		return err
	}
	log.InfoContext(ctx, config.ReadyDispatcher, "addr", ln.Addr().String(), "cluster", rdb.Cluster, "embedded_redis", rdb.Embedded != nil)

	select {
	case err = <-serveErr:
		err = fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	log.InfoContext(ctx, "shutting down: draining in-flight pushes", "timeout", shutdown.String())
	done := make(chan struct{})
	go func() { d.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdown):
		log.WarnContext(ctx, "drain timed out; unacknowledged jobs will be reclaimed by another replica")
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	log.InfoContext(sctx, "stopped")
	return err
}

// opsHandler serves the probes and the metrics.
func opsHandler(ping func(context.Context) error, g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ping(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `{"status":"unavailable","redis":"unreachable"}`)
			return
		}
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}

// dispatcherConfig maps the parsed settings to the dispatcher's Config.
// Every bad value is reported at once.
func dispatcherConfig(v *config.Values) (Config, time.Duration, error) {
	var errs []error
	dur := func(flag string) time.Duration {
		d, err := v.Duration(flag)
		if err == nil && d < 0 {
			err = v.Invalid(flag, "want a positive duration")
		}
		errs = append(errs, err)
		return d
	}
	num := func(flag string) int {
		n, err := v.Int(flag)
		if err == nil && n < 0 {
			err = v.Invalid(flag, "want a positive number")
		}
		errs = append(errs, err)
		return n
	}
	if f := v.String("apns-cert-password-file"); f != "" {
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, fmt.Errorf("read NUDGE_APNS_CERT_PASSWORD_FILE: %w", err))
		}
	}
	cfg := Config{
		Push: push.Config{
			FCMCredentialsFile:   v.String("fcm-credentials-file"),
			FCMEndpoint:          v.String("fcm-endpoint"),
			FCMProjectID:         v.String("fcm-project-id"),
			FCMConcurrency:       num("fcm-concurrency"),
			APNSKeyFile:          v.String("apns-key-file"),
			APNSKeyID:            v.String("apns-key-id"),
			APNSTeamID:           v.String("apns-team-id"),
			APNSCertFile:         v.String("apns-cert-file"),
			APNSCertPasswordFile: v.String("apns-cert-password-file"),
			APNSTopic:            v.String("apns-topic"),
			APNSHost:             v.String("apns-host"),
			APNSSandboxHost:      v.String("apns-sandbox-host"),
			APNSConcurrency:      num("apns-concurrency"),
			APNSTokenRefresh:     dur("apns-token-refresh"),
			CAFile:               v.String("push-ca-file"),
			SyncTask:             v.String("sync-task"),
			DefaultTTL:           dur("push-ttl"),
			SendTimeout:          dur("push-send-timeout"),
			DeviceBackoff:        dur("push-device-backoff"),
			ProviderPause:        dur("push-provider-pause"),
		},
		Apps: apps.Config{File: v.String("apps-file")},
		Throttle: throttle.Config{
			IOS: throttle.Policy{Limit: num("ios-push-limit"), Window: dur("ios-push-window"), MinGap: dur("ios-min-gap"),
				Debounce: dur("debounce"), MaxWait: dur("max-wait")},
			Android: throttle.Policy{Limit: num("android-push-limit"), Window: dur("android-push-window"), MinGap: dur("android-min-gap"),
				Debounce: dur("debounce"), MaxWait: dur("max-wait")},
			AlertLimit: num("alert-limit"), AlertWindow: dur("alert-window"),
		},
		Fanout: fanout.Config{WakeRate: num("wake-rate")},
		Watcher: feeds.Config{
			DefaultInterval: dur("feed-default-interval"),
			RequestTimeout:  dur("feed-timeout"),
			MaxBodyBytes:    int64(num("feed-max-bytes")),
			Concurrency:     num("feed-concurrency"),
			MaxPerHost:      num("feed-max-per-host"),
			FairShare:       dur("feed-fair-share"),
			ParseBudget:     int64(num("feed-parse-budget")),
			Parser:          feeds.ParserConfig{MaxItems: num("feed-max-items")},
			Store:           feeds.StoreConfig{Memory: dur("feed-memory")},
			CredentialsDir:  v.String("feed-credentials-dir"),
		},
		PushWorker: jobs.WorkerConfig{
			Concurrency:    num("push-workers"),
			BatchSize:      num("push-batch"),
			MaxDeliveries:  num("max-deliveries"),
			ReclaimMinIdle: dur("reclaim-after"),
			HeartbeatTTL:   dur("heartbeat-ttl"),
		},
	}
	cfg.Stale = stale.Config{After: dur("stale-after"), Window: dur("stale-window")}
	cfg.Stale.Off = cfg.Stale.After == 0
	// Planning one event is resumable, so the events worker plans in
	// slices shorter than the reclaim time.
	cfg.EventWorker = jobs.WorkerConfig{
		MaxDeliveries:  100,
		ReclaimMinIdle: cfg.PushWorker.ReclaimMinIdle,
		HeartbeatTTL:   cfg.PushWorker.HeartbeatTTL,
		HandlerTimeout: cfg.PushWorker.ReclaimMinIdle / 2,
	}
	if cfg.PushWorker.ReclaimMinIdle > 0 {
		cfg.PushWorker.HandlerTimeout = min(cfg.PushWorker.ReclaimMinIdle/2, time.Minute)
	}
	// A push is retried until it would be stale at the provider.
	cfg.PushWorker.MaxAge = cfg.Push.DefaultTTL
	cfg.Unresponsive = devices.Unresponsive{After: num("unresponsive-after"), Base: dur("unresponsive-probe"), Cap: dur("unresponsive-probe-max")}
	switch u := cfg.Unresponsive; {
	case u.After < 1:
		errs = append(errs, v.Invalid("unresponsive-after", "want at least 1"))
	case u.Base < time.Second:
		errs = append(errs, v.Invalid("unresponsive-probe", "want at least 1s"))
	case u.Cap < u.Base:
		errs = append(errs, v.Invalid("unresponsive-probe-max", "want at least NUDGE_UNRESPONSIVE_PROBE"))
	}
	shutdown := dur("shutdown-timeout")
	check := cfg.Push
	if cfg.Apps.File != "" { // the apps file names the providers, not the single-app settings
		check.Apps = apps.MustSet()
	}
	errs = append(errs, check.Validate())
	return cfg, shutdown, errors.Join(errs...)
}
