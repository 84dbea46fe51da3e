// Package throttle decides, per device, whether a silent push goes out now,
// later, or merged into a push that is already pending, and moves deferred
// pushes into the push stream when they fall due.
//
// # Policy
//
// Each platform has a Policy (and each app may override it, Config.Apps):
// at most Limit pushes in any sliding window of
// length Window (any half-open interval [t, t+Window) holds at most Limit
// sends), and at least MinGap between two pushes. The device's
// background_sync.min_interval (hash field "mi", seconds) can only make the
// gap stricter: the effective gap is max(MinGap, mi). A device whose "pl" is
// "ios" gets the iOS policy; every other device gets the Android policy.
// The window check is exact: the state keeps the device's last Limit send
// times, so unlike GCRA it never allows 2K-1 pushes in one window.
//
// An update that may not go out now is never dropped. It becomes the
// device's one pending push, due at
//
//	max(allowAt, min(now+Debounce, pendingSince+MaxWait))
//
// where allowAt is the earliest time both limits allow. Later updates
// coalesce into it: feeds are merged, event ids appended (at most MaxEvents
// are carried; older ones are counted in Push.Dropped) and the per-feed
// since cursors keep their minimum, so the app fetches everything.
//
// # Lanes
//
// The feed lane is always debounced: even a fresh update that the limits
// would allow waits Debounce, so a burst of feed changes becomes one push.
// The breaking lane skips the debounce, not the budget: a breaking update
// goes out at max(allowAt, now). Apple's budget for background pushes is
// enforced by the device whatever we intend, so spending it faster would only
// get later pushes dropped by iOS. When a breaking update coalesces into a
// pending feed push, the whole pending push becomes breaking and due at
// allowAt.
//
// The alert lane carries a visible alert (with content-available, so the
// app syncs too). Apple and Google throttle silent pushes, not visible
// ones, so an alert is queued at once whatever the silent budget. It still
// counts against that budget (the app did wake), and it absorbs the
// device's pending push: its feeds, cursors and events ride in the alert,
// and nothing silent follows within the gap. The alert guard replaces the
// budget for alerts: at most Config.AlertLimit alerts per device in any
// Config.AlertWindow. A device over it is held back: it gets the update on
// the breaking lane, silent and under the budget, and Counts.Held says how
// many devices that happened to.
//
// # Opt-out
//
// A device whose user turned background sync off ("bg" = "0") gets no push
// from either lane, visible alert or not; it is counted as skipped. (A
// visible breaking alert is a different consent; until the registry records
// it separately we err on the side of sending nothing.) A pending push of a
// device that opts out (or is deleted) before it falls due is dropped by the
// scheduler, which records the device as skipped for each event the push
// covered (Recorder), so those events' progress still reaches done.
//
// # One clock: Redis's
//
// Every decision and the due scheduler use the Redis server's clock (TIME,
// read inside each script, so a decision and the stream id of the push it
// writes share one instant), never the replica's wall clock, so
// replicas whose clocks are minutes apart still space a device's pushes by
// MinGap and keep K per W. The scheduler also asks Redis (due.lua) which
// pushes are due.
//
// # Accounting
//
// A push counts against the budget when it is queued (written to the
// stream), not when the provider accepts it: workers send within seconds,
// and a push that then fails still used its slot, which errs on the strict
// side. Because a retry or a redelivery can still reach the phone later
// than it was queued, the push worker also asks Admit just before sending
// (the budget at the phone, phone.go): a push that would land inside the
// gap or over K per W of pushes that may already have arrived waits.
//
// # Exactly once under retries
//
// The state remembers the last Remember events applied to each device with
// their outcome. Applying an event again (a fan-out window re-run after a
// crash) changes nothing and reports the original outcome, also counted as
// Duplicate, so progress counters stay exact.
//
// Decision and enqueue happen in one Lua script call per batch of devices of
// one partition; every key it touches shares the partition's hash tag, so it
// runs unchanged on Redis Cluster.
//
// # Cost
//
// A device's state is one packed string (format in common.lua), read with
// plain substring searches and written with one concatenation. A decision
// depends only on that string, the device's policy and min_interval and the
// update, so a script call decides each distinct state once and reuses the
// result for every device that shares it (devices that got the same events
// do). docs/BENCHMARKS.md has the measured rates.
package throttle

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/service"
)

