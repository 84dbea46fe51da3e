package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nudge-dev/nudge/internal/startstop"
	"github.com/redis/go-redis/v9"
)

// Job is one delivery of a job to a handler.
type Job struct {
	ID         string // stream entry id, unique within the partition
	Partition  int
	Payload    []byte
	Deliveries int // 1 on the first delivery; counts retries and redeliveries after a crash
	// Enqueued is when the job was first enqueued, on Redis's clock; it
	// stays the same across retries. A job whose retry would be due more
	// than the worker's MaxAge after it is dead-lettered instead.
	Enqueued time.Time

	epoch uint64 // the worker's heartbeat lapses when it was read or last checked

	// Set through Outcomes, under Outcomes.mu.
	outcome outcome
	after   time.Duration
	reason  string
}

type outcome uint8

const (
	outcomeNone outcome = iota
	outcomeDone
	outcomeDrop
	outcomeRetry
	outcomeRelease
	outcomeDead
)

// Handler processes a batch of jobs, like an http.Handler serves a request.
// It reports per-job outcomes through o; a job it reports nothing for is
// acknowledged when Handle returns nil and retried (with backoff, or after
// the delay of a *RetryError) when it returns an error. Handle must honour
// ctx, which ends at the worker's HandlerTimeout or at the end of a drain.
//
// A handler with a side effect (a push) calls o.MarkDone for the jobs whose
// side effect has just happened, before it goes on: if the process then
// dies, the redelivered job is acknowledged without reaching a handler.
type Handler interface {
	Handle(ctx context.Context, o *Outcomes, jobs []*Job) error
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, o *Outcomes, jobs []*Job) error

// Handle calls f(ctx, o, jobs).
func (f HandlerFunc) Handle(ctx context.Context, o *Outcomes, jobs []*Job) error {
	return f(ctx, o, jobs)
}

// RetryError asks for the jobs of a failed Handle call (those without an
// outcome) to be retried after After, e.g. a provider's Retry-After.
type RetryError struct {
	After time.Duration
	Err   error
}

// Error returns the cause and the delay.
func (e *RetryError) Error() string {
	return fmt.Sprintf("retry after %v: %v", e.After, e.Err)
}

// Unwrap returns the cause.
func (e *RetryError) Unwrap() error { return e.Err }

// RetryAfter wraps err so that the jobs it failed are retried after d.
func RetryAfter(d time.Duration, err error) error { return &RetryError{After: d, Err: err} }

// Outcomes collects a handler's per-job outcomes for one Handle call. Its
// methods are safe to call from several goroutines of the handler. The last
// outcome reported for a job wins.
type Outcomes struct {
	mu   sync.Mutex
	mark func(ctx context.Context, jobs []*Job) error
}

// MarkDone records that the side effect of jobs happened (the done record)
// and reports them done. Call it right after the side effect, before
// anything else can fail: a crash before MarkDone returns is the only
// window in which the side effect can happen twice. The error, if any,
// says the record may be missing; the jobs are still acknowledged when
// Handle returns.
func (o *Outcomes) MarkDone(ctx context.Context, jobs ...*Job) error {
	o.set(jobs, outcomeDone, 0, "")
	if o.mark == nil || len(jobs) == 0 {
		return nil
	}
	return o.mark(ctx, jobs)
}

// Drop reports the job finished without a side effect worth recording: it
// is acknowledged and, if redelivered after a crash, handled again.
func (o *Outcomes) Drop(job *Job) { o.set([]*Job{job}, outcomeDrop, 0, "") }

// Retry reports the job failed for now: it is acknowledged and comes back
// as a new delivery after d (0 = the worker's backoff). With a MaxAge, it
// is dead-lettered instead once the retry would be due after the job is
// MaxAge old; without one, once it has used its delivery budget.
func (o *Outcomes) Retry(job *Job, d time.Duration) {
	o.set([]*Job{job}, outcomeRetry, max(d, 0), "")
}

// Release puts the job back for later without using a delivery: it is
// acknowledged and comes back after d (0 = the worker's first backoff step)
// with the same delivery count, for a job the handler chose not to try
// (its provider is paused). MaxAge still applies.
func (o *Outcomes) Release(job *Job, d time.Duration) {
	o.set([]*Job{job}, outcomeRelease, max(d, 0), "")
}

// Dead reports the job can never succeed: it moves to the dead-letter
// stream with reason.
func (o *Outcomes) Dead(job *Job, reason string) { o.set([]*Job{job}, outcomeDead, 0, reason) }

func (o *Outcomes) set(jobs []*Job, oc outcome, d time.Duration, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, j := range jobs {
		j.outcome, j.after, j.reason = oc, d, reason
	}
}

// Persist calls f until it succeeds or ctx ends, backing off from 50ms to
// 2s between attempts: for bookkeeping after a side effect, which must not
// be lost to a short Redis stall. It returns f's last error when ctx ends.
func Persist(ctx context.Context, f func() error) error {
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || ctx.Err() != nil {
			return err
		}
		if !startstop.Sleep(ctx, backoff(50*time.Millisecond, 2*time.Second, attempt)) {
			return err
		}
	}
}

// markDone writes the done records of jobs: one HSET per partition, in one
// pipeline, retried (Persist) until it succeeds or ctx ends.
func (q *Queue) markDone(ctx context.Context, now time.Time, jobs []*Job) error {
	return Persist(ctx, func() error { return q.markDoneOnce(ctx, now, jobs) })
}

func (q *Queue) markDoneOnce(ctx context.Context, now time.Time, jobs []*Job) error {
	ms := strconv.FormatInt(now.UnixMilli(), 10)
	byPart := make(map[int][]any)
	for _, j := range jobs {
		byPart[j.Partition] = append(byPart[j.Partition], j.ID, ms)
	}
	pipe := q.rdb.Pipeline()
	for p, kv := range byPart {
		pipe.HSet(ctx, q.parts[p].done, kv...)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("record done jobs of %s: %w", q.cfg.Name, err)
	}
	return nil
}
