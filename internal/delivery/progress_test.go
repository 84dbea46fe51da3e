package delivery_test

import (
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// TestProgressFollowedToTheEnd polls a breaking sync whose devices end in
// different ways: half are queued at once, half have a pending silent push
// behind a spent gap and are coalesced into it (sent later by the
// scheduler), one device's token is dead (pruned) and one opted out
// (skipped). Once planning is done, at every poll the parts (skipped,
// sent, pruned, failed, superseded, in flight) must add up to the
// checkpointed targeted count, with no more pushes ended than planned (a
// coalesced device counted twice would break both); the sync must end in
// done with every device sent or pruned and the time of its last push.
// The gap is 2 s (scaled down from minutes) so the coalesced half goes
// out quickly.
func TestProgressFollowedToTheEnd(t *testing.T) {
	t.Parallel()
	const n = 200
	pol := throttle.Policy{Limit: 10, Window: time.Minute, MinGap: 2 * time.Second, Debounce: 200 * time.Millisecond, MaxWait: time.Second}
	b := setupWith(t, throttle.Config{IOS: pol, Android: pol})
	ctx := t.Context()
	var devs []devices.Device
	for i := range n {
		feeds := []string{"headlines"}
		if i%2 == 0 {
			feeds = append(feeds, "sport")
		}
		reg := devices.Registration{Provider: "fcm", Token: fcmToken(5000 + i), Platform: "android", Feeds: feeds,
			Sync: devices.BackgroundSync{Enabled: i != 1}}
		if i%3 == 0 {
			reg.Provider, reg.Token, reg.Platform = "apns", apnsToken(5000+i), "ios"
		}
		d, _, _, err := b.reg.Register(ctx, reg)
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	b.emu.AddFault(pushemu.Fault{Provider: pushemu.APNs, Token: devs[3].Token, Reason: "BadDeviceToken"})
	// The sport followers get a push now and a pending one behind the gap.
	spend := b.publish(t, throttle.LaneBreaking, nil, "sport")
	b.waitProgress(t, spend, func(p fanout.Progress) bool { return p.State() == fanout.StateDone })
	b.publish(t, throttle.LaneFeed, nil, "sport")

	id, err := b.planner.NewID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev := fanout.Event{ID: id, Feeds: []string{"headlines"}, Lane: throttle.LaneBreaking, Reason: "breaking", Since: map[string]int64{"headlines": 9}}
	if _, err := b.planner.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	planned := make(chan error, 1)
	go func() {
		_, err := b.planner.Plan(ctx, id)
		planned <- err
	}()
	polls := 0
	p := b.waitProgress(t, id, func(p fanout.Progress) bool {
		polls++
		if p.Done && p.Ended() > p.Queued+p.Deferred+p.Coalesced {
			t.Fatalf("poll %d: %d pushes ended of %d planned: %+v", polls, p.Ended(), p.Queued+p.Deferred+p.Coalesced, p)
		}
		if p.Done && p.Accounted() != p.Targeted {
			t.Fatalf("poll %d: planned, but %d devices accounted of %d targeted: %+v", polls, p.Accounted(), p.Targeted, p)
		}
		return p.State() == fanout.StateDone
	})
	if err := <-planned; err != nil {
		t.Fatal(err)
	}
	if p.Targeted != n || p.Skipped != 1 || p.Pruned != 1 || p.Sent != n-2 || p.Coalesced == 0 {
		t.Fatalf("final progress: got %+v, want %d targeted: 1 skipped, 1 pruned, the rest sent, some coalesced", p, n)
	}
	var last time.Time
	for _, d := range devs {
		for _, del := range b.emu.Deliveries(d.Token) {
			// A coalesced push names its newest event: this sync.
			if del.Data["event"] == id && del.At.After(last) {
				last = del.At
			}
		}
	}
	if p.LastSentAt.IsZero() || p.LastSentAt.Before(last.Add(-time.Millisecond)) {
		t.Fatalf("last push at %v, but the emulator accepted one at %v", p.LastSentAt, last)
	}
	t.Logf("%d polls; final %+v", polls, p)
}

// TestDroppedPendingPushCountsSkipped follows a feed sync whose pushes are
// all deferred by the debounce, then, before they are due, opts one device
// out and deletes another. The throttle's scheduler drops their pending
// pushes and records them as skipped, so the sync still reaches done with
// targeted = skipped + sent (+ pruned, failed, superseded, in flight, all
// 0 here). Before the scheduler recorded drops, the sync stayed sending
// with two devices in flight for ever. The debounce is 1 s (scaled down
// from minutes) so that the opt-out lands well before the pushes are due.
func TestDroppedPendingPushCountsSkipped(t *testing.T) {
	t.Parallel()
	pol := throttle.Policy{Limit: 10, Window: time.Minute, MinGap: time.Millisecond, Debounce: time.Second, MaxWait: 2 * time.Second}
	b := setupWith(t, throttle.Config{IOS: pol, Android: pol})
	ctx := t.Context()
	var devs []devices.Device
	for i := range 4 {
		devs = append(devs, b.register(t, "fcm", "android", fcmToken(7000+i), true))
	}
	id := b.publish(t, throttle.LaneFeed, nil, "headlines")
	p, err := b.planner.Progress(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Done || p.Targeted != 4 || p.Deferred != 4 {
		t.Fatalf("after planning: got %+v, want 4 targeted, all deferred", p)
	}
	off := false
	if _, err := b.reg.Update(ctx, devs[0], devices.Patch{SyncEnabled: &off}); err != nil {
		t.Fatal(err)
	}
	if err := b.reg.Delete(ctx, devs[1].ID); err != nil {
		t.Fatal(err)
	}
	p = b.waitProgress(t, id, func(p fanout.Progress) bool { return p.State() == fanout.StateDone })
	sum := p.Skipped + p.Missing + p.Sent + p.Pruned + p.Failed + p.Superseded + p.InFlight()
	if p.Targeted != 4 || p.Accounted() != p.Targeted || sum != p.Targeted || p.Skipped != 2 || p.Dropped != 2 || p.Sent != 2 {
		t.Fatalf("final progress: got %+v (parts sum to %d), want 4 targeted = 2 skipped (dropped) + 2 sent", p, sum)
	}
	for i, d := range devs[:2] {
		if n := len(b.emu.Deliveries(d.Token)); n != 0 {
			t.Fatalf("device %d got %d pushes after it opted out or was deleted", i, n)
		}
	}
}
