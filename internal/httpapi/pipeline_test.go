package httpapi_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/receipts"
)

type progressJSON struct {
	ID       string   `json:"id"`
	Feeds    []string `json:"feeds"`
	Lane     string   `json:"lane"`
	State    string   `json:"state"`
	Targeted int64    `json:"targeted"`
	Queued   int64    `json:"queued"`
	Skipped  int64    `json:"skipped"`
}

func TestSyncTriggerAndProgress(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	b.register(t, fcmReg(fcmToken(1), "world"), http.StatusCreated)
	off := fcmReg(fcmToken(2), "world")
	off["background_sync"] = map[string]any{"enabled": false}
	b.register(t, off, http.StatusCreated)
	b.register(t, fcmReg(fcmToken(3), "tech"), http.StatusCreated)

	r := b.do(t, "POST", "/v1/syncs", "/v1/syncs", b.editKey, map[string]any{
		"feeds": []string{"world"}, "alert": map[string]string{"title": "Breaking", "body": "News"}})
	if r.code != http.StatusAccepted {
		t.Fatalf("create sync: got %d %s", r.code, r.body)
	}
	id := decode[struct{ ID string }](t, r).ID
	if loc := r.header.Get("Location"); loc != "/v1/syncs/"+id {
		t.Fatalf("Location: got %q", loc)
	}
	p := decode[progressJSON](t, b.do(t, "GET", "/v1/syncs/{id}", "/v1/syncs/"+id, b.editKey, nil))
	if p.State != "planning" || p.Lane != "breaking" || p.Targeted != 0 {
		t.Fatalf("before planning: got %+v", p)
	}
	// The events queue holds the sync for a dispatcher; plan it here as its
	// worker would.
	n, err := b.rdb.XLen(t.Context(), keys.Stream(keys.EventQueue, 0)).Result()
	if err != nil || n != 1 {
		t.Fatalf("events queue: got %d entries, %v; want 1", n, err)
	}
	if _, err := b.pipe.Planner.Plan(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	p = decode[progressJSON](t, b.do(t, "GET", "/v1/syncs/{id}", "/v1/syncs/"+id, b.editKey, nil))
	if p.State != "sending" || p.Targeted != 2 || p.Queued != 1 || p.Skipped != 1 {
		t.Fatalf("after planning: got %+v, want 2 targeted, 1 queued, 1 skipped", p)
	}
	ev, err := b.pipe.Planner.Event(t.Context(), id)
	if err != nil || ev.Alert == nil || ev.Alert.Title != "Breaking" {
		t.Fatalf("event: got %+v, %v", ev, err)
	}
	audit, err := b.rdb.XRange(t.Context(), keys.Audit(), "-", "+").Result()
	if err != nil || len(audit) != 1 || audit[0].Values["action"] != "sync.create" || audit[0].Values["key"] != "news-desk" {
		t.Fatalf("audit: got %v, %v", audit, err)
	}
}

func TestSyncBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	tests := []struct {
		name  string
		key   string
		body  any
		code  int
		field string
	}{
		{"no key", "", map[string]any{"feeds": []string{"world"}}, 401, ""},
		{"wrong key", "nope", map[string]any{"feeds": []string{"world"}}, 401, ""},
		{"no feeds", b.editKey, map[string]any{"feeds": []string{}}, 400, "feeds"},
		{"unknown feed", b.editKey, map[string]any{"feeds": []string{"sport"}}, 400, "feeds"},
		{"bad lane", b.editKey, map[string]any{"feeds": []string{"world"}, "lane": "urgent"}, 400, "lane"},
		{"alert on feed lane", b.editKey, map[string]any{"feeds": []string{"world"}, "lane": "feed", "alert": map[string]string{"title": "x"}}, 400, "alert"},
		{"long alert", b.editKey, map[string]any{"feeds": []string{"world"}, "alert": map[string]string{"title": strings.Repeat("x", 121)}}, 400, "alert"},
		{"unknown field", b.editKey, map[string]any{"feeds": []string{"world"}, "priority": 10}, 400, "priority"},
		{"wrong type", b.editKey, map[string]any{"feeds": "world"}, 400, "feeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, "POST", "/v1/syncs", "/v1/syncs", tt.key, tt.body)
			if r.code != tt.code {
				t.Fatalf("got %d %s, want %d", r.code, r.body, tt.code)
			}
			if e := decode[errorJSON](t, r); e.Error.Field != tt.field {
				t.Fatalf("field: got %q, want %q", e.Error.Field, tt.field)
			}
		})
	}
	if n, _ := b.rdb.XLen(t.Context(), keys.Stream(keys.EventQueue, 0)).Result(); n != 0 {
		t.Fatalf("bad syncs queued %d events", n)
	}
	if r := b.do(t, "GET", "/v1/syncs/{id}", "/v1/syncs/404", b.editKey, nil); r.code != 404 {
		t.Fatalf("unknown sync: got %d", r.code)
	}
}

