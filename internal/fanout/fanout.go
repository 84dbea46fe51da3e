// Package fanout turns one event (a feed change or an editor trigger) into at
// most one push decision per subscribed device.
//
// An editor's event names its app (Event.App) and reaches only that app's
// subscribers, even for a feed id other apps offer too; a feed change
// names none and reaches the subscribers of every app.
//
// Publish stores the event (package events). Plan walks the subscribers of
// the event's feeds (the registry's Subscribers) in windows of
// Config.Window device ids, one decision per device however many of its
// feeds changed, and hands each window to the throttle, which
// decides and enqueues atomically per partition. Devices are handed over
// grouped by which of the event's feeds they follow, so each push names
// only those feeds, each with its cursor; a device that follows none of
// them is not targeted. After each window the
// cursor and the window's counts are checkpointed in the event in one
// step, so a killed planner resumes at the first window it had not
// checkpointed. Re-running that window is safe: the throttle remembers the
// events it applied to each device and reports a repeat with its original
// outcome, so the counters stay exact.
//
// The event hash (definition, cursor, counts) belongs to package events;
// the subscription bitmaps and the device id sequence to the device
// registry, which the planner walks through its Subscribers API. The
// throttle's deferred and coalesced decisions are counted into the fleet
// stats through the planner's Stats.
package fanout

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/events"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stats"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// Alert is the visible part of a breaking event, shown by the app.
type Alert struct {
	Title string `json:"title"`
	Body  string `json:"body"`
}

