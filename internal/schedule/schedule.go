// Package schedule keeps editors' syncs that are scheduled for later
// (POST /v1/syncs with send_at) and submits each one when it falls due,
// exactly once across dispatcher replicas.
//
// A scheduled sync is stored whole (its fanout.Event, audience and alert
// included, and its send_at) under its id in sched:{sched}:syncs, and
// ranked by due time in sched:{sched}:due. Every decision about time is
// taken by Redis's clock (TIME inside the scripts), never a replica's:
//
//   - add.lua refuses a send_at that is not in the future or beyond the
//     horizon;
//   - claim.lua takes the syncs that are due and leases each one to the
//     runner that took it (its due time moves to the lease's end, its claim
//     records the runner's token);
//   - the runner submits the sync through [Submit], the path an immediate
//     sync takes, with the sync's id as the event id, then finish.lua
//     forgets it if the claim is still its own;
//   - cancel.lua removes a sync that no runner has taken; once taken, a
//     cancel is refused with [ErrStarted].
//
// A runner killed between taking and submitting leaves the claim to run
// out; the sync is then due again and another runner takes it. A runner
// that is only slow may submit the same sync as the next one: submitting
// is idempotent per event id (fanout.Submitter), so the sync still starts
// once.
package schedule

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/keys"
)

// States of a scheduled sync.
const (
	// StateScheduled: waiting for its send_at; it can be cancelled.
	StateScheduled = "scheduled"
	// StateStarting: a runner took it and is submitting it; it can no
	// longer be cancelled.
	StateStarting = "starting"
)

// Errors of the Store.
var (
	// ErrNotFound: no scheduled sync has the id (it never was, was
	// cancelled, or has started and left the schedule).
	ErrNotFound = errors.New("scheduled sync not found")
	// ErrStarted: a runner took the sync; it can no longer be cancelled.
	ErrStarted = errors.New("scheduled sync has started")
	// ErrNotFuture: send_at is not after Redis's clock.
	ErrNotFuture = errors.New("send_at is not in the future")
	// ErrTooFar: send_at is beyond the horizon (Config.Horizon).
	ErrTooFar = errors.New("send_at is beyond the scheduling horizon")
	// ErrFull: Config.Max syncs are scheduled already.
	ErrFull = errors.New("too many scheduled syncs")
	// ErrExists: a sync with the id is scheduled already.
	ErrExists = errors.New("scheduled sync id exists")
)

// Sync is one scheduled sync.
type Sync struct {
	// Event is the sync as an immediate one would be submitted, with its
	// id; its Since is stamped when it starts.
	Event  fanout.Event `json:"event"`
	SendAt time.Time    `json:"send_at"`
	// CreatedAt is when an editor scheduled it.
	CreatedAt time.Time `json:"created_at"`
	// State is StateScheduled or StateStarting (not stored; read from the claims).
	State string `json:"-"`
}

// Config configures a Store and its Runner. Zero fields take the defaults.
type Config struct {
	// Horizon is how far ahead a sync may be scheduled (default 30 days).
	Horizon time.Duration
	// Max is how many syncs may be scheduled at once (default 1000).
	Max int
	// Lease is how long a runner holds a sync it took before another may
	// take it (default 30s). It must exceed the time one submit takes.
	Lease time.Duration
	// Tick is how often a Runner looks for due syncs (default 1s): a sync
	// starts at most one tick after its send_at.
	Tick time.Duration
	// Batch is the most syncs a Runner takes per look (default 16).
	Batch int
}

func (c Config) withDefaults() Config {
	c.Horizon = cmp.Or(c.Horizon, 30*24*time.Hour)
	c.Max = cmp.Or(c.Max, 1000)
	c.Lease = cmp.Or(c.Lease, 30*time.Second)
	c.Tick = cmp.Or(c.Tick, time.Second)
	c.Batch = cmp.Or(c.Batch, 16)
	return c
}

