// Package fanout turns one event (a feed change or an editor trigger) into at
// most one push decision per subscribed device.
//
// Publish stores the event in its hash ev:{id}. Plan walks the subscription
// bitmaps of the event's feeds in windows of Config.Window device ids,
// ORs the feeds' slices together (a device subscribed to several changed
// feeds is decided once), and hands each window to the throttle, which
// decides and enqueues atomically per partition. Devices are handed over
// grouped by which of the event's feeds they follow, so each push names
// only those feeds, each with its cursor; a device that follows none of
// them is not targeted. After each window the
// cursor and the window's counts are checkpointed in the event hash in one
// step, so a killed planner resumes at the first window it had not
// checkpointed. Re-running that window is safe: the throttle remembers the
// events it applied to each device and reports a repeat with its original
// outcome, so the counters stay exact.
//
// The event hash holds:
//
//	def                      the Event, JSON
//	cur                      next device id to walk
//	done, fin                "1" and the finish time (unix ms) once planned
//	targeted                 devices found subscribed
//	queued deferred coalesced skipped missing duplicate   throttle outcomes
//	held                     alert-lane devices the alert guard held back
//	sent pruned failed superseded   push outcomes, added by the push worker (Record)
//	dropped                  pending pushes the throttle's scheduler dropped (device
//	                         opted out or deleted before it was due), per device (Record)
//	last                     when the latest push of the event was sent (unix ms, Redis's clock)
//
// The hash expires Config.Retain after Publish. Nothing recreates it
// without a TTL: the checkpoint and the final mark only write to an
// existing hash (a planner that finds it expired stops with ErrNotFound),
// Record only counts into an existing one, and a Publish of the same id
// after expiry sets the TTL again.
package fanout

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// Alert is the visible part of a breaking event, shown by the app.
type Alert struct {
	Title string `json:"title"`
	Body  string `json:"body"`
}

