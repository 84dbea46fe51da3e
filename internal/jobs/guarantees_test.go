package jobs

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

// TestLiveWorkersNeverShareJobs runs two live workers over one queue whose
// handler is slow (a provider answering slowly): each reads more than its
// handler slots can run at once, and both share the backlog of a dead
// consumer. With ReclaimMinIdle far below the time jobs wait for a slot,
// an idle-time reclaim would take the other worker's waiting jobs; the
// heartbeat-based reclaim must not. Every job runs exactly once.
func TestLiveWorkersNeverShareJobs(t *testing.T) {
	t.Parallel()
	b := setup(t, redistestStart(t), 8)
	const n = 400
	var msgs []Message
	for i := range n {
		msgs = append(msgs, Message{Partition: i % 8, Payload: fmt.Appendf(nil, "%d", i)})
	}
	enqueue(t, b.q, msgs...)
	for p := range 8 {
		claimAsDeadConsumer(t, b, p, 10) // a backlog of 80 jobs to reclaim
	}
	var mu sync.Mutex
	runs := map[string]int{}
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		select {
		case <-time.After(30 * time.Millisecond): // the slow provider
		case <-ctx.Done():
			return ctx.Err()
		}
		mu.Lock()
		for _, j := range jobs {
			runs[string(j.Payload)]++
		}
		mu.Unlock()
		return o.MarkDone(ctx, jobs...)
	})
	cfg := WorkerConfig{
		Concurrency: 2, BatchSize: 5, HeartbeatTTL: 200 * time.Millisecond,
		ReclaimMinIdle: 100 * time.Millisecond, HandlerTimeout: 80 * time.Millisecond, ReclaimInterval: 10 * time.Millisecond,
	}
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	for _, reg := range regs {
		w, err := NewWorker(service.Archetype{Registerer: reg}, b.q, h, cfg)
		if err != nil {
			t.Fatalf("new worker: %v", err)
		}
		if err := w.Start(t.Context()); err != nil {
			t.Fatalf("start worker: %v", err)
		}
		t.Cleanup(w.Stop)
	}
	await.Until(t, "every job handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(runs) == n
	})
	b.waitEmpty(t)
	mu.Lock()
	defer mu.Unlock()
	for p, c := range runs {
		if c != 1 {
			t.Fatalf("job %s ran %d times, want once (no worker crashed)", p, c)
		}
	}
	var redelivered float64
	for _, reg := range regs {
		redelivered += testutil.ToFloat64(mustVec(t, reg, "nudge_queue_redeliveries_total", b.q.Name()))
	}
	if redelivered != 80 {
		t.Fatalf("redeliveries: got %v, want 80 (the dead consumer's backlog, nothing of a live worker)", redelivered)
	}
	if s := b.stats(t); s.Dead != 0 {
		t.Fatalf("dead jobs: got %d, want 0", s.Dead)
	}
}

func redistestStart(t *testing.T) redis.UniversalClient {
	t.Helper()
	return redistest.Start(t)
}