func (c Config) validate() error {
	switch {
	case c.Horizon < time.Minute:
		return fmt.Errorf("schedule: horizon %s: set Horizon to at least 1m", c.Horizon)
	case c.Max < 1:
		return fmt.Errorf("schedule: max %d: set Max to at least 1", c.Max)
	case c.Lease < 100*time.Millisecond:
		return fmt.Errorf("schedule: lease %s: set Lease to at least 100ms", c.Lease)
	case c.Tick < 10*time.Millisecond:
		return fmt.Errorf("schedule: tick %s: set Tick to at least 10ms", c.Tick)
	case c.Batch < 1:
		return fmt.Errorf("schedule: batch %d: set Batch to at least 1", c.Batch)
	}
	return nil
}

var (
	//go:embed add.lua
	addLua    string
	addScript = redis.NewScript(addLua)
	//go:embed claim.lua
	claimLua    string
	claimScript = redis.NewScript(claimLua)
	//go:embed finish.lua
	finishLua    string
	finishScript = redis.NewScript(finishLua)
	//go:embed cancel.lua
	cancelLua    string
	cancelScript = redis.NewScript(cancelLua)
)

// Store keeps the scheduled syncs in Redis.
type Store struct {
	cfg Config
	rdb redis.UniversalClient
}

// NewStore returns a Store on rdb.
func NewStore(cfg Config, rdb redis.UniversalClient) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if rdb == nil {
		return nil, errors.New("schedule: a Redis client is required")
	}
	return &Store{cfg: cfg, rdb: rdb}, nil
}

// Horizon is how far ahead a sync may be scheduled.
func (s *Store) Horizon() time.Duration { return s.cfg.Horizon }

func (s *Store) keys() []string {
	return []string{keys.ScheduleDue(), keys.ScheduleSyncs(), keys.ScheduleClaims()}
}

// Add schedules sy under sy.Event.ID. It returns ErrNotFuture, ErrTooFar
// (both decided on Redis's clock), ErrFull or ErrExists when it does not.
func (s *Store) Add(ctx context.Context, sy Sync) error {
	if sy.Event.ID == "" {
		return errors.New("schedule: a sync needs an event id")
	}
	sy.Event.Since, sy.Event.Until = nil, nil
	raw, err := json.Marshal(sy)
	if err != nil {
		return fmt.Errorf("encode scheduled sync %s: %w", sy.Event.ID, err)
	}
	res, err := addScript.Run(ctx, s.rdb, s.keys()[:2], sy.Event.ID, sy.SendAt.UnixMilli(),
		s.cfg.Horizon.Milliseconds(), s.cfg.Max, raw).Int()
	if err != nil {
		return fmt.Errorf("schedule sync %s: %w", sy.Event.ID, err)
	}
	switch res {
	case 1:
		return nil
	case 0:
		return fmt.Errorf("schedule sync %s: %w", sy.Event.ID, ErrExists)
	case -1:
		return fmt.Errorf("schedule sync %s: %w", sy.Event.ID, ErrNotFuture)
	case -2:
		return fmt.Errorf("schedule sync %s: %w", sy.Event.ID, ErrTooFar)
	default:
		return fmt.Errorf("schedule sync %s: %w", sy.Event.ID, ErrFull)
	}
}

// Get returns the scheduled sync id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Sync, error) {
	var raw *redis.StringCmd
	var claimed *redis.BoolCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		raw = p.HGet(ctx, keys.ScheduleSyncs(), id)
		claimed = p.HExists(ctx, keys.ScheduleClaims(), id)
		return nil
	})
	if errors.Is(err, redis.Nil) {
		return Sync{}, fmt.Errorf("scheduled sync %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Sync{}, fmt.Errorf("load scheduled sync %s: %w", id, err)
	}
	return decode(id, raw.Val(), claimed.Val())
}

func decode(id, raw string, claimed bool) (Sync, error) {
	var sy Sync
	if err := json.Unmarshal([]byte(raw), &sy); err != nil {
		return Sync{}, fmt.Errorf("decode scheduled sync %s: %w", id, err)
	}
	sy.State = StateScheduled
	if claimed {
		sy.State = StateStarting
	}
	return sy, nil
}

