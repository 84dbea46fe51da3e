package throttle

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
)

// BenchmarkDecide measures throttle decisions in batches: each iteration
// applies one new event to 32,768 devices (64 partitions x 512 per script
// call, pipelined). On the feed lane the first event defers every device and
// later ones coalesce into the pending push (the path of a burst of feed
// changes). On the breaking lane the first event queues a push per device
// and later ones defer or coalesce behind the min gap. In both, devices that
// got the same events share one state, so the script's per-call memo of
// decisions mostly hits. feed-distinct first applies 12 events to random
// halves of the devices, untimed, so that nearly every device has a state
// of its own and the memo mostly misses: the cost of a fan-out to devices
// with diverse histories. feed-3apps is feed with the devices spread over
// three apps, one of which overrides the policy: each batch mixes apps. It
// runs the production script on Redis's clock:
// an iteration takes well under the 2 minute debounce and the min gaps.
func BenchmarkDecide(b *testing.B) {
	const n = 64 * 512
	for _, bc := range []struct {
		name, lane string
		distinct   bool
	}{{"feed", LaneFeed, false}, {"breaking", LaneBreaking, false}, {"feed-distinct", LaneFeed, true}, {"feed-3apps", LaneFeed, false}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := Config{}
			if bc.name == "feed-3apps" {
				cfg.Apps = twoPolicies
			}
			e := setup(b, redistest.Start(b), cfg)
			e.th.decide = decideScript
			devs := make([]device, n)
			ids := make([]uint64, n)
			for i := range devs {
				devs[i] = device{id: uint64(i + 1), pl: []string{"ios", "android"}[i%2], bg: i%10 != 0}
				ids[i] = devs[i].id
			}
			e.addDevices(b, devs...)
			if cfg.Apps != nil {
				pipe := e.rdb.Pipeline()
				for _, d := range devs {
					if app := []string{"", "a", "b"}[d.id%3]; app != "" {
						pipe.HSet(b.Context(), devices.Key(d.id), "ap", app)
					}
				}
				if _, err := pipe.Exec(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
			if bc.distinct {
				rng := rand.New(rand.NewPCG(5, 6))
				for w := range 12 {
					var half []uint64
					for _, id := range ids {
						if rng.IntN(2) == 0 {
							half = append(half, id)
						}
					}
					u := Update{Event: fmt.Sprint("w", w), Feeds: []string{"a"}, Lane: LaneFeed, Reason: "feed", Since: map[string]int64{"a": int64(w)}}
					if _, err := e.th.Decide(b.Context(), u, half); err != nil {
						b.Fatalf("decide: %v", err)
					}
				}
			}
			i := 0
			cpu0 := redistest.MainThreadCPU(b, e.rdb)
			for b.Loop() {
				u := Update{Event: fmt.Sprint("e", i), Feeds: []string{"a"}, Lane: bc.lane, Reason: "feed", Since: map[string]int64{"a": int64(i)}}
				if _, err := e.th.Decide(b.Context(), u, ids); err != nil {
					b.Fatalf("decide: %v", err)
				}
				i++
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
			b.ReportMetric(float64(n)*float64(b.N)/(redistest.MainThreadCPU(b, e.rdb)-cpu0), "decisions/redis-cpu-s")
		})
	}
}

// BenchmarkStep measures the scheduler: each iteration defers one feed
// update to 32,768 devices (64 partitions x 512) and then moves all of them
// into the push streams with one Step, 256 devices per partition per script
// call. Only the Step is timed.
func BenchmarkStep(b *testing.B) {
	const n = 64 * 512
	e := setup(b, redistest.Start(b), Config{})
	devs := make([]device, n)
	ids := make([]uint64, n)
	for i := range devs {
		devs[i] = device{id: uint64(i + 1), pl: []string{"ios", "android"}[i%2], bg: true}
		ids[i] = devs[i].id
	}
	e.addDevices(b, devs...)
	now := t0
	i := 0
	var cpu float64
	for b.Loop() {
		b.StopTimer()
		u := Update{Event: fmt.Sprint("e", i), Feeds: []string{"a"}, Lane: LaneFeed, Reason: "feed", Since: map[string]int64{"a": int64(i)}}
		if _, err := e.decideAt(b, now, u, ids); err != nil {
			b.Fatalf("decide: %v", err)
		}
		now = now.Add(time.Hour) // past the debounce and any limit
		cpu0 := redistest.MainThreadCPU(b, e.rdb)
		b.StartTimer()
		m, err := e.stepAt(b, now, 256)
		if err != nil || m.Queued != n {
			b.Fatalf("step: got %+v, %v, want %d queued", m, err, n)
		}
		b.StopTimer()
		cpu += redistest.MainThreadCPU(b, e.rdb) - cpu0
		b.StartTimer()
		i++
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "moves/s")
	b.ReportMetric(float64(n)*float64(b.N)/cpu, "moves/redis-cpu-s")
}

func (e *env) decideAt(b *testing.B, now time.Time, u Update, ids []uint64) (Counts, error) {
	e.setNow(b, now)
	return e.th.Decide(b.Context(), u, ids)
}

func (e *env) stepAt(b *testing.B, now time.Time, limit int) (Moves, error) {
	e.setNow(b, now)
	return e.th.Step(b.Context(), limit)
}

// BenchmarkAdmit measures the push worker's check just before sending:
// each iteration admits 20,480 devices written as the registry writes
// them (devicestest: 40 % APNs, 60 % FCM tokens) in batches of 400 spread
// over the partitions, as a push worker's batches are, each with a new
// collapse id, so every attempt reads its device, is admitted and counted.
// The devices' throttle state is there first (one breaking decision each,
// as the planner leaves it before their pushes are sent); the phone logs
// are dropped between iterations (untimed), so every attempt is a
// device's first push. It reports Redis's main-thread CPU per attempt.
func BenchmarkAdmit(b *testing.B) {
	const n, batch = 20_480, 400
	rdb := redistest.Start(b)
	e := setup(b, rdb, Config{})
	devicestest.Write(b, rdb, 1, n, func(uint64) string { return "a" })
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	u := Update{Event: "e", Feeds: []string{"a"}, Lane: LaneBreaking, Reason: "breaking", Since: map[string]int64{"a": 1}}
	if _, err := e.th.Decide(b.Context(), u, ids); err != nil {
		b.Fatal(err)
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	opt := AdmitOptions{Unresponsive: devices.Unresponsive{After: 1 << 30}, Ahead: 2 * time.Second}
	var redisCPU float64
	i := 0
	for b.Loop() {
		b.StopTimer()
		pipe := rdb.Pipeline()
		for _, id := range ids {
			pipe.HDel(b.Context(), keys.Throttle(keys.Partition(id)), "p"+strconv.FormatUint(id, 10))
		}
		if _, err := pipe.Exec(b.Context()); err != nil {
			b.Fatal(err)
		}
		cpu0 := redistest.MainThreadCPU(b, rdb)
		b.StartTimer()
		for from := 0; from < n; from += batch {
			at := make([]Attempt, 0, batch)
			for _, id := range ids[from:min(from+batch, n)] {
				at = append(at, Attempt{Device: id, Collapse: fmt.Sprintf("ev%d", i)})
			}
			opt.Now = time.Now()
			adm, err := e.th.Admit(b.Context(), at, opt)
			if err != nil {
				b.Fatal(err)
			}
			for k, a := range adm {
				if !a.Admitted() || a.Target.Token != devicestest.Token(at[k].Device) {
					b.Fatalf("attempt %+v: %+v, want admitted with its token", at[k], a)
				}
			}
		}
		b.StopTimer()
		redisCPU += redistest.MainThreadCPU(b, rdb) - cpu0
		b.StartTimer()
		i++
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "attempts/s")
	b.ReportMetric(redisCPU*1e6/(float64(n)*float64(b.N)), "redis_µs/attempt")
}
