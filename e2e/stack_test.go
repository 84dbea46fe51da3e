// Package e2e tests nudge end to end: the api and dispatcher binaries run as
// processes, as in production, against a private redis-server, the project's
// FCM and APNs emulators, and a news feed served by the test that changes
// while the test runs.
package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stacktest"
)

// newsroom serves RSS feeds whose items the test publishes, with ETag and
// 304 support as a real publisher's CDN has, and records when each feed
// was fetched.
type newsroom struct {
	mu      sync.Mutex
	items   map[string][]string    // feed -> titles, oldest first
	fetched map[string][]time.Time // feed -> fetch times, oldest first
	srv     *httptest.Server
}

func newNewsroom(t *testing.T, feedIDs ...string) *newsroom {
	n := &newsroom{items: map[string][]string{}, fetched: map[string][]time.Time{}}
	for _, f := range feedIDs {
		n.items[f] = []string{f + " story 1", f + " story 2"}
	}
	n.srv = httptest.NewServer(n)
	t.Cleanup(n.srv.Close)
	return n
}

func (n *newsroom) url(feed string) string { return n.srv.URL + "/" + feed + ".xml" }

func (n *newsroom) publish(feed, title string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.items[feed] = append(n.items[feed], title)
}

// fetchTimes returns when feed was fetched, oldest first.
func (n *newsroom) fetchTimes(feed string) []time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.fetched[feed])
}

