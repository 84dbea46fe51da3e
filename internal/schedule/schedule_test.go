package schedule_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/events"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/schedule"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// counting passes submits to the real fanout.Submitter and counts them per
// event id.
type counting struct {
	next   schedule.Submitter
	before func(id string) // optional, runs before each submit
	mu     sync.Mutex
	n      map[string]int
}

func (c *counting) Submit(ctx context.Context, ev fanout.Event) (string, error) {
	if c.before != nil {
		c.before(ev.ID)
	}
	c.mu.Lock()
	c.n[ev.ID]++
	c.mu.Unlock()
	return c.next.Submit(ctx, ev)
}

func (c *counting) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

type bundle struct {
	rdb     *redis.Client
	hook    *devicestest.RaceHook
	store   *schedule.Store
	planner *fanout.Planner
	items   *feeds.Store
	sub     *counting
	log     *slog.Logger
}

func setup(t *testing.T, cfg schedule.Config) *bundle {
	t.Helper()
	rdb := redistest.Start(t)
	hook := &devicestest.RaceHook{}
	rdb.AddHook(hook)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	th, err := throttle.New(service.Archetype{Logger: log}, throttle.Config{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := events.New(events.Config{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := devices.New(service.Archetype{}, rdb, nil, devices.Config{})
	if err != nil {
		t.Fatal(err)
	}
	planner, err := fanout.New(service.Archetype{Logger: log}, fanout.Config{}, fanout.Deps{Events: evs, Subscribers: reg, Decider: th})
	if err != nil {
		t.Fatal(err)
	}
	events, err := jobs.New(rdb, jobs.Config{Name: keys.EventQueue, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	items, err := feeds.NewStore(feeds.StoreConfig{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	store, err := schedule.NewStore(cfg, rdb)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{rdb: rdb, hook: hook, store: store, planner: planner, items: items, log: log,
		sub: &counting{next: fanout.NewSubmitter(planner, events), n: map[string]int{}}}
}

func (b *bundle) runner(t *testing.T) *schedule.Runner {
	t.Helper()
	r, err := schedule.NewRunner(service.Archetype{Logger: b.log}, b.store, b.items, b.sub)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// add schedules sync id for in from now.
func (b *bundle) add(t *testing.T, id string, in time.Duration) {
	t.Helper()
	err := b.store.Add(t.Context(), schedule.Sync{
		Event:  fanout.Event{ID: id, Feeds: []string{"world"}, Lane: throttle.LaneBreaking, Reason: "breaking"},
		SendAt: time.Now().Add(in), CreatedAt: time.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
}

// queued returns how many times each event id is on the events queue.
func (b *bundle) queued(t *testing.T) map[string]int {
	t.Helper()
	msgs, err := b.rdb.XRange(t.Context(), keys.Stream(keys.EventQueue, 0), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, m := range msgs {
		if s, ok := m.Values["p"].(string); ok {
			n[s]++
		}
	}
	return n
}

func (b *bundle) scheduled(t *testing.T) int {
	t.Helper()
	l, err := b.store.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return len(l)
}

func TestAddChecksSendAtOnRedisClock(t *testing.T) {
	t.Parallel()
	b := setup(t, schedule.Config{Horizon: time.Hour, Max: 2})
	ev := func(id string) fanout.Event {
		return fanout.Event{ID: id, Feeds: []string{"world"}, Lane: throttle.LaneBreaking, Reason: "breaking"}
	}
	b.add(t, "1", time.Minute)
	tests := []struct {
		name   string
		id     string
		sendAt time.Time
		want   error
	}{
		{"past", "2", time.Now().Add(-time.Second), schedule.ErrNotFuture},
		{"beyond horizon", "2", time.Now().Add(61 * time.Minute), schedule.ErrTooFar},
		{"same id", "1", time.Now().Add(time.Minute), schedule.ErrExists},
		{"within", "2", time.Now().Add(59 * time.Minute), nil},
		{"full", "3", time.Now().Add(time.Minute), schedule.ErrFull},
	}
	for _, tt := range tests {
		err := b.store.Add(t.Context(), schedule.Sync{Event: ev(tt.id), SendAt: tt.sendAt})
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Fatalf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	l, err := b.store.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || l[0].Event.ID != "1" || l[1].Event.ID != "2" || l[0].State != schedule.StateScheduled {
		t.Fatalf("list: got %+v, want 1 then 2, scheduled", l)
	}
	if sy, err := b.store.Get(t.Context(), "2"); err != nil || sy.Event.Lane != throttle.LaneBreaking {
		t.Fatalf("get: got %+v, %v", sy, err)
	}
	if _, err := b.store.Get(t.Context(), "9"); !errors.Is(err, schedule.ErrNotFound) {
		t.Fatalf("get unknown: got %v, want ErrNotFound", err)
	}
}

// TestRacingRunnersSubmitEachSyncOnce runs four runners on one Redis over
// 40 syncs that fall due together: each sync is submitted once, queued
// for planning once, and leaves the schedule.
func TestRacingRunnersSubmitEachSyncOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, schedule.Config{Tick: 10 * time.Millisecond, Batch: 3})
	const n = 40
	for i := range n {
		b.add(t, strconv.Itoa(i+1), time.Second)
	}
	for range 4 {
		r := b.runner(t)
		if err := r.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Stop)
	}
	await.Until(t, "every sync to start", func() bool { return b.scheduled(t) == 0 })
	q := b.queued(t)
	for i := range n {
		id := strconv.Itoa(i + 1)
		if got := b.sub.count(id); got != 1 {
			t.Fatalf("sync %s submitted %d times, want 1", id, got)
		}
		if q[id] != 1 {
			t.Fatalf("sync %s queued for planning %d times, want 1", id, q[id])
		}
		ev, err := b.planner.Event(t.Context(), id)
		if err != nil || ev.Lane != throttle.LaneBreaking || ev.Since == nil {
			t.Fatalf("sync %s: event %+v, %v; want the breaking event with its heads", id, ev, err)
		}
	}
}

// TestCancelRacesDueMoment lands a cancel on either side of the runner's
// take, then races them freely: a sync is either cancelled and never
// submitted, or submitted and its cancel refused, never both.
func TestCancelRacesDueMoment(t *testing.T) {
	t.Parallel()
	b := setup(t, schedule.Config{Tick: 10 * time.Millisecond})
	r := b.runner(t)

	t.Run("cancel just before the take", func(t *testing.T) {
		b.add(t, "before", 500*time.Millisecond)
		sendAt := time.Now().Add(500 * time.Millisecond) // not before the stored one
		await.Until(t, "the sync to fall due on Redis's clock", func() bool {
			now, err := b.rdb.Time(t.Context()).Result()
			if err != nil {
				t.Fatal(err)
			}
			return now.After(sendAt.Add(10 * time.Millisecond))
		})
		var cancelErr error
		b.hook.Before(keys.ScheduleDue(), func() { cancelErr = b.store.Cancel(t.Context(), "before") })
		ids, err := r.Step(t.Context())
		if err != nil || len(ids) > 0 {
			t.Fatalf("step: %v, %v; want nothing after the cancel", ids, err)
		}
		if cancelErr != nil {
			t.Fatalf("cancel before the take: %v", cancelErr)
		}
		if b.sub.count("before") != 0 {
			t.Fatal("a cancelled sync was submitted")
		}
	})

	t.Run("cancel between take and submit", func(t *testing.T) {
		b.add(t, "between", 500*time.Millisecond)
		var cancelErr error
		b.sub.before = func(id string) { cancelErr = b.store.Cancel(t.Context(), id) }
		defer func() { b.sub.before = nil }()
		await.Until(t, "the sync to start", func() bool {
			ids, err := r.Step(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return len(ids) == 1
		})
		if !errors.Is(cancelErr, schedule.ErrStarted) {
			t.Fatalf("cancel of a taken sync: got %v, want ErrStarted", cancelErr)
		}
		if b.sub.count("between") != 1 {
			t.Fatalf("submitted %d times, want 1", b.sub.count("between"))
		}
	})

	t.Run("free race", func(t *testing.T) {
		if err := r.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer r.Stop()
		const n = 30
		results := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			id := "race" + strconv.Itoa(i)
			b.add(t, id, 500*time.Millisecond)
			wg.Go(func() {
				// Cancel somewhere around the due moment.
				<-time.After(time.Duration(400+rand.IntN(200)) * time.Millisecond)
				results[i] = b.store.Cancel(t.Context(), id)
			})
		}
		wg.Wait()
		await.Until(t, "the schedule to empty", func() bool { return b.scheduled(t) == 0 })
		var cancelled, started int
		for i, err := range results {
			id := "race" + strconv.Itoa(i)
			_, evErr := b.planner.Event(t.Context(), id)
			submitted := b.sub.count(id)
			switch {
			case err == nil:
				cancelled++
				if submitted != 0 || !errors.Is(evErr, fanout.ErrNotFound) {
					t.Fatalf("sync %s: cancelled, yet submitted %d times (event: %v)", id, submitted, evErr)
				}
			case errors.Is(err, schedule.ErrStarted), errors.Is(err, schedule.ErrNotFound):
				// ErrNotFound: it started and left the schedule before the
				// cancel; the api answers 409 because the event exists.
				started++
				if submitted != 1 || evErr != nil {
					t.Fatalf("sync %s: cancel refused (%v), yet submitted %d times (event: %v)", id, err, submitted, evErr)
				}
			default:
				t.Fatalf("sync %s: cancel: %v", id, err)
			}
		}
		t.Logf("free race: %d cancelled, %d started", cancelled, started)
	})
}

// TestKilledRunnerSyncStillStarts: a runner that took a sync and died
// before submitting it leaves a claim that runs out, and another runner
// submits the sync; one that died after submitting but before forgetting
// it has the sync submitted again, which starts nothing twice.
func TestKilledRunnerSyncStillStarts(t *testing.T) {
	t.Parallel()
	b := setup(t, schedule.Config{Lease: 2 * time.Second})
	r := b.runner(t)
	ctx := t.Context()

	t.Run("killed before submit", func(t *testing.T) {
		b.add(t, "k1", 500*time.Millisecond)
		var taken []schedule.Sync
		await.Until(t, "the dead runner's take", func() bool {
			var err error
			taken, err = b.store.Claim(ctx, "dead-runner", 10)
			if err != nil {
				t.Fatal(err)
			}
			return len(taken) == 1
		})
		// The dead runner holds the lease: nothing to take, and the sync
		// can no longer be cancelled.
		if ids, err := r.Step(ctx); err != nil || len(ids) != 0 {
			t.Fatalf("step within the lease: %v, %v; want nothing", ids, err)
		}
		if sy, err := b.store.Get(ctx, "k1"); err != nil || sy.State != schedule.StateStarting {
			t.Fatalf("get: %+v, %v; want starting", sy, err)
		}
		if err := b.store.Cancel(ctx, "k1"); !errors.Is(err, schedule.ErrStarted) {
			t.Fatalf("cancel within the lease: got %v, want ErrStarted", err)
		}
		await.Until(t, "the lease to run out and the sync to start", func() bool {
			ids, err := r.Step(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return len(ids) == 1 && ids[0] == "k1"
		})
		if b.sub.count("k1") != 1 || b.queued(t)["k1"] != 1 || b.scheduled(t) != 0 {
			t.Fatalf("submitted %d, queued %d, still scheduled %d; want 1, 1, 0", b.sub.count("k1"), b.queued(t)["k1"], b.scheduled(t))
		}
		if ok, err := b.store.Finish(ctx, "k1", "dead-runner"); ok || err != nil {
			t.Fatalf("the dead runner's finish: %v, %v; want refused", ok, err)
		}
	})

	t.Run("killed after submit", func(t *testing.T) {
		b.add(t, "k2", 500*time.Millisecond)
		var taken []schedule.Sync
		await.Until(t, "the dead runner's take", func() bool {
			var err error
			taken, err = b.store.Claim(ctx, "dead-runner", 10)
			if err != nil {
				t.Fatal(err)
			}
			return len(taken) == 1
		})
		if _, err := schedule.Submit(ctx, b.items, b.sub, taken[0].Event); err != nil {
			t.Fatal(err)
		}
		first, err := b.planner.Event(ctx, "k2")
		if err != nil {
			t.Fatal(err)
		}
		// The runner dies here, before Finish.
		await.Until(t, "the lease to run out and the sync to be submitted again", func() bool {
			ids, err := r.Step(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return len(ids) == 1
		})
		again, err := b.planner.Event(ctx, "k2")
		if err != nil {
			t.Fatal(err)
		}
		if b.sub.count("k2") != 2 || b.queued(t)["k2"] != 1 || !again.CreatedAt.Equal(first.CreatedAt) || b.scheduled(t) != 0 {
			t.Fatalf("submits %d (want 2), queued %d (want 1), event re-created %v, still scheduled %d",
				b.sub.count("k2"), b.queued(t)["k2"], !again.CreatedAt.Equal(first.CreatedAt), b.scheduled(t))
		}
	})
}

// TestOnCluster runs every script of the store on a 3-master cluster: the
// schedule's keys share one slot.
func TestOnCluster(t *testing.T) {
	t.Parallel()
	rdb := redistest.StartCluster(t).Client(t)
	store, err := schedule.NewStore(schedule.Config{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, id := range []string{"a", "b"} {
		err := store.Add(ctx, schedule.Sync{
			Event:  fanout.Event{ID: id, Feeds: []string{"world"}, Lane: throttle.LaneBreaking, Reason: "breaking"},
			SendAt: time.Now().Add(time.Second),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Cancel(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	var taken []schedule.Sync
	await.Until(t, "b to fall due", func() bool {
		taken, err = store.Claim(ctx, "tok", 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(taken) > 0
	})
	if len(taken) != 1 || taken[0].Event.ID != "b" {
		t.Fatalf("claimed %+v, want b alone", taken)
	}
	if ok, err := store.Finish(ctx, "b", "tok"); !ok || err != nil {
		t.Fatalf("finish: %v, %v", ok, err)
	}
	if l, err := store.List(ctx); err != nil || len(l) != 0 {
		t.Fatalf("list: %v, %v; want empty", l, err)
	}
}

// TestInvalidSyncIsDropped: a stored sync the pipeline refuses (here a
// reason it does not know) would fail at every lease; the runner drops it.
func TestInvalidSyncIsDropped(t *testing.T) {
	t.Parallel()
	b := setup(t, schedule.Config{})
	err := b.store.Add(t.Context(), schedule.Sync{
		Event:  fanout.Event{ID: "bad", Feeds: []string{"world"}, Lane: throttle.LaneBreaking, Reason: "bogus"},
		SendAt: time.Now().Add(500 * time.Millisecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := b.runner(t)
	await.Until(t, "the runner to take it", func() bool {
		ids, err := r.Step(t.Context())
		if err != nil || len(ids) != 0 {
			t.Fatalf("step: %v, %v; want nothing started, no error", ids, err)
		}
		return b.sub.count("bad") == 1
	})
	if b.scheduled(t) != 0 || b.queued(t)["bad"] != 0 {
		t.Fatalf("still scheduled %d, queued %d; want 0, 0", b.scheduled(t), b.queued(t)["bad"])
	}
}
