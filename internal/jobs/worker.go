package jobs

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/startstop"
)

// ErrStarted is returned by Start on a component that was already started
// (or stopped): startstop.ErrStarted.
var ErrStarted = startstop.ErrStarted

// WorkerConfig configures a Worker.
type WorkerConfig struct {
	// Partitions this worker reads; nil means all of the queue's.
	Partitions []int
	// Consumer is this worker's consumer name in the group; it must be
	// unique among live workers. Default: hostname-pid-random.
	Consumer string
	// Readers is the number of reading goroutines; the partitions are split
	// between them. Default 1 (a reader reads all its partitions in one
	// XREADGROUP), or 4 when reads go partition by partition.
	Readers int
	// PerPartitionReads reads each partition with its own (pipelined,
	// non-blocking) XREADGROUP instead of one blocking XREADGROUP over many
	// streams. Always on for a Redis Cluster, where one XREADGROUP cannot
	// span slots.
	PerPartitionReads bool
	// BatchSize is the XREADGROUP COUNT and the most jobs per handler call.
	// Default 100.
	BatchSize int
	// Concurrency bounds the handler calls running at once. Default 4.
	Concurrency int
	// Block is how long a multi-stream XREADGROUP waits for jobs; it also
	// bounds how long Stop waits for a reader. Default 1s.
	Block time.Duration
	// IdlePoll is the pause between per-partition reads that found nothing.
	// Default 50ms.
	IdlePoll time.Duration
	// HandlerTimeout bounds one handler call. It must be shorter than
	// ReclaimMinIdle. Default 15s.
	HandlerTimeout time.Duration
	// MaxDeliveries is the delivery budget of a job: a job that would be
	// delivered more often is dead-lettered. With a MaxAge it counts only
	// redeliveries after crashes (a job that kills its worker), not
	// retries. Default 5.
	MaxDeliveries int
	// MaxAge bounds retries by time instead of by count: a job whose retry
	// would be due more than MaxAge after its first enqueue (both on
	// Redis's clock) is dead-lettered instead. 0 (the default) bounds
	// retries by MaxDeliveries.
	MaxAge time.Duration
	// OnDead, if set, is called with the jobs this worker moved to the
	// dead-letter stream (by the handler's Dead, or as stale or exhausted),
	// right after the move: the place to hand their work back elsewhere.
	OnDead func(ctx context.Context, dead []DeadJob)
	// HeartbeatTTL is the lifetime of the worker's heartbeat key, which it
	// renews every HeartbeatTTL/4. Pending jobs of a consumer whose
	// heartbeat is gone (and stays gone for 3/4 of HeartbeatTTL more) are
	// claimed at once by the other workers. Default 2s.
	HeartbeatTTL time.Duration
	// ReclaimMinIdle is how long one of this worker's own pending jobs
	// that none of its handlers holds (its settle failed) may stay idle
	// before the worker runs it again. Held jobs' idle time is renewed
	// every ReclaimMinIdle/4. Default 60s.
	ReclaimMinIdle time.Duration
	// ReclaimInterval is the pause between reclaim scans (dead consumers
	// and orphaned jobs). Default HeartbeatTTL/4.
	ReclaimInterval time.Duration
	// ReclaimBatch is the most jobs taken per partition per scan step.
	// Default 100.
	ReclaimBatch int
	// RetryInterval is the pause between moves of due jobs from the retry
	// sets into the streams. Default 1s.
	RetryInterval time.Duration
	// RetryBatch is the most jobs moved per partition per script call.
	// Default 500.
	RetryBatch int
	// RetryBackoff is the first retry delay when the handler gives none; it
	// doubles per delivery, with jitter. Default 5s.
	RetryBackoff time.Duration
	// RetryBackoffMax caps the backoff. Default 10m.
	RetryBackoffMax time.Duration
	// DrainTimeout bounds Stop's wait for running handler calls; after it
	// their context is cancelled. Default 30s.
	DrainTimeout time.Duration
}

func (c WorkerConfig) withDefaults(q *Queue) WorkerConfig {
	if c.Partitions == nil {
		for p := range q.Partitions() {
			c.Partitions = append(c.Partitions, p)
		}
	}
	if c.Consumer == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.Consumer = cmp.Or(host, "worker") + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
	}
	if q.cluster {
		c.PerPartitionReads = true
	}
	if c.PerPartitionReads {
		c.Readers = cmp.Or(c.Readers, 4)
	}
	c.Readers = min(cmp.Or(c.Readers, 1), max(len(c.Partitions), 1))
	c.BatchSize = cmp.Or(c.BatchSize, 100)
	c.Concurrency = cmp.Or(c.Concurrency, 4)
	c.Block = cmp.Or(c.Block, time.Second)
	c.IdlePoll = cmp.Or(c.IdlePoll, 50*time.Millisecond)
	c.HandlerTimeout = cmp.Or(c.HandlerTimeout, 15*time.Second)
	c.MaxDeliveries = cmp.Or(c.MaxDeliveries, 5)
	c.HeartbeatTTL = cmp.Or(c.HeartbeatTTL, 2*time.Second)
	c.ReclaimMinIdle = cmp.Or(c.ReclaimMinIdle, 60*time.Second)
	c.ReclaimInterval = cmp.Or(c.ReclaimInterval, c.HeartbeatTTL/4)
	c.ReclaimBatch = cmp.Or(c.ReclaimBatch, 100)
	c.RetryInterval = cmp.Or(c.RetryInterval, time.Second)
	c.RetryBatch = cmp.Or(c.RetryBatch, 500)
	c.RetryBackoff = cmp.Or(c.RetryBackoff, 5*time.Second)
	c.RetryBackoffMax = cmp.Or(c.RetryBackoffMax, 10*time.Minute)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, 30*time.Second)
	return c
}