// Lane names.
const (
	LaneFeed     = "feed"     // feed changes: debounced and coalesced
	LaneBreaking = "breaking" // editor triggers: skip the debounce
	LaneAlert    = "alert"    // editor triggers with a visible alert: at once, under the alert guard
)

// Policy is the push budget of one platform.
type Policy struct {
	Limit    int           // at most Limit pushes in any Window
	Window   time.Duration // sliding window of Limit
	MinGap   time.Duration // at least MinGap between two pushes
	Debounce time.Duration // feed-lane wait for more updates to coalesce
	MaxWait  time.Duration // a pending push waits at most this long for the debounce
}

// Default policies. Apple asks for no more than two or three background
// pushes per hour; Android has no published budget, but FCM deprioritises
// apps that wake devices often, so 12 per hour with a 5 minute gap.
var (
	DefaultIOS     = Policy{Limit: 3, Window: time.Hour, MinGap: 10 * time.Minute, Debounce: 2 * time.Minute, MaxWait: 15 * time.Minute}
	DefaultAndroid = Policy{Limit: 12, Window: time.Hour, MinGap: 5 * time.Minute, Debounce: 2 * time.Minute, MaxWait: 15 * time.Minute}
)

func (p Policy) withDefaults(d Policy) Policy {
	return Policy{
		Limit:    cmp.Or(p.Limit, d.Limit),
		Window:   cmp.Or(p.Window, d.Window),
		MinGap:   cmp.Or(p.MinGap, d.MinGap),
		Debounce: cmp.Or(p.Debounce, d.Debounce),
		MaxWait:  cmp.Or(p.MaxWait, d.MaxWait),
	}
}

func (p Policy) validate(name string) error {
	switch {
	case p.Limit < 1:
		return fmt.Errorf("throttle: %s limit %d: set %s.Limit to at least 1", name, p.Limit, name)
	case p.Window < time.Second:
		return fmt.Errorf("throttle: %s window %s: set %s.Window to at least 1s", name, p.Window, name)
	case p.MinGap < 0 || p.Debounce < 0:
		return fmt.Errorf("throttle: %s min gap %s, debounce %s: set %s.MinGap and %s.Debounce to zero or more", name, p.MinGap, p.Debounce, name, name)
	case p.MaxWait < p.Debounce:
		return fmt.Errorf("throttle: %s max wait %s is shorter than debounce %s: set %s.MaxWait to at least %s.Debounce", name, p.MaxWait, p.Debounce, name, name)
	}
	return nil
}

// nums are the policy's five script numbers: limit, then window, min gap,
// debounce and max wait in ms.
func (p Policy) nums() []int64 {
	return []int64{int64(p.Limit), p.Window.Milliseconds(), p.MinGap.Milliseconds(), p.Debounce.Milliseconds(), p.MaxWait.Milliseconds()}
}

// Config configures a Throttle. Zero fields take the defaults.
type Config struct {
	IOS     Policy // default DefaultIOS; zero fields take its values
	Android Policy // default DefaultAndroid; zero fields take its values

	// Remember is how many applied events each device remembers for
	// duplicate detection (default 8). A fan-out window re-run after a crash
	// is recognised as long as fewer than Remember other events reached the
	// device in between. Each costs the event id's length in the state.
	Remember int
	// MaxEvents is how many event ids one pending push carries (default 32),
	// which keeps the payload under the providers' 4 KB.
	MaxEvents int
	// Batch is the most devices one script call decides (default 512),
	// which bounds the time Redis spends in one call.
	Batch int
	// AlertLimit is the most alert-lane pushes one device gets in any
	// AlertWindow (default 4); further alerts are held back to the breaking
	// lane.
	AlertLimit int
	// AlertWindow is the sliding window of AlertLimit (default 1h).
	AlertWindow time.Duration
	// Apps holds each app's policy overrides (apps.App.Policy): a device of
	// an app gets IOS or Android with the app's non-zero fields in their
	// place (the default app's overrides apply to devices without an app).
	// nil: every device gets IOS or Android.
	Apps apps.Source
}

