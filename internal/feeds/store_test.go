package feeds

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
)

type storeBundle struct {
	rdb   redis.UniversalClient
	store *Store
	now   time.Time
}

func setupStore(t *testing.T, cfg StoreConfig) *storeBundle {
	t.Helper()
	rdb := redistest.Start(t)
	s, err := NewStore(cfg, rdb)
	if err != nil {
		t.Fatal(err)
	}
	return &storeBundle{rdb: rdb, store: s, now: time.Unix(1_700_000_000, 0)}
}

// mkItem builds item n of a test feed; rev changes its content.
func mkItem(n, rev int) Item {
	it := Item{
		ID:        fmt.Sprintf("guid-%d", n),
		GUID:      fmt.Sprintf("guid-%d", n),
		Title:     fmt.Sprintf("title %d rev %d", n, rev),
		URL:       fmt.Sprintf("https://news.example.test/a/%d", n),
		Published: time.Unix(1_600_000_000+int64(n)*60, 0).UTC(),
	}
	it.Hash = itemHash(it)
	return it
}

// doc returns items n..m newest first, as a feed lists them.
func doc(from, to int) []Item {
	var out []Item
	for n := to; n >= from; n-- {
		out = append(out, mkItem(n, 0))
	}
	return out
}

func TestStoreSave(t *testing.T) {
	t.Parallel()
	b := setupStore(t, StoreConfig{LogCap: 10})
	ctx := t.Context()
	steps := []struct {
		name              string
		items             []Item
		since, head       int64
		newItems, changed int
	}{
		{"first fetch", doc(1, 3), 0, 3, 3, 0},
		{"re-fetch", doc(1, 3), 3, 3, 0, 0},
		{"re-ordered", []Item{mkItem(2, 0), mkItem(3, 0), mkItem(1, 0)}, 3, 3, 0, 0},
		{"two new", doc(1, 5), 3, 5, 2, 0},
		{"one changed", append(doc(3, 5), mkItem(2, 1), mkItem(1, 0)), 5, 6, 0, 1},
		{"changed again re-fetched", append(doc(3, 5), mkItem(2, 1), mkItem(1, 0)), 6, 6, 0, 0},
		{"dropped from document", doc(4, 5), 6, 6, 0, 0},
		{"empty document", nil, 6, 6, 0, 0},
	}
	for _, st := range steps {
		got, err := b.store.Save(ctx, "f1", st.items, b.now)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		want := SaveResult{Since: st.since, Head: st.head, New: st.newItems, Changed: st.changed}
		if got.Records = 0; got != want {
			t.Fatalf("%s: got %+v, want %+v", st.name, got, want)
		}
	}
	// The log holds each identity once, the changed one at its new cursor,
	// oldest first by published time.
	items, next, err := b.store.Items(ctx, "f1", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, fmt.Sprintf("%d:%s", it.Cursor, it.ID))
	}
	want := "[1:guid-1 3:guid-3 4:guid-4 5:guid-5 6:guid-2]"
	if fmt.Sprint(got) != want {
		t.Fatalf("log: got %v, want %v", got, want)
	}
	if next != 6 {
		t.Fatalf("next: got %d, want 6", next)
	}
	if items[4].Title != "title 2 rev 1" {
		t.Fatalf("changed item: got %q, want %q", items[4].Title, "title 2 rev 1")
	}
	if !items[0].Published.Equal(mkItem(1, 0).Published) {
		t.Fatalf("published round trip: got %v, want %v", items[0].Published, mkItem(1, 0).Published)
	}
}

