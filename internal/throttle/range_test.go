package throttle

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestRangeInPush: a push names the closed range (since, until] of each
// feed its update named; merged updates name the union of their ranges
// (the smallest since, the largest until), so the merged push skips
// nothing; an update without ends names open ranges.
func TestRangeInPush(t *testing.T) {
	t.Parallel()
	redistest.Backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		e := setup(t, rdb, Config{})
		android := device{id: 9, pl: "android", bg: true}
		ios := device{id: 10, pl: "ios", bg: true}
		e.addDevices(t, android, ios)
		e.decide(t, t0, Update{Event: "e1", Feeds: []string{"a"}, Lane: LaneFeed, Reason: "feed",
			Since: map[string]int64{"a": 5}, Until: map[string]int64{"a": 8}}, android.id)
		e.decide(t, t0.Add(time.Minute), Update{Event: "e2", Feeds: []string{"a", "b"}, Lane: LaneFeed, Reason: "feed",
			Since: map[string]int64{"a": 8, "b": 40}, Until: map[string]int64{"a": 11, "b": 42}}, android.id)
		e.decide(t, t0, Update{Event: "e3", Feeds: []string{"a"}, Lane: LaneBreaking, Reason: "breaking",
			Since: map[string]int64{"a": 5}}, ios.id)
		e.step(t, t0.Add(3*time.Minute))
		ps := e.pushes(t)
		if len(ps[android.id]) != 1 || len(ps[ios.id]) != 1 {
			t.Fatalf("pushes: got %d and %d, want one each", len(ps[android.id]), len(ps[ios.id]))
		}
		p := ps[android.id][0]
		if got := fmt.Sprint(p.Since, p.Until); got != "map[a:5 b:40] map[a:11 b:42]" {
			t.Fatalf("merged push: since, until %s, want map[a:5 b:40] map[a:11 b:42]", got)
		}
		if p := ps[ios.id][0]; !maps.Equal(p.Since, map[string]int64{"a": 5}) || p.Until != nil {
			t.Fatalf("push without ends: since %v until %v, want a:5 and none", p.Since, p.Until)
		}
	})
}
