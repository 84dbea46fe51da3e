package httpapi_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/audit"
	"github.com/nudge-dev/nudge/internal/auth"
)

// The callers of the route × key matrix, in the order of matrixCase.want.
const (
	noKey = iota
	editorA
	editorB
	editorAll
	adminA
	adminAll
	callers
)

var callerNames = [callers]string{"no key", "editor A", "editor B", "editor all apps", "admin A", "admin all apps"}

// appsAB are the matrix's apps: A is the default app (every sync is its
// until syncs carry an app), B a second one.
var appsAB = apps.MustSet(
	apps.App{ID: apps.Default, Name: "News", FCM: &apps.FCM{CredentialsFile: "/dev/null", ProjectID: "news"}},
	apps.App{ID: "sports", Name: "Sports", FCM: &apps.FCM{CredentialsFile: "/dev/null", ProjectID: "sports"}},
)

// matrix is a server with apps A and B and one key per caller.
type matrix struct {
	*bundle
	keys [callers]string
}

func setupMatrix(t *testing.T) *matrix {
	t.Helper()
	m := &matrix{}
	var lines []string
	for i, c := range []struct {
		role auth.Role
		apps []string
	}{
		editorA:   {auth.RoleEditor, []string{apps.Default}},
		editorB:   {auth.RoleEditor, []string{"sports"}},
		editorAll: {auth.RoleEditor, nil},
		adminA:    {auth.RoleAdmin, []string{apps.Default}},
		adminAll:  {auth.RoleAdmin, nil},
	} {
		if i == noKey {
			continue
		}
		k, err := auth.Mint(fmt.Sprintf("caller-%d", i), c.role, c.apps...)
		if err != nil {
			t.Fatal(err)
		}
		m.keys[i] = k.Key
		lines = append(lines, k.Line)
	}
	m.bundle = setup(t, setupOpts{keyLines: lines, apps: appsAB})
	return m
}

// sync creates a sync of app A as an all-apps editor: now, or scheduled
// an hour ahead.
func (m *matrix) sync(t *testing.T, scheduled bool) string {
	t.Helper()
	body := map[string]any{"feeds": []string{"world"}}
	if scheduled {
		body["send_at"] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	}
	r := m.do(t, "POST", "/v1/syncs", "/v1/syncs", m.keys[editorAll], body)
	if r.code != http.StatusAccepted {
		t.Fatalf("create sync: got %d %s", r.code, r.body)
	}
	return decode[struct{ ID string }](t, r).ID
}

// matrixCase is one request to one route and the status each caller gets.
type matrixCase struct {
	route string // "METHOD pattern" as the router lists it
	// path is the request path; it may prepare state for one caller (a
	// fresh scheduled sync, a feed to delete).
	path func(t *testing.T, m *matrix, caller int) string
	body any
	want [callers]int
}

func fixed(p string) func(*testing.T, *matrix, int) string {
	return func(*testing.T, *matrix, int) string { return p }
}

// Statuses by caller, for the common shapes.
var (
	public = func(code int) [callers]int { return [callers]int{code, code, code, code, code, code} }
	// device is for the device routes: a bearer is taken as a device
	// secret, which no device has (404), none is 401.
	device    = [callers]int{401, 404, 404, 404, 404, 404}
	anyEditor = func(code int) [callers]int { return [callers]int{401, code, code, code, code, code} }
	// appA is for what belongs to app A: B's editor gets other.
	appA = func(code, other int) [callers]int { return [callers]int{401, code, other, code, code, code} }
	// appB is for what belongs to app B.
	appB      = func(code, other int) [callers]int { return [callers]int{401, other, code, code, other, code} }
	adminOnly = func(code int) [callers]int { return [callers]int{401, 403, 403, 403, code, code} }
)

