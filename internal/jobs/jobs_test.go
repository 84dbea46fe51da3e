package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// testClock is an injected clock that only moves when told to.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// backend is one Redis deployment the queue tests run on.
type backend struct {
	name string
	rdb  redis.UniversalClient
}

// backends starts one single server and one 3-master cluster for a test
// function; its cases use distinct queue names, so they can share them.
func backends(t *testing.T) []backend {
	t.Helper()
	return []backend{
		{"single", redistest.Start(t)},
		{"cluster", redistest.StartCluster(t).Client(t)},
	}
}

var queueSeq atomic.Int64

// bundle is what a test case works with.
type bundle struct {
	rdb   redis.UniversalClient
	q     *Queue
	clock *testClock
	reg   *prometheus.Registry
}

func setup(t *testing.T, rdb redis.UniversalClient, partitions int) *bundle {
	t.Helper()
	name := fmt.Sprintf("t%d", queueSeq.Add(1))
	q, err := New(rdb, Config{Name: name, Partitions: partitions})
	if err != nil {
		t.Fatalf("new queue: %v", err)
	}
	if err := q.EnsureGroups(t.Context()); err != nil {
		t.Fatalf("ensure groups: %v", err)
	}
	return &bundle{rdb: rdb, q: q, clock: newTestClock(), reg: prometheus.NewRegistry()}
}

// worker starts a worker on the bundle's queue with fast test timings and
// stops it at the end of the test.
func (b *bundle) worker(t *testing.T, h Handler, cfg WorkerConfig) *Worker {
	t.Helper()
	cfg.Block = cmpOr(cfg.Block, 50*time.Millisecond)
	cfg.IdlePoll = cmpOr(cfg.IdlePoll, 5*time.Millisecond)
	cfg.RetryInterval = cmpOr(cfg.RetryInterval, 5*time.Millisecond)
	w, err := NewWorker(service.Archetype{Clock: b.clock.Now, Registerer: b.reg}, b.q, h, cfg)
	if err != nil {
		t.Fatalf("new worker: %v", err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	t.Cleanup(w.Stop)
	return w
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// stats reads the queue's stats or fails the test.
func (b *bundle) stats(t *testing.T) Stats {
	t.Helper()
	s, err := b.q.Stats(t.Context())
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	return s
}

// waitEmpty waits until no job is in a stream, pending or waiting for a retry.
func (b *bundle) waitEmpty(t *testing.T) {
	t.Helper()
	await.Until(t, "an empty queue", func() bool {
		s := b.stats(t)
		return s.Depth == 0 && s.Pending == 0 && s.Retry == 0
	})
}

// recorder is a handler that records every delivery and reports done.
type recorder struct {
	mu      sync.Mutex
	seen    []Job
	batches []int
}

func (r *recorder) Handle(ctx context.Context, o *Outcomes, jobs []*Job) error {
	r.mu.Lock()
	for _, j := range jobs {
		r.seen = append(r.seen, Job{ID: j.ID, Partition: j.Partition, Payload: j.Payload, Deliveries: j.Deliveries})
	}
	r.batches = append(r.batches, len(jobs))
	r.mu.Unlock()
	return o.MarkDone(ctx, jobs...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *recorder) snapshot() []Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

func enqueue(t *testing.T, q *Queue, msgs ...Message) []string {
	t.Helper()
	ids, err := q.Enqueue(t.Context(), msgs...)
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return ids
}

func TestQueue(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		run  func(t *testing.T, b *bundle)
	}{
		{"enqueue consume ack", testConsumeAck},
		{"batching", testBatching},
		{"partition routing", testPartitionRouting},
		{"retry honours retry-after", testRetryAfter},
		{"retry error from handler", testRetryError},
		{"delivery budget to dead letters", testMaxDeliveries},
		{"dead letters inspect and requeue", testDeadLetters},
		{"reclaim after consumer dies", testReclaim},
		{"reclaim dead-letters exhausted jobs", testReclaimExhausted},
		{"held jobs keep their lease", testLeaseRenewal},
		{"enqueue unique", testEnqueueUnique},
		{"enqueue after", testEnqueueAfter},
		{"retries bounded by age, not count", testRetryBoundedByAge},
		{"release costs no delivery", testReleaseCostsNoDelivery},
		{"graceful drain", testDrain},
		{"drain deadline", testDrainDeadline},
		{"metrics", testMetrics},
	}
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, setup(t, be.rdb, 8))
				})
			}
		})
	}
}

