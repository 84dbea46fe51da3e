package egress_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/egress"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

type feedList []catalog.Feed

func (l feedList) List(context.Context) ([]catalog.Feed, error) { return l, nil }

// TestWatcherRecordsRefusalInHealth runs the real feed watcher on the
// policy's client: a feed on the metadata address, one resolving to a
// private address and one redirecting from an admitted origin to loopback
// all end with a health error that names the refused address; the
// admitted origin is fetched, and an origin answering 500 with a body
// leaves the status in the health error, not the body.
func TestWatcherRecordsRefusalInHealth(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/broken" {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("stack trace: db password hunter2 at 10.1.2.3"))
			return
		}
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "http://[::1]:6379/", http.StatusMovedPermanently)
			return
		}
		w.Header().Set("Content-Type", "application/rss+xml")
		_, _ = w.Write([]byte(`<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>http://x/</link><item><title>a</title><guid>a</guid><link>http://x/a</link></item></channel></rss>`))
	}))
	t.Cleanup(srv.Close)
	res := mapResolver{"intranet.example": {"10.20.30.40"}}
	client := egress.New(mustAllow(t, "127.0.0.1/32")).Client(egress.Config{Resolver: res})
	list := feedList{
		{ID: "metadata", Title: "m", URL: "http://169.254.169.254/latest/meta-data/", PollInterval: time.Minute},
		{ID: "intranet", Title: "i", URL: "http://intranet.example/rss", PollInterval: time.Minute},
		{ID: "moved", Title: "r", URL: srv.URL + "/moved", PollInterval: time.Minute},
		{ID: "fine", Title: "f", URL: srv.URL + "/rss", PollInterval: time.Minute},
		{ID: "broken", Title: "b", URL: srv.URL + "/broken", PollInterval: time.Minute},
	}
	w, err := feeds.NewWatcher(service.Archetype{}, feeds.Config{Tick: 5 * time.Millisecond, Jitter: -1, RequestTimeout: 2 * time.Second},
		feeds.Deps{Redis: rdb, Catalog: list, HTTPClient: client,
			Notifier: feeds.NotifierFunc(func(context.Context, string, int64, int64, int) error { return nil })})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)

	want := map[string]string{
		"metadata": "169.254.169.254: link-local address refused",
		"intranet": "intranet.example is 10.20.30.40: private address refused",
		"moved":    "::1: loopback address refused",
	}
	await.Until(t, "every feed polled", func() bool {
		for _, f := range list {
			h, err := feeds.ReadHealth(t.Context(), rdb, f.ID)
			if err != nil || h.LastPoll.IsZero() {
				return false
			}
		}
		return true
	})
	for id, msg := range want {
		h, err := feeds.ReadHealth(t.Context(), rdb, id)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(h.LastError, msg) || !strings.Contains(h.LastError, "NUDGE_FEED_ALLOW_NETS") {
			t.Errorf("feed %s: health error %q, want it to contain %q and name NUDGE_FEED_ALLOW_NETS", id, h.LastError, msg)
		}
	}
	// A failing origin's answer is not echoed into the health editors see.
	if h, _ := feeds.ReadHealth(t.Context(), rdb, "broken"); !strings.Contains(h.LastError, "500") || strings.Contains(h.LastError, "hunter2") {
		t.Errorf("feed broken: health error %q, want the status and not the response body", h.LastError)
	}
	if h, _ := feeds.ReadHealth(t.Context(), rdb, "fine"); h.LastError != "" || h.LastSuccess.IsZero() {
		t.Errorf("allowlisted feed: health %+v, want a success", h)
	}
}
