package delivery_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/delivery"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/events"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// unresponsiveBundle is the push pipeline with a lax budget (every sync
// goes out at once), the unresponsive policy u and a push worker clock
// that the test moves forward.
func unresponsiveBundle(t *testing.T, u devices.Unresponsive) (*bundle, func(time.Duration)) {
	t.Helper()
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	pol := throttle.Policy{Limit: 1000, Window: time.Second, MinGap: time.Millisecond, Debounce: time.Millisecond, MaxWait: time.Millisecond}
	b := setupFull(t, throttle.Config{IOS: pol, Android: pol}, delivery.Config{Unresponsive: u}, clock, nil)
	return b, func(d time.Duration) { offset.Add(int64(d)) }
}

// sync sends a breaking sync (with alert, if not nil) and waits until it
// is done; targeted must be the sum of the outcomes.
func (b *bundle) syncDone(t *testing.T, alert *fanout.Alert) fanout.Progress {
	t.Helper()
	id := b.breaking(t, alert)
	p := b.waitProgress(t, id, func(p fanout.Progress) bool { return p.State() == events.StateDone })
	if sum := p.Skipped + p.Missing + p.Sent + p.Pruned + p.Failed + p.Superseded + p.Unresponsive; p.Targeted != sum {
		t.Fatalf("sync %s done with targeted %d, outcomes %d: %+v", id, p.Targeted, sum, p)
	}
	return p
}

// TestUnresponsiveDeviceBacksOffAndResumes: an iOS device that never
// answers gets After pushes, then nothing until its probe time (1h, then
// 2h after each probe, capped at 3h), while an Android device whose app
// answers every push gets them all. A visible alert is not held back. A
// receipt resumes the device at once. The pushes held back are counted in
// the syncs' progress and in stats, and every sync ends done.
func TestUnresponsiveDeviceBacksOffAndResumes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	u := devices.Unresponsive{After: 3, Base: time.Hour, Cap: 3 * time.Hour}
	b, advance := unresponsiveBundle(t, u)
	ios := b.register(t, "apns", "ios", apnsToken(1), true)
	android := b.register(t, "fcm", "android", fcmToken(2), true)

	wantSent, held := 0, 0
	step := func(name string, alert *fanout.Alert, iosSent bool, un int) {
		t.Helper()
		p := b.syncDone(t, alert)
		want := fanout.Progress{Sent: 2}
		if iosSent {
			wantSent++
		} else {
			held++
			want = fanout.Progress{Sent: 1, Unresponsive: 1}
		}
		if p.Sent != want.Sent || p.Unresponsive != want.Unresponsive {
			t.Fatalf("%s: progress %+v, want sent %d unresponsive %d", name, p, want.Sent, want.Unresponsive)
		}
		if got := b.emu.CountToken(ios.Token); got != wantSent {
			t.Fatalf("%s: the iOS device got %d pushes, want %d", name, got, wantSent)
		}
		if got, err := b.reg.Pushes(ctx, ios.ID); err != nil || got != un {
			t.Fatalf("%s: iOS un = %d (%v), want %d", name, got, err, un)
		}
		// The Android app answers every push.
		if _, err := b.reg.Resume(ctx, android.ID); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		step("push "+string(rune('1'+i)), nil, true, i+1)
	}
	counts, err := b.reg.UnresponsiveCounts(ctx)
	if err != nil || counts["ios"] != 1 || counts["android"] != 0 {
		t.Fatalf("unresponsive counts %v (%v), want ios 1, android 0", counts, err)
	}
	step("held", nil, false, 3)
	step("held again", nil, false, 3)
	step("alert", &fanout.Alert{Title: "Breaking", Body: "Storm"}, true, 3) // visible: not held, not counted
	advance(time.Hour + time.Minute)
	step("first probe", nil, true, 4)
	step("after the probe", nil, false, 4)
	advance(time.Hour + 50*time.Minute)
	step("second probe not due (2h)", nil, false, 4)
	advance(15 * time.Minute)
	step("second probe", nil, true, 5)
	advance(3*time.Hour - 10*time.Minute)
	step("third probe not due (cap 3h)", nil, false, 5)
	advance(15 * time.Minute)
	step("third probe at the cap", nil, true, 6)

	// A receipt resumes it: the next sync is sent at once.
	if was, err := b.reg.Resume(ctx, ios.ID); err != nil || !was {
		t.Fatalf("resume: %v, %v; want true", was, err)
	}
	step("resumed", nil, true, 1)

	sum, err := b.stats.Summarize(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := sum.Platforms["ios"].Unresponsive; got != int64(held) {
		t.Fatalf("stats: %d iOS pushes counted unresponsive, want %d", got, held)
	}
	if got := sum.Platforms["android"].Unresponsive; got != 0 {
		t.Fatalf("stats: %d Android pushes counted unresponsive, want 0", got)
	}
}

// TestRetriedPushCountsOnce injects a provider failure on the first
// attempt of each of a device's pushes, so each push job is tried twice
// (as after a crash between counting and sending, or a redelivery): each
// push must count once in un, and the device must get After pushes before
// it is held back, not After/2.
func TestRetriedPushCountsOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	u := devices.Unresponsive{After: 4, Base: time.Hour}
	b, _ := unresponsiveBundle(t, u)
	d := b.register(t, "apns", "ios", apnsToken(7), true)
	for i := range 4 {
		b.emu.AddFault(pushemu.Fault{Provider: pushemu.APNs, Token: d.Token, Reason: "ServiceUnavailable", RetryAfter: time.Millisecond, Count: 1})
		if p := b.syncDone(t, nil); p.Sent != 1 {
			t.Fatalf("push %d: progress %+v, want sent", i+1, p)
		}
		if rej := b.emu.Rejections(d.Token); len(rej) != i+1 {
			t.Fatalf("push %d: %d rejected attempts, want %d (the fault did not fire)", i+1, len(rej), i+1)
		}
		if n, err := b.reg.Pushes(ctx, d.ID); err != nil || n != i+1 {
			t.Fatalf("push %d, tried twice: un = %d (%v), want %d", i+1, n, err, i+1)
		}
	}
	if p := b.syncDone(t, nil); p.Unresponsive != 1 {
		t.Fatalf("after %d pushes: progress %+v, want held back as unresponsive", u.After, p)
	}
}