func testConsumeAck(t *testing.T, b *bundle) {
	rec := &recorder{}
	b.worker(t, rec, WorkerConfig{})
	var msgs []Message
	want := map[string]bool{}
	for i := range 40 {
		p := fmt.Sprintf("job-%d", i)
		msgs = append(msgs, Message{Partition: i % 8, Payload: []byte(p)})
		want[p] = true
	}
	enqueue(t, b.q, msgs...)
	await.Until(t, "40 jobs handled", func() bool { return rec.count() >= 40 })
	b.waitEmpty(t)
	got := map[string]bool{}
	for _, j := range rec.snapshot() {
		if j.Deliveries != 1 {
			t.Fatalf("job %s deliveries: got %d, want 1", j.ID, j.Deliveries)
		}
		got[string(j.Payload)] = true
	}
	if len(got) != len(want) || rec.count() != 40 {
		t.Fatalf("handled: got %d distinct of %d deliveries, want 40 of 40", len(got), rec.count())
	}
	for _, p := range []int{0, 7} {
		n, err := b.rdb.HLen(t.Context(), keys.Done(b.q.Name(), p)).Result()
		if err != nil || n != 0 {
			t.Fatalf("done records of partition %d after ack: got %d (err %v), want 0", p, n, err)
		}
	}
}

func testBatching(t *testing.T, b *bundle) {
	var msgs []Message
	for i := range 120 {
		msgs = append(msgs, Message{Partition: 2, Payload: []byte(fmt.Sprint(i))})
	}
	enqueue(t, b.q, msgs...)
	rec := &recorder{}
	b.worker(t, rec, WorkerConfig{BatchSize: 50, Concurrency: 1})
	await.Until(t, "120 jobs handled", func() bool { return rec.count() >= 120 })
	rec.mu.Lock()
	batches := slices.Clone(rec.batches)
	rec.mu.Unlock()
	// A read over P streams takes about BatchSize×Concurrency jobs in all
	// (COUNT is per stream), so one partition's backlog comes in slices of
	// BatchSize×Concurrency/P; a handler call never gets more than BatchSize.
	perRead := max(1, (50+b.q.Partitions()-1)/b.q.Partitions()) // a reader reads at most all partitions
	if got := slices.Max(batches); got > 50 || got < min(perRead, 50) {
		t.Fatalf("largest batch: got %d, want between %d and 50 (batches %v)", got, perRead, batches)
	}
	b.waitEmpty(t)
}

func TestReadsTakeAboutWhatTheHandlersCanDo(t *testing.T) {
	t.Parallel()
	w := &Worker{cfg: WorkerConfig{BatchSize: 500, Concurrency: 4}}
	for _, tt := range []struct {
		streams int
		want    int64
	}{{1, 500}, {4, 500}, {8, 250}, {64, 32}, {5000, 1}} {
		if got := w.perStream(tt.streams); got != tt.want {
			t.Fatalf("perStream(%d): got %d, want %d", tt.streams, got, tt.want)
		}
	}
}

func testPartitionRouting(t *testing.T, b *bundle) {
	enqueue(t, b.q, Message{Partition: 3, Payload: []byte("three")}, Message{Partition: 7, Payload: []byte("seven")})
	if n := b.rdb.XLen(t.Context(), keys.Stream(b.q.Name(), 7)).Val(); n != 1 {
		t.Fatalf("entries in %s: got %d, want 1", keys.Stream(b.q.Name(), 7), n)
	}
	rec := &recorder{}
	b.worker(t, rec, WorkerConfig{Partitions: []int{3}})
	await.Until(t, "partition 3 handled", func() bool { return rec.count() >= 1 })
	await.Until(t, "partition 3 acked", func() bool { return b.stats(t).Pending == 0 && b.stats(t).Depth == 1 })
	got := rec.snapshot()
	if len(got) != 1 || got[0].Partition != 3 || string(got[0].Payload) != "three" {
		t.Fatalf("handled: got %+v, want one job of partition 3", got)
	}
	if n := b.rdb.XLen(t.Context(), keys.Stream(b.q.Name(), 7)).Val(); n != 1 {
		t.Fatalf("partition 7 entries after a worker of partition 3: got %d, want 1", n)
	}
	if _, err := b.q.Enqueue(t.Context(), Message{Partition: 8}); !errors.Is(err, ErrPartition) {
		t.Fatalf("enqueue to partition 8 of 8: got %v, want ErrPartition", err)
	}
}

