package throttle

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/startstop"
)

// Moves are the outcomes of a scheduler step.
type Moves struct {
	Queued      int64 // pending push written to the stream
	Rescheduled int64 // limits do not allow it yet (stricter settings): due later
	Skipped     int64 // device turned background sync off: pending push dropped
	Missing     int64 // device gone: state dropped
	Stale       int64 // already handled by another scheduler
	// Dropped lists the events that left a pending push without being
	// sent, one entry per device and event: the pushes of skipped and
	// missing devices, and those stashed since the last step by Decide
	// (event ids beyond MaxEvents, devices found gone) and Forget. Each
	// such device is to be counted skipped in that event's progress.
	Dropped []string
}

func (m *Moves) add(o Moves) {
	m.Queued += o.Queued
	m.Rescheduled += o.Rescheduled
	m.Skipped += o.Skipped
	m.Missing += o.Missing
	m.Stale += o.Stale
	m.Dropped = append(m.Dropped, o.Dropped...)
}

// moves decodes a move script reply: five counts and the dropped event
// ids as JSON string literals.
func moves(v []any) (Moves, error) {
	if len(v) != 6 {
		return Moves{}, fmt.Errorf("%d elements, want 6", len(v))
	}
	var n [5]int64
	for i := range n {
		x, ok := v[i].(int64)
		if !ok {
			return Moves{}, fmt.Errorf("element %d is %T, want a number", i, v[i])
		}
		n[i] = x
	}
	m := Moves{Queued: n[0], Rescheduled: n[1], Skipped: n[2], Missing: n[3], Stale: n[4]}
	var err error
	m.Dropped, err = eventIDs(v[5])
	return m, err
}

// dueReply decodes a due script reply: the due device ids and the
// dropped event ids.
func dueReply(c *redis.Cmd) (ids, dropped []string, err error) {
	v, err := c.Slice()
	if err != nil {
		return nil, nil, err
	}
	if len(v) != 2 {
		return nil, nil, fmt.Errorf("due script reply %v: want 2 elements", v)
	}
	l, _ := v[0].([]any)
	for _, x := range l {
		s, _ := x.(string)
		ids = append(ids, s)
	}
	dropped, err = eventIDs(v[1])
	return ids, dropped, err
}

// eventIDs decodes a script's list of event ids as JSON string literals.
func eventIDs(v any) ([]string, error) {
	l, _ := v.([]any)
	var out []string
	for _, q := range l {
		s, _ := q.(string)
		var id string
		if err := json.Unmarshal([]byte(s), &id); err != nil {
			return nil, fmt.Errorf("dropped event id %q: %w", s, err)
		}
		out = append(out, id)
	}
	return out, nil
}

// Step moves every pending push due at or before Redis's TIME into the
// push stream, in rounds of at most limit devices per partition, pipelined
// across partitions. It re-checks the limits with the device's current
// settings. Several schedulers may step at once: a device is moved by one
// of them. The pushes it drops are listed in Moves.Dropped, also when it
// returns an error after some rounds.
func (t *Throttle) Step(ctx context.Context, limit int) (Moves, error) {
	var total Moves
	active := make([]int, keys.Partitions)
	for p := range active {
		active[p] = p
	}
	for len(active) > 0 {
		ranges := make([]*call, len(active))
		for i, p := range active {
			ranges[i] = &call{keys: []string{keys.Due(p), keys.Throttle(p)}, args: []any{limit}}
		}
		if err := t.run(ctx, t.list, ranges); err != nil {
			return total, fmt.Errorf("scheduler: read due sets: %w", err)
		}
		var calls []*call
		var next []int
		for i, p := range active {
			ids, dropped, err := dueReply(ranges[i].cmd)
			if err != nil {
				return total, fmt.Errorf("scheduler: due set %s: %w", keys.Due(p), err)
			}
			total.Dropped = append(total.Dropped, dropped...)
			if len(ids) == 0 {
				continue
			}
			if len(ids) == limit {
				next = append(next, p)
			}
			c := &call{keys: make([]string, 0, 3+len(ids)), args: make([]any, 0, 12+len(ids))}
			c.keys = append(c.keys, keys.Throttle(p), keys.Due(p), jobs.Stream(keys.PushQueue, p))
			c.args = append(c.args, t.policyArgs(ctx)...)
			for _, s := range ids {
				id, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					return total, fmt.Errorf("scheduler: due set %s holds %q: %w", keys.Due(p), s, err)
				}
				c.keys = append(c.keys, devices.Key(id))
				c.args = append(c.args, s)
			}
			calls = append(calls, c)
		}
		if err := t.run(ctx, t.move, calls); err != nil {
			return total, fmt.Errorf("scheduler: move due pushes: %w", err)
		}
		var round Moves
		for _, c := range calls {
			v, err := c.cmd.Slice()
			if err != nil {
				return total, fmt.Errorf("scheduler: move due pushes: %w", err)
			}
			m, err := moves(v)
			if err != nil {
				return total, fmt.Errorf("scheduler: move script reply %v: %w", v, err)
			}
			round.add(m)
		}
		t.moves.WithLabelValues("queued").Add(float64(round.Queued))
		t.moves.WithLabelValues("rescheduled").Add(float64(round.Rescheduled))
		t.moves.WithLabelValues("skipped").Add(float64(round.Skipped))
		t.moves.WithLabelValues("missing").Add(float64(round.Missing))
		t.moves.WithLabelValues("stale").Add(float64(round.Stale))
		total.add(round)
		// A round that only rescheduled or met stale entries made no progress
		// on what is due now; stop rather than spin on it.
		if round.Queued+round.Skipped+round.Missing == 0 && round.Rescheduled == 0 {
			break
		}
		active = next
	}
	return total, nil
}

