package throttle

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

var t0 = time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)

type env struct {
	rdb redis.UniversalClient
	th  *Throttle
}

// simNowLua replaces the scripts' server_now in the simulated-time
// variants the policy tests run: it returns the time the test set in
// simnow:{pN}, the partition's key of the call's first key, instead of
// Redis's TIME. The policy is hours long, so those tests walk a simulated
// clock; TestRedisClock runs the production scripts on Redis's clock with
// a policy of milliseconds.
const simNowLua = `
local function server_now()
  return redis.call('GET', 'simnow:' .. string.match(KEYS[1], '{[^}]*}'))
end
`

// simulated returns a simulated-time variant of a decide or move script
// body.
func simulated(body string) *redis.Script {
	return redis.NewScript(luaPrelude + simNowLua + body)
}

var (
	simDecide = simulated(decideLua)
	simMove   = simulated(moveLua)
	simDue    = redis.NewScript(luaCommon + simNowLua + dueLua)
)

// setNow sets the simulated time of every partition.
func (e *env) setNow(t testing.TB, now time.Time) {
	t.Helper()
	pipe := e.rdb.Pipeline()
	for p := range keys.Partitions {
		pipe.Set(t.Context(), "simnow:"+keys.Tag(p), now.UnixMilli(), 0)
	}
	if _, err := pipe.Exec(t.Context()); err != nil {
		t.Fatalf("set the simulated time: %v", err)
	}
}

// setup flushes the backend and returns a fresh Throttle on it that
// decides on a simulated clock, set to t0.
func setup(t testing.TB, rdb redis.UniversalClient, cfg Config) *env {
	t.Helper()
	ctx := t.Context()
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.FlushAll(ctx).Err() })
	} else {
		err = rdb.FlushAll(ctx).Err()
	}
	if err != nil {
		t.Fatalf("flush: %v", err)
	}
	th, err := New(service.Archetype{Registerer: prometheus.NewRegistry()}, cfg, rdb)
	if err != nil {
		t.Fatalf("new throttle: %v", err)
	}
	th.decide, th.move, th.list = simDecide, simMove, simDue
	e := &env{rdb: rdb, th: th}
	e.setNow(t, t0)
	return e
}

// counts returns the counts of m, without its dropped event ids, for
// comparing.
func counts(m Moves) [5]int64 {
	return [5]int64{m.Queued, m.Rescheduled, m.Skipped, m.Missing, m.Stale}
}

type device struct {
	id uint64
	pl string // "ios" | "android"
	bg bool
	mi int // seconds
}

func (e *env) addDevices(t testing.TB, devs ...device) {
	t.Helper()
	pipe := e.rdb.Pipeline()
	for _, d := range devs {
		bg := "1"
		if !d.bg {
			bg = "0"
		}
		pipe.HSet(t.Context(), devices.Key(d.id), "tk", "t"+strconv.FormatUint(d.id, 10), "pl", d.pl, "bg", bg, "mi", strconv.Itoa(d.mi))
	}
	if _, err := pipe.Exec(t.Context()); err != nil {
		t.Fatalf("add devices: %v", err)
	}
}