func (c Config) withDefaults() Config {
	c.IOS = c.IOS.withDefaults(DefaultIOS)
	c.Android = c.Android.withDefaults(DefaultAndroid)
	c.Remember = cmp.Or(c.Remember, 8)
	c.MaxEvents = cmp.Or(c.MaxEvents, 32)
	c.Batch = cmp.Or(c.Batch, 512)
	c.AlertLimit = cmp.Or(c.AlertLimit, 4)
	c.AlertWindow = cmp.Or(c.AlertWindow, time.Hour)
	return c
}

func (c Config) validate() error {
	if err := c.IOS.validate("IOS"); err != nil {
		return err
	}
	if err := c.Android.validate("Android"); err != nil {
		return err
	}
	if c.Remember < 1 || c.MaxEvents < 1 || c.Batch < 1 {
		return fmt.Errorf("throttle: remember %d, max events %d, batch %d: set Remember, MaxEvents and Batch to at least 1", c.Remember, c.MaxEvents, c.Batch)
	}
	if c.AlertLimit < 1 || c.AlertWindow < time.Second {
		return fmt.Errorf("throttle: alert limit %d per %s: set AlertLimit to at least 1 and AlertWindow to at least 1s", c.AlertLimit, c.AlertWindow)
	}
	return nil
}

// Update is one change that devices should sync: a feed change or an editor
// trigger. Event identifies it for duplicate detection.
type Update struct {
	Event  string           // event id, unique per fan-out
	Feeds  []string         // feeds the app should fetch; at least one
	Lane   string           // LaneFeed, LaneBreaking or LaneAlert
	Reason string           // "feed", "breaking" or "stale"
	Since  map[string]int64 // per feed, the cursor to fetch from
	// Until is, per feed, the end of the range (Since, Until] the update
	// names (range.go); a feed without one names an open range.
	Until map[string]int64
	// Alert is the visible alert of an alert-lane update (nil: none). Only
	// the alert-lane push jobs it produces carry it; a device held back
	// to the breaking lane gets the update without it.
	Alert *Alert
}

// Alert is the visible part of an alert-lane push, shown by the app.
type Alert struct {
	Title string `json:"title"`
	Body  string `json:"body"`
}

// ErrInvalidUpdate is returned for an update the throttle cannot apply.
var ErrInvalidUpdate = errors.New("invalid update")

func (u Update) validate() error {
	switch {
	case u.Event == "":
		return fmt.Errorf("empty event id: %w", ErrInvalidUpdate)
	case len(u.Feeds) == 0:
		return fmt.Errorf("event %s has no feeds: %w", u.Event, ErrInvalidUpdate)
	case u.Lane != LaneFeed && u.Lane != LaneBreaking && u.Lane != LaneAlert:
		return fmt.Errorf("event %s lane %q: %w", u.Event, u.Lane, ErrInvalidUpdate)
	case !utf8.ValidString(u.Event) || !utf8.ValidString(u.Reason):
		return fmt.Errorf("event %q or its reason is not UTF-8: %w", u.Event, ErrInvalidUpdate)
	case u.Alert != nil && (!utf8.ValidString(u.Alert.Title) || !utf8.ValidString(u.Alert.Body)):
		return fmt.Errorf("event %s alert is not UTF-8: %w", u.Event, ErrInvalidUpdate)
	}
	for _, f := range u.Feeds {
		if !utf8.ValidString(f) {
			return fmt.Errorf("event %s feed %q is not UTF-8: %w", u.Event, f, ErrInvalidUpdate)
		}
	}
	for f := range packRange(u.Since, u.Until) {
		if !utf8.ValidString(f) {
			return fmt.Errorf("event %s since feed %q is not UTF-8: %w", u.Event, f, ErrInvalidUpdate)
		}
	}
	return nil
}

// quote returns s as a JSON string literal. The scripts store event ids,
// feeds and reasons in this form: it never holds a control byte, so it
// cannot collide with the state's separators, and it goes into a push
// payload as it is.
func quote(s string) string {
	b, _ := json.Marshal(s) // a valid UTF-8 string always encodes
	return string(b)
}

