// Package stats counts what happens to silent pushes after the planner: how
// many were sent, pruned or failed, how many woke the app, and how long the
// wake took. It answers the question other push servers leave open: how many
// silent pushes actually woke the app.
//
// Counters go two ways. Each process exports Prometheus metrics for its own
// share; and every event is also added to a per-minute hash in Redis
// (keys.Stats), so the console can show fleet-wide figures for the last hour
// whatever the number of replicas. The hashes expire after Retention.
//
// Every count belongs to an app (apps.Default when the caller names none):
// each minute has one fleet-wide hash (keys.Stats) and one hash per app that
// saw anything that minute (keys.AppStats), written in the same round trip,
// so the console reads either view without summing many hashes. The
// Prometheus counters carry the app id as a label; the latency histogram
// does not, so that the series count grows with apps only by the counters'
// platform × lane × outcome (at most 60 + 36 series per app). Redis holds at
// most 1.4 KB per app and minute (BENCHMARKS "Stats per app").
package stats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/service"
)

// Retention is how long the per-minute hashes are kept.
const Retention = 2 * time.Hour

// Platforms and lanes that stats knows. Anything else is counted as "other",
// so a bad client cannot grow the label sets.
var (
	platforms = []string{"android", "ios"}
	lanes     = []string{"feed", "breaking", "alert"}
)

// Push outcomes that the delivery side records.
const (
	Sent      = "sent"
	Pruned    = "pruned"
	Failed    = "failed"
	Deferred  = "deferred"
	Coalesced = "coalesced"
	// Unresponsive counts silent pushes held back because their device is
	// unresponsive (devices.Unresponsive): budget saved.
	Unresponsive = "unresponsive"
)

// Receipt outcomes, as the app reports them.
var receiptOutcomes = []string{"synced", "no_data", "failed"}

// latencyBuckets are the upper bounds of the wake-latency histogram, in
// milliseconds, kept both in Prometheus and in the Redis minute hashes.
var latencyBuckets = []int64{
	100, 250, 500, 1000, 2000, 3000, 5000, 7500, 10_000, 15_000, 20_000,
	30_000, 45_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000,
}

// Recorder records push outcomes and wake receipts.
type Recorder struct {
	rdb    redis.UniversalClient
	now    func() time.Time
	logger *slog.Logger

	pushes   *prometheus.CounterVec
	receipts *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewRecorder returns a Recorder that writes to rdb, reads a's clock, logs
// to a's logger and registers its metrics on a's registerer.
func NewRecorder(a service.Archetype, rdb redis.UniversalClient) (*Recorder, error) {
	a = a.WithDefaults()
	r := &Recorder{
		rdb:    rdb,
		now:    a.Clock,
		logger: a.Logger,
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_pushes_total",
			Help: "Silent pushes by app, platform, lane and outcome (sent, pruned, failed, deferred, coalesced, unresponsive).",
		}, []string{"app", "platform", "lane", "outcome"}),
		receipts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_receipts_total",
			Help: "Wake receipts posted by apps, by app, platform, lane and outcome.",
		}, []string{"app", "platform", "lane", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nudge_wake_latency_seconds",
			Help:    "Time from a push being sent to the app waking and posting its receipt.",
			Buckets: bucketSeconds(),
		}, []string{"platform", "lane"}),
	}
	if err := a.Register(r.pushes, r.receipts, r.latency); err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	return r, nil
}

func bucketSeconds() []float64 {
	out := make([]float64, len(latencyBuckets))
	for i, ms := range latencyBuckets {
		out[i] = float64(ms) / 1000
	}
	return out
}

func known(v string, set []string) string {
	if slices.Contains(set, v) {
		return v
	}
	return "other"
}

// appOf is the app a count is for: apps.Default when none is named, and
// "other" for a string that cannot be an app id (so it can neither grow the
// label set with junk nor reach a Redis key).
func appOf(app string) string {
	switch {
	case app == "":
		return apps.Default
	case apps.ValidID(app):
		return app
	}
	return "other"
}

