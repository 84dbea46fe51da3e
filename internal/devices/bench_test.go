package devices_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/redis/go-redis/v9"
)

// benchDevices is how many devices BenchmarkMemoryPerDevice registers:
// $NUDGE_BENCH_DEVICES, default 1,000,000.
func benchDevices(b *testing.B) int {
	if s := os.Getenv("NUDGE_BENCH_DEVICES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("NUDGE_BENCH_DEVICES=%q: want a positive integer", s)
		}
		return n
	}
	return 1_000_000
}

func usedMemory(b *testing.B, rdb *redis.Client) int64 {
	info, err := rdb.Info(b.Context(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("INFO memory has no used_memory")
	return 0
}

// BenchmarkMemoryPerDevice registers N devices through Registry.Register
// (64 goroutines, each device subscribed to 2 of 3 feeds, locale, timezone,
// app version set) on a private redis-server started with
// hash-max-listpack-value 256, and reports the used_memory delta per
// device: device hash, token index entry and subscription bits together.
// The -3apps cases spread the devices round robin over the default app
// and two others (interleaved ids: each app's bitmaps span the whole id
// range). It ignores b.N: one population is the measurement.
func BenchmarkMemoryPerDevice(b *testing.B) {
	three := apps.MustSet(
		apps.App{ID: apps.Default, Name: "News", FCM: &apps.FCM{CredentialsFile: "-"}},
		apps.App{ID: "sports", Name: "Sports", FCM: &apps.FCM{CredentialsFile: "-"}},
		apps.App{ID: "regional-west", Name: "Regional", FCM: &apps.FCM{CredentialsFile: "-"}},
	)
	for _, kind := range []string{"fcm", "apns", "fcm-3apps", "apns-3apps"} {
		b.Run(kind, func(b *testing.B) {
			var appIDs []string
			if strings.HasSuffix(kind, "-3apps") {
				appIDs = three.IDs()
			}
			kind = strings.TrimSuffix(kind, "-3apps")
			n := benchDevices(b)
			rdb := redistest.StartServer(b).Client(b)
			store, err := catalog.NewStore(service.Archetype{}, rdb, catalog.Config{})
			if err != nil {
				b.Fatal(err)
			}
			for _, id := range []string{"world", "tech", "sport"} {
				if _, err := store.Put(b.Context(), catalog.Feed{ID: id, Title: id, URL: "https://example.com/" + id}); err != nil {
					b.Fatal(err)
				}
			}
			reg, err := devices.New(service.Archetype{}, rdb, store, devices.Config{IDBlock: 1024, Apps: three})
			if err != nil {
				b.Fatal(err)
			}
			before := usedMemory(b, rdb)
			start := time.Now()
			inParallel(b, 64, n, func(k int) error {
				i := k + 1
				r := devices.Registration{Provider: "fcm", Platform: "android", Feeds: []string{"world", "tech"},
					Sync:   devices.BackgroundSync{Enabled: true, MinInterval: 30 * time.Minute},
					Locale: "en-US", Timezone: "Europe/Berlin", AppVersion: "1.4.0"}
				if kind == "fcm" {
					r.Token = fmt.Sprintf("d%021d:APA91b", i) + strings.Repeat("Q", 152-29)
				} else {
					r.Provider, r.Platform, r.Token = "apns", "ios", fmt.Sprintf("%064x", i)
				}
				if len(appIDs) > 0 {
					r.App = appIDs[i%len(appIDs)]
				}
				_, _, _, err := reg.Register(b.Context(), r)
				return err
			})
			took := time.Since(start)
			after := usedMemory(b, rdb)
			b.ReportMetric(float64(after-before)/float64(n), "B/device")
			b.ReportMetric(float64(n)/took.Seconds(), "reg/s")
			b.ReportMetric(float64(n), "devices")
		})
	}
}

// rttCounter is a go-redis hook that counts round trips (a command or a
// pipeline) and commands.
type rttCounter struct{ rtts, cmds atomic.Int64 }

func (c *rttCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *rttCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.rtts.Add(1)
		c.cmds.Add(1)
		return next(ctx, cmd)
	}
}

func (c *rttCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.rtts.Add(1)
		c.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// BenchmarkRegisterPath measures what one registry write costs on a
// private redis-server, one goroutine: round trips and commands per call
// (exact), and the Redis main thread's CPU per call (INFO cpu, so a busy
// shared machine does not skew it), besides ns/op. new: a new FCM device
// with 2 feeds; again: the same token re-registered with the same feeds
// (what apps do at launch); feeds: re-registered with other feeds;
// patch_feeds: a PATCH of the feeds.
func BenchmarkRegisterPath(b *testing.B) {
	for _, kind := range []string{"new", "again", "feeds", "patch_feeds"} {
		b.Run(kind, func(b *testing.B) {
			rdb := redistest.StartServer(b).Client(b)
			store, err := catalog.NewStore(service.Archetype{}, rdb, catalog.Config{})
			if err != nil {
				b.Fatal(err)
			}
			for _, id := range []string{"world", "tech", "sport"} {
				if _, err := store.Put(b.Context(), catalog.Feed{ID: id, Title: id, URL: "https://example.com/" + id}); err != nil {
					b.Fatal(err)
				}
			}
			reg, err := devices.New(service.Archetype{}, rdb, store, devices.Config{IDBlock: 1024})
			if err != nil {
				b.Fatal(err)
			}
			r := devices.Registration{Provider: "fcm", Platform: "android", Feeds: []string{"world", "tech"},
				Sync:   devices.BackgroundSync{Enabled: true, MinInterval: 30 * time.Minute},
				Locale: "en-US", Timezone: "Europe/Berlin", AppVersion: "1.4.0"}
			tok := func(i int) string { return fmt.Sprintf("d%021d:APA91b", i) + strings.Repeat("Q", 152-29) }
			r.Token = tok(0)
			d, _, _, err := reg.Register(b.Context(), r)
			if err != nil {
				b.Fatal(err)
			}
			other := [][]string{{"world", "tech"}, {"tech", "sport"}}
			call := func(i int) error {
				switch kind {
				case "new":
					r.Token = tok(i + 1)
				case "feeds":
					r.Feeds = other[i%2]
				case "patch_feeds":
					nd, err := reg.Update(b.Context(), d, devices.Patch{Feeds: &other[i%2]})
					d = nd
					return err
				}
				_, _, _, err := reg.Register(b.Context(), r)
				return err
			}
			for i := range 100 { // load the scripts, fill the catalogue cache
				if err := call(10_000_000 + i); err != nil {
					b.Fatal(err)
				}
			}
			cnt := &rttCounter{}
			rdb.AddHook(cnt)
			cpu0 := redistest.MainThreadCPU(b, rdb)
			b.ResetTimer()
			for i := range b.N {
				if err := call(i); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := redistest.MainThreadCPU(b, rdb) - cpu0
			b.ReportMetric(float64(cnt.rtts.Load())/float64(b.N), "rtt/op")
			b.ReportMetric(float64(cnt.cmds.Load())/float64(b.N), "cmds/op")
			b.ReportMetric(cpu*1e6/float64(b.N), "redis-µs/op")
		})
	}
}

// BenchmarkUnresponsiveMemory registers N APNs devices
// ($NUDGE_BENCH_DEVICES, default 1,000,000) as BenchmarkMemoryPerDevice
// does, then counts silent pushes (CountSilent, 500 per call) and reports
// the used_memory delta per device of the fields it adds: after one push
// ("un", "uk"), and once every device is unresponsive (After pushes:
// "ux" and the partition counters too). It ignores b.N.
func BenchmarkUnresponsiveMemory(b *testing.B) {
	n := benchDevices(b)
	rdb := redistest.StartServer(b).Client(b)
	reg, ids := registerAPNsFleet(b, rdb, n, "world")
	u := devices.Unresponsive{After: 2}
	push := func(k int) {
		inParallel(b, 16, (n+499)/500, func(c int) error {
			ps := make([]devices.Silent, 0, 500)
			for _, id := range ids[c*500 : min(c*500+500, n)] {
				ps = append(ps, devices.Silent{Device: id, Collapse: fmt.Sprintf("n%d-feed:world:%d", id, k)})
			}
			_, err := reg.CountSilent(b.Context(), u, time.Now(), ps)
			return err
		})
	}
	before := usedMemory(b, rdb)
	push(1)
	one := usedMemory(b, rdb)
	push(2)
	all := usedMemory(b, rdb)
	b.ReportMetric(float64(one-before)/float64(n), "B/device-counting")
	b.ReportMetric(float64(all-before)/float64(n), "B/device-unresponsive")
	b.ReportMetric(float64(n), "devices")
}

// registerAPNsFleet registers n APNs devices following feeds (created in a
// new catalogue) on rdb, 64 at a time, and returns the registry and their
// ids in registration order.
func registerAPNsFleet(b *testing.B, rdb *redis.Client, n int, feeds ...string) (*devices.Registry, []uint64) {
	b.Helper()
	store, err := catalog.NewStore(service.Archetype{}, rdb, catalog.Config{})
	if err != nil {
		b.Fatal(err)
	}
	for _, id := range feeds {
		if _, err := store.Put(b.Context(), catalog.Feed{ID: id, Title: id, URL: "https://example.com/" + id}); err != nil {
			b.Fatal(err)
		}
	}
	reg, err := devices.New(service.Archetype{}, rdb, store, devices.Config{IDBlock: 1024})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]uint64, n)
	inParallel(b, 64, n, func(i int) error {
		d, _, _, err := reg.Register(b.Context(), devices.Registration{Provider: "apns", Platform: "ios",
			Token: fmt.Sprintf("%064x", i+1), Feeds: feeds, Sync: devices.BackgroundSync{Enabled: true}})
		ids[i] = d.ID
		return err
	})
	return reg, ids
}

// inParallel runs f(0) … f(n-1) on workers goroutines; an error fails the
// benchmark and stops that goroutine.
func inParallel(b *testing.B, workers, n int, f func(i int) error) {
	var next atomic.Int64
	next.Store(-1)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