// TestDeadConsumerJobsMoveOn checks that the pending jobs of a consumer
// are left alone while its heartbeat lives, are claimed within 5 s of its
// last heartbeat once it stops (default HeartbeatTTL 2s; ReclaimMinIdle
// stays at its 60s default, so nothing else could move them), and that the
// dead consumer is then removed from the group.
func TestDeadConsumerJobsMoveOn(t *testing.T) {
	t.Parallel()
	b := setup(t, redistestStart(t), 2)
	enqueue(t, b.q, Message{Partition: 1, Payload: []byte("a")}, Message{Partition: 1, Payload: []byte("b")}, Message{Partition: 1, Payload: []byte("c")})
	claimAsDeadConsumer(t, b, 1, 3)
	hb := keys.Heartbeat(b.q.Name(), "dead-consumer")
	beat := func() time.Time {
		if err := b.rdb.Set(t.Context(), hb, "1", 2*time.Second).Err(); err != nil {
			t.Fatalf("ghost heartbeat: %v", err)
		}
		return time.Now()
	}
	last := beat()
	rec := &recorder{}
	b.worker(t, rec, WorkerConfig{})
	// While the ghost's heartbeat lives (renewed every 500ms), its jobs stay
	// with it: watch for 3 s, well past a heartbeat TTL and many scans.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		if time.Since(last) >= 500*time.Millisecond {
			last = beat()
		}
		if n := rec.count(); n != 0 {
			t.Fatalf("a live consumer's jobs were taken: %d handled", n)
		}
		time.Sleep(10 * time.Millisecond) // time is the subject: jobs stay with a live heartbeat for 3 s
	}
	last = beat() // the last heartbeat; the ghost dies now
	await.Within(t, 5*time.Second, "the dead consumer's jobs handled within 5 s of its last heartbeat", func() bool { return rec.count() == 3 })
	t.Logf("dead consumer's jobs handled %v after its last heartbeat", time.Since(last).Round(10*time.Millisecond))
	for _, j := range rec.snapshot() {
		if j.Deliveries != 2 {
			t.Fatalf("reclaimed job %q: got deliveries %d, want 2", j.Payload, j.Deliveries)
		}
	}
	b.waitEmpty(t)
	await.Until(t, "the dead consumer removed from the group", func() bool {
		cs, err := b.rdb.XInfoConsumers(t.Context(), keys.Stream(b.q.Name(), 1), Group).Result()
		if err != nil {
			return false
		}
		for _, c := range cs {
			if c.Name == "dead-consumer" {
				return false
			}
		}
		return true
	})
}

// testRetryBoundedByAge: a job that fails transiently keeps retrying past
// MaxDeliveries until a retry would be due after MaxAge (1.5 s here,
// standing in for NUDGE_PUSH_TTL's 1 h); then it is dead-lettered once and
// handed to OnDead.
func testRetryBoundedByAge(t *testing.T, b *bundle) {
	var deliveries atomic.Int32
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		for _, j := range jobs {
			deliveries.Add(1)
			o.Retry(j, 100*time.Millisecond)
		}
		return nil
	})
	var mu sync.Mutex
	var dead []DeadJob
	onDead := func(ctx context.Context, d []DeadJob) {
		mu.Lock()
		dead = append(dead, d...)
		mu.Unlock()
	}
	b.worker(t, h, WorkerConfig{MaxDeliveries: 2, MaxAge: 1500 * time.Millisecond, OnDead: onDead})
	ids := enqueue(t, b.q, Message{Partition: 3, Payload: []byte("flaky")})
	await.Until(t, "the job dead-lettered", func() bool { return b.stats(t).Dead == 1 })
	b.waitEmpty(t)
	if n := deliveries.Load(); n <= 2 {
		t.Fatalf("deliveries before going dead: got %d, want more than MaxDeliveries (2)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dead) != 1 || dead[0].Cause != CauseMaxAge || dead[0].OriginalID == "" || string(dead[0].Payload) != "flaky" {
		t.Fatalf("OnDead: got %+v, want the one job with cause %s", dead, CauseMaxAge)
	}
	dl, err := b.q.Dead(t.Context(), 0, 10)
	if err != nil || len(dl) != 1 || !strings.HasPrefix(dl[0].Reason, "stale") {
		t.Fatalf("dead-letter entry: got %+v (err %v), want one stale job", dl, err)
	}
	if elapsed := dl[0].DiedAt.Sub(idTimeOr(t, ids[0])); elapsed < time.Second {
		t.Fatalf("died %v after its first enqueue, want about MaxAge (1.5s) minus one retry delay", elapsed)
	}
}

func idTimeOr(t *testing.T, id string) time.Time {
	t.Helper()
	tm, ok := idTime(id)
	if !ok {
		t.Fatalf("bad stream id %q", id)
	}
	return tm
}

// testReleaseCostsNoDelivery: a job released (its provider is paused)
// five times comes back with the same delivery number each time, and a
// budget of one delivery does not dead-letter it.
func testReleaseCostsNoDelivery(t *testing.T, b *bundle) {
	var calls atomic.Int32
	seen := make(chan int, 8)
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		for _, j := range jobs {
			seen <- j.Deliveries
			if calls.Add(1) <= 5 {
				o.Release(j, 10*time.Millisecond)
			}
		}
		return nil
	})
	b.worker(t, h, WorkerConfig{MaxDeliveries: 1})
	enqueue(t, b.q, Message{Partition: 2, Payload: []byte("paused")})
	for i := range 6 {
		if d := <-seen; d != 1 {
			t.Fatalf("delivery %d after %d releases: got deliveries %d, want 1", i+1, i, d)
		}
	}
	b.waitEmpty(t)
	if s := b.stats(t); s.Dead != 0 {
		t.Fatalf("dead jobs: got %d, want 0", s.Dead)
	}
}

