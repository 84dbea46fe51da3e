package fanout

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/events"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stats"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// TestPlanCountsThrottleStats: the planner itself adds the throttle's
// deferred and coalesced decisions to the fleet stats, per platform.
func TestPlanCountsThrottleStats(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb := redistest.Start(t)
	th, err := throttle.New(service.Archetype{Logger: discard()}, throttle.Config{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	store, err := events.New(events.Config{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := devices.New(service.Archetype{}, rdb, nil, devices.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := stats.NewRecorder(service.Archetype{Logger: discard()}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	a := service.Archetype{Logger: discard(), Registerer: prometheus.NewRegistry()}
	pl, err := New(a, Config{}, Deps{Events: store, Subscribers: reg, Decider: th, Stats: st})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{rdb: rdb, th: th, pl: pl}
	b.devices(t, 1, 300, 0) // even ids are iOS, odd ones Android
	b.subscribe(t, "a", 1, 300)
	b.publish(t, feedEvent("e1", "a"))
	if got, want := counts(b.plan(t, "e1")), "done=true targeted=300 queued=0 deferred=300 coalesced=0 skipped=0 missing=0"; got != want {
		t.Fatalf("first event: got %s, want %s", got, want)
	}
	b.publish(t, feedEvent("e2", "a"))
	if got, want := counts(b.plan(t, "e2")), "done=true targeted=300 queued=0 deferred=0 coalesced=300 skipped=0 missing=0"; got != want {
		t.Fatalf("second event: got %s, want %s", got, want)
	}
	sum, err := st.Summarize(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, pf := range []string{"ios", "android"} {
		p := sum.Platforms[pf]
		if p == nil || p.Deferred != 150 || p.Coalesced != 150 {
			t.Errorf("%s stats: got %+v, want 150 deferred and 150 coalesced", pf, p)
		}
	}
}