func (n *newsroom) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	feed := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), ".xml")
	n.mu.Lock()
	titles, ok := n.items[feed]
	titles = append([]string(nil), titles...)
	if ok {
		n.fetched[feed] = append(n.fetched[feed], time.Now())
	}
	n.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>%s</title><link>%s</link>`, feed, n.srv.URL)
	for i := len(titles) - 1; i >= 0; i-- { // newest first, as feeds are
		fmt.Fprintf(&b, `<item><title>%s</title><link>%s/%s/%d</link><guid>%s-%d</guid><pubDate>%s</pubDate></item>`,
			titles[i], n.srv.URL, feed, i, feed, i, time.Date(2026, 11, 26, 8, i, 0, 0, time.UTC).Format(time.RFC1123Z))
	}
	b.WriteString(`</channel></rss>`)
	sum := sha256.Sum256(b.Bytes())
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/rss+xml; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

// options shape one stack.
type options struct {
	dispatchers int
	feeds       []feedEntry       // catalogue; default headlines and sport, polled hourly
	env         map[string]string // extra settings for both binaries
	skipSettle  bool              // don't wait for every feed's first poll
}

// feedEntry is a catalogue entry; an empty URL is the newsroom's feed ID.
type feedEntry struct {
	ID, URL, PollInterval string
}

// stack is one running nudge: api, dispatchers, Redis, emulators, newsroom.
type stack struct {
	t           *testing.T
	api         string // base URL
	editorKey   string
	emu         *pushemu.Emulator
	news        *newsroom
	rdb         *redis.Client
	dispatchers []*stacktest.Process
	env         []string
}

func start(t *testing.T, o options) *stack {
	t.Helper()
	news := newNewsroom(t, "headlines", "sport")
	if o.feeds == nil {
		o.feeds = []feedEntry{
			{ID: "headlines", URL: news.url("headlines"), PollInterval: "1h"},
			{ID: "sport", URL: news.url("sport"), PollInterval: "1h"},
		}
	}
	for i, f := range o.feeds {
		if f.URL == "" {
			o.feeds[i].URL = news.url(f.ID)
		}
	}
	o.dispatchers = max(o.dispatchers, 1)
	dir := t.TempDir()
	redisSrv := redistest.StartServer(t)
	emu, creds := pushemutest.Start(t, service.Archetype{}, pushemu.Config{})
	key, err := auth.Mint("e2e-desk", auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var catalogue []map[string]string
	for _, f := range o.feeds {
		catalogue = append(catalogue, map[string]string{"id": f.ID, "title": strings.ToUpper(f.ID[:1]) + f.ID[1:], "url": f.URL, "poll_interval": f.PollInterval})
	}
	feedsJSON, _ := json.Marshal(catalogue)

	env := append(creds.Env(),
		"NUDGE_REDIS_URL="+redisSrv.URL(),
		"NUDGE_LOG_LEVEL=debug",
		"NUDGE_API_KEYS_FILE="+write("keys.txt", key.Line+"\n"),
		"NUDGE_FEEDS_FILE="+write("feeds.json", string(feedsJSON)),
		"NUDGE_DEBOUNCE=1s", "NUDGE_MAX_WAIT=2s",
		// A dead replica's jobs move on by heartbeat (NUDGE_HEARTBEAT_TTL);
		// NUDGE_RECLAIM_AFTER also sets the push handler's deadline (half
		// of it), which must stay well above a send on a loaded machine, or
		// sends the provider accepted are cut off and retried.
		"NUDGE_RECLAIM_AFTER=30s",
		"NUDGE_FEED_ALLOW_NETS=127.0.0.1/32", // the test news server listens on loopback
	)
	for k, v := range o.env {
		env = append(env, k+"="+v)
	}
	s := &stack{t: t, editorKey: key.Key, emu: emu, news: news, rdb: redisSrv.Client(t), env: env}

	apiAddr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	api := stacktest.Start(t, "api", append(env, "NUDGE_HTTP_ADDR="+apiAddr))
	s.api = "http://" + apiAddr
	api.WaitHealthy(t, s.api+"/readyz", 60*time.Second)
	for range o.dispatchers {
		s.startDispatcher()
	}
	// Let every feed's first poll pass: its items are the baseline, and
	// nobody is subscribed yet.
	if !o.skipSettle {
		for _, f := range o.feeds {
			s.waitFeedSettled(f.ID)
		}
	}
	return s
}

func (s *stack) startDispatcher() *stacktest.Process {
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(s.t))
	p := stacktest.Start(s.t, "dispatcher", append(s.env, "NUDGE_HTTP_ADDR="+addr))
	p.WaitHealthy(s.t, "http://"+addr+"/readyz", 60*time.Second)
	s.dispatchers = append(s.dispatchers, p)
	return p
}

// waitFeedSettled waits until the feed was polled, every change of it was
// handed to the planner, and the latest change's fan-out was planned, so
// devices registered afterwards are not targeted by it.
func (s *stack) waitFeedSettled(feed string) feeds.Health {
	s.t.Helper()
	var h feeds.Health
	await.Within(s.t, 30*time.Second, "feed "+feed+" polled and notified", func() bool {
		var err error
		h, err = feeds.ReadHealth(s.t.Context(), s.rdb, feed)
		return err == nil && !h.LastSuccess.IsZero() && h.Notified == h.Head
	})
	if h.Head > 0 {
		id := fmt.Sprintf("feed:%s:%d", feed, h.Head)
		await.Within(s.t, 30*time.Second, "event "+id+" planned", func() bool { return s.progress(id).State != "planning" })
	}
	return h
}

// call sends a JSON request to the api and decodes a JSON answer into out.
func (s *stack) call(method, path, bearer string, body, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(s.t.Context(), method, s.api+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	if resp.StatusCode >= 500 {
		s.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

// device is a registered test device.
type device struct {
	ID       uint64 `json:"id"`
	Secret   string `json:"secret"`
	Token    string
	Platform string
}

var tokenSeq atomic.Int64

// register registers a device through the api. provider is "apns" or
// "fcm"; an FCM device on "ios" is an iPhone reached through FCM.
func (s *stack) register(provider, platform string, enabled bool, feedIDs ...string) device {
	s.t.Helper()
	n := tokenSeq.Add(1)
	tok := fmt.Sprintf("%064x", n)
	if provider == "fcm" {
		tok = fmt.Sprintf("e2e%019d:APA91b", n) + strings.Repeat("Tq", 65)
	}
	var d device
	code := s.call("POST", "/v1/devices", "", map[string]any{
		"provider": provider, "token": tok, "platform": platform, "feeds": feedIDs,
		"background_sync": map[string]any{"enabled": enabled},
	}, &d)
	if code != http.StatusCreated {
		s.t.Fatalf("register %s/%s: status %d", provider, platform, code)
	}
	d.Token, d.Platform = tok, platform
	return d
}

// publish adds an item to a feed and asks nudge to poll it now, as a CMS
// does after publishing. It returns the feed's head cursor before the item.
func (s *stack) publish(feed, title string) {
	s.t.Helper()
	s.news.publish(feed, title)
	if code := s.call("POST", "/v1/feeds/"+feed+"/poll", s.editorKey, nil, nil); code != http.StatusAccepted {
		s.t.Fatalf("poll %s: status %d", feed, code)
	}
}

// progress is GET /v1/syncs/{id}.
type progress struct {
	State                                                                string
	Targeted, Queued, Sent, Deferred, Coalesced, Skipped, Pruned, Failed int64
}

// progress returns an event's progress; the zero progress while the event
// does not exist yet.
func (s *stack) progress(id string) progress {
	s.t.Helper()
	var p progress
	if code := s.call("GET", "/v1/syncs/"+id, s.editorKey, nil, &p); code != http.StatusOK && code != http.StatusNotFound {
		s.t.Fatalf("progress of %s: status %d", id, code)
	}
	return p
}

// sinceOf returns the cursor a payload's since field names for feed.
func sinceOf(t *testing.T, p map[string]string, feed string) int64 {
	t.Helper()
	for pair := range strings.SplitSeq(p["since"], ",") {
		f, c, _ := strings.Cut(pair, ":")
		if f == feed {
			n, err := strconv.ParseInt(c, 10, 64)
			if err != nil {
				t.Fatalf("since %q: %v", p["since"], err)
			}
			return n
		}
	}
	t.Fatalf("payload since %q names no cursor for %s", p["since"], feed)
	return 0
}

// itemTitles reads a feed's items after since, as the woken app does.
func (s *stack) itemTitles(feed string, since int64) []string {
	s.t.Helper()
	var page struct {
		Items []struct{ Title string }
	}
	if code := s.call("GET", fmt.Sprintf("/v1/feeds/%s/items?since=%d", feed, since), "", nil, &page); code != http.StatusOK {
		s.t.Fatalf("items of %s: status %d", feed, code)
	}
	var titles []string
	for _, it := range page.Items {
		titles = append(titles, it.Title)
	}
	return titles
}
