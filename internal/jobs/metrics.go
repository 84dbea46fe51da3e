package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/startstop"
)

// workerMetrics are the counters a worker updates, labelled by queue.
type workerMetrics struct {
	handled      *prometheus.CounterVec   // queue, outcome
	redelivered  *prometheus.CounterVec   // queue
	retries      *prometheus.CounterVec   // queue
	deadLettered *prometheus.CounterVec   // queue, cause
	dupSkipped   *prometheus.CounterVec   // queue
	lost         *prometheus.CounterVec   // queue
	inflight     *prometheus.GaugeVec     // queue
	duration     *prometheus.HistogramVec // queue
}

func newWorkerMetrics(a service.Archetype) (*workerMetrics, error) {
	m := &workerMetrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nudge", Subsystem: "queue", Name: "jobs_handled_total",
			Help: "Jobs settled after a handler call, by outcome (done, dropped, retry, released, dead).",
		}, []string{"queue", "outcome"}),
		redelivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nudge", Subsystem: "queue", Name: "redeliveries_total",
			Help: "Jobs claimed from a dead consumer (or the worker's own unsettled jobs) and handed to a handler again.",
		}, []string{"queue"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nudge", Subsystem: "queue", Name: "retries_scheduled_total",
			Help: "Jobs put in the retry set after a failed delivery.",
		}, []string{"queue"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nudge", Subsystem: "queue", Name: "dead_lettered_total",
			Help: "Jobs moved to the dead-letter stream, by cause (handler, max_deliveries, max_age).",
		}, []string{"queue", "cause"}),
		dupSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nudge", Subsystem: "queue", Name: "duplicates_skipped_total",
			Help: "Redelivered jobs acknowledged without a handler because their done record existed.",
		}, []string{"queue"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "nudge", Subsystem: "queue", Name: "jobs_lost_to_other_workers_total",
			Help: "Read jobs not run because another worker claimed them while this worker's heartbeat had lapsed.",
		}, []string{"queue"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "nudge", Subsystem: "queue", Name: "jobs_in_flight",
			Help: "Jobs handed to a handler and not yet settled.",
		}, []string{"queue"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "nudge", Subsystem: "queue", Name: "handler_duration_seconds",
			Help:    "Duration of one handler call (one batch).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"queue"}),
	}
	var err error
	if m.handled, err = service.RegisterShared(a, m.handled); err != nil {
		return nil, err
	}
	if m.redelivered, err = service.RegisterShared(a, m.redelivered); err != nil {
		return nil, err
	}
	if m.retries, err = service.RegisterShared(a, m.retries); err != nil {
		return nil, err
	}
	if m.deadLettered, err = service.RegisterShared(a, m.deadLettered); err != nil {
		return nil, err
	}
	if m.dupSkipped, err = service.RegisterShared(a, m.dupSkipped); err != nil {
		return nil, err
	}
	if m.lost, err = service.RegisterShared(a, m.lost); err != nil {
		return nil, err
	}
	if m.inflight, err = service.RegisterShared(a, m.inflight); err != nil {
		return nil, err
	}
	if m.duration, err = service.RegisterShared(a, m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

// MonitorConfig configures a Monitor.
type MonitorConfig struct {
	// Interval between two reads of the queue sizes. Default 15s.
	Interval time.Duration
}

func (c MonitorConfig) withDefaults() MonitorConfig {
	c.Interval = cmp.Or(c.Interval, 15*time.Second)
	return c
}

func (c MonitorConfig) validate() error {
	if c.Interval < 10*time.Millisecond {
		return fmt.Errorf("jobs: monitor Interval is %v: set it to at least 10ms", c.Interval)
	}
	return nil
}

// Monitor samples the sizes of queues (Queue.Stats) on an interval and
// exports them as gauges labelled by queue:
//
//	nudge_queue_depth               entries in the streams
//	nudge_queue_pending             delivered, not yet acknowledged (XPENDING)
//	nudge_queue_lag                 waiting, not yet delivered
//	nudge_queue_oldest_age_seconds  age of the oldest entry in the streams
//	nudge_queue_retry_size          jobs in the retry sets (retries, delayed jobs)
//	nudge_queue_dead_size           entries in the dead-letter streams
type Monitor struct {
	queues []*Queue
	cfg    MonitorConfig
	log    *slog.Logger
	now    func() time.Time

	depth, pending, lag, oldest, retry, dead *prometheus.GaugeVec

	life startstop.Base
}

// NewMonitor returns a monitor of queues whose gauges are registered on
// a.Registerer.
func NewMonitor(a service.Archetype, queues []*Queue, cfg MonitorConfig) (*Monitor, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a = a.WithDefaults()
	log, now := a.Logger, a.Clock
	gauge := func(name, help string) (*prometheus.GaugeVec, error) {
		return service.RegisterShared(a, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "nudge", Subsystem: "queue", Name: name, Help: help,
		}, []string{"queue"}))
	}
	m := &Monitor{queues: queues, cfg: cfg, log: log, now: now}
	var err error
	for _, g := range []struct {
		dst        **prometheus.GaugeVec
		name, help string
	}{
		{&m.depth, "depth", "Entries in the queue's streams: waiting plus being worked on (XLEN)."},
		{&m.pending, "pending", "Entries delivered to a consumer and not yet acknowledged (XPENDING)."},
		{&m.lag, "lag", "Entries waiting to be delivered to a consumer."},
		{&m.oldest, "oldest_age_seconds", "Age of the oldest entry still in the queue's streams."},
		{&m.retry, "retry_size", "Jobs waiting in the retry sets (retries and delayed jobs)."},
		{&m.dead, "dead_size", "Entries in the dead-letter streams."},
	} {
		if *g.dst, err = gauge(g.name, g.help); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Refresh reads every queue's sizes once and updates the gauges.
func (m *Monitor) Refresh(ctx context.Context) error {
	var errs []error
	for _, q := range m.queues {
		s, err := q.Stats(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		name := q.Name()
		m.depth.WithLabelValues(name).Set(float64(s.Depth))
		m.pending.WithLabelValues(name).Set(float64(s.Pending))
		m.lag.WithLabelValues(name).Set(float64(s.Lag))
		m.retry.WithLabelValues(name).Set(float64(s.Retry))
		m.dead.WithLabelValues(name).Set(float64(s.Dead))
		age := 0.0
		if !s.Oldest.IsZero() {
			age = max(m.now().Sub(s.Oldest).Seconds(), 0)
		}
		m.oldest.WithLabelValues(name).Set(age)
	}
	return errors.Join(errs...)
}

// Start refreshes the gauges now and then every Interval until Stop or
// until ctx ends. It follows startstop: a second Start, or a Start after
// Stop, returns ErrStarted.
func (m *Monitor) Start(ctx context.Context) error {
	return m.life.Start(ctx, startstop.Loop(func(ctx context.Context) {
		t := time.NewTicker(m.cfg.Interval)
		defer t.Stop()
		for {
			if err := m.Refresh(ctx); err != nil && ctx.Err() == nil {
				m.log.WarnContext(ctx, "read queue sizes", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}))
}

// Stop ends the refresh loop and waits for it. It is safe to call twice or
// before Start.
func (m *Monitor) Stop() { m.life.Stop() }

// Stopped is closed once Stop has finished.
func (m *Monitor) Stopped() <-chan struct{} { return m.life.Stopped() }
