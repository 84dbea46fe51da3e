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
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// ErrStarted is returned by Start on a component that was already started
// (or stopped).
var ErrStarted = errors.New("already started")

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
	// delivered more often is dead-lettered. Default 5.
	MaxDeliveries int
	// ReclaimMinIdle is how long a delivered job may go unacknowledged
	// before another consumer takes it over (XAUTOCLAIM). Default 60s.
	ReclaimMinIdle time.Duration
	// ReclaimInterval is the pause between reclaim scans and lease renewals
	// of held jobs; at most ReclaimMinIdle/3. Default ReclaimMinIdle/4.
	ReclaimInterval time.Duration
	// ReclaimBatch is the XAUTOCLAIM COUNT. Default 100.
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
	c.ReclaimMinIdle = cmp.Or(c.ReclaimMinIdle, 60*time.Second)
	c.ReclaimInterval = cmp.Or(c.ReclaimInterval, c.ReclaimMinIdle/4)
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
	case c.ReclaimInterval > c.ReclaimMinIdle/3:
		return fmt.Errorf("%sReclaimInterval (%v) must be at most a third of ReclaimMinIdle (%v), so held jobs' leases are renewed in time: lower ReclaimInterval or leave it 0", prefix, c.ReclaimInterval, c.ReclaimMinIdle)
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
// at once), a reclaimer takes over the jobs of dead consumers with
// XAUTOCLAIM, and a retry mover brings due retries and delayed jobs back
// into the streams.
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

	mu            sync.Mutex
	started       bool
	stopOnce      sync.Once
	loopCancel    context.CancelFunc
	handlerCancel context.CancelFunc
	loops         sync.WaitGroup
	handlers      sync.WaitGroup
}

type heldKey struct {
	p  int
	id string
}

// NewWorker returns a worker that feeds the jobs of q to h. log may be nil
// (discard), now may be nil (time.Now); reg receives the worker's metrics
// (nil: not exported).
func NewWorker(q *Queue, h Handler, cfg WorkerConfig, log *slog.Logger, now func() time.Time, reg prometheus.Registerer) (*Worker, error) {
	cfg = cfg.withDefaults(q)
	if err := cfg.validate(q); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("jobs: NewWorker: nil Handler")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newWorkerMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("jobs: worker of queue %s: %w", q.Name(), err)
	}
	return &Worker{
		q: q, h: h, cfg: cfg, m: m, now: now,
		log:  log.With("queue", q.Name(), "consumer", cfg.Consumer),
		sem:  make(chan struct{}, cfg.Concurrency),
		held: make(map[heldKey]time.Time),
	}, nil
}

// Consumer returns the worker's consumer name.
func (w *Worker) Consumer() string { return w.cfg.Consumer }

// Start creates the consumer groups, loads the scripts and starts the
// readers, the reclaimer and the retry mover. They run until Stop, or
// until ctx ends (then Stop must still be called to wait for running
// handler calls).
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return ErrStarted
	}
	if err := w.q.EnsureGroups(ctx); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	if err := w.q.loadScripts(ctx); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	w.started = true
	base := context.WithoutCancel(ctx)
	loopCtx, loopCancel := context.WithCancel(ctx)
	handlerCtx, handlerCancel := context.WithCancel(base)
	w.loopCancel, w.handlerCancel = loopCancel, handlerCancel

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
	return nil
}

