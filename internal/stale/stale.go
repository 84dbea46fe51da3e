// Package stale nudges stale devices without a herd: a device that
// follows a feed with news past its synced cursor, and that has been left
// alone (no receipt, no stale nudge, not registered) for longer than
// Config.After, gets one silent push, and the pushes of one sweep are
// spread evenly, with jitter, over Config.Window.
//
// # A sweep
//
// One sweep runs per Window across all replicas: the replica that holds
// the sweep's lease (stale:{sweep}, claim.lua) runs it and checkpoints it
// (save.lua); a replica that dies leaves the lease to lapse, and the next
// one resumes at the checkpoint. A sweep has two phases, each a walk of
// the device ids through the subscription bitmaps (devices.Subscribers,
// Config.Chunk ids at a time) with each subscriber's freshness read in
// pipelines (devices.Freshness): no index of stale devices is kept.
//
//  1. count: the walk counts the stale devices, N.
//  2. send: the walk meets the stale devices again in the same order; the
//     i-th (from 0) is due at t0 + (i + u)·Window/N, where t0 is the start
//     of the phase and u in [0, 1) a hash of the sweep and the device (the
//     jitter). When it falls due it goes to the throttle (throttle.Decide
//     on the breaking lane, reason "stale", event "stale:<sweep start>"),
//     which sends it now if the device's budget allows, or later (never
//     dropped) if not. The device is then marked (devices.MarkNudged), so it
//     is not stale again before After has passed once more.
//
// A device that synced since the count is not stale any more and leaves
// its slot empty; stale devices beyond N wait for the next sweep. The
// next sweep starts Window after t0.
//
// # Crashes and replicas
//
// The send phase checkpoints the next id and ordinal after each batch it
// decided. A replica killed between a Decide and its checkpoint leaves
// the batch to the next holder, which decides it again under the same
// event id: the throttle recognises the event and sends nothing twice.
// The pushes that fell due while the lease lapsed go out at once when the
// next replica resumes (at most Lease plus Poll of them).
package stale

