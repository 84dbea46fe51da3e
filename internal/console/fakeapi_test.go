package console_test

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// fakeAPI implements the console's JSON contract for the browser tests. It
// is a test double of the api, not of the console: the page is the component
// under test. The end-to-end test against the real stack lives elsewhere.
type fakeAPI struct {
	mu            sync.Mutex
	feeds         []fakeFeed
	syncs         map[string]*fakeSync
	scheduled     map[string]*fakeSync // by id, until their start (send_at on the fake's clock)
	cancels       int                  // DELETE /v1/syncs/{id} answered 204
	syncRequests  []syncRequest
	syncGets      int
	dryRuns       int // POST /v1/syncs?dry_run=true answered
	nextSync      int
	apps          []fakeApp // GET /v1/apps
	overviewApps  []string  // the ?app= of each GET /v1/console/overview
	overviewFails bool      // GET /v1/console/overview answers 500
	syncReject    *apiError // POST /v1/syncs answers 400 with this error
	syncDrop      bool      // POST /v1/syncs drops the connection
	now           func() time.Time
}

type fakeApp struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type fakeFeed struct {
	ID           string
	Title        string
	URL          string
	PollInterval time.Duration
	Failing      bool
}

type syncRequest struct {
	Feeds    []string      `json:"feeds"`
	Lane     string        `json:"lane"`
	Audience *fakeAudience `json:"audience,omitempty"`
	Alert    *struct {
		Title string `json:"title"`
		Body  string `json:"body"`
	} `json:"alert,omitempty"`
	SendAt string `json:"send_at,omitempty"`
	App    string `json:"app,omitempty"`
}

type fakeAudience struct {
	Platforms     []string `json:"platforms,omitempty"`
	Locales       []string `json:"locales,omitempty"`
	MinAppVersion string   `json:"min_app_version,omitempty"`
	MaxAppVersion string   `json:"max_app_version,omitempty"`
}

// dryRunCount is the fake's dry-run answer: 1,200 devices per feed, halved
// by each narrowing field that is set.
func dryRunCount(req syncRequest) int {
	n := 1200 * len(req.Feeds)
	if a := req.Audience; a != nil {
		for _, set := range []bool{len(a.Platforms) == 1, len(a.Locales) > 0, a.MinAppVersion != "", a.MaxAppVersion != ""} {
			if set {
				n /= 2
			}
		}
	}
	return n
}

type fakeSync struct {
	id    string
	req   syncRequest
	step  int
	start time.Time
}

// syncCounts is one answer of GET /v1/syncs/{id}.
type syncCounts struct {
	State      string `json:"state"`
	Targeted   int    `json:"targeted"`
	Queued     int    `json:"queued"`
	Sent       int    `json:"sent"`
	Deferred   int    `json:"deferred"`
	Coalesced  int    `json:"coalesced"`
	Skipped    int    `json:"skipped"`
	Pruned     int    `json:"pruned"`
	Failed     int    `json:"failed"`
	Superseded int    `json:"superseded"`
	InFlight   int    `json:"in_flight"`
	Held       int    `json:"held"`
	// LastSentAfter is the last push's time after the sync's creation;
	// zero: no last_sent_at.
	LastSentAfter time.Duration `json:"-"`
}

