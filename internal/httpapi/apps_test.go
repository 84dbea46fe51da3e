package httpapi_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/audit"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

// openApps opens an app catalogue on rdb without an apps file (the api's
// default app). Its loop is not started: edits through it apply at once.
func openApps(tb testing.TB, rdb redis.UniversalClient) *apps.Catalogue {
	tb.Helper()
	c, err := apps.NewCatalogue(tb.Context(), service.Archetype{}, rdb, apps.Config{})
	if err != nil {
		tb.Fatalf("app catalogue: %v", err)
	}
	return c
}

func TestAdminApps(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	const list, one = "/v1/admin/apps", "/v1/admin/apps/{app}"
	// The credential files hold secrets; the api never reads or returns them.
	const secret = "-----BEGIN PRIVATE KEY-----s3cr3t"
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "sports.p8")
	if err := os.WriteFile(keyFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	sports := map[string]any{
		"name":   "Sports",
		"apns":   map[string]any{"topic": "com.example.sports", "key_file": keyFile, "key_id": "ABCDEFGHIJ", "team_id": "TEAM123456"},
		"fcm":    map[string]any{"credentials_file": filepath.Join(dir, "sports-fcm.json"), "project_id": "sports-prod"},
		"policy": map[string]any{"ios": map[string]any{"limit": 2, "min_gap": "15m"}},
		"feeds":  []string{"world"},
	}
	noSecret := func(t *testing.T, r response) {
		t.Helper()
		if strings.Contains(string(r.body), "s3cr3t") {
			t.Fatalf("a response carries the credential's content: %s", r.body)
		}
	}

	// Without an apps file, the api's one app is default.
	r := b.do(t, "GET", list, "/v1/admin/apps", b.adminKey, nil)
	if got := decode[struct{ Apps []apps.App }](t, r); r.code != 200 || len(got.Apps) != 1 || got.Apps[0].ID != apps.Default {
		t.Fatalf("list: %d %s, want the default app", r.code, r.body)
	}

	r = b.do(t, "PUT", one, "/v1/admin/apps/sports", b.adminKey, sports)
	noSecret(t, r)
	if got := decode[apps.App](t, r); r.code != 201 || got.ID != "sports" || got.APNs.KeyFile != keyFile || got.Policy.IOS.Limit != 2 {
		t.Fatalf("put new: %d %s, want 201 with the app", r.code, r.body)
	}
	sports["id"], sports["name"] = "sports", "Sports Daily"
	if r := b.do(t, "PUT", one, "/v1/admin/apps/sports", b.adminKey, sports); r.code != 200 {
		t.Fatalf("put again: %d %s, want 200", r.code, r.body)
	}
	if a, ok := b.apps.Current().Get("sports"); !ok || a.Name != "Sports Daily" {
		t.Fatalf("catalogue has %+v, want the replaced app", a)
	}
	r = b.do(t, "GET", one, "/v1/admin/apps/sports", b.adminKey, nil)
	noSecret(t, r)
	if got := decode[apps.App](t, r); r.code != 200 || got.Name != "Sports Daily" || got.FCM.ProjectID != "sports-prod" {
		t.Fatalf("get: %d %s", r.code, r.body)
	}
	r = b.do(t, "GET", list, "/v1/admin/apps", b.adminKey, nil)
	noSecret(t, r)
	if got := decode[struct{ Apps []apps.App }](t, r); len(got.Apps) != 2 || got.Apps[1].ID != "sports" {
		t.Fatalf("list: %s, want default and sports", r.body)
	}
	if r := b.do(t, "GET", one, "/v1/admin/apps/nope", b.adminKey, nil); r.code != 404 {
		t.Fatalf("get unknown: %d, want 404", r.code)
	}

	with := func(k string, v any) map[string]any {
		m := map[string]any{"name": "X", "fcm": map[string]any{"credentials_file": "/run/x.json"}}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tt := range []struct {
		name, path, field string
		body              any
	}{
		{"unknown field", "/v1/admin/apps/x", "colour", with("colour", "red")},
		{"unknown nested field", "/v1/admin/apps/x", "fcm.secret", with("fcm", map[string]any{"credentials_file": "f", "secret": "s"})},
		{"case-folded field", "/v1/admin/apps/x", "Name", map[string]any{"Name": "X", "fcm": map[string]any{"credentials_file": "f"}}},
		{"no provider", "/v1/admin/apps/x", "apns/fcm", with("fcm", nil)},
		{"no name", "/v1/admin/apps/x", "name", with("name", nil)},
		{"apns without topic", "/v1/admin/apps/x", "apns.topic", with("apns", map[string]any{"cert_file": "c.p12"})},
		{"negative limit", "/v1/admin/apps/x", "policy.android", with("policy", map[string]any{"android": map[string]any{"limit": -1}})},
		{"bad duration", "/v1/admin/apps/x", "", with("policy", map[string]any{"ios": map[string]any{"window": "soon"}})},
		{"unknown feed", "/v1/admin/apps/x", "feeds", with("feeds", []string{"world", "weather"})},
		{"id differs", "/v1/admin/apps/x", "id", with("id", "y")},
		{"bad id", "/v1/admin/apps/Bad_Id", "id", with("name", "X")},
		{"control character", "/v1/admin/apps/x", "name", with("name", "a\nb")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, "PUT", one, tt.path, b.adminKey, tt.body)
			if r.code != 400 {
				t.Fatalf("got %d %s, want 400", r.code, r.body)
			}
			if e := decode[errorJSON](t, r); e.Error.Field != tt.field {
				t.Fatalf("field: got %q (%s), want %q", e.Error.Field, e.Error.Message, tt.field)
			}
		})
	}
	if _, ok := b.apps.Current().Get("x"); ok {
		t.Fatal("a refused PUT changed the catalogue")
	}

	// Keys: none is 401, an editor's is 403, on every app route.
	for _, rt := range []struct{ method, pattern, path string }{
		{"GET", list, "/v1/admin/apps"}, {"GET", one, "/v1/admin/apps/sports"},
		{"PUT", one, "/v1/admin/apps/sports"}, {"DELETE", one, "/v1/admin/apps/sports"},
	} {
		if r := b.do(t, rt.method, rt.pattern, rt.path, "", sports); r.code != 401 {
			t.Fatalf("%s %s without a key: %d, want 401", rt.method, rt.path, r.code)
		}
		if r := b.do(t, rt.method, rt.pattern, rt.path, b.editKey, sports); r.code != 403 {
			t.Fatalf("%s %s with an editor key: %d, want 403", rt.method, rt.path, r.code)
		}
	}

	if r := b.do(t, "DELETE", one, "/v1/admin/apps/sports", b.adminKey, nil); r.code != 204 {
		t.Fatalf("delete: %d %s, want 204", r.code, r.body)
	}
	if r := b.do(t, "DELETE", one, "/v1/admin/apps/sports", b.adminKey, nil); r.code != 404 {
		t.Fatalf("delete again: %d, want 404", r.code)
	}
	if r := b.do(t, "DELETE", one, "/v1/admin/apps/default", b.adminKey, nil); r.code != 409 {
		t.Fatalf("delete of the last app: %d %s, want 409", r.code, r.body)
	}
	if _, ok := b.apps.Current().Get(apps.Default); !ok {
		t.Fatal("the last app is gone")
	}

	entries, err := audit.New(b.rdb).Read(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Action+" "+e.Target+" "+e.Key)
	}
	want := []string{"app.put sports ops-admin", "app.put sports ops-admin", "app.delete sports ops-admin"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("audit records %q, want %q (oldest first)", got, want)
	}
}