import (
	"cmp"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/startstop"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// claimScript takes or renews the sweep's lease; see claim.lua.
//
//go:embed claim.lua
var claimLua string

var claimScript = redis.NewScript(claimLua)

// saveScript checkpoints the sweep under its lease; see save.lua.
//
//go:embed save.lua
var saveLua string

var saveScript = redis.NewScript(saveLua)

// Config configures a Sweeper. Zero fields take the defaults.
type Config struct {
	// Off turns the sweeps off: Start starts nothing.
	Off bool
	// After is how long a device must have been left alone (no receipt,
	// no stale nudge, not registered) to be stale. Default 6h.
	After time.Duration
	// Window is the time one sweep's pushes are spread over, and the
	// period of the sweeps. Default 30m.
	Window time.Duration
	// Lease is how long a replica holds the sweep without renewing it
	// (renewed every Lease/3); a dead holder's sweep moves on after it.
	// Default 15s.
	Lease time.Duration
	// Poll is how often a replica without the lease asks for it. Default
	// Lease/3.
	Poll time.Duration
	// Chunk is how many device ids one walk step reads: a power of two
	// from 8 to 65,536. Default 4,096.
	Chunk int
	// Tick is the pacing step of the send phase: devices due within one
	// tick go to the throttle together. Default 50ms.
	Tick time.Duration
}

func (c Config) withDefaults() Config {
	c.After = cmp.Or(c.After, 6*time.Hour)
	c.Window = cmp.Or(c.Window, 30*time.Minute)
	c.Lease = cmp.Or(c.Lease, 15*time.Second)
	c.Poll = cmp.Or(c.Poll, c.Lease/3)
	c.Chunk = cmp.Or(c.Chunk, 4096)
	c.Tick = cmp.Or(c.Tick, 50*time.Millisecond)
	return c
}

func (c Config) validate() error {
	switch {
	case c.Off:
		return nil
	case c.After < time.Second:
		return fmt.Errorf("stale: after %s: set NUDGE_STALE_AFTER to at least 1s", c.After)
	case c.Window < time.Second:
		return fmt.Errorf("stale: window %s: set NUDGE_STALE_WINDOW to at least 1s", c.Window)
	case c.Lease < 100*time.Millisecond || c.Poll <= 0 || c.Tick <= 0:
		return fmt.Errorf("stale: lease %s, poll %s, tick %s: want a lease of at least 100ms and a positive poll and tick", c.Lease, c.Poll, c.Tick)
	case c.Chunk < 8 || c.Chunk > devices.MaxWindow || c.Chunk&(c.Chunk-1) != 0:
		return fmt.Errorf("stale: chunk %d: want a power of two from 8 to %d", c.Chunk, devices.MaxWindow)
	}
	return nil
}

// Catalog lists the feeds. *catalog.Store implements it.
type Catalog interface {
	List(ctx context.Context) ([]catalog.Feed, error)
}

// Heads reads the feeds' current cursors. *feeds.Store implements it.
type Heads interface {
	Heads(ctx context.Context, feeds ...string) ([]int64, error)
}

// Throttle applies an update to devices within their budget.
// *throttle.Throttle implements it.
type Throttle interface {
	Decide(ctx context.Context, u throttle.Update, devs []uint64) (throttle.Counts, error)
}

// Deps are a Sweeper's collaborators; all are required.
type Deps struct {
	Redis    redis.UniversalClient
	Devices  *devices.Registry
	Catalog  Catalog
	Heads    Heads
	Throttle Throttle
}

// Sweeper runs the stale sweeps of this replica (see the package doc).
// Start it once; Stop ends it (startstop).
type Sweeper struct {
	cfg   Config
	d     Deps
	log   *slog.Logger
	clock func() time.Time
	token string
	life  startstop.Base

	found   prometheus.Counter
	last    prometheus.Gauge
	decided *prometheus.CounterVec
}

// New returns a Sweeper; it starts nothing.
func New(a service.Archetype, cfg Config, d Deps) (*Sweeper, error) {
	a = a.WithDefaults()
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if d.Redis == nil || d.Devices == nil || d.Catalog == nil || d.Heads == nil || d.Throttle == nil {
		return nil, errors.New("stale: Deps.Redis, Devices, Catalog, Heads and Throttle are required")
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	s := &Sweeper{
		cfg: cfg, d: d, log: a.Logger, clock: a.Clock, token: hex.EncodeToString(b[:]),
		found: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_stale_devices_found_total",
			Help: "Stale devices found by the count phase of the stale sweeps.",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nudge_stale_sweep_devices",
			Help: "Stale devices the current (or last) stale sweep found, to be nudged over NUDGE_STALE_WINDOW.",
		}),
		decided: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_stale_pushes_total",
			Help: "Stale devices handed to the throttle, by its decision (queued, deferred, coalesced: a push; skipped, missing: none).",
		}, []string{"outcome"}),
	}
	if err := a.Register(s.found, s.last, s.decided); err != nil {
		return nil, fmt.Errorf("stale: %w", err)
	}
	return s, nil
}

// Start starts the sweep loop.
func (s *Sweeper) Start(ctx context.Context) error {
	if s.cfg.Off {
		return s.life.Start(ctx, startstop.Loop(func(context.Context) {}))
	}
	return s.life.Start(ctx, startstop.Loop(s.loop))
}

// Stop ends the loop and waits for it. A sweep it held is resumed by
// another replica once the lease lapses.
func (s *Sweeper) Stop() { s.life.Stop() }

// Stopped is closed once Stop has finished.
func (s *Sweeper) Stopped() <-chan struct{} { return s.life.Stopped() }

func (s *Sweeper) loop(ctx context.Context) {
	for {
		wait, err := s.step(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, errLost):
			s.log.WarnContext(ctx, "stale sweep taken over by another replica")
		case err != nil:
			s.log.ErrorContext(ctx, "stale sweep", "err", err)
			wait = s.cfg.Poll
		}
		if !startstop.Sleep(ctx, min(wait, s.cfg.Poll)) {
			return
		}
	}
}

// sweep is the state of the sweep this replica holds.
type sweep struct {
	n, cur, ord, tot, at, t0, max int64
	phase                         string

	// Redis's clock: redisAt was Redis's now (ms) when the local clock
	// read localAt.
	redisAt int64
	localAt time.Time
}

