package delivery_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/push"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// hasThrottleState reports whether the throttle holds state for device id.
func (b *bundle) hasThrottleState(t *testing.T, id uint64) bool {
	t.Helper()
	ok, err := b.rdb.HExists(t.Context(), keys.Throttle(keys.Partition(id)), strconv.FormatUint(id, 10)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestFCMRetryAfterReachesTheQueue injects an FCM 503 and a per-device 429,
// each with Retry-After, on the first attempt: the provider's own wait must
// reach the retry set, so the referee (the emulator's per-token log of
// rejected and accepted attempts) sees no resend before it. The issue's
// 30 s Retry-After is scaled down to 3 s to keep the test short.
func TestFCMRetryAfterReachesTheQueue(t *testing.T) {
	t.Parallel()
	const wait = 3 * time.Second
	// The device backoff floor (1 min by default) is lowered so that the
	// 429's own Retry-After is what the retry waits for.
	b := setup(t, func(c *push.Config) { c.DeviceBackoff = time.Millisecond })
	cases := []struct {
		name  string
		fault pushemu.Fault
	}{
		{"503 unavailable", pushemu.Fault{Reason: "UNAVAILABLE"}},
		{"429 device quota", pushemu.Fault{Reason: "QUOTA_EXCEEDED"}},
	}
	var devs []devices.Device
	for i, c := range cases {
		d := b.register(t, "fcm", "android", fcmToken(100+i), true)
		f := c.fault
		f.Provider, f.Token, f.RetryAfter, f.Count = pushemu.FCM, d.Token, wait, 1
		b.emu.AddFault(f)
		devs = append(devs, d)
	}
	id := b.breaking(t, nil)
	p := b.waitProgress(t, id, func(p fanout.Progress) bool { return p.Ended() == 2 })
	if p.Sent != 2 {
		t.Fatalf("progress: got %+v, want 2 sent", p)
	}
	for i, c := range cases {
		rej := b.emu.Rejections(devs[i].Token)
		del := b.emu.Deliveries(devs[i].Token)
		if len(rej) != 1 || len(del) != 1 {
			t.Fatalf("%s: got %d rejected and %d accepted attempts, want 1 and 1", c.name, len(rej), len(del))
		}
		if gap := del[0].At.Sub(rej[0].At); gap < wait {
			t.Fatalf("%s: resent %v after a Retry-After of %v", c.name, gap, wait)
		}
	}
}

// TestSandboxCredentialErrorLeavesProductionFlowing makes the APNs sandbox
// answer every push with 403 InvalidProviderToken (a pause-worthy
// credential error) while production APNs and FCM pushes flow: only the
// sandbox scope is paused, and every production push is delivered.
func TestSandboxCredentialErrorLeavesProductionFlowing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.emu.AddFault(pushemu.Fault{Provider: pushemu.APNs, Environment: pushemu.Sandbox, Reason: "InvalidProviderToken"})
	sandbox, _, _, err := b.reg.Register(ctx, devices.Registration{
		Provider: "apns", Token: apnsToken(200), Platform: "ios", Environment: "sandbox",
		Feeds: []string{"sport"}, Sync: devices.BackgroundSync{Enabled: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	b.breakingOn(t, "sport", nil)
	sandboxPause := keys.ProviderPause("apns:sandbox:" + b.creds.APNsKeyID)
	await.Until(t, "the sandbox pause", func() bool {
		n, err := b.rdb.Exists(ctx, sandboxPause).Result()
		return err == nil && n == 1
	})

	var prod []devices.Device
	for i := range 3 {
		prod = append(prod, b.register(t, "apns", "ios", apnsToken(210+i), true))
	}
	prod = append(prod, b.register(t, "fcm", "android", fcmToken(220), true))
	id := b.breaking(t, nil)
	p := b.waitProgress(t, id, func(p fanout.Progress) bool { return p.Sent == int64(len(prod)) })
	if p.Failed != 0 || p.Pruned != 0 {
		t.Fatalf("production progress: got %+v", p)
	}
	for _, d := range prod {
		if n := b.emu.CountToken(d.Token); n != 1 {
			t.Fatalf("production %s device got %d pushes, want 1", d.Provider, n)
		}
	}
	for _, scope := range []string{"apns:production:" + b.creds.APNsKeyID, "fcm:" + b.creds.FCMProjectID} {
		if n, err := b.rdb.Exists(ctx, keys.ProviderPause(scope)).Result(); err != nil || n != 0 {
			t.Fatalf("scope %s paused (%d, %v) by a sandbox credential error", scope, n, err)
		}
	}
	// The sandbox push waits out the pause instead of hammering APNs.
	if n := len(b.emu.Rejections(sandbox.Token)); n != 1 {
		t.Fatalf("sandbox device: got %d rejected attempts, want 1", n)
	}
}

// TestFCMInvalidTokenPrunes injects FCM's INVALID_ARGUMENT naming the
// registration token for one device and an INVALID_ARGUMENT about the
// message for another: the first device is pruned with its throttle
// state, the second stays and its push fails for good.
func TestFCMInvalidTokenPrunes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	bad := b.register(t, "fcm", "android", fcmToken(300), true)
	other := b.register(t, "fcm", "android", fcmToken(301), true)
	b.emu.AddFault(pushemu.Fault{Provider: pushemu.FCM, Token: bad.Token, Reason: "INVALID_ARGUMENT",
		Message: "The registration token is not a valid FCM registration token"})
	b.emu.AddFault(pushemu.Fault{Provider: pushemu.FCM, Token: other.Token, Reason: "INVALID_ARGUMENT"})

	id := b.breaking(t, nil)
	p := b.waitProgress(t, id, func(p fanout.Progress) bool { return p.Ended() == 2 })
	if p.Pruned != 1 || p.Failed != 1 {
		t.Fatalf("progress: got %+v, want 1 pruned and 1 failed", p)
	}
	if _, err := b.reg.Get(t.Context(), bad.ID); err == nil {
		t.Fatal("device with an invalid token is still registered")
	}
	if _, err := b.reg.Get(t.Context(), other.ID); err != nil {
		t.Fatalf("device whose message was invalid was removed: %v", err)
	}
	if b.hasThrottleState(t, bad.ID) {
		t.Fatal("pruned device left throttle state")
	}
	if !b.hasThrottleState(t, other.ID) {
		t.Fatal("kept device has no throttle state: the check above proves nothing")
	}
}

// TestAPNsPruneHonoursTimestamp: APNs answers 410 Unregistered with a
// timestamp an hour before the device last set its token (the app
// re-registered it since). The device must stay; its push is superseded.
func TestAPNsPruneHonoursTimestamp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := b.register(t, "apns", "ios", apnsToken(400), true)
	b.emu.Unregister(pushemu.APNs, d.Token, time.Now().Add(-time.Hour))

	id := b.breaking(t, nil)
	p := b.waitProgress(t, id, func(p fanout.Progress) bool { return p.Ended() == 1 })
	if p.Superseded != 1 || p.Pruned != 0 {
		t.Fatalf("progress: got %+v, want 1 superseded", p)
	}
	if _, err := b.reg.Get(t.Context(), d.ID); err != nil {
		t.Fatalf("device re-registered after APNs's timestamp was pruned: %v", err)
	}
}

// TestOptOutAndDeletionWinAtSendTime fails the first attempt of three
// pushes (503, Retry-After 2 s); while they wait in the retry set one user
// opts out and another device is deleted. The retries must send only to
// the third device and count the other two as superseded.
func TestOptOutAndDeletionWinAtSendTime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	var devs []devices.Device
	for i := range 3 {
		d := b.register(t, "fcm", "android", fcmToken(500+i), true)
		b.emu.AddFault(pushemu.Fault{Provider: pushemu.FCM, Token: d.Token, Reason: "UNAVAILABLE", RetryAfter: 2 * time.Second, Count: 1})
		devs = append(devs, d)
	}
	optOut, deleted, kept := devs[0], devs[1], devs[2]
	id := b.breaking(t, nil)
	await.Until(t, "the first attempts", func() bool {
		for _, d := range devs {
			if len(b.emu.Rejections(d.Token)) == 0 {
				return false
			}
		}
		return true
	})
	off := false
	if _, err := b.reg.Update(ctx, optOut, devices.Patch{SyncEnabled: &off}); err != nil {
		t.Fatal(err)
	}
	if err := b.reg.Delete(ctx, deleted.ID); err != nil {
		t.Fatal(err)
	}
	p := b.waitProgress(t, id, func(p fanout.Progress) bool { return p.Ended() == 3 })
	if p.Sent != 1 || p.Superseded != 2 {
		t.Fatalf("progress: got %+v, want 1 sent and 2 superseded", p)
	}
	for _, d := range []devices.Device{optOut, deleted} {
		if n := b.emu.CountToken(d.Token); n != 0 {
			t.Fatalf("device %d got %d pushes after opting out or being deleted", d.ID, n)
		}
	}
	if n := b.emu.CountToken(kept.Token); n != 1 {
		t.Fatalf("kept device got %d pushes, want 1", n)
	}
}

// TestBudgetHoldsAtThePhone makes the first attempt of push A fail (APNs
// 503, Retry-After 3 s) so that the throttle, which spaces pushes by queue
// time, lets push B out after the 2 s gap while A waits for its retry. A's
// retry would then reach the phone about 1 s after B; the worker must hold
// it until B's gap has passed. The referee is the emulator's delivery log
// for the device: no two deliveries under the gap. The iOS policy is
// scaled down from 10 minutes to a 2 s gap to keep the test short.
func TestBudgetHoldsAtThePhone(t *testing.T) {
	t.Parallel()
	const gap = 2 * time.Second
	pol := throttle.Policy{Limit: 3, Window: time.Minute, MinGap: gap}
	b := setupWith(t, throttle.Config{IOS: pol, Android: pol})
	d := b.register(t, "apns", "ios", apnsToken(600), true)
	b.emu.AddFault(pushemu.Fault{Provider: pushemu.APNs, Token: d.Token, Reason: "ServiceUnavailable", RetryAfter: 3 * time.Second, Count: 1})

	first := b.breaking(t, nil)
	await.Until(t, "the first attempt", func() bool { return len(b.emu.Rejections(d.Token)) == 1 })
	second := b.breaking(t, nil) // deferred by the throttle to the gap after A's queue time
	for _, id := range []string{first, second} {
		b.waitProgress(t, id, func(p fanout.Progress) bool { return p.Sent == 1 })
	}
	del := b.emu.Deliveries(d.Token)
	if len(del) != 2 {
		t.Fatalf("device got %d pushes, want 2", len(del))
	}
	if del[0].Data["event"] == first {
		// B went out after A's retry: nothing was tested.
		t.Log("push A's retry went out before push B")
	}
	if g := del[1].At.Sub(del[0].At); g < gap {
		t.Fatalf("deliveries %v apart at the phone, under the %v gap (events %s then %s)", g, gap, del[0].Data["event"], del[1].Data["event"])
	}
}

// phoneLog returns the times (unix ms) in device id's log of pushes that
// may have reached the phone.
func (b *bundle) phoneLog(t *testing.T, id uint64) []int64 {
	t.Helper()
	raw, err := b.rdb.HGet(t.Context(), keys.Throttle(keys.Partition(id)), "p"+strconv.FormatUint(id, 10)).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for e := range strings.SplitSeq(raw, "\x1f") {
		_, ms, _ := strings.Cut(e, "\x1e")
		n, err := strconv.ParseInt(ms, 10, 64)
		if err != nil {
			t.Fatalf("phone log of device %d: %q", id, raw)
		}
		out = append(out, n)
	}
	return out
}

// TestReservationLiesAtOrAfterTheAnswer sends one push to a device whose
// provider answers at once and one to a device whose provider takes 3 s,
// longer than the reservation lies ahead: both reservations at the phone
// must end at or after the provider's answer. The quick one needs no
// settling (its reservation was made ahead); the slow one is moved to its
// answer (without that, it would sit about 1 s before it).
func TestReservationLiesAtOrAfterTheAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	quick := b.register(t, "apns", "ios", apnsToken(700), true)
	slow := b.register(t, "apns", "ios", apnsToken(701), true)
	const latency = 3 * time.Second
	b.emu.AddFault(pushemu.Fault{Provider: pushemu.APNs, Token: slow.Token, Latency: latency})
	start := time.Now()
	id := b.breaking(t, nil)
	b.waitProgress(t, id, func(p fanout.Progress) bool { return p.Sent == 2 })
	answered := time.Now()
	for _, c := range []struct {
		d     devices.Device
		after time.Time
	}{{quick, b.emu.Deliveries(quick.Token)[0].At}, {slow, start.Add(latency)}} {
		log := b.phoneLog(t, c.d.ID)
		if len(log) != 1 {
			t.Fatalf("device %d: phone log %v, want one entry", c.d.ID, log)
		}
		if at := time.UnixMilli(log[0]); at.Before(c.after.Truncate(time.Millisecond)) || at.After(answered.Add(3*time.Second)) {
			t.Errorf("device %d: reserved at %s, want between its answer %s and %s", c.d.ID,
				at.Format(time.StampMilli), c.after.Format(time.StampMilli), answered.Add(3*time.Second).Format(time.StampMilli))
		}
	}
}

