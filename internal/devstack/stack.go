// Package devstack runs the whole of nudge on one machine, in one process,
// for a newcomer's first look and for end-to-end tests: Redis (embedded
// unless NUDGE_REDIS_URL is set), the api and the dispatcher exactly as
// they run in production (httpapi.Run and dispatcher.Run), the FCM and APNs
// emulators, a sample news room that publishes articles and pings nudge as
// a CMS does, and a simulated fleet of phones that register, are woken by
// silent pushes, read the new items and post wake receipts.
//
// cmd/devstack (make run) calls Run. Tests build a Stack with New and
// Start, and read nudge's own figures with Stack.Summary.
package devstack

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/dispatcher"
	"github.com/nudge-dev/nudge/internal/httpapi"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/startstop"
	"github.com/nudge-dev/nudge/internal/stats"
)

// DemoPolicy is the throttle policy of the devstack: the production rules
// on a demo time scale, so that deferred, coalesced and sent pushes all
// happen within a minute. Each value yields to the same variable in the
// environment.
var DemoPolicy = map[string]string{
	"NUDGE_DEBOUNCE":            "5s",
	"NUDGE_MAX_WAIT":            "20s",
	"NUDGE_IOS_PUSH_LIMIT":      "3",
	"NUDGE_IOS_PUSH_WINDOW":     "5m",
	"NUDGE_IOS_MIN_GAP":         "20s",
	"NUDGE_ANDROID_PUSH_LIMIT":  "12",
	"NUDGE_ANDROID_PUSH_WINDOW": "5m",
	"NUDGE_ANDROID_MIN_GAP":     "10s",
	"NUDGE_RECLAIM_AFTER":       "20s",
	// The force-quit phones of the fleet (FleetConfig.SilentRate) become
	// unresponsive after 5 pushes and are probed every minute or so.
	"NUDGE_UNRESPONSIVE_PROBE":     "1m",
	"NUDGE_UNRESPONSIVE_PROBE_MAX": "5m",
}

// Config configures a Stack. The zero value runs a small stack on free
// loopback ports.
type Config struct {
	// RedisURL is the Redis both processes share; empty starts an embedded
	// in-memory one on EmbeddedRedisAddr (default "127.0.0.1:0").
	RedisURL          string
	EmbeddedRedisAddr string
	// APIAddr, DispatcherAddr, NewsroomAddr and EmulatorAddr are the listen
	// addresses of the api, the dispatcher's probes and metrics, the news
	// room's feeds and the emulators' control API; default "127.0.0.1:0".
	// The emulators' FCM and APNs listeners always take free ports.
	APIAddr, DispatcherAddr, NewsroomAddr, EmulatorAddr string
	// Devices is the size of the simulated fleet; default 1,000.
	Devices int
	// ArticleInterval is the time between two articles of the news room;
	// default 5s.
	ArticleInterval time.Duration
	// FeedPollInterval is the catalogue poll interval of the news room's
	// feeds; default 1m. The news room's ping makes nudge poll at once.
	FeedPollInterval time.Duration
	// Seed makes the fleet and the news room reproducible; default 1.
	Seed uint64
	// MissRate is the fraction of pushes that do not wake the app; default
	// 0.05 (negative: none).
	MissRate float64
	// LogLevel is the level of the api's and dispatcher's logs; default info.
	LogLevel string
	// Dir holds the generated keys file, feeds file and emulator
	// credentials; default a new temporary directory, removed by Stop.
	Dir string
}

func (c Config) withDefaults() Config {
	loop := "127.0.0.1:0"
	c.EmbeddedRedisAddr = cmp.Or(c.EmbeddedRedisAddr, loop)
	c.APIAddr = cmp.Or(c.APIAddr, loop)
	c.DispatcherAddr = cmp.Or(c.DispatcherAddr, loop)
	c.NewsroomAddr = cmp.Or(c.NewsroomAddr, loop)
	c.EmulatorAddr = cmp.Or(c.EmulatorAddr, loop)
	c.Devices = cmp.Or(c.Devices, 1000)
	c.ArticleInterval = cmp.Or(c.ArticleInterval, 5*time.Second)
	c.FeedPollInterval = cmp.Or(c.FeedPollInterval, time.Minute)
	c.Seed = cmp.Or(c.Seed, 1)
	c.LogLevel = cmp.Or(c.LogLevel, "info")
	return c
}