// step claims the sweep and, holding it, runs it to its end (or until the
// lease is lost). It returns how long to wait before the next claim.
func (s *Sweeper) step(ctx context.Context) (time.Duration, error) {
	maxID, err := s.d.Devices.MaxID(ctx)
	if err != nil {
		return 0, err
	}
	res, err := claimScript.Run(ctx, s.d.Redis, []string{keys.StaleSweep()},
		s.token, s.cfg.Lease.Milliseconds(), maxID).Slice()
	if err != nil {
		return 0, fmt.Errorf("claim the stale sweep: %w", err)
	}
	if len(res) < 3 {
		return 0, fmt.Errorf("claim the stale sweep: unexpected reply %v", res)
	}
	held, _ := res[0].(int64)
	now, _ := res[1].(int64)
	if held == 0 {
		wait, _ := res[2].(int64)
		return time.Duration(wait) * time.Millisecond, nil
	}
	if len(res) != 10 {
		return 0, fmt.Errorf("claim the stale sweep: unexpected reply %v", res)
	}
	sw := &sweep{redisAt: now, localAt: s.clock()}
	num := func(i int) int64 {
		str, _ := res[i].(string)
		n, _ := strconv.ParseInt(str, 10, 64)
		return n
	}
	sw.phase, _ = res[3].(string)
	sw.n, sw.cur, sw.ord, sw.tot, sw.at, sw.t0, sw.max = num(2), num(4), num(5), num(6), num(7), num(8), num(9)
	v, err := s.view(ctx, sw.at-s.cfg.After.Milliseconds())
	if err != nil {
		return 0, err
	}
	if sw.phase == "count" {
		if err := s.count(ctx, sw, v); err != nil {
			return 0, err
		}
	}
	if sw.phase == "send" {
		if err := s.send(ctx, sw, v); err != nil {
			return 0, err
		}
	}
	return 0, nil
}

// errLost is returned when another replica took the sweep's lease.
var errLost = errors.New("stale sweep: lease lost to another replica")

// save checkpoints pairs (field, value) and renews the lease; stamp, when
// not "", is set to Redis's now + offset. It keeps sw's clock in step.
func (s *Sweeper) save(ctx context.Context, sw *sweep, stamp string, offset time.Duration, pairs ...any) error {
	args := append([]any{s.token, s.cfg.Lease.Milliseconds(), stamp, offset.Milliseconds()}, pairs...)
	res, err := saveScript.Run(ctx, s.d.Redis, []string{keys.StaleSweep()}, args...).Int64Slice()
	if err != nil || len(res) != 2 {
		return fmt.Errorf("checkpoint the stale sweep: %v: %w", res, err)
	}
	sw.redisAt, sw.localAt = res[1], s.clock()
	if res[0] == 0 {
		return errLost
	}
	return nil
}

// now is Redis's clock (ms), read through the local clock since the last
// script call.
func (s *Sweeper) now(sw *sweep) int64 {
	return sw.redisAt + s.clock().Sub(sw.localAt).Milliseconds()
}

// view is what one phase run walks: the feeds with their heads, and the
// time before which a device left alone is stale.
type view struct {
	feeds  []string
	heads  []int64
	cutoff int64 // unix ms
}

func (s *Sweeper) view(ctx context.Context, cutoff int64) (*view, error) {
	fs, err := s.d.Catalog.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("stale sweep: %w", err)
	}
	ids := make([]string, len(fs))
	for i, f := range fs {
		ids[i] = f.ID
	}
	hs, err := s.d.Heads.Heads(ctx, ids...)
	if err != nil {
		return nil, fmt.Errorf("stale sweep: %w", err)
	}
	v := &view{cutoff: cutoff}
	for i, h := range hs {
		if h > 0 {
			v.feeds = append(v.feeds, ids[i])
			v.heads = append(v.heads, h)
		}
	}
	return v, nil
}

// device is one stale device: the feeds it is behind on, with its cursor
// of each.
type device struct {
	id    uint64
	feeds []string
	since map[string]int64
	ord   int64 // its ordinal in the send phase
}