// TestRetryAfterHoldsAcrossSkewedClocks runs workers whose clocks are off
// by ±30 s and ±5 min against Redis. The handler answers the first
// delivery with a Retry-After of 1 s (a provider's 30 s or 120 s, scaled
// down). The second delivery must come no earlier than 1 s later on
// Redis's clock, whatever the worker's clock says.
func TestRetryAfterHoldsAcrossSkewedClocks(t *testing.T) {
	t.Parallel()
	rdb := redistestStart(t)
	for _, skew := range []time.Duration{30 * time.Second, -30 * time.Second, 5 * time.Minute, -5 * time.Minute} {
		t.Run(skew.String(), func(t *testing.T) {
			t.Parallel()
			b := setup(t, rdb, 2)
			b.clock.Advance(skew)
			var mu sync.Mutex
			var at []time.Time
			h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
				now, err := rdb.Time(ctx).Result()
				if err != nil {
					return err
				}
				mu.Lock()
				at = append(at, now)
				first := len(at) == 1
				mu.Unlock()
				if first {
					return RetryAfter(time.Second, fmt.Errorf("429"))
				}
				return nil
			})
			// Two replicas with the same skew share the queue.
			b.worker(t, h, WorkerConfig{})
			b.worker(t, h, WorkerConfig{})
			enqueue(t, b.q, Message{Partition: 0, Payload: []byte("x")})
			await.Until(t, "the retry delivered", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(at) >= 2
			})
			b.waitEmpty(t)
			mu.Lock()
			defer mu.Unlock()
			if gap := at[1].Sub(at[0]); gap < time.Second {
				t.Fatalf("redelivered %v after a Retry-After of 1s (worker clock skew %v)", gap, skew)
			}
			if len(at) != 2 {
				t.Fatalf("deliveries: got %d, want 2", len(at))
			}
		})
	}
}

// TestDeadLetterCapIsGlobal: DeadMaxLen caps all partitions together.
func TestDeadLetterCapIsGlobal(t *testing.T) {
	t.Parallel()
	rdb := redistestStart(t)
	q, err := New(rdb, Config{Name: "dlqcap", Partitions: 8, DeadMaxLen: 800})
	if err != nil {
		t.Fatalf("new queue: %v", err)
	}
	b := &bundle{rdb: rdb, q: q, clock: newTestClock(), reg: prometheus.NewRegistry()}
	const n = 8 * 500
	var msgs []Message
	for i := range n {
		msgs = append(msgs, Message{Partition: i % 8, Payload: []byte("x")})
	}
	var handled atomic.Int32
	b.worker(t, HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		for _, j := range jobs {
			o.Dead(j, "no")
		}
		handled.Add(int32(len(jobs)))
		return nil
	}), WorkerConfig{BatchSize: 200})
	enqueue(t, q, msgs...)
	await.Until(t, "every job dead-lettered", func() bool { return handled.Load() == n })
	b.waitEmpty(t)
	// MAXLEN ~ trims whole stream nodes (100 entries), so each partition
	// keeps between its share (100) and its share plus a node.
	if s := b.stats(t); s.Dead < 800 || s.Dead > 8*(100+100) {
		t.Fatalf("dead-letter entries: got %d, want about 800 in all (not 800 per partition)", s.Dead)
	}
}

