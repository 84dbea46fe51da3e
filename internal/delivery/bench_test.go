package delivery_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// BenchmarkAlertFanout times an editor's breaking alert from the trigger
// (Publish, then Plan as the events worker does) to the phone: the
// emulator's acceptance time of each device's push, over a fleet of
// $NUDGE_BENCH_DEVICES devices (default 100,000; devicestest's mix, 50%
// iOS) on one feed, half of which spent their silent budget on a silent
// push just before, so the alert lane's bypass is on the measured path.
// It reports p50_s, p99_s and last_s of trigger → phone. The push worker
// runs with the queue's default worker settings in this process.
func BenchmarkAlertFanout(b *testing.B) {
	n := 100_000
	if s := os.Getenv("NUDGE_BENCH_DEVICES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 10 {
			b.Fatalf("NUDGE_BENCH_DEVICES=%q: want an integer of at least 10", s)
		}
		n = v
	}
	var p50, p99, last time.Duration
	for range b.N {
		b.StopTimer()
		pol := throttle.Policy{Limit: 1, Window: time.Hour, MinGap: 10 * time.Minute}
		bb := setupWith(b, throttle.Config{IOS: pol, Android: pol})
		devicestest.Write(b, bb.rdb, 1, uint64(n), func(id uint64) string {
			if id%2 == 0 {
				return "sport"
			}
			return "headlines"
		})
		// The even half spends its silent budget first.
		spend := bb.publishB(b, throttle.LaneBreaking, nil, "sport")
		bb.waitProgressB(b, spend, int64(n/2))
		ch, stop := bb.emu.Subscribe(n + 16)
		b.StartTimer()
		trigger := time.Now()
		id := bb.publishB(b, throttle.LaneBreaking, &fanout.Alert{Title: "Breaking", Body: "Bench"}, "headlines", "sport")
		lat := make([]time.Duration, 0, n)
		deadline := time.After(10 * time.Minute)
		for len(lat) < n {
			select {
			case d := <-ch:
				if d.Data["event"] == id {
					lat = append(lat, d.At.Sub(trigger))
				}
			case <-deadline:
				b.Fatalf("%d of %d alerts arrived in 10 minutes", len(lat), n)
			}
		}
		b.StopTimer()
		stop()
		slices.Sort(lat)
		p50, p99, last = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	}
	b.ReportMetric(p50.Seconds(), "p50_s")
	b.ReportMetric(p99.Seconds(), "p99_s")
	b.ReportMetric(last.Seconds(), "last_s")
}

func (b *bundle) publishB(tb testing.TB, lane string, alert *fanout.Alert, feeds ...string) string {
	tb.Helper()
	ctx := tb.Context()
	id, err := b.planner.NewID(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	ev := fanout.Event{ID: id, Feeds: feeds, Lane: lane, Reason: "breaking", Alert: alert, CreatedAt: time.Now()}
	if _, err := b.planner.Publish(ctx, ev); err != nil {
		tb.Fatal(err)
	}
	if _, err := b.planner.Plan(ctx, id); err != nil {
		tb.Fatal(err)
	}
	return id
}

func (b *bundle) waitProgressB(tb testing.TB, id string, sent int64) {
	tb.Helper()
	await.Poll{Timeout: 10 * time.Minute, Interval: 50 * time.Millisecond}.Check(tb, fmt.Sprintf("event %s: %d sent", id, sent), func() error {
		p, err := b.planner.Progress(tb.Context(), id)
		if err != nil {
			tb.Fatal(err)
		}
		if p.Sent < sent {
			return fmt.Errorf("progress %+v", p)
		}
		return nil
	})
}