func (c WorkerConfig) validate(q *Queue) error {
	prefix := "jobs: worker of queue " + q.Name() + ": "
	seen := make(map[int]bool, len(c.Partitions))
	for _, p := range c.Partitions {
		if err := q.checkPartition(p); err != nil {
			return fmt.Errorf("%sPartitions: %w: list partitions between 0 and %d", prefix, err, q.Partitions()-1)
		}
		if seen[p] {
			return fmt.Errorf("%sPartitions lists partition %d twice: list each once", prefix, p)
		}
		seen[p] = true
	}
	switch {
	case len(c.Partitions) == 0:
		return errors.New(prefix + "Partitions is empty: list at least one partition, or leave it nil for all")
	case c.Readers < 1, c.BatchSize < 1, c.Concurrency < 1, c.MaxDeliveries < 1, c.ReclaimBatch < 1, c.RetryBatch < 1:
		return errors.New(prefix + "Readers, BatchSize, Concurrency, MaxDeliveries, ReclaimBatch and RetryBatch must be at least 1: set them or leave them 0 for the defaults")
	case c.BatchSize > 10_000:
		return fmt.Errorf("%sBatchSize is %d: set it to 10000 or less", prefix, c.BatchSize)
	case c.Block < time.Millisecond, c.IdlePoll < time.Millisecond, c.RetryInterval < time.Millisecond, c.ReclaimInterval < time.Millisecond:
		return errors.New(prefix + "Block, IdlePoll, RetryInterval and ReclaimInterval must be at least 1ms: set them or leave them 0 for the defaults")
	case c.HeartbeatTTL < 20*time.Millisecond:
		return fmt.Errorf("%sHeartbeatTTL is %v: set it to at least 20ms (NUDGE_HEARTBEAT_TTL for the dispatcher)", prefix, c.HeartbeatTTL)
	case c.MaxAge < 0:
		return fmt.Errorf("%sMaxAge is %v: set it to 0 (no age limit) or a positive duration", prefix, c.MaxAge)
	case c.ReclaimMinIdle < 4*time.Millisecond:
		return fmt.Errorf("%sReclaimMinIdle is %v: set it to at least 4ms", prefix, c.ReclaimMinIdle)
	case c.HandlerTimeout >= c.ReclaimMinIdle:
		return fmt.Errorf("%sHandlerTimeout (%v) must be shorter than ReclaimMinIdle (%v), or running jobs get reclaimed: lower HandlerTimeout or raise ReclaimMinIdle", prefix, c.HandlerTimeout, c.ReclaimMinIdle)
	case c.RetryBackoff <= 0 || c.RetryBackoffMax < c.RetryBackoff:
		return fmt.Errorf("%sRetryBackoff (%v) must be positive and at most RetryBackoffMax (%v)", prefix, c.RetryBackoff, c.RetryBackoffMax)
	case c.DrainTimeout <= 0:
		return fmt.Errorf("%sDrainTimeout is %v: set it to a positive duration", prefix, c.DrainTimeout)
	}
	return nil
}

// Worker consumes partitions of a queue: reader goroutines fetch batches
// with XREADGROUP and hand them to the handler (at most Concurrency calls
// at once), a heartbeat keeps the worker's consumer marked alive, a
// reclaimer takes over the pending jobs of consumers whose heartbeat is
// gone, a lease renewer keeps the idle time of held jobs low, and a retry
// mover brings due retries and delayed jobs back into the streams.
type Worker struct {
	q   *Queue
	h   Handler
	cfg WorkerConfig
	log *slog.Logger
	now func() time.Time
	m   *workerMetrics
	sem chan struct{}

	heldMu sync.Mutex
	held   map[heldKey]time.Time // jobs read and not yet settled -> last lease renewal

	lapsed map[string]time.Time // reclaimer only: consumer -> first scan that found no heartbeat
	lapses atomic.Uint64        // times this worker found its own heartbeat expired

	life     startstop.Base
	loops    sync.WaitGroup
	handlers sync.WaitGroup
	beat     sync.WaitGroup
}

type heldKey struct {
	p  int
	id string
}

// NewWorker returns a worker that feeds the jobs of q to h. log may be nil
// (discard), now may be nil (time.Now); reg receives the worker's metrics
// (nil: not exported).
func NewWorker(a service.Archetype, q *Queue, h Handler, cfg WorkerConfig) (*Worker, error) {
	cfg = cfg.withDefaults(q)
	if err := cfg.validate(q); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("jobs: NewWorker: nil Handler")
	}
	a = a.WithDefaults()
	log, now := a.Logger, a.Clock
	m, err := newWorkerMetrics(a)
	if err != nil {
		return nil, fmt.Errorf("jobs: worker of queue %s: %w", q.Name(), err)
	}
	return &Worker{
		q: q, h: h, cfg: cfg, m: m, now: now,
		log:    log.With("queue", q.Name(), "consumer", cfg.Consumer),
		sem:    make(chan struct{}, cfg.Concurrency),
		held:   make(map[heldKey]time.Time),
		lapsed: make(map[string]time.Time),
	}, nil
}

