package devices_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/devices"
)

// counts reads the unresponsive devices of a platform.
func (b *bundle) unresponsive(t *testing.T, platform string) int64 {
	t.Helper()
	c, err := b.reg.UnresponsiveCounts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return c[platform]
}

func (b *bundle) pushes(t *testing.T, id uint64) int {
	t.Helper()
	n, err := b.reg.Pushes(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCountSilentOncePerPush injects the duplicates a crash makes: the same
// push counted by many workers at once (a job redelivered to a second
// replica while the first still runs it) and again later (a retry, or a
// redelivery after the replica died between counting and sending). Each
// push must count once; distinct pushes each count.
func TestCountSilentOncePerPush(t *testing.T) {
	t.Parallel()
	for _, cluster := range []bool{false, true} {
		t.Run(fmt.Sprintf("cluster=%v", cluster), func(t *testing.T) {
			t.Parallel()
			b := setup(t, cluster)
			ctx := t.Context()
			u := devices.Unresponsive{After: 100}
			now := time.Now()
			var ids []uint64
			for i := range 8 {
				d, _, _, err := b.reg.Register(ctx, reg(fcmToken(900+i), "world"))
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, d.ID)
			}
			const pushes = 3
			for p := range pushes {
				var wg sync.WaitGroup
				for range 8 { // eight replicas count the same batch
					wg.Go(func() {
						ps := make([]devices.Silent, len(ids))
						for i, id := range ids {
							ps[i] = devices.Silent{Device: id, Collapse: fmt.Sprintf("n%d-ev%d", id, p)}
						}
						send, err := b.reg.CountSilent(ctx, u, now, ps)
						if err != nil {
							t.Error(err)
							return
						}
						for i, ok := range send {
							if !ok {
								t.Errorf("push %d of device %d held back below After", p, ids[i])
							}
						}
					})
				}
				wg.Wait()
			}
			for _, id := range ids {
				if n := b.pushes(t, id); n != pushes {
					t.Errorf("device %d: un = %d after %d distinct pushes each counted by 8 replicas, want %d", id, n, pushes, pushes)
				}
			}
		})
	}
}

// TestUnresponsiveBackoffAndCounter walks one device through the policy
// (After 2, probes 1h doubling, cap 3h) on a simulated clock and checks the
// per-platform counter as it crosses After, resumes and is deleted.
func TestUnresponsiveBackoffAndCounter(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := t.Context()
	u := devices.Unresponsive{After: 2, Base: time.Hour, Cap: 3 * time.Hour}
	d, _, _, err := b.reg.Register(ctx, reg(fcmToken(1), "world"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	n := 0
	try := func(at time.Duration) bool {
		t.Helper()
		n++
		send, err := b.reg.CountSilent(ctx, u, t0.Add(at), []devices.Silent{{Device: d.ID, Collapse: fmt.Sprint("p", n)}})
		if err != nil {
			t.Fatal(err)
		}
		return send[0]
	}
	steps := []struct {
		at   time.Duration
		send bool
		un   int
	}{
		{0, true, 1},
		{time.Minute, true, 2}, // crosses After
		{2 * time.Minute, false, 2},
		{time.Hour, false, 2},                    // 59m after the last push
		{time.Hour + time.Minute, true, 3},       // first probe: 1h after
		{3 * time.Hour, false, 3},                // second probe waits 2h
		{3*time.Hour + time.Minute, true, 4},     // ... and goes
		{6*time.Hour + 30*time.Second, false, 4}, // 4h capped at 3h: not yet
		{6*time.Hour + time.Minute, true, 5},     // cap reached
		{9*time.Hour + 2*time.Minute, true, 6},   // still the cap
	}
	for i, s := range steps {
		if got := try(s.at); got != s.send {
			t.Fatalf("step %d at %v: send = %v, want %v", i, s.at, got, s.send)
		}
		if got := b.pushes(t, d.ID); got != s.un {
			t.Fatalf("step %d at %v: un = %d, want %d", i, s.at, got, s.un)
		}
		want := int64(0)
		if s.un >= u.After {
			want = 1
		}
		if got := b.unresponsive(t, "android"); got != want {
			t.Fatalf("step %d: %d unresponsive android devices, want %d", i, got, want)
		}
	}

	// A receipt resumes it at once: the next push goes out.
	if was, err := b.reg.Resume(ctx, d.ID); err != nil || !was {
		t.Fatalf("resume: %v, %v; want true", was, err)
	}
	if got := b.unresponsive(t, "android"); got != 0 || b.pushes(t, d.ID) != 0 {
		t.Fatalf("after resume: %d unresponsive, un %d; want 0, 0", got, b.pushes(t, d.ID))
	}
	if was, err := b.reg.Resume(ctx, d.ID); err != nil || was {
		t.Fatalf("second resume: %v, %v; want false (counter moved once)", was, err)
	}
	if !try(9*time.Hour+3*time.Minute) || !try(9*time.Hour+4*time.Minute) || try(9*time.Hour+5*time.Minute) {
		t.Fatal("after resume: want two pushes sent, then held back")
	}
	if got := b.unresponsive(t, "android"); got != 1 {
		t.Fatalf("crossed again: %d unresponsive, want 1", got)
	}
	// Deleting an unresponsive device takes it out of the counter.
	if err := b.reg.Delete(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	if got := b.unresponsive(t, "android"); got != 0 {
		t.Fatalf("after delete: %d unresponsive, want 0", got)
	}
}

// TestCountSilentIgnoresOptedOutAndGone: such pushes are dropped by the
// caller, so they count nothing and are never held.
func TestCountSilentIgnoresOptedOutAndGone(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := t.Context()
	r := reg(fcmToken(2), "world")
	r.Sync.Enabled = false
	d, _, _, err := b.reg.Register(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	u := devices.Unresponsive{After: 1}
	for i := range 3 {
		send, err := b.reg.CountSilent(ctx, u, time.Now(), []devices.Silent{{Device: d.ID, Collapse: fmt.Sprint(i)}, {Device: 1 << 40, Collapse: "x"}})
		if err != nil || !send[0] || !send[1] {
			t.Fatalf("count: %v, %v; want both sendable", send, err)
		}
	}
	if n := b.pushes(t, d.ID); n != 0 {
		t.Fatalf("opted-out device: un = %d, want 0", n)
	}
}
