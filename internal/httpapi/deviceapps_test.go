package httpapi_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
)

// TestDeviceAndSyncApps: registration takes an app (default "default"),
// refuses an unknown app and a feed the app does not offer, keeps one
// device per app for the same token, and PATCH cannot move a device to
// another app. A sync names its app: an unknown app or a feed it does not
// offer is a 400, its dry run counts only the app's subscribers, and its
// progress shows the app.
func TestDeviceAndSyncApps(t *testing.T) {
	t.Parallel()
	set := apps.MustSet(
		apps.App{ID: apps.Default, Name: "News", FCM: &apps.FCM{CredentialsFile: "/dev/null"}},
		apps.App{ID: "sports", Name: "Sports", FCM: &apps.FCM{CredentialsFile: "/dev/null"}, Feeds: []string{"world"}},
	)
	b := setup(t, setupOpts{apps: set})
	tok := fcmToken(1)
	withApp := func(app string, feeds ...string) map[string]any {
		m := fcmReg(tok, feeds...)
		if app != "" {
			m["app"] = app
		}
		return m
	}
	refused := func(t *testing.T, r response, field, msg string) {
		t.Helper()
		e := decode[errorJSON](t, r)
		if r.code != http.StatusBadRequest || e.Error.Field != field || (msg != "" && e.Error.Message != msg) {
			t.Fatalf("got %d %s, want 400 on %s %q", r.code, r.body, field, msg)
		}
	}

	def := b.register(t, withApp("", "world"), http.StatusCreated)
	if def.App != apps.Default {
		t.Errorf("registration without app: app %q, want default", def.App)
	}
	refused(t, b.do(t, "POST", "/v1/devices", "/v1/devices", "", withApp("radio", "world")), "app", "")
	refused(t, b.do(t, "POST", "/v1/devices", "/v1/devices", "", withApp("sports", "tech")), "feeds", "feeds: feed tech is not offered by app sports")
	sp := b.register(t, withApp("sports", "world"), http.StatusCreated)
	if sp.ID == def.ID || sp.App != "sports" {
		t.Fatalf("same token in sports: device %d app %q; want a second device of app sports (default is %d)", sp.ID, sp.App, def.ID)
	}
	if again := b.register(t, withApp("sports", "world"), http.StatusOK); again.ID != sp.ID {
		t.Errorf("re-registration in sports: device %d, want %d", again.ID, sp.ID)
	}
	path := "/v1/devices/" + strconv.FormatUint(sp.ID, 10)
	sp = b.register(t, withApp("sports", "world"), http.StatusOK) // fresh secret for the calls below
	if got := decode[deviceJSON](t, b.do(t, "GET", "/v1/devices/{id}", path, sp.Secret, nil)); got.App != "sports" {
		t.Errorf("GET device: app %q, want sports", got.App)
	}
	refused(t, b.do(t, "PATCH", "/v1/devices/{id}", path, sp.Secret, map[string]any{"app": apps.Default}), "app", "")
	if r := b.do(t, "PATCH", "/v1/devices/{id}", path, sp.Secret, map[string]any{"app": "sports", "locale": "de-DE"}); r.code != http.StatusOK {
		t.Errorf("PATCH naming the device's own app: %d %s, want 200", r.code, r.body)
	}

	sync := func(app string, feeds ...string) map[string]any {
		m := map[string]any{"feeds": feeds}
		if app != "" {
			m["app"] = app
		}
		return m
	}
	refused(t, b.do(t, "POST", "/v1/syncs", "/v1/syncs", b.editKey, sync("radio", "world")), "app", "")
	refused(t, b.do(t, "POST", "/v1/syncs", "/v1/syncs", b.editKey, sync("sports", "tech")), "feeds", "feed tech is not offered by app sports")
	for _, app := range []string{"", apps.Default, "sports"} {
		r := b.do(t, "POST", "/v1/syncs", "/v1/syncs?dry_run=true", b.editKey, sync(app, "world"))
		if got := decode[struct{ Targeted int64 }](t, r); r.code != http.StatusOK || got.Targeted != 1 {
			t.Errorf("dry run for app %q: %d %s, want 1 device (its own app's)", app, r.code, r.body)
		}
	}
	r := b.do(t, "POST", "/v1/syncs", "/v1/syncs", b.editKey, sync("sports", "world"))
	if r.code != http.StatusAccepted {
		t.Fatalf("sync for sports: %d %s", r.code, r.body)
	}
	id := decode[struct{ ID string }](t, r).ID
	got := decode[struct{ App string }](t, b.do(t, "GET", "/v1/syncs/{id}", "/v1/syncs/"+id, b.editKey, nil))
	if got.App != "sports" {
		t.Errorf("GET sync: app %q, want sports", got.App)
	}
	later := sync("sports", "world")
	later["send_at"] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	r = b.do(t, "POST", "/v1/syncs", "/v1/syncs", b.editKey, later)
	if r.code != http.StatusAccepted {
		t.Fatalf("scheduled sync for sports: %d %s", r.code, r.body)
	}
	id = decode[struct{ ID string }](t, r).ID
	got = decode[struct{ App string }](t, b.do(t, "GET", "/v1/syncs/{id}", "/v1/syncs/"+id, b.editKey, nil))
	if got.App != "sports" {
		t.Errorf("GET scheduled sync: app %q, want sports", got.App)
	}
}