// Consumer returns the worker's consumer name.
func (w *Worker) Consumer() string { return w.cfg.Consumer }

// Start creates the consumer groups, loads the scripts, writes the first
// heartbeat and starts the readers, the heartbeat, the lease renewer, the
// reclaimer and the retry mover. They run until Stop, or until ctx ends
// (then Stop must still be called to wait for running handler calls). It
// follows startstop: a second Start, or a Start after Stop, returns
// ErrStarted; a Start whose setup fails may be retried.
func (w *Worker) Start(ctx context.Context) error { return w.life.Start(ctx, w.start) }

// start sets up and launches the worker's goroutines, and returns the
// function that stops them.
func (w *Worker) start(ctx context.Context) (func(), error) {
	if err := w.q.EnsureGroups(ctx); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	if err := w.q.loadScripts(ctx); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	if _, err := w.heartbeat(ctx); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	base := context.WithoutCancel(ctx)
	loopCtx, loopCancel := context.WithCancel(ctx)
	handlerCtx, handlerCancel := context.WithCancel(base)
	beatCtx, beatCancel := context.WithCancel(base)
	// The heartbeat outlives the loops and the handlers: while a handler
	// may still send, no other worker may take its jobs.
	w.beat.Go(func() { w.heartbeatLoop(beatCtx) })
	w.loops.Go(func() { w.renewLoop(loopCtx) })

	parts := w.cfg.Partitions
	for r := range w.cfg.Readers {
		var mine []int
		for i := r; i < len(parts); i += w.cfg.Readers {
			mine = append(mine, parts[i])
		}
		w.loops.Go(func() { w.readLoop(loopCtx, handlerCtx, base, mine) })
	}
	w.loops.Go(func() { w.reclaimLoop(loopCtx, handlerCtx, base) })
	w.loops.Go(func() { w.retryLoop(loopCtx) })
	return func() {
		deadline := time.AfterFunc(w.cfg.DrainTimeout, handlerCancel)
		loopCancel()
		w.loops.Wait()
		w.handlers.Wait()
		deadline.Stop()
		handlerCancel()
		beatCancel()
		w.beat.Wait()
	}, nil
}

// Stop stops reading, lets running handler calls finish (up to
// DrainTimeout, then cancels them), settles them, removes the worker's
// heartbeat and returns when every goroutine has exited. Jobs read but not
// handled stay pending and are claimed by another worker at its next
// reclaim scan. Stop is safe to call twice, concurrently, or before Start
// (startstop).
func (w *Worker) Stop() { w.life.Stop() }

// Stopped is closed once Stop has finished.
func (w *Worker) Stopped() <-chan struct{} { return w.life.Stopped() }

// readLoop reads batches from parts until loopCtx ends.
func (w *Worker) readLoop(loopCtx, handlerCtx, base context.Context, parts []int) {
	streams := make([]string, 0, 2*len(parts))
	for _, p := range parts {
		streams = append(streams, w.q.parts[p].stream)
	}
	for range parts {
		streams = append(streams, ">")
	}
	fails := 0
	for loopCtx.Err() == nil {
		// Read only when a handler slot is free, so read jobs do not wait long.
		select {
		case w.sem <- struct{}{}:
			<-w.sem
		case <-loopCtx.Done():
			return
		}
		var batch []*Job
		var err error
		if w.cfg.PerPartitionReads {
			batch, err = w.readEach(loopCtx, parts)
		} else {
			batch, err = w.readMulti(loopCtx, streams)
		}
		if err != nil {
			if loopCtx.Err() != nil {
				return
			}
			fails++
			w.log.ErrorContext(loopCtx, "read jobs", "err", err, "failures", fails)
			if isNoGroup(err) {
				if err := w.q.EnsureGroups(loopCtx); err != nil {
					w.log.ErrorContext(loopCtx, "recreate consumer groups", "err", err)
				}
			}
			if !startstop.Sleep(loopCtx, backoff(100*time.Millisecond, 5*time.Second, fails)) {
				return
			}
			continue
		}
		fails = 0
		if len(batch) == 0 {
			if w.cfg.PerPartitionReads && !startstop.Sleep(loopCtx, w.cfg.IdlePoll) {
				return
			}
			continue
		}
		w.hold(batch)
		w.dispatch(handlerCtx, base, batch)
	}
}

// perStream is the XREADGROUP COUNT for a read over n streams. COUNT
// applies to each stream, so a read over 64 partitions with the full batch
// size could take 64 batches at once and leave other replicas idle while
// this one works through them. One read takes about enough to fill every
// handler slot.
func (w *Worker) perStream(n int) int64 {
	want := w.cfg.BatchSize * w.cfg.Concurrency
	return int64(min(w.cfg.BatchSize, max(1, (want+n-1)/n)))
}

// readMulti reads new jobs of many streams in one blocking XREADGROUP.
func (w *Worker) readMulti(ctx context.Context, streams []string) ([]*Job, error) {
	res, err := w.q.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: Group, Consumer: w.cfg.Consumer, Streams: streams,
		Count: w.perStream(len(streams) / 2), Block: w.cfg.Block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("xreadgroup %d streams: %w", len(streams)/2, err)
	}
	return w.jobsOf(res), nil
}