// syncSteps is what successive polls of a sync return; the last repeats.
// As the API does, targeted is skipped + sent + pruned + failed +
// superseded + in_flight at every step.
var syncSteps = []syncCounts{
	{State: "planning"},
	{State: "planning", Targeted: 600, Queued: 600, Sent: 120, InFlight: 480},
	{State: "sending", Targeted: 1200, Queued: 1180, Sent: 800, Deferred: 12, Coalesced: 4, Skipped: 4, Pruned: 6, Failed: 1, InFlight: 389, Held: 3},
	{State: "done", Targeted: 1200, Queued: 1165, Sent: 1175, Deferred: 20, Coalesced: 10, Skipped: 5, Pruned: 10, Failed: 5, Superseded: 5, Held: 3,
		LastSentAfter: 4200 * time.Millisecond},
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

type who struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// keys are the API keys the fake knows.
var keys = map[string]who{
	"editor-key": {Name: "Erin Editor", Role: "editor"},
	"admin-key":  {Name: "Ada Admin", Role: "admin"},
	"app-key":    {Name: "Newsroom app", Role: "app"},
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{
		feeds: []fakeFeed{
			{ID: "headlines", Title: "Headlines", URL: "http://feeds.example.test/headlines.xml", PollInterval: 2 * time.Minute},
			{ID: "sport", Title: "Sport", URL: "http://feeds.example.test/sport.xml", PollInterval: 5 * time.Minute, Failing: true},
			{ID: "culture", Title: "Culture & Arts", URL: "http://feeds.example.test/culture.json", PollInterval: 15 * time.Minute},
		},
		apps:      []fakeApp{{ID: "default", Name: "Default app"}},
		syncs:     make(map[string]*fakeSync),
		scheduled: make(map[string]*fakeSync),
		now:       time.Now,
	}
}

func (f *fakeAPI) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/apps", f.auth("editor", f.listApps))
	mux.HandleFunc("GET /v1/console/overview", f.auth("editor", f.overview))
	mux.HandleFunc("GET /v1/stats/freshness", f.auth("editor", f.freshness))
	mux.HandleFunc("POST /v1/syncs", f.auth("editor", f.createSync))
	mux.HandleFunc("GET /v1/syncs/{id}", f.auth("editor", f.getSync))
	mux.HandleFunc("GET /v1/syncs", f.auth("editor", f.listSyncs))
	mux.HandleFunc("DELETE /v1/syncs/{id}", f.auth("editor", f.cancelSync))
	mux.HandleFunc("PUT /v1/admin/feeds/{id}", f.auth("admin", f.putFeed))
	mux.HandleFunc("DELETE /v1/admin/feeds/{id}", f.auth("admin", f.deleteFeed))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, e apiError) {
	writeJSON(w, status, map[string]apiError{"error": e})
}

func (f *fakeAPI) auth(role string, next func(http.ResponseWriter, *http.Request, who)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		const prefix = "Bearer "
		h := r.Header.Get("Authorization")
		if len(h) <= len(prefix) || h[:len(prefix)] != prefix {
			writeError(w, http.StatusUnauthorized, apiError{Code: "unauthenticated", Message: "missing API key"})
			return
		}
		me, ok := keys[h[len(prefix):]]
		if !ok {
			writeError(w, http.StatusUnauthorized, apiError{Code: "unauthenticated", Message: "unknown API key"})
			return
		}
		allowed := me.Role == "admin" || (role == "editor" && me.Role == "editor")
		if !allowed {
			writeError(w, http.StatusForbidden, apiError{Code: "forbidden", Message: "this key lacks the " + role + " role"})
			return
		}
		next(w, r, me)
	}
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// freshness answers GET /v1/stats/freshness with freshnessItems.
func (f *fakeAPI) freshness(w http.ResponseWriter, _ *http.Request, _ who) {
	f.mu.Lock()
	now := f.now()
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"since": rfc3339(now.Add(-24 * time.Hour)), "items": freshnessItems(now)})
}

// freshnessItems are four items of headlines and sport over the last
// hour. The newest headlines item has reached 50 % only (p90 and p99 are
// null), and iOS never reaches 99 %.
func freshnessItems(now time.Time) []map[string]any {
	p := func(audience, synced int, p50, p90, p99 any) map[string]any {
		return map[string]any{"audience": audience, "synced": synced, "p50_seconds": p50, "p90_seconds": p90, "p99_seconds": p99}
	}
	item := func(feed string, cursor int, ago time.Duration, android, ios map[string]any) map[string]any {
		return map[string]any{"feed": feed, "cursor": cursor, "published": rfc3339(now.Add(-ago)),
			"platforms": map[string]any{"android": android, "ios": ios}}
	}
	return []map[string]any{
		item("headlines", 10, 50*time.Minute, p(600, 598, 4.5, 30, 95), p(400, 380, 12, 240, nil)),
		item("sport", 3, 40*time.Minute, p(200, 199, 6, 41, 130), p(100, 95, 20, 300, nil)),
		item("headlines", 11, 20*time.Minute, p(600, 597, 5, 28, 88), p(400, 379, 15, 250, nil)),
		item("headlines", 12, 2*time.Minute, p(600, 320, 7, nil, nil), p(400, 100, nil, nil, nil)),
	}
}

