// Package freshness measures time-to-fresh: for each new item of a feed,
// the time from its publication until 50 %, 90 % and 99 % of the feed's
// subscribed, background-enabled devices of a platform had synced past
// it (their receipts reported a cursor at or beyond the item's).
//
// When the watcher stores new items, Published snapshots the feed's
// audience per platform (devices.Registry.Audience, cached for
// CensusEvery) into a state per item. When a receipt advances a device's
// cursor (devices.Registry.RecordSync), Synced counts the device on every
// tracked item it passed, and records the latency of each share the count
// reaches, once; a receipt is counted on at most CountMax items per feed
// (the newest it passed). Both are one script in the feed's slot. A share that
// never is reached (devices that never sync) stays unrecorded: the API
// shows it as null.
//
// Redis model (keys from internal/keys; this package owns them):
//
//	fresh:{<feed>}:items  ZSET  tracked cursors (score = member = cursor)
//	fresh:{<feed>}:state  HASH  cursor -> JSON state (track.lua)
//
// Bound: at most Config.Items items per feed, none older than
// Config.Window; a state is a JSON object of about 200 characters.
//
// Counting is approximate where the two scripts cannot be atomic
// together: a receipt whose cursor write succeeded but whose count did
// not (a crash between) is not counted, and a device that subscribed
// after an item was published is counted on it though it was not in its
// audience (a count may exceed the audience; each share is recorded once,
// when first reached).
package freshness

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/service"
)

// Shares are the shares of an item's audience whose time-to-fresh is
// recorded, in percent.
var Shares = []int{50, 90, 99}

// Config configures a Tracker.
type Config struct {
	// Items is the most items tracked per feed. Default 1,000.
	Items int
	// Window is how long an item is tracked after its publication.
	// Default 24h.
	Window time.Duration
	// CensusEvery is how long a feed's audience count is reused before
	// it is counted again. Default 5m.
	CensusEvery time.Duration
	// CountMax is the most items one receipt is counted on per feed: the
	// newest it passed. A device back after a long time is not counted on
	// the older items it skipped. Default 100.
	CountMax int
}

func (c *Config) validate() error {
	if c.Items < 1 || c.Window < time.Minute || c.CensusEvery < 0 || c.CountMax < 1 {
		return errors.New("freshness: Items ≥ 1, Window ≥ 1m, CensusEvery ≥ 0, CountMax ≥ 1")
	}
	return nil
}

// Audience counts a feed's subscribed, background-enabled devices per
// platform; *devices.Registry is one.
type Audience interface {
	Audience(ctx context.Context, feed string) (map[string]int64, error)
}

// Tracker records and reads time-to-fresh. It is safe for concurrent use.
type Tracker struct {
	rdb      redis.UniversalClient
	audience Audience
	cfg      Config
	clock    func() time.Time

	mu     sync.Mutex
	census map[string]census
}

type census struct {
	counts map[string]int64
	at     time.Time
}

// New returns a Tracker. audience may be nil for a Tracker that only
// counts receipts and reads (the api).
func New(a service.Archetype, rdb redis.UniversalClient, audience Audience, cfg Config) (*Tracker, error) {
	a = a.WithDefaults()
	cfg.Items = cmp.Or(cfg.Items, 1000)
	cfg.Window = cmp.Or(cfg.Window, 24*time.Hour)
	cfg.CensusEvery = cmp.Or(cfg.CensusEvery, 5*time.Minute)
	cfg.CountMax = cmp.Or(cfg.CountMax, 100)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Tracker{rdb: rdb, audience: audience, cfg: cfg, clock: a.Clock, census: map[string]census{}}, nil
}

//go:embed track.lua
var trackLua string

var trackScript = redis.NewScript(trackLua)

//go:embed cross.lua
var crossLua string

var crossScript = redis.NewScript(crossLua)

// Published starts tracking the items (since, head] of feed, published
// now by Redis's clock.
func (t *Tracker) Published(ctx context.Context, feed string, since, head int64) error {
	now, err := t.rdb.Time(ctx).Result()
	if err != nil {
		return fmt.Errorf("freshness of %s: read redis time: %w", feed, err)
	}
	return t.PublishedAt(ctx, feed, since, head, now)
}

// PublishedAt starts tracking the items (since, head] of feed as published
// at at, with the feed's audience per platform. Items already tracked
// keep their state, so a repeated call changes nothing.
func (t *Tracker) PublishedAt(ctx context.Context, feed string, since, head int64, at time.Time) error {
	if head <= since {
		return nil
	}
	counts, err := t.audienceOf(ctx, feed)
	if err != nil {
		return fmt.Errorf("freshness of %s: count audience: %w", feed, err)
	}
	args := []any{since, head, at.UnixMilli(), t.cfg.Items, t.cfg.Window.Milliseconds()}
	for pl, n := range counts {
		args = append(args, pl, n)
	}
	if err := trackScript.Run(ctx, t.rdb, []string{keys.FreshItems(feed), keys.FreshState(feed)}, args...).Err(); err != nil {
		return fmt.Errorf("freshness of %s: track items: %w", feed, err)
	}
	return nil
}

