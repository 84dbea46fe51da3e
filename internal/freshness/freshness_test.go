package freshness_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/freshness"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/redis/go-redis/v9"
)

type bundle struct {
	rdb     redis.UniversalClient
	reg     *devices.Registry
	tracker *freshness.Tracker
	tokens  int
}

func setup(t *testing.T, cfg freshness.Config) *bundle {
	t.Helper()
	rdb := redistest.Start(t)
	store, err := catalog.NewStore(service.Archetype{}, rdb, catalog.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"world", "tech"} {
		if _, err := store.Put(t.Context(), catalog.Feed{ID: id, Title: id, URL: "https://example.com/" + id}); err != nil {
			t.Fatal(err)
		}
	}
	reg, err := devices.New(service.Archetype{}, rdb, store, devices.Config{IDBlock: 64})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := freshness.New(service.Archetype{}, rdb, reg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{rdb: rdb, reg: reg, tracker: tr}
}

// register adds n devices of platform following feeds, background sync on
// unless off.
func (b *bundle) register(t *testing.T, n int, platform string, off bool, feeds ...string) []uint64 {
	t.Helper()
	ids := make([]uint64, n)
	for i := range ids {
		b.tokens++
		r := devices.Registration{Provider: "fcm", Platform: "android", Feeds: feeds,
			Token: fmt.Sprintf("d%021d:APA91b%0130d", b.tokens, 0), Sync: devices.BackgroundSync{Enabled: !off}}
		if platform == "ios" {
			r.Provider, r.Platform, r.Token = "apns", "ios", fmt.Sprintf("%064x", b.tokens)
		}
		d, _, _, err := b.reg.Register(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = d.ID
	}
	return ids
}

// sync records a receipt of device id with cursor c of world at at, as
// the api does: RecordSync, then Synced with its advances.
func (b *bundle) sync(t *testing.T, id uint64, c int64, at time.Time) []freshness.Reached {
	t.Helper()
	s, err := b.reg.RecordSync(t.Context(), id, map[string]int64{"world": c})
	if err != nil {
		t.Fatal(err)
	}
	s.At = at // the test's clock instead of Redis's
	r, err := b.tracker.Synced(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestTimeToFresh: 100 devices of world (60 Android, 40 iOS) plus devices
// that do not count (background sync off, another feed); receipts at
// known offsets; the recorded latencies equal the hand-computed ones.
func TestTimeToFresh(t *testing.T) {
	t.Parallel()
	b := setup(t, freshness.Config{})
	ctx := t.Context()
	android := b.register(t, 60, "android", false, "world")
	ios := b.register(t, 40, "ios", false, "world")
	off := b.register(t, 5, "android", true, "world")
	b.register(t, 5, "ios", false, "tech")

	t0 := time.UnixMilli(1_780_000_000_000)
	// Items 1 and 2 published at t0 (the watcher stored both at once).
	if err := b.tracker.PublishedAt(ctx, "world", 0, 2, t0); err != nil {
		t.Fatal(err)
	}
	// A repeated notification changes nothing.
	if err := b.tracker.PublishedAt(ctx, "world", 0, 2, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

	// Android device i syncs to 2 at i+1 s, except the last one, which
	// never syncs: 50 % of 60 is the 30th (30 s), 90 % the 54th (54 s),
	// 99 % (ceil 59.4 = 60) never.
	var reached []freshness.Reached
	for i, id := range android[:59] {
		reached = append(reached, b.sync(t, id, 2, sec(i+1))...)
	}
	// iOS device i first syncs to 1 at 10(i+1) s; the first 36 then sync
	// to 2 at 1000+10(i+1) s. Item 1: 50 % of 40 is the 20th (200 s),
	// 90 % the 36th (360 s), 99 % the 40th (400 s). Item 2: 50 % at
	// 1200 s, 90 % at 1360 s, 99 % never (only 36 reach it).
	for i, id := range ios {
		reached = append(reached, b.sync(t, id, 1, sec(10*(i+1)))...)
	}
	for i, id := range ios[:36] {
		reached = append(reached, b.sync(t, id, 2, sec(1000+10*(i+1)))...)
	}
	// A late receipt with an older cursor, and devices with background
	// sync off, count for nothing.
	reached = append(reached, b.sync(t, ios[0], 1, sec(5000))...)
	for _, id := range off {
		reached = append(reached, b.sync(t, id, 2, sec(2))...)
	}

	items, err := b.tracker.Items(ctx, "world", t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || items[0].Cursor != 1 || items[1].Cursor != 2 || !items[0].Published.Equal(t0) {
		t.Fatalf("items %+v: want cursors 1 and 2 published at %v", items, t0)
	}
	s := time.Second
	want := map[int64]map[string]freshness.Platform{
		1: {
			"android": {Audience: 60, Synced: 59, Latency: map[int]time.Duration{50: 30 * s, 90: 54 * s}},
			"ios":     {Audience: 40, Synced: 40, Latency: map[int]time.Duration{50: 200 * s, 90: 360 * s, 99: 400 * s}},
		},
		2: {
			"android": {Audience: 60, Synced: 59, Latency: map[int]time.Duration{50: 30 * s, 90: 54 * s}},
			"ios":     {Audience: 40, Synced: 36, Latency: map[int]time.Duration{50: 1200 * s, 90: 1360 * s}},
		},
	}
	for _, it := range items {
		if len(it.Platforms) != 2 {
			t.Errorf("item %d platforms %v, want android and ios (off devices and tech's are not an audience)", it.Cursor, it.Platforms)
		}
		for pl, w := range want[it.Cursor] {
			got := it.Platforms[pl]
			if got.Audience != w.Audience || got.Synced != w.Synced || fmt.Sprint(got.Latency) != fmt.Sprint(w.Latency) {
				t.Errorf("item %d %s = %+v, want %+v", it.Cursor, pl, got, w)
			}
		}
	}
	// Each share reached is reported once, to the call that reached it.
	if len(reached) != 2+2+3+2 {
		t.Errorf("reached %d shares, want 9: %+v", len(reached), reached)
	}
	for _, r := range reached {
		if got := want[r.Cursor][r.Platform].Latency[r.Share]; r.Feed != "world" || got != r.Latency {
			t.Errorf("reached %+v, want latency %v", r, got)
		}
	}

	// since filters by publication time.
	if items, err := b.tracker.Items(ctx, "world", t0.Add(time.Millisecond)); err != nil || len(items) != 0 {
		t.Errorf("Items since after t0 = %v, %v; want none", items, err)
	}
}

// TestTrackingIsBounded: a feed keeps at most Items items, none older than
// Window.
func TestTrackingIsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, freshness.Config{Items: 3, Window: time.Hour})
	ctx := t.Context()
	b.register(t, 2, "android", false, "world")
	t0 := time.UnixMilli(1_780_000_000_000)
	if err := b.tracker.PublishedAt(ctx, "world", 0, 10, t0); err != nil {
		t.Fatal(err)
	}
	cursors := func() []int64 {
		items, err := b.tracker.Items(ctx, "world", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		var cs []int64
		for _, it := range items {
			cs = append(cs, it.Cursor)
		}
		return cs
	}
	if got := fmt.Sprint(cursors()); got != "[8 9 10]" {
		t.Errorf("after 10 items: tracked %s, want [8 9 10]", got)
	}
	if err := b.tracker.PublishedAt(ctx, "world", 10, 11, t0.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(cursors()); got != "[9 10 11]" {
		t.Errorf("after item 11: tracked %s, want [9 10 11]", got)
	}
	// Two hours later the older items left the window.
	if err := b.tracker.PublishedAt(ctx, "world", 11, 12, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(cursors()); got != "[12]" {
		t.Errorf("after the window: tracked %s, want [12]", got)
	}
	if n, _ := b.rdb.HLen(ctx, "fresh:{world}:state").Result(); n != 1 {
		t.Errorf("%d item states left, want 1", n)
	}
}

// TestCountIsBounded: a device that skipped many items is counted on the
// newest CountMax only.
func TestCountIsBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, freshness.Config{CountMax: 2})
	ctx := t.Context()
	ids := b.register(t, 2, "android", false, "world")
	t0 := time.UnixMilli(1_780_000_000_000)
	if err := b.tracker.PublishedAt(ctx, "world", 0, 5, t0); err != nil {
		t.Fatal(err)
	}
	b.sync(t, ids[0], 5, t0.Add(time.Second))
	items, err := b.tracker.Items(ctx, "world", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var synced []int64
	for _, it := range items {
		synced = append(synced, it.Platforms["android"].Synced)
	}
	if got := fmt.Sprint(synced); got != "[0 0 0 1 1]" {
		t.Errorf("synced per item after one receipt past 5 items: %s, want [0 0 0 1 1]", got)
	}
}

// TestEmptyAudienceIsCountedAgain: a feed's first item, published before
// any device followed it, has no audience; the next item, published while
// an audience count would still be reused, is counted afresh and has the
// devices that registered in between.
func TestEmptyAudienceIsCountedAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, freshness.Config{CensusEvery: time.Hour})
	at := time.Now()
	if err := b.tracker.PublishedAt(t.Context(), "world", 0, 1, at); err != nil {
		t.Fatal(err)
	}
	b.register(t, 3, "android", false, "world")
	if err := b.tracker.PublishedAt(t.Context(), "world", 1, 2, at.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	items, err := b.tracker.Items(t.Context(), "world", at.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 {
		t.Fatalf("got %d items, want 2", len(items))
	}
	if n := len(items[0].Platforms); n != 0 {
		t.Errorf("first item: %d platforms with an audience, want none", n)
	}
	if got := items[1].Platforms["android"].Audience; got != 3 {
		t.Errorf("second item: android audience %d, want 3 (counted again after an empty count)", got)
	}
}