func (f *fakeAPI) listApps(w http.ResponseWriter, _ *http.Request, _ who) {
	f.mu.Lock()
	defer f.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"apps": f.apps})
}

// appSent is the fake's iOS pushes sent for the overview's ?app=: 1,234
// for the fleet or the default app, 10 times the app's position otherwise.
func (f *fakeAPI) appSent(app string) int {
	if i := slices.IndexFunc(f.apps, func(a fakeApp) bool { return a.ID == app }); i > 0 {
		return 10 * i
	}
	return 1234
}

func (f *fakeAPI) overview(w http.ResponseWriter, r *http.Request, me who) {
	f.mu.Lock()
	defer f.mu.Unlock()
	app := r.URL.Query().Get("app")
	f.overviewApps = append(f.overviewApps, app)
	if f.overviewFails {
		writeError(w, http.StatusInternalServerError, apiError{Code: "internal", Message: "redis: connection refused"})
		return
	}
	now := f.now()
	feeds := make([]map[string]any, 0, len(f.feeds))
	for i, fd := range f.feeds {
		health := map[string]any{
			"last_success":         rfc3339(now.Add(-90 * time.Second)),
			"last_error":           nil,
			"last_status":          200,
			"consecutive_failures": 0,
			"next_poll":            rfc3339(now.Add(fd.PollInterval - 90*time.Second)),
		}
		if fd.Failing {
			health["last_success"] = rfc3339(now.Add(-40 * time.Minute))
			health["last_error"] = "fetch feed " + fd.URL + ": 503 Service Unavailable"
			health["last_status"] = 503
			health["consecutive_failures"] = 3
		}
		latest := []map[string]any{}
		if !fd.Failing {
			for j := range 3 {
				latest = append(latest, map[string]any{
					"title":     fd.Title + " story " + strconv.Itoa(3-j),
					"url":       "http://news.example.test/" + fd.ID + "/" + strconv.Itoa(3-j),
					"published": rfc3339(now.Add(-time.Duration(5+j*7) * time.Minute)),
				})
			}
		}
		feeds = append(feeds, map[string]any{
			"id":                    fd.ID,
			"title":                 fd.Title,
			"url":                   fd.URL,
			"poll_interval_seconds": int(fd.PollInterval / time.Second),
			"health":                health,
			"head_cursor":           strconv.Itoa(1000 + 37*i),
			"latest":                latest,
		})
	}

	minutes, sent, wakes := series(now)

	writeJSON(w, http.StatusOK, map[string]any{
		"whoami": me,
		"feeds":  feeds,
		"queues": map[string]any{
			"push":   map[string]int{"depth": 12, "pending": 3, "retry": 1, "dead": 0},
			"events": map[string]int{"depth": 0, "pending": 1, "retry": 0, "dead": 2},
		},
		"platforms": map[string]any{
			"ios": map[string]any{"sent": f.appSent(app), "deferred": 56, "coalesced": 7, "pruned": 3, "failed": 1, "unresponsive": 41,
				"receipts": 1100, "wake_rate": 0.891, "wake_latency_p50_ms": 850, "wake_latency_p99_ms": 4200},
			"android": map[string]any{"sent": 2345, "deferred": 12, "coalesced": 30, "pruned": 9, "failed": 0, "unresponsive": 0,
				"receipts": 0, "wake_rate": nil, "wake_latency_p50_ms": nil, "wake_latency_p99_ms": nil},
		},
		"series":               map[string]any{"minutes": minutes, "sent": sent, "wakes": wakes},
		"unresponsive_devices": map[string]int{"ios": 1520, "android": 0},
	})
}

