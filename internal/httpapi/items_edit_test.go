package httpapi_test

import (
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/keys"
)

// TestItemsEditMarked stores an item, then an edit of its date and title,
// and reads the feed as an app holding the first version: the edit comes
// with the same id, edited: true and the cursor it replaces.
func TestItemsEditMarked(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	it := feeds.Item{ID: "g1", GUID: "g1", Title: "Story", URL: "https://example.com/1", Hash: "h1",
		Published: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}
	other := feeds.Item{ID: "g2", GUID: "g2", Title: "Other", URL: "https://example.com/2", Hash: "h2",
		Published: time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)}
	if _, err := b.pipe.Items.Save(t.Context(), "world", []feeds.Item{it, other}, time.Now()); err != nil {
		t.Fatal(err)
	}
	it.Title, it.Published, it.Hash = "Story, corrected", it.Published.Add(time.Hour), "h1b"
	if _, err := b.pipe.Items.Save(t.Context(), "world", []feeds.Item{it, other}, time.Now()); err != nil {
		t.Fatal(err)
	}
	type page struct {
		Items []struct {
			Cursor   int64
			ID       string
			Title    string
			Edited   bool
			Replaces int64
		}
		Head int64
	}
	r := b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=2", "", nil)
	p := decode[page](t, r)
	if r.code != 200 || len(p.Items) != 1 || p.Head != 3 {
		t.Fatalf("page after the edit: got %d %s", r.code, r.body)
	}
	if got := p.Items[0]; got.ID != "g1" || got.Cursor != 3 || !got.Edited || got.Replaces != 2 || got.Title != "Story, corrected" {
		t.Fatalf("edited item: got %+v, want g1 at 3, edited, replaces 2", got)
	}
	// From the start, the unedited item is not marked.
	p = decode[page](t, b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=0", "", nil))
	if len(p.Items) != 2 || p.Items[0].ID != "g2" || p.Items[0].Edited || p.Items[0].Replaces != 0 {
		t.Fatalf("full page: got %+v", p.Items)
	}
}

// TestOverviewShowsDroppedItems: a feed whose last document was over the
// item limit shows how many items were left out in the console overview.
func TestOverviewShowsDroppedItems(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	if err := b.rdb.HSet(t.Context(), keys.FeedHealth("world"), "dropped", 7).Err(); err != nil {
		t.Fatal(err)
	}
	type overview struct {
		Feeds []struct {
			ID     string
			Health struct {
				DroppedItems int `json:"dropped_items"`
			}
		}
	}
	r := b.do(t, "GET", "/v1/console/overview", "/v1/console/overview", b.editKey, nil)
	o := decode[overview](t, r)
	got := map[string]int{}
	for _, f := range o.Feeds {
		got[f.ID] = f.Health.DroppedItems
	}
	if r.code != 200 || got["world"] != 7 || got["sport"] != 0 {
		t.Fatalf("dropped items in overview: got %d %v, want world 7", r.code, got)
	}
}
