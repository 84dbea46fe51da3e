package throttle

import (
	"slices"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func alertUpdate(ev string) Update {
	return Update{Event: ev, Feeds: []string{"news"}, Lane: LaneAlert, Reason: "breaking", Since: map[string]int64{"news": 7},
		Alert: &Alert{Title: "Title " + ev, Body: `"quoted" body`}}
}

// TestAlertLane checks the alert lane on a simulated clock: an alert goes
// out at once over a spent silent budget and absorbs the pending push, it
// counts against the budget, a re-run is a duplicate, and the alert guard
// holds back the alert over AlertLimit per AlertWindow to the (silent)
// breaking lane, counted as held, until the window has passed.
func TestAlertLane(t *testing.T) {
	t.Parallel()
	redistest.Backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		pol := Policy{Limit: 1, Window: time.Hour, MinGap: 10 * time.Minute, Debounce: time.Minute, MaxWait: 5 * time.Minute}
		e := setup(t, rdb, Config{IOS: pol, Android: pol, AlertLimit: 2, AlertWindow: time.Hour})
		e.addDevices(t, device{id: 1, pl: "ios", bg: true}, device{id: 2, pl: "android", bg: true}, device{id: 3, pl: "ios", bg: false})

		// Device 1 spends its budget, then gets a pending feed push.
		if c := e.decide(t, t0, breaking("b1"), 1); c.Queued != 1 {
			t.Fatalf("spend: %+v", c)
		}
		if c := e.decide(t, t0.Add(time.Second), feedUpdate("f1", 3, "sport"), 1); c.Deferred != 1 {
			t.Fatalf("pending: %+v", c)
		}
		at := t0.Add(2 * time.Second)
		c := e.decide(t, at, alertUpdate("a1"), 1, 2, 3)
		if c.Queued != 2 || c.Skipped != 1 || c.Held != 0 {
			t.Fatalf("first alert: got %+v, want 2 queued at once, 1 skipped (opted out)", c)
		}
		ps := e.pushes(t)
		got := ps[1][len(ps[1])-1]
		if got.Lane != LaneAlert || !slices.Equal(got.Events, []string{"f1", "a1"}) || !slices.Contains(got.Feeds, "sport") || got.Since["sport"] != 3 || got.Since["news"] != 7 {
			t.Fatalf("device 1 alert push: got %+v, want the pending f1 absorbed", got)
		}
		// The alert rides in the job: on both the cold path (device 2,
		// never seen) and the merging one (device 1); silent pushes carry none.
		for _, dev := range []uint64{1, 2} {
			a := ps[dev][len(ps[dev])-1].Alert
			if a == nil || *a != (Alert{Title: "Title a1", Body: `"quoted" body`}) {
				t.Fatalf("device %d alert push: alert %+v, want a1's", dev, a)
			}
		}
		if a := ps[1][0].Alert; a != nil {
			t.Fatalf("device 1 breaking push: alert %+v, want none", a)
		}
		if m := e.step(t, t0.Add(2*time.Hour)); m.Queued != 0 {
			t.Fatalf("a pending push survived the alert: %+v", m)
		}
		// The alert used device 2's silent budget: a silent sync waits.
		if c := e.decide(t, at.Add(time.Second), breaking("b2"), 2); c.Queued != 0 || c.Deferred != 1 {
			t.Fatalf("silent after alert: got %+v, want deferred", c)
		}
		// A re-run of the alert is a duplicate with its original outcome.
		if c := e.decide(t, at.Add(2*time.Second), alertUpdate("a1"), 1); c.Duplicate != 1 || c.Queued != 1 {
			t.Fatalf("re-run: got %+v", c)
		}
		if c := e.decide(t, at.Add(time.Minute), alertUpdate("a2"), 1); c.Queued != 1 || c.Held != 0 {
			t.Fatalf("second alert: got %+v", c)
		}
		// Third alert within the hour: held back to the silent breaking
		// lane, under the spent budget (deferred).
		c = e.decide(t, at.Add(2*time.Minute), alertUpdate("a3"), 1)
		if c.Held != 1 || c.Deferred != 1 || c.Queued != 0 {
			t.Fatalf("third alert: got %+v, want held and deferred", c)
		}
		// Once the window has passed, alerts go out again.
		c = e.decide(t, at.Add(time.Hour+time.Second), alertUpdate("a4"), 1)
		if c.Queued != 1 || c.Held != 0 {
			t.Fatalf("alert after the window: got %+v", c)
		}
		ps = e.pushes(t)
		last := ps[1][len(ps[1])-1]
		if last.Lane != LaneAlert || !slices.Contains(last.Events, "a3") || !slices.Contains(last.Events, "a4") {
			t.Fatalf("alert after the window: got %+v, want it to carry the held a3", last)
		}
		if last.Alert == nil || last.Alert.Title != "Title a4" {
			t.Fatalf("alert after the window: alert %+v, want a4's (the held a3 rides silently)", last.Alert)
		}
		for _, p := range ps[1] {
			if p.Lane != LaneAlert && slices.Contains(p.Events, "a3") {
				t.Fatalf("held alert went out on its own: %+v", p)
			}
		}
	})
}
