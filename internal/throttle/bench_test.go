package throttle

import (
	"fmt"
	"testing"
	"time"

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
			for b.Loop() {
				u := Update{Event: fmt.Sprint("e", i), Feeds: []string{"a"}, Lane: lane, Reason: "feed", Since: map[string]int64{"a": int64(i)}}
				if _, err := e.th.Decide(b.Context(), now, u, ids); err != nil {
					b.Fatalf("decide: %v", err)
				}
				now = now.Add(time.Second)
				i++
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
}
