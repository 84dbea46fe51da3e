package devices_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

// TestFreshnessAndMarkNudged: Freshness reads the latest of ct, sy and sn
// and the cursors asked for (0 for a feed never synced), an id without a
// hash does not exist; MarkNudged sets sn on Redis's clock, moving Last,
// and does not recreate a deleted device.
func TestFreshnessAndMarkNudged(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb := redistest.Start(t)
	reg, err := devices.New(service.Archetype{}, rdb, nil, devices.Config{})
	if err != nil {
		t.Fatal(err)
	}
	devicestest.Write(t, rdb, 1, 3, func(uint64) string { return "world" })
	ct := time.Now().Add(-10 * time.Hour).Unix()
	sy := time.Now().Add(-8 * time.Hour).UnixMilli()
	for _, f := range []struct {
		id     uint64
		fields []any
	}{
		{1, []any{"ct", ct}},
		{2, []any{"ct", ct, "sy", sy, "c:world", 7}},
	} {
		if err := rdb.HSet(ctx, keys.Device(f.id), f.fields...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.Del(ctx, keys.Device(3)).Err(); err != nil {
		t.Fatal(err)
	}
	feeds := [][]string{{"world", "tech"}, {"world", "tech"}, {"world"}}
	got, err := reg.Freshness(ctx, []uint64{1, 2, 3}, feeds)
	if err != nil {
		t.Fatal(err)
	}
	want := []devices.Freshness{
		{Exists: true, Last: ct * 1000, Cursors: []int64{0, 0}},
		{Exists: true, Last: sy, Cursors: []int64{7, 0}},
		{},
	}
	for i := range want {
		if got[i].Exists != want[i].Exists || got[i].Last != want[i].Last || len(got[i].Cursors) != len(want[i].Cursors) ||
			(len(want[i].Cursors) > 0 && (got[i].Cursors[0] != want[i].Cursors[0] || got[i].Cursors[1] != want[i].Cursors[1])) {
			t.Errorf("device %d: %+v, want %+v", i+1, got[i], want[i])
		}
	}
	before := time.Now().Add(-time.Second).UnixMilli()
	if err := reg.MarkNudged(ctx, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	got, err = reg.Freshness(ctx, []uint64{1, 2, 3}, feeds)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if got[i].Last < before {
			t.Errorf("device %d after MarkNudged: last %d, want Redis's now (after %d)", i+1, got[i].Last, before)
		}
	}
	if n, err := rdb.Exists(ctx, keys.Device(3)).Result(); err != nil || n != 0 {
		t.Errorf("deleted device 3 after MarkNudged: exists %d, %v: want it not recreated", n, err)
	}
}

// BenchmarkNudgedMemory reports the bytes per device that field sn (the
// last stale nudge) adds to $NUDGE_BENCH_DEVICES devices (default 100,000
// here) of the standard mix. It ignores b.N.
func BenchmarkNudgedMemory(b *testing.B) {
	n := uint64(100_000)
	if s := benchDevices(b); s != 1_000_000 {
		n = uint64(s)
	}
	rdb := redistest.StartServer(b).Client(b)
	reg, err := devices.New(service.Archetype{}, rdb, nil, devices.Config{})
	if err != nil {
		b.Fatal(err)
	}
	devicestest.Write(b, rdb, 1, n, func(id uint64) string { return "f" + strconv.FormatUint(id%3, 10) })
	before := usedMemory(b, rdb)
	ids := make([]uint64, 0, 4096)
	for id := uint64(1); id <= n; id++ {
		ids = append(ids, id)
		if len(ids) == cap(ids) || id == n {
			if err := reg.MarkNudged(b.Context(), ids); err != nil {
				b.Fatal(err)
			}
			ids = ids[:0]
		}
	}
	b.ReportMetric(float64(usedMemory(b, rdb)-before)/float64(n), "B/device")
	b.ReportMetric(0, "ns/op")
}
