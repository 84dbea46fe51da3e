package delivery_test

import (
	"net"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/push"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// registerApp registers a device of app on feed. The test's registry has
// no app catalogue, so the test sets the device hash's app field (ap) that
// devices.Targets reads.
func (b *bundle) registerApp(t *testing.T, app, provider, env, token, feed string) devices.Device {
	t.Helper()
	platform := "ios"
	if provider == "fcm" {
		platform = "android"
	}
	d, _, _, err := b.reg.Register(t.Context(), devices.Registration{
		Provider: provider, Token: token, Platform: platform, Environment: env, Feeds: []string{feed},
		Sync: devices.BackgroundSync{Enabled: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.rdb.HSet(t.Context(), keys.Device(d.ID), "ap", app).Err(); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCredentialErrorsOfOneAppLeaveAnotherFlowing: app B's sandbox key is
// refused (InvalidProviderToken) and its FCM project is over quota, and
// app C's sandbox host is unreachable (connection refused: retried), while
// app A sends to the same environments and provider. B's sandbox and FCM
// scopes are paused; A's pushes of every kind, sandbox included, are all
// delivered, within a generous bound, and none of A's scopes is paused.
func TestCredentialErrorsOfOneAppLeaveAnotherFlowing(t *testing.T) {
	t.Parallel()
	var sports pushemu.Credentials
	b := setupEmu(t, throttle.Config{}, func(emu *pushemu.Emulator, creds pushemu.Credentials, c *push.Config) {
		sports = pushemutest.AppCredentials(t, emu, "sports")
		radio := pushemutest.App("radio", pushemutest.AppCredentials(t, emu, "radio"))
		radio.APNs.SandboxHost = "https://" + closedAddr(t)
		c.Apps = apps.MustSet(pushemutest.App("news", creds), pushemutest.App("sports", sports), radio)
	})
	ctx := t.Context()
	var bDevices []devices.Device
	for i := range 10 {
		d := b.registerApp(t, "sports", "apns", "sandbox", apnsToken(500+i), "sport")
		b.emu.AddFault(pushemu.Fault{Provider: pushemu.APNs, Token: d.Token, Reason: "InvalidProviderToken"})
		bDevices = append(bDevices, d)
		d = b.registerApp(t, "sports", "fcm", "", fcmToken(500+i), "sport")
		b.emu.AddFault(pushemu.Fault{Provider: pushemu.FCM, Token: d.Token, ProjectQuota: true, RetryAfter: 90 * time.Second})
		bDevices = append(bDevices, d)
	}
	var cDevices []devices.Device
	for i := range 10 {
		cDevices = append(cDevices, b.registerApp(t, "radio", "apns", "sandbox", apnsToken(800+i), "sport"))
	}
	b.breakingOn(t, "sport", nil)
	for _, scope := range []string{"apns:sandbox:" + sports.APNsKeyID, "fcm:" + sports.FCMProjectID} {
		await.Until(t, "app B's scope "+scope+" paused", func() bool {
			n, err := b.rdb.Exists(ctx, keys.ProviderPause(scope)).Result()
			return err == nil && n == 1
		})
	}

	var aDevices []devices.Device
	for i := range 30 {
		aDevices = append(aDevices,
			b.registerApp(t, "news", "apns", "sandbox", apnsToken(600+i), "headlines"),
			b.registerApp(t, "news", "apns", "production", apnsToken(700+i), "headlines"),
			b.registerApp(t, "news", "fcm", "", fcmToken(600+i), "headlines"))
	}
	start := time.Now()
	id := b.breaking(t, nil)
	await.Within(t, 30*time.Second, "app A's pushes delivered while app B's credentials fail", func() bool {
		p, err := b.planner.Progress(ctx, id)
		return err == nil && p.Sent == int64(len(aDevices))
	})
	t.Logf("app A: %d pushes delivered in %v while app B is paused", len(aDevices), time.Since(start))
	for _, d := range aDevices {
		ds := b.emu.Deliveries(d.Token)
		if len(ds) != 1 {
			t.Fatalf("app A %s/%s device: got %d pushes, want 1", d.Provider, d.Environment, len(ds))
		}
		if d.Provider == "apns" && ds[0].Topic != b.creds.APNsTopic {
			t.Fatalf("app A push topic %q, want %q", ds[0].Topic, b.creds.APNsTopic)
		}
		if d.Provider == "fcm" && ds[0].Project != b.creds.FCMProjectID {
			t.Fatalf("app A push project %q, want %q", ds[0].Project, b.creds.FCMProjectID)
		}
	}
	// The sends are counted in app A's stats, and none in app B's.
	await.Until(t, "app A's sends in its stats", func() bool {
		sum, err := b.stats.SummarizeApps(ctx, time.Hour, []string{"news"})
		if err != nil || sum.Platforms["ios"] == nil || sum.Platforms["android"] == nil {
			return false
		}
		return sum.Platforms["ios"].Sent == 60 && sum.Platforms["android"].Sent == 30
	})
	if sum, err := b.stats.SummarizeApps(ctx, time.Hour, []string{"sports"}); err != nil {
		t.Fatal(err)
	} else {
		for pl, p := range sum.Platforms {
			if p.Sent != 0 {
				t.Fatalf("app B's %s stats count %d sent, want 0", pl, p.Sent)
			}
		}
	}
	for _, scope := range []string{"apns:sandbox:" + b.creds.APNsKeyID, "apns:production:" + b.creds.APNsKeyID, "fcm:" + b.creds.FCMProjectID} {
		if n, err := b.rdb.Exists(ctx, keys.ProviderPause(scope)).Result(); err != nil || n != 0 {
			t.Fatalf("app A's scope %s paused (%d, %v) by app B's errors", scope, n, err)
		}
	}
	for _, d := range cDevices {
		if n := b.emu.CountToken(d.Token); n != 0 {
			t.Fatalf("app C device behind an unreachable host got %d pushes", n)
		}
	}
	// B's pushes wait out their pauses: each tried at most once (a batch
	// sent before the pause was set), none delivered.
	for _, d := range bDevices {
		if n, r := b.emu.CountToken(d.Token), len(b.emu.Rejections(d.Token)); n != 0 || r > 1 {
			t.Fatalf("app B %s device: %d pushes and %d rejected attempts, want none and at most 1", d.Provider, n, r)
		}
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