func (f *fakeAPI) createSync(w http.ResponseWriter, r *http.Request, _ who) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.syncDrop {
		// Simulate a network failure: close the connection without an answer.
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	var req syncRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, apiError{Code: "invalid_json", Message: err.Error()})
		return
	}
	f.syncRequests = append(f.syncRequests, req)
	if f.syncReject != nil {
		writeError(w, http.StatusBadRequest, *f.syncReject)
		return
	}
	for _, id := range req.Feeds {
		if !slices.ContainsFunc(f.feeds, func(fd fakeFeed) bool { return fd.ID == id }) {
			writeError(w, http.StatusBadRequest, apiError{Code: "unknown_feed", Message: "unknown feed " + id, Field: "feeds"})
			return
		}
	}
	if r.URL.Query().Get("dry_run") == "true" {
		f.dryRuns++
		writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "targeted": dryRunCount(req)})
		return
	}
	var sendAt time.Time
	if req.SendAt != "" {
		t, err := time.Parse(time.RFC3339, req.SendAt)
		if err != nil || !t.After(f.now()) {
			writeError(w, http.StatusBadRequest, apiError{Code: "invalid_field", Message: "send_at: want a time in the future", Field: "send_at"})
			return
		}
		sendAt = t
	}
	f.nextSync++
	id := "ev-" + strconv.Itoa(f.nextSync)
	if !sendAt.IsZero() {
		f.scheduled[id] = &fakeSync{id: id, req: req, start: sendAt}
		writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "state": "scheduled", "send_at": rfc3339(sendAt)})
		return
	}
	f.syncs[id] = &fakeSync{id: id, req: req, start: f.now()}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id})
}

// startDue starts the scheduled syncs whose send_at has come, as the
// dispatcher does; call it with f.mu held.
func (f *fakeAPI) startDue() {
	for id, s := range f.scheduled {
		if !f.now().Before(s.start) {
			delete(f.scheduled, id)
			f.syncs[id] = s
		}
	}
}

func scheduledView(s *fakeSync) map[string]any {
	return map[string]any{"id": s.id, "feeds": s.req.Feeds, "lane": s.req.Lane, "created_at": rfc3339(s.start),
		"state": "scheduled", "send_at": rfc3339(s.start), "targeted": 0, "queued": 0, "sent": 0, "deferred": 0,
		"coalesced": 0, "skipped": 0, "pruned": 0, "failed": 0, "superseded": 0, "in_flight": 0, "held": 0}
}

func (f *fakeAPI) listSyncs(w http.ResponseWriter, r *http.Request, _ who) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Query().Get("state") != "scheduled" {
		writeError(w, http.StatusBadRequest, apiError{Code: "invalid_field", Message: "state: want scheduled", Field: "state"})
		return
	}
	f.startDue()
	list := make([]*fakeSync, 0, len(f.scheduled))
	for _, s := range f.scheduled {
		list = append(list, s)
	}
	slices.SortFunc(list, func(a, b *fakeSync) int { return a.start.Compare(b.start) })
	out := []map[string]any{}
	app := r.URL.Query().Get("app")
	for _, s := range list {
		if app == "" || app == cmp.Or(s.req.App, "default") {
			out = append(out, scheduledView(s))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"syncs": out})
}

func (f *fakeAPI) cancelSync(w http.ResponseWriter, r *http.Request, _ who) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.startDue()
	id := r.PathValue("id")
	switch {
	case f.scheduled[id] != nil:
		delete(f.scheduled, id)
		f.cancels++
		w.WriteHeader(http.StatusNoContent)
	case f.syncs[id] != nil:
		writeError(w, http.StatusConflict, apiError{Code: "conflict", Message: "the sync has started; it can no longer be cancelled"})
	default:
		writeError(w, http.StatusNotFound, apiError{Code: "not_found", Message: "sync not found"})
	}
}