// scan returns the stale devices with ids from from to the end of from's
// chunk (and at most sw.max), ascending, and the id after that chunk.
func (s *Sweeper) scan(ctx context.Context, sw *sweep, v *view, from uint64) ([]device, uint64, error) {
	n := uint64(s.cfg.Chunk)
	start := from &^ (n - 1)
	next := start + n
	follows := map[uint64][]int{} // id -> indexes into v.feeds
	for lo := 0; lo < len(v.feeds); lo += devices.MaxWalkFeeds {
		group := v.feeds[lo:min(len(v.feeds), lo+devices.MaxWalkFeeds)]
		subs, err := s.d.Devices.Subscribers(ctx, "", group, start, int(n)) // every app's subscribers
		if err != nil {
			return nil, 0, fmt.Errorf("stale sweep: %w", err)
		}
		for _, sub := range subs {
			if sub.ID < from || sub.ID > uint64(sw.max) {
				continue
			}
			for m, i := sub.Feeds, 0; m != 0; m, i = m>>1, i+1 {
				if m&1 != 0 {
					follows[sub.ID] = append(follows[sub.ID], lo+i)
				}
			}
		}
	}
	ids := slices.Sorted(maps.Keys(follows))
	names := make([][]string, len(ids))
	for i, id := range ids {
		for _, f := range follows[id] {
			names[i] = append(names[i], v.feeds[f])
		}
	}
	fr, err := s.d.Devices.Freshness(ctx, ids, names)
	if err != nil {
		return nil, 0, fmt.Errorf("stale sweep: %w", err)
	}
	var out []device
	for i, id := range ids {
		if !fr[i].Exists || fr[i].Last >= v.cutoff {
			continue
		}
		d := device{id: id}
		for j, f := range follows[id] {
			c := fr[i].Cursors[j]
			if c >= v.heads[f] {
				continue
			}
			d.feeds = append(d.feeds, v.feeds[f])
			if c > 0 { // never synced: no cursor, the app syncs from its own
				if d.since == nil {
					d.since = map[string]int64{}
				}
				d.since[v.feeds[f]] = c
			}
		}
		if len(d.feeds) > 0 {
			out = append(out, d)
		}
	}
	return out, next, nil
}

// count runs the count phase from the checkpoint, then starts the send
// phase (or ends the sweep when nothing is stale).
func (s *Sweeper) count(ctx context.Context, sw *sweep, v *view) error {
	for sw.cur <= sw.max {
		found, next, err := s.scan(ctx, sw, v, uint64(sw.cur))
		if err != nil {
			return err
		}
		sw.cur, sw.ord = int64(next), sw.ord+int64(len(found))
		if err := s.save(ctx, sw, "", 0, "cur", sw.cur, "ord", sw.ord); err != nil {
			return err
		}
	}
	s.found.Add(float64(sw.ord))
	s.last.Set(float64(sw.ord))
	s.log.InfoContext(ctx, "stale sweep counted", "sweep", sw.n, "stale_devices", sw.ord, "window", s.cfg.Window.String())
	if sw.ord == 0 {
		sw.phase = "done"
		return s.save(ctx, sw, "next", s.cfg.Window, "ph", "done", "own", "")
	}
	sw.tot = sw.ord
	if err := s.save(ctx, sw, "t0", 0, "ph", "send", "cur", 0, "ord", 0, "tot", sw.tot); err != nil {
		return err
	}
	sw.phase, sw.cur, sw.ord, sw.t0 = "send", 0, 0, sw.redisAt
	return nil
}

// due is the time (unix ms) the device with ordinal ord is due in sw's
// send phase: even spacing over the window, jittered within its slot.
func (s *Sweeper) due(sw *sweep, d device) int64 {
	h := fnv.New64a()
	h.Write([]byte(strconv.FormatInt(sw.at, 10) + ":" + strconv.FormatUint(d.id, 10)))
	u := float64(h.Sum64()>>11) / (1 << 53)
	slot := float64(s.cfg.Window.Milliseconds()) / float64(sw.tot)
	return sw.t0 + int64(math.Floor((float64(d.ord)+u)*slot))
}

// chunk is one walk step of the send phase, read ahead of the pacing.
type chunk struct {
	found []device
	next  uint64
	err   error
}