// TestRunAppsAcrossReplicas runs two api processes on one Redis with one
// apps file: an admin PUT on one is served by the other within seconds.
func TestRunAppsAcrossReplicas(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	m, err := auth.Mint("ops", auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keysFile, appsFile := dir+"/keys.txt", dir+"/apps.yaml"
	if err := writeFile(keysFile, m.Line+"\n"); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(appsFile, "apps:\n  - {id: news, name: News, fcm: {credentials_file: /run/news.json}}\n"); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"NUDGE_REDIS_URL": srv.URL(), "NUDGE_API_KEYS_FILE": keysFile, "NUDGE_APPS_FILE": appsFile}
	one, _, _ := start(t, env)
	two, _, _ := start(t, env)
	call := func(method, url, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+m.Key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := call("GET", two+"/v1/admin/apps", ""); code != 200 || !strings.Contains(body, `"id":"news"`) || strings.Contains(body, `"id":"default"`) {
		t.Fatalf("apps from the file: %d %s", code, body)
	}
	if code, body := call("PUT", one+"/v1/admin/apps/sports", `{"name":"Sports","fcm":{"credentials_file":"/run/sports.json"}}`); code != 201 {
		t.Fatalf("put: %d %s", code, body)
	}
	await.Within(t, 10*time.Second, "the PUT on replica one to be served by replica two", func() bool {
		code, _ := call("GET", two+"/v1/admin/apps/sports", "")
		return code == 200
	})
}