// Count is n pushes of one app, platform, lane and outcome. An empty App is
// apps.Default.
type Count struct {
	Platform, Lane, Outcome string
	N                       int
	App                     string
}

// Pushes records push outcomes, all in one round trip.
func (r *Recorder) Pushes(ctx context.Context, counts ...Count) error {
	fields := map[string]map[string]int64{}
	for _, c := range counts {
		if c.N <= 0 {
			continue
		}
		app, platform, lane := appOf(c.App), known(c.Platform, platforms), known(c.Lane, lanes)
		r.pushes.WithLabelValues(app, platform, lane, c.Outcome).Add(float64(c.N))
		if fields[app] == nil {
			fields[app] = map[string]int64{}
		}
		fields[app][platform+"|"+c.Outcome] += int64(c.N)
	}
	if len(fields) == 0 {
		return nil
	}
	return r.incr(ctx, fields)
}

// Receipt records one wake receipt of a device of app (empty:
// apps.Default). latency is the time from send to wake; a negative latency
// (clock skew on the phone) counts as zero.
func (r *Recorder) Receipt(ctx context.Context, app, platform, lane, outcome string, latency time.Duration) error {
	app, platform, lane = appOf(app), known(platform, platforms), known(lane, lanes)
	outcome = known(outcome, receiptOutcomes)
	latency = max(latency, 0)
	r.receipts.WithLabelValues(app, platform, lane, outcome).Inc()
	r.latency.WithLabelValues(platform, lane).Observe(latency.Seconds())
	ms := latency.Milliseconds()
	bucket := "inf"
	for _, b := range latencyBuckets {
		if ms <= b {
			bucket = strconv.FormatInt(b, 10)
			break
		}
	}
	return r.incr(ctx, map[string]map[string]int64{app: {
		platform + "|receipt":            1,
		platform + "|lat|" + bucket:      1,
		platform + "|receipt|" + outcome: 1,
	}})
}

// incr adds each app's fields to the minute's hash of that app and to the
// fleet-wide hash, in one round trip.
func (r *Recorder) incr(ctx context.Context, byApp map[string]map[string]int64) error {
	minute := r.now().Unix() / 60
	fleet := keys.Stats(minute)
	pipe := r.rdb.Pipeline()
	for app, fields := range byApp {
		key := keys.AppStats(app, minute)
		for f, n := range fields {
			pipe.HIncrBy(ctx, key, f, n)
			pipe.HIncrBy(ctx, fleet, f, n)
		}
		pipe.Expire(ctx, key, Retention)
	}
	pipe.Expire(ctx, fleet, Retention)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("record stats: %w", err)
	}
	return nil
}

// Platform is one platform's totals over a window.
type Platform struct {
	Sent      int64 `json:"sent"`
	Deferred  int64 `json:"deferred"`
	Coalesced int64 `json:"coalesced"`
	Pruned    int64 `json:"pruned"`
	Failed    int64 `json:"failed"`
	// Unresponsive: pushes held back because the device is unresponsive.
	Unresponsive int64 `json:"unresponsive"`
	Receipts     int64 `json:"receipts"`
	// WakeRate is receipts per push sent, nil when nothing was sent.
	WakeRate *float64 `json:"wake_rate"`
	// WakeLatencyP50 and WakeLatencyP99 are upper bounds from the histogram
	// buckets, in milliseconds; nil without receipts.
	WakeLatencyP50 *int64 `json:"wake_latency_p50_ms"`
	WakeLatencyP99 *int64 `json:"wake_latency_p99_ms"`

	latency map[string]int64
}

// Series holds per-minute totals over all platforms, oldest first.
type Series struct {
	Minutes []int64 `json:"minutes"` // unix seconds of each minute's start
	Sent    []int64 `json:"sent"`
	Wakes   []int64 `json:"wakes"`
}

// Summary is what the console shows for the last window.
type Summary struct {
	Platforms map[string]*Platform `json:"platforms"`
	Series    Series               `json:"series"`
}

