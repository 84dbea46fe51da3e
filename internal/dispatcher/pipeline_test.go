package dispatcher_test

import (
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/delivery"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// TestBreakingEventReachesEveryDevice runs one breaking event through the
// whole dispatcher (the same setup as BenchmarkBreakingFanout, on a small
// fleet) and checks that every device got exactly one push carrying the
// payload contract of docs/mobile.md, with the headers of its platform; and
// that the benchmark's bare loop sends pushes of the same shape, so the
// benchmark compares like with like.
func TestBreakingEventReachesEveryDevice(t *testing.T) {
	t.Parallel()
	bu := setupBench(t)
	const n, feed = 200, "headlines"
	devicestest.Write(t, bu.rdb, 1, n, func(uint64) string { return feed })
	bu.checkDevices(t, feed, 1, 4, 5, n)

	start := time.Now()
	event, err := bu.pipe.Submitter.Submit(t.Context(), breaking(feed, nil))
	if err != nil {
		t.Fatal(err)
	}
	pr := bu.waitSettled(t, event, n)
	if pr.Targeted != n || pr.Queued != n || pr.Sent != n {
		t.Fatalf("progress: got %+v, want %d targeted, queued and sent", pr, n)
	}
	if got := bu.emu.Count(); got != n {
		t.Fatalf("pushes at the emulator: got %d, want %d", got, n)
	}

	pipeline := map[uint64]pushemu.Delivery{}
	for id := uint64(1); id <= n; id++ {
		ds := bu.emu.Deliveries(devicestest.Token(id))
		if len(ds) != 1 {
			t.Fatalf("device %d: got %d pushes, want 1", id, len(ds))
		}
		d := ds[0]
		pipeline[id] = d
		pv, pl := devicestest.Kind(id)
		if string(d.Provider) != pv {
			t.Fatalf("device %d: provider got %s, want %s", id, d.Provider, pv)
		}
		want := map[string]string{
			"type": "nudge.sync", "task": "nudge.sync", "feeds": feed, "event": event,
			"reason": "breaking", "since": feed + ":120", "until": feed + ":125",
		}
		for k, v := range want {
			if d.Data[k] != v {
				t.Fatalf("device %d: data %s got %q, want %q (all: %v)", id, k, d.Data[k], v, d.Data)
			}
		}
		lane, sent, err := delivery.ParsePushID(d.Data["push_id"])
		if err != nil || lane != throttle.LaneBreaking {
			t.Fatalf("device %d: push_id %q: lane %q, err %v; want a breaking push id", id, d.Data["push_id"], lane, err)
		}
		ms, err := strconv.ParseInt(d.Data["sent_at"], 10, 64)
		if err != nil || time.UnixMilli(ms).Before(start.Add(-time.Second)) || time.UnixMilli(ms).After(time.Now()) {
			t.Fatalf("device %d: sent_at %q is not a Unix ms time within the test (push id time %v)", id, d.Data["sent_at"], sent)
		}
		wantType, wantPrio := "", "normal"
		if pl == "ios" {
			wantType, wantPrio = "background", "5"
		}
		if d.PushType != wantType || d.Priority != wantPrio || d.Alert {
			t.Fatalf("device %d (%s/%s): push type %q priority %q alert %v, want %q %q silent", id, pv, pl, d.PushType, d.Priority, d.Alert, wantType, wantPrio)
		}
	}

	bare := newBare(t, bu)
	const m = 20
	if err := bare.Send(t.Context(), buildBare(t, bare, 1, m, feed, event)); err != nil {
		t.Fatal(err)
	}
	for id := uint64(1); id <= m; id++ {
		ds := bu.emu.Deliveries(devicestest.Token(id)) // the emulator keeps the last one per token
		if len(ds) != 1 || bu.emu.CountToken(devicestest.Token(id)) != 2 {
			t.Fatalf("device %d: got %d pushes, want the pipeline's and the bare loop's", id, bu.emu.CountToken(devicestest.Token(id)))
		}
		b, p := ds[0], pipeline[id]
		if got, want := slices.Sorted(maps.Keys(b.Data)), slices.Sorted(maps.Keys(p.Data)); !slices.Equal(got, want) {
			t.Fatalf("device %d: bare data keys %v, pipeline data keys %v", id, got, want)
		}
		if b.Provider != p.Provider || b.PushType != p.PushType || b.Priority != p.Priority || b.TTL != p.TTL || b.Alert != p.Alert {
			t.Fatalf("device %d: bare push %s/%q/%q/%q/%v, pipeline push %s/%q/%q/%q/%v", id,
				b.Provider, b.PushType, b.Priority, b.TTL, b.Alert, p.Provider, p.PushType, p.Priority, p.TTL, p.Alert)
		}
	}
}