// alertArg is the alert argument of the decide script: the JSON object
// member ',"alert":{...}' that its alert-lane push jobs carry, or "" when
// the update is not on the alert lane or has no alert.
func alertArg(u Update) (string, error) {
	if u.Lane != LaneAlert || u.Alert == nil || (u.Alert.Title == "" && u.Alert.Body == "") {
		return "", nil
	}
	b, err := json.Marshal(u.Alert)
	if err != nil {
		return "", fmt.Errorf("encode alert of event %s: %w", u.Event, err)
	}
	return `,"alert":` + string(b), nil
}

// packFeeds encodes an update's feeds and since cursors as the scripts'
// US-separated lists (see common.lua): US ("feed" US)* and
// US ("feed":cursor US)*, the cursors sorted by feed.
func packFeeds(feeds []string, since map[string]int64) (string, string) {
	var b strings.Builder
	b.WriteByte(0x1f)
	for _, f := range feeds {
		b.WriteString(quote(f))
		b.WriteByte(0x1f)
	}
	fl := b.String()
	b.Reset()
	b.WriteByte(0x1f)
	for _, f := range slices.Sorted(maps.Keys(since)) {
		b.WriteString(quote(f))
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(since[f], 10))
		b.WriteByte(0x1f)
	}
	return fl, b.String()
}

// Counts are the outcomes of a Decide call, one per device.
type Counts struct {
	Queued    int64 // push written to the stream now
	Deferred  int64 // new pending push in the due set
	Coalesced int64 // merged into a pending push
	Skipped   int64 // background sync off
	Missing   int64 // no device hash (pruned or unregistered)
	Duplicate int64 // event already applied; also counted in its original outcome
	// Held counts alert-lane devices the alert guard held back to the
	// breaking lane; also counted in the outcome they got there.
	Held int64

	// IOS and Android split the fresh (not duplicate) decisions by platform.
	IOS, Android PlatformCounts
}

// PlatformCounts are one platform's share of the deferred and coalesced
// decisions.
type PlatformCounts struct {
	Deferred, Coalesced int64
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.Queued += o.Queued
	c.Deferred += o.Deferred
	c.Coalesced += o.Coalesced
	c.Skipped += o.Skipped
	c.Missing += o.Missing
	c.Duplicate += o.Duplicate
	c.Held += o.Held
	c.IOS.Deferred += o.IOS.Deferred
	c.IOS.Coalesced += o.IOS.Coalesced
	c.Android.Deferred += o.Android.Deferred
	c.Android.Coalesced += o.Android.Coalesced
}

// Total is the number of devices the counts cover (duplicates are already
// inside the other outcomes).
func (c Counts) Total() int64 {
	return c.Queued + c.Deferred + c.Coalesced + c.Skipped + c.Missing
}

// Throttle applies the push policy to devices, atomically with the enqueue.
type Throttle struct {
	cfg    Config
	rdb    redis.UniversalClient
	log    *slog.Logger
	pols   atomic.Pointer[appPolicies] // the scripts' policy arguments of the last apps.Set
	decide *redis.Script               // decideScript; tests swap in variants
	move   *redis.Script               // moveScript; tests swap in variants
	list   *redis.Script               // dueScript; tests swap in variants

	decisions *prometheus.CounterVec
	moves     *prometheus.CounterVec
	due       prometheus.Gauge
}

// New returns a Throttle that logs to a's logger and registers its metrics
// on a's registerer.
func New(a service.Archetype, cfg Config, rdb redis.UniversalClient) (*Throttle, error) {
	a = a.WithDefaults()
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if rdb == nil {
		return nil, errors.New("throttle: a Redis client is required")
	}
	t := &Throttle{
		cfg:    cfg,
		rdb:    rdb,
		log:    a.Logger,
		decide: decideScript,
		move:   moveScript,
		list:   dueScript,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_throttle_decisions_total",
			Help: "Throttle decisions by outcome (queued, deferred, coalesced, skipped, missing, duplicate, held) and lane.",
		}, []string{"outcome", "lane"}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_throttle_scheduler_moves_total",
			Help: "Due pushes handled by the scheduler by outcome (queued, rescheduled, skipped, missing, stale).",
		}, []string{"outcome"}),
		due: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nudge_throttle_due_devices",
			Help: "Devices with a pending push, summed over partitions at the last scheduler step.",
		}),
	}
	if err := a.Register(t.decisions, t.moves, t.due); err != nil {
		return nil, fmt.Errorf("throttle: %w", err)
	}
	return t, nil
}

