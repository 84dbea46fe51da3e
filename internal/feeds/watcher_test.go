package feeds

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

// fakeClock is a settable clock shared by the watchers of a test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// sliceCatalog is a Catalog backed by a slice.
type sliceCatalog []catalog.Feed

func (s sliceCatalog) List(context.Context) ([]catalog.Feed, error) { return s, nil }

// call is one Notifier call.
type call struct {
	feed        string
	since, head int64
	n           int
}

// recorder is a Notifier that records calls and fails the first failN.
type recorder struct {
	mu    sync.Mutex
	calls []call
	fails int
	failN int
}

func (r *recorder) FeedChanged(_ context.Context, feed string, since, head int64, n int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fails < r.failN {
		r.fails++
		return errors.New("fan-out queue unavailable")
	}
	r.calls = append(r.calls, call{feed, since, head, n})
	return nil
}

func (r *recorder) snapshot() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// feedServer serves an RSS document that the test can change, with ETag
// support, and counts requests per path.
type feedServer struct {
	mu       sync.Mutex
	items    []string // item XML, newest first
	etag     string
	requests map[string]int
	notMod   int
}

func (s *feedServer) set(etag string, items ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.etag, s.items = etag, items
}

func (s *feedServer) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[path]
}

func (s *feedServer) notModified() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notMod
}

func rssItem(guid, title string) string {
	return fmt.Sprintf("<item><guid>%s</guid><title>%s</title><link>/a/%s</link></item>", guid, title, guid)
}