func TestItemsSyncRead(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	var items []feeds.Item
	for i := range 5 {
		items = append(items, feeds.Item{ID: fmt.Sprintf("a%d", i), Title: fmt.Sprintf("Story %d", i),
			URL: fmt.Sprintf("https://example.com/%d", i), Hash: fmt.Sprintf("h%d", i),
			Published: time.Date(2026, 11, 26, 10, i, 0, 0, time.UTC)})
	}
	if _, err := b.pipe.Items.Save(t.Context(), "world", items, time.Now()); err != nil {
		t.Fatal(err)
	}
	type page struct {
		Items []struct {
			Cursor int64
			Title  string
		}
		Next, Head int64
		Truncated  bool
	}
	r := b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=2&limit=2", "", nil)
	p := decode[page](t, r)
	if r.code != 200 || len(p.Items) != 2 || p.Items[0].Cursor != 3 || p.Next != 4 || p.Head != 5 || p.Truncated {
		t.Fatalf("page: got %d %+v", r.code, p)
	}
	p = decode[page](t, b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/world/items?since=4", "", nil))
	if len(p.Items) != 1 || p.Items[0].Title != "Story 4" || p.Next != 5 {
		t.Fatalf("last page: got %+v", p)
	}
	// A repeated read with the ETag answers 304 and no body.
	req := httptest.NewRequest("GET", "/v1/feeds/world/items?since=4", nil)
	req.Header.Set("If-None-Match", r.header.Get("ETag"))
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	if rec.Code != 200 { // different page, different tag
		t.Fatalf("other page with a stale ETag: got %d", rec.Code)
	}
	req = httptest.NewRequest("GET", "/v1/feeds/world/items?since=4", nil)
	req.Header.Set("If-None-Match", rec.Header().Get("ETag"))
	rec = httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Fatalf("same page with its ETag: got %d, %d bytes", rec.Code, rec.Body.Len())
	}
	for _, bad := range []struct{ path, field string }{
		{"/v1/feeds/world/items?since=-1", "since"},
		{"/v1/feeds/world/items?since=x", "since"},
		{"/v1/feeds/world/items?limit=0", "limit"},
		{"/v1/feeds/world/items?limit=201", "limit"},
	} {
		r := b.do(t, "GET", "/v1/feeds/{feed}/items", bad.path, "", nil)
		if r.code != 400 || decode[errorJSON](t, r).Error.Field != bad.field {
			t.Fatalf("%s: got %d %s", bad.path, r.code, r.body)
		}
	}
	if r := b.do(t, "GET", "/v1/feeds/{feed}/items", "/v1/feeds/sport/items", "", nil); r.code != 404 {
		t.Fatalf("unknown feed: got %d", r.code)
	}
}