// DueCount returns the number of devices with a pending push, over all
// partitions.
func (t *Throttle) DueCount(ctx context.Context) (int64, error) {
	pipe := t.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, keys.Partitions)
	for p := range cmds {
		cmds[p] = pipe.ZCard(ctx, keys.Due(p))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("count due pushes: %w", err)
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	t.due.Set(float64(n))
	return n, nil
}

// SchedulerConfig configures a Scheduler. Zero fields take the defaults.
type SchedulerConfig struct {
	Tick  time.Duration // how often due pushes are moved (default 1s)
	Limit int           // devices per partition per script call (default 256)
}

func (c SchedulerConfig) withDefaults() SchedulerConfig {
	c.Tick = cmp.Or(c.Tick, time.Second)
	c.Limit = cmp.Or(c.Limit, 256)
	return c
}

func (c SchedulerConfig) validate() error {
	if c.Tick < 10*time.Millisecond {
		return fmt.Errorf("throttle scheduler: tick %s: set Tick to at least 10ms", c.Tick)
	}
	if c.Limit < 1 {
		return fmt.Errorf("throttle scheduler: limit %d: set Limit to at least 1", c.Limit)
	}
	return nil
}

// Recorder counts devices out of events' progress; *fanout.Planner is one.
type Recorder interface {
	// RecordSkipped counts one device as skipped for each entry of
	// eventIDs (an event listed n times counts n devices).
	RecordSkipped(ctx context.Context, eventIDs []string) error
}

// Scheduler runs Throttle.Step every tick. A pending push goes out at most
// one tick after it falls due. The devices whose pending push it drops
// (opted out or deleted before it was due) are recorded as skipped for
// every event the push covered.
type Scheduler struct {
	cfg SchedulerConfig
	th  *Throttle
	rec Recorder
	log *slog.Logger

	life startstop.Base
}

// NewScheduler returns a Scheduler over th that records dropped pushes
// through rec. Its ticks are local; what is due is decided on Redis's
// clock. a's logger receives its errors; its metrics are the throttle's.
func NewScheduler(a service.Archetype, cfg SchedulerConfig, th *Throttle, rec Recorder) (*Scheduler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if th == nil || rec == nil {
		return nil, errors.New("throttle scheduler: a Throttle and a Recorder are required")
	}
	return &Scheduler{cfg: cfg, th: th, rec: rec, log: a.WithDefaults().Logger}, nil
}

// Start starts the scheduler loop. The loop ends when ctx ends or Stop is
// called. It follows startstop: a second Start, or a Start after Stop,
// returns startstop.ErrStarted.
func (s *Scheduler) Start(ctx context.Context) error {
	return s.life.Start(ctx, startstop.Loop(s.loop))
}

// Stop stops the loop and waits for it to exit. It is safe to call twice
// or before Start.
func (s *Scheduler) Stop() { s.life.Stop() }

// Stopped is closed once Stop has finished.
func (s *Scheduler) Stopped() <-chan struct{} { return s.life.Stopped() }

func (s *Scheduler) loop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		m, err := s.th.Step(ctx, s.cfg.Limit)
		if len(m.Dropped) > 0 {
			if rerr := s.rec.RecordSkipped(ctx, m.Dropped); rerr != nil && ctx.Err() == nil {
				s.log.ErrorContext(ctx, "throttle scheduler record dropped pushes", "events", len(m.Dropped), "err", rerr)
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.ErrorContext(ctx, "throttle scheduler step", "err", err)
			}
			continue
		}
		if m.Queued+m.Skipped+m.Missing > 0 {
			s.log.DebugContext(ctx, "throttle scheduler moved pushes", "queued", m.Queued, "rescheduled", m.Rescheduled, "skipped", m.Skipped, "missing", m.Missing)
		}
		if _, err := s.th.DueCount(ctx); err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "throttle scheduler count due", "err", err)
		}
	}
}