// Summarize reads the fleet-wide minute hashes of the last window, the
// current minute included.
func (r *Recorder) Summarize(ctx context.Context, window time.Duration) (Summary, error) {
	return r.SummarizeApps(ctx, window, nil)
}

// SummarizeApps is Summarize over the sum of forApps' minute hashes; a nil
// forApps is the fleet (Summarize), an empty one an empty summary.
func (r *Recorder) SummarizeApps(ctx context.Context, window time.Duration, forApps []string) (Summary, error) {
	if window <= 0 || window > Retention {
		return Summary{}, errors.New("summarize: window must be within (0, stats.Retention]")
	}
	last := r.now().Unix() / 60
	n := int64(window / time.Minute)
	first := last - n + 1
	pipe := r.rdb.Pipeline()
	cmds := make([][]*redis.MapStringStringCmd, 0, n)
	for m := first; m <= last; m++ {
		var minute []*redis.MapStringStringCmd
		if forApps == nil {
			minute = append(minute, pipe.HGetAll(ctx, keys.Stats(m)))
		}
		for _, app := range forApps {
			if apps.ValidID(app) {
				minute = append(minute, pipe.HGetAll(ctx, keys.AppStats(app, m)))
			}
		}
		cmds = append(cmds, minute)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Summary{}, fmt.Errorf("summarize stats: %w", err)
	}
	s := Summary{Platforms: map[string]*Platform{}}
	for _, p := range platforms {
		s.Platforms[p] = &Platform{latency: map[string]int64{}}
	}
	for i, minute := range cmds {
		s.Series.Minutes = append(s.Series.Minutes, (first+int64(i))*60)
		var sent, wakes int64
		for f, v := range mergeHashes(minute) {
			n, _ := strconv.ParseInt(v, 10, 64)
			plat, what, _ := strings.Cut(f, "|")
			p := s.Platforms[plat]
			if p == nil {
				continue
			}
			switch what {
			case Sent:
				p.Sent += n
				sent += n
			case Deferred:
				p.Deferred += n
			case Coalesced:
				p.Coalesced += n
			case Pruned:
				p.Pruned += n
			case Failed:
				p.Failed += n
			case Unresponsive:
				p.Unresponsive += n
			case "receipt":
				p.Receipts += n
				wakes += n
			default:
				if b, ok := strings.CutPrefix(what, "lat|"); ok {
					p.latency[b] += n
				}
			}
		}
		s.Series.Sent = append(s.Series.Sent, sent)
		s.Series.Wakes = append(s.Series.Wakes, wakes)
	}
	for _, p := range s.Platforms {
		if p.Sent > 0 {
			rate := math.Min(float64(p.Receipts)/float64(p.Sent), 1)
			p.WakeRate = &rate
		}
		p.WakeLatencyP50 = quantile(p.latency, 0.50)
		p.WakeLatencyP99 = quantile(p.latency, 0.99)
	}
	return s, nil
}

// mergeHashes is the field-wise sum of one minute's hashes.
func mergeHashes(cmds []*redis.MapStringStringCmd) map[string]string {
	if len(cmds) == 1 {
		return cmds[0].Val()
	}
	sum := map[string]int64{}
	for _, c := range cmds {
		for f, v := range c.Val() {
			n, _ := strconv.ParseInt(v, 10, 64)
			sum[f] += n
		}
	}
	out := make(map[string]string, len(sum))
	for f, n := range sum {
		out[f] = strconv.FormatInt(n, 10)
	}
	return out
}

// quantile returns the upper bound of the bucket holding quantile q, or nil
// for an empty histogram. The overflow bucket reports the largest bound.
func quantile(counts map[string]int64, q float64) *int64 {
	var total int64
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		return nil
	}
	rank := int64(math.Ceil(q * float64(total)))
	var seen int64
	for _, b := range latencyBuckets {
		seen += counts[strconv.FormatInt(b, 10)]
		if seen >= rank {
			return &b
		}
	}
	top := latencyBuckets[len(latencyBuckets)-1]
	return &top
}