// pushes reads every push job from the push streams, by device.
func (e *env) pushes(t testing.TB) map[uint64][]Push {
	t.Helper()
	out := map[uint64][]Push{}
	for p := range keys.Partitions {
		msgs, err := e.rdb.XRange(t.Context(), jobs.Stream(keys.PushQueue, p), "-", "+").Result()
		if err != nil {
			t.Fatalf("xrange partition %d: %v", p, err)
		}
		for _, m := range msgs {
			s, _ := m.Values["p"].(string)
			job, err := DecodePush([]byte(s))
			if err != nil {
				t.Fatalf("partition %d entry %s: %v", p, m.ID, err)
			}
			// Alerts and escaped strings are left to encoding/json.
			checkFastDecode(t, []byte(s), job.Lane != LaneAlert && !strings.Contains(s, `\`))
			if keys.Partition(job.Device) != p {
				t.Fatalf("push for device %d in partition %d", job.Device, p)
			}
			out[job.Device] = append(out[job.Device], job)
		}
	}
	for _, ps := range out {
		slices.SortStableFunc(ps, func(a, b Push) int { return a.QueuedAt.Compare(b.QueuedAt) })
	}
	return out
}

func (e *env) decide(t *testing.T, now time.Time, u Update, ids ...uint64) Counts {
	t.Helper()
	e.setNow(t, now)
	c, err := e.th.Decide(t.Context(), u, ids)
	if err != nil {
		t.Fatalf("decide %s: %v", u.Event, err)
	}
	return c
}

func (e *env) step(t *testing.T, now time.Time) Moves {
	t.Helper()
	e.setNow(t, now)
	m, err := e.th.Step(t.Context(), 100)
	if err != nil {
		t.Fatalf("step at %s: %v", now.Sub(t0), err)
	}
	return m
}

func feedUpdate(ev string, since int64, feeds ...string) Update {
	s := map[string]int64{}
	for _, f := range feeds {
		s[f] = since
	}
	return Update{Event: ev, Feeds: feeds, Lane: LaneFeed, Reason: "feed", Since: s}
}

func breaking(ev string) Update {
	return Update{Event: ev, Feeds: []string{"news"}, Lane: LaneBreaking, Reason: "breaking"}
}

func TestScenarios(t *testing.T) {
	t.Parallel()
	ios := device{id: 7, pl: "ios", bg: true}
	android := device{id: 8, pl: "android", bg: true}
	tests := []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"feed update waits the debounce", func(t *testing.T, e *env) {
			e.addDevices(t, ios)
			if got := e.decide(t, t0, feedUpdate("e1", 5, "a"), ios.id); got != (Counts{Deferred: 1, IOS: PlatformCounts{Deferred: 1}}) {
				t.Fatalf("counts: got %+v, want one deferred", got)
			}
			if m := e.step(t, t0.Add(2*time.Minute-time.Millisecond)); m.Queued != 0 {
				t.Fatalf("moved before the debounce: got %+v", m)
			}
			if m := e.step(t, t0.Add(2*time.Minute)); m.Queued != 1 {
				t.Fatalf("moved at the debounce: got %+v, want 1 queued", m)
			}
			ps := e.pushes(t)[ios.id]
			if len(ps) != 1 || !ps[0].QueuedAt.Equal(t0.Add(2*time.Minute)) || ps[0].Events[0] != "e1" || ps[0].Since["a"] != 5 {
				t.Fatalf("pushes: got %+v, want one for e1 at +2m since a=5", ps)
			}
		}},
		{"breaking goes out at once", func(t *testing.T, e *env) {
			e.addDevices(t, ios)
			if got := e.decide(t, t0, breaking("b1"), ios.id); got != (Counts{Queued: 1}) {
				t.Fatalf("counts: got %+v, want one queued", got)
			}
			ps := e.pushes(t)[ios.id]
			if len(ps) != 1 || ps[0].Lane != LaneBreaking || ps[0].CollapseID() != "n7-b1" {
				t.Fatalf("pushes: got %+v, want one breaking push with collapse id n7-b1", ps)
			}
		}},
		{"breaking respects the budget", func(t *testing.T, e *env) {
			e.addDevices(t, ios)
			for i, at := range []time.Duration{0, 10 * time.Minute, 20 * time.Minute} {
				if got := e.decide(t, t0.Add(at), breaking(fmt.Sprint("b", i)), ios.id); got.Queued != 1 {
					t.Fatalf("breaking %d: got %+v, want queued", i, got)
				}
			}
			if got := e.decide(t, t0.Add(30*time.Minute), breaking("b3"), ios.id); got.Deferred != 1 {
				t.Fatalf("fourth breaking within the hour: got %+v, want deferred", got)
			}
			if m := e.step(t, t0.Add(time.Hour-time.Millisecond)); m.Queued != 0 {
				t.Fatalf("moved before the window allows: got %+v", m)
			}
			if m := e.step(t, t0.Add(time.Hour)); m.Queued != 1 {
				t.Fatalf("moved when the window allows: got %+v, want 1", m)
			}
			if n := len(e.pushes(t)[ios.id]); n != 4 {
				t.Fatalf("pushes: got %d, want 4", n)
			}
		}},
		{"updates coalesce with the min since", func(t *testing.T, e *env) {
			e.addDevices(t, android)
			e.decide(t, t0, feedUpdate("e1", 5, "a"), android.id)
			u := feedUpdate("e2", 7, "a", "b")
			u.Since["a"] = 3
			if got := e.decide(t, t0.Add(time.Minute), u, android.id); got != (Counts{Coalesced: 1, Android: PlatformCounts{Coalesced: 1}}) {
				t.Fatalf("counts: got %+v, want one coalesced", got)
			}
			e.step(t, t0.Add(3*time.Minute))
			ps := e.pushes(t)[android.id]
			if len(ps) != 1 {
				t.Fatalf("pushes: got %d, want 1", len(ps))
			}
			p := ps[0]
			if fmt.Sprint(p.Events, p.Feeds, p.Since["a"], p.Since["b"]) != "[e1 e2] [a b] 3 7" {
				t.Fatalf("push: got events %v feeds %v since %v, want [e1 e2] [a b] a=3 b=7", p.Events, p.Feeds, p.Since)
			}
		}},
		{"max wait caps the debounce", func(t *testing.T, e *env) {
			e.addDevices(t, android)
			for i := range 20 {
				now := t0.Add(time.Duration(i) * time.Minute)
				e.decide(t, now, feedUpdate(fmt.Sprint("e", i), int64(i), "a"), android.id)
				e.step(t, now)
			}
			ps := e.pushes(t)[android.id]
			if len(ps) == 0 || !ps[0].QueuedAt.Equal(t0.Add(15*time.Minute)) || len(ps[0].Events) != 16 {
				t.Fatalf("pushes: got %+v, want the first at +15m with 16 events", ps)
			}
		}},
		{"breaking flushes a pending feed push", func(t *testing.T, e *env) {
			e.addDevices(t, android)
			e.decide(t, t0, feedUpdate("e1", 5, "a"), android.id)
			if got := e.decide(t, t0.Add(time.Minute), breaking("b1"), android.id); got != (Counts{Queued: 1}) {
				t.Fatalf("counts: got %+v, want queued", got)
			}
			ps := e.pushes(t)[android.id]
			if len(ps) != 1 || len(ps[0].Events) != 2 || ps[0].Lane != LaneBreaking {
				t.Fatalf("pushes: got %+v, want one breaking push for e1 and b1", ps)
			}
			if n, _ := e.th.DueCount(t.Context()); n != 0 {
				t.Fatalf("due after flush: got %d, want 0", n)
			}
		}},
		{"min_interval makes the gap stricter", func(t *testing.T, e *env) {
			d := device{id: 9, pl: "android", bg: true, mi: 1800}
			e.addDevices(t, d)
			e.decide(t, t0, breaking("b1"), d.id)
			if got := e.decide(t, t0.Add(10*time.Minute), breaking("b2"), d.id); got.Deferred != 1 {
				t.Fatalf("second breaking: got %+v, want deferred", got)
			}
			if m := e.step(t, t0.Add(30*time.Minute-time.Millisecond)); m.Queued != 0 {
				t.Fatalf("moved before min_interval: got %+v", m)
			}
			if m := e.step(t, t0.Add(30*time.Minute)); m.Queued != 1 {
				t.Fatalf("moved at min_interval: got %+v, want 1", m)
			}
		}},
		{"opted out gets nothing", func(t *testing.T, e *env) {
			d := device{id: 10, pl: "ios"}
			e.addDevices(t, d)
			if got := e.decide(t, t0, breaking("b1"), d.id); got != (Counts{Skipped: 1}) {
				t.Fatalf("counts: got %+v, want skipped", got)
			}
			if n := len(e.pushes(t)); n != 0 {
				t.Fatalf("pushes: got %d devices, want 0", n)
			}
		}},
		{"opting out drops the pending push", func(t *testing.T, e *env) {
			e.addDevices(t, ios)
			e.decide(t, t0, feedUpdate("e1", 1, "a"), ios.id)
			e.addDevices(t, device{id: ios.id, pl: "ios"})
			if m := e.step(t, t0.Add(time.Hour)); counts(m) != counts(Moves{Skipped: 1}) || !slices.Equal(m.Dropped, []string{"e1"}) {
				t.Fatalf("moves: got %+v, want one skipped, dropping e1", m)
			}
			if n := len(e.pushes(t)); n != 0 {
				t.Fatalf("pushes: got %d devices, want 0", n)
			}
		}},
		{"a pending push dropped outside the scheduler is reported by its next step", func(t *testing.T, e *env) {
			e.addDevices(t, ios, android)
			e.decide(t, t0, feedUpdate("e1", 1, "a"), ios.id, android.id)
			if err := e.th.Forget(t.Context(), ios.id); err != nil {
				t.Fatal(err)
			}
			if err := e.rdb.Del(t.Context(), devices.Key(android.id)).Err(); err != nil {
				t.Fatal(err)
			}
			if got := e.decide(t, t0.Add(time.Second), feedUpdate("e2", 1, "a"), android.id); got != (Counts{Missing: 1}) {
				t.Fatalf("counts: got %+v, want missing", got)
			}
			if m := e.step(t, t0.Add(time.Second)); counts(m) != counts(Moves{}) || !slices.Equal(m.Dropped, []string{"e1", "e1"}) {
				t.Fatalf("moves: got %+v, want nothing moved and e1 reported twice (forgotten, gone)", m)
			}
			if m := e.step(t, t0.Add(2*time.Second)); len(m.Dropped) != 0 {
				t.Fatalf("second step: got %+v, want the drops reported once", m)
			}
			// Forget drops a state whatever its content.
			if err := e.rdb.HSet(t.Context(), keys.Throttle(keys.Partition(ios.id)), strconv.FormatUint(ios.id, 10), "not a state").Err(); err != nil {
				t.Fatal(err)
			}
			if err := e.th.Forget(t.Context(), ios.id); err != nil {
				t.Fatalf("forget an unreadable state: %v", err)
			}
			if ok, err := e.rdb.HExists(t.Context(), keys.Throttle(keys.Partition(ios.id)), strconv.FormatUint(ios.id, 10)).Result(); err != nil || ok {
				t.Fatalf("unreadable state after Forget: present %v (%v), want gone", ok, err)
			}
		}},
		{"missing device", func(t *testing.T, e *env) {
			if got := e.decide(t, t0, breaking("b1"), 11, 12); got != (Counts{Missing: 2}) {
				t.Fatalf("counts: got %+v, want two missing", got)
			}
		}},
		{"max events keeps the newest and counts the dropped", func(t *testing.T, e *env) {
			e.th.cfg.MaxEvents = 3
			e.addDevices(t, android)
			for i := range 5 {
				e.decide(t, t0.Add(time.Duration(i)*time.Second), feedUpdate(fmt.Sprint("e", i), int64(10-i), "a"), android.id)
			}
			if m := e.step(t, t0.Add(3*time.Minute)); m.Queued != 1 || !slices.Equal(m.Dropped, []string{"e0", "e1"}) {
				t.Fatalf("moves: got %+v, want 1 queued and the dropped e0, e1 reported", m)
			}
			ps := e.pushes(t)[android.id]
			if len(ps) != 1 || fmt.Sprint(ps[0].Events, ps[0].Dropped, ps[0].Since["a"]) != "[e2 e3 e4] 2 6" {
				t.Fatalf("pushes: got %+v, want one with events [e2 e3 e4], 2 dropped, since a=6", ps)
			}
		}},
		{"ids and feeds with separators and quotes", func(t *testing.T, e *env) {
			e.addDevices(t, android)
			odd := []string{`e1`, `e10`, `a"e1`, `x\y`, "c,d:1", "tab\there", "ünï|q", "e1\u0000"}
			feeds := []string{`f"1`, "f:2", "f,3"}
			for i, ev := range odd {
				u := Update{Event: ev, Feeds: []string{feeds[i%3]}, Lane: LaneFeed, Reason: "re\"ason", Since: map[string]int64{feeds[i%3]: int64(100 - i)}}
				if got := e.decide(t, t0.Add(time.Duration(i)*time.Second), u, android.id); got.Duplicate != 0 {
					t.Fatalf("event %q: got %+v, want no duplicate", ev, got)
				}
			}
			again := Update{Event: `a"e1`, Feeds: []string{"f:2"}, Lane: LaneFeed, Reason: "feed"}
			if got := e.decide(t, t0.Add(time.Minute), again, android.id); got != (Counts{Coalesced: 1, Duplicate: 1}) {
				t.Fatalf("repeat of a\"e1: got %+v, want a coalesced duplicate", got)
			}
			e.step(t, t0.Add(time.Hour))
			ps := e.pushes(t)[android.id]
			if len(ps) != 1 || !slices.Equal(ps[0].Events, odd) || !slices.Equal(ps[0].Feeds, feeds) || ps[0].Reason != "re\"ason" {
				t.Fatalf("pushes: got %+v, want one with events %q and feeds %q", ps, odd, feeds)
			}
			if got := fmt.Sprint(ps[0].Since[`f"1`], ps[0].Since["f:2"], ps[0].Since["f,3"]); got != "94 93 95" {
				t.Fatalf("since: got %v, want the minimum per feed 94 93 95", ps[0].Since)
			}
		}},
		{"the scheduler settles a mixed batch", func(t *testing.T, e *env) {
			strict := device{id: 64 + ios.id, pl: "android", bg: true}
			off := device{id: 128 + ios.id, pl: "android", bg: true}
			gone := device{id: 192 + ios.id, pl: "ios", bg: true}
			e.addDevices(t, ios, strict, off, gone)
			e.decide(t, t0, breaking("b0"), strict.id)
			e.decide(t, t0.Add(time.Minute), feedUpdate("e1", 1, "a"), ios.id, strict.id, off.id, gone.id)
			e.addDevices(t, device{id: strict.id, pl: "android", bg: true, mi: 3600}, device{id: off.id, pl: "android"})
			if err := e.rdb.Del(t.Context(), devices.Key(gone.id)).Err(); err != nil {
				t.Fatalf("delete device: %v", err)
			}
			if m := e.step(t, t0.Add(5*time.Minute)); counts(m) != counts(Moves{Queued: 1, Rescheduled: 1, Skipped: 1, Missing: 1}) || !slices.Equal(m.Dropped, []string{"e1", "e1"}) {
				t.Fatalf("moves: got %+v, want one each of queued, rescheduled, skipped, missing, dropping e1 twice", m)
			}
			if n, _ := e.th.DueCount(t.Context()); n != 1 {
				t.Fatalf("due: got %d, want the rescheduled one", n)
			}
			if m := e.step(t, t0.Add(time.Hour)); counts(m) != counts(Moves{Queued: 1}) {
				t.Fatalf("moves at +1h: got %+v, want the rescheduled push queued", m)
			}
			if got := fmt.Sprint(len(e.pushes(t)[ios.id]), len(e.pushes(t)[strict.id]), len(e.pushes(t)[off.id])); got != "1 2 0" {
				t.Fatalf("pushes per device: got %s, want 1 2 0", got)
			}
		}},
		{"a large partition's state hash is a hash table", func(t *testing.T, e *env) {
			var devs []device
			var ids []uint64
			for i := range 200 {
				devs = append(devs, device{id: uint64(64 * (i + 1)), pl: "ios", bg: true})
				ids = append(ids, uint64(64*(i+1)))
			}
			e.addDevices(t, devs...)
			if got := e.decide(t, t0, feedUpdate("e1", 1, "a"), ids...); got.Deferred != 200 {
				t.Fatalf("counts: got %+v, want 200 deferred", got)
			}
			if enc, err := e.rdb.ObjectEncoding(t.Context(), keys.Throttle(0)).Result(); err != nil || enc != "hashtable" {
				t.Fatalf("encoding of %s: got %q (%v), want hashtable", keys.Throttle(0), enc, err)
			}
			if m := e.step(t, t0.Add(time.Hour)); counts(m) != counts(Moves{Queued: 200}) {
				t.Fatalf("moves: got %+v, want 200 queued over two rounds", m)
			}
		}},
		{"an event applied twice counts once", func(t *testing.T, e *env) {
			e.addDevices(t, ios, android)
			first := e.decide(t, t0, feedUpdate("e1", 1, "a"), ios.id, android.id)
			again := e.decide(t, t0.Add(time.Second), feedUpdate("e1", 1, "a"), ios.id, android.id, ios.id)
			if first != (Counts{Deferred: 2, IOS: PlatformCounts{Deferred: 1}, Android: PlatformCounts{Deferred: 1}}) || again != (Counts{Deferred: 3, Duplicate: 3}) {
				t.Fatalf("counts: got %+v then %+v, want 2 deferred then 3 deferred duplicates", first, again)
			}
			e.decide(t, t0.Add(2*time.Second), breaking("b1"), ios.id)
			if got := e.decide(t, t0.Add(3*time.Second), breaking("b1"), ios.id); got != (Counts{Queued: 1, Duplicate: 1}) {
				t.Fatalf("repeated breaking: got %+v, want queued duplicate", got)
			}
			if n := len(e.pushes(t)[ios.id]); n != 1 {
				t.Fatalf("pushes: got %d, want 1", n)
			}
		}},
	}
	redistest.Backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				tc.run(t, setup(t, rdb, Config{}))
			})
		}
	})
}

