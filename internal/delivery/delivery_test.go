package delivery_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/delivery"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/events"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/push"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stats"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// bundle is the push pipeline from the throttle to the emulator, all real:
// registry, throttle, planner, queue worker, sender and emulator.
type bundle struct {
	rdb     redis.UniversalClient
	emu     *pushemu.Emulator
	creds   pushemu.Credentials
	reg     *devices.Registry
	planner *fanout.Planner
	stats   *stats.Recorder
}

func setup(t *testing.T, mod ...func(*push.Config)) *bundle {
	t.Helper()
	return setupWith(t, throttle.Config{}, mod...)
}

// setupWith is setup with a throttle configuration; a policy with a
// short gap also starts the due scheduler.
func setupWith(t testing.TB, tcfg throttle.Config, mod ...func(*push.Config)) *bundle {
	t.Helper()
	return setupEmu(t, tcfg, func(_ *pushemu.Emulator, _ pushemu.Credentials, c *push.Config) {
		for _, m := range mod {
			m(c)
		}
	})
}

// setupEmu is setupWith whose sender configuration may use the running
// emulator (for apps with credentials of their own).
func setupEmu(t testing.TB, tcfg throttle.Config, mod func(*pushemu.Emulator, pushemu.Credentials, *push.Config)) *bundle {
	t.Helper()
	return setupFull(t, tcfg, delivery.Config{}, nil, mod)
}