// redisNow reads Redis's clock.
func redisNow(t *testing.T, rdb redis.UniversalClient) time.Time {
	t.Helper()
	now, err := rdb.Time(t.Context()).Result()
	if err != nil {
		t.Fatalf("redis TIME: %v", err)
	}
	return now
}

// advance makes Redis's clock appear d later to the retry set of partition
// p: every waiting job's due time moves d earlier. The queue takes time
// only from Redis, so this is how a test lets time pass.
func (b *bundle) advance(t *testing.T, p int, d time.Duration) {
	t.Helper()
	key := keys.Retry(b.q.Name(), p)
	for _, z := range b.rdb.ZRangeWithScores(t.Context(), key, 0, -1).Val() {
		z.Score -= float64(d.Milliseconds())
		if err := b.rdb.ZAddXX(t.Context(), key, z).Err(); err != nil {
			t.Fatalf("advance retry set: %v", err)
		}
	}
}

// dueWithin checks that the retry set of partition p holds one job due
// d after a Redis time in [from, to].
func (b *bundle) dueWithin(t *testing.T, p int, from, to time.Time, d time.Duration) {
	t.Helper()
	zs := b.rdb.ZRangeWithScores(t.Context(), keys.Retry(b.q.Name(), p), 0, -1).Val()
	lo, hi := from.Add(d).UnixMilli()-1, to.Add(d).UnixMilli()+1
	if len(zs) != 1 || int64(zs[0].Score) < lo || int64(zs[0].Score) > hi {
		t.Fatalf("retry set: got %v, want one job due in [%d, %d] (Redis's now + %v)", zs, lo, hi, d)
	}
}

func testRetryAfter(t *testing.T, b *bundle) {
	var calls atomic.Int32
	seen := make(chan Job, 4)
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		for _, j := range jobs {
			seen <- *j
			if calls.Add(1) == 1 {
				o.Retry(j, 30*time.Second)
				continue
			}
			if err := o.MarkDone(ctx, j); err != nil {
				return err
			}
		}
		return nil
	})
	// The worker's own clock is 5 minutes fast: it must not matter.
	b.clock.Advance(5 * time.Minute)
	b.worker(t, h, WorkerConfig{})
	start := redisNow(t, b.rdb)
	enqueue(t, b.q, Message{Partition: 5, Payload: []byte("x")})
	j := <-seen
	if j.Deliveries != 1 {
		t.Fatalf("first delivery: got %d, want 1", j.Deliveries)
	}
	await.Until(t, "the retry scheduled", func() bool { return b.stats(t).Retry == 1 })
	b.dueWithin(t, 5, start, redisNow(t, b.rdb), 30*time.Second)
	if s := b.stats(t); s.Depth != 0 || s.Pending != 0 {
		t.Fatalf("stream while retry waits: got depth %d pending %d, want 0 0", s.Depth, s.Pending)
	}
	b.advance(t, 5, 25*time.Second)
	moved, err := b.q.MoveDue(t.Context(), []int{5}, 10)
	if err != nil || moved[0] != 0 {
		t.Fatalf("move due at now+25s: got %v (err %v), want nothing moved", moved, err)
	}
	b.advance(t, 5, 5*time.Second)
	j2 := <-seen
	if j2.Deliveries != 2 || string(j2.Payload) != "x" {
		t.Fatalf("second delivery: got deliveries %d payload %q, want 2 %q", j2.Deliveries, j2.Payload, "x")
	}
	if !j2.Enqueued.Equal(j.Enqueued) || j.Enqueued.Before(start.Truncate(time.Millisecond)) || j.Enqueued.After(redisNow(t, b.rdb)) {
		t.Fatalf("first enqueue time: got %v then %v, want the same Redis time after %v", j.Enqueued, j2.Enqueued, start)
	}
	b.waitEmpty(t)
}

func testRetryError(t *testing.T, b *bundle) {
	var calls atomic.Int32
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		if calls.Add(1) == 1 {
			return RetryAfter(2*time.Minute, errors.New("provider 429"))
		}
		return nil
	})
	b.clock.Advance(-5 * time.Minute) // a slow worker clock must not matter either
	b.worker(t, h, WorkerConfig{})
	start := redisNow(t, b.rdb)
	enqueue(t, b.q, Message{Partition: 1, Payload: []byte("y")})
	await.Until(t, "the retry scheduled", func() bool { return b.stats(t).Retry == 1 })
	b.dueWithin(t, 1, start, redisNow(t, b.rdb), 2*time.Minute)
	b.advance(t, 1, 2*time.Minute)
	await.Until(t, "the second call", func() bool { return calls.Load() == 2 })
	b.waitEmpty(t)
}