// Config returns the effective configuration, defaults applied.
func (t *Throttle) Config() Config { return t.cfg }

// pipelineCalls is how many script calls Decide sends in one pipeline.
const pipelineCalls = 16

type call struct {
	keys []string
	args []any
	cmd  *redis.Cmd
}

// Decide applies update u to devices, which may span partitions, at the
// time of the Redis clock. It groups them by partition and
// runs one script call per batch of at most Config.Batch devices,
// pipelined. A device listed twice in one call is decided once and then
// counted as a duplicate.
func (t *Throttle) Decide(ctx context.Context, u Update, devs []uint64) (Counts, error) {
	if err := u.validate(); err != nil {
		return Counts{}, err
	}
	alert, err := alertArg(u)
	if err != nil {
		return Counts{}, err
	}
	feeds, since := packFeeds(u.Feeds, packRange(u.Since, u.Until))
	var groups [keys.Partitions][]uint64
	for _, id := range devs {
		p := keys.Partition(id)
		groups[p] = append(groups[p], id)
	}
	head := []any{alert, quote(u.Event), u.Lane, quote(u.Reason), feeds, since}
	head = append(head, t.policyArgs(ctx)...)
	head = append(head, t.cfg.Remember, t.cfg.MaxEvents, t.cfg.AlertLimit, t.cfg.AlertWindow.Milliseconds())

	// The calls go out in pipelines of pipelineCalls, two at a time, so that
	// building the next pipeline's arguments overlaps with Redis running the
	// previous one. The order between calls does not matter: each touches
	// one partition and is atomic.
	var calls []*call
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	flush := func(batch []*call) {
		g.Go(func() error { return t.run(gctx, t.decide, batch) })
	}
	from := 0
	for p, ids := range groups {
		for len(ids) > 0 {
			n := min(len(ids), t.cfg.Batch)
			c := &call{
				keys: make([]string, 0, 3+n),
				args: make([]any, 0, len(head)+n),
			}
			c.keys = append(c.keys, keys.Throttle(p), keys.Due(p), jobs.Stream(keys.PushQueue, p))
			c.args = append(c.args, head...)
			for _, id := range ids[:n] {
				c.keys = append(c.keys, devices.Key(id))
				c.args = append(c.args, strconv.FormatUint(id, 10))
			}
			calls = append(calls, c)
			ids = ids[n:]
			if len(calls)-from == pipelineCalls {
				flush(calls[from:])
				from = len(calls)
			}
		}
	}
	if from < len(calls) {
		flush(calls[from:])
	}
	if err := g.Wait(); err != nil {
		return Counts{}, fmt.Errorf("decide event %s: %w", u.Event, err)
	}
	var total Counts
	for _, c := range calls {
		v, err := c.cmd.Int64Slice()
		if err != nil || len(v) != 11 {
			return total, fmt.Errorf("decide event %s: script reply %v: %w", u.Event, c.cmd.Val(), err)
		}
		total.Add(Counts{Queued: v[0], Deferred: v[1], Coalesced: v[2], Skipped: v[3], Missing: v[4], Duplicate: v[5],
			IOS: PlatformCounts{v[6], v[7]}, Android: PlatformCounts{v[8], v[9]}, Held: v[10]})
	}
	t.observe(u.Lane, total)
	return total, nil
}

func (t *Throttle) observe(lane string, c Counts) {
	for _, o := range []struct {
		name string
		n    int64
	}{{"queued", c.Queued}, {"deferred", c.Deferred}, {"coalesced", c.Coalesced}, {"skipped", c.Skipped}, {"missing", c.Missing}, {"duplicate", c.Duplicate}, {"held", c.Held}} {
		if o.n > 0 {
			t.decisions.WithLabelValues(o.name, lane).Add(float64(o.n))
		}
	}
}