// TestRouteKeyMatrix calls every route of the router with each kind of
// key: none, an editor and an admin limited to app A, an editor limited to
// app B, and an editor and an admin for every app. A route the router
// serves without a row here fails the test, so a new route must state
// who may call it.
func TestRouteKeyMatrix(t *testing.T) {
	t.Parallel()
	m := setupMatrix(t)
	started := m.sync(t, false)
	badDevice := `{"provider":"fcm"}`

	cases := []matrixCase{
		{route: "GET /healthz", path: fixed("/healthz"), want: public(200)},
		{route: "GET /readyz", path: fixed("/readyz"), want: public(200)},
		{route: "GET /metrics", path: fixed("/metrics"), want: public(200)},
		{route: "GET /", path: fixed("/"), want: public(302)},
		{route: "GET /console", path: fixed("/console"), want: public(301)},
		{route: "GET /console/*", path: fixed("/console/"), want: public(200)},
		// Device routes take a device secret, never an API key.
		{route: "POST /v1/devices", path: fixed("/v1/devices"), body: badDevice, want: public(400)},
		{route: "GET /v1/devices/{id}", path: fixed("/v1/devices/1"), want: device},
		{route: "PATCH /v1/devices/{id}", path: fixed("/v1/devices/1"), body: `{}`, want: device},
		{route: "DELETE /v1/devices/{id}", path: fixed("/v1/devices/1"), want: device},
		{route: "POST /v1/devices/{id}/receipts", path: fixed("/v1/devices/1/receipts"), body: `{}`, want: device},
		{route: "GET /v1/feeds", path: fixed("/v1/feeds"), want: public(200)},
		{route: "GET /v1/feeds/{feed}/items", path: fixed("/v1/feeds/world/items"), want: public(200)},

		{route: "GET /v1/apps", path: fixed("/v1/apps"), want: anyEditor(200)},
		// Triggering: a sync of app A (no app named), a dry run, one of B.
		{route: "POST /v1/syncs", path: fixed("/v1/syncs"), body: `{"feeds":["world"]}`, want: appA(202, 403)},
		{route: "POST /v1/syncs", path: fixed("/v1/syncs?dry_run=true"), body: `{"feeds":["world"]}`, want: appA(200, 403)},
		{route: "GET /v1/syncs", path: fixed("/v1/syncs?state=scheduled"), want: anyEditor(200)},
		{route: "GET /v1/syncs", path: fixed("/v1/syncs?state=scheduled&app=sports"), want: appB(200, 403)},
		{route: "GET /v1/syncs", path: fixed("/v1/syncs?state=scheduled&app=nope"), want: [callers]int{401, 403, 403, 400, 403, 400}},
		// Another app's sync is not found, not forbidden.
		{route: "GET /v1/syncs/{id}", path: fixed("/v1/syncs/" + started), want: appA(200, 404)},
		{route: "GET /v1/syncs/{id}", path: func(t *testing.T, m *matrix, _ int) string { return "/v1/syncs/" + m.sync(t, true) },
			want: appA(200, 404)},
		{route: "DELETE /v1/syncs/{id}", path: func(t *testing.T, m *matrix, _ int) string { return "/v1/syncs/" + m.sync(t, true) },
			want: appA(204, 404)},
		{route: "DELETE /v1/syncs/{id}", path: fixed("/v1/syncs/" + started), want: appA(409, 404)},
		// The feed catalogue is shared: polling and editing ignore apps.
		{route: "POST /v1/feeds/{feed}/poll", path: fixed("/v1/feeds/world/poll"), want: anyEditor(202)},
		{route: "GET /v1/console/overview", path: fixed("/v1/console/overview"), want: anyEditor(200)},
		// Time-to-fresh is per feed, and feeds are shared: any editor.
		{route: "GET /v1/stats/freshness", path: fixed("/v1/stats/freshness?feed=world"), want: anyEditor(200)},
		{route: "GET /v1/console/overview", path: fixed("/v1/console/overview?app=default"), want: appA(200, 403)},
		{route: "GET /v1/console/overview", path: fixed("/v1/console/overview?app=sports"), want: appB(200, 403)},
		{route: "PUT /v1/admin/feeds/{feed}", path: func(_ *testing.T, _ *matrix, c int) string { return fmt.Sprintf("/v1/admin/feeds/put-%d", c) },
			body: `{"title":"T","url":"https://example.com/t.xml"}`, want: adminOnly(201)},
		{route: "DELETE /v1/admin/feeds/{feed}", path: func(t *testing.T, m *matrix, c int) string {
			id := fmt.Sprintf("del-%d", c)
			r := m.do(t, "PUT", "/v1/admin/feeds/{feed}", "/v1/admin/feeds/"+id, m.keys[adminAll],
				`{"title":"T","url":"https://example.com/t.xml"}`)
			if r.code != http.StatusCreated {
				t.Fatalf("put feed %s: got %d %s", id, r.code, r.body)
			}
			return "/v1/admin/feeds/" + id
		}, want: adminOnly(204)},
		// Apps: an admin limited to apps sees and edits only its own; only
		// an admin for every app creates or deletes one.
		{route: "GET /v1/admin/apps", path: fixed("/v1/admin/apps"), want: adminOnly(200)},
		{route: "GET /v1/admin/apps/{app}", path: fixed("/v1/admin/apps/default"), want: adminOnly(200)},
		{route: "GET /v1/admin/apps/{app}", path: fixed("/v1/admin/apps/sports"), want: [callers]int{401, 403, 403, 403, 404, 200}},
		{route: "PUT /v1/admin/apps/{app}", path: fixed("/v1/admin/apps/default"),
			body: `{"name":"News","fcm":{"credentials_file":"/dev/null","project_id":"news"}}`, want: adminOnly(200)},
		{route: "PUT /v1/admin/apps/{app}", path: fixed("/v1/admin/apps/sports"),
			body: `{"name":"Sports","fcm":{"credentials_file":"/dev/null","project_id":"sports"}}`, want: [callers]int{401, 403, 403, 403, 404, 200}},
		{route: "PUT /v1/admin/apps/{app}", path: func(_ *testing.T, _ *matrix, c int) string { return fmt.Sprintf("/v1/admin/apps/new-%d", c) },
			body: `{"name":"New","fcm":{"credentials_file":"/dev/null"}}`, want: [callers]int{401, 403, 403, 403, 403, 201}},
		{route: "DELETE /v1/admin/apps/{app}", path: func(t *testing.T, m *matrix, c int) string {
			id := fmt.Sprintf("del-%d", c)
			r := m.do(t, "PUT", "/v1/admin/apps/{app}", "/v1/admin/apps/"+id, m.keys[adminAll],
				`{"name":"Gone","fcm":{"credentials_file":"/dev/null"}}`)
			if r.code != http.StatusCreated {
				t.Fatalf("put app %s: got %d %s", id, r.code, r.body)
			}
			return "/v1/admin/apps/" + id
		}, want: [callers]int{401, 403, 403, 403, 403, 204}},
	}

	var routes []string
	err := chi.Walk(m.srv.Router(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes = append(routes, method+" "+strings.ReplaceAll(route, "/*/", "/"))
		return nil
	})
	if err != nil {
		t.Fatalf("walk routes: %v", err)
	}
	for _, r := range routes {
		if !slices.ContainsFunc(cases, func(c matrixCase) bool { return c.route == r }) {
			t.Errorf("route %s has no row in the route × key matrix: say which keys may call it", r)
		}
	}
	for _, c := range cases {
		if !slices.Contains(routes, c.route) {
			t.Errorf("matrix row %s: the router serves no such route", c.route)
		}
	}
	for _, c := range cases {
		method, pattern, _ := strings.Cut(c.route, " ")
		for caller := range callers {
			path := c.path(t, m, caller)
			doc := pattern
			if pattern == "/console/*" || pattern == "/console" || pattern == "/" || pattern == "/metrics" {
				doc = "" // not JSON
			}
			r := m.do(t, method, doc, path, m.keys[caller], c.body)
			if r.code != c.want[caller] {
				t.Errorf("%s %s as %s: got %d, want %d (%s)", method, path, callerNames[caller], r.code, c.want[caller], r.body)
			}
		}
	}
}