func (s *feedServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests[r.URL.Path]++
	items, etag := strings.Join(s.items, ""), s.etag
	if etag != "" && r.Header.Get("If-None-Match") == etag {
		s.notMod++
		s.mu.Unlock()
		w.WriteHeader(http.StatusNotModified)
		return
	}
	s.mu.Unlock()
	switch r.URL.Path {
	case "/malformed":
		w.Write([]byte("<rss><channel><item><title>broken"))
		return
	case "/huge": // 50 MB, generated
		w.Header().Set("Content-Type", "application/rss+xml")
		w.Write([]byte("<rss><channel>"))
		chunk := []byte(strings.Repeat(rssItem("x", "filler"), 100))
		for written := 0; written < 50<<20; written += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		return
	case "/endless": // never ends
		w.Write([]byte("<rss><channel>"))
		for {
			if _, err := w.Write([]byte(rssItem("y", "slow"))); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	case "/error":
		http.Error(w, "boom", http.StatusInternalServerError)
		return
	case "/loop":
		http.Redirect(w, r, "/loop2", http.StatusFound)
		return
	case "/loop2":
		http.Redirect(w, r, "/loop", http.StatusFound)
		return
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	w.Header().Set("Content-Type", "application/rss+xml; charset=utf-8")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title><link>%s/</link>%s</channel></rss>`,
		"http://"+r.Host, items)
}

type watcherBundle struct {
	rdb      *redis.Client
	srv      *feedServer
	url      string
	clock    *fakeClock
	notifier *recorder
}

func setup(t *testing.T) *watcherBundle {
	t.Helper()
	fs := &feedServer{requests: map[string]int{}}
	hs := httptest.NewServer(fs)
	t.Cleanup(hs.Close)
	return &watcherBundle{
		rdb:      redistest.Start(t),
		srv:      fs,
		url:      hs.URL,
		clock:    &fakeClock{t: time.Unix(1_700_000_000, 0)},
		notifier: &recorder{},
	}
}

func (b *watcherBundle) start(t *testing.T, cfg Config, feeds sliceCatalog) *Watcher {
	t.Helper()
	cfg.Tick = cmpOr(cfg.Tick, 5*time.Millisecond)
	cfg.Jitter = -1
	cfg.RequestTimeout = cmpOr(cfg.RequestTimeout, 2*time.Second)
	w, err := NewWatcher(service.Archetype{Clock: b.clock.Now}, cfg, Deps{
		Redis: b.rdb, Catalog: feeds, Notifier: b.notifier,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

func cmpOr(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

// settle waits until every watcher ran at least n more scheduling passes,
// so "nothing happened" is a real observation.
func settle(t *testing.T, n float64, ws ...*Watcher) {
	t.Helper()
	start := make([]float64, len(ws))
	for i, w := range ws {
		start[i] = testutil.ToFloat64(w.metrics.loops)
	}
	await.Until(t, "watcher passes", func() bool {
		for i, w := range ws {
			if testutil.ToFloat64(w.metrics.loops) < start[i]+n {
				return false
			}
		}
		return true
	})
}

func health(t *testing.T, rdb redis.Cmdable, feed string) Health {
	t.Helper()
	h, err := ReadHealth(t.Context(), rdb, feed)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestWatcherDetectsChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const interval = time.Minute
	b.srv.set(`"v1"`, rssItem("b", "Bravo"), rssItem("a", "Alpha"))
	w := b.start(t, Config{}, sliceCatalog{{ID: "news", URL: b.url + "/news", PollInterval: interval}})

	waitCalls := func(n int) []call {
		t.Helper()
		await.Until(t, fmt.Sprintf("%d notifier calls", n), func() bool { return len(b.notifier.snapshot()) >= n })
		settle(t, 3, w)
		calls := b.notifier.snapshot()
		if len(calls) != n {
			t.Fatalf("notifier calls: got %d, want %d: %+v", len(calls), n, calls)
		}
		return calls
	}
	pollAgain := func() {
		t.Helper()
		before := b.srv.count("/news")
		b.clock.Advance(interval)
		await.Until(t, "next poll", func() bool {
			return b.srv.count("/news") > before && health(t, b.rdb, "news").LastPoll.Equal(b.clock.Now())
		})
	}

	calls := waitCalls(1)
	if got, want := calls[0], (call{"news", 0, 2, 2}); got != want {
		t.Fatalf("first change: got %+v, want %+v", got, want)
	}

	// Unchanged: the conditional GET is answered 304, nothing is stored.
	pollAgain()
	waitCalls(1)
	if got := b.srv.notModified(); got != 1 {
		t.Fatalf("304 responses: got %d, want 1", got)
	}
	if h := health(t, b.rdb, "news"); h.LastStatus != 304 || h.ETag != `"v1"` || h.Failures != 0 {
		t.Fatalf("health after 304: got %+v", h)
	}

	// Re-ordered under a new ETag: fetched in full, nothing new.
	b.srv.set(`"v2"`, rssItem("a", "Alpha"), rssItem("b", "Bravo"))
	pollAgain()
	waitCalls(1)

	// One new item.
	b.srv.set(`"v3"`, rssItem("c", "Charlie"), rssItem("b", "Bravo"), rssItem("a", "Alpha"))
	pollAgain()
	calls = waitCalls(2)
	if got, want := calls[1], (call{"news", 2, 3, 1}); got != want {
		t.Fatalf("new item: got %+v, want %+v", got, want)
	}

	// A changed item is detected once, at a new cursor.
	b.srv.set(`"v4"`, rssItem("c", "Charlie"), rssItem("b", "Bravo"), rssItem("a", "Alpha, updated"))
	pollAgain()
	calls = waitCalls(3)
	if got, want := calls[2], (call{"news", 3, 4, 1}); got != want {
		t.Fatalf("changed item: got %+v, want %+v", got, want)
	}
	pollAgain()
	waitCalls(3)

	items, next, err := w.Store().Items(t.Context(), "news", 3, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].ID != "a" || items[0].Title != "Alpha, updated" || items[0].Cursor != 4 || next != 4 {
		t.Fatalf("items since 3: got %+v next %d, want a/\"Alpha, updated\" at 4, next 4", items, next)
	}
	if got, want := items[0].URL, b.url+"/a/a"; got != want {
		t.Fatalf("resolved url: got %q, want %q", got, want)
	}
	if h := health(t, b.rdb, "news"); h.Head != 4 || h.Notified != 4 || h.Items != 3 {
		t.Fatalf("health: got head %d notified %d items %d, want 4 4 3", h.Head, h.Notified, h.Items)
	}
	if got := testutil.ToFloat64(w.metrics.polls.WithLabelValues("not_modified")); got != 2 {
		t.Fatalf("not_modified polls metric: got %v, want 2", got)
	}
	if got := testutil.ToFloat64(w.metrics.items.WithLabelValues("changed")); got != 1 {
		t.Fatalf("changed items metric: got %v, want 1", got)
	}
}

func TestWatcherNotifierRetry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.notifier.failN = 3
	b.srv.set("", rssItem("a", "Alpha"))
	w := b.start(t, Config{}, sliceCatalog{{ID: "n", URL: b.url + "/n", PollInterval: time.Hour}})
	await.Until(t, "a successful notification", func() bool { return len(b.notifier.snapshot()) == 1 })
	if got, want := b.notifier.snapshot()[0], (call{"n", 0, 1, 1}); got != want {
		t.Fatalf("retried notification: got %+v, want %+v", got, want)
	}
	settle(t, 3, w)
	if n := len(b.notifier.snapshot()); n != 1 {
		t.Fatalf("notifications after success: got %d, want 1", n)
	}
	if got := b.srv.count("/n"); got != 1 {
		t.Fatalf("polls: got %d, want 1 (retries notify, they do not re-poll)", got)
	}
	if got := testutil.ToFloat64(w.metrics.notifyEr); got != 3 {
		t.Fatalf("notify errors metric: got %v, want 3", got)
	}
	if h := health(t, b.rdb, "n"); h.Notified != 1 {
		t.Fatalf("notified mark: got %d, want 1", h.Notified)
	}
}

func TestWatcherBadFeeds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const interval = time.Minute
	b.srv.set("", rssItem("a", "Alpha"))
	feeds := sliceCatalog{{ID: "good", URL: b.url + "/good", PollInterval: interval}}
	bad := map[string]string{ // feed -> expected error text
		"malformed": "malformed feed",
		"huge":      "too large",
		"endless":   "deadline exceeded",
		"error":     "500",
		"loop":      "too many redirects",
	}
	for id := range bad {
		feeds = append(feeds, catalog.Feed{ID: id, URL: b.url + "/" + id, PollInterval: interval})
	}
	w := b.start(t, Config{RequestTimeout: 300 * time.Millisecond, MaxBodyBytes: 1 << 20}, feeds)

	await.Until(t, "all feeds polled", func() bool {
		for _, f := range feeds {
			if health(t, b.rdb, f.ID).LastPoll.IsZero() {
				return false
			}
		}
		return true
	})
	for id, want := range bad {
		h := health(t, b.rdb, id)
		if h.Failures != 1 || !strings.Contains(h.LastError, want) {
			t.Fatalf("health of %s: got failures %d error %q, want 1 and %q", id, h.Failures, h.LastError, want)
		}
		if !h.NextPoll.After(b.clock.Now()) {
			t.Fatalf("health of %s: next poll %v not after now %v", id, h.NextPoll, b.clock.Now())
		}
	}
	if h := health(t, b.rdb, "error"); h.LastStatus != 500 {
		t.Fatalf("status of error feed: got %d, want 500", h.LastStatus)
	}
	if h := health(t, b.rdb, "good"); h.Failures != 0 || h.LastError != "" || h.Head != 1 {
		t.Fatalf("health of good feed: got %+v", h)
	}

	// The good feed keeps being polled on its interval; the failing ones
	// back off exponentially (2 × interval after the second failure).
	b.srv.set("", rssItem("b", "Bravo"), rssItem("a", "Alpha"))
	b.clock.Advance(interval)
	await.Until(t, "good feed polled again", func() bool { return health(t, b.rdb, "good").Head == 2 })
	await.Until(t, "bad feeds retried", func() bool {
		for id := range bad {
			if health(t, b.rdb, id).Failures != 2 {
				return false
			}
		}
		return true
	})
	for id := range bad {
		h := health(t, b.rdb, id)
		if got, want := h.NextPoll.Sub(h.LastPoll), 2*interval; got != want {
			t.Fatalf("backoff of %s: got %v, want %v", id, got, want)
		}
	}
	if got := testutil.ToFloat64(w.metrics.failures.WithLabelValues("loop")); got != 2 {
		t.Fatalf("consecutive failures gauge: got %v, want 2", got)
	}
	// The stored items of a feed survive its later failures.
	b.srv.set("")
	if items, _, err := w.Store().Items(t.Context(), "good", 0, 10); err != nil || len(items) != 2 {
		t.Fatalf("items of good feed: got %d, %v, want 2", len(items), err)
	}
}

func TestWatcherReplicasPollOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const interval = time.Minute
	b.srv.set(`"e"`, rssItem("a", "Alpha"))
	feeds := sliceCatalog{}
	for i := range 4 {
		id := fmt.Sprintf("f%d", i)
		feeds = append(feeds, catalog.Feed{ID: id, URL: b.url + "/" + id, PollInterval: interval})
	}
	w1 := b.start(t, Config{}, feeds)
	w2 := b.start(t, Config{}, feeds)
	for round := 1; round <= 5; round++ {
		if round > 1 {
			// The next interval; not after the last round, whose polls
			// would race the count of polls below.
			b.clock.Advance(interval)
		}
		await.Until(t, fmt.Sprintf("round %d polls", round), func() bool {
			for _, f := range feeds {
				if b.srv.count("/"+f.ID) < round {
					return false
				}
			}
			return true
		})
		settle(t, 5, w1, w2)
		for _, f := range feeds {
			if got := b.srv.count("/" + f.ID); got != round {
				t.Fatalf("round %d: feed %s polled %d times, want %d", round, f.ID, got, round)
			}
		}
	}
	// Each feed's change was notified once, by whichever replica had it.
	if got := len(b.notifier.snapshot()); got != len(feeds) {
		t.Fatalf("notifications: got %d, want %d", got, len(feeds))
	}
	polls := testutil.ToFloat64(w1.metrics.polls.WithLabelValues("ok")) + testutil.ToFloat64(w2.metrics.polls.WithLabelValues("ok")) +
		testutil.ToFloat64(w1.metrics.polls.WithLabelValues("not_modified")) + testutil.ToFloat64(w2.metrics.polls.WithLabelValues("not_modified"))
	if polls != 5*float64(len(feeds)) {
		t.Fatalf("polls across replicas: got %v, want %d", polls, 5*len(feeds))
	}
}

func TestWatcherFailover(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.set("", rssItem("a", "Alpha"))
	feeds := sliceCatalog{{ID: "f", URL: b.url + "/f", PollInterval: time.Minute}}
	// A dead replica left its lease behind; it expires and the feed moves.
	if err := b.rdb.Set(t.Context(), "feed:{f}:lease", "dead-replica", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	b.start(t, Config{}, feeds)
	await.Until(t, "feed polled after lease expiry", func() bool { return b.srv.count("/f") == 1 })
}

func TestWatcherStartStop(t *testing.T) {
	t.Parallel()
	b := setup(t)
	newWatcher := func() *Watcher {
		w, err := NewWatcher(service.Archetype{}, Config{}, Deps{Redis: b.rdb, Catalog: sliceCatalog{}, Notifier: b.notifier})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	early := newWatcher()
	early.Stop() // before Start: final (startstop)
	if err := early.Start(t.Context()); !errors.Is(err, ErrAlreadyStarted) {
		t.Fatalf("Start after Stop: got %v, want ErrAlreadyStarted", err)
	}
	w := newWatcher()
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); !errors.Is(err, ErrAlreadyStarted) {
		t.Fatalf("second Start: got %v, want ErrAlreadyStarted", err)
	}
	w.Stop()
	w.Stop() // twice
	<-w.Stopped()
}

func TestWatcherConfig(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	deps := Deps{Redis: rdb, Catalog: sliceCatalog{}, Notifier: &recorder{}}
	tests := []struct {
		name string
		cfg  Config
		deps Deps
		want string
	}{
		{"lease shorter than timeout", Config{RequestTimeout: time.Minute, LeaseTTL: time.Second}, deps, "LeaseTTL"},
		{"jitter", Config{Jitter: 1.5}, deps, "Jitter"},
		{"tiny body cap", Config{MaxBodyBytes: 10}, deps, "MaxBodyBytes"},
		{"parse budget under the body cap", Config{ParseBudget: 2048, MaxBodyBytes: 4096}, deps, "NUDGE_FEED_PARSE_BUDGET"},
		{"item limit", Config{Parser: ParserConfig{MaxItems: -1}}, deps, "MaxItems"},
		{"store memory", Config{Store: StoreConfig{Memory: time.Millisecond}}, deps, "NUDGE_FEED_MEMORY"},
		{"no redis", Config{}, Deps{Catalog: sliceCatalog{}, Notifier: &recorder{}}, "Deps.Redis"},
		{"no notifier", Config{}, Deps{Redis: rdb, Catalog: sliceCatalog{}}, "Deps.Notifier"},
		{"ok", Config{}, deps, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewWatcher(service.Archetype{}, tc.cfg, tc.deps)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("err: got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err: got %v, want one naming %s", err, tc.want)
			}
		})
	}
}
