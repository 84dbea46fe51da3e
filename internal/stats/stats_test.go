package stats

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

type bundle struct {
	rec *Recorder
	now *time.Time
	reg *prometheus.Registry
}

func setup(t *testing.T) bundle {
	t.Helper()
	now := time.Date(2026, 11, 26, 12, 0, 30, 0, time.UTC)
	reg := prometheus.NewRegistry()
	rec, err := NewRecorder(service.Archetype{Registerer: reg, Clock: func() time.Time { return now }}, redistest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	return bundle{rec: rec, now: &now, reg: reg}
}

func TestSummarizeAcrossMinutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.rec.Pushes(ctx, Count{"ios", "feed", Sent, 4, ""}))
	must(b.rec.Pushes(ctx, Count{"ios", "feed", Deferred, 3, ""}))
	must(b.rec.Pushes(ctx, Count{"android", "breaking", Sent, 10, ""}))
	must(b.rec.Receipt(ctx, "", "ios", "feed", "synced", 800*time.Millisecond))
	*b.now = b.now.Add(2 * time.Minute)
	must(b.rec.Pushes(ctx, Count{"ios", "feed", Pruned, 1, ""}))
	must(b.rec.Receipt(ctx, "", "ios", "feed", "synced", 4*time.Second))
	must(b.rec.Receipt(ctx, "", "android", "breaking", "no_data", -time.Second))
	must(b.rec.Pushes(ctx, Count{"windows", "feed", Sent, 7, ""})) // unknown platform: metrics only

	s, err := b.rec.Summarize(ctx, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ios, android := s.Platforms["ios"], s.Platforms["android"]
	if ios.Sent != 4 || ios.Deferred != 3 || ios.Pruned != 1 || ios.Receipts != 2 {
		t.Fatalf("ios totals: got %+v", *ios)
	}
	if *ios.WakeRate != 0.5 {
		t.Fatalf("ios wake rate: got %v, want 0.5", *ios.WakeRate)
	}
	if *ios.WakeLatencyP50 != 1000 || *ios.WakeLatencyP99 != 5000 {
		t.Fatalf("ios latency p50/p99: got %d/%d, want 1000/5000", *ios.WakeLatencyP50, *ios.WakeLatencyP99)
	}
	if android.Sent != 10 || android.Receipts != 1 || *android.WakeLatencyP50 != 100 {
		t.Fatalf("android: got %+v p50=%v", *android, android.WakeLatencyP50)
	}
	if len(s.Series.Minutes) != 5 || s.Series.Minutes[4]-s.Series.Minutes[0] != 240 {
		t.Fatalf("series minutes: got %v", s.Series.Minutes)
	}
	// Minute index 2 of 5 is the first recording minute, index 4 the later one.
	if s.Series.Sent[2] != 14 || s.Series.Wakes[2] != 1 || s.Series.Sent[4] != 0 || s.Series.Wakes[4] != 2 {
		t.Fatalf("series: sent %v wakes %v", s.Series.Sent, s.Series.Wakes)
	}
	if got := testutil.ToFloat64(b.rec.pushes.WithLabelValues("default", "other", "feed", Sent)); got != 7 {
		t.Fatalf("unknown platform metric: got %v, want 7", got)
	}
}