func testMaxDeliveries(t *testing.T, b *bundle) {
	var deliveries []int
	var mu sync.Mutex
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		for _, j := range jobs {
			mu.Lock()
			deliveries = append(deliveries, j.Deliveries)
			mu.Unlock()
			if string(j.Payload) == "poison" {
				o.Dead(j, "bad payload")
				continue
			}
			o.Retry(j, 0)
		}
		return nil
	})
	b.worker(t, h, WorkerConfig{MaxDeliveries: 3})
	ids := enqueue(t, b.q, Message{Partition: 4, Payload: []byte("flaky")}, Message{Partition: 4, Payload: []byte("poison")})
	await.Until(t, "two dead jobs", func() bool {
		b.advance(t, 4, time.Hour) // every scheduled retry is due
		return b.stats(t).Dead == 2
	})
	b.waitEmpty(t)
	mu.Lock()
	got := slices.Clone(deliveries)
	mu.Unlock()
	slices.Sort(got)
	if want := []int{1, 1, 2, 3}; !slices.Equal(got, want) {
		t.Fatalf("deliveries seen: got %v, want %v", got, want)
	}
	dead, err := b.q.Dead(t.Context(), 0, 10)
	if err != nil || len(dead) != 2 {
		t.Fatalf("dead jobs: got %d (err %v), want 2", len(dead), err)
	}
	byPayload := map[string]DeadJob{}
	for _, d := range dead {
		byPayload[string(d.Payload)] = d
	}
	if d := byPayload["poison"]; d.Reason != "bad payload" || d.OriginalID != ids[1] || d.Deliveries != 1 {
		t.Fatalf("poison dead job: got %+v, want reason %q, original id %s, 1 delivery", d, "bad payload", ids[1])
	}
	if d := byPayload["flaky"]; !strings.Contains(d.Reason, "retries exhausted") || d.Deliveries != 3 || d.Partition != 4 {
		t.Fatalf("flaky dead job: got %+v, want retries exhausted after 3 deliveries in partition 4", d)
	}
}

func testDeadLetters(t *testing.T, b *bundle) {
	var handled atomic.Int32
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		for _, j := range jobs {
			if j.Deliveries == 1 && !strings.HasPrefix(string(j.Payload), "requeued") {
				o.Dead(j, "first time")
				continue
			}
			handled.Add(1)
		}
		return nil
	})
	enqueue(t, b.q, Message{Partition: 0, Payload: []byte("a")}, Message{Partition: 1, Payload: []byte("b")}, Message{Partition: 1, Payload: []byte("c")})
	w := b.worker(t, h, WorkerConfig{})
	await.Until(t, "three dead jobs", func() bool { return b.stats(t).Dead == 3 })
	w.Stop()

	all, err := b.q.Dead(t.Context(), 0, 10)
	if err != nil || len(all) != 3 {
		t.Fatalf("dead jobs: got %d (err %v), want 3", len(all), err)
	}
	for i, want := range []string{"a", "b", "c"} {
		if string(all[i].Payload) != want {
			t.Fatalf("dead job %d: got %q, want %q (ordered by partition, then age)", i, all[i].Payload, want)
		}
	}
	for _, tc := range []struct{ offset, count, want int }{{1, 1, 1}, {1, 5, 2}, {3, 5, 0}, {0, 0, 0}} {
		page, err := b.q.Dead(t.Context(), tc.offset, tc.count)
		if err != nil || len(page) != tc.want {
			t.Fatalf("dead page offset %d count %d: got %d (err %v), want %d", tc.offset, tc.count, len(page), err, tc.want)
		}
		if tc.want > 0 && page[0].ID != all[tc.offset].ID {
			t.Fatalf("dead page offset %d: got first id %s, want %s", tc.offset, page[0].ID, all[tc.offset].ID)
		}
	}
	if err := b.q.RequeueDead(t.Context(), 1, "1-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("requeue a missing dead job: got %v, want ErrNotFound", err)
	}
	if err := b.q.RequeueDead(t.Context(), all[0].Partition, all[0].ID); err != nil {
		t.Fatalf("requeue one: %v", err)
	}
	if s := b.stats(t); s.Dead != 2 || s.Depth != 1 {
		t.Fatalf("after requeue one: got dead %d depth %d, want 2 1", s.Dead, s.Depth)
	}
	n, err := b.q.RequeueAllDead(t.Context())
	if err != nil || n != 2 {
		t.Fatalf("requeue all: got %d (err %v), want 2", n, err)
	}
	// A fresh worker sees them as first deliveries with a fresh budget.
	var again atomic.Int32
	b.worker(t, HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		for _, j := range jobs {
			if j.Deliveries == 1 {
				again.Add(1)
			}
		}
		return nil
	}), WorkerConfig{})
	await.Until(t, "three requeued jobs handled", func() bool { return again.Load() == 3 })
	b.waitEmpty(t)
	if s := b.stats(t); s.Dead != 0 {
		t.Fatalf("dead after requeue all: got %d, want 0", s.Dead)
	}
}

