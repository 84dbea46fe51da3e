package throttle

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/redistest"
)

// BenchmarkDecide measures throttle decisions in batches: each iteration
// applies one new event to 32,768 devices (64 partitions x 512 per script
// call, pipelined). On the feed lane the first event defers every device and
// later ones coalesce into the pending push (the path of a burst of feed
// changes). On the breaking lane the first event queues a push per device
// and later ones defer or coalesce behind the min gap.
func BenchmarkDecide(b *testing.B) {
	const n = 64 * 512
	for _, lane := range []string{LaneFeed, LaneBreaking} {
		b.Run(lane, func(b *testing.B) {
			e := setup(b, redistest.Start(b), Config{})
			devs := make([]device, n)
			ids := make([]uint64, n)
			for i := range devs {
				devs[i] = device{id: uint64(i + 1), pl: []string{"ios", "android"}[i%2], bg: i%10 != 0}
				ids[i] = devs[i].id
			}
			e.addDevices(b, devs...)
			now := t0
			i := 0
			cpu0 := redisCPU(b, e.rdb)
			for b.Loop() {
				u := Update{Event: fmt.Sprint("e", i), Feeds: []string{"a"}, Lane: lane, Reason: "feed", Since: map[string]int64{"a": int64(i)}}
				if _, err := e.th.Decide(b.Context(), now, u, ids); err != nil {
					b.Fatalf("decide: %v", err)
				}
				now = now.Add(time.Second)
				i++
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
			b.ReportMetric(float64(n)*float64(b.N)/(redisCPU(b, e.rdb)-cpu0), "decisions/redis-cpu-s")
		})
	}
}

// redisCPU returns the CPU seconds the Redis main thread has used, to tell
// Redis's own cost from time spent waiting for a busy shared machine.
func redisCPU(b *testing.B, rdb redis.UniversalClient) float64 {
	b.Helper()
	info, err := rdb.Info(b.Context(), "cpu").Result()
	if err != nil {
		b.Fatalf("info cpu: %v", err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "used_cpu_user_main_thread" || k == "used_cpu_sys_main_thread") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return total
}
