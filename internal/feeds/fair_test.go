package feeds

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/catalog"
)

// gatedFeed serves an RSS document; while armed, a request takes the
// document as it is when the request arrives, signals entered and waits
// for release before answering (a poll caught mid-fetch).
type gatedFeed struct {
	mu       sync.Mutex
	items    []string
	armed    bool
	entered  chan struct{}
	release  chan struct{}
	requests int
}

func (g *gatedFeed) set(items ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.items = items
}

func (g *gatedFeed) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.requests
}

func (g *gatedFeed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.requests++
	body := strings.Join(g.items, "")
	armed := g.armed
	g.armed = false
	g.mu.Unlock()
	if armed {
		g.entered <- struct{}{}
		<-g.release
	}
	w.Header().Set("Content-Type", "application/rss+xml")
	fmt.Fprintf(w, `<rss version="2.0"><channel><title>t</title><link>http://%s/</link>%s</channel></rss>`, r.Host, body)
}

// TestWatcherPollNowDuringPoll races a PollNow against a poll that is
// already fetching: the running poll fetched the document from before the
// publish, so only a second poll finds the new article. It must follow at
// once, not an interval (an hour here, on a clock that never moves) later.
func TestWatcherPollNowDuringPoll(t *testing.T) {
	t.Parallel()
	b := setup(t)
	g := &gatedFeed{entered: make(chan struct{}), release: make(chan struct{})}
	hs := httptest.NewServer(g)
	t.Cleanup(hs.Close)
	g.set(rssItem("a", "Alpha"))
	w := b.start(t, Config{}, sliceCatalog{{ID: "cms", URL: hs.URL + "/feed", PollInterval: time.Hour}})
	await.Until(t, "first announcement", func() bool { return len(b.notifier.snapshot()) == 1 })

	// A ping makes the feed due; its poll is held inside the fetch.
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
	if err := PollNow(t.Context(), b.rdb, "cms"); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	// The publisher publishes and pings again while that poll runs.
	g.set(rssItem("b", "Bravo"), rssItem("a", "Alpha"))
	if err := PollNow(t.Context(), b.rdb, "cms"); err != nil {
		t.Fatal(err)
	}
	close(g.release)

	await.Until(t, "the new article announced", func() bool { return len(b.notifier.snapshot()) == 2 })
	if got, want := b.notifier.snapshot()[1], (call{"cms", 1, 2, 1}); got != want {
		t.Fatalf("second announcement: got %+v, want %+v", got, want)
	}
	settle(t, 3, w)
	if got := g.count(); got != 3 {
		t.Fatalf("fetches: got %d, want 3 (first, the held one, the one the ping asked for)", got)
	}
	// The follow-up poll saw the current generation: back on the interval.
	if h := health(t, b.rdb, "cms"); !h.NextPoll.Equal(b.clock.Now().Add(time.Hour)) || h.PollGen != 2 {
		t.Fatalf("health: next poll %v gen %d, want %v and 2", h.NextPoll, h.PollGen, b.clock.Now().Add(time.Hour))
	}
}

// slowOrigin is a feed server that trickles its body at 1 byte a second
// and never finishes; it counts the requests in progress.
type slowOrigin struct {
	active, peak atomic.Int64
}

