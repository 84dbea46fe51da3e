package httpapi_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/schedule"
	"github.com/nudge-dev/nudge/internal/throttle"
	"github.com/nudge-dev/nudge/internal/throttle/throttletest"
)

// TestSyncIDPercentEncoded reads the progress of a sync whose id has
// colons (the dispatcher's feed:<feed>:<cursor> ids) both as written and
// percent-encoded, as HTTP clients send it; both must find it.
func TestSyncIDPercentEncoded(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	ev := fanout.Event{ID: "feed:headlines:5", Feeds: []string{"headlines"}, Lane: throttle.LaneFeed, Reason: "feed"}
	if _, err := b.pipe.Planner.Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/syncs/feed:headlines:5", "/v1/syncs/feed%3Aheadlines%3A5", "/v1/syncs/feed%3aheadlines%3a5"} {
		r := b.do(t, "GET", "/v1/syncs/{id}", path, b.editKey, nil)
		if r.code != http.StatusOK {
			t.Fatalf("GET %s: got %d %s", path, r.code, r.body)
		}
		if p := decode[progressJSON](t, r); p.ID != ev.ID || p.State != "planning" {
			t.Fatalf("GET %s: got %+v", path, p)
		}
	}
	if r := b.do(t, "GET", "/v1/syncs/{id}", "/v1/syncs/feed%3Aheadlines%3A6", b.editKey, nil); r.code != http.StatusNotFound {
		t.Fatalf("unknown encoded id: got %d", r.code)
	}
}

