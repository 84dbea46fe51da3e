package devices_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/redistest"
)

// TestRecordSync: a receipt stores the cursors of followed feeds, never
// lowers one, ignores feeds the device does not follow, stamps sy and
// deletes un; on a single server and on a cluster.
func TestRecordSync(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(fmt.Sprintf("cluster=%v", cluster), func(t *testing.T) {
			t.Parallel()
			b := setup(t, cluster)
			ctx := t.Context()
			d, _, _, err := b.reg.Register(ctx, reg(fcmToken(1), "world", "tech"))
			if err != nil {
				t.Fatal(err)
			}
			// Unanswered pushes (F2's counter) are cleared by any receipt.
			if err := b.rdb.HSet(ctx, devices.Key(d.ID), "un", 3).Err(); err != nil {
				t.Fatal(err)
			}
			before := time.Now().Add(-time.Minute)
			s, err := b.reg.RecordSync(ctx, d.ID, map[string]int64{"world": 7, "sport": 9})
			if err != nil {
				t.Fatal(err)
			}
			if s.Platform != "android" || !s.Background || s.At.Before(before) {
				t.Errorf("synced %+v: want android, background on, At now", s)
			}
			if want := []devices.Advance{{Feed: "world", From: devices.NeverSynced, To: 7}}; !slices.Equal(s.Advanced, want) {
				t.Errorf("advanced %+v, want %+v (sport is not followed)", s.Advanced, want)
			}
			if n, _ := b.rdb.HExists(ctx, devices.Key(d.ID), "un").Result(); n {
				t.Error("un still set after a receipt")
			}
			if n, _ := b.rdb.HExists(ctx, devices.Key(d.ID), "c:sport").Result(); n {
				t.Error("cursor of an unfollowed feed stored")
			}
			last, err := b.reg.LastSync(ctx, d.ID)
			if err != nil || !last.Equal(s.At) {
				t.Errorf("LastSync = %v, %v; want %v", last, err, s.At)
			}

			// A late receipt with an older cursor lowers nothing; a newer one advances.
			s, err = b.reg.RecordSync(ctx, d.ID, map[string]int64{"world": 5, "tech": 2})
			if err != nil {
				t.Fatal(err)
			}
			if want := []devices.Advance{{Feed: "tech", From: devices.NeverSynced, To: 2}}; !slices.Equal(s.Advanced, want) {
				t.Errorf("advanced %+v, want %+v", s.Advanced, want)
			}
			if c, ok, err := b.reg.Cursor(ctx, d.ID, "world"); err != nil || !ok || c != 7 {
				t.Errorf("world cursor = %d %v %v, want 7 after a late receipt with 5", c, ok, err)
			}
			s, err = b.reg.RecordSync(ctx, d.ID, map[string]int64{"world": 12})
			if err != nil {
				t.Fatal(err)
			}
			if want := []devices.Advance{{Feed: "world", From: 7, To: 12}}; !slices.Equal(s.Advanced, want) {
				t.Errorf("advanced %+v, want %+v", s.Advanced, want)
			}
			if _, ok, _ := b.reg.Cursor(ctx, d.ID, "sport"); ok {
				t.Error("sport has a cursor")
			}

			// A receipt without cursors (nothing synced) still stamps sy.
			if err := b.rdb.HSet(ctx, devices.Key(d.ID), "un", 1, "sy", 1).Err(); err != nil {
				t.Fatal(err)
			}
			if s, err = b.reg.RecordSync(ctx, d.ID, nil); err != nil || len(s.Advanced) != 0 {
				t.Fatalf("empty receipt: %+v %v", s, err)
			}
			if last, _ := b.reg.LastSync(ctx, d.ID); last.Before(before) {
				t.Errorf("sy = %v after an empty receipt, want now", last)
			}
			if n, _ := b.rdb.HExists(ctx, devices.Key(d.ID), "un").Result(); n {
				t.Error("un still set after an empty receipt")
			}

			if err := b.reg.Delete(ctx, d.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := b.reg.RecordSync(ctx, d.ID, map[string]int64{"world": 20}); !errors.Is(err, devices.ErrNotFound) {
				t.Errorf("receipt of a deleted device: %v, want ErrNotFound", err)
			}
			if n, _ := b.rdb.Exists(ctx, devices.Key(d.ID)).Result(); n != 0 {
				t.Error("a receipt recreated a deleted device's hash")
			}
		})
	}
}

// TestAudience counts the existing, background-enabled subscribers of a
// feed per platform.
func TestAudience(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := t.Context()
	for i := range 10 {
		r := reg(fcmToken(100+i), "world")
		if i%3 == 0 {
			r.Provider, r.Platform, r.Token = "apns", "ios", fmt.Sprintf("%064x", i)
		}
		if i == 4 {
			r.Sync.Enabled = false
		}
		if i == 5 {
			r.Feeds = []string{"tech"}
		}
		d, _, _, err := b.reg.Register(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if i == 7 {
			if err := b.reg.Delete(ctx, d.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	// ios: 0, 3, 6, 9; android: 1, 2, 8 (4 is off, 5 follows tech, 7 is deleted).
	got, err := b.reg.Audience(ctx, "world")
	if err != nil {
		t.Fatal(err)
	}
	if got["ios"] != 4 || got["android"] != 3 || len(got) != 2 {
		t.Errorf("Audience(world) = %v, want ios 4, android 3", got)
	}
}

// BenchmarkSyncMemoryPerDevice registers N devices following 3 feeds, then
// posts one receipt per device with a cursor for each (realistic 7-digit
// cursors), and reports what the sync fields (sy and three c:<feed>) add
// per device in used_memory. N: $NUDGE_BENCH_DEVICES (default 1,000,000).
func BenchmarkSyncMemoryPerDevice(b *testing.B) {
	n := benchDevices(b)
	rdb := redistest.StartServer(b).Client(b)
	reg, ids := registerAPNsFleet(b, rdb, n, "world", "tech", "sport")
	before := usedMemory(b, rdb)
	start := time.Now()
	inParallel(b, 64, n, func(i int) error {
		_, err := reg.RecordSync(b.Context(), ids[i], map[string]int64{"world": 1_234_567, "tech": 2_345_678, "sport": 3_456_789})
		return err
	})
	took := time.Since(start)
	after := usedMemory(b, rdb)
	b.ReportMetric(float64(after-before)/float64(n), "B/device")
	b.ReportMetric(float64(n)/took.Seconds(), "receipts/s")
	b.ReportMetric(float64(n), "devices")
}
