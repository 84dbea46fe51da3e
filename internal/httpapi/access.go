package httpapi

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"strings"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/fanout"
)

// Per-app access. An API key may be limited to apps (the keys file's fourth
// column). The rules, for every route that touches an app's data:
//
//   - acting for an app (a sync's or an audience's app, ?app=): a key
//     outside its apps is 403, checked before whether the app exists, so
//     the answer tells nothing about other apps;
//   - reading something by id (a sync): another app's is 404, as if it did
//     not exist, so ids do not leak;
//   - listing (syncs, apps, stats): only the key's apps are in the answer;
//   - the shared feed catalogue (feeds, poll-now) is not per app: any
//     editor polls, any admin edits, whatever its apps;
//   - creating and deleting apps (admin app routes) need an admin key for
//     every app (requireAllApps); a limited admin reads and edits its own
//     apps only (seesApp, 404 for another).

// appNote carries, through one request, the app the request acts for, so
// that its audit record names it.
type appNote struct{ app string }

type appNoteCtx struct{}

// noteApps is middleware that gives each key-protected request a place for
// the app its guard checks (allowApp, seesApp), read by audit.
func noteApps(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), appNoteCtx{}, &appNote{})))
	})
}

// auditApp is the app the request was checked for, or "".
func auditApp(ctx context.Context) string {
	if n, ok := ctx.Value(appNoteCtx{}).(*appNote); ok {
		return n.app
	}
	return ""
}

func note(r *http.Request, app string) {
	if n, ok := r.Context().Value(appNoteCtx{}).(*appNote); ok {
		n.app = app
	}
}

// knownApps are the current apps: Deps.Apps', or without a catalogue the
// single app apps.Default (credentials are the dispatcher's business, so
// the api does not build it from settings).
func (s *Server) knownApps() []apps.App {
	if s.deps.Apps != nil {
		if set := s.deps.Apps.Current(); set != nil {
			return set.All()
		}
	}
	return []apps.App{{ID: apps.Default, Name: "Default app"}}
}

// eventApp is the app of a sync; a feed change's event (no app, every
// app's subscribers) is listed with the default app's.
func eventApp(ev fanout.Event) string { return cmp.Or(ev.App, apps.Default) }

// deviceApp is the app of a device.
func deviceApp(d devices.Device) string { return cmp.Or(d.App, apps.Default) }

// allowApp checks that the request's key may act for app (empty: the
// default app) and that the app exists: 403 for an app outside the key's,
// then 400 on field for an unknown one. It notes the app for the audit
// record.
func (s *Server) allowApp(r *http.Request, field, app string) error {
	app = cmp.Or(app, apps.Default)
	k, _ := auth.KeyFrom(r.Context())
	if !k.AllowsApp(app) {
		return &HTTPError{Code: http.StatusForbidden, Kind: "forbidden",
			Msg: "this API key may not act for app " + app + "; its apps: " + keyApps(k)}
	}
	if !slices.ContainsFunc(s.knownApps(), func(a apps.App) bool { return a.ID == app }) {
		return badRequest(field, field+": unknown app "+app)
	}
	note(r, app)
	return nil
}

// seesApp reports whether the request's key may see what belongs to app;
// callers answer 404 when it may not. It notes the app for the audit record.
func seesApp(r *http.Request, app string) bool {
	app = cmp.Or(app, apps.Default)
	k, _ := auth.KeyFrom(r.Context())
	if !k.AllowsApp(app) {
		return false
	}
	note(r, app)
	return true
}

// requireAllApps refuses (403) a key limited to apps: creating or deleting
// an app takes a key for every app (for the admin app routes).
func requireAllApps(r *http.Request) error {
	k, _ := auth.KeyFrom(r.Context())
	if k.AllApps() {
		return nil
	}
	return &HTTPError{Code: http.StatusForbidden, Kind: "forbidden",
		Msg: "only an API key for every app may create or delete apps; this one is limited to " + keyApps(k)}
}

func keyApps(k auth.Key) string {
	if k.AllApps() {
		return "every app"
	}
	return strings.Join(k.Apps, ",")
}

// readScope is the apps a listing reads: ?app= when given (allowApp), else
// every app the key may see; nil means every app.
func (s *Server) readScope(r *http.Request) ([]string, error) {
	if app := r.URL.Query().Get("app"); app != "" {
		if err := s.allowApp(r, "app", app); err != nil {
			return nil, err
		}
		return []string{app}, nil
	}
	k, _ := auth.KeyFrom(r.Context())
	return k.Apps, nil
}

// inScope reports whether app is in a readScope answer.
func inScope(scope []string, app string) bool {
	return scope == nil || slices.Contains(scope, cmp.Or(app, apps.Default))
}

type appView struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// listApps is GET /v1/apps: the ids and names of the apps the key may act
// for (what the console's app switcher offers). No settings: those are
// the admin routes'.
func (s *Server) listApps(w http.ResponseWriter, r *http.Request) error {
	k, _ := auth.KeyFrom(r.Context())
	out := []appView{}
	for _, a := range s.knownApps() {
		if k.AllowsApp(a.ID) {
			out = append(out, appView{ID: a.ID, Name: cmp.Or(a.Name, a.ID)})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"apps": out})
	return nil
}
