package dispatcher_test

import (
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/schedule"
)

// TestScheduledSyncStartsWhenDue schedules a breaking sync a second ahead
// through the store the api uses; the running dispatcher's schedule
// runner starts it when due, and every subscriber gets its push, none
// before send_at.
func TestScheduledSyncStartsWhenDue(t *testing.T) {
	t.Parallel()
	bu := setupBench(t)
	const n, feed = 20, "headlines"
	devicestest.Write(t, bu.rdb, 1, n, func(uint64) string { return feed })
	id, err := bu.pipe.Planner.NewID(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ev := breaking(feed, nil)
	ev.ID = id
	sendAt := time.Now().Add(time.Second)
	if err := bu.pipe.Schedule.Add(t.Context(), schedule.Sync{Event: ev, SendAt: sendAt, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	await.Until(t, "the runner to start the scheduled sync", func() bool {
		_, err := bu.pipe.Planner.Event(t.Context(), id)
		return err == nil
	})
	pr := bu.waitSettled(t, id, n)
	if pr.Targeted != n || pr.Sent != n {
		t.Fatalf("progress: got %+v, want %d targeted and sent", pr, n)
	}
	for dev := uint64(1); dev <= n; dev++ {
		ds := bu.emu.Deliveries(devicestest.Token(dev))
		if len(ds) != 1 || ds[0].Data["event"] != id {
			t.Fatalf("device %d: got %d pushes (%v), want one of sync %s", dev, len(ds), ds, id)
		}
		if ds[0].At.Before(sendAt) {
			t.Fatalf("device %d: pushed at %v, before send_at %v", dev, ds[0].At, sendAt)
		}
	}
	if l, err := bu.pipe.Schedule.List(t.Context()); err != nil || len(l) != 0 {
		t.Fatalf("schedule after the start: %v, %v; want empty", l, err)
	}
}
