package httpapi_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/httpapi"
	"github.com/nudge-dev/nudge/internal/redistest"
)

// BenchmarkItemRange serves the closed-range sync read a push names
// (GET /v1/feeds/world/items?since=40&until=50, ten items) to 64
// concurrent clients over loopback HTTP from a real api and a private
// redis-server, with and without the in-process cache, then /healthz to
// the same clients for the same count. It reports both rates, their ratio,
// the read's p50/p99 and the Redis reads of the item log per request.
func BenchmarkItemRange(b *testing.B) {
	for _, bc := range []struct {
		name  string
		bytes int64
	}{{"cache", 0}, {"nocache", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			pipe, rdb, ts, client := benchServer(b, httpapi.Config{ItemCacheBytes: bc.bytes}, "world")
			saveBenchItems(b, pipe, "world", 50)

			url := ts.URL + "/v1/feeds/world/items?since=40&until=50"
			reads0 := redistest.Calls(b, rdb, "zrange")
			b.ResetTimer()
			lat, rate := hammer(b, client, url, b.N, true)
			b.StopTimer()
			reads := redistest.Calls(b, rdb, "zrange") - reads0
			_, health := hammer(b, client, ts.URL+"/healthz", b.N, false)
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(rate, "reads/s")
			b.ReportMetric(health, "healthz/s")
			b.ReportMetric(rate/health, "reads/healthz")
			b.ReportMetric(float64(reads)/float64(b.N), "redis-reads/op")
		})
	}
}

// saveBenchItems stores n articles in feed, so its cursors run 1..n.
func saveBenchItems(b testing.TB, pipe *httpapi.Stores, feed string, n int) {
	b.Helper()
	items := make([]feeds.Item, n)
	for i := range items {
		id := fmt.Sprintf("https://example.com/%s/%d", feed, n-i)
		items[i] = feeds.Item{ID: id, GUID: id, Title: fmt.Sprintf("Story %d, with a title of the usual length for a news site", n-i),
			Summary: "A summary of about two hundred characters, as news feeds carry them: who did what, where and when, " +
				"and why it matters to the reader who follows this feed on a phone.",
			URL: id, Hash: fmt.Sprintf("h%d", n-i)}
	}
	if _, err := pipe.Items.Save(b.Context(), feed, items, time.Now()); err != nil {
		b.Fatal(err)
	}
}

// hammer GETs url n times from benchClients goroutines and returns the
// latencies (when keep) and the rate.
func hammer(b *testing.B, client *http.Client, url string, n int, keep bool) ([]time.Duration, float64) {
	var left atomic.Int64
	left.Store(int64(n))
	var mu sync.Mutex
	var lat []time.Duration
	start := time.Now()
	var wg sync.WaitGroup
	for range benchClients {
		wg.Go(func() {
			var local []time.Duration
			for left.Add(-1) >= 0 {
				t0 := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					b.Errorf("get %s: %v", url, err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("get %s: %d", url, resp.StatusCode)
					return
				}
				if keep {
					local = append(local, time.Since(t0))
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return lat, float64(n) / time.Since(start).Seconds()
}
