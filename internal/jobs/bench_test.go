package jobs

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

// benchBackends starts the deployments a benchmark runs on.
func benchBackends(b *testing.B) []backend {
	return []backend{
		{"single", redistest.Start(b)},
		{"cluster", redistest.StartCluster(b).Client(b)},
	}
}

func benchMessages(n int) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = Message{Partition: i % 64, Payload: []byte(`{"d":` + strconv.Itoa(i) + `,"f":"feed-1","e":"ev-123456"}`)}
	}
	return msgs
}

// BenchmarkEnqueue measures pipelined Enqueue of 1,000 jobs per call over
// 64 partitions.
func BenchmarkEnqueue(b *testing.B) {
	for _, be := range benchBackends(b) {
		b.Run(be.name, func(b *testing.B) {
			q, err := New(be.rdb, Config{Name: "benq", Partitions: 64})
			if err != nil {
				b.Fatal(err)
			}
			msgs := benchMessages(1000)
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				if _, err := q.Enqueue(b.Context(), msgs...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(msgs))/time.Since(start).Seconds(), "jobs/s")
			b.StopTimer()
			be.rdb.FlushAll(b.Context())
		})
	}
}

// BenchmarkConsume measures how fast a worker drains 64 partitions: read,
// handler call, settle (XACK + XDEL in one script per partition). b.N is
// in units of 1,000 jobs.
func BenchmarkConsume(b *testing.B) {
	for _, be := range benchBackends(b) {
		for _, tc := range []struct {
			name string
			cfg  WorkerConfig
			mark bool
		}{
			{"multi-stream/ack", WorkerConfig{}, false},
			{"multi-stream/markdone+ack", WorkerConfig{}, true},
			{"per-partition/ack", WorkerConfig{PerPartitionReads: true}, false},
			{"per-partition/markdone+ack", WorkerConfig{PerPartitionReads: true}, true},
		} {
			if be.name == "cluster" && !tc.cfg.PerPartitionReads {
				continue // a cluster always reads per partition
			}
			b.Run(be.name+"/"+tc.name, func(b *testing.B) {
				benchConsume(b, be.rdb, tc.cfg, tc.mark)
			})
		}
	}
}

var benchSeq atomic.Int64

func benchConsume(b *testing.B, rdb redis.UniversalClient, cfg WorkerConfig, mark bool) {
	ctx := b.Context()
	q, err := New(rdb, Config{Name: fmt.Sprintf("benc%d", benchSeq.Add(1)), Partitions: 64})
	if err != nil {
		b.Fatal(err)
	}
	if err := q.EnsureGroups(ctx); err != nil {
		b.Fatal(err)
	}
	total := b.N * 1000
	msgs := benchMessages(10_000)
	for n := 0; n < total; n += len(msgs) {
		if _, err := q.Enqueue(ctx, msgs[:min(len(msgs), total-n)]...); err != nil {
			b.Fatal(err)
		}
	}
	var seen atomic.Int64
	h := HandlerFunc(func(ctx context.Context, o *Outcomes, jobs []*Job) error {
		seen.Add(int64(len(jobs)))
		if mark {
			return o.MarkDone(ctx, jobs...)
		}
		return nil
	})
	w, err := NewWorker(service.Archetype{}, q, h, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	if err := w.Start(ctx); err != nil {
		b.Fatal(err)
	}
	settled := w.m.handled.WithLabelValues(q.Name(), "done")
	// A millisecond's pause at most, so the wait adds little to the time measured.
	await.Poll{Timeout: 10 * time.Minute, Interval: time.Millisecond}.Until(b, "every job settled", func() bool {
		return testutil.ToFloat64(settled) >= float64(total)
	})
	elapsed := time.Since(start)
	b.StopTimer()
	w.Stop()
	if got := seen.Load(); got != int64(total) {
		b.Fatalf("handled: got %d, want %d", got, total)
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "jobs/s")
	s, err := q.Stats(ctx)
	if err != nil || s.Depth != 0 || s.Pending != 0 {
		b.Fatalf("after consume: %+v (err %v), want empty", s, err)
	}
}