// claimAsDeadConsumer reads n jobs of partition p as a consumer that then
// vanishes without acknowledging them.
func claimAsDeadConsumer(t *testing.T, b *bundle, p, n int) {
	t.Helper()
	res, err := b.rdb.XReadGroup(t.Context(), &redis.XReadGroupArgs{
		Group: Group, Consumer: "dead-consumer", Streams: []string{keys.Stream(b.q.Name(), p), ">"},
		Count: int64(n), Block: -1,
	}).Result()
	if err != nil || len(res) != 1 || len(res[0].Messages) != n {
		t.Fatalf("read as the dead consumer: got %v (err %v), want %d jobs", res, err, n)
	}
}

func testReclaim(t *testing.T, b *bundle) {
	ids := enqueue(t, b.q, Message{Partition: 6, Payload: []byte("r1")}, Message{Partition: 6, Payload: []byte("r2")}, Message{Partition: 6, Payload: []byte("r3")})
	claimAsDeadConsumer(t, b, 6, 3)
	// The dead consumer did r2's side effect and recorded it, then died.
	if err := b.rdb.HSet(t.Context(), keys.Done(b.q.Name(), 6), ids[1], "1").Err(); err != nil {
		t.Fatalf("write done record: %v", err)
	}
	rec := &recorder{}
	b.worker(t, rec, WorkerConfig{ReclaimMinIdle: 100 * time.Millisecond, HandlerTimeout: 50 * time.Millisecond, ReclaimInterval: 10 * time.Millisecond})
	await.Until(t, "two reclaimed jobs handled", func() bool { return rec.count() >= 2 })
	b.waitEmpty(t)
	got := rec.snapshot()
	if len(got) != 2 {
		t.Fatalf("handled after reclaim: got %d jobs, want 2 (r2 had a done record)", len(got))
	}
	for _, j := range got {
		if j.Deliveries != 2 || j.ID == ids[1] {
			t.Fatalf("reclaimed job %s %q: got deliveries %d, want 2 and not r2", j.ID, j.Payload, j.Deliveries)
		}
	}
	if n := b.rdb.HLen(t.Context(), keys.Done(b.q.Name(), 6)).Val(); n != 0 {
		t.Fatalf("done records left: got %d, want 0", n)
	}
	if got := testutil.ToFloat64(mustVec(t, b.reg, "nudge_queue_redeliveries_total", b.q.Name())); got != 2 {
		t.Fatalf("redeliveries metric: got %v, want 2", got)
	}
	if got := testutil.ToFloat64(mustVec(t, b.reg, "nudge_queue_duplicates_skipped_total", b.q.Name())); got != 1 {
		t.Fatalf("duplicates skipped metric: got %v, want 1", got)
	}
}

func testReclaimExhausted(t *testing.T, b *bundle) {
	enqueue(t, b.q, Message{Partition: 2, Payload: []byte("crashes-everyone")})
	claimAsDeadConsumer(t, b, 2, 1)
	rec := &recorder{}
	b.worker(t, rec, WorkerConfig{MaxDeliveries: 1, ReclaimMinIdle: 100 * time.Millisecond, HandlerTimeout: 50 * time.Millisecond, ReclaimInterval: 10 * time.Millisecond})
	await.Until(t, "the job dead-lettered", func() bool { return b.stats(t).Dead == 1 })
	b.waitEmpty(t)
	if n := rec.count(); n != 0 {
		t.Fatalf("handler calls for an exhausted job: got %d, want 0", n)
	}
	dead, err := b.q.Dead(t.Context(), 0, 1)
	if err != nil || len(dead) != 1 || dead[0].Deliveries != 2 || string(dead[0].Payload) != "crashes-everyone" {
		t.Fatalf("dead job: got %+v (err %v), want the payload with 2 deliveries", dead, err)
	}
}

