package dispatcher_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/pushemu"
)

// TestStalePushHandedBackToThrottle: while the providers answer 503, a
// push retries until it would be stale (NUDGE_PUSH_TTL, scaled down from
// 1 h to 2 s), then goes to the dead-letter stream with cause max_age, is
// counted failed in its sync's progress, and is handed back to the
// throttle as a pending push of its device (the budget spent on the
// failed push defers it), so the device's next push carries it.
func TestStalePushHandedBackToThrottle(t *testing.T) {
	t.Setenv("NUDGE_PUSH_TTL", "2s")
	bu := setupBench(t)
	const n, feed = 4, "headlines"
	devicestest.Write(t, bu.rdb, 1, n, func(uint64) string { return feed })
	bu.emu.AddFault(pushemu.Fault{Provider: pushemu.APNs, Reason: "ServiceUnavailable"})
	bu.emu.AddFault(pushemu.Fault{Provider: pushemu.FCM, Reason: "UNAVAILABLE"})

	event, err := bu.pipe.Submitter.Submit(t.Context(), breaking(feed, nil))
	if err != nil {
		t.Fatal(err)
	}
	pr := bu.waitSettled(t, event, n)
	if pr.Failed != n || pr.Sent != 0 {
		t.Fatalf("progress: got %+v, want %d failed", pr, n)
	}
	dead, err := bu.pipe.Pushes.Dead(t.Context(), 0, 10)
	if err != nil || len(dead) != n {
		t.Fatalf("dead pushes: got %d (err %v), want %d", len(dead), err, n)
	}
	await.Poll{Timeout: 30 * time.Second}.Check(t, "the pending pushes handed back to the throttle", func() error {
		due, err := bu.pipe.Throttle.DueCount(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if due != n {
			return fmt.Errorf("got %d, want %d", due, n)
		}
		return nil
	})
	if got := bu.emu.Count(); got != 0 {
		t.Fatalf("pushes accepted during the outage: got %d, want 0", got)
	}
	for _, d := range dead {
		if d.Reason == "" || d.Deliveries < 1 {
			t.Fatalf("dead push: got %+v, want a reason and its deliveries", d)
		}
	}
}
