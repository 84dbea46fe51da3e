package fanout

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/events"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/throttle"
	"github.com/nudge-dev/nudge/internal/throttle/throttletest"
)

var t0 = time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)

type bundle struct {
	rdb redis.UniversalClient
	th  *throttle.Throttle
	pl  *Planner
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// setup starts a private Redis and returns a planner over a real throttle,
// with a fixed clock at t0. wrap, if not nil, wraps the throttle the
// planner sees.
func setup(t testing.TB, rdb redis.UniversalClient, cfg Config, wrap func(Decider) Decider) *bundle {
	t.Helper()
	if rdb == nil {
		rdb = redistest.Start(t)
	}
	th, err := throttle.New(service.Archetype{Logger: discard(), Registerer: prometheus.NewRegistry()}, throttle.Config{}, rdb)
	if err != nil {
		t.Fatalf("new throttle: %v", err)
	}
	var d Decider = th
	if wrap != nil {
		d = wrap(th)
	}
	pl := newPlanner(t, rdb, cfg, d, func() time.Time { return t0 })
	return &bundle{rdb: rdb, th: th, pl: pl}
}

// newPlanner returns a planner on rdb over d, with the real event store and
// device registry.
func newPlanner(t testing.TB, rdb redis.UniversalClient, cfg Config, d Decider, clock func() time.Time) *Planner {
	t.Helper()
	store, err := events.New(events.Config{}, rdb)
	if err != nil {
		t.Fatalf("new event store: %v", err)
	}
	reg, err := devices.New(service.Archetype{}, rdb, nil, devices.Config{})
	if err != nil {
		t.Fatalf("new registry: %v", err)
	}
	a := service.Archetype{Logger: discard(), Registerer: prometheus.NewRegistry(), Clock: clock}
	pl, err := New(a, cfg, Deps{Events: store, Subscribers: reg, Decider: d, Profiles: reg, Redis: rdb})
	if err != nil {
		t.Fatalf("new planner: %v", err)
	}
	return pl
}

// devices adds devices [from, to] with background sync on, except every
// optOut-th (0: none), and sets the device sequence to at least to.
func (b *bundle) devices(t testing.TB, from, to uint64, optOut uint64) {
	t.Helper()
	ctx := t.Context()
	pipe := b.rdb.Pipeline()
	for id := from; id <= to; id++ {
		bg := "1"
		if optOut > 0 && id%optOut == 0 {
			bg = "0"
		}
		pl := "android"
		if id%2 == 0 {
			pl = "ios"
		}
		pipe.HSet(ctx, keys.Device(id), "pl", pl, "bg", bg, "mi", "0")
		if pipe.Len() >= 10000 {
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatalf("add devices: %v", err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("add devices: %v", err)
	}
	b.seq(t, to)
}

func (b *bundle) seq(t testing.TB, atLeast uint64) {
	t.Helper()
	cur, err := b.rdb.Get(t.Context(), keys.DeviceSeq()).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatalf("get seq: %v", err)
	}
	if cur < atLeast {
		if err := b.rdb.Set(t.Context(), keys.DeviceSeq(), atLeast, 0).Err(); err != nil {
			t.Fatalf("set seq: %v", err)
		}
	}
}

// subscribe subscribes ids [from, to] to feed.
func (b *bundle) subscribe(t testing.TB, feed string, from, to uint64) {
	t.Helper()
	ctx := t.Context()
	pipe := b.rdb.Pipeline()
	for id := from; id <= to; id++ {
		k, bit := keys.SubChunkOf(id)
		pipe.SetBit(ctx, keys.SubChunk(feed, k), bit, 1)
		if pipe.Len() >= 10000 {
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatalf("subscribe: %v", err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	b.seq(t, to)
}

// queued returns every push job in the push streams.
func (b *bundle) queued(t testing.TB) []throttletest.Job {
	t.Helper()
	return throttletest.Queued(t, b.rdb)
}

// pushes counts the push jobs per device that cover event.
func (b *bundle) pushes(t testing.TB, event string) map[uint64]int {
	t.Helper()
	out := map[uint64]int{}
	for _, q := range b.queued(t) {
		for _, ev := range q.Push.Events {
			if ev == event {
				out[q.Push.Device]++
			}
		}
	}
	return out
}

func (b *bundle) publish(t testing.TB, ev Event) {
	t.Helper()
	if ok, err := b.pl.Publish(t.Context(), ev); err != nil || !ok {
		t.Fatalf("publish %s: got %v, %v, want new", ev.ID, ok, err)
	}
}

func (b *bundle) plan(t testing.TB, id string) Progress {
	t.Helper()
	pr, err := b.pl.Plan(t.Context(), id)
	if err != nil {
		t.Fatalf("plan %s: %v", id, err)
	}
	return pr
}

func feedEvent(id string, feeds ...string) Event {
	return Event{ID: id, Feeds: feeds, Lane: throttle.LaneFeed, Reason: "feed"}
}

func breakingEvent(id string, feeds ...string) Event {
	return Event{ID: id, Feeds: feeds, Lane: throttle.LaneBreaking, Reason: "breaking", Alert: &Alert{Title: "t", Body: "b"}}
}

// counts is the part of Progress a planning run determines.
func counts(p Progress) string {
	return fmt.Sprintf("done=%v targeted=%d queued=%d deferred=%d coalesced=%d skipped=%d missing=%d",
		p.Done, p.Targeted, p.Queued, p.Deferred, p.Coalesced, p.Skipped, p.Missing)
}

func TestPlan(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		cfg    Config
		fill   func(t *testing.T, b *bundle)
		ev     Event
		want   string
		pushed int // devices with a push for the event in the stream
	}{
		{
			name: "one push per device over several feeds",
			fill: func(t *testing.T, b *bundle) {
				b.devices(t, 1, 3000, 0)
				b.subscribe(t, "a", 1, 2000)
				b.subscribe(t, "b", 1000, 3000)
				b.subscribe(t, "c", 5000, 6000) // not in the event
			},
			ev:     breakingEvent("e1", "a", "b"),
			want:   "done=true targeted=3000 queued=3000 deferred=0 coalesced=0 skipped=0 missing=0",
			pushed: 3000,
		},
		{
			name: "feed lane defers",
			fill: func(t *testing.T, b *bundle) {
				b.devices(t, 1, 500, 0)
				b.subscribe(t, "a", 1, 500)
			},
			ev:   feedEvent("e1", "a"),
			want: "done=true targeted=500 queued=0 deferred=500 coalesced=0 skipped=0 missing=0",
		},
		{
			name: "opted out and missing devices",
			fill: func(t *testing.T, b *bundle) {
				b.devices(t, 1, 300, 3)
				b.subscribe(t, "a", 1, 310)
			},
			ev:     breakingEvent("e1", "a"),
			want:   "done=true targeted=310 queued=200 deferred=0 coalesced=0 skipped=100 missing=10",
			pushed: 200,
		},
		{
			name: "small windows across chunks",
			cfg:  Config{Window: 8},
			fill: func(t *testing.T, b *bundle) {
				b.devices(t, 65530, 65545, 0)
				b.subscribe(t, "a", 65530, 65545)
			},
			ev:     breakingEvent("e1", "a"),
			want:   "done=true targeted=16 queued=16 deferred=0 coalesced=0 skipped=0 missing=0",
			pushed: 16,
		},
		{
			name: "no subscribers",
			fill: func(t *testing.T, b *bundle) {
				b.devices(t, 1, 10, 0)
			},
			ev:   breakingEvent("e1", "a"),
			want: "done=true targeted=0 queued=0 deferred=0 coalesced=0 skipped=0 missing=0",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil, tc.cfg, nil)
			tc.fill(t, b)
			b.publish(t, tc.ev)
			if got := counts(b.plan(t, tc.ev.ID)); got != tc.want {
				t.Fatalf("progress: got %s, want %s", got, tc.want)
			}
			got := b.pushes(t, tc.ev.ID)
			if len(got) != tc.pushed {
				t.Fatalf("devices pushed: got %d, want %d", len(got), tc.pushed)
			}
			for id, n := range got {
				if n != 1 {
					t.Fatalf("device %d: got %d pushes for %s, want 1", id, n, tc.ev.ID)
				}
			}
			// Planning a finished event again changes nothing.
			if again := counts(b.plan(t, tc.ev.ID)); again != tc.want {
				t.Fatalf("progress after planning again: got %s, want %s", again, tc.want)
			}
		})
	}
}

func TestPublish(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, Config{}, nil)
	ev := breakingEvent("watch:a:42", "a")
	b.publish(t, ev)
	ev.Feeds = []string{"b"}
	if ok, err := b.pl.Publish(t.Context(), ev); err != nil || ok {
		t.Fatalf("publish again: got %v, %v, want not new", ok, err)
	}
	got, err := b.pl.Event(t.Context(), ev.ID)
	if err != nil || got.Feeds[0] != "a" || got.Alert.Title != "t" || !got.CreatedAt.Equal(t0) {
		t.Fatalf("event: got %+v, %v, want the first publication", got, err)
	}
	if _, err := b.pl.Progress(t.Context(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("progress of unknown event: got %v, want ErrNotFound", err)
	}
	if _, err := b.pl.Publish(t.Context(), Event{ID: "x", Feeds: []string{"a"}, Lane: "loud", Reason: "feed"}); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("publish with a bad lane: got %v, want ErrInvalidEvent", err)
	}
	id1, err1 := b.pl.NewID(t.Context())
	id2, err2 := b.pl.NewID(t.Context())
	if err1 != nil || err2 != nil || id1 == id2 {
		t.Fatalf("new ids: got %q %q (%v %v), want two distinct", id1, id2, err1, err2)
	}
}

func TestRecord(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, Config{}, nil)
	b.publish(t, breakingEvent("e1", "a"))
	b.publish(t, breakingEvent("e2", "a"))
	ctx := t.Context()
	for _, r := range []struct {
		ids []string
		o   Outcome
	}{{[]string{"e1", "e2", "e1", "e1"}, OutcomeSent}, {[]string{"e1"}, OutcomeSent}, {[]string{"e2"}, OutcomePruned}, {[]string{"e1", "gone"}, OutcomeFailed}} {
		if err := b.pl.Record(ctx, r.ids, r.o); err != nil {
			t.Fatalf("record %v %s: %v", r.ids, r.o, err)
		}
	}
	p1, _ := b.pl.Progress(ctx, "e1")
	p2, _ := b.pl.Progress(ctx, "e2")
	if got := fmt.Sprint(p1.Sent, p1.Pruned, p1.Failed, p2.Sent, p2.Pruned, p2.Failed); got != "4 0 1 1 1 0" {
		t.Fatalf("recorded: got %s, want 4 0 1 1 1 0", got)
	}
	if n, _ := b.rdb.Exists(ctx, keys.Event("gone")).Result(); n != 0 {
		t.Fatalf("record created the hash of an unknown event")
	}
	if err := b.pl.Record(ctx, []string{"e1"}, "lost"); err == nil {
		t.Fatalf("record with an unknown outcome: got nil error")
	}
}