func testLeaseRenewal(t *testing.T, b *bundle) {
	// Six jobs are read at once but handled one by one, 40ms each: the last
	// waits about 200ms for a handler slot, twice ReclaimMinIdle. Without
	// lease renewal the reclaimer would count a second delivery and, with a
	// budget of one, dead-letter them.
	var msgs []Message
	for p := range 6 {
		msgs = append(msgs, Message{Partition: p, Payload: []byte("slow")})
	}
	enqueue(t, b.q, msgs...)
	var handled atomic.Int32
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		select {
		case <-time.After(40 * time.Millisecond): // simulated work
		case <-ctx.Done():
			return ctx.Err()
		}
		handled.Add(int32(len(jobs)))
		return nil
	})
	b.worker(t, h, WorkerConfig{
		Concurrency: 1, BatchSize: 1, MaxDeliveries: 1, Readers: 1,
		ReclaimMinIdle: 100 * time.Millisecond, HandlerTimeout: 80 * time.Millisecond, ReclaimInterval: 10 * time.Millisecond,
	})
	await.Until(t, "six jobs handled", func() bool { return handled.Load() == 6 })
	b.waitEmpty(t)
	if s := b.stats(t); s.Dead != 0 {
		t.Fatalf("dead jobs: got %d, want 0 (held jobs must not be reclaimed)", s.Dead)
	}
}

func testEnqueueUnique(t *testing.T, b *bundle) {
	ctx := t.Context()
	id1, added, err := b.q.EnqueueUnique(ctx, 3, "event-42", []byte("fanout 42"))
	if err != nil || !added {
		t.Fatalf("first enqueue: got added %v (err %v), want true", added, err)
	}
	id2, added, err := b.q.EnqueueUnique(ctx, 3, "event-42", []byte("fanout 42 again"))
	if err != nil || added || id2 != id1 {
		t.Fatalf("second enqueue: got id %s added %v (err %v), want id %s added false", id2, added, err, id1)
	}
	if _, added, err := b.q.EnqueueUnique(ctx, 3, "event-43", []byte("fanout 43")); err != nil || !added {
		t.Fatalf("other unique id: got added %v (err %v), want true", added, err)
	}
	if n := b.rdb.XLen(ctx, keys.Stream(b.q.Name(), 3)).Val(); n != 2 {
		t.Fatalf("stream entries: got %d, want 2", n)
	}
	if ttl := b.rdb.PTTL(ctx, keys.Unique(b.q.Name(), 3, "event-42")).Val(); ttl <= 0 || ttl > 24*time.Hour {
		t.Fatalf("marker TTL: got %v, want within (0, 24h]", ttl)
	}
	// After the job is handled, the marker still stops a second fan-out.
	rec := &recorder{}
	b.worker(t, rec, WorkerConfig{})
	await.Until(t, "two jobs handled", func() bool { return rec.count() >= 2 })
	if _, added, err := b.q.EnqueueUnique(ctx, 3, "event-42", []byte("late duplicate")); err != nil || added {
		t.Fatalf("enqueue after handling: got added %v (err %v), want false", added, err)
	}
	b.waitEmpty(t)
	if n := rec.count(); n != 2 {
		t.Fatalf("handled: got %d, want 2", n)
	}
}