// readEach reads new jobs partition by partition, non-blocking, in one
// pipeline (one round trip per node).
func (w *Worker) readEach(ctx context.Context, parts []int) ([]*Job, error) {
	pipe := w.q.rdb.Pipeline()
	cmds := make([]*redis.XStreamSliceCmd, len(parts))
	for i, p := range parts {
		cmds[i] = pipe.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: Group, Consumer: w.cfg.Consumer,
			Streams: []string{w.q.parts[p].stream, ">"},
			Count:   w.perStream(len(parts)), Block: -1,
		})
	}
	_, _ = pipe.Exec(ctx)
	var out []*Job
	var errs []error
	for i, c := range cmds {
		res, err := c.Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("xreadgroup partition %d: %w", parts[i], err))
			continue
		}
		out = append(out, w.jobsOf(res)...)
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, err := range errs {
		w.log.ErrorContext(ctx, "read jobs", "err", err)
	}
	return out, nil
}

func (w *Worker) jobsOf(res []redis.XStream) []*Job {
	n := 0
	for _, s := range res {
		n += len(s.Messages)
	}
	out := make([]*Job, 0, n)
	for _, s := range res {
		p := w.q.byKey[s.Stream]
		for _, m := range s.Messages {
			j := &Job{ID: m.ID, Partition: p, Deliveries: 1}
			j.Enqueued, _ = idTime(m.ID)
			if v, ok := m.Values[fieldPayload].(string); ok {
				j.Payload = []byte(v)
			}
			if v, ok := m.Values[fieldFirst].(string); ok {
				if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
					j.Enqueued = time.UnixMilli(ms)
				}
			}
			if v, ok := m.Values[fieldDeliveries].(string); ok {
				n, _ := strconv.Atoi(v)
				j.Deliveries += n
			}
			out = append(out, j)
		}
	}
	return out
}

func (w *Worker) hold(jobs []*Job) {
	now := time.Now()
	epoch := w.lapses.Load()
	w.heldMu.Lock()
	for _, j := range jobs {
		j.epoch = epoch
		w.held[heldKey{j.Partition, j.ID}] = now
	}
	w.heldMu.Unlock()
}

func (w *Worker) unhold(jobs []*Job) {
	w.heldMu.Lock()
	for _, j := range jobs {
		delete(w.held, heldKey{j.Partition, j.ID})
	}
	w.heldMu.Unlock()
}

// notHeld returns the jobs that are not already with one of our handlers,
// and holds them.
func (w *Worker) notHeld(jobs []*Job) []*Job {
	now := time.Now()
	epoch := w.lapses.Load()
	w.heldMu.Lock()
	defer w.heldMu.Unlock()
	out := jobs[:0]
	for _, j := range jobs {
		k := heldKey{j.Partition, j.ID}
		if _, ok := w.held[k]; ok {
			continue
		}
		j.epoch = epoch
		w.held[k] = now
		out = append(out, j)
	}
	return out
}

// dispatch hands jobs to handler calls of at most BatchSize jobs, each
// when a concurrency slot is free. If the drain deadline passes first, the
// remaining jobs are left pending for a reclaimer.
func (w *Worker) dispatch(handlerCtx, base context.Context, jobs []*Job) {
	for len(jobs) > 0 {
		chunk := jobs[:min(len(jobs), w.cfg.BatchSize)]
		jobs = jobs[len(chunk):]
		select {
		case w.sem <- struct{}{}:
		case <-handlerCtx.Done():
			w.unhold(chunk)
			w.unhold(jobs)
			return
		}
		w.m.inflight.WithLabelValues(w.q.Name()).Add(float64(len(chunk)))
		w.handlers.Go(func() {
			defer func() { <-w.sem }()
			w.run(handlerCtx, base, chunk)
		})
	}
}

// run makes one handler call and settles its jobs.
func (w *Worker) run(handlerCtx, base context.Context, jobs []*Job) {
	defer w.m.inflight.WithLabelValues(w.q.Name()).Sub(float64(len(jobs)))
	defer w.unhold(jobs)
	if jobs = w.stillOurs(handlerCtx, jobs); len(jobs) == 0 {
		return
	}
	o := &Outcomes{mark: func(ctx context.Context, js []*Job) error { return w.q.markDone(ctx, w.now(), js) }}
	ctx, cancel := context.WithTimeout(handlerCtx, w.cfg.HandlerTimeout)
	start := time.Now()
	err := w.call(ctx, o, jobs)
	cancel()
	w.m.duration.WithLabelValues(w.q.Name()).Observe(time.Since(start).Seconds())
	if err != nil {
		w.log.WarnContext(ctx, "handler failed", "jobs", len(jobs), "err", err)
	}
	sctx, scancel := context.WithTimeout(base, 10*time.Second)
	defer scancel()
	o.mu.Lock() // the handler may have left goroutines behind
	defer o.mu.Unlock()
	if err := w.settle(sctx, jobs, err); err != nil {
		w.log.ErrorContext(sctx, "settle jobs; they stay pending until reclaimed", "jobs", len(jobs), "err", err)
	}
}

// call runs the handler, turning a panic into an error.
func (w *Worker) call(ctx context.Context, o *Outcomes, jobs []*Job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v", r)
		}
	}()
	return w.h.Handle(ctx, o, jobs)
}

