package dispatcher_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/httpapi"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// herdApps is how many simulated apps read at once: each push the
// emulator accepts wakes one app, which reads the range its payload names.
const herdApps = 256

// BenchmarkSyncReadHerd is a breaking fan-out to $NUDGE_BENCH_DEVICES
// devices (default 100,000) through the whole dispatcher and the push
// emulator while every woken app reads the closed range its push names
// from a real api (loopback HTTP, the same Redis), herdApps at a time. Per
// event it reports the api's read latency during the herd (p50, p99), the
// read rate, and the Redis reads of the item log (INFO commandstats
// ZRANGE), with and without the api's in-process cache.
func BenchmarkSyncReadHerd(b *testing.B) {
	for _, bc := range []struct {
		name  string
		bytes int64
	}{{"cache", 0}, {"nocache", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			n := uint64(benchFleet(b))
			bu := setupBench(b)
			const feed = "headlines"
			devicestest.Write(b, bu.rdb, 1, n, func(uint64) string { return feed })
			log := slog.New(slog.NewJSONHandler(io.Discard, nil))
			st, err := httpapi.OpenStores(b.Context(), service.Archetype{Logger: log}, bu.rdb, 0, apps.Config{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := st.Catalog.Put(b.Context(), catalog.Feed{ID: feed, Title: "Headlines", URL: "http://127.0.0.1:1/headlines.xml", PollInterval: time.Hour}); err != nil {
				b.Fatal(err)
			}
			pr := prometheus.NewRegistry()
			api, err := httpapi.NewServer(service.Archetype{Logger: log, Registerer: pr}, st.Wire(httpapi.Deps{Redis: bu.rdb, Keys: &auth.Keys{}, Gatherer: pr}),
				httpapi.Config{ItemCacheBytes: bc.bytes, RequestTimeout: 10 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			ts := httptest.NewServer(api)
			b.Cleanup(ts.Close)
			client := &http.Client{Transport: &http.Transport{MaxIdleConns: herdApps, MaxIdleConnsPerHost: herdApps}}
			b.Cleanup(client.CloseIdleConnections)

			pushes, cancel := bu.emu.Subscribe(int(n) + 1024)
			defer cancel()
			var mu sync.Mutex
			var lat []time.Duration
			var failed int
			var reads sync.WaitGroup
			var apps sync.WaitGroup
			for range herdApps {
				apps.Go(func() {
					for d := range pushes {
						t0 := time.Now()
						code, err := readRange(client, ts.URL, feed, d.Data)
						mu.Lock()
						if err != nil || code != http.StatusOK {
							failed++
						} else {
							lat = append(lat, time.Since(t0))
						}
						mu.Unlock()
						reads.Done()
					}
				})
			}
			defer apps.Wait()
			defer cancel()

			var wall time.Duration
			var zreads int64
			ops := 0
			head := int64(0)
			for b.Loop() {
				b.StopTimer()
				bu.resetThrottle(b)
				saveItems(b, st.Items, feed, head, 5)
				ev := fanout.Event{Feeds: []string{feed}, Lane: throttle.LaneBreaking, Reason: "breaking",
					Since: map[string]int64{feed: head}, Until: map[string]int64{feed: head + 5}}
				head += 5
				reads.Add(int(n))
				z0 := redistest.Calls(b, bu.rdb, "zrange")
				b.StartTimer()
				start := time.Now()
				id, err := bu.pipe.Submitter.Submit(b.Context(), ev)
				if err != nil {
					b.Fatal(err)
				}
				bu.waitSettled(b, id, int64(n))
				reads.Wait()
				wall += time.Since(start)
				b.StopTimer()
				zreads += redistest.Calls(b, bu.rdb, "zrange") - z0
				ops++
				b.StartTimer()
			}
			if failed > 0 {
				b.Fatalf("%d sync reads failed", failed)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "read-p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "read-p99-ms")
			b.ReportMetric(float64(len(lat))/wall.Seconds(), "reads/s")
			b.ReportMetric(float64(zreads)/float64(ops), "redis-reads/event")
			b.ReportMetric(float64(n), "devices")
		})
	}
}

// readRange is what a woken app does: GET the range its payload names.
func readRange(client *http.Client, base, feed string, data map[string]string) (int, error) {
	since, until := cursorOf(data["since"], feed), cursorOf(data["until"], feed)
	if since == "" || until == "" {
		return 0, fmt.Errorf("payload names no range for %s: %v", feed, data)
	}
	resp, err := client.Get(base + "/v1/feeds/" + feed + "/items?since=" + since + "&until=" + until)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// cursorOf returns feed's cursor in a "feed:cursor,…" payload field.
func cursorOf(field, feed string) string {
	for pair := range strings.SplitSeq(field, ",") {
		if f, c, ok := strings.Cut(pair, ":"); ok && f == feed {
			return c
		}
	}
	return ""
}

// saveItems stores n new articles in feed after cursor head.
func saveItems(b *testing.B, st *feeds.Store, feed string, head int64, n int) {
	b.Helper()
	items := make([]feeds.Item, n)
	for i := range items {
		c := head + int64(n-i)
		id := fmt.Sprintf("https://example.com/%s/%d", feed, c)
		items[i] = feeds.Item{ID: id, GUID: id, URL: id, Hash: fmt.Sprintf("h%d", c),
			Title:   fmt.Sprintf("Story %d, with a title of the usual length for a news site", c),
			Summary: "A summary of about two hundred characters, as news feeds carry them: who did what, where and when, and why it matters."}
	}
	if _, err := st.Save(b.Context(), feed, items, time.Now()); err != nil {
		b.Fatal(err)
	}
}