// setupFull is setupEmu with the push worker's configuration and clock
// (nil: time.Now); mod may be nil.
func setupFull(t testing.TB, tcfg throttle.Config, dcfg delivery.Config, clock func() time.Time, mod func(*pushemu.Emulator, pushemu.Credentials, *push.Config)) *bundle {
	t.Helper()
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rdb := redistest.Start(t)
	store, err := catalog.NewStore(service.Archetype{}, rdb, catalog.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"headlines", "sport", "world", "tech"} {
		if _, err := store.Put(ctx, catalog.Feed{ID: id, Title: id, URL: "https://news.example/" + id}); err != nil {
			t.Fatal(err)
		}
	}
	reg, err := devices.New(service.Archetype{}, rdb, store, devices.Config{})
	if err != nil {
		t.Fatal(err)
	}
	th, err := throttle.New(service.Archetype{Logger: log}, tcfg, rdb)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := events.New(events.Config{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	planner, err := fanout.New(service.Archetype{Logger: log}, fanout.Config{}, fanout.Deps{Events: evs, Subscribers: reg, Decider: th})
	if err != nil {
		t.Fatal(err)
	}
	if tcfg != (throttle.Config{}) {
		sch, err := throttle.NewScheduler(service.Archetype{Logger: log}, throttle.SchedulerConfig{Tick: 50 * time.Millisecond}, th, planner)
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sch.Stop)
	}
	emu, creds := pushemutest.Start(t, service.Archetype{}, pushemu.Config{})
	pcfg := push.Config{
		FCMCredentialsFile: creds.FCMCredentialsFile, FCMEndpoint: creds.FCMEndpoint, FCMProjectID: creds.FCMProjectID,
		APNSKeyFile: creds.APNsKeyFile, APNSKeyID: creds.APNsKeyID, APNSTeamID: creds.APNsTeamID,
		APNSTopic: creds.APNsTopic, APNSHost: creds.APNsHost, APNSSandboxHost: creds.APNsSandboxHost,
		CAFile: creds.CAFile,
	}
	if mod != nil {
		mod(emu, creds, &pcfg)
	}
	sender, err := push.New(ctx, service.Archetype{Logger: log}, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sender.Close)
	st, err := stats.NewRecorder(service.Archetype{Logger: log}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	h, err := delivery.New(service.Archetype{Logger: log, Clock: clock, Registerer: prometheus.NewRegistry()}, dcfg, delivery.Deps{
		Redis: rdb, Sender: sender, Devices: reg, Events: planner, Throttle: th, Stats: st,
	})
	if err != nil {
		t.Fatal(err)
	}
	q, err := jobs.New(rdb, jobs.Config{Name: keys.PushQueue, Partitions: keys.Partitions})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.EnsureGroups(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := jobs.NewWorker(service.Archetype{Logger: log}, q, h, jobs.WorkerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return &bundle{rdb: rdb, emu: emu, creds: creds, reg: reg, planner: planner, stats: st}
}

func apnsToken(n int) string { return fmt.Sprintf("%064x", n+1) }
func fcmToken(n int) string {
	return fmt.Sprintf("d%020d:APA91b", n) + strings.Repeat("Q", 130)
}

func (b *bundle) register(t *testing.T, provider, platform, token string, enabled bool) devices.Device {
	t.Helper()
	d, _, _, err := b.reg.Register(t.Context(), devices.Registration{
		Provider: provider, Token: token, Platform: platform, Feeds: []string{"headlines"},
		Sync: devices.BackgroundSync{Enabled: enabled},
	})
	if err != nil {
		t.Fatalf("register %s device: %v", platform, err)
	}
	return d
}

// breaking publishes and plans a breaking event on headlines.
func (b *bundle) breaking(t *testing.T, alert *fanout.Alert) string {
	t.Helper()
	return b.breakingOn(t, "headlines", alert)
}

// breakingOn publishes and plans a breaking event on feed.
func (b *bundle) breakingOn(t *testing.T, feed string, alert *fanout.Alert) string {
	t.Helper()
	ctx := t.Context()
	id, err := b.planner.NewID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev := fanout.Event{ID: id, Feeds: []string{feed}, Lane: throttle.LaneBreaking, Reason: "breaking",
		Since: map[string]int64{feed: 41}, Alert: alert, CreatedAt: time.Now()}
	if _, err := b.planner.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if _, err := b.planner.Plan(ctx, id); err != nil {
		t.Fatal(err)
	}
	return id
}

func (b *bundle) waitProgress(t *testing.T, id string, ok func(fanout.Progress) bool) fanout.Progress {
	t.Helper()
	var p fanout.Progress
	await.Poll{}.Check(t, "event "+id+"'s progress to reach the expected state", func() error {
		var err error
		if p, err = b.planner.Progress(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		if !ok(p) {
			return fmt.Errorf("progress %+v", p)
		}
		return nil
	})
	return p
}

func TestDeliversSilentPushesWithCursorAndAlert(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ios := b.register(t, "apns", "ios", apnsToken(1), true)
	android := b.register(t, "fcm", "android", fcmToken(2), true)
	iosFCM := b.register(t, "fcm", "ios", fcmToken(3), true)
	off := b.register(t, "fcm", "android", fcmToken(4), false)

	id := b.breaking(t, &fanout.Alert{Title: "Breaking", Body: "Something happened"})
	p := b.waitProgress(t, id, func(p fanout.Progress) bool { return p.Sent == 3 })
	if p.Targeted != 4 || p.Skipped != 1 || p.Pruned != 0 || p.Failed != 0 {
		t.Fatalf("progress: got %+v, want 4 targeted, 1 skipped, 3 sent", p)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, d := range []devices.Device{ios, android, iosFCM} {
		got, err := b.emu.WaitToken(ctx, d.Token, 1)
		if err != nil {
			t.Fatalf("%s device: %v", d.Platform, err)
		}
		del := got[0]
		data := del.Data
		if data["type"] != "nudge.sync" || data["feeds"] != "headlines" || data["since"] != "headlines:41" || data["event"] != id || data["reason"] != "breaking" {
			t.Fatalf("%s/%s payload: got %v", d.Provider, d.Platform, data)
		}
		if lane, _, err := delivery.ParsePushID(data["push_id"]); err != nil || lane != throttle.LaneAlert {
			t.Fatalf("push id %q: lane %q, %v", data["push_id"], lane, err)
		}
		if !del.Alert {
			t.Fatalf("%s/%s: breaking push with an alert arrived without it", d.Provider, d.Platform)
		}
	}
	if n := b.emu.CountToken(off.Token); n != 0 {
		t.Fatalf("opted-out device got %d pushes", n)
	}
	s, err := b.stats.Summarize(t.Context(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if s.Platforms["ios"].Sent != 2 || s.Platforms["android"].Sent != 1 {
		t.Fatalf("stats: ios sent %d, android sent %d; want 2 and 1", s.Platforms["ios"].Sent, s.Platforms["android"].Sent)
	}
}

func TestPrunesUnregisteredTokenAfterOneSend(t *testing.T) {
	t.Parallel()
	b := setup(t)
	gone := b.register(t, "apns", "ios", apnsToken(7), true)
	kept := b.register(t, "fcm", "android", fcmToken(8), true)
	// APNs says the token died after the device last set it.
	b.emu.Unregister(pushemu.APNs, gone.Token, time.Now().Add(2*time.Second))

	id := b.breaking(t, nil)
	p := b.waitProgress(t, id, func(p fanout.Progress) bool { return p.Sent+p.Pruned == 2 })
	if p.Sent != 1 || p.Pruned != 1 {
		t.Fatalf("progress: got sent %d pruned %d, want 1 and 1", p.Sent, p.Pruned)
	}
	if _, err := b.reg.Get(t.Context(), gone.ID); err == nil {
		t.Fatal("device with an unregistered token is still in the registry")
	}
	if _, err := b.reg.Get(t.Context(), kept.ID); err != nil {
		t.Fatalf("the other device was removed: %v", err)
	}
	if del := b.emu.Deliveries(kept.Token); len(del) != 1 || del[0].Alert {
		t.Fatalf("kept device: got %d deliveries (alert=%v), want 1 silent", len(del), len(del) > 0 && del[0].Alert)
	}
}

func TestProjectQuotaPausesProvider(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d := b.register(t, "fcm", "android", fcmToken(9), true)
	b.emu.AddFault(pushemu.Fault{Provider: pushemu.FCM, Count: 1, ProjectQuota: true, RetryAfter: 90 * time.Second})

	b.breaking(t, nil)
	var ttl time.Duration
	await.Until(t, "fcm paused after a project quota error", func() bool {
		var err error
		if ttl, err = b.rdb.PTTL(t.Context(), keys.ProviderPause("fcm:"+b.creds.FCMProjectID)).Result(); err != nil {
			t.Fatal(err)
		}
		return ttl > 0
	})
	if ttl < 80*time.Second || ttl > 90*time.Second {
		t.Fatalf("fcm pause: got %v, want the provider's 90s Retry-After", ttl)
	}
	if n := b.emu.CountToken(d.Token); n != 0 {
		t.Fatalf("device got %d pushes while fcm was over quota", n)
	}
	// The job waits in the retry set for the pause, not lost. The pause is
	// set before the batch's outcomes are settled, so wait for the settle.
	retrying := func() int64 {
		var n int64
		for p := range keys.Partitions {
			c, err := b.rdb.ZCard(t.Context(), keys.Retry(keys.PushQueue, p)).Result()
			if err != nil {
				t.Fatal(err)
			}
			n += c
		}
		return n
	}
	await.Until(t, "the paused job in the retry set", func() bool { return retrying() != 0 })
	if n := retrying(); n != 1 {
		t.Fatalf("jobs waiting for retry: got %d, want 1", n)
	}
}

func TestPushIDRoundTrip(t *testing.T) {
	t.Parallel()
	sent := time.UnixMilli(1_795_000_000_123)
	for _, lane := range []string{throttle.LaneFeed, throttle.LaneBreaking} {
		id := delivery.PushID(lane, sent, "n1z-42")
		gotLane, gotSent, err := delivery.ParsePushID(id)
		if err != nil || gotLane != lane || !gotSent.Equal(sent) {
			t.Fatalf("ParsePushID(%q): got %q %v %v", id, gotLane, gotSent, err)
		}
	}
	for _, bad := range []string{"", "x", "f.abc", "zabc.def", "f!!.x", strings.Repeat("f1.", 50)} {
		if _, _, err := delivery.ParsePushID(bad); err == nil {
			t.Fatalf("ParsePushID(%q): got nil error", bad)
		}
	}
}
