// Package events owns the fan-out event hashes (keys.Event) and the event
// id counter (keys.EventSeq). The planner creates an event, checkpoints
// its walk and marks it finished; the push worker records push outcomes;
// the api reads definitions and progress. Nobody else touches the keys.
//
// The event hash holds:
//
//	def                      the event's definition (the planner's JSON)
//	cur                      next device id to walk
//	done, fin                "1" and the finish time (unix ms) once planned
//	targeted                 devices found subscribed
//	queued deferred coalesced skipped missing duplicate   throttle outcomes
//	held                     alert-lane devices the alert guard held back
//	sent pruned failed superseded   push outcomes (Record)
//	unresponsive                    push outcome (Record)
//	dropped                  pending pushes the throttle's scheduler dropped (device
//	                         opted out or deleted before it was due), per device (Record)
//	last                     when the latest push of the event was sent (unix ms, Redis's clock)
//
// The hash expires Config.Retain after Create. Nothing recreates it
// without a TTL: Checkpoint and Finish only write to an existing hash (and
// report ErrNotFound when it expired), Record only counts into an existing
// one, and a Create of the same id after expiry sets the TTL again.
//
// The scripts are embedded .lua files, each opening with its KEYS/ARGV and
// return contract.
package events

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

var (
	//go:embed record.lua
	recordLua    string
	recordScript = redis.NewScript(recordLua)

	//go:embed checkpoint.lua
	checkpointLua    string
	checkpointScript = redis.NewScript(checkpointLua)

	//go:embed finish.lua
	finishLua    string
	finishScript = redis.NewScript(finishLua)
)

// ErrNotFound is returned for an event id that has no event hash.
var ErrNotFound = errors.New("event not found")

// Config configures a Store. Zero fields take the defaults.
type Config struct {
	// Retain is how long an event hash is kept after Create (default 7 days).
	Retain time.Duration
}

func (c Config) withDefaults() Config {
	c.Retain = cmp.Or(c.Retain, 7*24*time.Hour)
	return c
}

func (c Config) validate() error {
	if c.Retain < time.Hour {
		return fmt.Errorf("events: retain %s: set Retain to at least 1h", c.Retain)
	}
	return nil
}

// Store reads and writes event hashes.
type Store struct {
	cfg Config
	rdb redis.UniversalClient
}

// New returns a Store on rdb.
func New(cfg Config, rdb redis.UniversalClient) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if rdb == nil {
		return nil, errors.New("events: a Redis client is required")
	}
	return &Store{cfg: cfg, rdb: rdb}, nil
}

// NewID returns a fresh event id from the event counter.
func (s *Store) NewID(ctx context.Context) (string, error) {
	n, err := s.rdb.Incr(ctx, keys.EventSeq()).Result()
	if err != nil {
		return "", fmt.Errorf("new event id: %w", err)
	}
	return strconv.FormatInt(n, 10), nil
}

// Create stores an event's definition under id and reports whether it was
// new. Creating an id again is a no-op that returns false.
func (s *Store) Create(ctx context.Context, id string, def []byte) (bool, error) {
	var created *redis.BoolCmd
	_, err := s.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		created = pipe.HSetNX(ctx, keys.Event(id), "def", def)
		pipe.ExpireNX(ctx, keys.Event(id), s.cfg.Retain)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("publish event %s: %w", id, err)
	}
	return created.Val(), nil
}

// Definition returns the definition stored under id.
func (s *Store) Definition(ctx context.Context, id string) ([]byte, error) {
	raw, err := s.rdb.HGet(ctx, keys.Event(id), "def").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("event %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load event %s: %w", id, err)
	}
	return raw, nil
}

var progressFields = []string{"done", "cur", "fin", "targeted", "queued", "deferred", "coalesced", "skipped", "missing", "duplicate", "sent", "pruned", "failed", "superseded", "held", "last", "dropped", "unresponsive", "def"}

// Progress returns the progress of event id.
func (s *Store) Progress(ctx context.Context, id string) (Progress, error) {
	v, err := s.rdb.HMGet(ctx, keys.Event(id), progressFields...).Result()
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
		Sent: n(10), Pruned: n(11), Failed: n(12), Superseded: n(13), Held: n(14), Dropped: n(16), Unresponsive: n(17),
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

// Counts are the planning counts of one window, added by Checkpoint.
type Counts struct {
	Targeted, Queued, Deferred, Coalesced, Skipped, Missing, Duplicate, Held int64
}

// Checkpoint moves the cursor of event id from from to next and adds c, in
// one step, if the cursor is still at from. It reports false when another
// planner had moved the cursor (nothing was written), and ErrNotFound when
// the event expired.
func (s *Store) Checkpoint(ctx context.Context, id string, from, next uint64, c Counts) (bool, error) {
	ok, err := checkpointScript.Run(ctx, s.rdb, []string{keys.Event(id)},
		strconv.FormatUint(from, 10), strconv.FormatUint(next, 10),
		"targeted", c.Targeted, "queued", c.Queued, "deferred", c.Deferred, "coalesced", c.Coalesced,
		"skipped", c.Skipped, "missing", c.Missing, "duplicate", c.Duplicate, "held", c.Held).Int()
	switch {
	case err != nil:
		return false, fmt.Errorf("checkpoint event %s at %d: %w", id, next, err)
	case ok < 0:
		return false, fmt.Errorf("checkpoint event %s at %d: %w", id, next, ErrNotFound)
	}
	return ok == 1, nil
}

// Finish marks event id planned at time at.
func (s *Store) Finish(ctx context.Context, id string, at time.Time) error {
	switch n, err := finishScript.Run(ctx, s.rdb, []string{keys.Event(id)}, at.UnixMilli()).Int(); {
	case err != nil:
		return fmt.Errorf("mark event %s done: %w", id, err)
	case n == 0:
		return fmt.Errorf("mark event %s done: %w", id, ErrNotFound)
	}
	return nil
}

// Record counts one push outcome for each entry of eventIDs: an event listed
// n times (n pushes of a batch covered it) is counted n times, in one
// pipeline. An event that expired is skipped, not recreated.
func (s *Store) Record(ctx context.Context, eventIDs []string, o Outcome) error {
	if o != OutcomeSent && o != OutcomePruned && o != OutcomeFailed && o != OutcomeSuperseded && o != OutcomeSkipped && o != OutcomeUnresponsive {
		return fmt.Errorf("record outcome %q: want sent, pruned, failed, superseded, unresponsive or skipped", o)
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
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(ids))
	for i, id := range ids {
		cmds[i] = recordScript.EvalSha(ctx, pipe, []string{keys.Event(id)}, field, counts[id])
	}
	_, _ = pipe.Exec(ctx) // errors are per command, checked below
	for i, c := range cmds {
		err := c.Err()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = recordScript.Run(ctx, s.rdb, []string{keys.Event(ids[i])}, field, counts[ids[i]]).Err()
		}
		if err != nil {
			return fmt.Errorf("record %s for event %s: %w", o, ids[i], err)
		}
	}
	return nil
}
