package httpapi_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
)

// saveArticles stores n new articles in feed, one per Save, so the feed's
// cursors run 1..n.
func saveArticles(t *testing.T, b *bundle, feed string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		it := feeds.Item{ID: fmt.Sprintf("g%d", i), GUID: fmt.Sprintf("g%d", i), Title: fmt.Sprintf("Story %d", i),
			URL: fmt.Sprintf("https://example.com/%d", i), Hash: fmt.Sprintf("h%d", i)}
		if _, err := b.pipe.Items.Save(t.Context(), feed, []feeds.Item{it}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

type itemsPage struct {
	Items []struct {
		Cursor int64
		ID     string
	}
	Next, Head int64
	Truncated  bool
}

// TestClosedRangeImmutable: a closed range answers the same body and
// strong ETag every time, 304 on If-None-Match, and is marked immutable;
// an open range is not.
func TestClosedRangeImmutable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cache int64
	}{{"cache", 0}, {"no cache", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{itemCacheBytes: tc.cache})
			saveArticles(t, b, "world", 1, 5)
			const url = "/v1/feeds/world/items?since=2&until=4"
			r1 := b.do(t, "GET", "/v1/feeds/{feed}/items", url, "", nil)
			p := decode[itemsPage](t, r1)
			if r1.code != 200 || len(p.Items) != 2 || p.Items[0].Cursor != 3 || p.Items[1].Cursor != 4 || p.Next != 4 || p.Head != 4 || p.Truncated {
				t.Fatalf("range (2, 4]: got %d %s", r1.code, r1.body)
			}
			if cc := r1.header.Get("Cache-Control"); cc != "public, max-age=86400, immutable" {
				t.Fatalf("Cache-Control of a closed range: got %q", cc)
			}
			etag := r1.header.Get("ETag")
			if len(etag) < 3 || etag[0] != '"' {
				t.Fatalf("ETag %q: want a strong one", etag)
			}
			// More items later do not change the closed range.
			saveArticles(t, b, "world", 6, 2)
			r2 := b.do(t, "GET", "/v1/feeds/{feed}/items", url, "", nil)
			if r2.code != 200 || string(r2.body) != string(r1.body) || r2.header.Get("ETag") != etag {
				t.Fatalf("second read: got %d %s etag %s, want the first body and etag %s", r2.code, r2.body, r2.header.Get("ETag"), etag)
			}
			req := httptest.NewRequestWithContext(t.Context(), "GET", url, nil)
			req.Header.Set("If-None-Match", etag)
			rec := httptest.NewRecorder()
			b.srv.ServeHTTP(rec, req)
			if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
				t.Fatalf("If-None-Match: got %d %q, want 304 without a body", rec.Code, rec.Body)
			}
			open := b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=2", "", nil)
			if cc := open.header.Get("Cache-Control"); open.code != 200 || cc != "no-cache" {
				t.Fatalf("open range: got %d Cache-Control %q, want no-cache", open.code, cc)
			}
			if p := decode[itemsPage](t, open); p.Head != 7 || len(p.Items) != 5 {
				t.Fatalf("open range: got %s", open.body)
			}
			// Pages of a range: next is the last cursor while full, head is until.
			pg := decode[itemsPage](t, b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=0&until=5&limit=2", "", nil))
			if len(pg.Items) != 2 || pg.Next != 2 || pg.Head != 5 {
				t.Fatalf("first page of (0, 5]: got %+v", pg)
			}
		})
	}
}

// TestClosedRangeBadInput: bad ranges are 400s on field until (or since).
func TestClosedRangeBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	saveArticles(t, b, "world", 1, 3)
	for _, tc := range []struct{ query, field string }{
		{"since=3&until=2", "until"},
		{"since=1&until=x", "until"},
		{"since=1&until=", "until"},
		{"since=1&until=-1", "until"},
		{"since=1&until=4", "until"}, // beyond the head (3)
		{"since=y&until=3", "since"},
	} {
		r := b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?"+tc.query, "", nil)
		e := decode[errorJSON](t, r)
		if r.code != 400 || e.Error.Field != tc.field {
			t.Errorf("%s: got %d %s, want 400 on %s", tc.query, r.code, r.body, tc.field)
		}
	}
	// An empty range is fine.
	if r := b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=3&until=3", "", nil); r.code != 200 {
		t.Fatalf("empty range: got %d %s", r.code, r.body)
	}
}