func TestStorePages(t *testing.T) {
	t.Parallel()
	b := setupStore(t, StoreConfig{LogCap: 5})
	ctx := t.Context()
	if _, err := b.store.Save(ctx, "f", doc(1, 4), b.now); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		since     int64
		limit     int
		cursors   string
		next      int64
		truncated bool
	}{
		{"from start", 0, 10, "[1 2 3 4]", 4, false},
		{"paged", 0, 2, "[1 2]", 2, false},
		{"second page", 2, 2, "[3 4]", 4, false},
		{"caught up", 4, 10, "[]", 4, false},
		{"beyond head (reset)", 9, 10, "[1 2 3 4]", 4, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := b.store.Page(ctx, "f", tc.since, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if got := cursors(p.Items); got != tc.cursors || p.Next != tc.next || p.Truncated != tc.truncated {
				t.Fatalf("page: got %s next %d truncated %v, want %s next %d truncated %v",
					got, p.Next, p.Truncated, tc.cursors, tc.next, tc.truncated)
			}
		})
	}
	// Four more items: the log keeps 5 of 8, cursors 1..3 are gone.
	if _, err := b.store.Save(ctx, "f", doc(1, 8), b.now); err != nil {
		t.Fatal(err)
	}
	p, err := b.store.Page(ctx, "f", 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cursors(p.Items), "[4 5 6 7 8]"; got != want || !p.Truncated || p.Head != 8 {
		t.Fatalf("gap page: got %s truncated %v head %d, want %s truncated true head 8", got, p.Truncated, p.Head, want)
	}
	p, err = b.store.Page(ctx, "f", 3, 10)
	if err != nil {
		t.Fatal(err)
	}
	if p.Truncated {
		t.Fatalf("since at the trim mark: got truncated, want not")
	}
	latest, err := b.store.Latest(ctx, "f", 2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cursors(latest), "[8 7]"; got != want {
		t.Fatalf("latest: got %s, want %s", got, want)
	}
	heads, err := b.store.Heads(ctx, "f", "unknown", "f")
	if err != nil || fmt.Sprint(heads) != "[8 0 8]" {
		t.Fatalf("heads of f, an unknown feed and f: got %v, %v, want [8 0 8]", heads, err)
	}
}

func cursors(items []Item) string {
	out := make([]int64, len(items))
	for i, it := range items {
		out[i] = it.Cursor
	}
	return fmt.Sprint(out)
}

// TestStoreMemoryBounded rolls a feed forward by 10 items a poll and
// checks that the memory forgets by time, never what it saw within Memory.
// Memory is scaled from 30 days to 1 hour; polls are a minute apart on an
// injected clock.
func TestStoreMemoryBounded(t *testing.T) {
	t.Parallel()
	b := setupStore(t, StoreConfig{LogCap: 20, Memory: time.Hour})
	ctx := t.Context()
	for i := 0; i < 120; i++ {
		now := b.now.Add(time.Duration(i) * time.Minute)
		res, err := b.store.Save(ctx, "roll", doc(i*10+1, i*10+10), now)
		if err != nil {
			t.Fatal(err)
		}
		// Two records (guid and link alias) per article seen in the last
		// hour, plus up to one sweep period (6 minutes) of older ones.
		if max := 2 * 10 * (60 + 6 + 1); res.Records > max {
			t.Fatalf("poll %d: memory has %d records, want ≤ %d", i, res.Records, max)
		}
		if c, _ := b.rdb.ZCard(ctx, keys.FeedItems("roll")).Result(); c > 20 {
			t.Fatalf("poll %d: log has %d items, want ≤ 20", i, c)
		}
	}
	last := b.now.Add(119 * time.Minute)
	// Items seen 50 minutes ago return: not new.
	res, err := b.store.Save(ctx, "roll", doc(691, 700), last.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if res.New != 0 || res.Changed != 0 {
		t.Fatalf("return within memory: got %+v, want no new or changed", res)
	}
	// Items last seen 100 minutes ago are forgotten: new again.
	res, err = b.store.Save(ctx, "roll", doc(191, 200), last.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if res.New != 10 {
		t.Fatalf("return after memory: got %+v, want 10 new", res)
	}
	if n, _ := b.rdb.HLen(ctx, keys.FeedSeen("roll")).Result(); int(n) != res.Records {
		t.Fatalf("records: HLEN %d, script said %d", n, res.Records)
	}
}

func TestStoreCluster(t *testing.T) {
	t.Parallel()
	rdb := redistest.StartCluster(t).Client(t)
	s, err := NewStore(StoreConfig{LogCap: 3}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, feed := range []string{"a", "b", "c", "d"} {
		res, err := s.Save(ctx, feed, doc(1, 5), time.Unix(1_700_000_000, 0))
		if err != nil {
			t.Fatalf("save %s on cluster: %v", feed, err)
		}
		if res.Head != 5 || res.New != 5 {
			t.Fatalf("save %s: got %+v, want head 5, 5 new", feed, res)
		}
		p, err := s.Page(ctx, feed, 0, 10)
		if err != nil {
			t.Fatalf("page %s on cluster: %v", feed, err)
		}
		if got, want := cursors(p.Items), "[3 4 5]"; got != want || !p.Truncated {
			t.Fatalf("page %s: got %s truncated %v, want %s truncated true", feed, got, p.Truncated, want)
		}
	}
}

// TestStoreEarlierFormat upgrades a feed stored by the previous release
// (seen set "<hash> <cursor> <ms>" under the bare id, log members
// "<cursor> <json>"): its items are read as before, re-fetching them
// announces nothing (though the hash now covers the date), and a new item
// is still new.
func TestStoreEarlierFormat(t *testing.T) {
	t.Parallel()
	b := setupStore(t, StoreConfig{})
	ctx := t.Context()
	for n := 1; n <= 3; n++ {
		it := mkItem(n, 0)
		body := fmt.Sprintf(`{"id":%q,"title":%q,"url":%q,"hash":"oldhash%d"}`, it.ID, it.Title, it.URL, n)
		if err := b.rdb.ZAdd(ctx, keys.FeedItems("old"), redis.Z{Score: float64(n), Member: fmt.Sprintf("%d %s", n, body)}).Err(); err != nil {
			t.Fatal(err)
		}
		if err := b.rdb.HSet(ctx, keys.FeedSeen("old"), it.ID, fmt.Sprintf("oldhash%d %d %d", n, n, b.now.UnixMilli())).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.rdb.Set(ctx, keys.FeedCursor("old"), 3, 0).Err(); err != nil {
		t.Fatal(err)
	}
	p, err := b.store.Page(ctx, "old", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(idsOf(p.Items)); got != "[guid-1 guid-2 guid-3]" || cursors(p.Items) != "[1 2 3]" {
		t.Fatalf("earlier log: got %s %s", got, cursors(p.Items))
	}
	res, err := b.store.Save(ctx, "old", doc(1, 4), b.now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if res.New != 1 || res.Changed != 0 || res.Head != 4 {
		t.Fatalf("first save after the upgrade: got %+v, want guid-4 alone new at 4", res)
	}
	// The earlier records were replaced by records of the new format.
	if n, _ := b.rdb.HExists(ctx, keys.FeedSeen("old"), "guid-1").Result(); n {
		t.Fatalf("earlier record of guid-1 still there")
	}
	res, err = b.store.Save(ctx, "old", doc(1, 4), b.now.Add(2*time.Minute))
	if err != nil || res.New+res.Changed != 0 {
		t.Fatalf("second save: got %+v, %v, want nothing new", res, err)
	}
}