// Stack is one running devstack. Build it with New, then Start; Stop
// shuts everything down.
type Stack struct {
	cfg    Config
	getenv func(string) string
	logs   io.Writer
	log    *slog.Logger

	dir, ownDir string
	embedded    *miniredis.Miniredis
	redisURL    string
	rdb         redis.UniversalClient
	recorder    *stats.Recorder
	emus        []*appEmulator // one per DevApps entry, in that order
	appsFile    string
	newsroom    *Newsroom
	fleet       *Fleet
	pinger      *apiPinger
	adminKey    string
	apiURL      string
	dispURL     string

	cancel   context.CancelFunc
	procs    sync.WaitGroup
	failed   chan struct{} // closed when the api or the dispatcher ended on its own
	failOnce sync.Once
	procErr  error // the first process error, read after failed is closed

	life startstop.Base

	firstSent atomic.Int64 // unix nanos when Summary first saw a push sent
}

// New prepares a stack. getenv is the environment the api and the
// dispatcher see behind the devstack's own settings (nil: none); logs
// receives their JSON logs and the devstack's own (nil: discarded).
func New(cfg Config, getenv func(string) string, logs io.Writer) (*Stack, error) {
	cfg = cfg.withDefaults()
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if logs == nil {
		logs = io.Discard
	}
	logs = &syncWriter{w: logs}
	if cfg.FeedPollInterval < 30*time.Second {
		return nil, fmt.Errorf("devstack: feed poll interval %s is below the catalogue's minimum of 30s: set NUDGE_DEVSTACK_FEED_POLL_INTERVAL (-feed-poll-interval) to 30s or more", cfg.FeedPollInterval)
	}
	return &Stack{
		cfg: cfg, getenv: getenv, logs: logs,
		log:    slog.New(slog.NewJSONHandler(logs, nil)).With("component", "devstack"),
		failed: make(chan struct{}),
	}, nil
}

// Start brings up Redis, the emulators, the api, the dispatcher, the news
// room and the fleet, in that order, and returns once the api and the
// dispatcher are serving. The fleet registers in the background. On an
// error, what was started is stopped. Call Stop when done. It follows
// startstop: a second Start, or a Start after Stop, returns
// startstop.ErrStarted.
func (s *Stack) Start(ctx context.Context) error {
	return s.life.Start(ctx, func(ctx context.Context) (func(), error) {
		if err := s.start(ctx); err != nil {
			s.stopParts()
			return nil, err
		}
		return s.stopParts, nil
	})
}

