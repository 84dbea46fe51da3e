package throttle

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

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
}

func (m *Moves) add(v []int64) {
	m.Queued += v[0]
	m.Rescheduled += v[1]
	m.Skipped += v[2]
	m.Missing += v[3]
	m.Stale += v[4]
}

// Step moves every pending push due at or before now (the throttle's clock,
// Redis's TIME by default) into the push stream,
// in rounds of at most limit devices per partition, pipelined across
// partitions. It re-checks the limits with the device's current settings.
// Several schedulers may step at once: a device is moved by one of them.
func (t *Throttle) Step(ctx context.Context, limit int) (Moves, error) {
	var total Moves
	now, err := t.cfg.Clock.Now(ctx)
	if err != nil {
		return total, fmt.Errorf("scheduler: %w", err)
	}
	upTo := strconv.FormatInt(now.UnixMilli(), 10)
	nowArg, err := t.nowArg(ctx)
	if err != nil {
		return total, fmt.Errorf("scheduler: %w", err)
	}
	active := make([]int, keys.Partitions)
	for p := range active {
		active[p] = p
	}
	for len(active) > 0 {
		pipe := t.rdb.Pipeline()
		ranges := make([]*redis.StringSliceCmd, len(active))
		for i, p := range active {
			ranges[i] = pipe.ZRangeByScore(ctx, keys.Due(p), &redis.ZRangeBy{Min: "-inf", Max: upTo, Count: int64(limit)})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return total, fmt.Errorf("scheduler: read due sets: %w", err)
		}
		var calls []*call
		var next []int
		for i, p := range active {
			ids := ranges[i].Val()
			if len(ids) == 0 {
				continue
			}
			if len(ids) == limit {
				next = append(next, p)
			}
			c := &call{keys: make([]string, 0, 3+len(ids)), args: make([]any, 0, 11+len(ids))}
			c.keys = append(c.keys, keys.Throttle(p), keys.Due(p), keys.Stream(keys.PushQueue, p))
			c.args = append(c.args, nowArg)
			c.args = append(c.args, t.polArg...)
			for _, s := range ids {
				id, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					return total, fmt.Errorf("scheduler: due set %s holds %q: %w", keys.Due(p), s, err)
				}
				c.keys = append(c.keys, keys.Device(id))
				c.args = append(c.args, s)
			}
			calls = append(calls, c)
		}
		if err := t.run(ctx, t.move, calls); err != nil {
			return total, fmt.Errorf("scheduler: move due pushes: %w", err)
		}
		var round Moves
		for _, c := range calls {
			v, err := c.cmd.Int64Slice()
			if err != nil || len(v) != 5 {
				return total, fmt.Errorf("scheduler: move script reply %v: %w", c.cmd.Val(), err)
			}
			round.add(v)
		}
		t.moves.WithLabelValues("queued").Add(float64(round.Queued))
		t.moves.WithLabelValues("rescheduled").Add(float64(round.Rescheduled))
		t.moves.WithLabelValues("skipped").Add(float64(round.Skipped))
		t.moves.WithLabelValues("missing").Add(float64(round.Missing))
		t.moves.WithLabelValues("stale").Add(float64(round.Stale))
		total.add([]int64{round.Queued, round.Rescheduled, round.Skipped, round.Missing, round.Stale})
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

// Scheduler runs Throttle.Step every tick. A pending push goes out at most
// one tick after it falls due.
type Scheduler struct {
	cfg SchedulerConfig
	th  *Throttle
	log *slog.Logger

	life startstop.Base
}

// NewScheduler returns a Scheduler over th. Its ticks are local; what is
// due is decided on the throttle's clock. a's logger receives its errors;
// its metrics are the throttle's.
func NewScheduler(a service.Archetype, cfg SchedulerConfig, th *Throttle) (*Scheduler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Scheduler{cfg: cfg, th: th, log: a.WithDefaults().Logger}, nil
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