func testEnqueueAfter(t *testing.T, b *bundle) {
	rec := &recorder{}
	b.worker(t, rec, WorkerConfig{})
	start := redisNow(t, b.rdb)
	if err := b.q.EnqueueAfter(t.Context(), 1, 10*time.Minute, []byte("later")); err != nil {
		t.Fatalf("enqueue after: %v", err)
	}
	if err := b.q.EnqueueAfter(t.Context(), 1, 10*time.Minute, []byte("later")); err != nil {
		t.Fatalf("enqueue after, same payload: %v", err)
	}
	if s := b.stats(t); s.Retry != 2 {
		t.Fatalf("delayed jobs: got %d, want 2", s.Retry)
	}
	for _, z := range b.rdb.ZRangeWithScores(t.Context(), keys.Retry(b.q.Name(), 1), 0, -1).Val() {
		if lo := start.Add(10 * time.Minute).UnixMilli(); int64(z.Score) < lo-1 {
			t.Fatalf("delayed job due at %d, want at least Redis's now + 10m (%d)", int64(z.Score), lo)
		}
	}
	b.advance(t, 1, 9*time.Minute)
	moved, err := b.q.MoveDue(t.Context(), []int{1}, 10)
	if err != nil || moved[0] != 0 {
		t.Fatalf("move before due: got %v (err %v), want 0", moved, err)
	}
	b.advance(t, 1, time.Minute)
	await.Until(t, "delayed jobs handled", func() bool { return rec.count() >= 2 })
	b.waitEmpty(t)
}

func testDrain(t *testing.T, b *bundle) {
	started := make(chan struct{}, 8)
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		started <- struct{}{}
		<-release
		return o.MarkDone(ctx, jobs...)
	})
	w := b.worker(t, h, WorkerConfig{Concurrency: 2, BatchSize: 1})
	enqueue(t, b.q, Message{Partition: 0, Payload: []byte("1")}, Message{Partition: 1, Payload: []byte("2")})
	<-started
	<-started
	stopped := make(chan struct{})
	go func() { w.Stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatalf("Stop returned while handlers were running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-stopped
	if s := b.stats(t); s.Depth != 0 || s.Pending != 0 {
		t.Fatalf("after drain: got depth %d pending %d, want 0 0 (in-flight jobs acked)", s.Depth, s.Pending)
	}
	enqueue(t, b.q, Message{Partition: 0, Payload: []byte("after stop")})
	if s := b.stats(t); s.Depth != 1 || s.Pending != 0 {
		t.Fatalf("job enqueued after Stop: got depth %d pending %d, want 1 0 (not read)", s.Depth, s.Pending)
	}
	w.Stop() // twice is fine
	if err := w.Start(t.Context()); !errors.Is(err, ErrStarted) {
		t.Fatalf("Start after Stop: got %v, want ErrStarted", err)
	}
}

func testDrainDeadline(t *testing.T, b *bundle) {
	started := make(chan struct{}, 1)
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})
	w := b.worker(t, h, WorkerConfig{DrainTimeout: 50 * time.Millisecond})
	enqueue(t, b.q, Message{Partition: 0, Payload: []byte("slow")})
	<-started
	w.Stop()
	if s := b.stats(t); s.Depth != 0 || s.Pending != 0 || s.Retry != 1 {
		t.Fatalf("after a cut-short drain: got depth %d pending %d retry %d, want 0 0 1", s.Depth, s.Pending, s.Retry)
	}
}

func testMetrics(t *testing.T, b *bundle) {
	mon, err := NewMonitor(service.Archetype{Clock: func() time.Time { return b.clock.Now().Add(time.Hour) }, Registerer: b.reg}, []*Queue{b.q}, MonitorConfig{})
	if err != nil {
		t.Fatalf("new monitor: %v", err)
	}
	var msgs []Message
	for i := range 5 {
		msgs = append(msgs, Message{Partition: i, Payload: []byte("m")})
	}
	enqueue(t, b.q, msgs...)
	claimAsDeadConsumer(t, b, 0, 1)
	if err := b.q.EnqueueAfter(t.Context(), 2, time.Hour, []byte("later")); err != nil {
		t.Fatalf("enqueue after: %v", err)
	}
	if err := mon.Refresh(t.Context()); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	for _, c := range []struct {
		metric string
		min    float64
		max    float64
	}{
		{"nudge_queue_depth", 5, 5},
		{"nudge_queue_pending", 1, 1},
		{"nudge_queue_lag", 4, 4},
		{"nudge_queue_retry_size", 1, 1},
		{"nudge_queue_dead_size", 0, 0},
		{"nudge_queue_oldest_age_seconds", 3590, 3610},
	} {
		got := testutil.ToFloat64(mustVec(t, b.reg, c.metric, b.q.Name()))
		if got < c.min || got > c.max {
			t.Fatalf("%s: got %v, want within [%v, %v]", c.metric, got, c.min, c.max)
		}
	}
	// A worker's counters: one job dead, the rest done.
	b.worker(t, HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		for _, j := range jobs {
			if j.Partition == 4 {
				o.Dead(j, "nope")
			}
		}
		return nil
	}), WorkerConfig{})
	// Partitions settle independently: wait for both counters, then check
	// that neither overshoots.
	await.Until(t, "handled counters", func() bool {
		return testutil.ToFloat64(mustVec(t, b.reg, "nudge_queue_jobs_handled_total", b.q.Name(), "done")) >= 3 &&
			testutil.ToFloat64(mustVec(t, b.reg, "nudge_queue_jobs_handled_total", b.q.Name(), "dead")) >= 1
	})
	if done, dead := testutil.ToFloat64(mustVec(t, b.reg, "nudge_queue_jobs_handled_total", b.q.Name(), "done")),
		testutil.ToFloat64(mustVec(t, b.reg, "nudge_queue_jobs_handled_total", b.q.Name(), "dead")); done != 3 || dead != 1 {
		t.Fatalf("handled: done %v, dead %v; want 3 and 1", done, dead)
	}
	if err := mon.Refresh(t.Context()); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if got := testutil.ToFloat64(mustVec(t, b.reg, "nudge_queue_dead_size", b.q.Name())); got != 1 {
		t.Fatalf("dead size: got %v, want 1", got)
	}
}