func (s *Stack) start(ctx context.Context) (err error) {
	if s.dir = s.cfg.Dir; s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "nudge-devstack-"); err != nil {
			return fmt.Errorf("devstack: create work dir: %w", err)
		}
		s.ownDir = s.dir
	}

	if err := s.startRedis(ctx); err != nil {
		return inUse(err, "embedded Redis", s.cfg.EmbeddedRedisAddr, "NUDGE_EMBEDDED_REDIS_ADDR (-embedded-redis-addr)")
	}
	if err := s.startEmulators(ctx); err != nil {
		return err
	}
	caBundle, err := s.writeCABundle()
	if err != nil {
		return err
	}
	if s.appsFile, err = s.writeAppsFile(); err != nil {
		return err
	}
	keysFile, editorKey, err := s.mintKeys()
	if err != nil {
		return err
	}
	s.pinger = &apiPinger{key: editorKey}
	if s.newsroom, err = NewNewsroom(service.Archetype{Logger: s.log}, NewsroomConfig{Addr: s.cfg.NewsroomAddr, Interval: s.cfg.ArticleInterval, Seed: s.cfg.Seed},
		s.pinger); err != nil {
		return err
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	// The news room serves before the api seeds the catalogue with its
	// URLs; it publishes its first article one interval later.
	if err := s.newsroom.Start(runCtx); err != nil {
		return inUse(err, "news room", s.cfg.NewsroomAddr, "NUDGE_DEVSTACK_NEWSROOM_ADDR (-newsroom-addr)")
	}
	feedsFile, err := s.writeFeedsFile()
	if err != nil {
		return err
	}

	common := map[string]string{
		"NUDGE_REDIS_URL":           s.redisURL,
		"NUDGE_API_KEYS_FILE":       keysFile,
		"NUDGE_FEEDS_FILE":          feedsFile,
		"NUDGE_LOG_LEVEL":           s.cfg.LogLevel,
		"NUDGE_REGISTER_RATE_LIMIT": "-1", // the whole fleet registers from 127.0.0.1
		"NUDGE_SHUTDOWN_TIMEOUT":    "5s",
		"NUDGE_FEED_ALLOW_NETS":     "127.0.0.1/32", // the news room serves its feeds on loopback
		"NUDGE_REQUEST_TIMEOUT":     "5s",           // the whole fleet registers at once on one in-process Redis
	}
	// The single-app settings are the first app's, for an api and a
	// dispatcher that read no apps file; the apps file names both apps.
	for _, kv := range s.emus[0].creds.Env() {
		k, v, _ := strings.Cut(kv, "=")
		common[k] = v
	}
	common["NUDGE_PUSH_CA_FILE"] = caBundle
	common["NUDGE_APPS_FILE"] = s.appsFile
	env := func(addr string) func(string) string {
		return func(k string) string {
			if k == "NUDGE_HTTP_ADDR" {
				return addr
			}
			if v, ok := common[k]; ok {
				return v
			}
			if v := s.getenv(k); v != "" {
				return v
			}
			return DemoPolicy[k]
		}
	}
	apiAddr, err := s.runProcess(ctx, runCtx, "api", config.ReadyAPI, httpapi.Run, env(s.cfg.APIAddr))
	if err != nil {
		return inUse(err, "api", s.cfg.APIAddr, "NUDGE_DEVSTACK_API_ADDR (-api-addr)")
	}
	s.apiURL = "http://" + loopbackAddr(apiAddr)
	dispAddr, err := s.runProcess(ctx, runCtx, "dispatcher", config.ReadyDispatcher, dispatcher.Run, env(s.cfg.DispatcherAddr))
	if err != nil {
		return inUse(err, "dispatcher", s.cfg.DispatcherAddr, "NUDGE_DEVSTACK_DISPATCHER_ADDR (-dispatcher-addr)")
	}
	s.dispURL = "http://" + loopbackAddr(dispAddr)
	if err := newClient(s.apiURL, 1).healthy(ctx); err != nil {
		return fmt.Errorf("devstack: the api did not become healthy: %w", err)
	}
	s.pinger.client.Store(newClient(s.apiURL, 4))

	fleetApps, err := s.servedApps(ctx, editorKey)
	if err != nil {
		return err
	}
	sources := make(mergedSource, len(s.emus))
	for i, e := range s.emus {
		sources[i] = e.emu
	}
	if s.fleet, err = NewFleet(service.Archetype{Logger: s.log},
		FleetConfig{Devices: s.cfg.Devices, Seed: s.cfg.Seed, MissRate: s.cfg.MissRate, Apps: fleetApps},
		s.apiURL, sources); err != nil {
		return err
	}
	return s.fleet.Start(runCtx)
}

