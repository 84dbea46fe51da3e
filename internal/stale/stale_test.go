package stale_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/metrictest"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stale"
	"github.com/nudge-dev/nudge/internal/throttle"
	"github.com/nudge-dev/nudge/internal/throttle/throttletest"
)

// head is the cursor of the test feed "world".
const head = 40

// kind is what the test fleet makes of a device.
type kind int

const (
	staleDev   kind = iota // left alone for 7h, behind on "world"
	recentSync             // behind, but a receipt 1h ago
	upToDate               // left alone for 7h, but synced up to the head
	newDevice              // behind, registered now, never synced
	recentPush             // stale, but pushed just now: over budget
)

type bundle struct {
	rdb   *redis.Client
	reg   *devices.Registry
	th    *throttle.Throttle
	cat   *catalog.Store
	items *feeds.Store
	kinds map[uint64]kind
	n     uint64
}

// setup writes n devices following "world" (head 40); kindOf says what
// each is.
func setup(t testing.TB, n uint64, kindOf func(uint64) kind) *bundle {
	t.Helper()
	ctx := t.Context()
	rdb := redistest.Start(t)
	cat, err := catalog.NewStore(service.Archetype{}, rdb, catalog.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Put(ctx, catalog.Feed{ID: "world", Title: "World", URL: "https://example.com/world"}); err != nil {
		t.Fatal(err)
	}
	items, err := feeds.NewStore(feeds.StoreConfig{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, keys.FeedCursor("world"), head, 0).Err(); err != nil {
		t.Fatal(err)
	}
	reg, err := devices.New(service.Archetype{}, rdb, cat, devices.Config{})
	if err != nil {
		t.Fatal(err)
	}
	th, err := throttle.New(service.Archetype{}, throttle.Config{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	devicestest.Write(t, rdb, 1, n, func(uint64) string { return "world" })
	b := &bundle{rdb: rdb, reg: reg, th: th, cat: cat, items: items, kinds: map[uint64]kind{}, n: n}
	now := time.Now()
	old := now.Add(-7 * time.Hour)
	pipe := rdb.Pipeline()
	var pushed []uint64
	for id := uint64(1); id <= n; id++ {
		k := kindOf(id)
		b.kinds[id] = k
		key := keys.Device(id)
		switch k {
		case staleDev, recentPush:
			pipe.HSet(ctx, key, "ct", old.Unix(), "c:world", 3)
		case recentSync:
			pipe.HSet(ctx, key, "ct", old.Unix(), "sy", now.Add(-time.Hour).UnixMilli(), "c:world", 3)
		case upToDate:
			pipe.HSet(ctx, key, "ct", old.Unix(), "sy", old.UnixMilli(), "c:world", head)
		case newDevice:
		}
		if k == recentPush {
			pushed = append(pushed, id)
		}
		if pipe.Len() >= 5000 {
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if len(pushed) > 0 {
		u := throttle.Update{Event: "earlier", Feeds: []string{"world"}, Lane: throttle.LaneBreaking, Reason: "breaking", Since: map[string]int64{"world": 3}}
		if c, err := th.Decide(ctx, u, pushed); err != nil || c.Queued != int64(len(pushed)) {
			t.Fatalf("earlier push: %+v, %v", c, err)
		}
	}
	return b
}

// sweeper returns a Sweeper on b with its own client (through hook, if
// not nil) and metrics registry.
func (b *bundle) sweeper(t testing.TB, cfg stale.Config, hook redis.Hook) (*stale.Sweeper, *prometheus.Registry) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: b.rdb.Options().Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	if hook != nil {
		rdb.AddHook(hook)
	}
	reg, err := devices.New(service.Archetype{}, rdb, b.cat, devices.Config{})
	if err != nil {
		t.Fatal(err)
	}
	th, err := throttle.New(service.Archetype{}, throttle.Config{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	mreg := prometheus.NewRegistry()
	s, err := stale.New(service.Archetype{Registerer: mreg, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, cfg, stale.Deps{
		Redis: rdb, Devices: reg, Catalog: b.cat, Heads: b.items, Throttle: th,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s, mreg
}

// sent is one push job in the push streams.
type sent struct {
	at   int64 // unix ms, from the stream entry id (Redis's clock)
	push throttle.Push
}

// pushes returns the push jobs of event prefix "stale:" by device.
func (b *bundle) pushes(t testing.TB) map[uint64][]sent {
	t.Helper()
	out := map[uint64][]sent{}
	for _, q := range throttletest.Queued(t, b.rdb) {
		if strings.HasPrefix(q.Push.Events[0], "stale:") {
			out[q.Push.Device] = append(out[q.Push.Device], sent{at: q.At.UnixMilli(), push: q.Push})
		}
	}
	return out
}

// sweep reads the sweep's state hash.
func (b *bundle) sweep(t testing.TB) map[string]string {
	t.Helper()
	h, err := b.rdb.HGetAll(t.Context(), keys.StaleSweep()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// awaitDone waits until the first sweep has ended (the next one may have
// begun: it starts a window after the first one's send phase did).
func (b *bundle) awaitDone(t testing.TB, timeout time.Duration) {
	t.Helper()
	await.Within(t, timeout, "the sweep to end", func() bool {
		h := b.sweep(t)
		n, _ := strconv.Atoi(h["n"])
		return n > 1 || h["ph"] == "done"
	})
}

// checkOnce fails unless every stale device got exactly one stale push,
// naming its feed and cursor, and no other device got one. Devices pushed
// just before the sweep get none now: the throttle defers theirs.
func (b *bundle) checkOnce(t testing.TB, got map[uint64][]sent) {
	t.Helper()
	bad := 0
	for id := uint64(1); id <= b.n; id++ {
		want := 0
		if b.kinds[id] == staleDev {
			want = 1
		}
		if len(got[id]) != want {
			if bad++; bad <= 10 {
				t.Errorf("device %d (kind %d): %d stale pushes, want %d", id, b.kinds[id], len(got[id]), want)
			}
			continue
		}
		if want == 1 {
			p := got[id][0].push
			if p.Reason != "stale" || len(p.Feeds) != 1 || p.Feeds[0] != "world" || p.Since["world"] != 3 {
				t.Errorf("device %d: push %+v: want reason stale, feed world since 3", id, p)
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d devices in all", bad)
	}
}

// checkFlat fails unless the pushes per second of the window, ignoring
// the first and the last second, stay within ±20% of the flat rate, but
// for at most one stall: a second below it followed by one whose sum with
// it is within ±10% of two seconds' worth.
func checkFlat(t testing.TB, got map[uint64][]sent, t0 int64, window time.Duration) {
	t.Helper()
	secs := int(window / time.Second)
	perSec := make([]int, secs)
	total := 0
	for _, ps := range got {
		for _, p := range ps {
			s := int((p.at - t0) / 1000)
			if s == secs && p.at-t0 < window.Milliseconds()+500 {
				s-- // the last slot, a few ms late
			}
			if s < 0 || s >= secs {
				t.Errorf("push at %d ms after the send phase began, outside the %s window", p.at-t0, window)
				continue
			}
			perSec[s]++
			total++
		}
	}
	flat := float64(total) / float64(secs)
	t.Logf("pushes per second (flat %.1f): %v", flat, perSec)
	off := func(n, want float64) float64 { return (n - want) / want }
	stalled := false
	for s := 1; s < secs-1; s++ {
		dev := off(float64(perSec[s]), flat)
		if dev <= 0.2 && dev >= -0.2 {
			continue
		}
		// One stall of the test process on a busy machine (a dip, then
		// the catch-up in the next second, together flat) is tolerated
		// once; a burst or a gap is not.
		if !stalled && dev < 0 && s+2 < secs && math.Abs(off(float64(perSec[s]+perSec[s+1]), 2*flat)) <= 0.1 {
			stalled = true
			t.Logf("seconds %d-%d: %d then %d pushes: one stall and its catch-up, %+.0f%% off flat together",
				s, s+1, perSec[s], perSec[s+1], 100*off(float64(perSec[s]+perSec[s+1]), 2*flat))
			s++
			continue
		}
		t.Errorf("second %d: %d pushes, %+.0f%% off the flat %.1f", s, perSec[s], 100*dev, flat)
	}
}

// mixed is the fleet of the rate tests: mostly stale devices, and every
// kind of fresh device and a few over budget spread among them.
func mixed(id uint64) kind {
	switch {
	case id%100 == 0:
		return recentPush
	case id%50 == 1:
		return recentSync
	case id%50 == 2:
		return upToDate
	case id%50 == 3:
		return newDevice
	}
	return staleDev
}

func testFlatRate(t testing.TB, n uint64, window time.Duration) {
	t.Helper()
	b := setup(t, n, mixed)
	s, mreg := b.sweeper(t, stale.Config{Window: window, Lease: 2 * time.Second}, nil)
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var t0 int64
	await.Within(t, time.Minute, "the send phase", func() bool {
		h := b.sweep(t)
		t0, _ = strconv.ParseInt(h["t0"], 10, 64)
		return h["ph"] == "send"
	})
	b.awaitDone(t, window+time.Minute)
	got := b.pushes(t)
	b.checkOnce(t, got)
	checkFlat(t, got, t0, window)
	var stale, over float64
	for _, k := range b.kinds {
		switch k {
		case staleDev:
			stale++
		case recentPush:
			over++
		}
	}
	if f := metric(t, mreg, "nudge_stale_devices_found_total", ""); f != stale+over {
		t.Errorf("found %v stale devices, want %v", f, stale+over)
	}
	for outcome, want := range map[string]float64{"queued": stale, "deferred": over} {
		if got := metric(t, mreg, "nudge_stale_pushes_total", outcome); got != want {
			t.Errorf("stale pushes %s: %v, want %v", outcome, got, want)
		}
	}
	// The devices over budget got theirs later, not never: pending in
	// the throttle's due set.
	for id, k := range b.kinds {
		if k != recentPush {
			continue
		}
		if _, err := b.rdb.ZScore(t.Context(), keys.Due(keys.Partition(id)), strconv.FormatUint(id, 10)).Result(); err != nil {
			t.Fatalf("device %d, over budget: no pending push in the due set: %v", id, err)
		}
	}
}

// TestFlatRate: 10,000 devices, 9,200 of them stale, over a 20 s window:
// per second within ±20% of flat, each stale device once, none of the
// fresh ones, the ones over budget deferred.
func TestFlatRate(t *testing.T) {
	t.Parallel()
	testFlatRate(t, 10_000, 20*time.Second)
}

// BenchmarkFlatRate100k is the case, with TestFlatRate's
// assertions: 100,000 devices (92,000 stale) over a 60 s window. It takes
// two minutes, so it runs with the benchmarks (make bench), not make test.
// It ignores b.N.
func BenchmarkFlatRate100k(b *testing.B) {
	testFlatRate(b, 100_000, 60*time.Second)
}

// TestTwoReplicas: two sweepers at once; each stale device is nudged
// once, and the next sweeps find nothing stale.
func TestTwoReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t, 3000, mixed)
	cfg := stale.Config{Window: 3 * time.Second, Lease: time.Second}
	s1, m1 := b.sweeper(t, cfg, nil)
	s2, m2 := b.sweeper(t, cfg, nil)
	for _, s := range []*stale.Sweeper{s1, s2} {
		if err := s.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	await.Within(t, time.Minute, "a second sweep to end", func() bool {
		h := b.sweep(t)
		return h["ph"] == "done" && h["n"] == "2"
	})
	b.checkOnce(t, b.pushes(t))
	sum := metric(t, m1, "nudge_stale_pushes_total", "queued") + metric(t, m2, "nudge_stale_pushes_total", "queued")
	if want := float64(countKind(b, staleDev)); sum != want {
		t.Errorf("queued by both replicas: %v, want %v", sum, want)
	}
}

// metric is the value of counter name (with outcome label value, if not
// "") in reg; 0 when it was never counted.
func metric(t testing.TB, reg *prometheus.Registry, name, outcome string) float64 {
	t.Helper()
	var match map[string]string
	if outcome != "" {
		match = map[string]string{"outcome": outcome}
	}
	v, _ := metrictest.Sum(t, reg, name, match)
	return v
}

func countKind(b *bundle, k kind) int {
	n := 0
	for _, x := range b.kinds {
		if x == k {
			n++
		}
	}
	return n
}

// killHook fails, once armed, the first command that marks devices
// nudged (a script on device hashes), and calls kill: the replica dies
// after the throttle queued a batch and before it marked and
// checkpointed it.
type killHook struct {
	armed atomic.Bool
	kill  func()
}

func (h *killHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *killHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.marks(cmd) && h.armed.CompareAndSwap(true, false) {
			h.kill()
			err := errors.New("killed")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (h *killHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if h.marks(c) && h.armed.CompareAndSwap(true, false) {
				h.kill()
				err := errors.New("killed")
				for _, c := range cmds {
					c.SetErr(err)
				}
				return err
			}
		}
		return next(ctx, cmds)
	}
}

// marks reports whether cmd is a script call whose first key is a device
// hash: MarkNudged's.
func (h *killHook) marks(cmd redis.Cmder) bool {
	a := cmd.Args()
	name := strings.ToLower(fmt.Sprint(a[0]))
	return (name == "evalsha" || name == "eval") && len(a) > 3 && strings.HasPrefix(fmt.Sprint(a[3]), "dev:")
}

// TestKilledReplicaResumed: a replica is killed mid-sweep, between
// queueing a batch and checkpointing it; another replica finishes the
// sweep from the checkpoint: no stale device lost or nudged twice.
func TestKilledReplicaResumed(t *testing.T) {
	t.Parallel()
	b := setup(t, 3000, mixed)
	cfg := stale.Config{Window: 6 * time.Second, Lease: time.Second}
	ctx, kill := context.WithCancel(t.Context())
	hook := &killHook{kill: kill}
	s1, _ := b.sweeper(t, cfg, hook)
	if err := s1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	await.Until(t, "a third of the stale pushes", func() bool { return len(b.pushes(t)) > 900 })
	t.Logf("arming at %d devices pushed, sweep %v", len(b.pushes(t)), b.sweep(t))
	hook.armed.Store(true)
	<-ctx.Done() // the hook killed it
	s1.Stop()
	t.Logf("killed at %d devices pushed, sweep %v", len(b.pushes(t)), b.sweep(t))
	if h := b.sweep(t); h["ph"] != "send" {
		t.Fatalf("after the kill: sweep %v, want it in its send phase", h)
	}
	before := len(b.pushes(t))
	s2, _ := b.sweeper(t, cfg, nil)
	if err := s2.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	b.awaitDone(t, time.Minute)
	got := b.pushes(t)
	t.Logf("%d devices pushed before the kill, %d in all", before, len(got))
	if before >= len(got) {
		t.Errorf("the second replica pushed nothing")
	}
	b.checkOnce(t, got)
}

// BenchmarkCountWalk measures one walk of a sweep (its count phase) over
// $NUDGE_BENCH_DEVICES devices (default 1,000,000), all stale: the wall
// time and the Redis main thread's CPU per 1M devices. A sweep walks
// twice (count, then send), and the send phase adds one throttle
// decision per stale device (the throttle's own benchmarks). It ignores
// b.N.
func BenchmarkCountWalk(b *testing.B) {
	n := uint64(1_000_000)
	if v := os.Getenv("NUDGE_BENCH_DEVICES"); v != "" {
		x, err := strconv.ParseUint(v, 10, 64)
		if err != nil || x == 0 {
			b.Fatalf("NUDGE_BENCH_DEVICES=%q: want a positive integer", v)
		}
		n = x
	}
	bd := setup(b, n, func(uint64) kind { return staleDev })
	s, _ := bd.sweeper(b, stale.Config{Window: time.Hour}, nil)
	cpu := redistest.MainThreadCPU(b, bd.rdb)
	start := time.Now()
	if err := s.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	await.Within(b, 30*time.Minute, "the count phase", func() bool { return bd.sweep(b)["ph"] == "send" })
	wall := time.Since(start)
	cpu = redistest.MainThreadCPU(b, bd.rdb) - cpu
	s.Stop()
	per := 1e6 / float64(n)
	b.ReportMetric(wall.Seconds()*per, "wall-s/1M")
	b.ReportMetric(cpu*per, "redis-cpu-s/1M")
	b.ReportMetric(0, "ns/op")
}