// readAhead walks from from to sw.max on its own goroutine, one chunk
// ahead of the caller, so that reading the next chunk does not stall the
// pacing. The caller cancels ctx and then waits on the returned done.
func (s *Sweeper) readAhead(ctx context.Context, sw *sweep, v *view, from uint64) (<-chan chunk, <-chan struct{}) {
	ch := make(chan chunk, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		for from <= uint64(sw.max) {
			found, next, err := s.scan(ctx, sw, v, from)
			select {
			case ch <- chunk{found: found, next: next, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			from = next
		}
	}()
	return ch, done
}

// send runs the send phase from the checkpoint to the sweep's end.
func (s *Sweeper) send(ctx context.Context, sw *sweep, v *view) error {
	event := "stale:" + strconv.FormatInt(sw.at, 10)
	s.last.Set(float64(sw.tot))
	rctx, cancel := context.WithCancel(ctx)
	chunks, done := s.readAhead(rctx, sw, v, uint64(sw.cur))
	defer func() { cancel(); <-done }()
	var queue []device
	walked := false
	ord := sw.ord
	for {
		if len(queue) == 0 && !walked {
			c, ok := <-chunks
			if !ok {
				walked = true
				continue
			}
			if c.err != nil {
				return c.err
			}
			for _, d := range c.found {
				if ord >= sw.tot {
					walked = true // the rest waits for the next sweep
					break
				}
				d.ord = ord
				ord++
				queue = append(queue, d)
			}
			if len(queue) == 0 {
				// Nothing to send in this chunk: checkpoint past it.
				if err := s.save(ctx, sw, "", 0, "cur", c.next, "ord", ord); err != nil {
					return err
				}
			}
			continue
		}
		if len(queue) == 0 {
			break
		}
		now := s.now(sw)
		if wait := s.due(sw, queue[0]) - now; wait > 0 {
			renew := s.cfg.Lease / 3
			if !startstop.Sleep(ctx, min(time.Duration(wait)*time.Millisecond, renew, s.cfg.Tick)) {
				return ctx.Err()
			}
			if s.clock().Sub(sw.localAt) >= renew {
				if err := s.save(ctx, sw, "", 0); err != nil {
					return err
				}
			}
			continue
		}
		k := 1
		for k < len(queue) && s.due(sw, queue[k]) <= now {
			k++
		}
		if err := s.nudge(ctx, event, queue[:k]); err != nil {
			return err
		}
		last := queue[k-1]
		queue = queue[k:]
		if err := s.save(ctx, sw, "", 0, "cur", last.id+1, "ord", last.ord+1); err != nil {
			return err
		}
	}
	sw.phase = "done"
	s.log.InfoContext(ctx, "stale sweep done", "sweep", sw.n, "stale_devices", sw.tot)
	return s.save(ctx, sw, "", 0, "ph", "done", "cur", sw.max+1, "next", sw.t0+s.cfg.Window.Milliseconds(), "own", "")
}

// nudge hands devs to the throttle, one update per distinct set of feeds
// and cursors, then marks them nudged.
func (s *Sweeper) nudge(ctx context.Context, event string, devs []device) error {
	type group struct {
		u   throttle.Update
		ids []uint64
	}
	groups := map[string]*group{}
	var order []string
	for _, d := range devs {
		var b strings.Builder
		for _, f := range d.feeds {
			b.WriteString(f + "\x1f" + strconv.FormatInt(d.since[f], 10) + "\x1f")
		}
		k := b.String()
		g := groups[k]
		if g == nil {
			g = &group{u: throttle.Update{Event: event, Feeds: d.feeds, Lane: throttle.LaneBreaking, Reason: "stale", Since: d.since}}
			groups[k] = g
			order = append(order, k)
		}
		g.ids = append(g.ids, d.id)
	}
	var total throttle.Counts
	for _, k := range order {
		c, err := s.d.Throttle.Decide(ctx, groups[k].u, groups[k].ids)
		if err != nil {
			return fmt.Errorf("stale sweep: %w", err)
		}
		total.Add(c)
	}
	for _, o := range []struct {
		name string
		n    int64
	}{{"queued", total.Queued}, {"deferred", total.Deferred}, {"coalesced", total.Coalesced}, {"skipped", total.Skipped}, {"missing", total.Missing}} {
		if o.n > 0 {
			s.decided.WithLabelValues(o.name).Add(float64(o.n))
		}
	}
	ids := make([]uint64, len(devs))
	for i, d := range devs {
		ids[i] = d.id
	}
	if err := s.d.Devices.MarkNudged(ctx, ids); err != nil {
		return fmt.Errorf("stale sweep: %w", err)
	}
	return nil
}
