package feeds

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

// BenchmarkParseCorpus parses and normalises every document of the corpus
// once per iteration and reports items/s and MB/s.
func BenchmarkParseCorpus(b *testing.B) {
	p, err := NewParser(ParserConfig{})
	if err != nil {
		b.Fatal(err)
	}
	files, _ := filepath.Glob("testdata/corpus/*.*")
	mal, _ := filepath.Glob("testdata/corpus/malformed/*")
	type doc struct {
		body []byte
		url  string
	}
	var docs []doc
	var size int64
	for _, f := range append(files, mal...) {
		if filepath.Ext(f) == ".md" {
			continue
		}
		rel, _ := filepath.Rel("testdata/corpus", f)
		body := readCorpus(b, rel)
		docs = append(docs, doc{body, "https://feeds.example.test/" + filepath.Base(f)})
		size += int64(len(body))
	}
	b.SetBytes(size)
	b.ReportAllocs()
	items := 0
	for b.Loop() {
		for _, d := range docs {
			out, _ := p.Parse(d.body, "", d.url)
			items += len(out.Items)
		}
	}
	b.ReportMetric(float64(items)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkStoreSave runs the store script on documents of 50 items where
// 5 are new each time (a typical news feed poll), and on a re-fetch with
// nothing new, and reports items/s through the script.
func BenchmarkStoreSave(b *testing.B) {
	for _, bc := range []struct {
		name  string
		fresh int // new items per poll
	}{{"5new_of_50", 5}, {"unchanged_50", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			rdb := redistest.Start(b)
			s, err := NewStore(StoreConfig{LogCap: 200}, rdb)
			if err != nil {
				b.Fatal(err)
			}
			ctx := b.Context()
			now := time.Unix(1_700_000_000, 0)
			top, items := 50, 0
			for b.Loop() {
				top += bc.fresh
				d := doc(top-49, top)
				for i := range d {
					d[i].Summary = fmt.Sprintf("summary of item %d, about two hundred characters of plain text as a feed would carry in its description element, trimmed and capped by the normaliser before it is stored.", top-i)
				}
				now = now.Add(time.Second)
				if _, err := s.Save(ctx, "bench", d, now); err != nil {
					b.Fatal(err)
				}
				items += len(d)
			}
			b.ReportMetric(float64(items)/b.Elapsed().Seconds(), "items/s")
		})
	}
}

// bigFeed is an RSS document of about size bytes: items of ~2 KB.
func bigFeed(size int) []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>big</title><link>https://big.example.test/</link>`)
	para := strings.Repeat("A paragraph of article text, as a full-content feed carries it. ", 30)
	for i := 0; b.Len() < size-200; i++ {
		fmt.Fprintf(&b, "<item><guid>big-%d</guid><title>Article %d</title><link>https://big.example.test/a/%d</link><pubDate>%s</pubDate><description><![CDATA[<p>%s</p>]]></description></item>",
			i, i, i, time.Unix(1_700_000_000-int64(i)*60, 0).UTC().Format(time.RFC1123Z), para)
	}
	b.WriteString("</channel></rss>")
	return []byte(b.String())
}

// BenchmarkWatcherPeakHeap polls NUDGE_FEED_CONCURRENCY (8) feeds of
// 9.5 MB (just under the 10 MiB body cap) at once through a Watcher and
// reports the peak Go heap (live + unswept objects, sampled every 2 ms)
// and the peak heap memory held from the OS (HeapSys − HeapReleased, what
// the pod's RSS follows) over one round: with the default parse budget (2 × the body cap) and
// with a budget so large it bounds nothing (the behaviour before).
func BenchmarkWatcherPeakHeap(b *testing.B) {
	body := bigFeed(9_500_000)
	// One origin per feed, so that per-host slot limits do not serialise
	// the polls: the parse budget alone bounds them.
	var urls []string
	for range 8 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/rss+xml")
			w.Write(body)
		}))
		b.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
	}
	for _, bc := range []struct {
		name   string
		budget int64
	}{{"budget_default", 0}, {"budget_unbounded", 1 << 40}} {
		b.Run(bc.name, func(b *testing.B) {
			rdb := redistest.Start(b)
			peak, peakSys := uint64(0), uint64(0)
			round := 0
			for b.Loop() {
				round++
				cat := sliceCatalog{}
				for i := range 8 {
					cat = append(cat, catalog.Feed{ID: fmt.Sprintf("big%d-%d", i, round), URL: urls[i] + "/feed", PollInterval: time.Hour})
				}
				var polled atomic.Int64
				all := make(chan struct{})
				w, err := NewWatcher(service.Archetype{}, Config{Tick: 10 * time.Millisecond, ParseBudget: bc.budget, Store: StoreConfig{LogCap: 1000}},
					Deps{Redis: rdb, Catalog: cat, Notifier: NotifierFunc(func(context.Context, string, int64, int64, int) error {
						if polled.Add(1) == 8 {
							close(all)
						}
						return nil
					})})
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				stop := make(chan struct{})
				done := make(chan [2]uint64)
				go func() {
					var m runtime.MemStats
					var p, sys uint64
					t := time.NewTicker(2 * time.Millisecond)
					defer t.Stop()
					for {
						runtime.ReadMemStats(&m)
						p = max(p, m.HeapAlloc)
						sys = max(sys, m.HeapSys-m.HeapReleased)
						select {
						case <-stop:
							done <- [2]uint64{p, sys}
							return
						case <-t.C:
						}
					}
				}()
				if err := w.Start(b.Context()); err != nil {
					b.Fatal(err)
				}
				<-all
				w.Stop()
				close(stop)
				got := <-done
				peak, peakSys = max(peak, got[0]), max(peakSys, got[1])
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(peakSys)/(1<<20), "peak-heap-held-MiB")
		})
	}
}

// BenchmarkStoreMemorySize measures the announced-memory of one feed in
// steady state: a news feed of 50 items that publishes 100 articles a day,
// polled every 30 minutes for 35 days of injected clock (past the 30-day
// memory), with 50-item documents (GUID and link, so two records per
// article). It reports the records and the bytes Redis holds for the
// feed's memory key (MEMORY USAGE).
func BenchmarkStoreMemorySize(b *testing.B) {
	rdb := redistest.Start(b)
	s, err := NewStore(StoreConfig{}, rdb)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	var records, bytes int64
	round := 0
	for b.Loop() {
		round++
		feed := fmt.Sprintf("mem%d", round)
		now := time.Unix(1_700_000_000, 0)
		top := 50
		for poll := 0; poll < 35*48; poll++ {
			now = now.Add(30 * time.Minute)
			if poll%12 == 0 {
				top += 25 // 100 a day, in bursts of 25 every 6 hours
			}
			d := doc(top-49, top)
			if _, err := s.Save(ctx, feed, d, now); err != nil {
				b.Fatal(err)
			}
		}
		records, _ = rdb.HLen(ctx, keys.FeedSeen(feed)).Result()
		bytes, _ = rdb.MemoryUsage(ctx, keys.FeedSeen(feed), 0).Result()
	}
	b.ReportMetric(float64(records), "records")
	b.ReportMetric(float64(bytes)/(1<<10), "KiB/feed")
	b.ReportMetric(float64(bytes)/float64(records)*2, "B/article")
}