// crashingDecider applies each batch through the real throttle and then,
// on the failAt-th call, fails as if the process died before its
// checkpoint.
type crashingDecider struct {
	Decider
	calls, failAt int
}

var errCrash = errors.New("simulated crash")

func (c *crashingDecider) Decide(ctx context.Context, u throttle.Update, ids []uint64) (throttle.Counts, error) {
	n, err := c.Decider.Decide(ctx, u, ids)
	c.calls++
	if c.calls == c.failAt {
		return throttle.Counts{}, errCrash
	}
	return n, err
}

func TestResume(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	crash := &crashingDecider{failAt: 3}
	b := setup(t, rdb, Config{Window: 1024}, func(d Decider) Decider { crash.Decider = d; return crash })
	b.devices(t, 1, 10000, 7)
	b.subscribe(t, "a", 1, 10000)
	// Half the devices already have a pending push, so the event coalesces.
	if _, err := b.th.Decide(t.Context(), throttle.Update{Event: "old", Feeds: []string{"a"}, Lane: throttle.LaneFeed, Reason: "feed"}, seqIDs(1, 5000)); err != nil {
		t.Fatalf("seed pending: %v", err)
	}
	b.publish(t, feedEvent("e1", "a"))
	if _, err := b.pl.Plan(t.Context(), "e1"); !errors.Is(err, errCrash) {
		t.Fatalf("plan: got %v, want the simulated crash", err)
	}
	mid, err := b.pl.Progress(t.Context(), "e1")
	if err != nil || mid.Done || mid.Cursor != 2048 {
		t.Fatalf("progress after the crash: got %+v, %v, want cursor 2048 and not done", mid, err)
	}
	pr := b.plan(t, "e1")
	// 10000 devices, every 7th opted out (1428); 1..5000 had a pending push.
	want := "done=true targeted=10000 queued=0 deferred=4286 coalesced=4286 skipped=1428 missing=0"
	if got := counts(pr); got != want {
		t.Fatalf("progress: got %s, want %s", got, want)
	}
	if pr.Duplicate != 1024-146 {
		t.Fatalf("duplicates: got %d, want the re-run window's %d opted-in devices", pr.Duplicate, 1024-146)
	}
	if n, _ := b.th.DueCount(t.Context()); n != 8572 {
		t.Fatalf("due: got %d, want 8572", n)
	}
}