// Event is one change that subscribed devices should sync.
type Event struct {
	ID     string           `json:"id"`
	Feeds  []string         `json:"feeds"`           // feeds that changed; their subscribers are targeted
	Lane   string           `json:"lane"`            // throttle.LaneFeed or throttle.LaneBreaking
	Reason string           `json:"reason"`          // "feed", "breaking" or "stale"
	Since  map[string]int64 `json:"since,omitempty"` // per feed, the cursor to fetch from
	Alert  *Alert           `json:"alert,omitempty"` // optional visible alert (breaking lane)
	// Audience optionally narrows the subscribers targeted; subscribers
	// outside it are not targeted at all.
	Audience  *Audience `json:"audience,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// MaxFeeds is the most feeds one event names.
const MaxFeeds = 64

// ErrInvalidEvent is returned by Publish for an event that cannot be planned.
var ErrInvalidEvent = errors.New("invalid event")

// ErrNotFound is returned for an event id that has no event hash.
var ErrNotFound = errors.New("event not found")

func (e Event) validate() error {
	switch {
	case e.ID == "" || len(e.ID) > 128:
		return fmt.Errorf("event id %q: want 1 to 128 bytes: %w", e.ID, ErrInvalidEvent)
	case len(e.Feeds) == 0 || len(e.Feeds) > MaxFeeds:
		return fmt.Errorf("event %s has %d feeds: want 1 to %d: %w", e.ID, len(e.Feeds), MaxFeeds, ErrInvalidEvent)
	case e.Lane != throttle.LaneFeed && e.Lane != throttle.LaneBreaking:
		return fmt.Errorf("event %s lane %q: want %q or %q: %w", e.ID, e.Lane, throttle.LaneFeed, throttle.LaneBreaking, ErrInvalidEvent)
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

// Config configures a Planner. Zero fields take the defaults.
type Config struct {
	// Window is how many device ids one walk step covers (default 32768,
	// 64 partitions x 512). A power of two from 8 to 65536.
	Window int
	// Retain is how long an event hash is kept after Publish (default 7 days).
	Retain time.Duration
}

func (c Config) withDefaults() Config {
	c.Window = cmp.Or(c.Window, 32768)
	c.Retain = cmp.Or(c.Retain, 7*24*time.Hour)
	return c
}

func (c Config) validate() error {
	if c.Window < 8 || c.Window > 1<<keys.SubChunkBits || c.Window&(c.Window-1) != 0 {
		return fmt.Errorf("fanout: window %d: set Window to a power of two from 8 to %d", c.Window, 1<<keys.SubChunkBits)
	}
	if c.Retain < time.Hour {
		return fmt.Errorf("fanout: retain %s: set Retain to at least 1h", c.Retain)
	}
	return nil
}

// Planner publishes events and plans their fan-out.
type Planner struct {
	cfg Config
	rdb redis.UniversalClient
	th  Decider
	log *slog.Logger
	// profiles filters events with an audience (UseProfiles).
	profiles Profiles
	clock    func() time.Time

	devices *prometheus.CounterVec
	windows prometheus.Counter
	planned prometheus.Counter
}

// New returns a Planner. clock defaults to time.Now; metrics are registered
// on reg when it is not nil.
func New(cfg Config, rdb redis.UniversalClient, th Decider, log *slog.Logger, reg prometheus.Registerer, clock func() time.Time) (*Planner, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if rdb == nil || th == nil || log == nil {
		return nil, errors.New("fanout: a Redis client, a throttle and a logger are required")
	}
	if clock == nil {
		clock = time.Now
	}
	p := &Planner{
		cfg:   cfg,
		rdb:   rdb,
		th:    th,
		log:   log,
		clock: clock,
		devices: prometheus.NewCounterVec(prometheus.CounterOpts{
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
	if reg != nil {
		for _, c := range []prometheus.Collector{p.devices, p.windows, p.planned} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("fanout: register metrics: %w", err)
			}
		}
	}
	return p, nil
}

// NewID returns a fresh event id from the event counter.
func (p *Planner) NewID(ctx context.Context) (string, error) {
	n, err := p.rdb.Incr(ctx, keys.EventSeq()).Result()
	if err != nil {
		return "", fmt.Errorf("new event id: %w", err)
	}
	return strconv.FormatInt(n, 10), nil
}

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
	var created *redis.BoolCmd
	_, err = p.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		created = pipe.HSetNX(ctx, keys.Event(ev.ID), "def", def)
		pipe.ExpireNX(ctx, keys.Event(ev.ID), p.cfg.Retain)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("publish event %s: %w", ev.ID, err)
	}
	return created.Val(), nil
}

// Event returns the published event id.
func (p *Planner) Event(ctx context.Context, id string) (Event, error) {
	raw, err := p.rdb.HGet(ctx, keys.Event(id), "def").Bytes()
	if errors.Is(err, redis.Nil) {
		return Event{}, fmt.Errorf("event %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Event{}, fmt.Errorf("load event %s: %w", id, err)
	}
	var ev Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		return Event{}, fmt.Errorf("decode event %s: %w", id, err)
	}
	return ev, nil
}

// Progress is the state of one event's fan-out and of its pushes.
type Progress struct {
	ID         string
	Done       bool      // every subscriber was planned
	Cursor     uint64    // next device id to walk
	FinishedAt time.Time // when planning completed; zero until Done
	Targeted   int64     // subscribed devices found
	Queued     int64     // push queued at once
	Deferred   int64     // push deferred by the throttle
	Coalesced  int64     // merged into a pending push
	Skipped    int64     // background sync off
	Missing    int64     // subscribed id without a device
	Duplicate  int64     // re-planned after a crash (inside the counts above)
	// Held counts devices the alert guard held back: they got the sync
	// without the visible alert (inside the counts above).
	Held   int64
	Sent   int64 // pushes the provider accepted (Record)
	Pruned int64 // pushes whose token was pruned (Record)
	Failed int64 // pushes that failed for good (Record)
	// Superseded counts pushes dropped at send time because the device was
	// deleted, opted out or moved to another token after planning (Record).
	Superseded int64
	// Dropped counts devices whose pending push the throttle's scheduler
	// dropped because they opted out or were deleted before it was due
	// (Record with OutcomeSkipped); they are inside Skipped too.
	Dropped int64
	// LastSentAt is when the latest push covering the event was sent;
	// zero before the first.
	LastSentAt time.Time
}

// Progress states, from planning to the last device accounted for.
const (
	StatePlanning = "planning" // subscribers are still being walked
	StateSending  = "sending"  // planned; pushes are on their way
	StateDone     = "done"     // every targeted device has its outcome
)

// InFlight is the number of targeted devices whose push has not ended yet.
// A device the throttle queued, deferred or merged into a pending push
// ends with the one push that carries the event (Record counts each such
// push once for every event it covers), or is skipped when the throttle's
// scheduler drops its pending push, so every targeted device is
// exactly one of skipped, missing, sent, pruned, failed, superseded or in
// flight. While planning, a push can end before its window's counts are
// checkpointed; InFlight is then 0 rather than negative, and Accounted
// counts the ended push.
func (p Progress) InFlight() int64 {
	return max(0, p.Queued+p.Deferred+p.Coalesced-p.Ended())
}

// Accounted is the number of targeted devices seen so far: skipped,
// missing, ended and in flight. It equals Targeted once every window's
// counts are in, and the sum of the parts at every read.
func (p Progress) Accounted() int64 {
	return p.Skipped + p.Missing + p.Ended() - p.Dropped + p.InFlight()
}

// State is StatePlanning, StateSending or StateDone.
func (p Progress) State() string {
	switch {
	case !p.Done:
		return StatePlanning
	case p.InFlight() > 0:
		return StateSending
	}
	return StateDone
}

// Planned is the number of pushes the planning step produced that have
// not ended yet: each queued or deferred push ends in exactly one of
// sent, pruned, failed or superseded (coalesced updates ride in a pending
// push and end with it).
func (p Progress) Planned() int64 { return p.Queued + p.Deferred }

// Ended is the number of pushes with a final outcome, counting a dropped
// pending push once per device.
func (p Progress) Ended() int64 { return p.Sent + p.Pruned + p.Failed + p.Superseded + p.Dropped }

var progressFields = []string{"done", "cur", "fin", "targeted", "queued", "deferred", "coalesced", "skipped", "missing", "duplicate", "sent", "pruned", "failed", "superseded", "held", "last", "dropped", "def"}

// Progress returns the progress of event id.
func (p *Planner) Progress(ctx context.Context, id string) (Progress, error) {
	v, err := p.rdb.HMGet(ctx, keys.Event(id), progressFields...).Result()
	if err != nil {
		return Progress{}, fmt.Errorf("load progress of event %s: %w", id, err)
	}
	if v[len(v)-1] == nil {
		return Progress{}, fmt.Errorf("event %s: %w", id, ErrNotFound)
	}
	n := func(i int) int64 {
		s, _ := v[i].(string)
		x, _ := strconv.ParseInt(s, 10, 64)
		return x
	}
	pr := Progress{
		ID: id, Done: n(0) == 1, Cursor: uint64(n(1)),
		Targeted: n(3), Queued: n(4), Deferred: n(5), Coalesced: n(6), Skipped: n(7), Missing: n(8), Duplicate: n(9),
		Sent: n(10), Pruned: n(11), Failed: n(12), Superseded: n(13), Held: n(14), Dropped: n(16),
	}
	pr.Skipped += pr.Dropped
	if fin := n(2); fin > 0 {
		pr.FinishedAt = time.UnixMilli(fin)
	}
	if last := n(15); last > 0 {
		pr.LastSentAt = time.UnixMilli(last)
	}
	return pr, nil
}

// Outcome is what happened to a push, as recorded by the push worker.
type Outcome string

// Push outcomes.
const (
	OutcomeSent   Outcome = "sent"
	OutcomePruned Outcome = "pruned"
	OutcomeFailed Outcome = "failed"
	// OutcomeSuperseded: dropped at send time because the device was
	// deleted, opted out or re-tokened after the push was planned.
	OutcomeSuperseded Outcome = "superseded"
	// OutcomeSkipped: the device's pending push was dropped before it was
	// due because the device opted out or was deleted (the throttle's
	// scheduler); the device counts as skipped. Stored in field "dropped".
	OutcomeSkipped Outcome = "skipped"
)

// recordScript adds to a push outcome counter of an event that still
// exists (an expired event is not recreated); a sent push also moves the
// event's last send time, on Redis's clock, forward.
//
// KEYS[1] ev:{id}; ARGV[1] counter field, ARGV[2] increment.
// Returns 1 if counted, 0 if the event is gone.
var recordScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if ARGV[1] == 'sent' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
  if now > last then redis.call('HSET', KEYS[1], 'last', now) end
end
return 1
`)