// settle acknowledges the jobs of one handler call, scheduling retries and
// dead-lettering as their outcomes say: one script call per partition, in
// one pipeline. Due times and staleness are decided by the script on
// Redis's clock.
func (w *Worker) settle(ctx context.Context, jobs []*Job, herr error) error {
	var defaultAfter time.Duration = -1
	if re, ok := errors.AsType[*RetryError](herr); ok {
		defaultAfter = max(re.After, 0)
	}
	byPart := make(map[int][]any)
	byID := make(map[heldKey]*Job, len(jobs))
	var deadJobs []DeadJob
	var done, dropped, retried, released, dead, exhausted int
	for _, j := range jobs {
		byID[heldKey{j.Partition, j.ID}] = j
		oc, after, reason := j.outcome, j.after, j.reason
		if oc == outcomeNone {
			if herr == nil {
				oc = outcomeDone
			} else {
				oc, after = outcomeRetry, max(defaultAfter, 0)
			}
		}
		if oc == outcomeRetry && w.cfg.MaxAge == 0 && j.Deliveries >= w.cfg.MaxDeliveries {
			oc = outcomeDead
			reason = "retries exhausted after " + strconv.Itoa(j.Deliveries) + " deliveries"
			if herr != nil {
				reason += ": " + herr.Error()
			}
			exhausted++
		}
		ops := byPart[j.Partition]
		switch oc {
		case outcomeDone:
			done++
			ops = append(ops, "a", j.ID)
		case outcomeDrop:
			dropped++
			ops = append(ops, "a", j.ID)
		case outcomeRetry, outcomeRelease:
			n := j.Deliveries
			if oc == outcomeRelease {
				released++
				n-- // not tried: the next delivery has the same number
				if after == 0 {
					after = backoff(w.cfg.RetryBackoff, w.cfg.RetryBackoffMax, 1)
				}
			} else {
				retried++
				if after == 0 {
					after = backoff(w.cfg.RetryBackoff, w.cfg.RetryBackoffMax, j.Deliveries)
				}
			}
			ops = append(ops, "r", j.ID, after.Milliseconds(), n, j.Enqueued.UnixMilli(), j.Payload)
		case outcomeDead:
			dead++
			ops = append(ops, "d", j.ID, j.Payload, reason, j.Deliveries)
			cause := CauseHandler
			if j.outcome != outcomeDead {
				cause = CauseMaxDeliveries
			}
			deadJobs = append(deadJobs, DeadJob{Partition: j.Partition, OriginalID: j.ID, Payload: j.Payload, Reason: reason, Deliveries: j.Deliveries, Cause: cause})
		}
		byPart[j.Partition] = ops
	}
	calls := make([]scriptCall, 0, len(byPart))
	parts := make([]int, 0, len(byPart))
	for p, ops := range byPart {
		pk := w.q.parts[p]
		parts = append(parts, p)
		calls = append(calls, scriptCall{
			keys: []string{pk.stream, pk.done, pk.retry, pk.dead},
			args: append([]any{Group, w.q.deadCap, w.cfg.MaxAge.Milliseconds()}, ops...),
		})
	}
	var errs []error
	stale := 0
	for i, c := range runPipelined(ctx, w.q.rdb, settleScript, calls) {
		res, err := c.Slice()
		if err == nil && len(res) != 2 {
			err = fmt.Errorf("unexpected reply %v", res)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ids, _ := res[1].([]any)
		for _, v := range ids {
			id, _ := v.(string)
			j := byID[heldKey{parts[i], id}]
			if j == nil {
				continue
			}
			stale++
			deadJobs = append(deadJobs, DeadJob{Partition: j.Partition, OriginalID: j.ID, Payload: j.Payload,
				Reason: "stale: older than " + w.cfg.MaxAge.String(), Deliveries: j.Deliveries, Cause: CauseMaxAge})
		}
	}
	w.handBack(ctx, deadJobs)
	if len(errs) > 0 {
		return fmt.Errorf("settle %d jobs: %w", len(jobs), errors.Join(errs...))
	}
	name := w.q.Name()
	w.m.handled.WithLabelValues(name, "done").Add(float64(done))
	w.m.handled.WithLabelValues(name, "dropped").Add(float64(dropped))
	w.m.handled.WithLabelValues(name, "retry").Add(float64(retried - stale))
	w.m.handled.WithLabelValues(name, "released").Add(float64(released))
	w.m.handled.WithLabelValues(name, "dead").Add(float64(dead + stale))
	w.m.retries.WithLabelValues(name).Add(float64(retried - stale))
	w.m.deadLettered.WithLabelValues(name, "handler").Add(float64(dead - exhausted))
	w.m.deadLettered.WithLabelValues(name, "max_deliveries").Add(float64(exhausted))
	w.m.deadLettered.WithLabelValues(name, "max_age").Add(float64(stale))
	return nil
}

// handBack passes jobs that were just dead-lettered to OnDead.
func (w *Worker) handBack(ctx context.Context, dead []DeadJob) {
	if w.cfg.OnDead == nil || len(dead) == 0 {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			w.log.ErrorContext(ctx, "dead-job hook panicked", "jobs", len(dead), "panic", fmt.Sprint(r))
		}
	}()
	w.cfg.OnDead(ctx, dead)
}