// run runs script once per call in one pipeline. Calls that found the
// script missing from the server's cache (a restart or SCRIPT FLUSH) run
// again one by one, which loads it.
func (t *Throttle) run(ctx context.Context, s *redis.Script, calls []*call) error {
	if len(calls) == 0 {
		return nil
	}
	pipe := t.rdb.Pipeline()
	for _, c := range calls {
		c.cmd = s.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // errors are per command, checked below
	for _, c := range calls {
		err := c.cmd.Err()
		if err == nil {
			continue
		}
		if !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return err
		}
		c.cmd = s.Run(ctx, t.rdb, c.keys, c.args...)
		if err := c.cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

// Forget drops the throttle state and any pending push of a device. The
// registry calls it when a device is deleted; the scripts also drop the
// state of a device whose hash is gone when they meet it. The events of a
// dropped pending push are reported by the next Step (Moves.Dropped).
func (t *Throttle) Forget(ctx context.Context, id uint64) error {
	p := keys.Partition(id)
	if err := forgetScript.Run(ctx, t.rdb, []string{keys.Throttle(p), keys.Due(p)}, strconv.FormatUint(id, 10)).Err(); err != nil {
		return fmt.Errorf("forget device %d: %w", id, err)
	}
	return nil
}

// Push is the job payload of one push, as the push worker reads it from a
// push stream entry (jobs decodes the entry; the payload format is the
// throttle's).
type Push struct {
	Device   uint64           // device id; the worker looks up its token at send time
	Events   []string         // events the push covers, oldest first
	Dropped  int              // older events merged in but not listed (MaxEvents)
	Feeds    []string         // feeds the app should fetch
	Since    map[string]int64 // per feed, the cursor to fetch from
	Until    map[string]int64 // per feed, the end of the range (Since, Until]; nil: open ranges
	Lane     string           // LaneFeed, LaneBreaking or LaneAlert
	Reason   string           // "feed", "breaking" or "stale"
	Alert    *Alert           // the visible alert of an alert-lane push; nil otherwise
	QueuedAt time.Time        // when the throttle queued it (the budget's send time)
}

type wirePush struct {
	Device   uint64           `json:"device,string"`
	Events   []string         `json:"events"`
	Dropped  int              `json:"dropped"`
	Feeds    []string         `json:"feeds"`
	Since    map[string]int64 `json:"since"`
	Lane     string           `json:"lane"`
	Reason   string           `json:"reason"`
	Alert    *Alert           `json:"alert,omitempty"`
	QueuedAt int64            `json:"queued_at"` // unix ms
}

// DecodePush decodes a push job payload.
func DecodePush(b []byte) (Push, error) {
	p, ok := decodePushFast(b)
	if ok {
		if len(p.Events) == 0 {
			return Push{}, errors.New("decode push job: no events")
		}
		return p, nil
	}
	return decodePushJSON(b)
}

// decodePushJSON decodes a push job payload with encoding/json: any form
// decodePushFast does not take.
func decodePushJSON(b []byte) (Push, error) {
	var w wirePush
	if err := json.Unmarshal(b, &w); err != nil {
		return Push{}, fmt.Errorf("decode push job: %w", err)
	}
	if len(w.Events) == 0 {
		return Push{}, errors.New("decode push job: no events")
	}
	since, until := unpackRange(w.Since)
	return Push{
		Device:   w.Device,
		Events:   w.Events,
		Dropped:  w.Dropped,
		Feeds:    w.Feeds,
		Since:    since,
		Until:    until,
		Lane:     w.Lane,
		Reason:   w.Reason,
		Alert:    w.Alert,
		QueuedAt: time.UnixMilli(w.QueuedAt),
	}, nil
}

// CollapseID is the provider collapse id of the push: the device and the
// first event it covers. A redelivered job carries the same id, so the
// provider keeps one copy; it is at most 64 bytes (APNs's limit).
func (p Push) CollapseID() string {
	id := "n" + strconv.FormatUint(p.Device, 36) + "-"
	ev := ""
	if len(p.Events) > 0 {
		ev = p.Events[0]
	}
	if len(id)+len(ev) > 64 {
		ev = ev[len(ev)-(64-len(id)):]
	}
	return id + ev
}
