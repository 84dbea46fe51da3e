package devstack

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mmcdole/gofeed"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/service"
)

func TestParseSince(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want map[string]int64
	}{
		{"", map[string]int64{}},
		{"headlines:120", map[string]int64{"headlines": 120}},
		{"headlines:120,recent:88", map[string]int64{"headlines": 120, "recent": 88}},
		{"headlines:x,:3,recent", map[string]int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got := parseSince(tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("parseSince(%q): got %v, want %v", tt.in, got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Fatalf("parseSince(%q)[%s]: got %d, want %d", tt.in, k, got[k], v)
				}
			}
		})
	}
}

func TestPayloadOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		d    pushemu.Delivery
		want map[string]string
	}{
		{"fcm data", pushemu.Delivery{Provider: pushemu.FCM, Data: map[string]string{"type": "nudge.sync", "push_id": "p1"}},
			map[string]string{"type": "nudge.sync", "push_id": "p1"}},
		{"apns custom keys beside aps", pushemu.Delivery{Provider: pushemu.APNs,
			Body: []byte(`{"aps":{"content-available":1},"type":"nudge.sync","since":"headlines:3","n":5}`)},
			map[string]string{"type": "nudge.sync", "since": "headlines:3"}},
		{"apns bad body", pushemu.Delivery{Provider: pushemu.APNs, Body: []byte(`{`)}, map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := payloadOf(tt.d)
			if len(got) != len(tt.want) {
				t.Fatalf("payloadOf: got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Fatalf("payloadOf[%s]: got %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestSummaryString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		sum  Summary
		want string
	}{
		{"nothing yet", Summary{Devices: 1000, Registered: 12, WakeRate: -1},
			"devices 12/1,000 · articles 0 · pushes sent 0 · deferred 0 · coalesced 0\nwakes 0 (—)"},
		{"running", Summary{Devices: 1000, Registered: 1000, Articles: 7, Sent: 12345, Deferred: 56, Coalesced: 7,
			Receipts: 11000, WakeRate: 11000.0 / 12345,
			WakeP50: map[string]time.Duration{"ios": 2 * time.Second, "android": 500 * time.Millisecond}},
			"devices 1,000/1,000 · articles 7 · pushes sent 12,345 · deferred 56\n" +
				"coalesced 7 · wakes 11,000 (89.1 %) · wake p50 android 500 ms, ios 2.0 s"},
		{"receipts not due yet", Summary{Devices: 10, Registered: 10, Sent: 10, Receipts: 1, WakeRate: -1},
			"devices 10/10 · articles 0 · pushes sent 10 · deferred 0 · coalesced 0\nwakes 1 (—)"},
		{"pruned and failed", Summary{Devices: 10, Registered: 10, Sent: 10, Pruned: 2, Failed: 1, Receipts: 5, WakeRate: 0.5},
			"devices 10/10 · articles 0 · pushes sent 10 · deferred 0 · coalesced 0\npruned 2 · failed 1 · wakes 5 (50.0 %)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.sum.String(); got != tt.want {
				t.Fatalf("String:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestSummaryFits80Columns renders summaries with every part present and
// figures from zero to an hour of a million-device fleet, and checks that no
// line is wider than 80 columns and that at most three lines are used.
func TestSummaryFits80Columns(t *testing.T) {
	t.Parallel()
	for _, n := range []int64{0, 7, 12_345, 1_000_000, 12_345_678} {
		sum := Summary{Devices: int(min(n, 1_000_000)), Registered: min(n, 1_000_000), Articles: int(n),
			Sent: n, Deferred: n, Coalesced: n, Pruned: n/100 + 1, Failed: n/1000 + 1, Receipts: n, WakeRate: 0.945,
			WakeP50: map[string]time.Duration{"android": 1500 * time.Millisecond, "ios": 12 * time.Second}}
		lines := sum.Lines(SummaryWidth)
		if len(lines) > 3 {
			t.Errorf("%d: %d lines, want at most 3:\n%s", n, len(lines), sum)
		}
		for _, l := range lines {
			if w := utf8.RuneCountInString(l); w > SummaryWidth {
				t.Errorf("%d: line of %d columns: %q", n, w, l)
			}
		}
	}
}

func TestWakeRate(t *testing.T) {
	t.Parallel()
	grace := 3 * time.Second
	tests := []struct {
		name           string
		sent, receipts int64
		since          time.Duration
		want           float64
	}{
		{"nothing sent", 0, 0, time.Hour, -1},
		{"first push just seen", 100, 3, time.Second, -1},
		{"receipts due", 100, 90, grace, 0.9},
		{"more receipts than sends in the window", 10, 12, time.Minute, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := wakeRate(tt.sent, tt.receipts, tt.since, grace); got != tt.want {
				t.Fatalf("wakeRate(%d, %d, %s): got %v, want %v", tt.sent, tt.receipts, tt.since, got, tt.want)
			}
		})
	}
}

// TestRedraw checks the terminal sequence that replaces the summary in
// place when its number of lines changes.
func TestRedraw(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	shown := redraw(&b, 0, []string{"a"})
	shown = redraw(&b, shown, []string{"b", "c"})
	shown = redraw(&b, shown, []string{"d"})
	if shown != 1 {
		t.Fatalf("shown: got %d, want 1", shown)
	}
	want := "\r\x1b[Ja" + "\r\x1b[Jb\nc" + "\x1b[1A\r\x1b[Jd"
	if b.String() != want {
		t.Fatalf("redraw wrote %q, want %q", b.String(), want)
	}
}

// pings records the news room's pings.
type pings struct {
	mu    sync.Mutex
	feeds []string
	got   chan struct{}
}

func (p *pings) Poll(ctx context.Context, feed string) error {
	p.mu.Lock()
	p.feeds = append(p.feeds, feed)
	p.mu.Unlock()
	select {
	case p.got <- struct{}{}:
	default:
	}
	return nil
}

func startNewsroom(t *testing.T, cfg NewsroomConfig, p Pinger) *Newsroom {
	t.Helper()
	n, err := NewNewsroom(service.Archetype{}, cfg, p)
	if err != nil {
		t.Fatalf("new newsroom: %v", err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(n.Stop)
	return n
}

func get(t *testing.T, url, etag string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp, body
}

func TestNewsroomServesFeeds(t *testing.T) {
	t.Parallel()
	n := startNewsroom(t, NewsroomConfig{Interval: time.Hour, Initial: 3}, nil)

	// Every feed parses with the parser the watcher uses.
	for _, f := range NewsroomFeeds {
		resp, body := get(t, n.FeedURL(f.ID), "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", f.ID, resp.StatusCode)
		}
		feed, err := gofeed.NewParser().ParseString(string(body))
		if err != nil {
			t.Fatalf("parse %s: %v", f.ID, err)
		}
		if feed.Title != f.Title || len(feed.Items) != 3 {
			t.Fatalf("%s: got title %q with %d items, want %q with 3", f.ID, feed.Title, len(feed.Items), f.Title)
		}
		if it := feed.Items[0]; it.GUID == "" || it.PublishedParsed == nil || !strings.HasPrefix(it.Link, n.URL()) {
			t.Fatalf("%s: first item %+v lacks a guid, a date or a link to the news room", f.ID, it)
		}
	}

	// A conditional GET is 304 until the next article, then 200.
	resp, _ := get(t, n.FeedURL("headlines"), "")
	etag := resp.Header.Get("ETag")
	if resp, _ := get(t, n.FeedURL("headlines"), etag); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("conditional GET with the current ETag: got %d, want 304", resp.StatusCode)
	}
	for n.Publish() != "headlines" {
	}
	if resp, _ := get(t, n.FeedURL("headlines"), etag); resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == etag {
		t.Fatalf("conditional GET after publishing: got %d with ETag %s, want 200 with a new ETag", resp.StatusCode, resp.Header.Get("ETag"))
	}

	for _, path := range []string{"/feeds/nope.xml", "/feeds/headlines"} {
		if resp, _ := get(t, n.URL()+path, ""); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET %s: got %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestNewsroomPingsAfterPublishing(t *testing.T) {
	t.Parallel()
	ping := &pings{got: make(chan struct{}, 1)}
	n := startNewsroom(t, NewsroomConfig{Interval: 100 * time.Millisecond}, ping)
	select {
	case <-ping.got:
	case <-time.After(10 * time.Second):
		t.Fatalf("no ping within 10s of publishing every 100ms")
	}
	if n.Published() == 0 {
		t.Fatalf("published: got 0 after a ping, want at least 1")
	}
	ping.mu.Lock()
	feed := ping.feeds[0]
	ping.mu.Unlock()
	if feed != "headlines" && feed != "recent" && feed != "popular" {
		t.Fatalf("pinged feed: got %q, want one of the news room's", feed)
	}
}

func TestNewsroomStopIsSafe(t *testing.T) {
	t.Parallel()
	n, err := NewNewsroom(service.Archetype{}, NewsroomConfig{}, nil)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	n.Stop()
	n.Stop()
	if err := n.Start(t.Context()); err == nil {
		t.Fatalf("start after stop: got nil, want an error")
	}
}

// TestFleetDevicesAreValid checks that every generated device passes the
// registry's own token and platform checks, and that the mix holds every
// kind of device the issue asks for.
func TestFleetDevicesAreValid(t *testing.T) {
	t.Parallel()
	f, err := NewFleet(service.Archetype{}, FleetConfig{Devices: 1000, Seed: 5}, "http://127.0.0.1:1", nil)
	if err != nil {
		t.Fatalf("new fleet: %v", err)
	}
	kinds := map[string]int{}
	optedOut := 0
	for _, d := range f.devices {
		r := d.reg
		if _, err := devices.NormalizeToken(r.Provider, r.Token); err != nil {
			t.Fatalf("token of a %s/%s device: %v", r.Provider, r.Platform, err)
		}
		if len(r.Feeds) == 0 {
			t.Fatalf("a device subscribes to no feed")
		}
		kinds[r.Platform+"/"+r.Provider+"/"+r.Environment]++
		if !r.BackgroundSync.Enabled {
			optedOut++
		}
	}
	for _, k := range []string{"android/fcm/", "ios/apns/production", "ios/apns/sandbox", "ios/fcm/"} {
		if kinds[k] == 0 {
			t.Fatalf("no %s device in a fleet of 1,000: %v", k, kinds)
		}
	}
	if optedOut == 0 || optedOut > 150 {
		t.Fatalf("devices with background sync off: got %d, want a few percent of 1,000", optedOut)
	}
}

func TestFleetSplitsBetweenApps(t *testing.T) {
	t.Parallel()
	var fa []FleetApp
	for _, a := range DevApps {
		fa = append(fa, FleetApp{ID: a.ID, Feeds: a.Feeds, Share: a.Share})
	}
	f, err := NewFleet(service.Archetype{}, FleetConfig{Devices: 1000, Seed: 5, Apps: fa}, "http://127.0.0.1:1", nil)
	if err != nil {
		t.Fatalf("new fleet: %v", err)
	}
	byApp := map[string]int{}
	for _, d := range f.devices {
		byApp[d.reg.App]++
		if d.reg.App == "sports" {
			for _, feed := range d.reg.Feeds {
				if feed != "headlines" && feed != "popular" {
					t.Fatalf("a sports device subscribes to %s, which the sports app does not offer", feed)
				}
			}
		}
	}
	if byApp["news"] < 600 || byApp["news"] > 800 || byApp["sports"] < 200 || byApp["sports"] > 400 || len(byApp) != 2 {
		t.Fatalf("devices by app: got %v, want about 700 news and 300 sports", byApp)
	}
}

// chanSource is a DeliverySource that streams what the test sends on it.
type chanSource struct {
	ch     chan pushemu.Delivery
	closed chan struct{}
}

func (c *chanSource) Subscribe(int) (<-chan pushemu.Delivery, func()) {
	var once sync.Once
	return c.ch, func() { once.Do(func() { close(c.ch); close(c.closed) }) }
}

func TestMergedSourceStreamsEverySource(t *testing.T) {
	t.Parallel()
	a := &chanSource{ch: make(chan pushemu.Delivery, 1), closed: make(chan struct{})}
	b := &chanSource{ch: make(chan pushemu.Delivery, 1), closed: make(chan struct{})}
	ch, cancel := mergedSource{a, b}.Subscribe(4)
	a.ch <- pushemu.Delivery{Token: "a"}
	b.ch <- pushemu.Delivery{Token: "b"}
	got := map[string]bool{}
	for len(got) < 2 {
		select {
		case d := <-ch:
			got[d.Token] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("deliveries seen: %v, want one from each source", got)
		}
	}
	cancel()
	cancel() // twice is safe
	for _, s := range []*chanSource{a, b} {
		select {
		case <-s.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("cancel did not unsubscribe from every source")
		}
	}
	for range ch { // closed once every source is
	}
}

func TestFleetConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  FleetConfig
		want string
	}{
		{"too many devices", FleetConfig{Devices: 2_000_000}, "NUDGE_DEVSTACK_DEVICES"},
		{"nothing wakes", FleetConfig{MissRate: 1}, "NUDGE_DEVSTACK_MISS_RATE"},
		{"empty delay range", FleetConfig{WakeDelayMin: 3 * time.Second, WakeDelayMax: time.Second}, "wake delay range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewFleet(service.Archetype{}, tt.cfg, "http://127.0.0.1:1", nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error: got %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}