// TestAppScopedAnswers checks what limited keys see in the answers the
// matrix only counts: the apps listed, the scheduled syncs listed, and the
// app in the audit record.
func TestAppScopedAnswers(t *testing.T) {
	t.Parallel()
	m := setupMatrix(t)
	id := m.sync(t, true)

	type appsJSON struct{ Apps []struct{ ID, Name string } }
	for caller, want := range map[int]string{editorA: "default", editorB: "sports", editorAll: "default,sports", adminA: "default"} {
		got := decode[appsJSON](t, m.do(t, "GET", "/v1/apps", "/v1/apps", m.keys[caller], nil))
		var ids []string
		for _, a := range got.Apps {
			ids = append(ids, a.ID)
		}
		if strings.Join(ids, ",") != want {
			t.Errorf("GET /v1/apps as %s: got %v, want %s", callerNames[caller], ids, want)
		}
	}

	type listJSON struct{ Syncs []struct{ ID string } }
	for caller, want := range map[int]int{editorA: 1, editorB: 0, editorAll: 1} {
		got := decode[listJSON](t, m.do(t, "GET", "/v1/syncs", "/v1/syncs?state=scheduled", m.keys[caller], nil))
		if len(got.Syncs) != want {
			t.Errorf("scheduled syncs as %s: got %v, want %d", callerNames[caller], got.Syncs, want)
		}
	}
	if got := decode[listJSON](t, m.do(t, "GET", "/v1/syncs", "/v1/syncs?state=scheduled&app=sports", m.keys[editorAll], nil)); len(got.Syncs) != 0 {
		t.Errorf("scheduled syncs of app sports: got %v, want none (the sync is app default's)", got.Syncs)
	}

	entries, err := audit.New(m.rdb).Read(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || entries[len(entries)-1].Action != "sync.schedule" || entries[len(entries)-1].App != apps.Default ||
		!strings.HasPrefix(entries[len(entries)-1].Target, id) {
		t.Fatalf("audit: got %+v, want sync.schedule of %s with app default last", entries, id)
	}
}