// Record counts one push outcome for each entry of eventIDs: an event listed
// n times (n pushes of a batch covered it) is counted n times, in one call.
func (p *Planner) Record(ctx context.Context, eventIDs []string, o Outcome) error {
	if o != OutcomeSent && o != OutcomePruned && o != OutcomeFailed && o != OutcomeSuperseded && o != OutcomeSkipped {
		return fmt.Errorf("record outcome %q: want sent, pruned, failed, superseded or skipped", o)
	}
	field := string(o)
	if o == OutcomeSkipped {
		field = "dropped"
	}
	counts := map[string]int{}
	var ids []string
	for _, id := range eventIDs {
		if counts[id] == 0 {
			ids = append(ids, id)
		}
		counts[id]++
	}
	if len(ids) == 0 {
		return nil
	}
	pipe := p.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(ids))
	for i, id := range ids {
		cmds[i] = recordScript.EvalSha(ctx, pipe, []string{keys.Event(id)}, field, counts[id])
	}
	_, _ = pipe.Exec(ctx) // errors are per command, checked below
	for i, c := range cmds {
		err := c.Err()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = recordScript.Run(ctx, p.rdb, []string{keys.Event(ids[i])}, field, counts[ids[i]]).Err()
		}
		if err != nil {
			return fmt.Errorf("record %s for event %s: %w", o, ids[i], err)
		}
	}
	return nil
}

