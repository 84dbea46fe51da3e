package dispatcher_test

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/dispatcher"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/metrictest"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// benchFleet is the fleet size of BenchmarkBreakingFanout:
// $NUDGE_BENCH_DEVICES, default 100,000.
func benchFleet(b *testing.B) int {
	s := os.Getenv("NUDGE_BENCH_DEVICES")
	if s == "" {
		return 100_000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 10 {
		b.Fatalf("NUDGE_BENCH_DEVICES=%q: want an integer of at least 10", s)
	}
	return n
}

// benchBundle is a running dispatcher on a private redis-server, sending to
// an in-process emulator.
type benchBundle struct {
	rdb   *redis.Client
	emu   *pushemu.Emulator
	creds pushemu.Credentials
	cfg   dispatcher.Config
	pipe  *dispatcher.Stores
	reg   *prometheus.Registry
}

// setupBench starts Redis, the emulator and a dispatcher configured from
// the binary's settings: the emulator's credentials, every other NUDGE_*
// variable from the environment (NUDGE_PUSH_WORKERS, NUDGE_PUSH_BATCH,
// NUDGE_APNS_CONCURRENCY, NUDGE_FCM_CONCURRENCY…) or its default.
func setupBench(b testing.TB) *benchBundle {
	b.Helper()
	// Keep one delivery per token: the counts stay exact and 100k
	// recorded bodies do not grow the heap the benchmark runs in.
	return setupBenchWith(b, pushemu.Config{KeepPerToken: 1}, nil)
}

// setupBenchWith is setupBench with an emulator configuration and a hook
// that may change the dispatcher's configuration and dependencies.
func setupBenchWith(b testing.TB, ecfg pushemu.Config, mod func(emu *pushemu.Emulator, creds pushemu.Credentials, cfg *dispatcher.Config, d *dispatcher.Deps)) *benchBundle {
	b.Helper()
	rdb := redistest.Start(b)
	emu, creds := pushemutest.Start(b, service.Archetype{}, ecfg)
	env := map[string]string{}
	for _, kv := range creds.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
	cfg, err := dispatcher.ConfigFromEnv(getenv)
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	deps := dispatcher.Deps{Redis: rdb}
	if mod != nil {
		mod(emu, creds, &cfg, &deps)
	}
	d, err := dispatcher.New(b.Context(), service.Archetype{Logger: log, Registerer: reg}, cfg, deps)
	if err != nil {
		b.Fatal(err)
	}
	if err := d.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(d.Stop)
	return &benchBundle{rdb: rdb, emu: emu, creds: creds, cfg: cfg, pipe: d.Stores(), reg: reg}
}

// checkDevices reads a few written devices back through the registry, so a
// drift between devicestest.Write and the registry's layout fails the benchmark.
func (bu *benchBundle) checkDevices(b testing.TB, feed string, ids ...uint64) {
	b.Helper()
	for _, id := range ids {
		d, err := bu.pipe.Devices.Get(b.Context(), id)
		if err != nil {
			b.Fatalf("registry cannot read written device %d: %v", id, err)
		}
		pv, pl := devicestest.Kind(id)
		if d.Token != devicestest.Token(id) || d.Provider != pv || d.Platform != pl || !slices.Equal(d.Feeds, []string{feed}) || !d.Sync.Enabled {
			b.Fatalf("device %d read back: got %+v, want token %s, %s/%s, feed %s, sync on", id, d, devicestest.Token(id), pv, pl, feed)
		}
	}
}

// resetThrottle drops every device's throttle state and pending push, so
// the next breaking event finds a fresh fleet (the first push of the day).
func (bu *benchBundle) resetThrottle(b *testing.B) {
	b.Helper()
	ks := make([]string, 0, 2*keys.Partitions)
	for p := range keys.Partitions {
		ks = append(ks, keys.Throttle(p), keys.Due(p))
	}
	if err := bu.rdb.Del(b.Context(), ks...).Err(); err != nil {
		b.Fatalf("reset throttle state: %v", err)
	}
}

// breaking is the event an editor's POST /v1/syncs submits.
func breaking(feed string, alert *fanout.Alert) fanout.Event {
	return fanout.Event{
		Feeds: []string{feed}, Lane: throttle.LaneBreaking, Reason: "breaking",
		Since: map[string]int64{feed: 120}, Until: map[string]int64{feed: 125}, Alert: alert,
	}
}

// waitSettled polls an event's progress until its fan-out is planned and
// every targeted push has an outcome, and returns that progress.
func (bu *benchBundle) waitSettled(b testing.TB, id string, want int64) fanout.Progress {
	b.Helper()
	var pr fanout.Progress
	await.Poll{Timeout: 5 * time.Minute}.Check(b, "event "+id+" to settle", func() error {
		var err error
		if pr, err = bu.pipe.Planner.Progress(b.Context(), id); err != nil {
			b.Fatal(err)
		}
		if !pr.Done || pr.Sent+pr.Pruned+pr.Failed < want {
			return fmt.Errorf("progress %+v", pr)
		}
		return nil
	})
	return pr
}

// newBare is the ceiling: the bare SDK calls, with the dispatcher's
// provider concurrency, on prebuilt pushes to the same emulator.
func newBare(b testing.TB, bu *benchBundle) *pushemutest.Bare {
	b.Helper()
	return pushemutest.NewBare(b, bu.creds, bu.cfg.Push.APNSConcurrency, bu.cfg.Push.FCMConcurrency)
}

// buildBare prebuilds the silent breaking push of each device from..to,
// with the payload fields and headers the pipeline sends.
func buildBare(b testing.TB, bare *pushemutest.Bare, from, to uint64, feed, event string) pushemutest.BarePushes {
	b.Helper()
	bp, err := bare.Build(from, to, feed, 120, 125, event)
	if err != nil {
		b.Fatal(err)
	}
	return bp
}

// loadAvg is the 1-minute load average of the machine, 0 if unknown.
func loadAvg() float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(raw))[0], 64)
	return f
}

