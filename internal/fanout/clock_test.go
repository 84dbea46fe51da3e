package fanout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// TestSkewedReplicasKeepTheBudget runs two replicas (planner, throttle and
// scheduler each) on one Redis, their wall clocks skewed by ±30 s and
// ±5 min, alternately planning breaking events for the same devices for
// about 5 s. The referee is the push stream's entry ids, which Redis
// stamps with its own clock: no two pushes to a device may be closer than
// MinGap, and no window W may hold more than K. The policy is scaled down
// (K = 2 per 3 s, MinGap 1 s instead of 3 per hour and 10 min) to keep the
// test short; the skews are the issue's.
func TestSkewedReplicasKeepTheBudget(t *testing.T) {
	t.Parallel()
	pol := throttle.Policy{Limit: 2, Window: 3 * time.Second, MinGap: time.Second, Debounce: 100 * time.Millisecond, MaxWait: time.Second}
	for _, skew := range []time.Duration{30 * time.Second, 5 * time.Minute} {
		t.Run(skew.String(), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			rdb := redistest.Start(t)
			type replica struct {
				th *throttle.Throttle
				pl *Planner
			}
			var reps []replica
			for _, off := range []time.Duration{skew, -skew} {
				th, err := throttle.New(service.Archetype{Logger: discard()}, throttle.Config{IOS: pol, Android: pol}, rdb)
				if err != nil {
					t.Fatal(err)
				}
				pl := newPlanner(t, rdb, Config{}, th, func() time.Time { return time.Now().Add(off) })
				reps = append(reps, replica{th, pl})
			}
			b := &bundle{rdb: rdb}
			const devs = 4 // two iOS, two Android
			b.devices(t, 1, devs, 0)
			b.subscribe(t, "a", 1, devs)

			deadline := time.Now().Add(5 * time.Second)
			for i := 0; time.Now().Before(deadline); i++ {
				r := reps[i%2]
				ev := Event{ID: fmt.Sprint("e", i), Feeds: []string{"a"}, Lane: throttle.LaneBreaking, Reason: "breaking",
					Since: map[string]int64{"a": int64(i)}}
				if i%3 == 0 {
					ev.Lane, ev.Reason = throttle.LaneFeed, "feed"
				}
				if _, err := r.pl.Publish(ctx, ev); err != nil {
					t.Fatal(err)
				}
				if _, err := r.pl.Plan(ctx, ev.ID); err != nil {
					t.Fatal(err)
				}
				if _, err := reps[(i+1)%2].th.Step(ctx, 100); err != nil {
					t.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond) // time is the subject: events paced over 5 s of Redis's clock (the throttle reads TIME)
			}

			// Stream ids have millisecond resolution and the scripts floor
			// TIME to the millisecond, so a push can appear up to 1 ms
			// early against the one before it; anything more is a breach.
			const resolution = time.Millisecond
			total := 0
			for id := uint64(1); id <= devs; id++ {
				at := queuedAt(t, b, id)
				total += len(at)
				for k := 1; k < len(at); k++ {
					if gap := at[k].Sub(at[k-1]); gap < pol.MinGap-resolution {
						t.Errorf("device %d: pushes %v apart, under the %v gap", id, gap, pol.MinGap)
					}
					if k >= pol.Limit {
						if span := at[k].Sub(at[k-pol.Limit]); span < pol.Window-resolution {
							t.Errorf("device %d: %d pushes within %v, over %d per %v", id, pol.Limit+1, span, pol.Limit, pol.Window)
						}
					}
				}
			}
			// Over 5 s each device can get at most about 3 pushes; fewer
			// than one each would mean nothing was tested.
			if total < devs {
				t.Fatalf("only %d pushes for %d devices: the budget was never exercised", total, devs)
			}
		})
	}
}

// queuedAt returns the Redis times at which pushes to device id entered
// its push stream (the entry ids' millisecond part), in order.
func queuedAt(t *testing.T, b *bundle, id uint64) []time.Time {
	t.Helper()
	var out []time.Time
	for _, q := range b.queued(t) {
		if q.Push.Device == id {
			out = append(out, q.At)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// expiringDecider deletes the event hash on its first call, as if the
// event's TTL ran out while it was being planned.
type expiringDecider struct {
	Decider
	b    *bundle
	id   string
	done bool
}

func (d *expiringDecider) Decide(ctx context.Context, u throttle.Update, ids []uint64) (throttle.Counts, error) {
	if !d.done {
		d.done = true
		if err := d.b.rdb.Del(ctx, keys.Event(d.id)).Err(); err != nil {
			return throttle.Counts{}, err
		}
	}
	return d.Decider.Decide(ctx, u, ids)
}

// TestExpiredEventIsNotRecreated expires the event hash in the middle of
// planning: the planner must stop with ErrNotFound and leave no hash
// behind, because a recreated hash would have no TTL and never go away.
func TestExpiredEventIsNotRecreated(t *testing.T) {
	t.Parallel()
	exp := &expiringDecider{id: "e1"}
	b := setup(t, nil, Config{Window: 1024}, func(d Decider) Decider { exp.Decider = d; return exp })
	exp.b = b
	b.devices(t, 1, 3000, 0)
	b.subscribe(t, "a", 1, 3000)
	b.publish(t, feedEvent("e1", "a"))
	if ttl, err := b.rdb.PTTL(t.Context(), keys.Event("e1")).Result(); err != nil || ttl <= 0 {
		t.Fatalf("published event TTL: got %v, %v, want a TTL", ttl, err)
	}
	if _, err := b.pl.Plan(t.Context(), "e1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("plan of an event that expired: got %v, want ErrNotFound", err)
	}
	if n, err := b.rdb.Exists(t.Context(), keys.Event("e1")).Result(); err != nil || n != 0 {
		t.Fatalf("event hash after planning an expired event: exists %d, %v; want it gone", n, err)
	}
}
