package fanout

import (
	"fmt"
	"testing"

	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// BenchmarkPlan1M measures planning one event to 1M subscribed devices,
// from Plan to every device queued or deferred. Devices carry only the
// fields the throttle reads. Each iteration plans a new event: the first
// defers (feed lane) or queues (breaking lane) every device, later ones
// coalesce or defer behind the min gap. Run with -benchtime=1x for the
// cold case.
func BenchmarkPlan1M(b *testing.B) {
	const n = 1_000_000
	for _, lane := range []string{throttle.LaneFeed, throttle.LaneBreaking} {
		b.Run(lane, func(b *testing.B) {
			bu := setup(b, redistest.Start(b), Config{}, nil)
			bu.devices(b, 1, n, 0)
			bu.subscribe(b, "a", 1, n)
			i := 0
			cpu0 := redistest.MainThreadCPU(b, bu.rdb)
			for b.Loop() {
				ev := Event{ID: fmt.Sprint("e", i), Feeds: []string{"a"}, Lane: lane, Reason: "feed"}
				if lane == throttle.LaneBreaking {
					ev.Reason = "breaking"
				}
				bu.publish(b, ev)
				pr := bu.plan(b, ev.ID)
				if pr.Targeted != n || pr.Queued+pr.Deferred+pr.Coalesced != n {
					b.Fatalf("progress: got %+v, want %d devices planned", pr, n)
				}
				i++
			}
			b.ReportMetric((redistest.MainThreadCPU(b, bu.rdb)-cpu0)/float64(b.N), "redis-cpu-s/fanout")
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/fanout")
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "devices/s")
		})
	}
}