// Event is one change that subscribed devices should sync.
type Event struct {
	ID string `json:"id"`
	// App scopes the event to one app's devices (an editor's sync); empty
	// reaches the subscribers of every app (a feed change).
	App    string           `json:"app,omitempty"`
	Feeds  []string         `json:"feeds"`           // feeds that changed; their subscribers are targeted
	Lane   string           `json:"lane"`            // throttle.LaneFeed or throttle.LaneBreaking
	Reason string           `json:"reason"`          // "feed", "breaking" or "stale"
	Since  map[string]int64 `json:"since,omitempty"` // per feed, the cursor to fetch from
	// Until is, per feed, the end of the closed range (Since, Until] the
	// push names: every device this event wakes reads the same range.
	Until map[string]int64 `json:"until,omitempty"`
	Alert *Alert           `json:"alert,omitempty"` // optional visible alert (breaking lane)
	// Audience optionally narrows the subscribers targeted; subscribers
	// outside it are not targeted at all.
	Audience  *Audience `json:"audience,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// MaxFeeds is the most feeds one event names.
const MaxFeeds = 64

// ErrInvalidEvent is returned by Publish for an event that cannot be planned.
var ErrInvalidEvent = errors.New("invalid event")

// ErrNotFound is returned for an event id that has no event hash; it is
// events.ErrNotFound.
var ErrNotFound = events.ErrNotFound

func (e Event) validate() error {
	switch {
	case e.ID == "" || len(e.ID) > 128:
		return fmt.Errorf("event id %q: want 1 to 128 bytes: %w", e.ID, ErrInvalidEvent)
	case len(e.Feeds) == 0 || len(e.Feeds) > MaxFeeds:
		return fmt.Errorf("event %s has %d feeds: want 1 to %d: %w", e.ID, len(e.Feeds), MaxFeeds, ErrInvalidEvent)
	case e.Lane != throttle.LaneFeed && e.Lane != throttle.LaneBreaking:
		return fmt.Errorf("event %s lane %q: want %q or %q: %w", e.ID, e.Lane, throttle.LaneFeed, throttle.LaneBreaking, ErrInvalidEvent)
	case e.App != "" && !apps.ValidID(e.App):
		return fmt.Errorf("event %s app %q is not an app id: %w", e.ID, e.App, ErrInvalidEvent)
	case e.Reason != "feed" && e.Reason != "breaking" && e.Reason != "stale":
		return fmt.Errorf("event %s reason %q: want feed, breaking or stale: %w", e.ID, e.Reason, ErrInvalidEvent)
	}
	return nil
}

// throttleLane is the throttle lane of the event's pushes: a breaking
// event with a visible alert goes on the alert lane, which is sent at once
// whatever the silent budget (throttle's package comment).
func (e Event) throttleLane() string {
	if e.Lane == throttle.LaneBreaking && e.Alert != nil && (e.Alert.Title != "" || e.Alert.Body != "") {
		return throttle.LaneAlert
	}
	return e.Lane
}

// Decider decides and enqueues pushes for a batch of devices;
// *throttle.Throttle implements it.
type Decider interface {
	Decide(ctx context.Context, u throttle.Update, devices []uint64) (throttle.Counts, error)
}

// Subscribers walks the subscription bitmaps of the device registry;
// *devices.Registry is one.
type Subscribers interface {
	// MaxID is the highest device id handed out so far.
	MaxID(ctx context.Context) (uint64, error)
	// Subscribers returns the devices of app ("": every app) in
	// [start, start+n) subscribed to any of feeds, ascending, each with its
	// mask of feeds.
	Subscribers(ctx context.Context, app string, feeds []string, start uint64, n int) ([]devices.Subscriber, error)
}

// Stats counts the throttle's deferred and coalesced decisions into the
// fleet stats (sent, pruned and failed are counted by delivery);
// *stats.Recorder is one.
type Stats interface {
	Pushes(ctx context.Context, counts ...stats.Count) error
}

// Config configures a Planner. Zero fields take the defaults.
type Config struct {
	// Window is how many device ids one walk step covers (default 32768,
	// 64 partitions x 512). A power of two from 8 to 65536.
	Window int
	// WakeRate paces the fan-out: at most this many devices per second
	// and feed are handed to the throttle, across every planner replica
	// (NUDGE_WAKE_RATE; pace.go). 0 paces nothing.
	WakeRate int
}

func (c Config) withDefaults() Config {
	c.Window = cmp.Or(c.Window, 32768)
	return c
}

func (c Config) validate() error {
	if c.Window < 8 || c.Window > devices.MaxWindow || c.Window&(c.Window-1) != 0 {
		return fmt.Errorf("fanout: window %d: set Window to a power of two from 8 to %d", c.Window, devices.MaxWindow)
	}
	if c.WakeRate < 0 {
		return fmt.Errorf("fanout: wake rate %d: set NUDGE_WAKE_RATE to pushes per second per feed, or 0 for no pacing", c.WakeRate)
	}
	return nil
}

// Deps are a Planner's collaborators.
type Deps struct {
	Events      *events.Store // required: the event hashes
	Subscribers Subscribers   // required: the subscription walk
	Decider     Decider       // required: decides and enqueues
	// Stats receives the deferred and coalesced counts of every decision;
	// nil counts nothing.
	Stats Stats
	// Profiles filters events with an audience; nil refuses such events
	// (ErrNoProfiles).
	Profiles Profiles
	// Redis holds the wake pacing slots; required when Config.WakeRate is
	// set.
	Redis redis.UniversalClient
}

// Planner publishes events and plans their fan-out.
type Planner struct {
	cfg    Config
	events *events.Store
	subs   Subscribers
	th     Decider
	stats  Stats
	log    *slog.Logger
	// profiles filters events with an audience.
	profiles Profiles
	clock    func() time.Time
	// pace spaces the fan-out at Config.WakeRate; nil when it is 0.
	pace *pacer

	outcomes *prometheus.CounterVec
	windows  prometheus.Counter
	planned  prometheus.Counter
}

// New returns a Planner that reads a's clock, logs to a's logger and
// registers its metrics on a's registerer.
func New(a service.Archetype, cfg Config, d Deps) (*Planner, error) {
	a = a.WithDefaults()
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if d.Events == nil || d.Subscribers == nil || d.Decider == nil {
		return nil, errors.New("fanout: Events, Subscribers and Decider are required")
	}
	p := &Planner{
		cfg:      cfg,
		events:   d.Events,
		subs:     d.Subscribers,
		th:       d.Decider,
		stats:    d.Stats,
		log:      a.Logger,
		profiles: d.Profiles,
		clock:    a.Clock,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_fanout_devices_total",
			Help: "Devices planned by fan-out, by throttle outcome.",
		}, []string{"outcome"}),
		windows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_fanout_windows_total",
			Help: "Subscription windows walked and checkpointed.",
		}),
		planned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_fanout_events_planned_total",
			Help: "Events whose fan-out completed.",
		}),
	}
	if cfg.WakeRate > 0 {
		if d.Redis == nil {
			return nil, errors.New("fanout: Redis is required with a wake rate")
		}
		p.pace = newPacer(d.Redis, cfg.WakeRate)
	}
	if err := a.Register(p.outcomes, p.windows, p.planned); err != nil {
		return nil, fmt.Errorf("fanout: %w", err)
	}
	return p, nil
}

// NewID returns a fresh event id from the event counter.
func (p *Planner) NewID(ctx context.Context) (string, error) { return p.events.NewID(ctx) }

// Publish stores ev under its id and reports whether it was new. Publishing
// an id again is a no-op that returns false, so callers can derive ids from
// what happened (feed and cursor) and publish idempotently. CreatedAt
// defaults to the clock.
func (p *Planner) Publish(ctx context.Context, ev Event) (bool, error) {
	if err := ev.validate(); err != nil {
		return false, err
	}
	if ev.CreatedAt.IsZero() {
		ev.CreatedAt = p.clock()
	}
	def, err := json.Marshal(ev)
	if err != nil {
		return false, fmt.Errorf("encode event %s: %w", ev.ID, err)
	}
	return p.events.Create(ctx, ev.ID, def)
}

// Event returns the published event id.
func (p *Planner) Event(ctx context.Context, id string) (Event, error) {
	raw, err := p.events.Definition(ctx, id)
	if err != nil {
		return Event{}, err
	}
	var ev Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		return Event{}, fmt.Errorf("decode event %s: %w", id, err)
	}
	return ev, nil
}

// Progress is the state of one event's fan-out and of its pushes
// (events.Progress).
type Progress = events.Progress

// Progress states (events.StatePlanning and so on).
const (
	StatePlanning = events.StatePlanning
	StateSending  = events.StateSending
	StateDone     = events.StateDone
)

// Progress returns the progress of event id.
func (p *Planner) Progress(ctx context.Context, id string) (Progress, error) {
	return p.events.Progress(ctx, id)
}

// Outcome is what happened to a push, as recorded by the push worker
// (events.Outcome).
type Outcome = events.Outcome

// Push outcomes (events.OutcomeSent and so on).
const (
	OutcomeSent       = events.OutcomeSent
	OutcomePruned     = events.OutcomePruned
	OutcomeFailed     = events.OutcomeFailed
	OutcomeSuperseded = events.OutcomeSuperseded
	// OutcomeUnresponsive: held back because the device is unresponsive.
	OutcomeUnresponsive = events.OutcomeUnresponsive
	OutcomeSkipped      = events.OutcomeSkipped
)

// Record counts one push outcome for each entry of eventIDs
// (events.Store.Record).
func (p *Planner) Record(ctx context.Context, eventIDs []string, o Outcome) error {
	return p.events.Record(ctx, eventIDs, o)
}

// RecordSkipped counts one device as skipped for each entry of eventIDs:
// the throttle's scheduler dropped its pending push (throttle.Recorder).
func (p *Planner) RecordSkipped(ctx context.Context, eventIDs []string) error {
	return p.events.Record(ctx, eventIDs, OutcomeSkipped)
}

// Plan walks the subscribers of event id from its checkpoint and hands them
// to the throttle, window by window. It returns the progress when the walk
// is complete; planning a completed event again returns at once.
func (p *Planner) Plan(ctx context.Context, id string) (Progress, error) {
	ev, err := p.Event(ctx, id)
	if err != nil {
		return Progress{}, err
	}
	pr, err := p.Progress(ctx, id)
	if err != nil {
		return Progress{}, err
	}
	if pr.Done {
		return pr, nil
	}
	seq, err := p.subs.MaxID(ctx)
	if err != nil {
		return pr, fmt.Errorf("plan event %s: %w", id, err)
	}
	win := uint64(p.window())
	cur := pr.Cursor / win * win
	// The next window's subscribers are read while the throttle decides the
	// current one, so the bitmap reads and the id extraction overlap with
	// the Redis work of the decision.
	pre := p.prefetch(ctx, ev, cur)
	defer func() { pre.wait() }()
	for cur <= seq {
		next := cur + win
		subs, err := pre.wait()
		if err == nil {
			subs, err = p.narrow(ctx, ev, subs)
		}
		if err != nil {
			return pr, fmt.Errorf("plan event %s at %d: %w", id, cur, err)
		}
		if next <= seq {
			pre = p.prefetch(ctx, ev, next)
		}
		var c throttle.Counts
		if len(subs) > 0 {
			if c, err = p.decide(ctx, ev, subs); err != nil {
				return pr, fmt.Errorf("plan event %s at %d: %w", id, cur, err)
			}
		}
		ok, err := p.events.Checkpoint(ctx, id, pr.Cursor, next, events.Counts{
			Targeted: int64(len(subs)), Queued: c.Queued, Deferred: c.Deferred, Coalesced: c.Coalesced,
			Skipped: c.Skipped, Missing: c.Missing, Duplicate: c.Duplicate, Held: c.Held,
		})
		if err != nil {
			return pr, fmt.Errorf("plan event %s: %w", id, err)
		}
		if !ok {
			// Another planner moved the cursor: continue from where it is.
			if pr, err = p.Progress(ctx, id); err != nil {
				return pr, err
			}
			if pr.Done {
				return pr, nil
			}
			cur = pr.Cursor / win * win
			pre.wait()
			pre = p.prefetch(ctx, ev, cur)
			continue
		}
		pr.Cursor = next
		p.windows.Inc()
		p.observe(c)
		cur = next
	}
	if err := p.events.Finish(ctx, id, p.clock()); err != nil {
		return pr, fmt.Errorf("plan event %s: %w", id, err)
	}
	p.planned.Inc()
	pr, err = p.Progress(ctx, id)
	if err != nil {
		return pr, err
	}
	p.log.InfoContext(ctx, "fan-out planned", "event", id, "targeted", pr.Targeted, "queued", pr.Queued,
		"deferred", pr.Deferred, "coalesced", pr.Coalesced, "skipped", pr.Skipped, "missing", pr.Missing, "held", pr.Held)
	return pr, nil
}

func (p *Planner) observe(c throttle.Counts) {
	for _, o := range []struct {
		name string
		n    int64
	}{{"queued", c.Queued}, {"deferred", c.Deferred}, {"coalesced", c.Coalesced}, {"skipped", c.Skipped}, {"missing", c.Missing}, {"duplicate", c.Duplicate}, {"held", c.Held}} {
		if o.n > 0 {
			p.outcomes.WithLabelValues(o.name).Add(float64(o.n))
		}
	}
}

// pending is a window read that runs in its own goroutine.
type pending struct {
	done chan struct{}
	subs []devices.Subscriber
	err  error
}

// wait waits for the read and returns its result. It may be called more
// than once.
func (w *pending) wait() ([]devices.Subscriber, error) {
	<-w.done
	return w.subs, w.err
}

// prefetch starts reading the window at start. Whoever holds the result
// waits for it, so the goroutine never outlives Plan.
func (p *Planner) prefetch(ctx context.Context, ev Event, start uint64) *pending {
	w := &pending{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.subs, w.err = p.subs.Subscribers(ctx, ev.App, ev.Feeds, start, p.window())
	}()
	return w
}

// decide hands a window's devices to the throttle, grouped by the feeds
// each follows: a push names only the event's feeds that its device
// follows, each with its cursor. A single-feed event is one group.
func (p *Planner) decide(ctx context.Context, ev Event, subs []devices.Subscriber) (throttle.Counts, error) {
	groups := map[uint64][]uint64{}
	var order []uint64
	for _, s := range subs {
		if _, ok := groups[s.Feeds]; !ok {
			order = append(order, s.Feeds)
		}
		groups[s.Feeds] = append(groups[s.Feeds], s.ID)
	}
	var total throttle.Counts
	for _, mask := range order {
		u := throttle.Update{Event: ev.ID, Lane: ev.throttleLane(), Reason: ev.Reason, Alert: (*throttle.Alert)(ev.Alert)}
		for f, feed := range ev.Feeds {
			if mask&(1<<f) == 0 {
				continue
			}
			u.Feeds = append(u.Feeds, feed)
			if c, ok := ev.Since[feed]; ok {
				if u.Since == nil {
					u.Since = map[string]int64{}
				}
				u.Since[feed] = c
			}
			u.Until = withRangeEnd(u.Until, ev, feed)
		}
		ids := groups[mask]
		for len(ids) > 0 {
			n := len(ids)
			if p.pace != nil {
				n = min(n, p.pace.chunk())
				if err := p.pace.wait(ctx, u.Feeds, n); err != nil {
					return total, err
				}
			}
			c, err := p.th.Decide(ctx, u, ids[:n])
			if err != nil {
				return total, err
			}
			p.count(ctx, ev.App, u.Lane, c)
			total.Add(c)
			ids = ids[n:]
		}
	}
	return total, nil
}

// window is the subscription window of a walk step: Config.Window, or
// the paced one.
func (p *Planner) window() int {
	if p.pace != nil {
		return p.pace.window(p.cfg.Window)
	}
	return p.cfg.Window
}

// count adds a decision's deferred and coalesced pushes to the fleet
// stats, and to app's (an editor's sync; a feed change's counts, which
// span apps, go to the default app's). A failed write is logged: the
// decision stands.
func (p *Planner) count(ctx context.Context, app, lane string, c throttle.Counts) {
	if p.stats == nil {
		return
	}
	err := p.stats.Pushes(ctx,
		stats.Count{App: app, Platform: "ios", Lane: lane, Outcome: stats.Deferred, N: int(c.IOS.Deferred)},
		stats.Count{App: app, Platform: "android", Lane: lane, Outcome: stats.Deferred, N: int(c.Android.Deferred)},
		stats.Count{App: app, Platform: "ios", Lane: lane, Outcome: stats.Coalesced, N: int(c.IOS.Coalesced)},
		stats.Count{App: app, Platform: "android", Lane: lane, Outcome: stats.Coalesced, N: int(c.Android.Coalesced)},
	)
	if err != nil {
		p.log.WarnContext(ctx, "record throttle stats", "err", err)
	}
}