// TestPauseSetElsewhereHoldsKnownScope sets a provider pause from outside
// the worker, as another replica would, on a pause scope the worker has
// already sent to: the worker reads the pauses of scopes it knows in its
// device lookup, and must still hold the next push back.
func TestPauseSetElsewhereHoldsKnownScope(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := b.register(t, "fcm", "android", fcmToken(21), true)
	id := b.breaking(t, nil)
	b.waitProgress(t, id, func(p fanout.Progress) bool { return p.Sent == 1 })
	if n := b.emu.CountToken(first.Token); n != 1 {
		t.Fatalf("first device: got %d pushes, want 1", n)
	}

	// Another replica paused the FCM project.
	scope := keys.ProviderPause("fcm:" + b.creds.FCMProjectID)
	if err := b.rdb.Set(t.Context(), scope, "quota", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	second := b.register(t, "fcm", "android", fcmToken(22), true)
	b.breaking(t, nil)
	await.Until(t, "the second device's push waits in the retry set", func() bool {
		var retrying int64
		for p := range keys.Partitions {
			n, err := b.rdb.ZCard(t.Context(), keys.Retry(keys.PushQueue, p)).Result()
			if err != nil {
				t.Fatal(err)
			}
			retrying += n
		}
		return retrying >= 1
	})
	if n := b.emu.CountToken(second.Token); n != 0 {
		t.Fatalf("second device got %d pushes while its FCM project was paused", n)
	}
	// Admitted before its pause was known, the push was released at the
	// phone as well: nothing may have reached it.
	if log := b.phoneLog(t, second.ID); len(log) != 0 {
		t.Fatalf("second device's phone log %v after its push was held by the pause, want none", log)
	}
}
