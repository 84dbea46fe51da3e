package dispatcher_test

import (
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/dispatcher"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

// BenchmarkManyApps measures the dispatcher with $NUDGE_BENCH_APPS apps
// (default 100), each with its own APNs key, topic, service account and
// project on the emulator: the time from dispatcher.New to a started
// dispatcher (start-ms), and the Go heap the dispatcher holds (heap-MB,
// after GC, against the heap before New) once a breaking event reached 10
// devices of every app (4 APNs, 6 FCM), so every app's three clients
// (APNs production and sandbox, FCM) are built and connected. The emulator
// runs in the same process; its share is the few recorded pushes.
func BenchmarkManyApps(b *testing.B) {
	n := 100
	if s := os.Getenv("NUDGE_BENCH_APPS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("NUDGE_BENCH_APPS=%q: want a positive integer", s)
		}
	}
	rdb := redistest.Start(b)
	emu, creds := pushemutest.Start(b, service.Archetype{}, pushemu.Config{KeepPerToken: 1})
	list := []apps.App{pushemutest.App(apps.Default, creds)}
	for i := 1; i < n; i++ {
		list = append(list, pushemutest.App("app-"+strconv.Itoa(i), pushemutest.AppCredentials(b, emu, "app-"+strconv.Itoa(i))))
	}
	set := apps.MustSet(list...)
	env := map[string]string{}
	for _, kv := range creds.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	cfg, err := dispatcher.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		b.Fatal(err)
	}
	const feed, perApp = "headlines", 10
	devices := uint64(n * perApp)
	devicestest.Write(b, rdb, 1, devices, func(uint64) string { return feed })
	pipe := rdb.Pipeline()
	for id := uint64(1); id <= devices; id++ {
		pipe.HSet(b.Context(), keys.Device(id), "ap", list[(id-1)/perApp].ID)
	}
	if _, err := pipe.Exec(b.Context()); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	var start time.Duration
	var heap float64
	for range b.N {
		if err := rdb.FlushDB(b.Context()).Err(); err != nil {
			b.Fatal(err)
		}
		devicestest.Write(b, rdb, 1, devices, func(uint64) string { return feed })
		if _, err := pipe.Exec(b.Context()); err != nil {
			b.Fatal(err)
		}
		before := heapInUse()
		t0 := time.Now()
		d, err := dispatcher.New(b.Context(), service.Archetype{Logger: log, Registerer: prometheus.NewRegistry()}, cfg,
			dispatcher.Deps{Redis: rdb, Apps: set})
		if err != nil {
			b.Fatal(err)
		}
		if err := d.Start(b.Context()); err != nil {
			b.Fatal(err)
		}
		start += time.Since(t0)
		bu := &benchBundle{rdb: rdb, emu: emu, pipe: d.Stores()}
		event, err := bu.pipe.Submitter.Submit(b.Context(), breaking(feed, nil))
		if err != nil {
			b.Fatal(err)
		}
		if pr := bu.waitSettled(b, event, int64(devices)); pr.Sent != int64(devices) {
			b.Fatalf("progress %+v, want %d sent", pr, devices)
		}
		heap += float64(heapInUse()-before) / (1 << 20)
		d.Stop()
	}
	b.ReportMetric(float64(start.Milliseconds())/float64(b.N), "start-ms")
	b.ReportMetric(heap/float64(b.N), "heap-MB")
	b.ReportMetric(float64(n), "apps")
}

// heapInUse is the live Go heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