func TestSummarizeEmptyAndBadWindow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s, err := b.rec.Summarize(t.Context(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Platforms["ios"]; p.WakeRate != nil || p.WakeLatencyP50 != nil || len(s.Series.Sent) != 60 {
		t.Fatalf("empty summary: got %+v, %d minutes", *p, len(s.Series.Sent))
	}
	if _, err := b.rec.Summarize(t.Context(), 3*time.Hour); err == nil {
		t.Fatal("a window beyond retention: got nil error")
	}
}

func TestSummarizePerApp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	for _, err := range []error{
		b.rec.Pushes(ctx, Count{"ios", "feed", Sent, 4, "news"}, Count{"ios", "feed", Sent, 6, "sports"},
			Count{"android", "feed", Sent, 1, ""}, Count{"android", "feed", Sent, 2, "Bad App"}),
		b.rec.Receipt(ctx, "news", "ios", "feed", "synced", time.Second),
		b.rec.Receipt(ctx, "sports", "ios", "feed", "synced", time.Second),
		b.rec.Receipt(ctx, "sports", "ios", "feed", "synced", time.Second),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name           string
		apps           []string
		iosSent, wakes int64
		androidSent    int64
	}{
		{"fleet", nil, 10, 3, 3},
		{"news", []string{"news"}, 4, 1, 0},
		{"sports", []string{"sports"}, 6, 2, 0},
		{"news and sports", []string{"news", "sports"}, 10, 3, 0},
		{"default", []string{"default"}, 0, 0, 1},
		{"no apps", []string{}, 0, 0, 0},
		{"an app id that cannot be", []string{"x:1"}, 0, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := b.rec.SummarizeApps(ctx, time.Hour, tt.apps)
			if err != nil {
				t.Fatal(err)
			}
			ios, android := s.Platforms["ios"], s.Platforms["android"]
			if ios.Sent != tt.iosSent || ios.Receipts != tt.wakes || android.Sent != tt.androidSent {
				t.Fatalf("got ios sent %d wakes %d, android sent %d; want %d, %d, %d",
					ios.Sent, ios.Receipts, android.Sent, tt.iosSent, tt.wakes, tt.androidSent)
			}
		})
	}
	if got := testutil.ToFloat64(b.rec.pushes.WithLabelValues("other", "android", "feed", Sent)); got != 2 {
		t.Fatalf("a bad app id: metric under app other %v, want 2", got)
	}
	if got := testutil.ToFloat64(b.rec.receipts.WithLabelValues("sports", "ios", "feed", "synced")); got != 2 {
		t.Fatalf("sports receipts metric: got %v, want 2", got)
	}
}

// BenchmarkAppStatsMemory fills one minute for many apps with every field a
// minute can hold (every outcome, receipt outcome and latency bucket on both
// platforms: the worst case) and reports Redis memory per app-minute hash
// and for the whole retention at 100 apps.
func BenchmarkAppStatsMemory(b *testing.B) {
	rdb := redistest.Start(b)
	now := time.Date(2026, 11, 26, 12, 0, 30, 0, time.UTC)
	rec, err := NewRecorder(service.Archetype{Registerer: prometheus.NewRegistry(), Clock: func() time.Time { return now }}, rdb)
	if err != nil {
		b.Fatal(err)
	}
	const nApps = 100
	ctx := b.Context()
	for b.Loop() {
		for a := range nApps {
			app := fmt.Sprintf("app-%03d", a)
			var counts []Count
			for _, p := range platforms {
				for _, o := range []string{Sent, Pruned, Failed, Deferred, Coalesced} {
					counts = append(counts, Count{p, "feed", o, 1000, app})
				}
				for _, ms := range append(latencyBuckets, 7_200_000) {
					for _, o := range receiptOutcomes {
						if err := rec.Receipt(ctx, app, p, "feed", o, time.Duration(ms)*time.Millisecond); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			if err := rec.Pushes(ctx, counts...); err != nil {
				b.Fatal(err)
			}
		}
	}
	minute := now.Unix() / 60
	var perApp int64
	for a := range nApps {
		n, err := rdb.MemoryUsage(ctx, keys.AppStats(fmt.Sprintf("app-%03d", a), minute)).Result()
		if err != nil {
			b.Fatal(err)
		}
		perApp += n
	}
	fleet, err := rdb.MemoryUsage(ctx, keys.Stats(minute)).Result()
	if err != nil {
		b.Fatal(err)
	}
	perApp /= nApps
	minutes := int64(Retention / time.Minute)
	b.ReportMetric(float64(perApp), "B/app-minute")
	b.ReportMetric(float64(fleet), "B/fleet-minute")
	b.ReportMetric(float64((perApp*nApps+fleet)*minutes)/(1<<20), "MiB/100-apps-retention")
}