// TestSyncAudienceDryRun registers devices of both platforms, several
// locales and app versions, counts audiences with dry_run (nothing may be
// published or queued), then sends one of them: the planned sync must
// target exactly the dry run's count, and only the matching devices.
func TestSyncAudienceDryRun(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	type dev struct{ platform, locale, version string }
	devs := []dev{
		{"android", "en-US", "1.4.0"}, {"android", "en-GB", "1.10.0"}, {"android", "de-DE", "1.9.2"},
		{"ios", "en_GB", "2.0"}, {"ios", "fr-FR", "1.4.0"}, {"ios", "en", ""},
	}
	ids := map[uint64]dev{}
	for i, d := range devs {
		reg := fcmReg(fcmToken(700+i), "world")
		reg["platform"], reg["locale"] = d.platform, d.locale
		if d.version == "" {
			delete(reg, "app_version")
		} else {
			reg["app_version"] = d.version
		}
		ids[b.register(t, reg, http.StatusCreated).ID] = d
	}
	b.register(t, fcmReg(fcmToken(799), "tech"), http.StatusCreated) // not a subscriber

	tests := []struct {
		name     string
		audience map[string]any
		want     int
	}{
		{"everyone", nil, 6},
		{"ios", map[string]any{"platforms": []string{"ios"}}, 3},
		{"english", map[string]any{"locales": []string{"en"}}, 4},
		{"british", map[string]any{"locales": []string{"en-gb"}}, 2},
		{"from 1.9", map[string]any{"min_app_version": "1.9"}, 3},
		{"1.4 to 1.9.x", map[string]any{"min_app_version": "1.4", "max_app_version": "1.9.9"}, 3},
		{"android english from 1.5", map[string]any{"platforms": []string{"android"}, "locales": []string{"en"}, "min_app_version": "1.5"}, 1},
	}
	for _, tt := range tests {
		body := map[string]any{"feeds": []string{"world"}}
		if tt.audience != nil {
			body["audience"] = tt.audience
		}
		r := b.do(t, "POST", "/v1/syncs", "/v1/syncs?dry_run=true", b.editKey, body)
		if r.code != http.StatusOK {
			t.Fatalf("%s: dry run got %d %s", tt.name, r.code, r.body)
		}
		if got := decode[struct{ Targeted int }](t, r).Targeted; got != tt.want {
			t.Fatalf("%s: dry run counts %d, want %d", tt.name, got, tt.want)
		}
	}
	if n, err := b.rdb.XLen(t.Context(), keys.Stream(keys.EventQueue, 0)).Result(); err != nil || n != 0 {
		t.Fatalf("dry runs queued %d events (%v), want none", n, err)
	}
	if r := b.do(t, "POST", "/v1/syncs", "/v1/syncs", b.editKey, map[string]any{"feeds": []string{"world"},
		"audience": map[string]any{"platforms": []string{"windows"}}}); r.code != http.StatusBadRequest {
		t.Fatalf("unknown platform: got %d", r.code)
	}

	r := b.do(t, "POST", "/v1/syncs", "/v1/syncs", b.editKey, map[string]any{"feeds": []string{"world"},
		"audience": map[string]any{"locales": []string{"en"}, "min_app_version": "1.5"}})
	if r.code != http.StatusAccepted {
		t.Fatalf("create: got %d %s", r.code, r.body)
	}
	id := decode[struct{ ID string }](t, r).ID
	p, err := b.pipe.Planner.Plan(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if p.Targeted != 2 {
		t.Fatalf("planned: targeted %d, want the dry run's 2 (en-GB 1.10.0, en_GB 2.0)", p.Targeted)
	}
	// Breaking, no alert, fresh devices: each planned device has its push
	// in the push stream now.
	pushed := map[uint64]bool{}
	for _, q := range throttletest.Queued(t, b.rdb) {
		pushed[q.Push.Device] = true
	}
	for id, d := range ids {
		in := strings.HasPrefix(strings.ToLower(d.locale), "en") && d.version != "" && fanout.CompareVersions(d.version, "1.5") >= 0
		if pushed[id] != in {
			t.Fatalf("device %+v: pushed %v, want %v", d, pushed[id], in)
		}
	}
}

// scheduledJSON is a scheduled sync as the api shows it.
type scheduledJSON struct {
	ID     string    `json:"id"`
	State  string    `json:"state"`
	SendAt time.Time `json:"send_at"`
	Feeds  []string  `json:"feeds"`
}

// TestScheduledSyncs schedules syncs through the api: bad send_at values
// answer 400; a scheduled sync is shown and listed until it is cancelled
// (204, then 404) or started (a runner on the same Redis takes it; the
// cancel then answers 409, as it does while the runner holds it); every
// change is audited.
func TestScheduledSyncs(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	at := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339Nano) }
	for _, tt := range []struct{ name, sendAt string }{
		{"not a time", "tomorrow"},
		{"past", at(-time.Minute)},
		{"beyond 30 days", at(31 * 24 * time.Hour)},
	} {
		r := b.do(t, "POST", "/v1/syncs", "/v1/syncs", b.editKey, map[string]any{"feeds": []string{"world"}, "send_at": tt.sendAt})
		if r.code != http.StatusBadRequest || !strings.Contains(string(r.body), `"field":"send_at"`) {
			t.Fatalf("%s: got %d %s, want 400 on send_at", tt.name, r.code, r.body)
		}
	}
	add := func(d time.Duration) string {
		t.Helper()
		r := b.do(t, "POST", "/v1/syncs", "/v1/syncs", b.editKey, map[string]any{"feeds": []string{"world"}, "send_at": at(d),
			"alert": map[string]any{"title": "Polls close"}, "audience": map[string]any{"platforms": []string{"ios"}}})
		if r.code != http.StatusAccepted {
			t.Fatalf("schedule: got %d %s", r.code, r.body)
		}
		v := decode[scheduledJSON](t, r)
		if v.State != "scheduled" || r.header.Get("Location") != "/v1/syncs/"+v.ID {
			t.Fatalf("schedule: got %+v, Location %q", v, r.header.Get("Location"))
		}
		return v.ID
	}
	later, soon := add(time.Hour), add(time.Second)

	v := decode[scheduledJSON](t, b.do(t, "GET", "/v1/syncs/{id}", "/v1/syncs/"+later, b.editKey, nil))
	if v.State != "scheduled" || time.Until(v.SendAt) < 59*time.Minute || len(v.Feeds) != 1 {
		t.Fatalf("get scheduled: got %+v", v)
	}
	list := decode[struct{ Syncs []scheduledJSON }](t, b.do(t, "GET", "/v1/syncs", "/v1/syncs?state=scheduled", b.editKey, nil))
	if len(list.Syncs) != 2 || list.Syncs[0].ID != soon || list.Syncs[1].ID != later {
		t.Fatalf("list: got %+v, want %s then %s", list.Syncs, soon, later)
	}
	if r := b.do(t, "GET", "/v1/syncs", "/v1/syncs", b.editKey, nil); r.code != http.StatusBadRequest {
		t.Fatalf("list without state: got %d", r.code)
	}
	if r := b.do(t, "DELETE", "/v1/syncs/{id}", "/v1/syncs/"+later, "", nil); r.code != http.StatusUnauthorized {
		t.Fatalf("cancel without a key: got %d", r.code)
	}

	// Cancel the later one: gone, and never started.
	if r := b.do(t, "DELETE", "/v1/syncs/{id}", "/v1/syncs/"+later, b.editKey, nil); r.code != http.StatusNoContent {
		t.Fatalf("cancel: got %d %s", r.code, r.body)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if r := b.do(t, m, "/v1/syncs/{id}", "/v1/syncs/"+later, b.editKey, nil); r.code != http.StatusNotFound {
			t.Fatalf("%s after cancel: got %d", m, r.code)
		}
	}

	// A runner holds the soon one (it was due): no cancel; then it starts.
	await.Within(t, 10*time.Second, "the sync to fall due on Redis's clock and a runner to take it", func() bool {
		taken, err := b.pipe.Schedule.Claim(t.Context(), "runner-1", 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(taken) == 1
	})
	if v := decode[scheduledJSON](t, b.do(t, "GET", "/v1/syncs/{id}", "/v1/syncs/"+soon, b.editKey, nil)); v.State != "starting" {
		t.Fatalf("get while taken: got %+v, want starting", v)
	}
	if r := b.do(t, "DELETE", "/v1/syncs/{id}", "/v1/syncs/"+soon, b.editKey, nil); r.code != http.StatusConflict {
		t.Fatalf("cancel while taken: got %d %s, want 409", r.code, r.body)
	}
	ev, err := b.pipe.Schedule.Get(t.Context(), soon)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := schedule.Submit(t.Context(), b.pipe.Items, b.pipe.Submitter, ev.Event); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.pipe.Schedule.Finish(t.Context(), soon, "runner-1"); !ok || err != nil {
		t.Fatalf("finish: %v, %v", ok, err)
	}
	p := decode[progressJSON](t, b.do(t, "GET", "/v1/syncs/{id}", "/v1/syncs/"+soon, b.editKey, nil))
	if p.State != "planning" || p.Lane != "breaking" {
		t.Fatalf("started sync: got %+v, want planning", p)
	}
	started, err := b.pipe.Planner.Event(t.Context(), soon)
	if err != nil || started.Alert == nil || started.Alert.Title != "Polls close" || started.Audience == nil || started.Since == nil {
		t.Fatalf("started event: got %+v, %v; want the stored alert, audience and heads", started, err)
	}
	if r := b.do(t, "DELETE", "/v1/syncs/{id}", "/v1/syncs/"+soon, b.editKey, nil); r.code != http.StatusConflict {
		t.Fatalf("cancel after start: got %d %s, want 409", r.code, r.body)
	}
	if l := decode[struct{ Syncs []scheduledJSON }](t, b.do(t, "GET", "/v1/syncs", "/v1/syncs?state=scheduled", b.editKey, nil)); len(l.Syncs) != 0 {
		t.Fatalf("list after all: got %+v, want none", l.Syncs)
	}

	audit, err := b.rdb.XRange(t.Context(), keys.Audit(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, a := range audit {
		actions = append(actions, a.Values["action"].(string)+" "+strings.Fields(a.Values["target"].(string))[0])
	}
	if want := []string{"sync.schedule " + later, "sync.schedule " + soon, "sync.cancel " + later}; !slices.Equal(actions, want) {
		t.Fatalf("audit: got %q, want %q", actions, want)
	}
}