// update is one update a device received in the property test.
type update struct {
	at    time.Time
	event string
	feed  string
	since int64
}

// TestProperties runs random update schedules for thousands of devices on
// a simulated clock and checks the policy's guarantees on the pushes the
// scripts wrote to the streams.
func TestProperties(t *testing.T) {
	t.Parallel()
	const (
		devices  = 2000
		maxStep  = 90 * time.Second
		duration = 8 * time.Hour
	)
	cfg := Config{MaxEvents: 10000, Remember: 4}
	redistest.Backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		e := setup(t, rdb, cfg)
		pol := map[string]Policy{"ios": e.th.cfg.IOS, "android": e.th.cfg.Android}
		rng := rand.New(rand.NewPCG(1, 2))
		devs := make([]device, devices)
		heat := make([]float64, devices)
		for i := range devs {
			d := device{id: uint64(i + 1), pl: "android", bg: rng.IntN(10) > 0}
			if rng.IntN(2) == 0 {
				d.pl = "ios"
			}
			d.mi = []int{0, 0, 0, 60, 900, 2400}[rng.IntN(6)]
			devs[i] = d
			heat[i] = []float64{0.02, 0.1, 0.5}[rng.IntN(3)]
		}
		e.addDevices(t, devs...)

		got := map[uint64][]update{}
		var want, sum Counts
		now := t0
		feeds := []string{"a", "b", "c", "d"}
		var last struct {
			u   Update
			ids []uint64
		}
		for n := 0; now.Before(t0.Add(duration + 3*time.Hour)); n++ {
			now = now.Add(time.Duration(5+rng.IntN(int(maxStep/time.Second)-4)) * time.Second)
			if now.Before(t0.Add(duration)) && rng.IntN(2) == 0 {
				f := feeds[rng.IntN(len(feeds))]
				u := Update{Event: fmt.Sprint("e", n), Feeds: []string{f}, Lane: LaneFeed, Reason: "feed", Since: map[string]int64{f: int64(n)}}
				if rng.IntN(7) == 0 {
					u.Lane, u.Reason = LaneBreaking, "breaking"
				}
				var ids []uint64
				for i, d := range devs {
					if rng.Float64() < heat[i] {
						ids = append(ids, d.id)
						got[d.id] = append(got[d.id], update{at: now, event: u.Event, feed: f, since: int64(n)})
						if d.bg {
							want.Queued++ // any applied outcome; compared as a total below
						} else {
							want.Skipped++
						}
					}
				}
				sum.Add(e.decide(t, now, u, ids...))
				last.u, last.ids = u, ids
			} else if last.ids != nil && rng.IntN(10) == 0 {
				// A re-run of the previous event (a planner retry): no effect.
				c := e.decide(t, now, last.u, last.ids...)
				if c.Duplicate+c.Skipped != int64(len(last.ids)) {
					t.Fatalf("re-run of %s: got %+v, want all %d duplicate or skipped", last.u.Event, c, len(last.ids))
				}
				last.ids = nil
			}
			e.step(t, now)
		}
		if applied := sum.Queued + sum.Deferred + sum.Coalesced; applied != want.Queued || sum.Skipped != want.Skipped || sum.Missing != 0 {
			t.Fatalf("decisions: got %+v, want %d applied and %d skipped", sum, want.Queued, want.Skipped)
		}
		if n, err := e.th.DueCount(t.Context()); err != nil || n != 0 {
			t.Fatalf("pending pushes after the flush: got %d (%v), want 0", n, err)
		}

		pushes := e.pushes(t)
		var checked int
		for _, d := range devs {
			ps := pushes[d.id]
			if !d.bg {
				if len(ps) != 0 {
					t.Fatalf("opted-out device %d got %d pushes", d.id, len(ps))
				}
				continue
			}
			p := pol[d.pl]
			gap := max(p.MinGap, time.Duration(d.mi)*time.Second)
			for i := range ps {
				if i > 0 && ps[i].QueuedAt.Sub(ps[i-1].QueuedAt) < gap {
					t.Fatalf("device %d (%s mi=%d): pushes at %s and %s, closer than %s", d.id, d.pl, d.mi, ps[i-1].QueuedAt.Sub(t0), ps[i].QueuedAt.Sub(t0), gap)
				}
				if i >= p.Limit && ps[i].QueuedAt.Sub(ps[i-p.Limit].QueuedAt) < p.Window {
					t.Fatalf("device %d (%s): %d pushes within %s (from %s to %s)", d.id, d.pl, p.Limit+1, p.Window, ps[i-p.Limit].QueuedAt.Sub(t0), ps[i].QueuedAt.Sub(t0))
				}
			}
			// Every update is covered by exactly one push, at or after it,
			// within max(allowAt, update+MaxWait) plus one scheduler step.
			where := map[string]int{}
			for i, x := range ps {
				for _, ev := range x.Events {
					if _, dup := where[ev]; dup {
						t.Fatalf("device %d: event %s in two pushes", d.id, ev)
					}
					where[ev] = i
				}
			}
			if len(where) != len(got[d.id]) {
				t.Fatalf("device %d: pushes cover %d events, want %d", d.id, len(where), len(got[d.id]))
			}
			for _, u := range got[d.id] {
				i, ok := where[u.event]
				if !ok {
					t.Fatalf("device %d: update %s at %s not covered", d.id, u.event, u.at.Sub(t0))
				}
				allow := u.at
				var before []time.Time
				for _, x := range ps {
					if x.QueuedAt.Before(u.at) {
						before = append(before, x.QueuedAt)
					}
				}
				if n := len(before); n > 0 {
					allow = maxTime(allow, before[n-1].Add(gap))
					if n >= p.Limit {
						allow = maxTime(allow, before[n-p.Limit].Add(p.Window))
					}
				}
				bound := maxTime(allow, u.at.Add(p.MaxWait)).Add(maxStep)
				at := ps[i].QueuedAt
				if at.Before(u.at) || at.After(bound) {
					t.Fatalf("device %d: update %s at %s pushed at %s, want within [%s, %s]", d.id, u.event, u.at.Sub(t0), at.Sub(t0), u.at.Sub(t0), bound.Sub(t0))
				}
				if s, ok := ps[i].Since[u.feed]; !ok || s > u.since || !slices.Contains(ps[i].Feeds, u.feed) {
					t.Fatalf("device %d: push %+v does not cover feed %s since %d", d.id, ps[i], u.feed, u.since)
				}
				checked++
			}
		}
		if checked < 10000 {
			t.Fatalf("checked only %d updates; the schedule is too thin to mean much", checked)
		}
		var sent int
		for _, ps := range pushes {
			sent += len(ps)
		}
		t.Logf("checked %d updates over %d devices, %d pushes", checked, devices, sent)
	})
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"max wait shorter than debounce", Config{IOS: Policy{Debounce: time.Hour}}, false},
		{"negative min gap", Config{Android: Policy{MinGap: -time.Second}}, false},
		{"negative remember", Config{Remember: -1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.withDefaults().validate()
			if (err == nil) != tc.ok {
				t.Fatalf("validate: got %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestCollapseID(t *testing.T) {
	t.Parallel()
	long := Push{Device: 1 << 40, Events: []string{string(make([]byte, 100)) + "tail"}}
	if n := len(long.CollapseID()); n != 64 {
		t.Fatalf("collapse id of a long event: got %d bytes, want 64", n)
	}
	if got := (Push{Device: 35, Events: []string{"e1", "e2"}}).CollapseID(); got != "nz-e1" {
		t.Fatalf("collapse id: got %q, want %q", got, "nz-e1")
	}
}

// TestShortcutsMatchGeneral runs one random schedule with the scripts'
// shortcuts (the coalesce fast path, the per-call memo of decisions and of
// scheduler moves) switched on and off, and checks that every run leaves
// byte-identical states, due sets and push jobs.
func TestShortcutsMatchGeneral(t *testing.T) {
	t.Parallel()
	// The production scripts have no switches: each variant rewrites the
	// line that takes a shortcut, and fails if that line is gone.
	cut := func(src string, edits ...string) string {
		t.Helper()
		for i := 0; i < len(edits); i += 2 {
			if strings.Count(src, edits[i]) != 1 {
				t.Fatalf("script has not exactly one %q to rewrite", edits[i])
			}
			src = strings.Replace(src, edits[i], edits[i+1], 1)
		}
		return src
	}
	noFast := []string{"return coalesce(raw, ne, k, t, pl, p, pol, mi) or general(raw, pol, mi)", "return general(raw, pol, mi)"}
	noMemo := []string{"r = m[raw or '']", "r = nil"}
	type scripts struct{ decide, move *redis.Script }
	variants := map[string]scripts{
		"no fast path": {simulated(cut(decideLua, noFast...)), simMove},
		"no memo":      {simulated(cut(decideLua, noMemo...)), simulated(cut(moveLua, "r = m[raw]", "r = nil"))},
		"neither":      {simulated(cut(decideLua, append(noFast, noMemo...)...)), simulated(cut(moveLua, "r = m[raw]", "r = nil"))},
	}
	run := func(t *testing.T, s scripts) map[string]string {
		e := setup(t, redistest.Start(t), Config{MaxEvents: 5, Remember: 3})
		e.th.decide, e.th.move = s.decide, s.move
		rng := rand.New(rand.NewPCG(7, 8))
		var devs []device
		for i := range 300 {
			devs = append(devs, device{id: uint64(i + 1), pl: []string{"ios", "android"}[i%2], bg: i%7 != 0, mi: []int{0, 0, 600}[i%3]})
		}
		e.addDevices(t, devs...)
		now := t0
		feeds := []string{"a", "b", `c"`}
		for n := range 300 {
			now = now.Add(time.Duration(rng.IntN(120)) * time.Second)
			f := feeds[rng.IntN(len(feeds))]
			u := Update{Event: fmt.Sprint("e", n), Feeds: []string{f}, Lane: LaneFeed, Reason: "feed", Since: map[string]int64{f: int64(rng.IntN(50))}}
			if rng.IntN(6) == 0 {
				u.Lane, u.Reason = LaneBreaking, "breaking"
			}
			var ids []uint64
			for _, d := range devs {
				if rng.IntN(3) == 0 {
					ids = append(ids, d.id)
				}
			}
			e.decide(t, now, u, ids...)
			if rng.IntN(4) == 0 {
				e.decide(t, now, u, ids...) // a re-run: duplicates
			}
			e.step(t, now)
		}
		out := map[string]string{}
		for p := range keys.Partitions {
			states, err := e.rdb.HGetAll(t.Context(), keys.Throttle(p)).Result()
			if err != nil {
				t.Fatalf("read states: %v", err)
			}
			for id, st := range states {
				out["state "+id] = st
			}
			due, err := e.rdb.ZRangeWithScores(t.Context(), keys.Due(p), 0, -1).Result()
			if err != nil {
				t.Fatalf("read due: %v", err)
			}
			for _, z := range due {
				out[fmt.Sprint("due ", z.Member)] = fmt.Sprint(z.Score)
			}
			msgs, err := e.rdb.XRange(t.Context(), jobs.Stream(keys.PushQueue, p), "-", "+").Result()
			if err != nil {
				t.Fatalf("read stream: %v", err)
			}
			for i, m := range msgs {
				out[fmt.Sprint("job ", p, " ", i)] = fmt.Sprint(m.Values["p"])
			}
		}
		return out
	}
	want := run(t, scripts{simDecide, simMove})
	if len(want) < 1000 {
		t.Fatalf("only %d entries to compare; the schedule is too thin to mean much", len(want))
	}
	for name, v := range variants {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := run(t, v)
			if len(got) != len(want) {
				t.Fatalf("entries: got %d, want %d as with every shortcut", len(got), len(want))
			}
			for k, w := range want {
				if got[k] != w {
					t.Fatalf("%s: got %q, want %q as with every shortcut", k, got[k], w)
				}
			}
		})
	}
}

// waits admits attempts with no reservation ahead and returns their waits;
// every attempt's device must exist.
func waits(t testing.TB, th *Throttle, attempts ...Attempt) []time.Duration {
	t.Helper()
	adm, err := th.Admit(t.Context(), attempts, AdmitOptions{Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]time.Duration, len(adm))
	for i, a := range adm {
		if a.Gone || a.Held {
			t.Fatalf("attempt %+v: %+v, want admitted or waiting", attempts[i], a)
		}
		out[i] = a.Wait
	}
	return out
}

// TestBudgetAtThePhone checks Admit and Settle on the Redis clock: a second
// push within the gap waits out the rest of it, a re-attempt of the same
// push does not wait for itself, a refused push frees its slot, and the
// K-per-W limit counts only pushes that may have reached the phone.
func TestBudgetAtThePhone(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb := redistest.Start(t)
	gapPol := Policy{Limit: 3, Window: time.Hour, MinGap: 10 * time.Minute}
	kPol := Policy{Limit: 2, Window: time.Hour, MinGap: time.Nanosecond}
	th, err := New(service.Archetype{}, Config{IOS: gapPol, Android: kPol}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{rdb: rdb, th: th}
	e.addDevices(t, device{id: 1, pl: "ios", bg: true}, device{id: 2, pl: "android", bg: true})
	admit := func(dev uint64, collapse string) time.Duration {
		t.Helper()
		return waits(t, th, Attempt{Device: dev, Collapse: collapse})[0]
	}
	settle := func(dev uint64, collapse string, s Settlement) {
		t.Helper()
		if err := th.Settle(ctx, []Attempt{{Device: dev, Collapse: collapse}}, []Settlement{s}); err != nil {
			t.Fatal(err)
		}
	}
	// Gap (iOS device 1).
	if w := admit(1, "a"); w != 0 {
		t.Fatalf("first push: wait %v, want 0", w)
	}
	if w := admit(1, "b"); w < 9*time.Minute || w > 10*time.Minute {
		t.Fatalf("push 2 right after push 1: wait %v, want nearly the 10m gap", w)
	}
	if w := admit(1, "a"); w != 0 {
		t.Fatalf("re-attempt of push 1: wait %v, want 0", w)
	}
	settle(1, "a", Refused)
	if w := admit(1, "b"); w != 0 {
		t.Fatalf("push 2 after push 1 was refused: wait %v, want 0", w)
	}
	settle(1, "b", Delivered)
	if w := admit(1, "c"); w < 9*time.Minute {
		t.Fatalf("push 3 right after push 2 was delivered: wait %v, want the gap", w)
	}
	// K per W (Android device 2: 2 per hour, no gap to speak of).
	for _, c := range []string{"x", "y"} {
		if w := admit(2, c); w != 0 {
			t.Fatalf("push %s: wait %v, want 0", c, w)
		}
		// No answer (not settled): it may have arrived.
	}
	if w := admit(2, "z"); w < 59*time.Minute {
		t.Fatalf("third push within the hour: wait %v, want about an hour", w)
	}
	settle(2, "x", Refused) // the first of two entries goes
	if w := admit(2, "z"); w != 0 {
		t.Fatalf("third push after one of two was refused: wait %v, want 0", w)
	}
	if w := admit(2, "w"); w < 59*time.Minute {
		t.Fatalf("fourth push: wait %v, want about an hour (y and z are in the window)", w)
	}
	// Forget drops the log with the rest of the state.
	if err := th.Forget(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if ok, err := rdb.HExists(ctx, keys.Throttle(keys.Partition(1)), "p1").Result(); err != nil || ok {
		t.Fatalf("phone log after Forget: exists %v, %v", ok, err)
	}
}

// TestAdmitChecksTheDeviceAtSendTime: Admit reads the device in the same
// call: a device deleted or opted out since planning is gone (nothing
// reserved), an admitted attempt carries the device's target, a silent
// push to an unresponsive device is held (an alert is not, and a retry of
// the push that made it unresponsive is not), and the reservation lies
// Ahead past the Redis clock. It runs on a single server and on a cluster:
// the script's keys share the partition's slot.
func TestAdmitChecksTheDeviceAtSendTime(t *testing.T) {
	t.Parallel()
	redistest.Backends(t, testAdmitChecksTheDevice)
}

func testAdmitChecksTheDevice(t *testing.T, rdb redis.UniversalClient) {
	ctx := t.Context()
	pol := Policy{Limit: 3, Window: time.Hour, MinGap: 10 * time.Minute}
	th, err := New(service.Archetype{}, Config{IOS: pol, Android: pol}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{rdb: rdb, th: th}
	e.addDevices(t, device{id: 1, pl: "ios", bg: true}, device{id: 2, pl: "android", bg: false})
	opt := AdmitOptions{Now: time.Now(), Unresponsive: devices.Unresponsive{After: 1}, Ahead: time.Minute}
	admit := func(a ...Attempt) []Admission {
		t.Helper()
		adm, err := th.Admit(ctx, a, opt)
		if err != nil {
			t.Fatal(err)
		}
		return adm
	}
	adm := admit(Attempt{Device: 1, Collapse: "a"}, Attempt{Device: 2, Collapse: "a"}, Attempt{Device: 3, Collapse: "a"})
	if !adm[0].Admitted() || adm[0].Target.Token != "t1" || adm[0].Target.Platform != "ios" || adm[0].Target.App != "default" {
		t.Fatalf("device 1: %+v, want admitted with its target", adm[0])
	}
	if !adm[1].Gone || !adm[2].Gone {
		t.Fatalf("opted-out device 2: %+v, deleted device 3: %+v, want both gone", adm[1], adm[2])
	}
	for _, id := range []uint64{2, 3} {
		if ok, err := rdb.HExists(ctx, keys.Throttle(keys.Partition(id)), "p"+strconv.FormatUint(id, 10)).Result(); err != nil || ok {
			t.Fatalf("device %d: phone log exists %v, %v; want nothing reserved", id, ok, err)
		}
	}
	// Device 1 has had After (1) silent push without a receipt: the next
	// silent push is held, a re-attempt of push a and an alert are not.
	if c, err := rdb.HGet(ctx, devices.UnresponsiveKey(1), "ios").Int(); err != nil || c != 1 {
		t.Fatalf("unresponsive iOS devices in partition 1: %d, %v; want 1", c, err)
	}
	if adm := admit(Attempt{Device: 1, Collapse: "b"}); !adm[0].Held || adm[0].Target.Token != "t1" {
		t.Fatalf("silent push b to unresponsive device 1: %+v, want held with its target", adm[0])
	}
	if adm := admit(Attempt{Device: 1, Collapse: "a"}); !adm[0].Admitted() {
		t.Fatalf("re-attempt of push a: %+v, want admitted", adm[0])
	}
	// The alert is admitted whatever the gap; the reservation of push a
	// lies a minute ahead, so a silent push after the alert waits the gap
	// from the alert's reservation, also a minute ahead.
	if adm := admit(Attempt{Device: 1, Collapse: "c", Alert: true}); !adm[0].Admitted() {
		t.Fatalf("alert c to unresponsive device 1: %+v, want admitted", adm[0])
	}
	opt.Unresponsive.After = 100
	if adm := admit(Attempt{Device: 1, Collapse: "d"}); adm[0].Wait < 10*time.Minute+50*time.Second || adm[0].Wait > 11*time.Minute {
		t.Fatalf("silent push d right after: %+v, want to wait the 10m gap past a reservation 1m ahead", adm[0])
	}
}

// TestAdmitCountsEachPushOnceAcrossReplicas injects what a redelivery to
// a second live replica does: eight replicas admit the same batch at
// once, twice. Every attempt is admitted (a re-attempt does not wait for
// itself) and each device's silent push is counted once; the next push
// (a new collapse id) counts again.
func TestAdmitCountsEachPushOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	redistest.Backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		pol := Policy{Limit: 10, Window: time.Hour, MinGap: time.Nanosecond} // no wait between the rounds
		th, err := New(service.Archetype{}, Config{IOS: pol, Android: pol}, rdb)
		if err != nil {
			t.Fatal(err)
		}
		e := &env{rdb: rdb, th: th}
		var devs []device
		for id := uint64(1); id <= 130; id++ { // three ids in most partitions
			devs = append(devs, device{id: id, pl: "android", bg: true})
		}
		e.addDevices(t, devs...)
		opt := AdmitOptions{Now: time.Now(), Unresponsive: devices.Unresponsive{After: 100}}
		count := func(id uint64) int {
			n, err := rdb.HGet(t.Context(), devices.Key(id), "un").Int()
			if err != nil {
				t.Fatalf("device %d: un: %v", id, err)
			}
			return n
		}
		for round, collapse := range []string{"a", "a", "b"} {
			at := make([]Attempt, len(devs))
			for i, d := range devs {
				at[i] = Attempt{Device: d.id, Collapse: collapse}
			}
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					adm, err := th.Admit(t.Context(), at, opt)
					if err != nil {
						t.Error(err)
						return
					}
					for i, a := range adm {
						if !a.Admitted() {
							t.Errorf("round %d, device %d: %+v, want admitted", round, at[i].Device, a)
						}
					}
				})
			}
			wg.Wait()
			want := map[int]int{0: 1, 1: 1, 2: 2}[round]
			for _, d := range devs {
				if n := count(d.id); n != want {
					t.Fatalf("round %d (collapse %s): device %d counted %d pushes, want %d", round, collapse, d.id, n, want)
				}
			}
		}
	})
}

