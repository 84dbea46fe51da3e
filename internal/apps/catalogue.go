package apps

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/startstop"
)

// Errors of the catalogue's edits.
var (
	ErrNotFound = errors.New("no such app")
	ErrLastApp  = errors.New("the last app cannot be deleted: add another app first")
)

// FeedChecker tells which feed ids the feed catalogue lacks;
// *catalog.Store is one.
type FeedChecker interface {
	Missing(ctx context.Context, ids []string) ([]string, error)
}

// Config configures a Catalogue. Zero fields take the defaults.
type Config struct {
	// File is the apps file (NUDGE_APPS_FILE). Empty: Single is the one
	// base app.
	File string
	// Single is the base app when File is empty: the app the single-app
	// settings define. Zero: Single(nil, nil), the default app without
	// provider details (the api's view: only the dispatcher holds them).
	Single App
	// Feeds, when set, is asked which feeds the file's apps offer that the
	// feed catalogue lacks; those are logged as warnings, not refused.
	Feeds FeedChecker
	// FilePoll is how often the file's content is checked. Default 2s.
	FilePoll time.Duration
	// Refresh is how often the edits are re-read from Redis even without
	// a change notice (one lost while Redis was away). Default 30s.
	Refresh time.Duration
}

func (c *Config) validate() error {
	if c.FilePoll <= 0 || c.Refresh <= 0 {
		return errors.New("apps: FilePoll and Refresh must be positive")
	}
	return nil
}

// record is one admin edit as stored in the keys.Apps hash: an app that
// adds or replaces a base app, or a tombstone that hides one.
type record struct {
	App     *App `json:"app,omitempty"`
	Deleted bool `json:"deleted,omitempty"`
}

// tombstone is the stored form of a deleted base app; edit.lua compares
// records with it byte for byte.
const tombstone = `{"deleted":true}`

// edit.lua puts or deletes one app and announces the change.
//
//go:embed edit.lua
var editLua string

var editScript = redis.NewScript(editLua)

var _ Source = (*Catalogue)(nil)

// Catalogue is the live app catalogue: the base apps (the apps file, or
// the single-app settings without one) overlaid by the admin edits kept in
// Redis. Current is lock-free; the watch loop (Start) swaps in a new Set
// when the file's content changes, when another replica announces an edit
// on Redis Pub/Sub (re-read at once after a reconnect, so a Redis restart
// loses no change), and every Refresh in any case. A broken new file is
// logged and counted, and the previous apps stay.
type Catalogue struct {
	log   *slog.Logger
	clock func() time.Time
	rdb   redis.UniversalClient
	cfg   Config
	cur   atomic.Pointer[Set]

	mu    sync.Mutex
	base  []App
	edits map[string]record
	subs  map[chan struct{}]struct{}
	// gen counts this replica's own edits; a reload whose read began
	// before one is dropped (the edit's own notice reloads again).
	gen uint64

	fileSum [sha256.Size]byte // of the file's content last seen, good or not; the loop's alone

	life    startstop.Base
	size    prometheus.Gauge
	errs    *prometheus.CounterVec
	lastRun prometheus.Gauge
}

// NewCatalogue reads the apps file (an error names the app and field) and
// the edits in Redis (without them while Redis does not answer), and registers the catalogue's metrics on
// a.Registerer. It starts no loop: Start does.
func NewCatalogue(ctx context.Context, a service.Archetype, rdb redis.UniversalClient, cfg Config) (*Catalogue, error) {
	a = a.WithDefaults()
	cfg.FilePoll = cmp.Or(cfg.FilePoll, 2*time.Second)
	cfg.Refresh = cmp.Or(cfg.Refresh, 30*time.Second)
	if cfg.Single.ID == "" {
		cfg.Single = Single(nil, nil)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Catalogue{
		log: a.Logger, clock: a.Clock, rdb: rdb, cfg: cfg,
		base: []App{cfg.Single}, subs: map[chan struct{}]struct{}{},
		size: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nudge_apps", Help: "Apps in the catalogue (apps file or single-app settings, with the admin edits)."}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nudge_apps_reload_errors_total",
			Help: "Reloads of the app catalogue that failed, by source: file (a broken apps file, the previous apps stay) or redis (the edits could not be read)."}, []string{"source"}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nudge_apps_last_reload_timestamp_seconds",
			Help: "When the app catalogue was last loaded without error (unix seconds)."}),
	}
	c.errs.WithLabelValues("file")
	c.errs.WithLabelValues("redis")
	if err := a.Register(c.size, c.errs, c.lastRun); err != nil {
		return nil, err
	}
	if cfg.File != "" {
		b, err := os.ReadFile(cfg.File)
		if err != nil {
			return nil, fmt.Errorf("NUDGE_APPS_FILE: read apps file: %w", err)
		}
		list, err := Parse(bytes.NewReader(b), cfg.File)
		if err != nil {
			return nil, fmt.Errorf("NUDGE_APPS_FILE: %w", err)
		}
		c.fileSum = sha256.Sum256(b)
		c.base = list
		c.warnUnknownFeeds(ctx, list)
	}
	// Redis may be away while a process starts: it then starts on the
	// base apps and the watch loop's next reload (a change notice, or
	// Refresh) brings the edits in.
	edits, err := c.readEdits(ctx)
	if err != nil {
		c.log.WarnContext(ctx, "app catalogue: starting without the admin edits until Redis answers", "err", err)
		c.errs.WithLabelValues("redis").Inc()
		edits = map[string]record{}
	}
	c.mu.Lock()
	c.edits = edits
	c.rebuildLocked()
	c.mu.Unlock()
	c.lastRun.Set(float64(c.clock().Unix()))
	c.log.InfoContext(ctx, "app catalogue loaded", "apps", c.Current().String(), "file", cfg.File, "edits", len(edits))
	return c, nil
}

