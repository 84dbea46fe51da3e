package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/httpapi"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

const benchClients = 64

// benchServer starts a private redis-server (a pool of benchClients), the
// api's stores with feeds in the catalogue, and the api with cfg on
// loopback HTTP (JSON access log to io.Discard); it returns the stores,
// the Redis client, the server and an HTTP client keeping enough idle
// connections for benchClients.
func benchServer(b *testing.B, cfg httpapi.Config, feeds ...string) (*httpapi.Stores, *redis.Client, *httptest.Server, *http.Client) {
	b.Helper()
	srv := redistest.StartServer(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: benchClients})
	b.Cleanup(func() { _ = rdb.Close() })
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	pipe, err := httpapi.OpenStores(b.Context(), service.Archetype{Logger: log}, rdb, 0, apps.Config{})
	if err != nil {
		b.Fatal(err)
	}
	for _, id := range feeds {
		if _, err := pipe.Catalog.Put(b.Context(), catalog.Feed{ID: id, Title: id, URL: "https://example.com/" + id}); err != nil {
			b.Fatal(err)
		}
	}
	pr := prometheus.NewRegistry()
	api, err := httpapi.NewServer(service.Archetype{Logger: log, Registerer: pr}, pipe.Wire(httpapi.Deps{Redis: rdb, Keys: &auth.Keys{}, Gatherer: pr, Apps: openApps(b, rdb)}), cfg)
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(api)
	b.Cleanup(ts.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 2 * benchClients, MaxIdleConnsPerHost: 2 * benchClients}}
	b.Cleanup(client.CloseIdleConnections)
	return pipe, rdb, ts, client
}

// BenchmarkRegisterHTTP registers new FCM devices over loopback HTTP with
// 64 concurrent clients against a private redis-server, then serves
// /healthz to 64 clients for the same number of requests, and reports both
// rates, their ratio and the registration latency percentiles.
func BenchmarkRegisterHTTP(b *testing.B) {
	_, _, ts, client := benchServer(b, httpapi.Config{RegisterRateLimit: -1}, "world", "tech")

	var seq atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	post := func(n int64) (int, error) {
		body := fmt.Sprintf(`{"provider":"fcm","token":"%s","platform":"android","feeds":["world","tech"],"background_sync":{"enabled":true,"min_interval":"30m"},"locale":"en-US","timezone":"Europe/Berlin","app_version":"1.4.0"}`, fcmToken(int(n)))
		resp, err := client.Post(ts.URL+"/v1/devices", "application/json", bytes.NewBufferString(body))
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	b.SetParallelism(max(1, benchClients/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			t0 := time.Now()
			code, err := post(seq.Add(1))
			if err != nil || code != http.StatusCreated {
				b.Errorf("register: %d %v", code, err)
				return
			}
			local = append(local, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	regRate := float64(len(lat)) / elapsed.Seconds()

	// /healthz over the same server, clients and count.
	var left atomic.Int64
	left.Store(int64(b.N))
	hstart := time.Now()
	var wg sync.WaitGroup
	for range benchClients {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				resp, err := client.Get(ts.URL + "/healthz")
				if err != nil {
					b.Errorf("healthz: %v", err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	healthRate := float64(b.N) / time.Since(hstart).Seconds()

	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
	b.ReportMetric(regRate, "reg/s")
	b.ReportMetric(healthRate, "healthz/s")
	b.ReportMetric(regRate/healthRate, "reg/healthz")
}