func seqIDs(from, to uint64) []uint64 {
	ids := make([]uint64, 0, to-from+1)
	for id := from; id <= to; id++ {
		ids = append(ids, id)
	}
	return ids
}

// TestPlannerProcess is the planner run as a child process by
// TestCrashRestart; it does nothing in a normal test run.
func TestPlannerProcess(t *testing.T) {
	addr, event := os.Getenv("NUDGE_FANOUT_CHILD_REDIS"), os.Getenv("NUDGE_FANOUT_CHILD_EVENT")
	if addr == "" {
		t.Skip("helper process for TestCrashRestart")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	b := setup(t, rdb, Config{Window: 4096}, nil)
	fmt.Println("planning")
	if _, err := b.pl.Plan(t.Context(), event); err != nil {
		t.Fatalf("plan: %v", err)
	}
}

// TestCrashRestart runs the planner as a subprocess on a fan-out to 100k
// devices, SIGKILLs it at random points and restarts it until it finishes.
// Every opted-in device must get exactly one push for the event.
func TestCrashRestart(t *testing.T) {
	t.Parallel()
	const n = 100000
	srv := redistest.StartServer(t)
	b := setup(t, srv.Client(t), Config{}, nil)
	b.devices(t, 1, n, 10)
	b.subscribe(t, "a", 1, n)
	b.subscribe(t, "b", n/2, n+100) // 100 subscribed ids without a device
	b.publish(t, breakingEvent("e1", "a", "b"))

	rng := rand.New(rand.NewPCG(3, 4))
	kills := 0
	for run := 0; ; run++ {
		if run > 50 {
			t.Fatalf("planner did not finish after %d runs", run)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestPlannerProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "NUDGE_FANOUT_CHILD_REDIS="+srv.Addr, "NUDGE_FANOUT_CHILD_EVENT=e1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatalf("stdout pipe: %v", err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start planner: %v", err)
		}
		lines := bufio.NewScanner(out)
		if !lines.Scan() || lines.Text() != "planning" {
			_ = cmd.Process.Kill()
			t.Fatalf("planner did not start: %q, wait: %v", lines.Text(), cmd.Wait())
		}
		killed := false
		var timer *time.Timer
		if kills < 8 {
			timer = time.AfterFunc(time.Duration(rng.IntN(400))*time.Millisecond, func() {
				_ = cmd.Process.Signal(syscall.SIGKILL)
			})
		}
		_, _ = io.Copy(io.Discard, out)
		err = cmd.Wait()
		if timer != nil {
			timer.Stop()
		}
		if ee, ok := errors.AsType[*exec.ExitError](err); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
			killed = true
			kills++
		} else if err != nil {
			t.Fatalf("planner run %d: %v", run, err)
		}
		if !killed {
			break
		}
	}
	pr, err := b.pl.Progress(t.Context(), "e1")
	if err != nil {
		t.Fatalf("progress: %v", err)
	}
	want := fmt.Sprintf("done=true targeted=%d queued=%d deferred=0 coalesced=0 skipped=%d missing=100", n+100, n-n/10, n/10)
	if got := counts(pr); got != want {
		t.Fatalf("progress after %d kills: got %s, want %s", kills, got, want)
	}
	got := b.pushes(t, "e1")
	for id := uint64(1); id <= n; id++ {
		want := 1
		if id%10 == 0 {
			want = 0
		}
		if got[id] != want {
			t.Fatalf("device %d: got %d pushes, want %d", id, got[id], want)
		}
	}
	if len(got) != n-n/10 {
		t.Fatalf("devices pushed: got %d, want %d", len(got), n-n/10)
	}
	t.Logf("finished after %d kills, %d duplicates re-planned", kills, pr.Duplicate)
	if kills == 0 {
		t.Fatalf("the planner was never killed mid-run; the test proved nothing")
	}
}
