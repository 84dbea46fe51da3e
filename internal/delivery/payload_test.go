package delivery_test

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// TestPayloadNamesOnlyTheDevicesFeeds sends one breaking sync on three
// feeds, each at its own cursor, to devices following every combination
// of those feeds and of a fourth feed outside the sync, over APNs and FCM.
// Every push that reaches the emulator must name exactly the sync's feeds
// its device follows, each with that feed's cursor; a device following
// none of them is not targeted and gets nothing.
func TestPayloadNamesOnlyTheDevicesFeeds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	syncFeeds := []string{"headlines", "sport", "world"}
	cursor := map[string]int64{"headlines": 11, "sport": 22, "world": 33}
	all := append(slices.Clone(syncFeeds), "tech")

	var devs []devices.Device
	want := map[string][]string{} // token -> expected feeds (nil: no push)
	for mask := 1; mask < 1<<len(all); mask++ {
		for _, provider := range []string{"apns", "fcm"} {
			var feeds, exp []string
			for i, f := range all {
				if mask&(1<<i) != 0 {
					feeds = append(feeds, f)
					if f != "tech" {
						exp = append(exp, f)
					}
				}
			}
			n := len(devs)
			reg := devices.Registration{Provider: provider, Token: fcmToken(3000 + n), Platform: "android", Feeds: feeds,
				Sync: devices.BackgroundSync{Enabled: true}}
			if provider == "apns" {
				reg.Token, reg.Platform = apnsToken(3000+n), "ios"
			}
			d, _, _, err := b.reg.Register(ctx, reg)
			if err != nil {
				t.Fatal(err)
			}
			devs = append(devs, d)
			want[d.Token] = exp
		}
	}
	targeted := 0
	for _, exp := range want {
		if exp != nil {
			targeted++
		}
	}

	id, err := b.planner.NewID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev := fanout.Event{ID: id, Feeds: syncFeeds, Lane: throttle.LaneBreaking, Reason: "breaking", Since: maps.Clone(cursor)}
	if _, err := b.planner.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if _, err := b.planner.Plan(ctx, id); err != nil {
		t.Fatal(err)
	}
	p := b.waitProgress(t, id, func(p fanout.Progress) bool { return p.Done && p.Ended() == p.Targeted })
	if p.Targeted != int64(targeted) || p.Sent != int64(targeted) {
		t.Fatalf("progress: got %+v, want %d targeted and sent", p, targeted)
	}
	for _, d := range devs {
		del := b.emu.Deliveries(d.Token)
		exp := want[d.Token]
		if exp == nil {
			if len(del) != 0 {
				t.Fatalf("device following none of the sync's feeds got %d pushes", len(del))
			}
			continue
		}
		if len(del) != 1 {
			t.Fatalf("device following %v got %d pushes, want 1", d.Feeds, len(del))
		}
		got := strings.Split(del[0].Data["feeds"], ",")
		slices.Sort(got)
		if !slices.Equal(got, exp) {
			t.Fatalf("device following %v: push names feeds %v, want %v", d.Feeds, got, exp)
		}
		var since []string
		for _, f := range exp {
			since = append(since, f+":"+strconv.FormatInt(cursor[f], 10))
		}
		if s := del[0].Data["since"]; s != strings.Join(since, ",") {
			t.Fatalf("device following %v: since %q, want %q", d.Feeds, s, strings.Join(since, ","))
		}
	}
}