// RecordSkipped counts one device as skipped for each entry of eventIDs:
// the throttle's scheduler dropped its pending push (throttle.Recorder).
func (p *Planner) RecordSkipped(ctx context.Context, eventIDs []string) error {
	return p.Record(ctx, eventIDs, OutcomeSkipped)
}

// checkpointScript advances an event's cursor and adds a window's counts,
// only if the cursor is still where the planner started the window (a second
// planner of the same event may have moved it).
//
// KEYS[1] ev:{id}
// ARGV[1] expected cursor, ARGV[2] next cursor,
// ARGV[3..] pairs of counter field and increment.
// Returns 1 if applied, 0 if the cursor had moved, -1 if the event hash is
// gone (expired): it is not recreated, which would leave it without a TTL.
var checkpointScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local cur = redis.call('HGET', KEYS[1], 'cur') or '0'
if cur ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'cur', ARGV[2])
return 1
`)

// finishScript marks an existing event planned.
//
// KEYS[1] ev:{id}; ARGV[1] finish time, unix ms.
// Returns 1 if marked, 0 if the event hash is gone (not recreated).
var finishScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'done', '1', 'fin', ARGV[1])
return 1
`)

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
	seq, err := p.rdb.Get(ctx, keys.DeviceSeq()).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return pr, fmt.Errorf("plan event %s: read device sequence: %w", id, err)
	}
	win := uint64(p.cfg.Window)
	cur := pr.Cursor / win * win
	// The next window's subscribers are read while the throttle decides the
	// current one, so the bitmap reads and the id extraction overlap with
	// the Redis work of the decision.
	pre := p.prefetch(ctx, ev.Feeds, cur)
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
			pre = p.prefetch(ctx, ev.Feeds, next)
		}
		var c throttle.Counts
		if len(subs) > 0 {
			if c, err = p.decide(ctx, ev, subs); err != nil {
				return pr, fmt.Errorf("plan event %s at %d: %w", id, cur, err)
			}
		}
		ok, err := checkpointScript.Run(ctx, p.rdb, []string{keys.Event(id)},
			strconv.FormatUint(pr.Cursor, 10), strconv.FormatUint(next, 10),
			"targeted", len(subs), "queued", c.Queued, "deferred", c.Deferred, "coalesced", c.Coalesced,
			"skipped", c.Skipped, "missing", c.Missing, "duplicate", c.Duplicate, "held", c.Held).Int()
		if err != nil {
			return pr, fmt.Errorf("plan event %s: checkpoint %d: %w", id, next, err)
		}
		if ok < 0 {
			return pr, fmt.Errorf("plan event %s: checkpoint %d: %w", id, next, ErrNotFound)
		}
		if ok == 0 {
			// Another planner moved the cursor: continue from where it is.
			if pr, err = p.Progress(ctx, id); err != nil {
				return pr, err
			}
			if pr.Done {
				return pr, nil
			}
			cur = pr.Cursor / win * win
			pre.wait()
			pre = p.prefetch(ctx, ev.Feeds, cur)
			continue
		}
		pr.Cursor = next
		p.windows.Inc()
		p.observe(c)
		cur = next
	}
	fin := p.clock().UnixMilli()
	switch n, err := finishScript.Run(ctx, p.rdb, []string{keys.Event(id)}, fin).Int(); {
	case err != nil:
		return pr, fmt.Errorf("plan event %s: mark done: %w", id, err)
	case n == 0:
		return pr, fmt.Errorf("plan event %s: mark done: %w", id, ErrNotFound)
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
			p.devices.WithLabelValues(o.name).Add(float64(o.n))
		}
	}
}