// audienceOf returns feed's audience, counted at most once per
// CensusEvery. An empty count is not reused: a feed that had no audience
// (a fresh deployment, devices still registering) is counted again on its
// next item, so its first subscribers' items are measured at once.
func (t *Tracker) audienceOf(ctx context.Context, feed string) (map[string]int64, error) {
	if t.audience == nil {
		return nil, errors.New("no audience counter")
	}
	now := t.clock()
	t.mu.Lock()
	c, ok := t.census[feed]
	t.mu.Unlock()
	if ok && len(c.counts) > 0 && now.Sub(c.at) < t.cfg.CensusEvery {
		return c.counts, nil
	}
	counts, err := t.audience.Audience(ctx, feed)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.census[feed] = census{counts: counts, at: now}
	t.mu.Unlock()
	return counts, nil
}

// Reached is a share of an item's audience that a Synced call reached.
type Reached struct {
	Feed     string
	Cursor   int64
	Platform string
	Share    int // percent
	Latency  time.Duration
}

// Synced counts a device's receipt (what devices.Registry.RecordSync
// did) on every tracked item its advances passed, one script per feed in
// one pipeline, and returns the shares it made reach. A device with
// background sync off is in no audience and counts for nothing.
func (t *Tracker) Synced(ctx context.Context, s devices.Synced) ([]Reached, error) {
	platform, at, adv := s.Platform, s.At, s.Advanced
	if len(adv) == 0 || !s.Background {
		return nil, nil
	}
	pipe := t.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(adv))
	args := make([][]any, len(adv))
	for i, a := range adv {
		args[i] = []any{platform, a.From, a.To, at.UnixMilli(), t.cfg.CountMax}
		for _, s := range Shares {
			args[i] = append(args[i], s)
		}
		cmds[i] = crossScript.EvalSha(ctx, pipe, crossKeys(a.Feed), args[i]...)
	}
	_, _ = pipe.Exec(ctx) // errors are per command, checked below
	for i, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") { // not cached yet: Run loads it
			cmds[i] = crossScript.Run(ctx, t.rdb, crossKeys(adv[i].Feed), args[i]...)
		}
	}
	var out []Reached
	for i, c := range cmds {
		vals, err := c.Int64Slice()
		if err != nil {
			return nil, fmt.Errorf("freshness of %s: count a sync: %w", adv[i].Feed, err)
		}
		for j := 0; j+2 < len(vals); j += 3 {
			out = append(out, Reached{Feed: adv[i].Feed, Cursor: vals[j], Platform: platform,
				Share: int(vals[j+1]), Latency: time.Duration(vals[j+2]) * time.Millisecond})
		}
	}
	return out, nil
}

func crossKeys(feed string) []string { return []string{keys.FreshItems(feed), keys.FreshState(feed)} }

// Item is the time-to-fresh of one tracked item.
type Item struct {
	Feed      string
	Cursor    int64
	Published time.Time
	// Platforms has an entry per platform with an audience.
	Platforms map[string]Platform
}

// Platform is an item's time-to-fresh on one platform.
type Platform struct {
	Audience int64 // subscribed, background-enabled devices when published
	Synced   int64 // devices that synced past the item since
	// Latency has the time-to-fresh of each share reached, by percent; a
	// share not reached is absent.
	Latency map[int]time.Duration
}

type state struct {
	P int64            `json:"p"`
	D map[string]int64 `json:"d"`
	N map[string]int64 `json:"n"`
	L map[string]int64 `json:"l"`
}

// Items returns the tracked items of feed published at or after since,
// oldest first.
func (t *Tracker) Items(ctx context.Context, feed string, since time.Time) ([]Item, error) {
	cursors, err := t.rdb.ZRange(ctx, keys.FreshItems(feed), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("freshness of %s: read items: %w", feed, err)
	}
	if len(cursors) == 0 {
		return nil, nil
	}
	raws, err := t.rdb.HMGet(ctx, keys.FreshState(feed), cursors...).Result()
	if err != nil {
		return nil, fmt.Errorf("freshness of %s: read states: %w", feed, err)
	}
	var out []Item
	for i, raw := range raws {
		s, ok := raw.(string)
		if !ok {
			continue // trimmed between the two reads
		}
		st, err := decodeState(s)
		if err != nil {
			return nil, fmt.Errorf("freshness of %s: item %s: %w", feed, cursors[i], err)
		}
		pub := time.UnixMilli(st.P)
		if pub.Before(since) {
			continue
		}
		c, _ := strconv.ParseInt(cursors[i], 10, 64)
		it := Item{Feed: feed, Cursor: c, Published: pub, Platforms: map[string]Platform{}}
		for pl, aud := range st.D {
			p := Platform{Audience: aud, Synced: st.N[pl], Latency: map[int]time.Duration{}}
			for _, sh := range Shares {
				if ms, ok := st.L[pl+":"+strconv.Itoa(sh)]; ok {
					p.Latency[sh] = time.Duration(ms) * time.Millisecond
				}
			}
			it.Platforms[pl] = p
		}
		out = append(out, it)
	}
	return out, nil
}