func TestReceiptsFeedWakeStats(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	d := b.register(t, fcmReg(fcmToken(1), "world"), http.StatusCreated)
	other := b.register(t, fcmReg(fcmToken(2), "world"), http.StatusCreated)
	// Both counted receipts arrive 2.5 s after their push (the 3 s bucket),
	// whatever the test's own pace, so the wake latency is known exactly.
	sent := time.Now().Add(-10 * time.Second)
	received := sent.Add(2500 * time.Millisecond).Format(time.RFC3339Nano)
	signer := receipts.NewSigner(b.rdb)
	sign := func(device uint64, id string) string {
		signed, err := signer.Sign(t.Context(), device, id)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	pushID := sign(d.ID, receipts.PushID("breaking", sent, "n1-7"))
	path := fmt.Sprintf("/v1/devices/%d/receipts", d.ID)
	good := map[string]any{"push_id": pushID, "received_at": received, "outcome": "synced", "items": 3}
	if r := b.do(t, "POST", "/v1/devices/{id}/receipts", path, d.Secret, good); r.code != http.StatusNoContent {
		t.Fatalf("receipt: got %d %s", r.code, r.body)
	}
	tests := []struct {
		name   string
		secret string
		body   map[string]any
		code   int
		field  string
	}{
		{"other device's secret", other.Secret, good, 404, ""},
		{"no secret", "", good, 401, ""},
		{"foreign push id", d.Secret, map[string]any{"push_id": "abc", "received_at": time.Now().Format(time.RFC3339), "outcome": "synced"}, 400, "push_id"},
		{"unsigned push id", d.Secret, map[string]any{"push_id": receipts.PushID("breaking", sent, "n1-8"), "received_at": time.Now().Format(time.RFC3339), "outcome": "synced"}, 400, "push_id"},
		{"forged signature", d.Secret, map[string]any{"push_id": receipts.PushID("breaking", sent, "n1-8") + ".AAAAAAAAAAAAAAAAAAAAAA", "received_at": time.Now().Format(time.RFC3339), "outcome": "synced"}, 400, "push_id"},
		{"lane changed", d.Secret, map[string]any{"push_id": "f" + pushID[1:], "received_at": time.Now().Format(time.RFC3339), "outcome": "synced"}, 400, "push_id"},
		{"other device's push id", d.Secret, map[string]any{"push_id": sign(other.ID, receipts.PushID("breaking", sent, "n1-9")), "received_at": time.Now().Format(time.RFC3339), "outcome": "synced"}, 400, "push_id"},
		{"replayed", d.Secret, good, 400, "push_id"},
		{"bad outcome", d.Secret, map[string]any{"push_id": pushID, "received_at": time.Now().Format(time.RFC3339), "outcome": "ok"}, 400, "outcome"},
		{"no time", d.Secret, map[string]any{"push_id": pushID, "outcome": "synced"}, 400, "received_at"},
		{"far future", d.Secret, map[string]any{"push_id": pushID, "received_at": time.Now().Add(48 * time.Hour).Format(time.RFC3339), "outcome": "synced"}, 400, "received_at"},
		{"negative items", d.Secret, map[string]any{"push_id": pushID, "received_at": time.Now().Format(time.RFC3339), "outcome": "synced", "items": -1}, 400, "items"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, "POST", "/v1/devices/{id}/receipts", path, tt.secret, tt.body)
			if r.code != tt.code || decode[errorJSON](t, r).Error.Field != tt.field {
				t.Fatalf("got %d %s, want %d on field %q", r.code, r.body, tt.code, tt.field)
			}
		})
	}
	// The other device's own receipt for its push counts; the refusals were counted.
	otherPush := sign(other.ID, receipts.PushID("breaking", sent, "n1-9"))
	otherPath := fmt.Sprintf("/v1/devices/%d/receipts", other.ID)
	if r := b.do(t, "POST", "/v1/devices/{id}/receipts", otherPath, other.Secret, map[string]any{"push_id": otherPush, "received_at": received, "outcome": "synced"}); r.code != http.StatusNoContent {
		t.Fatalf("other device's own receipt: got %d %s", r.code, r.body)
	}
	metrics := string(b.do(t, "GET", "/metrics", "/metrics", "", nil).body)
	for _, want := range []string{`nudge_receipts_rejected_total{reason="forged"} 5`, `nudge_receipts_rejected_total{reason="replayed"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	type overview struct {
		Whoami    map[string]string
		Platforms map[string]struct {
			Receipts         int64
			WakeLatencyP50Ms *int64 `json:"wake_latency_p50_ms"`
		}
		Feeds []struct{ ID string }
	}
	r := b.do(t, "GET", "/v1/console/overview", "/v1/console/overview", b.editKey, nil)
	o := decode[overview](t, r)
	if r.code != 200 || o.Whoami["name"] != "news-desk" || len(o.Feeds) != 2 {
		t.Fatalf("overview: got %d %s", r.code, r.body)
	}
	if a := o.Platforms["android"]; a.Receipts != 2 || a.WakeLatencyP50Ms == nil || *a.WakeLatencyP50Ms < 3000 || *a.WakeLatencyP50Ms > 4000 {
		t.Fatalf("android wake figures: got %+v", a)
	}
	if r := b.do(t, "GET", "/v1/console/overview", "/v1/console/overview", "wrong", nil); r.code != 401 {
		t.Fatalf("overview with a wrong key: got %d", r.code)
	}
}

func TestPollFeedMakesItDue(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	if err := b.rdb.HSet(t.Context(), keys.FeedHealth("world"), "next_poll", time.Now().Add(time.Hour).UnixMilli()).Err(); err != nil {
		t.Fatal(err)
	}
	if r := b.do(t, "POST", "/v1/feeds/{feed}/poll", "/v1/feeds/world/poll", b.editKey, nil); r.code != http.StatusAccepted {
		t.Fatalf("poll: got %d %s", r.code, r.body)
	}
	h, err := feeds.ReadHealth(t.Context(), b.rdb, "world")
	if err != nil || !h.NextPoll.IsZero() {
		t.Fatalf("next poll after the ping: got %v, %v; want now", h.NextPoll, err)
	}
	if r := b.do(t, "POST", "/v1/feeds/{feed}/poll", "/v1/feeds/sport/poll", b.editKey, nil); r.code != 404 {
		t.Fatalf("unknown feed: got %d", r.code)
	}
	if r := b.do(t, "POST", "/v1/feeds/{feed}/poll", "/v1/feeds/world/poll", "", nil); r.code != 401 {
		t.Fatalf("no key: got %d", r.code)
	}
}

func TestConsolePageIsServed(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	if r := b.do(t, "GET", "", "/", "", nil); r.code != http.StatusFound || r.header.Get("Location") != "/console/" {
		t.Fatalf("GET /: got %d to %q", r.code, r.header.Get("Location"))
	}
	r := b.do(t, "GET", "", "/console/", "", nil)
	if r.code != 200 || !strings.Contains(string(r.body), "<html") {
		t.Fatalf("console: got %d %.200s", r.code, r.body)
	}
}