func (s *slowOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.active.Add(1)
	defer s.active.Add(-1)
	for {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	w.Header().Set("Content-Type", "application/rss+xml")
	w.WriteHeader(http.StatusOK)
	body := `<rss version="2.0"><channel><title>slow</title>`
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 0; ; i++ {
		if _, err := w.Write([]byte{body[i%len(body)]}); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
}

// TestWatcherFairness polls 8 feeds on 8 origins that trickle 1 byte/s
// (filling all 8 default slots) beside one fast feed, with the default
// tick of 1s. A publisher's ping of the fast feed is served within a few
// seconds (42 s before; the bound is 4 s for a loaded CI box); a scheduled
// poll of it gets a slot once a slow fetch has had its fair share (scaled
// from 10 s to 1 s here) and is cut.
func TestWatcherFairness(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const interval = time.Hour
	b.srv.set("", rssItem("a", "Alpha"))
	// The slow feeds come first in the catalogue: they take the 8 slots,
	// and the fast feed's first poll the spare one.
	var feeds sliceCatalog
	slow := make([]*slowOrigin, 8)
	for i := range slow {
		slow[i] = &slowOrigin{}
		hs := httptest.NewServer(slow[i])
		t.Cleanup(hs.Close)
		feeds = append(feeds, catalog.Feed{ID: fmt.Sprintf("slow%d", i), URL: hs.URL + "/feed", PollInterval: interval})
	}
	feeds = append(feeds, catalog.Feed{ID: "fast", URL: b.url + "/fast", PollInterval: interval})
	w := b.start(t, Config{Tick: time.Second, RequestTimeout: time.Minute, FairShare: time.Second}, feeds)
	await.Until(t, "fast feed announced", func() bool { return health(t, b.rdb, "fast").Head == 1 })
	await.Until(t, "8 slow fetches running", func() bool {
		n := int64(0)
		for _, s := range slow {
			n += s.active.Load()
		}
		return n == 8
	})

	// A ping: served through the spare slot, without waiting for any cut.
	b.srv.set("", rssItem("b", "Bravo"), rssItem("a", "Alpha"))
	start := time.Now()
	if err := PollNow(t.Context(), b.rdb, "fast"); err != nil {
		t.Fatal(err)
	}
	await.Until(t, "pinged item stored", func() bool { return health(t, b.rdb, "fast").Head == 2 })
	took := time.Since(start)
	t.Logf("ping served after %v with 8 slow feeds polling", took)
	if took > 4*time.Second {
		t.Fatalf("ping with 8 slow feeds polling: stored after %v, want within 4s (tick 1s)", took)
	}
	if got := testutil.ToFloat64(w.metrics.cut); got != 0 {
		t.Fatalf("fetches cut for a ping: got %v, want 0 (it has its own slot)", got)
	}

	// A scheduled poll: the slow fetches are past their fair share, one is
	// cut and the fast feed takes its slot.
	b.srv.set("", rssItem("c", "Charlie"), rssItem("b", "Bravo"), rssItem("a", "Alpha"))
	b.clock.Advance(interval)
	start = time.Now()
	await.Until(t, "scheduled item stored", func() bool { return health(t, b.rdb, "fast").Head == 3 })
	took = time.Since(start)
	t.Logf("scheduled poll served after %v with 8 slow feeds polling", took)
	if took > 6*time.Second {
		t.Fatalf("scheduled poll with 8 slow feeds polling: stored after %v, want within 6s (tick 1s, fair share 1s)", took)
	}
	if got := testutil.ToFloat64(w.metrics.cut); got < 1 {
		t.Fatalf("fetches cut: got %v, want ≥ 1", got)
	}
	cut := 0
	for i := range slow {
		if h := health(t, b.rdb, fmt.Sprintf("slow%d", i)); strings.Contains(h.LastError, "fair share") {
			cut++
		}
	}
	if cut < 1 {
		t.Fatalf("slow feeds with a fair-share error: got %d, want ≥ 1", cut)
	}
}

// TestWatcherMaxPerHost polls 6 slow feeds of one origin: only MaxPerHost
// of them hold slots at once, so a feed of another origin is never kept
// waiting by them.
func TestWatcherMaxPerHost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	origin := &slowOrigin{}
	hs := httptest.NewServer(origin)
	t.Cleanup(hs.Close)
	b.srv.set("", rssItem("a", "Alpha"))
	feeds := sliceCatalog{}
	for i := range 6 {
		feeds = append(feeds, catalog.Feed{ID: fmt.Sprintf("same%d", i), URL: fmt.Sprintf("%s/f%d", hs.URL, i), PollInterval: time.Hour})
	}
	feeds = append(feeds, catalog.Feed{ID: "other", URL: b.url + "/other", PollInterval: time.Hour})
	w := b.start(t, Config{Concurrency: 4, RequestTimeout: time.Minute}, feeds) // MaxPerHost 1
	await.Until(t, "other feed announced", func() bool { return health(t, b.rdb, "other").Head == 1 })
	await.Until(t, "a slow fetch running", func() bool { return origin.active.Load() == 1 })
	settle(t, 20, w)
	if got := origin.peak.Load(); got != 1 {
		t.Fatalf("concurrent fetches from one origin: got %d, want MaxPerHost 1", got)
	}
}

// datedItem is an RSS item published n minutes after a fixed time.
func datedItem(n int) string {
	return fmt.Sprintf("<item><guid>d%d</guid><title>Dated %d</title><link>/d/%d</link><pubDate>%s</pubDate></item>",
		n, n, n, time.Unix(1_700_000_000+int64(n)*60, 0).UTC().Format(time.RFC1123Z))
}

// TestWatcherItemLimit serves an oldest-first feed longer than the item
// limit (scaled from 1,000 to 10): the newest 10 are kept, the rest show
// in the feed's health and the metric, and items appended at the bottom
// are announced, exactly those.
func TestWatcherItemLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const interval = time.Minute
	var items []string
	for n := 1; n <= 30; n++ {
		items = append(items, datedItem(n)) // oldest first
	}
	b.srv.set("", items...)
	w := b.start(t, Config{Parser: ParserConfig{MaxItems: 10}}, sliceCatalog{{ID: "old1st", URL: b.url + "/old1st", PollInterval: interval}})
	await.Until(t, "first poll recorded", func() bool {
		h := health(t, b.rdb, "old1st")
		return h.Head == 10 && !h.LastPoll.IsZero() // LastPoll comes with dropped, after the items
	})
	if h := health(t, b.rdb, "old1st"); h.Dropped != 20 {
		t.Fatalf("dropped in health: got %d, want 20", h.Dropped)
	}
	page, err := w.Store().Page(t.Context(), "old1st", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := idsOf(page.Items), idsOf(itemsNamed("d", 21, 30)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("kept: got %v, want %v", got, want)
	}
	for n := 31; n <= 35; n++ {
		items = append(items, datedItem(n))
	}
	b.srv.set("", items...)
	b.clock.Advance(interval)
	await.Until(t, "second poll recorded", func() bool {
		h := health(t, b.rdb, "old1st")
		return h.Head == 15 && h.LastPoll.Equal(b.clock.Now())
	})
	page, err = w.Store().Page(t.Context(), "old1st", 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := idsOf(page.Items), idsOf(itemsNamed("d", 31, 35)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("announced: got %v, want %v", got, want)
	}
	if h := health(t, b.rdb, "old1st"); h.Dropped != 25 {
		t.Fatalf("dropped in health: got %d, want 25", h.Dropped)
	}
	if got := testutil.ToFloat64(w.metrics.dropped); got != 45 {
		t.Fatalf("dropped metric: got %v, want 45", got)
	}
	await.Until(t, "second notification", func() bool { return len(b.notifier.snapshot()) >= 2 })
	if calls := b.notifier.snapshot(); len(calls) != 2 || calls[1] != (call{"old1st", 10, 15, 5}) {
		t.Fatalf("notifications: got %+v, want a second one for cursors 10→15, 5 items", calls)
	}
}

// itemsNamed returns items with ids prefix+n for n in [from, to].
func itemsNamed(prefix string, from, to int) []Item {
	var out []Item
	for n := from; n <= to; n++ {
		out = append(out, Item{ID: fmt.Sprintf("%s%d", prefix, n)})
	}
	return out
}