// TestDoneRecordsSwept: done records of jobs no longer pending are
// removed; those of pending jobs stay.
func TestDoneRecordsSwept(t *testing.T) {
	t.Parallel()
	b := setup(t, redistestStart(t), 1)
	ids := enqueue(t, b.q, Message{Partition: 0, Payload: []byte("p")})
	claimAsDeadConsumer(t, b, 0, 1)
	done := keys.Done(b.q.Name(), 0)
	if err := b.rdb.HSet(t.Context(), done, ids[0], "1", "1-1", "1").Err(); err != nil {
		t.Fatalf("write done records: %v", err)
	}
	w, err := NewWorker(service.Archetype{}, b.q, HandlerFunc(func(context.Context, *Outcomes, []*Job) error { return nil }), WorkerConfig{})
	if err != nil {
		t.Fatalf("new worker: %v", err)
	}
	if err := b.q.loadScripts(t.Context()); err != nil {
		t.Fatalf("load scripts: %v", err)
	}
	if err := w.sweepDone(t.Context()); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	got := b.rdb.HKeys(t.Context(), done).Val()
	if len(got) != 1 || got[0] != ids[0] {
		t.Fatalf("done records after sweep: got %v, want only the pending job's %s", got, ids[0])
	}
}

// TestLapsedWorkerDropsClaimedJobs: a worker whose heartbeat expired (it
// stalled) may have had its read jobs claimed by another worker. Once it
// has found its heartbeat gone, it checks the jobs it read before, does
// not run those another consumer now owns, and does not renew their lease
// (which would take them back).
func TestLapsedWorkerDropsClaimedJobs(t *testing.T) {
	t.Parallel()
	b := setup(t, redistestStart(t), 1)
	w, err := NewWorker(service.Archetype{Registerer: b.reg}, b.q, HandlerFunc(func(context.Context, *Outcomes, []*Job) error { return nil }),
		WorkerConfig{ReclaimMinIdle: 30 * time.Millisecond, HandlerTimeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("new worker: %v", err)
	}
	if err := b.q.loadScripts(t.Context()); err != nil {
		t.Fatalf("load scripts: %v", err)
	}
	ids := enqueue(t, b.q, Message{Payload: []byte("kept")}, Message{Payload: []byte("taken")})
	stream := keys.Stream(b.q.Name(), 0)
	res, err := b.rdb.XReadGroup(t.Context(), &redis.XReadGroupArgs{
		Group: Group, Consumer: w.Consumer(), Streams: []string{stream, ">"}, Count: 2, Block: -1,
	}).Result()
	if err != nil {
		t.Fatalf("read as the worker: %v", err)
	}
	jobs := w.jobsOf(res)
	w.hold(jobs)
	// The worker's heartbeat lapses; meanwhile another worker claims one of
	// the jobs it holds.
	w.lapses.Add(1)
	if err := b.rdb.XClaim(t.Context(), &redis.XClaimArgs{Stream: stream, Group: Group, Consumer: "other", Messages: []string{ids[1]}}).Err(); err != nil {
		t.Fatalf("claim as another worker: %v", err)
	}
	await.Until(t, "the held jobs idle long enough to renew", func() bool {
		pe, err := b.rdb.XPendingExt(t.Context(), &redis.XPendingExtArgs{Stream: stream, Group: Group, Start: "-", End: "+", Count: 10, Idle: 20 * time.Millisecond}).Result()
		return err == nil && len(pe) == 2
	})
	if err := w.renewLeases(t.Context()); err != nil {
		t.Fatalf("renew leases: %v", err)
	}
	got := w.stillOurs(t.Context(), jobs)
	if len(got) != 1 || string(got[0].Payload) != "kept" {
		t.Fatalf("jobs still ours: got %d, want only %q", len(got), "kept")
	}
	pe, err := b.rdb.XPendingExt(t.Context(), &redis.XPendingExtArgs{Stream: stream, Group: Group, Start: "-", End: "+", Count: 10}).Result()
	if err != nil || len(pe) != 2 {
		t.Fatalf("pending: got %+v (err %v)", pe, err)
	}
	for _, e := range pe {
		want := w.Consumer()
		if e.ID == ids[1] {
			want = "other"
		}
		if e.Consumer != want {
			t.Fatalf("job %s pending with %s, want %s (a lease renewal must not take a job back)", e.ID, e.Consumer, want)
		}
	}
	if n := testutil.ToFloat64(mustVec(t, b.reg, "nudge_queue_jobs_lost_to_other_workers_total", b.q.Name())); n != 1 {
		t.Fatalf("lost jobs metric: got %v, want 1", n)
	}
}