// runProcess runs one of nudge's processes (httpapi.Run or dispatcher.Run)
// in a goroutine and waits for its log line ready, which carries the
// address it listens on.
func (s *Stack) runProcess(ctx, runCtx context.Context, name, ready string,
	run func(context.Context, []string, func(string) string, io.Writer, io.Writer) error,
	getenv func(string) string) (string, error) {
	sink := config.NewReadyWriter(s.logs, ready)
	exited := make(chan error, 1)
	s.procs.Add(1)
	go func() {
		defer s.procs.Done()
		err := run(runCtx, nil, getenv, sink, sink)
		exited <- err
		if runCtx.Err() == nil { // it ended on its own
			s.failOnce.Do(func() {
				s.procErr = fmt.Errorf("%s stopped: %w", name, cmp.Or(err, errors.New("no error")))
				close(s.failed)
			})
		}
	}()
	select {
	case addr := <-sink.Ready():
		return addr, nil
	case err := <-exited:
		return "", fmt.Errorf("devstack: %s did not start: %w", name, cmp.Or(err, errors.New("it returned at once")))
	case <-ctx.Done():
		return "", fmt.Errorf("devstack: wait for %s: %w", name, ctx.Err())
	case <-time.After(30 * time.Second):
		return "", fmt.Errorf("devstack: %s did not log %q within 30s", name, ready)
	}
}

// mintKeys mints an admin key for the console and an editor key for the
// news room's pings, writes the keys file and returns its path.
func (s *Stack) mintKeys() (path, editorKey string, err error) {
	admin, err := auth.Mint("devstack-admin", auth.RoleAdmin)
	if err != nil {
		return "", "", fmt.Errorf("devstack: mint admin key: %w", err)
	}
	editor, err := auth.Mint("newsroom-cms", auth.RoleEditor)
	if err != nil {
		return "", "", fmt.Errorf("devstack: mint editor key: %w", err)
	}
	path = filepath.Join(s.dir, "api-keys.txt")
	body := "# minted by the devstack; only hashes are stored\n" + admin.Line + "\n" + editor.Line + "\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		return "", "", fmt.Errorf("devstack: write keys file: %w", err)
	}
	s.adminKey = admin.Key
	return path, editor.Key, nil
}

// writeFeedsFile writes the catalogue of the news room's feeds.
func (s *Stack) writeFeedsFile() (string, error) {
	type feed struct {
		ID           string `json:"id"`
		Title        string `json:"title"`
		URL          string `json:"url"`
		PollInterval string `json:"poll_interval"`
	}
	var list []feed
	for _, f := range NewsroomFeeds {
		list = append(list, feed{f.ID, f.Title, s.newsroom.FeedURL(f.ID), s.cfg.FeedPollInterval.String()})
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return "", fmt.Errorf("devstack: encode feeds file: %w", err)
	}
	path := filepath.Join(s.dir, "feeds.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("devstack: write feeds file: %w", err)
	}
	return path, nil
}

// Stop stops the fleet and the news room, then drains the dispatcher and
// the api, then stops the emulators and Redis. It is safe to call twice or
// before Start.
func (s *Stack) Stop() { s.life.Stop() }

// Stopped is closed once Stop has finished.
func (s *Stack) Stopped() <-chan struct{} { return s.life.Stopped() }