// Current returns the current apps. It never blocks.
func (c *Catalogue) Current() *Set { return c.cur.Load() }

// Subscribe returns a channel that receives a value after each change of
// Current (changes close together may arrive as one), and the function
// that cancels the subscription.
func (c *Catalogue) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}
}

// Put stores app as an admin edit, replacing the base app of that id if
// there is one, and announces it to every replica. It reports whether the
// app is new. An invalid app is a *FieldError; whether its feeds exist is
// the caller's check.
func (c *Catalogue) Put(ctx context.Context, app App) (created bool, err error) {
	if err := app.Validate(); err != nil {
		return false, err
	}
	if len(app.Feeds) == 0 {
		app.Feeds = nil // as it reads back from Redis: all feeds
	}
	b, err := json.Marshal(record{App: &app})
	if err != nil {
		return false, fmt.Errorf("encode app %s: %w", app.ID, err)
	}
	n, err := c.edit(ctx, app.ID, string(b))
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	c.gen++
	c.edits[app.ID] = record{App: &app}
	c.rebuildLocked()
	c.mu.Unlock()
	return n == 1, nil
}

// Delete removes an app: an edited one's edit, a base one behind a
// tombstone. It is ErrNotFound for an app that is not there and ErrLastApp
// for the last one.
func (c *Catalogue) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return ErrNotFound
	}
	switch n, err := c.edit(ctx, id, ""); {
	case err != nil:
		return err
	case n == 0:
		return ErrNotFound
	case n < 0:
		return ErrLastApp
	}
	c.mu.Lock()
	c.gen++
	delete(c.edits, id)
	for _, a := range c.base {
		if a.ID == id {
			c.edits[id] = record{Deleted: true}
		}
	}
	c.rebuildLocked()
	c.mu.Unlock()
	return nil
}

// edit runs edit.lua for app id with rec ("" deletes).
func (c *Catalogue) edit(ctx context.Context, id, rec string) (int, error) {
	c.mu.Lock()
	args := []any{keys.AppsChanged(), id, rec, tombstone}
	for _, a := range c.base {
		args = append(args, a.ID)
	}
	c.mu.Unlock()
	n, err := editScript.Run(ctx, c.rdb, []string{keys.Apps()}, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("edit app %s: %w", id, err)
	}
	return n, nil
}

// Start starts the watch loop: the apps file every FilePoll, the edits on
// every change notice and every Refresh. Stop stops it (startstop).
func (c *Catalogue) Start(ctx context.Context) error {
	return c.life.Start(ctx, func(ctx context.Context) (func(), error) {
		// The subscription reconnects by itself; each (re)subscription
		// arrives on the channel too, and reloads, so notices sent while
		// Redis was away are not missed.
		ps := c.rdb.Subscribe(ctx, keys.AppsChanged())
		halt, err := startstop.Loop(func(ctx context.Context) { c.watch(ctx, ps.ChannelWithSubscriptions()) })(ctx)
		if err != nil {
			_ = ps.Close()
			return nil, err
		}
		return func() { halt(); _ = ps.Close() }, nil
	})
}

// Stop stops the watch loop; it is safe to call twice or before Start.
func (c *Catalogue) Stop() { c.life.Stop() }

// Stopped is closed once Stop has stopped the loop.
func (c *Catalogue) Stopped() <-chan struct{} { return c.life.Stopped() }

func (c *Catalogue) watch(ctx context.Context, notices <-chan any) {
	var fileC <-chan time.Time
	if c.cfg.File != "" {
		t := time.NewTicker(c.cfg.FilePoll)
		defer t.Stop()
		fileC = t.C
	}
	refresh := time.NewTicker(c.cfg.Refresh)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-fileC:
			c.reloadFile(ctx)
		case <-notices:
			for drained := false; !drained; { // one reload for a burst of notices
				select {
				case <-notices:
				default:
					drained = true
				}
			}
			c.reloadEdits(ctx)
		case <-refresh.C:
			c.reloadEdits(ctx)
		}
	}
}