// metric sums the dispatcher's samples of a metric family
// (metrictest.Sum).
func (bu *benchBundle) metric(b testing.TB, name string, match map[string]string) (sum float64, count uint64) {
	b.Helper()
	return metrictest.Sum(b, bu.reg, name, match)
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBreakingFanout fans one breaking event out to a fleet of
// NUDGE_BENCH_DEVICES devices (default 100,000: 40 % iOS on APNs, 10 % iOS
// on FCM, 50 % Android on FCM) through the whole dispatcher: Submit, the
// events worker, the planner and the throttle, the push queue, the push
// workers and the provider SDKs, until the emulator has accepted every
// push. In the same op the bare SDK loop sends the same pushes to the same
// emulator, half before and half after the pipeline so both see the same
// machine load; ratio = pipeline pushes/s ÷ bare pushes/s (the bar is
// 0.7). Each op starts from a fresh throttle state.
func BenchmarkBreakingFanout(b *testing.B) {
	n := uint64(benchFleet(b))
	bu := setupBench(b)
	const feed, warmFeed = "headlines", "warmup"
	const warm = 256
	devicestest.Write(b, bu.rdb, 1, n, func(uint64) string { return feed })
	devicestest.Write(b, bu.rdb, n+1, n+warm, func(uint64) string { return warmFeed })
	bu.checkDevices(b, feed, 1, 4, 5, n)
	bare := newBare(b, bu)

	// Warm both paths: TLS connections, the APNs JWT, the OAuth token, the
	// scripts in Redis.
	ctx := b.Context()
	if err := bare.Send(ctx, buildBare(b, bare, n+1, n+warm, warmFeed, "warm")); err != nil {
		b.Fatal(err)
	}
	base := bu.emu.Count()
	id, err := bu.pipe.Submitter.Submit(ctx, breaking(warmFeed, nil))
	if err != nil {
		b.Fatal(err)
	}
	bu.waitSettled(b, id, warm)
	if got := bu.emu.Count() - base; got != warm {
		b.Fatalf("warm-up pushes at the emulator: got %d, want %d", got, warm)
	}
	halves := [2]pushemutest.BarePushes{
		buildBare(b, bare, 1, n/2, feed, "bare"),
		buildBare(b, bare, n/2+1, n, feed, "bare"),
	}

	var pipeWall, bareWall, planWall, pipeCPU, bareCPU time.Duration
	var redisSec float64
	ops := 0
	load0 := loadAvg()
	for b.Loop() {
		bu.resetThrottle(b)
		t0, c0 := time.Now(), processCPU()
		if err := bare.Send(ctx, halves[0]); err != nil {
			b.Fatal(err)
		}
		bareWall += time.Since(t0)
		bareCPU += processCPU() - c0

		base := bu.emu.Count()
		if commandStats {
			if err := bu.rdb.ConfigResetStat(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			startSlowLog(b, bu.rdb)
		}
		cpu0 := redistest.MainThreadCPU(b, bu.rdb)
		c0 = processCPU()
		start := time.Now()
		id, err := bu.pipe.Submitter.Submit(ctx, breaking(feed, nil))
		if err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err = bu.emu.WaitCount(wctx, base+int(n))
		cancel()
		if err != nil {
			b.Fatalf("pipeline: %d of %d pushes at the emulator: %v", bu.emu.Count()-base, n, err)
		}
		pipeWall += time.Since(start)
		pipeCPU += processCPU() - c0
		redisSec += redistest.MainThreadCPU(b, bu.rdb) - cpu0
		if commandStats {
			logCommandStats(b, bu.rdb)
			logSlowLog(b, bu.rdb, int(n))
		}
		pr := bu.waitSettled(b, id, int64(n))
		if pr.Targeted != int64(n) || pr.Queued != int64(n) || pr.Sent != int64(n) {
			b.Fatalf("event %s: got %+v, want %d targeted, queued and sent", id, pr, n)
		}
		planWall += pr.FinishedAt.Sub(start)

		t0, c0 = time.Now(), processCPU()
		if err := bare.Send(ctx, halves[1]); err != nil {
			b.Fatal(err)
		}
		bareWall += time.Since(t0)
		bareCPU += processCPU() - c0
		ops++
	}
	total := float64(n) * float64(ops)
	pps, bps := total/pipeWall.Seconds(), total/bareWall.Seconds()
	b.ReportMetric(pps, "pushes/s")
	b.ReportMetric(bps, "bare_pushes/s")
	b.ReportMetric(pps/bps, "ratio")
	b.ReportMetric(planWall.Seconds()/float64(ops), "plan_s/op")
	b.ReportMetric(pipeWall.Seconds()/float64(ops), "fanout_s/op")
	b.ReportMetric(redisSec/float64(ops), "redis_cpu_s/op")
	// CPU per push: this process (dispatcher, SDKs and the emulator's
	// share, the same for both sides) plus, for the pipeline, Redis.
	b.ReportMetric((pipeCPU.Seconds()+redisSec)*1e6/total, "cpu_µs/push")
	b.ReportMetric(bareCPU.Seconds()*1e6/total, "bare_cpu_µs/push")
	b.ReportMetric((load0+loadAvg())/2, "load1")
	// Where the push workers spend their time, over the whole run.
	hs, hn := bu.metric(b, "nudge_queue_handler_duration_seconds", map[string]string{"queue": keys.PushQueue})
	jobs, _ := bu.metric(b, "nudge_queue_jobs_handled_total", map[string]string{"queue": keys.PushQueue})
	fs, fn := bu.metric(b, "nudge_push_send_seconds", map[string]string{"provider": "fcm"})
	if hn > 0 && fn > 0 {
		b.ReportMetric(hs/float64(hn)*1000, "handler_ms")
		b.ReportMetric(jobs/float64(hn), "jobs/handler")
		b.ReportMetric(fs/float64(fn)*1000, "sendeach_ms")
	}
}

// BenchmarkTriggerLatency measures, per editor trigger, the time from
// Submitter.Submit of a breaking event with an alert (what POST /v1/syncs
// does) to the first push of that event at the emulator, and to the last
// of its fleet. Each trigger goes to a fresh feed with its own four devices
// (iOS on APNs, iOS on FCM, two Android), so every trigger is the first
// push of those devices and the throttle lets it through at once, as it
// does for a breaking event to a rested fleet. Triggers run one at a time.
func BenchmarkTriggerLatency(b *testing.B) {
	bu := setupBench(b)
	ctx := b.Context()
	deliveries, unsubscribe := bu.emu.Subscribe(1024)
	defer unsubscribe()
	alert := &fanout.Alert{Title: "Breaking", Body: "Something happened"}

	// trigger submits one event to a fresh group of four devices and
	// returns the latency of its first and its last push.
	const group = 10
	next := uint64(1)
	trigger := func(i int) (first, last time.Duration) {
		feed := "t" + strconv.Itoa(i)
		from := next
		// Ids of one group: provider mix 40/10/50 by id%10; pick one APNs,
		// one iOS FCM and two Android FCM ids out of ten.
		ids := []uint64{from, from + 4, from + 5, from + 6}
		next += group
		devicestest.Write(b, bu.rdb, from, from+group-1, func(id uint64) string {
			if slices.Contains(ids, id) {
				return feed
			}
			return "idle"
		})
		start := time.Now()
		id, err := bu.pipe.Submitter.Submit(ctx, breaking(feed, alert))
		if err != nil {
			b.Fatal(err)
		}
		timeout := time.NewTimer(30 * time.Second)
		defer timeout.Stop()
		for got := 0; got < len(ids); {
			select {
			case d, ok := <-deliveries:
				if !ok {
					b.Fatal("emulator stopped")
				}
				if d.Data["event"] != id {
					continue
				}
				if got == 0 {
					first = d.At.Sub(start)
				}
				last = d.At.Sub(start)
				got++
			case <-timeout.C:
				b.Fatalf("trigger %d (event %s): %d of %d pushes within 30s", i, id, got, len(ids))
			}
		}
		return first, last
	}
	for i := range 3 { // warm connections, tokens and scripts
		trigger(-1 - i)
	}

	var firsts, lasts []time.Duration
	load0 := loadAvg()
	i := 0
	for b.Loop() {
		f, l := trigger(i)
		firsts = append(firsts, f)
		lasts = append(lasts, l)
		i++
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(quantile(firsts, 0.50)), "p50_ms")
	b.ReportMetric(ms(quantile(firsts, 0.99)), "p99_ms")
	b.ReportMetric(ms(quantile(lasts, 0.50)), "all_p50_ms")
	b.ReportMetric(ms(quantile(lasts, 0.99)), "all_p99_ms")
	b.ReportMetric((load0+loadAvg())/2, "load1")
}

// quantile returns the q-quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[max(int(math.Ceil(q*float64(len(s))))-1, 0)]
}

// commandStats ($NUDGE_BENCH_COMMANDSTATS=1) makes BenchmarkBreakingFanout
// log Redis's per-command CPU during each pipeline fan-out, to see where
// Redis's time goes, and the same split per script from Redis's slow log
// (commandstats lumps every script into EVALSHA).
var commandStats = os.Getenv("NUDGE_BENCH_COMMANDSTATS") == "1"

// logCommandStats logs the commands that took Redis's time since the last
// CONFIG RESETSTAT, busiest first: calls, total and per-call µs.
func logCommandStats(b *testing.B, rdb *redis.Client) {
	b.Helper()
	info, err := rdb.Info(b.Context(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	type stat struct {
		name        string
		calls, usec int64
	}
	var stats []stat
	for line := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		st := stat{name: strings.TrimPrefix(name, "cmdstat_")}
		for kv := range strings.SplitSeq(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				st.calls = n
			case "usec":
				st.usec = n
			}
		}
		stats = append(stats, st)
	}
	slices.SortFunc(stats, func(a, c stat) int { return int(c.usec - a.usec) })
	for _, st := range stats[:min(len(stats), 12)] {
		b.Logf("redis %-22s calls %8d  usec %9d  per call %.1f", st.name, st.calls, st.usec, float64(st.usec)/float64(max(st.calls, 1)))
	}
}

// startSlowLog makes Redis log every command, so logSlowLog can split
// EVALSHA by script. Logging every command costs Redis some time of its
// own: compare scripts within one run, not with runs without it.
func startSlowLog(b *testing.B, rdb *redis.Client) {
	b.Helper()
	ctx := b.Context()
	for _, kv := range [][2]string{{"slowlog-log-slower-than", "0"}, {"slowlog-max-len", "1000000"}} {
		if err := rdb.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			b.Fatal(err)
		}
	}
	if err := rdb.Do(ctx, "SLOWLOG", "RESET").Err(); err != nil {
		b.Fatal(err)
	}
}