// heartbeatLoop renews the worker's heartbeat every HeartbeatTTL/4 until
// ctx ends, then deletes it so that the jobs the worker left pending are
// claimed at once.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.HeartbeatTTL / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			if err := w.q.rdb.Del(dctx, w.heartbeatKey()).Err(); err != nil {
				w.log.WarnContext(dctx, "remove heartbeat", "err", err)
			}
			return
		case <-t.C:
		}
		bctx, cancel := context.WithTimeout(ctx, w.cfg.HeartbeatTTL)
		lapsed, err := w.heartbeat(bctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			w.log.ErrorContext(ctx, "renew heartbeat", "err", err)
		case lapsed:
			w.lapses.Add(1)
			// Other workers may have taken the jobs we hold; whatever of
			// them is still sent here is a duplicate within the pushes in
			// flight.
			w.log.WarnContext(ctx, "heartbeat had lapsed; held jobs may have been claimed by other workers", "held", w.heldCount())
		}
	}
}

func (w *Worker) heartbeatKey() string { return keys.Heartbeat(w.q.Name(), w.cfg.Consumer) }

// heartbeat writes the worker's heartbeat and reports whether it had
// expired before (lapsed).
func (w *Worker) heartbeat(ctx context.Context) (lapsed bool, err error) {
	old, err := w.q.rdb.SetArgs(ctx, w.heartbeatKey(), "1", redis.SetArgs{TTL: w.cfg.HeartbeatTTL, Get: true}).Result()
	if errors.Is(err, redis.Nil) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("write heartbeat of %s: %w", w.cfg.Consumer, err)
	}
	return old == "", nil
}

func (w *Worker) heldCount() int {
	w.heldMu.Lock()
	defer w.heldMu.Unlock()
	return len(w.held)
}

// renewLoop renews the leases of held jobs every ReclaimMinIdle/4, on its
// own ticker so that nothing else the worker waits for can starve it.
func (w *Worker) renewLoop(ctx context.Context) {
	t := time.NewTicker(max(w.cfg.ReclaimMinIdle/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.renewLeases(ctx); err != nil && ctx.Err() == nil {
			w.log.ErrorContext(ctx, "renew leases of held jobs", "err", err)
		}
	}
}

// renewLeases resets the idle time of the jobs this worker holds (read,
// waiting for or inside a handler call) once they have been idle for a
// third of ReclaimMinIdle: XCLAIM ... JUSTID to ourselves, which does not
// count as a delivery, and only for jobs still pending with this worker
// (renewScript). A renewal is recorded only for the jobs it renewed. Other workers take only the jobs of consumers whose heartbeat
// is gone; the idle time tells the worker's own reclaimer which of its
// pending jobs no handler holds any more. Held times are local
// (monotonic) durations; the idle time itself is measured by Redis.
func (w *Worker) renewLeases(ctx context.Context) error {
	now := time.Now()
	threshold := w.cfg.ReclaimMinIdle / 3
	byPart := make(map[int][]string)
	w.heldMu.Lock()
	for k, last := range w.held {
		if now.Sub(last) >= threshold {
			byPart[k.p] = append(byPart[k.p], k.id)
		}
	}
	w.heldMu.Unlock()
	if len(byPart) == 0 {
		return nil
	}
	calls := make([]scriptCall, 0, len(byPart))
	parts := make([]int, 0, len(byPart))
	for p, ids := range byPart {
		args := make([]any, 0, 2+len(ids))
		args = append(args, Group, w.cfg.Consumer)
		for _, id := range ids {
			args = append(args, id)
		}
		calls = append(calls, scriptCall{keys: []string{w.q.parts[p].stream}, args: args})
		parts = append(parts, p)
	}
	var errs []error
	for i, c := range runPipelined(ctx, w.q.rdb, renewScript, calls) {
		ids, err := c.StringSlice()
		if err != nil && !errors.Is(err, redis.Nil) {
			errs = append(errs, fmt.Errorf("renew leases in partition %d: %w", parts[i], err))
			continue
		}
		w.heldMu.Lock()
		for _, id := range ids {
			k := heldKey{parts[i], id}
			if _, ok := w.held[k]; ok {
				w.held[k] = now
			}
		}
		w.heldMu.Unlock()
	}
	return errors.Join(errs...)
}

// stillOurs returns the jobs that are still pending with this worker. Only
// jobs read before the worker last found its heartbeat expired are
// checked (other workers may have claimed them meanwhile: they are theirs
// now, and running them here too would be a duplicate); the others are
// returned as they are. If the check fails the jobs are kept: at least
// once wins over at most once.
func (w *Worker) stillOurs(ctx context.Context, jobs []*Job) []*Job {
	epoch := w.lapses.Load()
	var check []*Job
	for _, j := range jobs {
		if j.epoch != epoch {
			check = append(check, j)
		}
	}
	if len(check) == 0 {
		return jobs
	}
	pipe := w.q.rdb.Pipeline()
	cmds := make([]*redis.XPendingExtCmd, len(check))
	for i, j := range check {
		cmds[i] = pipe.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: w.q.parts[j.Partition].stream, Group: Group, Start: j.ID, End: j.ID, Count: 1,
		})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		w.log.WarnContext(ctx, "check ownership of jobs after a heartbeat lapse; running them", "jobs", len(check), "err", err)
		return jobs
	}
	lost := make(map[*Job]bool)
	for i, c := range cmds {
		if pe := c.Val(); len(pe) == 0 || pe[0].Consumer != w.cfg.Consumer {
			lost[check[i]] = true
		} else {
			check[i].epoch = epoch
		}
	}
	if len(lost) == 0 {
		return jobs
	}
	w.m.lost.WithLabelValues(w.q.Name()).Add(float64(len(lost)))
	w.log.WarnContext(ctx, "jobs claimed by another worker while the heartbeat lapsed; not running them", "jobs", len(lost))
	out := make([]*Job, 0, len(jobs)-len(lost))
	for _, j := range jobs {
		if !lost[j] {
			out = append(out, j)
		}
	}
	return out
}

