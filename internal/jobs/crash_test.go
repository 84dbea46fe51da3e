package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/redis/go-redis/v9"
)

// Crash test parameters, shared by the test and its worker subprocess.
const (
	crashEnvAddr     = "NUDGE_JOBS_CRASH_REDIS" // set in the worker subprocess
	crashQueue       = "crash"
	crashSideEffects = "crash:sidefx" // LIST of payloads, one per side effect
	crashCutOff      = "crash:cutoff" // side effects in flight when a handler call failed
	crashConcurrency = 4              // handler calls at once
	crashGroup       = 8              // side effects per MarkDone
)

// TestCrashWorker is the worker subprocess of TestCrashRecovery: it consumes
// the crash queue, doing each job's side effect (RPUSH of its payload)
// before MarkDone, until SIGTERM or SIGKILL.
func TestCrashWorker(t *testing.T) {
	addr := os.Getenv(crashEnvAddr)
	if addr == "" {
		t.Skip("runs only as the worker subprocess of TestCrashRecovery")
	}
	ctx, stop := signal.NotifyContext(t.Context(), syscall.SIGTERM)
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	q, err := New(rdb, Config{Name: crashQueue, Partitions: 64})
	if err != nil {
		t.Fatalf("new queue: %v", err)
	}
	// In flight at a kill, per handler call: the crashGroup side effects
	// between RPUSH and MarkDone. So duplicates ≤ kills × crashConcurrency ×
	// crashGroup, plus the side effects of handler calls cut off by
	// HandlerTimeout (counted in crashCutOff).
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		for len(jobs) > 0 {
			g := jobs[:min(crashGroup, len(jobs))]
			jobs = jobs[len(g):]
			vals := make([]any, len(g))
			for i, j := range g {
				vals[i] = j.Payload
			}
			if err := rdb.RPush(ctx, crashSideEffects, vals...).Err(); err != nil {
				// Cut off (HandlerTimeout on a loaded machine): the RPUSH may
				// have happened; these jobs will be retried. Count them, as
				// they widen the duplicate bound beyond the kills.
				rdb.IncrBy(context.WithoutCancel(ctx), crashCutOff, int64(len(g)))
				return err
			}
			if err := o.MarkDone(ctx, g...); err != nil {
				return err // the jobs are still acknowledged: no duplicate
			}
		}
		return nil
	})
	w, err := NewWorker(service.Archetype{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, q, h, WorkerConfig{
		Concurrency: crashConcurrency, BatchSize: 64,
		ReclaimMinIdle: time.Second, ReclaimInterval: 100 * time.Millisecond,
		HandlerTimeout: 900 * time.Millisecond, MaxDeliveries: 20,
	})
	if err != nil {
		t.Fatalf("new worker: %v", err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatalf("start worker: %v", err)
	}
	<-ctx.Done()
	w.Stop()
}

// TestCrashRecovery runs a worker as a subprocess over a queue of 100k jobs
// in 64 partitions, SIGKILLs it at random points, restarts it, and checks
// that every job's side effect happened, nothing is left behind, and the
// duplicates stay within what was in flight at the kills.
func TestCrashRecovery(t *testing.T) {
	if os.Getenv(crashEnvAddr) != "" {
		t.Skip("inside the subprocess")
	}
	t.Parallel()
	jobsN, kills := 100_000, 4
	if testing.Short() {
		jobsN, kills = 20_000, 3
	}
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	q, err := New(rdb, Config{Name: crashQueue, Partitions: 64})
	if err != nil {
		t.Fatalf("new queue: %v", err)
	}
	if err := q.EnsureGroups(ctx); err != nil {
		t.Fatalf("ensure groups: %v", err)
	}
	for start := 0; start < jobsN; start += 10_000 {
		var msgs []Message
		for i := start; i < min(start+10_000, jobsN); i++ {
			msgs = append(msgs, Message{Partition: i % 64, Payload: []byte(strconv.Itoa(i))})
		}
		if _, err := q.Enqueue(ctx, msgs...); err != nil {
			t.Fatalf("enqueue: %v", err)
		}
	}

	startWorker := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWorker$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnvAddr+"="+srv.Addr)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start worker subprocess: %v", err)
		}
		return cmd
	}
	sideEffects := func() int64 { return rdb.LLen(ctx, crashSideEffects).Val() }
	drained := func() bool {
		s, err := q.Stats(ctx)
		return err == nil && s.Depth == 0 && s.Pending == 0 && s.Retry == 0
	}

	for k := range kills {
		cmd := startWorker()
		// Kill after a random share of the remaining work, mid-flight.
		target := sideEffects() + int64(rand.IntN(jobsN/(kills+2))) + 500
		await.Within(t, 60*time.Second, fmt.Sprintf("kill %d: %d side effects", k+1, target), func() bool {
			return sideEffects() >= target || drained()
		})
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	cmd := startWorker()
	await.Within(t, 90*time.Second, "the queue drained", drained)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("last worker exit after SIGTERM: %v", err)
	}

	effects, err := rdb.LRange(ctx, crashSideEffects, 0, -1).Result()
	if err != nil {
		t.Fatalf("read side effects: %v", err)
	}
	counts := make([]int, jobsN)
	for _, e := range effects {
		i, err := strconv.Atoi(e)
		if err != nil || i < 0 || i >= jobsN {
			t.Fatalf("side effect %q is not a job", e)
		}
		counts[i]++
	}
	for i, c := range counts {
		if c == 0 {
			t.Fatalf("job %d: side effect never happened (lost)", i)
		}
	}
	dups := len(effects) - jobsN
	cutOff, _ := rdb.Get(ctx, crashCutOff).Int()
	bound := kills*crashConcurrency*crashGroup + cutOff
	t.Logf("crash test: %d jobs, %d SIGKILLs, %d side effects, %d duplicates (bound %d = kills × concurrency %d × group %d + %d cut off by HandlerTimeout)",
		jobsN, kills, len(effects), dups, bound, crashConcurrency, crashGroup, cutOff)
	if dups > bound {
		t.Fatalf("duplicates: got %d, want ≤ %d", dups, bound)
	}
	s, err := q.Stats(ctx)
	if err != nil || s.Depth != 0 || s.Pending != 0 || s.Retry != 0 || s.Dead != 0 {
		t.Fatalf("queue after drain: got %+v (err %v), want all zero", s, err)
	}
	for p := range 64 {
		if n := rdb.HLen(ctx, q.parts[p].done).Val(); n != 0 {
			t.Fatalf("done records left in partition %d: got %d, want 0", p, n)
		}
	}
}