// Stop stops reading, lets running handler calls finish (up to
// DrainTimeout, then cancels them), settles them and returns when every
// goroutine has exited. Jobs read but not handled stay pending and are
// reclaimed by another worker after ReclaimMinIdle. Stop is safe to call
// twice, concurrently, or before Start.
func (w *Worker) Stop() {
	w.stopOnce.Do(func() {
		w.mu.Lock()
		started := w.started
		w.started = true // a Start after Stop fails
		w.mu.Unlock()
		if !started {
			return
		}
		deadline := time.AfterFunc(w.cfg.DrainTimeout, w.handlerCancel)
		w.loopCancel()
		w.loops.Wait()
		w.handlers.Wait()
		deadline.Stop()
		w.handlerCancel()
	})
}

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
			if !sleep(loopCtx, backoff(100*time.Millisecond, 5*time.Second, fails)) {
				return
			}
			continue
		}
		fails = 0
		if len(batch) == 0 {
			if w.cfg.PerPartitionReads && !sleep(loopCtx, w.cfg.IdlePoll) {
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
			if v, ok := m.Values[fieldPayload].(string); ok {
				j.Payload = []byte(v)
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
	w.heldMu.Lock()
	for _, j := range jobs {
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
	w.heldMu.Lock()
	defer w.heldMu.Unlock()
	out := jobs[:0]
	for _, j := range jobs {
		k := heldKey{j.Partition, j.ID}
		if _, ok := w.held[k]; ok {
			continue
		}
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
// one pipeline.
func (w *Worker) settle(ctx context.Context, jobs []*Job, herr error) error {
	now := w.now()
	var defaultAfter time.Duration = -1
	if re, ok := errors.AsType[*RetryError](herr); ok {
		defaultAfter = max(re.After, 0)
	}
	byPart := make(map[int][]any)
	var done, dropped, retried, dead, exhausted int
	for _, j := range jobs {
		oc, after, reason := j.outcome, j.after, j.reason
		if oc == outcomeNone {
			if herr == nil {
				oc = outcomeDone
			} else {
				oc, after = outcomeRetry, max(defaultAfter, 0)
			}
		}
		if oc == outcomeRetry && j.Deliveries >= w.cfg.MaxDeliveries {
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
		case outcomeRetry:
			retried++
			if after == 0 {
				after = backoff(w.cfg.RetryBackoff, w.cfg.RetryBackoffMax, j.Deliveries)
			}
			ops = append(ops, "r", j.ID, now.Add(after).UnixMilli(), retryMember(j.Deliveries, j.ID, j.Payload))
		case outcomeDead:
			dead++
			ops = append(ops, "d", j.ID, j.Payload, reason, j.Deliveries)
		}
		byPart[j.Partition] = ops
	}
	calls := make([]scriptCall, 0, len(byPart))
	for p, ops := range byPart {
		pk := w.q.parts[p]
		calls = append(calls, scriptCall{
			keys: []string{pk.stream, pk.done, pk.retry, pk.dead},
			args: append([]any{Group, now.UnixMilli(), w.q.cfg.DeadMaxLen}, ops...),
		})
	}
	var errs []error
	for _, c := range runPipelined(ctx, w.q.rdb, settleScript, calls) {
		if err := c.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("settle %d jobs: %w", len(jobs), errors.Join(errs...))
	}
	name := w.q.Name()
	w.m.handled.WithLabelValues(name, "done").Add(float64(done))
	w.m.handled.WithLabelValues(name, "dropped").Add(float64(dropped))
	w.m.handled.WithLabelValues(name, "retry").Add(float64(retried))
	w.m.handled.WithLabelValues(name, "dead").Add(float64(dead))
	w.m.retries.WithLabelValues(name).Add(float64(retried))
	w.m.deadLettered.WithLabelValues(name, "handler").Add(float64(dead - exhausted))
	w.m.deadLettered.WithLabelValues(name, "max_deliveries").Add(float64(exhausted))
	return nil
}

// reclaimLoop scans the partitions for jobs idle longer than ReclaimMinIdle
// right away and then every ReclaimInterval.
func (w *Worker) reclaimLoop(loopCtx, handlerCtx, base context.Context) {
	t := time.NewTicker(w.cfg.ReclaimInterval)
	defer t.Stop()
	for {
		if err := w.renewLeases(loopCtx); err != nil && loopCtx.Err() == nil {
			w.log.ErrorContext(loopCtx, "renew leases of held jobs", "err", err)
		}
		if err := w.reclaim(loopCtx, handlerCtx, base); err != nil && loopCtx.Err() == nil {
			w.log.ErrorContext(loopCtx, "reclaim jobs", "err", err)
		}
		select {
		case <-loopCtx.Done():
			return
		case <-t.C:
		}
	}
}

// renewLeases resets the idle time of the jobs this worker holds (read,
// waiting for or inside a handler call) once they have been idle for a
// third of ReclaimMinIdle: XCLAIM ... JUSTID to ourselves, which does not
// count as a delivery. So only the jobs of a worker that stopped renewing
// (dead or stalled) are reclaimed, and a backlog waiting for a handler
// slot does not burn its delivery budget. Idle time is measured by Redis,
// so this uses the wall clock, not the injected one.
func (w *Worker) renewLeases(ctx context.Context) error {
	now := time.Now()
	threshold := w.cfg.ReclaimMinIdle / 3
	byPart := make(map[int][]string)
	w.heldMu.Lock()
	for k, last := range w.held {
		if now.Sub(last) >= threshold {
			byPart[k.p] = append(byPart[k.p], k.id)
			w.held[k] = now
		}
	}
	w.heldMu.Unlock()
	if len(byPart) == 0 {
		return nil
	}
	pipe := w.q.rdb.Pipeline()
	for p, ids := range byPart {
		pipe.XClaimJustID(ctx, &redis.XClaimArgs{
			Stream: w.q.parts[p].stream, Group: Group, Consumer: w.cfg.Consumer,
			// Skip a job another consumer claimed moments ago: it is theirs now.
			MinIdle: threshold / 2, Messages: ids,
		})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("xclaim justid: %w", err)
	}
	return nil
}

// reclaim runs one full XAUTOCLAIM scan of the worker's partitions.
func (w *Worker) reclaim(loopCtx, handlerCtx, base context.Context) error {
	cursors := make(map[int]string, len(w.cfg.Partitions))
	for _, p := range w.cfg.Partitions {
		cursors[p] = "0-0"
	}
	name := w.q.Name()
	for len(cursors) > 0 && loopCtx.Err() == nil {
		parts := make([]int, 0, len(cursors))
		calls := make([]scriptCall, 0, len(cursors))
		for p, cur := range cursors {
			pk := w.q.parts[p]
			parts = append(parts, p)
			calls = append(calls, scriptCall{
				keys: []string{pk.stream, pk.done, pk.dead},
				args: []any{Group, w.cfg.Consumer, w.cfg.ReclaimMinIdle.Milliseconds(), cur,
					w.cfg.ReclaimBatch, w.cfg.MaxDeliveries, w.now().UnixMilli(), w.q.cfg.DeadMaxLen},
			})
		}
		var errs []error
		var got []*Job
		for i, c := range runPipelined(loopCtx, w.q.rdb, reclaimScript, calls) {
			p := parts[i]
			next, jobs, skipped, dead, err := parseReclaim(c, p)
			if err != nil {
				errs = append(errs, fmt.Errorf("partition %d: %w", p, err))
				delete(cursors, p)
				continue
			}
			w.m.dupSkipped.WithLabelValues(name).Add(float64(skipped))
			w.m.deadLettered.WithLabelValues(name, "max_deliveries").Add(float64(dead))
			if skipped+dead > 0 {
				w.log.InfoContext(loopCtx, "reclaimed finished or exhausted jobs", "partition", p, "acked_done", skipped, "dead_lettered", dead)
			}
			got = append(got, jobs...)
			if next == "0-0" || next == "" {
				delete(cursors, p)
			} else {
				cursors[p] = next
			}
		}
		if got = w.notHeld(got); len(got) > 0 {
			w.m.redelivered.WithLabelValues(name).Add(float64(len(got)))
			w.log.InfoContext(loopCtx, "reclaimed jobs of a quiet consumer", "jobs", len(got))
			w.dispatch(handlerCtx, base, got)
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
	}
	return nil
}

func parseReclaim(c *redis.Cmd, p int) (next string, jobs []*Job, skipped, dead int, err error) {
	res, err := c.Slice()
	if err != nil {
		return "", nil, 0, 0, err
	}
	if len(res) != 4 {
		return "", nil, 0, 0, fmt.Errorf("reclaim: unexpected reply of %d elements", len(res))
	}
	next, _ = res[0].(string)
	flat, _ := res[1].([]any)
	for i := 0; i+2 < len(flat); i += 3 {
		id, _ := flat[i].(string)
		payload, _ := flat[i+1].(string)
		d, _ := flat[i+2].(int64)
		jobs = append(jobs, &Job{ID: id, Partition: p, Payload: []byte(payload), Deliveries: int(d)})
	}
	s, _ := res[2].(int64)
	dd, _ := res[3].(int64)
	return next, jobs, int(s), int(dd), nil
}

// retryLoop moves due jobs from the retry sets into the streams every
// RetryInterval, taking "now" from the worker's clock.
func (w *Worker) retryLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.RetryInterval)
	defer t.Stop()
	for {
		parts := w.cfg.Partitions
		for len(parts) > 0 && ctx.Err() == nil {
			moved, err := w.q.MoveDue(ctx, parts, w.now(), w.cfg.RetryBatch)
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

// sleep waits d or until ctx ends; it reports whether the full wait passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