// List returns every scheduled sync, soonest first (at most Config.Max).
func (s *Store) List(ctx context.Context) ([]Sync, error) {
	var all *redis.MapStringStringCmd
	var claims *redis.StringSliceCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		all = p.HGetAll(ctx, keys.ScheduleSyncs())
		claims = p.HKeys(ctx, keys.ScheduleClaims())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list scheduled syncs: %w", err)
	}
	out := make([]Sync, 0, len(all.Val()))
	for id, raw := range all.Val() {
		sy, err := decode(id, raw, slices.Contains(claims.Val(), id))
		if err != nil {
			return nil, err
		}
		out = append(out, sy)
	}
	slices.SortFunc(out, func(a, b Sync) int {
		return cmp.Or(a.SendAt.Compare(b.SendAt), cmp.Compare(a.Event.ID, b.Event.ID))
	})
	return out, nil
}

// Cancel removes the scheduled sync id before a runner takes it. It
// returns ErrStarted once a runner has taken it, and ErrNotFound when it
// is not scheduled (which includes a sync that started and left the
// schedule: the caller tells the two apart by the event).
func (s *Store) Cancel(ctx context.Context, id string) error {
	res, err := cancelScript.Run(ctx, s.rdb, s.keys(), id).Int()
	if err != nil {
		return fmt.Errorf("cancel scheduled sync %s: %w", id, err)
	}
	switch res {
	case 1:
		return nil
	case 0:
		return fmt.Errorf("cancel scheduled sync %s: %w", id, ErrNotFound)
	default:
		return fmt.Errorf("cancel scheduled sync %s: %w", id, ErrStarted)
	}
}

// Claim takes up to n syncs that are due on Redis's clock, leased to
// token for Config.Lease. The caller submits each one and then calls
// Finish with the same token.
func (s *Store) Claim(ctx context.Context, token string, n int) ([]Sync, error) {
	res, err := claimScript.Run(ctx, s.rdb, s.keys(), s.cfg.Lease.Milliseconds(), n, token).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("claim due syncs: %w", err)
	}
	out := make([]Sync, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		sy, err := decode(res[i], res[i+1], true)
		if err != nil {
			return out, err
		}
		out = append(out, sy)
	}
	return out, nil
}

// Finish forgets the submitted sync id if token's claim still holds it; it
// reports whether it did (false: the lease ran out and another runner took
// the sync, which that runner finishes).
func (s *Store) Finish(ctx context.Context, id, token string) (bool, error) {
	n, err := finishScript.Run(ctx, s.rdb, s.keys(), id, token).Int()
	if err != nil {
		return false, fmt.Errorf("finish scheduled sync %s: %w", id, err)
	}
	return n == 1, nil
}

// Submitter submits an event into the pipeline, idempotently per event id;
// *fanout.Submitter is one.
type Submitter interface {
	Submit(ctx context.Context, ev fanout.Event) (string, error)
}

// Heads reads the feeds' head cursors; *feeds.Store is one.
type Heads interface {
	Heads(ctx context.Context, feeds ...string) ([]int64, error)
}

// Submit starts a sync now: it stamps ev with each feed's head cursor as
// the empty closed range (head, head] (a sync names no new items; the app
// fetches from its own cursor up to the head, a closed range too) and
// submits it. It is the one path of
// immediate and scheduled syncs.
func Submit(ctx context.Context, heads Heads, sub Submitter, ev fanout.Event) (string, error) {
	hs, err := heads.Heads(ctx, ev.Feeds...)
	if err != nil {
		return "", err
	}
	ev.Since = make(map[string]int64, len(ev.Feeds))
	ev.Until = make(map[string]int64, len(ev.Feeds))
	for i, f := range ev.Feeds {
		ev.Since[f], ev.Until[f] = hs[i], hs[i]
	}
	return sub.Submit(ctx, ev)
}
