package devices_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/redistest"
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
// It ignores b.N: one population is the measurement.
func BenchmarkMemoryPerDevice(b *testing.B) {
	for _, kind := range []string{"fcm", "apns"} {
		b.Run(kind, func(b *testing.B) {
			n := benchDevices(b)
			rdb := redistest.StartServer(b).Client(b)
			store, err := catalog.NewStore(rdb, catalog.Config{})
			if err != nil {
				b.Fatal(err)
			}
			for _, id := range []string{"world", "tech", "sport"} {
				if _, err := store.Put(b.Context(), catalog.Feed{ID: id, Title: id, URL: "https://example.com/" + id}); err != nil {
					b.Fatal(err)
				}
			}
			reg, err := devices.New(rdb, store, devices.Config{IDBlock: 1024})
			if err != nil {
				b.Fatal(err)
			}
			before := usedMemory(b, rdb)
			var next atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for range 64 {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(n) {
							return
						}
						r := devices.Registration{Provider: "fcm", Platform: "android", Feeds: []string{"world", "tech"},
							Sync:   devices.BackgroundSync{Enabled: true, MinInterval: 30 * time.Minute},
							Locale: "en-US", Timezone: "Europe/Berlin", AppVersion: "1.4.0"}
						if kind == "fcm" {
							r.Token = fmt.Sprintf("d%021d:APA91b", i) + strings.Repeat("Q", 152-29)
						} else {
							r.Provider, r.Platform, r.Token = "apns", "ios", fmt.Sprintf("%064x", i)
						}
						if _, _, _, err := reg.Register(b.Context(), r); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			took := time.Since(start)
			after := usedMemory(b, rdb)
			b.ReportMetric(float64(after-before)/float64(n), "B/device")
			b.ReportMetric(float64(n)/took.Seconds(), "reg/s")
			b.ReportMetric(float64(n), "devices")
		})
	}
}