// mustVec finds the series of metric with the given label values (in any
// order) in reg.
func mustVec(t *testing.T, reg *prometheus.Registry, metric string, labels ...string) prometheus.Collector {
	t.Helper()
	return &seriesCollector{reg: reg, t: t, metric: metric, labels: labels}
}

// seriesCollector exposes one series of a gathered registry, for
// testutil.ToFloat64.
type seriesCollector struct {
	reg    *prometheus.Registry
	t      *testing.T
	metric string
	labels []string
}

func (s *seriesCollector) Describe(ch chan<- *prometheus.Desc) {}

func (s *seriesCollector) Collect(ch chan<- prometheus.Metric) {
	mfs, err := s.reg.Gather()
	if err != nil {
		s.t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != s.metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			var vals []string
			for _, l := range m.GetLabel() {
				vals = append(vals, l.GetValue())
			}
			want := slices.Clone(s.labels)
			slices.Sort(vals)
			slices.Sort(want)
			if !slices.Equal(vals, want) {
				continue
			}
			var v float64
			switch {
			case m.GetCounter() != nil:
				v = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				v = m.GetGauge().GetValue()
			}
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(s.metric, "", nil, nil), prometheus.UntypedValue, v)
			return
		}
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(s.metric, "", nil, nil), prometheus.UntypedValue, 0)
}

func TestLifecycleAndConfig(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	q, err := New(rdb, Config{Name: "life", Partitions: 4})
	if err != nil {
		t.Fatalf("new queue: %v", err)
	}
	h := HandlerFunc(func(context.Context, *Outcomes, []*Job) error { return nil })
	for _, tc := range []struct {
		name string
		cfg  WorkerConfig
		want string
	}{
		{"handler timeout not below min idle", WorkerConfig{HandlerTimeout: time.Minute, ReclaimMinIdle: time.Minute}, "HandlerTimeout"},
		{"partition out of range", WorkerConfig{Partitions: []int{4}}, "Partitions"},
		{"partition twice", WorkerConfig{Partitions: []int{1, 1}}, "twice"},
		{"empty partitions", WorkerConfig{Partitions: []int{}}, "Partitions is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewWorker(service.Archetype{}, q, h, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewWorker: got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no name", Config{Partitions: 2}},
		{"name with a brace", Config{Name: "a{b}"}},
		{"negative partitions", Config{Name: "x", Partitions: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(rdb, tc.cfg); err == nil {
				t.Fatalf("New(%+v): got nil error, want one", tc.cfg)
			}
		})
	}
	t.Run("stop before start and twice", func(t *testing.T) {
		w, err := NewWorker(service.Archetype{}, q, h, WorkerConfig{})
		if err != nil {
			t.Fatalf("new worker: %v", err)
		}
		w.Stop()
		w.Stop()
		if err := w.Start(t.Context()); !errors.Is(err, ErrStarted) {
			t.Fatalf("Start after Stop: got %v, want ErrStarted", err)
		}
	})
	t.Run("two workers share a registry", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		for range 2 {
			if _, err := NewWorker(service.Archetype{Registerer: reg}, q, h, WorkerConfig{}); err != nil {
				t.Fatalf("new worker on a shared registry: %v", err)
			}
		}
	})
}