func (f *fakeAPI) getSync(w http.ResponseWriter, r *http.Request, _ who) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.startDue()
	if s := f.scheduled[r.PathValue("id")]; s != nil {
		writeJSON(w, http.StatusOK, scheduledView(s))
		return
	}
	s, ok := f.syncs[r.PathValue("id")]
	if !ok {
		writeError(w, http.StatusNotFound, apiError{Code: "not_found", Message: "no such sync"})
		return
	}
	f.syncGets++
	c := syncSteps[min(s.step, len(syncSteps)-1)]
	s.step++
	last := ""
	if c.LastSentAfter > 0 {
		last = s.start.Add(c.LastSentAfter).UTC().Format(time.RFC3339Nano)
	}
	writeJSON(w, http.StatusOK, struct {
		ID         string   `json:"id"`
		Feeds      []string `json:"feeds"`
		Lane       string   `json:"lane"`
		CreatedAt  string   `json:"created_at"`
		LastSentAt string   `json:"last_sent_at,omitempty"`
		syncCounts
	}{s.id, s.req.Feeds, s.req.Lane, s.start.UTC().Format(time.RFC3339Nano), last, c})
}

func (f *fakeAPI) putFeed(w http.ResponseWriter, r *http.Request, _ who) {
	var body struct {
		Title        string `json:"title"`
		URL          string `json:"url"`
		PollInterval string `json:"poll_interval"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, apiError{Code: "invalid_json", Message: err.Error()})
		return
	}
	d, err := time.ParseDuration(body.PollInterval)
	if err != nil || d < 10*time.Second {
		writeError(w, http.StatusBadRequest, apiError{Code: "invalid", Message: "poll_interval must be a duration of at least 10s", Field: "poll_interval"})
		return
	}
	fd := fakeFeed{ID: r.PathValue("id"), Title: body.Title, URL: body.URL, PollInterval: d}
	status := http.StatusOK // like the api: 200 for an update, 201 for a new feed
	f.mu.Lock()
	if i := slices.IndexFunc(f.feeds, func(x fakeFeed) bool { return x.ID == fd.ID }); i >= 0 {
		f.feeds[i] = fd
	} else {
		f.feeds = append(f.feeds, fd)
		status = http.StatusCreated
	}
	f.mu.Unlock()
	writeJSON(w, status, map[string]any{"id": fd.ID, "title": fd.Title, "url": fd.URL, "poll_interval_seconds": int(d / time.Second)})
}

func (f *fakeAPI) deleteFeed(w http.ResponseWriter, r *http.Request, _ who) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.IndexFunc(f.feeds, func(x fakeFeed) bool { return x.ID == r.PathValue("id") })
	if i < 0 {
		writeError(w, http.StatusNotFound, apiError{Code: "not_found", Message: "feed not found"})
		return
	}
	f.feeds = slices.Delete(f.feeds, i, i+1)
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeAPI) feed(id string) (fakeFeed, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.IndexFunc(f.feeds, func(x fakeFeed) bool { return x.ID == id })
	if i < 0 {
		return fakeFeed{}, false
	}
	return f.feeds[i], true
}

func (f *fakeAPI) set(fn func(f *fakeAPI)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// series is one hour of per-minute pushes and wakes ending at now's minute,
// with a breaking-news spike.
func series(now time.Time) (minutes, sent, wakes []int64) {
	start := now.Truncate(time.Minute).Add(-59 * time.Minute)
	for i := range 60 {
		s := int64(20 + (i*7)%15)
		if i >= 40 && i < 44 {
			s += int64(400 - (i-40)*90)
		}
		minutes = append(minutes, start.Add(time.Duration(i)*time.Minute).Unix())
		sent = append(sent, s)
		wakes = append(wakes, s*8/10)
	}
	return minutes, sent, wakes
}