// reloadFile re-reads the apps file when its content changed. A file that
// cannot be read or parsed is logged and counted once per content, and
// the previous apps stay.
func (c *Catalogue) reloadFile(ctx context.Context) {
	b, err := os.ReadFile(c.cfg.File)
	sum := sha256.Sum256(b)
	if err != nil {
		sum = sha256.Sum256([]byte("read error: " + err.Error()))
	}
	if sum == c.fileSum {
		return
	}
	c.fileSum = sum
	var list []App
	if err == nil {
		list, err = Parse(bytes.NewReader(b), c.cfg.File)
	}
	if err != nil {
		c.log.ErrorContext(ctx, "apps file rejected: the previous apps stay until it is fixed", "file", c.cfg.File, "err", err)
		c.errs.WithLabelValues("file").Inc()
		return
	}
	c.warnUnknownFeeds(ctx, list)
	c.mu.Lock()
	c.base = list
	changed := c.rebuildLocked()
	c.mu.Unlock()
	c.lastRun.Set(float64(c.clock().Unix()))
	if changed {
		c.log.InfoContext(ctx, "apps file reloaded", "file", c.cfg.File, "apps", c.Current().String())
	}
}

// reloadEdits re-reads the admin edits from Redis.
func (c *Catalogue) reloadEdits(ctx context.Context) {
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	edits, err := c.readEdits(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.WarnContext(ctx, "reload the app catalogue's edits: keeping the current apps", "err", err)
			c.errs.WithLabelValues("redis").Inc()
		}
		return
	}
	c.mu.Lock()
	if c.gen != gen { // an edit of ours may be missing from what was read
		c.mu.Unlock()
		return
	}
	c.edits = edits
	changed := c.rebuildLocked()
	c.mu.Unlock()
	c.lastRun.Set(float64(c.clock().Unix()))
	if changed {
		c.log.InfoContext(ctx, "app catalogue edits reloaded", "apps", c.Current().String())
	}
}

// readEdits reads the edits hash. A record that does not decode to a
// valid app is logged, counted and skipped.
func (c *Catalogue) readEdits(ctx context.Context) (map[string]record, error) {
	raw, err := c.rdb.HGetAll(ctx, keys.Apps()).Result()
	if err != nil {
		return nil, fmt.Errorf("read the app catalogue's edits: %w", err)
	}
	out := make(map[string]record, len(raw))
	for id, v := range raw {
		r, err := decodeRecord(id, v)
		if err != nil {
			c.log.ErrorContext(ctx, "app catalogue edit skipped", "app", id, "err", err)
			c.errs.WithLabelValues("redis").Inc()
			continue
		}
		out[id] = r
	}
	return out, nil
}

func decodeRecord(id, v string) (record, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	dec.DisallowUnknownFields()
	var r record
	if err := dec.Decode(&r); err != nil {
		return record{}, fmt.Errorf("decode: %w", err)
	}
	switch {
	case r.Deleted && r.App == nil:
		return r, nil
	case r.App == nil || r.Deleted:
		return record{}, errors.New("want an app or a tombstone")
	case r.App.ID != id:
		return record{}, fmt.Errorf("holds app %q", r.App.ID)
	}
	return r, r.App.Validate()
}

// rebuildLocked makes the Set of base and edits current and reports
// whether it differs from the one before; subscribers hear of a change.
// c.mu is held.
func (c *Catalogue) rebuildLocked() bool {
	m := make(map[string]App, len(c.base)+len(c.edits))
	for _, a := range c.base {
		m[a.ID] = a
	}
	for id, r := range c.edits {
		if r.App == nil {
			delete(m, id)
		} else {
			m[id] = *r.App
		}
	}
	if old := c.cur.Load(); old != nil && reflect.DeepEqual(old.byID, m) {
		return false
	}
	c.cur.Store(setOf(m))
	c.size.Set(float64(len(m)))
	for ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return true
}

// warnUnknownFeeds logs the feeds that the file's apps offer and the feed
// catalogue lacks: an app may name a feed before it is added.
func (c *Catalogue) warnUnknownFeeds(ctx context.Context, list []App) {
	if c.cfg.Feeds == nil {
		return
	}
	for _, a := range list {
		if len(a.Feeds) == 0 {
			continue
		}
		missing, err := c.cfg.Feeds.Missing(ctx, a.Feeds)
		if err != nil {
			c.log.WarnContext(ctx, "could not check the feeds of an app", "app", a.ID, "err", err)
			continue
		}
		if len(missing) > 0 {
			c.log.WarnContext(ctx, "app offers feeds that are not in the feed catalogue", "app", a.ID, "feeds", missing)
		}
	}
}