// TestClosedRangeTruncated: a range whose start fell out of the capped log
// says so, and is neither marked immutable nor kept in the cache.
func TestClosedRangeTruncated(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	saveArticles(t, b, "world", 1, 5)
	// The log dropped cursors up to 2.
	if err := b.rdb.ZRemRangeByScore(t.Context(), keys.FeedItems("world"), "0", "2").Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.rdb.HSet(t.Context(), keys.FeedHealth("world"), "trimmed", 2).Err(); err != nil {
		t.Fatal(err)
	}
	before := redistest.Calls(t, b.rdb, "zrange")
	for range 2 {
		r := b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=1&until=4", "", nil)
		p := decode[itemsPage](t, r)
		if r.code != 200 || !p.Truncated || len(p.Items) != 2 || p.Items[0].Cursor != 3 {
			t.Fatalf("truncated range: got %d %s", r.code, r.body)
		}
		if cc := r.header.Get("Cache-Control"); cc != "no-cache" {
			t.Fatalf("truncated range: Cache-Control %q, want no-cache", cc)
		}
	}
	if n := redistest.Calls(t, b.rdb, "zrange") - before; n != 2 {
		t.Fatalf("truncated range read Redis %d times in 2 requests, want 2 (not cached)", n)
	}
	// A range after the trim point is whole.
	r := b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=2&until=4", "", nil)
	if p := decode[itemsPage](t, r); p.Truncated || len(p.Items) != 2 {
		t.Fatalf("range after the trim: got %s", r.body)
	}
}

// TestClosedRangeSingleFlight: 200 concurrent requests for one range do
// one Redis read, and later requests none; without the cache each does
// its own.
func TestClosedRangeSingleFlight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cache int64
		reads func(n int64) bool
	}{
		{"cache", 0, func(n int64) bool { return n == 1 }},
		{"no cache", -1, func(n int64) bool { return n == 201 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// 200 requests at once on a loaded machine may take longer than
			// the default deadline; the subject is the count of reads.
			b := setup(t, setupOpts{itemCacheBytes: tc.cache, requestTimeout: time.Minute})
			saveArticles(t, b, "world", 1, 4)
			before := redistest.Calls(t, b.rdb, "zrange")
			const n = 200
			codes := make([]int, n)
			bodies := make([]string, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					req := httptest.NewRequestWithContext(t.Context(), "GET", "/v1/feeds/world/items?since=1&until=4", nil)
					rec := httptest.NewRecorder()
					b.srv.ServeHTTP(rec, req)
					codes[i], bodies[i] = rec.Code, rec.Body.String()
				})
			}
			close(start)
			wg.Wait()
			for i := range n {
				if codes[i] != 200 || bodies[i] != bodies[0] {
					t.Fatalf("request %d: got %d %s, want 200 and the body of the first %s", i, codes[i], bodies[i], bodies[0])
				}
			}
			b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=1&until=4", "", nil)
			if got := redistest.Calls(t, b.rdb, "zrange") - before; !tc.reads(got) {
				t.Fatalf("%d requests of one range read the item log %d times", n+1, got)
			}
		})
	}
}

// TestClosedRangeAfterEdit: an edit moves its item to a new cursor beyond
// every closed range that held it. The cached range keeps its answer (a
// snapshot the app merges by id), and the edit arrives in the next range
// as edited, replacing the old cursor; nothing is lost either way.
func TestClosedRangeAfterEdit(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	saveArticles(t, b, "world", 1, 3)
	first := b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=0&until=3", "", nil)
	edit := feeds.Item{ID: "g2", GUID: "g2", Title: "Story 2, corrected", URL: "https://example.com/2", Hash: "h2b"}
	if _, err := b.pipe.Items.Save(t.Context(), "world", []feeds.Item{edit}, time.Now()); err != nil {
		t.Fatal(err)
	}
	again := b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=0&until=3", "", nil)
	if string(again.body) != string(first.body) || again.header.Get("ETag") != first.header.Get("ETag") {
		t.Fatalf("cached range changed after an edit: %s, was %s", again.body, first.body)
	}
	r := b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=3&until=4", "", nil)
	next := decode[struct {
		Items []struct {
			Cursor, Replaces int64
			ID               string
			Edited           bool
		}
	}](t, r)
	if len(next.Items) != 1 || next.Items[0].ID != "g2" || !next.Items[0].Edited || next.Items[0].Replaces != 2 || next.Items[0].Cursor != 4 {
		t.Fatalf("range after the edit: got %s", r.body)
	}
}