// stopParts stops whatever start started.
func (s *Stack) stopParts() {
	if s.fleet != nil {
		s.fleet.Stop()
	}
	if s.newsroom != nil {
		s.newsroom.Stop()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.procs.Wait()
	for _, e := range s.emus {
		e.emu.Stop()
	}
	if s.rdb != nil {
		_ = s.rdb.Close()
	}
	if s.embedded != nil {
		s.embedded.Close()
	}
	if s.ownDir != "" {
		_ = os.RemoveAll(s.ownDir)
	}
}

// Failed is closed when the api or the dispatcher stopped on its own; Err
// then tells why.
func (s *Stack) Failed() <-chan struct{} { return s.failed }

// Err is the error of the process that stopped on its own, once Failed is
// closed; nil before.
func (s *Stack) Err() error {
	select {
	case <-s.failed:
		return s.procErr
	default:
		return nil
	}
}

// APIURL is the api's base URL, e.g. http://127.0.0.1:8080.
func (s *Stack) APIURL() string { return s.apiURL }

// ConsoleURL is the editors' console.
func (s *Stack) ConsoleURL() string { return s.apiURL + "/console/" }

// DispatcherURL is the base URL of the dispatcher's probes and metrics.
func (s *Stack) DispatcherURL() string { return s.dispURL }

// EmulatorURL is the base URL of the first app's emulators' control API
// (/admin/stats).
func (s *Stack) EmulatorURL() string { return s.emus[0].emu.ControlURL() }

// AppsFile is the apps file the devstack wrote (NUDGE_APPS_FILE).
func (s *Stack) AppsFile() string { return s.appsFile }

// AppEmulatorURLs are the base URLs of each app's emulators' control API,
// by app id.
func (s *Stack) AppEmulatorURLs() map[string]string {
	out := make(map[string]string, len(s.emus))
	for _, e := range s.emus {
		out[e.app.ID] = e.emu.ControlURL()
	}
	return out
}

// NewsroomURL is the base URL of the news room's feeds.
func (s *Stack) NewsroomURL() string { return s.newsroom.URL() }

// AdminKey is the admin API key minted for this run (log in to the console
// with it). Show it only to the operator who started the stack.
func (s *Stack) AdminKey() string { return s.adminKey }

// RedisURL is the Redis the processes share.
func (s *Stack) RedisURL() string { return s.redisURL }

// Embedded reports whether Redis is the embedded in-memory server.
func (s *Stack) Embedded() bool { return s.embedded != nil }

// Fleet is the simulated fleet.
func (s *Stack) Fleet() *Fleet { return s.fleet }

// Newsroom is the sample news room.
func (s *Stack) Newsroom() *Newsroom { return s.newsroom }

// apiPinger pings the api's poll endpoint with the news room's editor key,
// once the api is up.
type apiPinger struct {
	key    string
	client atomic.Pointer[client]
}

// Poll implements Pinger.
func (p *apiPinger) Poll(ctx context.Context, feed string) error {
	c := p.client.Load()
	if c == nil {
		return nil // the api is not up yet; its first poll sees the article
	}
	return c.poll(ctx, p.key, feed)
}

// AddrInUseError is a listen address of the devstack that another program
// already uses. Its message names the setting that moves that part.
type AddrInUseError struct {
	Part    string // "api", "dispatcher", "news room" …
	Addr    string // the address asked for
	Setting string // e.g. "NUDGE_DEVSTACK_API_ADDR (-api-addr)"
	Err     error
}

func (e *AddrInUseError) Error() string {
	env, _, _ := strings.Cut(e.Setting, " ")
	return fmt.Sprintf("the %s cannot listen on %s, which another program is using (is a devstack already running?): stop it, or set %s to a free address, e.g. %s=%s make run",
		e.Part, e.Addr, e.Setting, env, nextPort(e.Addr))
}

func (e *AddrInUseError) Unwrap() error { return e.Err }

// inUse turns err into an *AddrInUseError when it is a listen on addr
// that failed because the address is in use, and returns it as is
// otherwise.
func inUse(err error, part, addr, setting string) error {
	if !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	return &AddrInUseError{Part: part, Addr: addr, Setting: setting, Err: err}
}

// nextPort is addr with the next port number, as a suggestion: ":8080" →
// ":8081".
func nextPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	n, err2 := strconv.Atoi(port)
	if err != nil || err2 != nil || n <= 0 || n >= 65535 {
		return "127.0.0.1:0"
	}
	return net.JoinHostPort(host, strconv.Itoa(n+1))
}

// loopbackAddr turns a wildcard listen address such as "[::]:8080" into
// one a browser on this machine can open, "localhost:8080".
func loopbackAddr(addr string) string {
	for _, p := range []string{"[::]:", "0.0.0.0:", ":"} {
		if rest, ok := strings.CutPrefix(addr, p); ok {
			return "localhost:" + rest
		}
	}
	return addr
}