// pending is a window read that runs in its own goroutine.
type pending struct {
	done chan struct{}
	subs []sub
	err  error
}

// wait waits for the read and returns its result. It may be called more
// than once.
func (w *pending) wait() ([]sub, error) {
	<-w.done
	return w.subs, w.err
}

// prefetch starts reading the window at start. Whoever holds the result
// waits for it, so the goroutine never outlives Plan.
func (p *Planner) prefetch(ctx context.Context, feeds []string, start uint64) *pending {
	w := &pending{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.subs, w.err = p.window(ctx, feeds, start)
	}()
	return w
}

// window returns the ids in [start, start+Window) subscribed to any of
// feeds, ascending, each with the mask of the feeds it follows (bit i:
// feeds[i]). start is a multiple of Window, so the window lies in one
// bitmap chunk.
func (p *Planner) window(ctx context.Context, feeds []string, start uint64) ([]sub, error) {
	k, bit := keys.SubChunkOf(start)
	from := bit / 8
	to := from + int64(p.cfg.Window/8) - 1
	pipe := p.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(feeds))
	for i, f := range feeds {
		cmds[i] = pipe.GetRange(ctx, keys.SubChunk(f, k), from, to)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read subscriptions: %w", err)
	}
	var union []byte
	maps := make([][]byte, len(cmds))
	for f, c := range cmds {
		b, _ := c.Bytes()
		maps[f] = b
		if len(b) > len(union) {
			b, union = union, append(make([]byte, 0, p.cfg.Window/8), b...)
		}
		for i := range b {
			union[i] |= b[i]
		}
	}
	var subs []sub
	for i, b := range union {
		for b != 0 {
			// SETBIT numbers bits from the most significant bit of each byte.
			j := bits.LeadingZeros8(b)
			bit := byte(0x80) >> j
			var mask uint64
			for f, m := range maps {
				if i < len(m) && m[i]&bit != 0 {
					mask |= 1 << f
				}
			}
			subs = append(subs, sub{id: start + uint64(i*8+j), mask: mask})
			b &^= bit
		}
	}
	return subs, nil
}

// sub is one subscribed device of a window and the mask of the event's
// feeds it follows.
type sub struct {
	id   uint64
	mask uint64
}

// decide hands a window's devices to the throttle, grouped by the feeds
// each follows: a push names only the event's feeds that its device
// follows, each with its cursor. A single-feed event is one group.
func (p *Planner) decide(ctx context.Context, ev Event, subs []sub) (throttle.Counts, error) {
	groups := map[uint64][]uint64{}
	var order []uint64
	for _, s := range subs {
		if _, ok := groups[s.mask]; !ok {
			order = append(order, s.mask)
		}
		groups[s.mask] = append(groups[s.mask], s.id)
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
		}
		c, err := p.th.Decide(ctx, u, groups[mask])
		if err != nil {
			return total, err
		}
		total.Add(c)
	}
	return total, nil
}