// TestBudgetAtThePhoneInOneBatch puts several attempts for the same device
// in one Admit and one Settle call: the scripts read the batch's logs once
// and work on them in memory, so a later attempt must still see an
// earlier one's reservation, and a settlement the one before it.
func TestBudgetAtThePhoneInOneBatch(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb := redistest.Start(t)
	pol := Policy{Limit: 3, Window: time.Hour, MinGap: 10 * time.Minute}
	th, err := New(service.Archetype{}, Config{IOS: pol, Android: pol}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{rdb: rdb, th: th}
	// Devices 1 and 65 share partition 1; device 2 is in another.
	e.addDevices(t, device{id: 1, pl: "ios", bg: true}, device{id: 65, pl: "android", bg: true}, device{id: 2, pl: "ios", bg: true})
	w := waits(t, th, Attempt{Device: 1, Collapse: "a"}, Attempt{Device: 65, Collapse: "a"}, Attempt{Device: 1, Collapse: "b"}, Attempt{Device: 2, Collapse: "a"}, Attempt{Device: 1, Collapse: "a"})
	if w[0] != 0 || w[1] != 0 || w[3] != 0 || w[4] != 0 {
		t.Fatalf("waits %v: want 0 for the first push of each device and for push a's re-attempt", w)
	}
	if w[2] < 9*time.Minute {
		t.Fatalf("device 1's push b in the same batch as its push a: wait %v, want nearly the 10m gap", w[2])
	}
	// Refuse a and deliver device 65's push in one call: device 1's log
	// empties, device 65's keeps its entry.
	if err := th.Settle(ctx, []Attempt{{Device: 1, Collapse: "a"}, {Device: 65, Collapse: "a"}, {Device: 1, Collapse: "zz"}}, []Settlement{Refused, Delivered, Refused}); err != nil {
		t.Fatal(err)
	}
	if ok, err := rdb.HExists(ctx, keys.Throttle(keys.Partition(1)), "p1").Result(); err != nil || ok {
		t.Fatalf("device 1's log after its only push was refused: exists %v, %v", ok, err)
	}
	w = waits(t, th, Attempt{Device: 1, Collapse: "b"}, Attempt{Device: 65, Collapse: "b"})
	if w[0] != 0 {
		t.Fatalf("device 1's push b after a was refused: wait %v, want 0", w[0])
	}
	if w[1] < 9*time.Minute {
		t.Fatalf("device 65's push b after a was delivered: wait %v, want the gap", w[1])
	}
}

// TestRedisClock runs the production scripts, which read Redis's TIME,
// with a policy scaled down to milliseconds (the other policy tests walk
// a simulated clock through hours): a feed update waits out its debounce,
// a second push keeps the min gap after the first, a third keeps the K
// per W window, and every push's queue time is Redis's clock at the move.
// It waits in real time, which is what it is about.
func TestRedisClock(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb := redistest.Start(t)
	pol := Policy{Limit: 2, Window: time.Second, MinGap: 200 * time.Millisecond, Debounce: 100 * time.Millisecond, MaxWait: 150 * time.Millisecond}
	th, err := New(service.Archetype{}, Config{IOS: pol, Android: pol}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{rdb: rdb, th: th}
	e.addDevices(t, device{id: 1, pl: "ios", bg: true})
	redisNow := func() time.Time {
		t.Helper()
		now, err := rdb.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return now.Truncate(time.Millisecond)
	}
	// next steps the scheduler until it queues the device's next push and
	// returns it; the push must have been queued between from and the
	// Redis time read after the step.
	next := func(from time.Time) Push {
		t.Helper()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(10 * time.Second)
		for {
			m, err := th.Step(ctx, 100)
			if err != nil {
				t.Fatal(err)
			}
			if m.Queued > 0 {
				break
			}
			select {
			case <-tick.C:
			case <-deadline:
				t.Fatal("the scheduler never queued the pending push")
			}
		}
		ps := e.pushes(t)[1]
		p := ps[len(ps)-1]
		if upTo := redisNow(); p.QueuedAt.Before(from) || p.QueuedAt.After(upTo) {
			t.Fatalf("push queued at %v, want within [%v, %v] on Redis's clock", p.QueuedAt, from, upTo)
		}
		return p
	}
	decide := func(u Update) Counts {
		t.Helper()
		c, err := th.Decide(ctx, u, []uint64{1})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	before := redisNow()
	if c := decide(feedUpdate("e1", 1, "a")); c.Deferred != 1 {
		t.Fatalf("feed update: got %+v, want deferred by the debounce", c)
	}
	p1 := next(before.Add(pol.Debounce))
	if !slices.Equal(p1.Events, []string{"e1"}) {
		t.Fatalf("first push: got %+v, want e1", p1)
	}
	// A breaking update skips the debounce, not the gap: it may go out at
	// once only if the gap has already passed (a slow machine).
	if c := decide(breaking("b1")); c.Queued+c.Deferred != 1 {
		t.Fatalf("breaking update: got %+v, want queued or deferred", c)
	} else if c.Deferred == 1 {
		next(p1.QueuedAt.Add(pol.MinGap))
	}
	ps := e.pushes(t)[1]
	p2 := ps[len(ps)-1]
	if len(ps) != 2 || p2.QueuedAt.Sub(p1.QueuedAt) < pol.MinGap {
		t.Fatalf("second push %v after the first, want 2 pushes at least the gap %v apart", p2.QueuedAt.Sub(p1.QueuedAt), pol.MinGap)
	}
	// The third push waits for the window: at most 2 in any second.
	if c := decide(breaking("b2")); c.Queued+c.Deferred != 1 {
		t.Fatalf("third update: got %+v, want queued or deferred", c)
	} else if c.Deferred == 1 {
		next(p1.QueuedAt.Add(pol.Window))
	}
	ps = e.pushes(t)[1]
	if p3 := ps[len(ps)-1]; len(ps) != 3 || p3.QueuedAt.Sub(p1.QueuedAt) < pol.Window || p3.QueuedAt.Sub(p2.QueuedAt) < pol.MinGap {
		t.Fatalf("pushes at %v: want the third a window after the first and a gap after the second", []time.Time{p1.QueuedAt, p2.QueuedAt, p3.QueuedAt})
	}
}