// logSlowLog sums the slow log by command and first key's prefix, a
// script by its sha's first 8 digits (a script's time includes the
// commands it calls, which are listed too), and logs each in µs per push
// of n.
func logSlowLog(b *testing.B, rdb *redis.Client, n int) {
	b.Helper()
	ctx := b.Context()
	logs, err := rdb.SlowLogGet(ctx, -1).Result()
	if err != nil {
		b.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "slowlog-log-slower-than", "10000").Err(); err != nil {
		b.Fatal(err)
	}
	prefix := func(k string) string {
		if i := strings.IndexAny(k, "{:"); i > 0 {
			return k[:i]
		}
		return k
	}
	sums := map[string]time.Duration{}
	calls := map[string]int{}
	for _, l := range logs {
		name := strings.ToLower(l.Args[0])
		switch {
		case name == "evalsha" && len(l.Args) > 3 && len(l.Args[1]) >= 8:
			name += " " + l.Args[1][:8] + " " + prefix(l.Args[3])
		case len(l.Args) > 1:
			name += " " + prefix(l.Args[1])
		}
		sums[name] += l.Duration
		calls[name]++
	}
	names := slices.Collect(maps.Keys(sums))
	slices.SortFunc(names, func(x, y string) int { return cmp.Compare(sums[y], sums[x]) })
	for _, k := range names[:min(len(names), 16)] {
		b.Logf("slowlog %-30s calls %7d  ms %8.1f  µs/push %.2f", k, calls[k], sums[k].Seconds()*1000, sums[k].Seconds()*1e6/float64(n))
	}
}
