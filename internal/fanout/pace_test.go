package fanout

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// pushTimes returns the enqueue times (the stream ids' Redis time, ms) of
// the push jobs, by event, and fails on a device pushed twice for one.
func pushTimes(t *testing.T, b *bundle) map[string][]int64 {
	t.Helper()
	out := map[string][]int64{}
	seen := map[string]bool{}
	for _, q := range b.queued(t) {
		for _, ev := range q.Push.Events {
			k := ev + "/" + strconv.FormatUint(q.Push.Device, 10)
			if seen[k] {
				t.Fatalf("device %d pushed twice for %s", q.Push.Device, ev)
			}
			seen[k] = true
			out[ev] = append(out[ev], q.At.UnixMilli())
		}
	}
	return out
}

// spread returns the first and last time of ts and the most in one
// second counted from the first.
func spread(ts []int64) (first, last int64, peak int) {
	first, last = ts[0], ts[0]
	for _, v := range ts {
		first, last = min(first, v), max(last, v)
	}
	per := map[int64]int{}
	for _, v := range ts {
		per[(v-first)/1000]++
		peak = max(peak, per[(v-first)/1000])
	}
	return first, last, peak
}

// TestWakeRateSharedByReplicas: two planner replicas plan two events of
// one feed at once (the iOS and the Android half of 2,000 subscribers), at
// NUDGE_WAKE_RATE 200: together they keep the feed's rate, so the 2,000
// pushes spread over about 10 s (one replica alone would take 5 s for its
// half), and none is lost or doubled.
func TestWakeRateSharedByReplicas(t *testing.T) {
	t.Parallel()
	cfg := Config{WakeRate: 200}
	b := setup(t, nil, cfg, nil)
	second := newPlanner(t, b.rdb, cfg, b.th, func() time.Time { return t0 })
	b.devices(t, 1, 2000, 0)
	b.subscribe(t, "world", 1, 2000)
	// The audience reads each device's token: give them one.
	pipe := b.rdb.Pipeline()
	for id := uint64(1); id <= 2000; id++ {
		pipe.HSet(t.Context(), keys.Device(id), "tk", "t"+strconv.FormatUint(id, 10))
	}
	if _, err := pipe.Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	evs := []Event{
		{ID: "ios", Feeds: []string{"world"}, Lane: throttle.LaneBreaking, Reason: "breaking", Audience: &Audience{Platforms: []string{"ios"}}},
		{ID: "android", Feeds: []string{"world"}, Lane: throttle.LaneBreaking, Reason: "breaking", Audience: &Audience{Platforms: []string{"android"}}},
	}
	for _, ev := range evs {
		b.publish(t, ev)
	}
	var wg sync.WaitGroup
	prs := make([]Progress, 2)
	errs := make([]error, 2)
	for i, pl := range []*Planner{b.pl, second} {
		wg.Go(func() { prs[i], errs[i] = pl.Plan(t.Context(), evs[i].ID) })
	}
	wg.Wait()
	for i := range prs {
		if errs[i] != nil || !prs[i].Done || prs[i].Queued != 1000 {
			t.Fatalf("plan %s: got %s, %v; want done, 1000 queued", evs[i].ID, counts(prs[i]), errs[i])
		}
	}
	times := pushTimes(t, b)
	all := append(times["ios"], times["android"]...)
	if len(times["ios"]) != 1000 || len(times["android"]) != 1000 {
		t.Fatalf("pushes: %d ios, %d android, want 1000 each", len(times["ios"]), len(times["android"]))
	}
	first, last, peak := spread(all)
	if d := time.Duration(last-first) * time.Millisecond; d < 8*time.Second || d > 30*time.Second {
		t.Fatalf("2,000 pushes at 200/s spread over %v, want about 10s (8s to 30s)", d)
	}
	if peak > 400 {
		t.Fatalf("%d pushes in one second, want about 200 (at most 400)", peak)
	}
}

// TestWakeRateOffPacesNothing: without NUDGE_WAKE_RATE the fan-out is not
// paced and keeps no pacing state.
func TestWakeRateOffPacesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, Config{}, nil)
	b.devices(t, 1, 2000, 0)
	b.subscribe(t, "world", 1, 2000)
	b.publish(t, Event{ID: "e", Feeds: []string{"world"}, Lane: throttle.LaneBreaking, Reason: "breaking"})
	if pr := b.plan(t, "e"); pr.Queued != 2000 {
		t.Fatalf("plan: got %s, want 2000 queued", counts(pr))
	}
	first, last, _ := spread(pushTimes(t, b)["e"])
	if d := time.Duration(last-first) * time.Millisecond; d > 5*time.Second {
		t.Fatalf("unpaced fan-out of 2,000 spread over %v, want well under 5s", d)
	}
	if n, err := b.rdb.Exists(t.Context(), keys.Pace("world")).Result(); err != nil || n != 0 {
		t.Fatalf("pacing state without a wake rate: exists %d, %v", n, err)
	}
}
