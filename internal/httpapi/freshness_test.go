package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/receipts"
)

type freshnessJSON struct {
	Items []struct {
		Feed      string
		Cursor    int64
		Published time.Time
		Platforms map[string]struct {
			Audience int64
			Synced   int64
			P50      *float64 `json:"p50_seconds"`
			P90      *float64 `json:"p90_seconds"`
			P99      *float64 `json:"p99_seconds"`
		}
	}
}

// TestReceiptsOfEverySource: receipts of every source record the device's
// cursors (never lowered), its sync time, and clear its unanswered
// pushes; they count towards time-to-fresh, which the API and /metrics
// show; bad receipts are 400 and record nothing.
func TestReceiptsOfEverySource(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	ctx := t.Context()
	var items []feeds.Item
	for i := range 3 {
		items = append(items, feeds.Item{ID: fmt.Sprintf("a%d", i), Title: fmt.Sprintf("Story %d", i), URL: fmt.Sprintf("https://e.com/%d", i)})
	}
	if _, err := b.pipe.Items.Save(ctx, "world", items, time.Now()); err != nil {
		t.Fatal(err)
	}
	var android []deviceJSON
	for i := range 4 {
		android = append(android, b.register(t, fcmReg(fcmToken(i+1), "world"), http.StatusCreated))
	}
	for i := range 2 {
		b.register(t, map[string]any{"provider": "apns", "token": apnsToken(i), "platform": "ios", "feeds": []string{"world"}}, http.StatusCreated)
	}
	off := fcmReg(fcmToken(9), "world")
	off["background_sync"] = map[string]any{"enabled": false}
	b.register(t, off, http.StatusCreated)
	// The dispatcher tracks the new items when the watcher stores them.
	if err := b.pipe.Freshness.Published(ctx, "world", 0, 3); err != nil {
		t.Fatal(err)
	}

	post := func(d deviceJSON, body any) response {
		return b.do(t, "POST", "/v1/devices/{id}/receipts", fmt.Sprintf("/v1/devices/%d/receipts", d.ID), d.Secret, body)
	}
	hash := func(d deviceJSON) map[string]string {
		m, err := b.rdb.HGetAll(ctx, devices.Key(d.ID)).Result()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	// Bad receipts first, on a device with an unanswered push: each is 400
	// on its field and records nothing.
	bad := android[3]
	if err := b.rdb.HSet(ctx, devices.Key(bad.ID), "un", 2).Err(); err != nil {
		t.Fatal(err)
	}
	many := map[string]int{}
	for i := range 65 {
		many[fmt.Sprintf("f%d", i)] = 1
	}
	for _, tt := range []struct {
		name, body, field string
	}{
		{"unknown source", `{"source":"silent","cursors":{"world":1}}`, "source"},
		{"negative cursor", `{"source":"foreground","cursors":{"world":-1}}`, "cursors.world"},
		{"cursor as a string", `{"source":"foreground","cursors":{"world":"1"}}`, "cursors"},
		{"fractional cursor", `{"source":"foreground","cursors":{"world":1.5}}`, "cursors"},
		{"cursor beyond the head", `{"source":"background_fetch","cursors":{"world":4}}`, "cursors.world"},
		{"cursors not an object", `{"source":"foreground","cursors":[1]}`, "cursors"},
		{"push id without a push", `{"source":"foreground","push_id":"x","cursors":{"world":1}}`, "push_id"},
		{"bad outcome", `{"source":"background_fetch","outcome":"ok","cursors":{"world":1}}`, "outcome"},
		{"push without a push id", `{"source":"push","outcome":"synced","received_at":"2026-01-01T00:00:00Z","cursors":{"world":1}}`, "push_id"},
		{"case-folded key", `{"source":"foreground","Cursors":{"world":1}}`, "Cursors"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := post(bad, tt.body)
			if e := decode[errorJSON](t, r); r.code != 400 || e.Error.Field != tt.field || e.Error.Message == "" {
				t.Errorf("got %d %s, want 400 on field %s", r.code, r.body, tt.field)
			}
		})
	}
	if r := post(bad, map[string]any{"source": "foreground", "cursors": many}); r.code != 400 || decode[errorJSON](t, r).Error.Field != "cursors" {
		t.Errorf("65 cursors: got %d %s", r.code, r.body)
	}
	if h := hash(bad); h["sy"] != "" || h["c:world"] != "" || h["un"] != "2" {
		t.Fatalf("after bad receipts the device has sy %q, c:world %q, un %q; want nothing recorded", h["sy"], h["c:world"], h["un"])
	}

	// A background fetch, then a late foreground receipt with an older
	// cursor: the cursor stays; sy is set, un deleted.
	a := android[0]
	if err := b.rdb.HSet(ctx, devices.Key(a.ID), "un", 3).Err(); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Minute).UnixMilli()
	if r := post(a, map[string]any{"source": "background_fetch", "outcome": "synced", "items": 3, "cursors": map[string]int{"world": 3}}); r.code != 204 {
		t.Fatalf("background fetch receipt: %d %s", r.code, r.body)
	}
	if r := post(a, map[string]any{"source": "foreground", "cursors": map[string]int{"world": 2}}); r.code != 204 {
		t.Fatalf("foreground receipt: %d %s", r.code, r.body)
	}
	h := hash(a)
	var sy int64
	fmt.Sscan(h["sy"], &sy)
	if h["c:world"] != "3" || sy < before || h["un"] != "" {
		t.Fatalf("device after receipts: c:world %q sy %q un %q; want 3, now, none", h["c:world"], h["sy"], h["un"])
	}
	// A foreground receipt naming a feed the device does not follow: that
	// cursor is ignored.
	if r := post(android[1], map[string]any{"source": "foreground", "cursors": map[string]int{"world": 3, "tech": 1}}); r.code != 204 {
		t.Fatalf("foreground receipt: %d %s", r.code, r.body)
	}
	if h := hash(android[1]); h["c:world"] != "3" || h["c:tech"] != "" {
		t.Fatalf("c:world %q c:tech %q, want 3 and none", h["c:world"], h["c:tech"])
	}
	// A push receipt keeps its signed push id and carries cursors too.
	pushID, err := receipts.NewSigner(b.rdb).Sign(ctx, android[2].ID, receipts.PushID("feed", time.Now().Add(-5*time.Second), "c1"))
	if err != nil {
		t.Fatal(err)
	}
	if r := post(android[2], map[string]any{"push_id": pushID, "received_at": time.Now().Format(time.RFC3339Nano),
		"outcome": "synced", "cursors": map[string]int{"world": 1}}); r.code != 204 {
		t.Fatalf("push receipt: %d %s", r.code, r.body)
	}

	// Time-to-fresh: 4 Android devices are the audience of each item (the
	// one with background sync off is not). Items 1-3 were reached by
	// devices 0 and 1 (50 %: the 2nd of 4); item 1 by device 2 as well,
	// short of 90 % (the 4th). iOS: 2 in the audience, none synced.
	r := b.do(t, "GET", "/v1/stats/freshness", "/v1/stats/freshness?feed=world", b.editKey, nil)
	if r.code != 200 {
		t.Fatalf("freshness: %d %s", r.code, r.body)
	}
	fr := decode[freshnessJSON](t, r)
	if len(fr.Items) != 3 {
		t.Fatalf("freshness items: %s", r.body)
	}
	for _, it := range fr.Items {
		an, ios := it.Platforms["android"], it.Platforms["ios"]
		wantSynced := int64(2)
		if it.Cursor == 1 {
			wantSynced = 3
		}
		if an.Audience != 4 || an.Synced != wantSynced || an.P50 == nil || *an.P50 < 0 || *an.P50 > 600 || an.P90 != nil || an.P99 != nil {
			t.Errorf("item %d android: %+v, want audience 4, %d synced, p50 set, p90 and p99 null", it.Cursor, an, wantSynced)
		}
		if ios.Audience != 2 || ios.Synced != 0 || ios.P50 != nil {
			t.Errorf("item %d ios: %+v, want audience 2, none synced", it.Cursor, ios)
		}
	}
	metrics := string(b.do(t, "GET", "/metrics", "/metrics", "", nil).body)
	for _, want := range []string{
		`nudge_time_to_fresh_seconds_count{feed="world",platform="android",share="50"} 3`,
		`nudge_sync_receipts_total{source="background_fetch"} 1`,
		`nudge_sync_receipts_total{source="foreground"} 2`,
		`nudge_sync_receipts_total{source="push"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, `share="90"`) {
		t.Error("metrics have a 90 % time-to-fresh that was never reached")
	}

	// The API's own bad input.
	for _, tt := range []struct {
		path, key string
		code      int
	}{
		{"/v1/stats/freshness?since=yesterday", b.editKey, 400},
		{"/v1/stats/freshness?feed=sport", b.editKey, 404},
		{"/v1/stats/freshness", "", 401},
	} {
		if r := b.do(t, "GET", "/v1/stats/freshness", tt.path, tt.key, nil); r.code != tt.code {
			t.Errorf("%s: got %d %s, want %d", tt.path, r.code, r.body, tt.code)
		}
	}
	// Every feed, and since in the future: nothing.
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if fr := decode[freshnessJSON](t, b.do(t, "GET", "/v1/stats/freshness", "/v1/stats/freshness?since="+future, b.editKey, nil)); len(fr.Items) != 0 {
		t.Errorf("items since the future: %+v", fr.Items)
	}
}