// reclaimLoop scans the partitions for jobs to take over right away and
// then every ReclaimInterval.
func (w *Worker) reclaimLoop(loopCtx, handlerCtx, base context.Context) {
	t := time.NewTicker(w.cfg.ReclaimInterval)
	defer t.Stop()
	sweep := time.Now()
	for {
		if err := w.reclaim(loopCtx, handlerCtx, base); err != nil && loopCtx.Err() == nil {
			w.log.ErrorContext(loopCtx, "reclaim jobs", "err", err)
		}
		if time.Since(sweep) >= w.cfg.ReclaimMinIdle {
			sweep = time.Now()
			if err := w.sweepDone(loopCtx); err != nil && loopCtx.Err() == nil {
				w.log.ErrorContext(loopCtx, "sweep done records", "err", err)
			}
		}
		select {
		case <-loopCtx.Done():
			return
		case <-t.C:
		}
	}
}

// consumerInfo is one consumer of one partition's group.
type consumerInfo struct {
	p       int
	name    string
	pending int64
}

// reclaim runs one scan of the worker's partitions. It takes the pending
// jobs of consumers whose heartbeat is gone (seen gone twice, at least
// 3/4 of HeartbeatTTL apart, so that a heartbeat that lapsed while Redis itself
// stalled is renewed before anyone acts on it), and its own pending jobs
// that no handler holds and that have been idle longer than
// ReclaimMinIdle. It takes no more than the free handler slots can run,
// and removes dead consumers without pending jobs from the group. A live
// worker's jobs are never taken.
func (w *Worker) reclaim(loopCtx, handlerCtx, base context.Context) error {
	pipe := w.q.rdb.Pipeline()
	infos := make([]*redis.XInfoConsumersCmd, len(w.cfg.Partitions))
	for i, p := range w.cfg.Partitions {
		infos[i] = pipe.XInfoConsumers(loopCtx, w.q.parts[p].stream, Group)
	}
	_, _ = pipe.Exec(loopCtx)
	var consumers []consumerInfo
	names := map[string]bool{}
	for i, c := range infos {
		cs, err := c.Result()
		if err != nil {
			if isNoGroup(err) {
				continue
			}
			return fmt.Errorf("list consumers of partition %d: %w", w.cfg.Partitions[i], err)
		}
		for _, ci := range cs {
			consumers = append(consumers, consumerInfo{p: w.cfg.Partitions[i], name: ci.Name, pending: ci.Pending})
			if ci.Name != w.cfg.Consumer {
				names[ci.Name] = true
			}
		}
	}
	dead, err := w.deadConsumers(loopCtx, names)
	if err != nil {
		return err
	}
	budget := (cap(w.sem) - len(w.sem)) * w.cfg.BatchSize
	var errs []error
	for _, c := range consumers {
		if loopCtx.Err() != nil {
			break
		}
		switch {
		case c.name == w.cfg.Consumer && c.pending > 0:
			if budget <= 0 {
				continue
			}
			n, err := w.claimFrom(loopCtx, handlerCtx, base, c.p, c.name, w.cfg.ReclaimMinIdle, budget)
			budget -= n
			errs = append(errs, err)
		case !dead[c.name]:
		case c.pending == 0:
			if _, err := delConsumerScript.Run(loopCtx, w.q.rdb, []string{w.q.parts[c.p].stream}, Group, c.name).Result(); err != nil {
				errs = append(errs, fmt.Errorf("remove dead consumer %s of partition %d: %w", c.name, c.p, err))
			}
		case budget > 0:
			n, err := w.claimFrom(loopCtx, handlerCtx, base, c.p, c.name, 0, budget)
			budget -= n
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deadConsumers returns the consumers among names whose heartbeat was gone
// at this scan and at an earlier one at least 3/4 of HeartbeatTTL ago.
func (w *Worker) deadConsumers(ctx context.Context, names map[string]bool) (map[string]bool, error) {
	if len(names) == 0 {
		clear(w.lapsed)
		return nil, nil
	}
	pipe := w.q.rdb.Pipeline()
	cmds := make(map[string]*redis.IntCmd, len(names))
	for n := range names {
		cmds[n] = pipe.Exists(ctx, keys.Heartbeat(w.q.Name(), n))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read heartbeats: %w", err)
	}
	now := time.Now()
	dead := make(map[string]bool)
	for n, c := range cmds {
		if c.Val() == 1 {
			delete(w.lapsed, n)
			continue
		}
		first, ok := w.lapsed[n]
		if !ok {
			w.lapsed[n] = now
			continue
		}
		if now.Sub(first) >= w.cfg.HeartbeatTTL*3/4 {
			dead[n] = true
		}
	}
	for n := range w.lapsed {
		if !names[n] {
			delete(w.lapsed, n)
		}
	}
	return dead, nil
}

// claimFrom takes up to limit pending jobs of owner in partition p that
// have been idle at least minIdle (and, for our own, that no handler
// holds), and hands them to handler calls. It returns how many it took.
func (w *Worker) claimFrom(loopCtx, handlerCtx, base context.Context, p int, owner string, minIdle time.Duration, limit int) (int, error) {
	pk := w.q.parts[p]
	name := w.q.Name()
	taken := 0
	start := "-"
	for taken < limit && loopCtx.Err() == nil {
		count := int64(min(w.cfg.ReclaimBatch, limit-taken))
		pe, err := w.q.rdb.XPendingExt(loopCtx, &redis.XPendingExtArgs{
			Stream: pk.stream, Group: Group, Idle: minIdle, Start: start, End: "+", Count: count, Consumer: owner,
		}).Result()
		if err != nil {
			return taken, fmt.Errorf("list pending jobs of %s in partition %d: %w", owner, p, err)
		}
		if len(pe) == 0 {
			return taken, nil
		}
		start = "(" + pe[len(pe)-1].ID
		args := []any{Group, w.cfg.Consumer, owner, w.cfg.MaxDeliveries, w.cfg.MaxAge.Milliseconds(), w.q.deadCap}
		w.heldMu.Lock()
		for _, e := range pe {
			if _, held := w.held[heldKey{p, e.ID}]; !held {
				args = append(args, e.ID)
			}
		}
		w.heldMu.Unlock()
		if len(args) > 6 {
			res, err := claimScript.Run(loopCtx, w.q.rdb, []string{pk.stream, pk.done, pk.dead}, args...).Slice()
			if err != nil {
				return taken, fmt.Errorf("claim jobs of %s in partition %d: %w", owner, p, err)
			}
			got, skipped, dead, err := parseClaim(res, p)
			if err != nil {
				return taken, fmt.Errorf("claim jobs of %s in partition %d: %w", owner, p, err)
			}
			w.m.dupSkipped.WithLabelValues(name).Add(float64(skipped))
			for _, d := range dead {
				w.m.deadLettered.WithLabelValues(name, d.Cause).Inc()
			}
			if skipped+len(dead) > 0 {
				w.log.InfoContext(loopCtx, "reclaimed finished or exhausted jobs", "partition", p, "from", owner, "acked_done", skipped, "dead_lettered", len(dead))
			}
			w.handBack(loopCtx, dead)
			if got = w.notHeld(got); len(got) > 0 {
				taken += len(got)
				w.m.redelivered.WithLabelValues(name).Add(float64(len(got)))
				w.log.InfoContext(loopCtx, "reclaimed jobs", "partition", p, "from", owner, "jobs", len(got))
				w.dispatch(handlerCtx, base, got)
			}
		}
		if int64(len(pe)) < count {
			return taken, nil
		}
	}
	return taken, nil
}

func parseClaim(res []any, p int) (jobs []*Job, skipped int, dead []DeadJob, err error) {
	if len(res) != 3 {
		return nil, 0, nil, fmt.Errorf("unexpected reply of %d elements", len(res))
	}
	flat, _ := res[0].([]any)
	for i := 0; i+3 < len(flat); i += 4 {
		id, _ := flat[i].(string)
		payload, _ := flat[i+1].(string)
		d, _ := flat[i+2].(int64)
		f, _ := flat[i+3].(int64)
		jobs = append(jobs, &Job{ID: id, Partition: p, Payload: []byte(payload), Deliveries: int(d), Enqueued: time.UnixMilli(f)})
	}
	s, _ := res[1].(int64)
	dl, _ := res[2].([]any)
	for i := 0; i+3 < len(dl); i += 4 {
		payload, _ := dl[i].(string)
		id, _ := dl[i+1].(string)
		reason, _ := dl[i+2].(string)
		d, _ := dl[i+3].(int64)
		cause := CauseMaxDeliveries
		if strings.HasPrefix(reason, "stale") {
			cause = CauseMaxAge
		}
		dead = append(dead, DeadJob{Partition: p, OriginalID: id, Payload: []byte(payload), Reason: reason, Deliveries: int(d), Cause: cause})
	}
	return jobs, int(s), dead, nil
}

// sweepDone removes done records whose job is no longer pending, so the
// done hashes stay bounded by the jobs in flight.
func (w *Worker) sweepDone(ctx context.Context) error {
	var errs []error
	for _, p := range w.cfg.Partitions {
		pk := w.q.parts[p]
		cursor := "0"
		for ctx.Err() == nil {
			res, err := sweepDoneScript.Run(ctx, w.q.rdb, []string{pk.stream, pk.done}, Group, cursor, 200).Slice()
			if err != nil {
				errs = append(errs, fmt.Errorf("partition %d: %w", p, err))
				break
			}
			cursor, _ = res[0].(string)
			if cursor == "0" || cursor == "" {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// retryLoop moves due jobs from the retry sets into the streams every
// RetryInterval; the scripts decide what is due on Redis's clock.
func (w *Worker) retryLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.RetryInterval)
	defer t.Stop()
	for {
		parts := w.cfg.Partitions
		for len(parts) > 0 && ctx.Err() == nil {
			moved, err := w.q.MoveDue(ctx, parts, w.cfg.RetryBatch)
			if err != nil {
				if ctx.Err() == nil {
					w.log.ErrorContext(ctx, "move due jobs", "err", err)
				}
				break
			}
			var full []int
			for i, n := range moved {
				if n >= w.cfg.RetryBatch {
					full = append(full, parts[i])
				}
			}
			parts = full
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// backoff returns base·2^(attempt-1), capped at ceiling, with jitter in
// [d/2, d).
func backoff(base, ceiling time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	return d/2 + mrand.N(d/2+1)
}
