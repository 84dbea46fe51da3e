package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/stacktest"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/httpapi"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

type setupOpts struct {
	rateLimit      int
	keyLines       []string      // more lines of the API keys file
	apps           *apps.Set     // apps put into the catalogue (nil: the default app only)
	itemCacheBytes int64         // 0: the default; negative: no item cache
	requestTimeout time.Duration // 0: the default (1s)
}

type bundle struct {
	srv      *httpapi.Server
	pipe     *httpapi.Stores
	apps     *apps.Catalogue
	rdb      *redis.Client
	logs     *stacktest.Buffer
	adminKey string
	editKey  string
}

func setup(t *testing.T, o setupOpts) *bundle {
	t.Helper()
	rdb := redistest.Start(t)
	logs := &stacktest.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	admin, err := auth.Mint("ops-admin", auth.RoleAdmin)
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	editor, err := auth.Mint("news-desk", auth.RoleEditor)
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	lines := append([]string{admin.Line, editor.Line}, o.keyLines...)
	ks, err := auth.ParseKeys(strings.NewReader(strings.Join(lines, "\n")+"\n"), "keys.txt")
	if err != nil {
		t.Fatalf("parse keys: %v", err)
	}
	pipe, err := httpapi.OpenStores(t.Context(), service.Archetype{Logger: log}, rdb, 4, apps.Config{})
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	for _, f := range []catalog.Feed{
		{ID: "world", Title: "World", URL: "https://example.com/world.xml"},
		{ID: "tech", Title: "Tech", URL: "https://example.com/tech.xml", PollInterval: time.Minute},
	} {
		if _, err := pipe.Catalog.Put(t.Context(), f); err != nil {
			t.Fatalf("put feed: %v", err)
		}
	}
	pr := prometheus.NewRegistry()
	if o.apps != nil {
		for _, app := range o.apps.All() {
			if _, err := pipe.Apps.Put(t.Context(), app); err != nil {
				t.Fatalf("put app %s: %v", app.ID, err)
			}
		}
	}
	srv, err := httpapi.NewServer(service.Archetype{Logger: log, Registerer: pr}, pipe.Wire(httpapi.Deps{Redis: rdb, Keys: ks, Gatherer: pr}),
		httpapi.Config{RegisterRateLimit: o.rateLimit, ItemCacheBytes: o.itemCacheBytes, RequestTimeout: o.requestTimeout})
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	return &bundle{srv: srv, pipe: pipe, apps: pipe.Apps, rdb: rdb, logs: logs, adminKey: admin.Key, editKey: editor.Key}
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

// do sends a request through the real router. pattern names the documented
// route; the response is checked against docs/openapi.yaml.
func (b *bundle) do(t *testing.T, method, pattern, path, bearer string, body any) response {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req := httptest.NewRequestWithContext(t.Context(), method, path, rd)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	res := response{code: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	if pattern != "" {
		checkResponse(t, method, pattern, res.code, res.body)
	}
	return res
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

type deviceJSON struct {
	ID             uint64   `json:"id"`
	App            string   `json:"app"`
	Secret         string   `json:"secret"`
	Provider       string   `json:"provider"`
	Token          string   `json:"token"`
	Platform       string   `json:"platform"`
	Environment    string   `json:"environment"`
	Feeds          []string `json:"feeds"`
	BackgroundSync struct {
		Enabled     bool   `json:"enabled"`
		MinInterval string `json:"min_interval"`
	} `json:"background_sync"`
	Locale string `json:"locale"`
}

type errorJSON struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

// fcmToken returns a plausible FCM registration token (152 characters).
func fcmToken(n int) string {
	head := fmt.Sprintf("c%021d", n)
	return head + ":APA91b" + strings.Repeat("Xy7_-", 124/5) + strings.Repeat("z", 152-len(head)-7-124/5*5)
}

// apnsToken returns a 64-hex-character APNs device token.
func apnsToken(n int) string { return fmt.Sprintf("%064x", n+1) }

func fcmReg(tok string, feeds ...string) map[string]any {
	return map[string]any{"provider": "fcm", "token": tok, "platform": "android", "feeds": feeds,
		"background_sync": map[string]any{"enabled": true, "min_interval": "30m"},
		"locale":          "en-US", "timezone": "Europe/Berlin", "app_version": "1.4.0"}
}

func (b *bundle) register(t *testing.T, body map[string]any, want int) deviceJSON {
	t.Helper()
	r := b.do(t, "POST", "/v1/devices", "/v1/devices", "", body)
	if r.code != want {
		t.Fatalf("register: got %d %s, want %d", r.code, r.body, want)
	}
	return decode[deviceJSON](t, r)
}

func bitSet(t *testing.T, rdb *redis.Client, feed string, id uint64) bool {
	t.Helper()
	k, bit := keys.SubChunkOf(id)
	v, err := rdb.GetBit(t.Context(), keys.SubChunk(feed, k), bit).Result()
	if err != nil {
		t.Fatalf("getbit: %v", err)
	}
	return v == 1
}

func TestHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	if r := b.do(t, "GET", "/healthz", "/healthz", "", nil); r.code != 200 {
		t.Fatalf("healthz: got %d, want 200", r.code)
	}
	if r := b.do(t, "GET", "/readyz", "/readyz", "", nil); r.code != 200 {
		t.Fatalf("readyz: got %d, want 200", r.code)
	}
	b.do(t, "GET", "/v1/feeds", "/v1/feeds", "", nil)
	r := b.do(t, "GET", "/metrics", "/metrics", "", nil)
	if r.code != 200 {
		t.Fatalf("metrics: got %d, want 200", r.code)
	}
	for _, want := range []string{
		`nudge_http_requests_total{code="200",method="GET",route="/v1/feeds"} 1`,
		`nudge_http_request_duration_seconds_count{method="GET",route="/readyz"} 1`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Fatalf("metrics lack %q:\n%s", want, r.body)
		}
	}
}

func TestReadyzFailsWithoutRedis(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	dead := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t)), MaxRetries: -1})
	t.Cleanup(func() { _ = dead.Close() })
	pipe, err := httpapi.OpenStores(t.Context(), service.Archetype{}, dead, 0, apps.Config{})
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	pr := prometheus.NewRegistry()
	srv, err := httpapi.NewServer(service.Archetype{Logger: slog.New(slog.DiscardHandler), Registerer: pr}, pipe.Wire(httpapi.Deps{Redis: dead, Keys: &auth.Keys{}, Gatherer: pr, Apps: b.apps}), httpapi.Config{})
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	b.srv = srv
	if r := b.do(t, "GET", "/readyz", "/readyz", "", nil); r.code != 503 {
		t.Fatalf("readyz without redis: got %d, want 503", r.code)
	}
	if r := b.do(t, "GET", "/healthz", "/healthz", "", nil); r.code != 200 {
		t.Fatalf("healthz without redis: got %d, want 200", r.code)
	}
}

func TestRegisterAndReadBack(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	tok := fcmToken(1)
	d := b.register(t, fcmReg(tok, "world", "tech", "world"), 201)
	if d.ID == 0 || d.Secret == "" {
		t.Fatalf("register: got id %d secret %q, want both set", d.ID, d.Secret)
	}
	if got, want := strings.Join(d.Feeds, ","), "world,tech"; got != want {
		t.Fatalf("feeds: got %s, want %s", got, want)
	}
	if d.BackgroundSync.MinInterval != "30m0s" || !d.BackgroundSync.Enabled {
		t.Fatalf("background_sync: got %+v, want enabled 30m0s", d.BackgroundSync)
	}
	if !bitSet(t, b.rdb, "world", d.ID) || !bitSet(t, b.rdb, "tech", d.ID) {
		t.Fatalf("subscription bits not set for device %d", d.ID)
	}
	h, err := b.rdb.HGetAll(t.Context(), keys.Device(d.ID)).Result()
	if err != nil {
		t.Fatalf("hgetall: %v", err)
	}
	if h["tk"] != tok || h["pv"] != "fcm" || h["pl"] != "android" || h["en"] != "production" || h["fd"] != "world,tech" ||
		h["bg"] != "1" || h["mi"] != "1800" || h["lo"] != "en-US" || len(h["sh"]) != 32 {
		t.Fatalf("device hash: got %q", h)
	}
	if strings.Contains(h["sh"], d.Secret) {
		t.Fatalf("device hash stores the raw secret")
	}
	path := fmt.Sprintf("/v1/devices/%d", d.ID)
	r := b.do(t, "GET", "/v1/devices/{id}", path, d.Secret, nil)
	if r.code != 200 {
		t.Fatalf("get: got %d %s, want 200", r.code, r.body)
	}
	if got := decode[deviceJSON](t, r); got.ID != d.ID || got.Token != tok || got.Secret != "" {
		t.Fatalf("get: got %+v, want id %d, the token, no secret", got, d.ID)
	}
	if strings.Contains(b.logs.String(), tok) {
		t.Fatalf("a raw push token reached the logs")
	}
}

func TestReRegistrationKeepsIDAndRotatesSecret(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	tok := apnsToken(7)
	reg := map[string]any{"provider": "apns", "token": strings.ToUpper(tok), "platform": "ios", "environment": "sandbox", "feeds": []string{"world"}}
	first := b.register(t, reg, 201)
	if first.Token != tok {
		t.Fatalf("apns token: got %s, want lower-case %s", first.Token, tok)
	}
	reg["token"] = tok
	reg["feeds"] = []string{"tech"}
	second := b.register(t, reg, 200)
	if second.ID != first.ID {
		t.Fatalf("re-registration: got id %d, want %d", second.ID, first.ID)
	}
	if second.Secret == first.Secret {
		t.Fatalf("re-registration returned the old secret")
	}
	path := fmt.Sprintf("/v1/devices/%d", first.ID)
	if r := b.do(t, "GET", "/v1/devices/{id}", path, first.Secret, nil); r.code != 404 {
		t.Fatalf("old secret after re-registration: got %d, want 404", r.code)
	}
	if r := b.do(t, "GET", "/v1/devices/{id}", path, second.Secret, nil); r.code != 200 {
		t.Fatalf("new secret: got %d, want 200", r.code)
	}
	if bitSet(t, b.rdb, "world", first.ID) || !bitSet(t, b.rdb, "tech", first.ID) {
		t.Fatalf("re-registration did not move the subscription from world to tech")
	}
	n, err := b.rdb.Keys(t.Context(), "dev:*").Result()
	if err != nil || len(n) != 1 {
		t.Fatalf("device hashes: got %v (%v), want exactly 1", n, err)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	tok := fcmToken(2)
	with := func(k string, v any) map[string]any {
		m := fcmReg(tok, "world")
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name      string
		body      any
		wantCode  int
		wantError string
		wantField string
	}{
		{"malformed json", `{"provider": "fcm",`, 400, "malformed", ""},
		{"not an object", `[1,2]`, 400, "malformed", ""},
		{"null body", `null`, 400, "malformed", ""},
		{"null after space", " \n null", 400, "malformed", ""},
		{"case-folded field", `{"provider":"fcm","Token":"x","platform":"android"}`, 400, "unknown_field", "Token"},
		{"case-folded nested field", `{"provider":"fcm","token":"x","platform":"android","background_sync":{"Enabled":false}}`, 400, "unknown_field", "background_sync.Enabled"},
		{"duplicate field", `{"provider":"fcm","token":"x","token":"y","platform":"android"}`, 400, "invalid_field", "token"},
		{"empty body", ``, 400, "malformed", ""},
		{"trailing data", `{"provider":"fcm"} {}`, 400, "malformed", ""},
		{"over 16 KiB", `{"provider":"fcm","token":"` + strings.Repeat("a", 17<<10) + `"}`, 413, "too_large", ""},
		{"unknown field", with("colour", "blue"), 400, "unknown_field", "colour"},
		{"wrong type feeds", with("feeds", "world"), 400, "invalid_field", "feeds"},
		{"wrong type enabled", with("background_sync", map[string]any{"enabled": "yes"}), 400, "invalid_field", "background_sync.enabled"},
		{"unknown feed", with("feeds", []string{"world", "sports"}), 400, "invalid_field", "feeds"},
		{"malformed feed id", with("feeds", []string{"World News"}), 400, "invalid_field", "feeds"},
		{"too many feeds", with("feeds", []string{"a", "b", "c", "d", "e"}), 400, "invalid_field", "feeds"},
		{"missing token", with("token", nil), 400, "invalid_field", "token"},
		{"missing provider", with("provider", nil), 400, "invalid_field", "provider"},
		{"unknown provider", with("provider", "hms"), 400, "invalid_field", "provider"},
		{"fcm token too short", with("token", "abc:APA91b"), 400, "invalid_field", "token"},
		{"fcm token bad chars", with("token", strings.Repeat("a", 100)+"/+="+strings.Repeat("b", 60)), 400, "invalid_field", "token"},
		{"fcm sandbox", with("environment", "sandbox"), 400, "invalid_field", "environment"},
		{"bad environment", with("environment", "staging"), 400, "invalid_field", "environment"},
		{"bad platform", with("platform", "windows"), 400, "invalid_field", "platform"},
		{"apns on android", map[string]any{"provider": "apns", "token": apnsToken(1), "platform": "android"}, 400, "invalid_field", "platform"},
		{"apns token too short", map[string]any{"provider": "apns", "token": "abcd", "platform": "ios"}, 400, "invalid_field", "token"},
		{"apns token odd length", map[string]any{"provider": "apns", "token": apnsToken(1) + "a", "platform": "ios"}, 400, "invalid_field", "token"},
		{"apns token not hex", map[string]any{"provider": "apns", "token": strings.Repeat("zz", 32), "platform": "ios"}, 400, "invalid_field", "token"},
		{"apns token too long", map[string]any{"provider": "apns", "token": strings.Repeat("ab", 101), "platform": "ios"}, 400, "invalid_field", "token"},
		{"min_interval negative", with("background_sync", map[string]any{"min_interval": "-5m"}), 400, "invalid_field", "background_sync.min_interval"},
		{"min_interval unparsable", with("background_sync", map[string]any{"min_interval": "often"}), 400, "invalid_field", "background_sync.min_interval"},
		{"min_interval absurd", with("background_sync", map[string]any{"min_interval": "9000h"}), 400, "invalid_field", "background_sync.min_interval"},
		{"min_interval fractional", with("background_sync", map[string]any{"min_interval": "1.5s"}), 400, "invalid_field", "background_sync.min_interval"},
		{"min_interval number", with("background_sync", map[string]any{"min_interval": 60}), 400, "invalid_field", "background_sync.min_interval"},
		{"bad locale", with("locale", "en US!"), 400, "invalid_field", "locale"},
		{"bad timezone", with("timezone", "Europe Berlin"), 400, "invalid_field", "timezone"},
		{"bad app_version", with("app_version", "1,2"), 400, "invalid_field", "app_version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := b.rdb.DBSize(t.Context()).Result()
			if err != nil {
				t.Fatalf("dbsize: %v", err)
			}
			r := b.do(t, "POST", "/v1/devices", "/v1/devices", "", tt.body)
			if r.code != tt.wantCode {
				t.Fatalf("status: got %d %s, want %d", r.code, r.body, tt.wantCode)
			}
			e := decode[errorJSON](t, r)
			if e.Error.Code != tt.wantError || e.Error.Field != tt.wantField {
				t.Fatalf("error: got %s/%q (%s), want %s/%q", e.Error.Code, e.Error.Field, e.Error.Message, tt.wantError, tt.wantField)
			}
			after, err := b.rdb.DBSize(t.Context()).Result()
			if err != nil {
				t.Fatalf("dbsize: %v", err)
			}
			if after != before {
				t.Fatalf("keys in redis: got %d after a rejected request, want %d", after, before)
			}
		})
	}
}

func TestDeviceAuthorization(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	a := b.register(t, fcmReg(fcmToken(10), "world"), 201)
	other := b.register(t, fcmReg(fcmToken(11), "tech"), 201)
	pathA := fmt.Sprintf("/v1/devices/%d", a.ID)
	tests := []struct {
		name, method, path, bearer string
		body                       any
		want                       int
	}{
		{"get without secret", "GET", pathA, "", nil, 401},
		{"get with other device's secret", "GET", pathA, other.Secret, nil, 404},
		{"get with garbage", "GET", pathA, "nope", nil, 404},
		{"get unknown id", "GET", "/v1/devices/999999", a.Secret, nil, 404},
		{"get bad id", "GET", "/v1/devices/abc", a.Secret, nil, 404},
		{"patch with other device's secret", "PATCH", pathA, other.Secret, map[string]any{"feeds": []string{}}, 404},
		{"delete without secret", "DELETE", pathA, "", nil, 401},
		{"delete with other device's secret", "DELETE", pathA, other.Secret, nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, tt.method, "/v1/devices/{id}", tt.path, tt.bearer, tt.body)
			if r.code != tt.want {
				t.Fatalf("got %d %s, want %d", r.code, r.body, tt.want)
			}
			if bytes.Contains(r.body, []byte(a.Token)) {
				t.Fatalf("response leaks the device's token")
			}
		})
	}
	if !bitSet(t, b.rdb, "world", a.ID) {
		t.Fatalf("device %d lost its subscription through a rejected request", a.ID)
	}
}

func TestPatchDevice(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	oldTok, newTok := fcmToken(20), fcmToken(21)
	d := b.register(t, fcmReg(oldTok, "world"), 201)
	path := fmt.Sprintf("/v1/devices/%d", d.ID)

	r := b.do(t, "PATCH", "/v1/devices/{id}", path, d.Secret, map[string]any{
		"token": newTok, "feeds": []string{"tech"}, "background_sync": map[string]any{"enabled": false}, "locale": "de-DE",
	})
	if r.code != 200 {
		t.Fatalf("patch: got %d %s, want 200", r.code, r.body)
	}
	got := decode[deviceJSON](t, r)
	if got.Token != newTok || got.Locale != "de-DE" || got.BackgroundSync.Enabled || got.BackgroundSync.MinInterval != "30m0s" {
		t.Fatalf("patch: got %+v", got)
	}
	if bitSet(t, b.rdb, "world", d.ID) || !bitSet(t, b.rdb, "tech", d.ID) {
		t.Fatalf("patch did not move the subscription from world to tech")
	}
	// The secret still works after rotation, and the new token maps to the device.
	again := b.register(t, fcmReg(newTok, "tech"), 200)
	if again.ID != d.ID {
		t.Fatalf("register rotated token: got id %d, want %d", again.ID, d.ID)
	}
	// The old token no longer maps to the device: registering it is a new device.
	fresh := b.register(t, fcmReg(oldTok), 201)
	if fresh.ID == d.ID {
		t.Fatalf("old token still maps to device %d", d.ID)
	}

	bad := []struct {
		name, field string
		body        any
	}{
		{"apns-format token on fcm device", "token", map[string]any{"token": apnsToken(3)}},
		{"unknown feed", "feeds", map[string]any{"feeds": []string{"nope"}}},
		{"platform is not patchable", "platform", map[string]any{"platform": "ios"}},
		{"bad min_interval", "background_sync.min_interval", map[string]any{"background_sync": map[string]any{"min_interval": "-1s"}}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, "PATCH", "/v1/devices/{id}", path, again.Secret, tt.body)
			if r.code != 400 {
				t.Fatalf("got %d %s, want 400", r.code, r.body)
			}
			if e := decode[errorJSON](t, r); e.Error.Field != tt.field {
				t.Fatalf("field: got %q, want %q", e.Error.Field, tt.field)
			}
		})
	}
}

func TestDeleteDevice(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	tok := fcmToken(30)
	d := b.register(t, fcmReg(tok, "world", "tech"), 201)
	path := fmt.Sprintf("/v1/devices/%d", d.ID)
	thr, field := keys.Throttle(keys.Partition(d.ID)), fmt.Sprint(d.ID)
	if err := b.rdb.HSet(t.Context(), thr, field, "state", "p"+field, "phone log").Err(); err != nil {
		t.Fatal(err)
	}
	if r := b.do(t, "DELETE", "/v1/devices/{id}", path, d.Secret, nil); r.code != 204 {
		t.Fatalf("delete: got %d %s, want 204", r.code, r.body)
	}
	if n, err := b.rdb.HExists(t.Context(), thr, field).Result(); err != nil || n {
		t.Fatalf("throttle state survived the delete (%v, %v)", n, err)
	}
	if n, err := b.rdb.HExists(t.Context(), thr, "p"+field).Result(); err != nil || n {
		t.Fatalf("phone log survived the delete (%v, %v)", n, err)
	}
	if r := b.do(t, "GET", "/v1/devices/{id}", path, d.Secret, nil); r.code != 404 {
		t.Fatalf("get after delete: got %d, want 404", r.code)
	}
	if bitSet(t, b.rdb, "world", d.ID) || bitSet(t, b.rdb, "tech", d.ID) {
		t.Fatalf("subscription bits survived the delete")
	}
	if n, _ := b.rdb.Keys(t.Context(), "tok:*").Result(); len(n) != 0 {
		t.Fatalf("token index entries survived the delete: %v", n)
	}
	if again := b.register(t, fcmReg(tok), 201); again.ID == d.ID {
		t.Fatalf("a deleted id was reused")
	}
}

func TestFeedCatalogue(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	body := map[string]any{"title": "Sport", "url": "https://example.com/sport.json", "poll_interval": "2m"}
	auths := []struct {
		name, key string
		want      int
	}{
		{"no key", "", 401},
		{"unknown key", "nk_bogus", 401},
		{"editor key", b.editKey, 403},
	}
	for _, tt := range auths {
		t.Run(tt.name, func(t *testing.T) {
			if r := b.do(t, "PUT", "/v1/admin/feeds/{feed}", "/v1/admin/feeds/sport", tt.key, body); r.code != tt.want {
				t.Fatalf("put: got %d, want %d", r.code, tt.want)
			}
			if r := b.do(t, "DELETE", "/v1/admin/feeds/{feed}", "/v1/admin/feeds/world", tt.key, nil); r.code != tt.want {
				t.Fatalf("delete: got %d, want %d", r.code, tt.want)
			}
		})
	}
	if r := b.do(t, "PUT", "/v1/admin/feeds/{feed}", "/v1/admin/feeds/sport", b.adminKey, body); r.code != 201 {
		t.Fatalf("create: got %d %s, want 201", r.code, r.body)
	}
	body["title"] = "Sports"
	r := b.do(t, "PUT", "/v1/admin/feeds/{feed}", "/v1/admin/feeds/sport", b.adminKey, body)
	if r.code != 200 {
		t.Fatalf("replace: got %d %s, want 200", r.code, r.body)
	}
	if f := decode[catalog.Feed](t, r); f.Title != "Sports" || f.PollInterval != 2*time.Minute {
		t.Fatalf("replace: got %+v", f)
	}
	list := decode[struct{ Feeds []catalog.Feed }](t, b.do(t, "GET", "/v1/feeds", "/v1/feeds", "", nil))
	var ids []string
	for _, f := range list.Feeds {
		ids = append(ids, f.ID)
	}
	if got := strings.Join(ids, ","); got != "sport,tech,world" {
		t.Fatalf("feeds: got %s, want sport,tech,world", got)
	}
	bad := []struct {
		name, path, field string
		body              any
	}{
		{"bad id", "/v1/admin/feeds/Bad_Id", "id", body},
		{"id mismatch", "/v1/admin/feeds/sport", "id", map[string]any{"id": "other", "title": "x", "url": "https://e.com/x"}},
		{"no url", "/v1/admin/feeds/x", "url", map[string]any{"title": "x"}},
		{"user info in url", "/v1/admin/feeds/x", "url", map[string]any{"title": "x", "url": "https://user:pw@e.com/x"}},
		{"control character in title", "/v1/admin/feeds/x", "title", map[string]any{"title": "a\u0007b", "url": "https://e.com/x"}},
		{"newline in title", "/v1/admin/feeds/x", "title", map[string]any{"title": "a\nb", "url": "https://e.com/x"}},
		{"ftp url", "/v1/admin/feeds/x", "url", map[string]any{"title": "x", "url": "ftp://e.com/x"}},
		{"poll too fast", "/v1/admin/feeds/x", "poll_interval", map[string]any{"title": "x", "url": "https://e.com/x", "poll_interval": "1s"}},
		{"poll unparsable", "/v1/admin/feeds/x", "poll_interval", map[string]any{"title": "x", "url": "https://e.com/x", "poll_interval": "soon"}},
		{"unknown field", "/v1/admin/feeds/x", "colour", map[string]any{"title": "x", "url": "https://e.com/x", "colour": 1}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, "PUT", "/v1/admin/feeds/{feed}", tt.path, b.adminKey, tt.body)
			if r.code != 400 {
				t.Fatalf("got %d %s, want 400", r.code, r.body)
			}
			if e := decode[errorJSON](t, r); e.Error.Field != tt.field {
				t.Fatalf("field: got %q, want %q", e.Error.Field, tt.field)
			}
		})
	}

	// Deleting a feed clears its subscriptions and stops new ones.
	d := b.register(t, fcmReg(fcmToken(40), "sport", "world"), 201)
	if !bitSet(t, b.rdb, "sport", d.ID) {
		t.Fatalf("subscription to sport not set")
	}
	if r := b.do(t, "DELETE", "/v1/admin/feeds/{feed}", "/v1/admin/feeds/sport", b.adminKey, nil); r.code != 204 {
		t.Fatalf("delete: got %d %s, want 204", r.code, r.body)
	}
	if bitSet(t, b.rdb, "sport", d.ID) || !bitSet(t, b.rdb, "world", d.ID) {
		t.Fatalf("delete of sport: sport bit must be cleared and world bit kept")
	}
	if r := b.do(t, "DELETE", "/v1/admin/feeds/{feed}", "/v1/admin/feeds/sport", b.adminKey, nil); r.code != 404 {
		t.Fatalf("second delete: got %d, want 404", r.code)
	}
	if r := b.do(t, "POST", "/v1/devices", "/v1/devices", "", fcmReg(fcmToken(41), "sport")); r.code != 400 {
		t.Fatalf("register to deleted feed: got %d, want 400", r.code)
	}
	audit, err := b.rdb.XRange(t.Context(), keys.Audit(), "-", "+").Result()
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	if len(audit) != 3 || audit[0].Values["key"] != "ops-admin" || audit[2].Values["action"] != "feed.delete" {
		t.Fatalf("audit records: got %v, want put, put, delete by ops-admin", audit)
	}
	if logs := b.logs.String(); strings.Contains(logs, b.adminKey) || !strings.Contains(logs, `"api_key":"ops-admin"`) {
		t.Fatalf("logs must name the key, never show it")
	}
}

func TestRegistrationRateLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{rateLimit: 3})
	for i := range 3 {
		b.register(t, fcmReg(fcmToken(50+i)), 201)
	}
	r := b.do(t, "POST", "/v1/devices", "/v1/devices", "", fcmReg(fcmToken(60)))
	if r.code != 429 {
		t.Fatalf("over the limit: got %d %s, want 429", r.code, r.body)
	}
	if r.header.Get("Retry-After") == "" {
		t.Fatalf("429 without Retry-After")
	}
	if e := decode[errorJSON](t, r); e.Error.Code != "rate_limited" {
		t.Fatalf("error code: got %s, want rate_limited", e.Error.Code)
	}
	// Other routes are not limited.
	if r := b.do(t, "GET", "/v1/feeds", "/v1/feeds", "", nil); r.code != 200 {
		t.Fatalf("feeds while registration is limited: got %d, want 200", r.code)
	}
}

func TestEveryLogLineHasRequestID(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	startup := len(b.logs.String()) // what opening the stores logged, before any request
	d := b.register(t, fcmReg(fcmToken(70), "world"), 201)
	b.do(t, "POST", "/v1/devices", "/v1/devices", "", `{`)
	b.do(t, "GET", "/v1/devices/{id}", fmt.Sprintf("/v1/devices/%d", d.ID), "wrong", nil)
	b.do(t, "PUT", "/v1/admin/feeds/{feed}", "/v1/admin/feeds/x", b.adminKey, map[string]any{"title": "X", "url": "https://e.com/x"})
	lines := strings.Split(strings.TrimSpace(b.logs.String()[startup:]), "\n")
	if len(lines) < 6 {
		t.Fatalf("got %d log lines, want at least 6:\n%s", len(lines), b.logs.String())
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", l)
		}
		if id, _ := m["request_id"].(string); id == "" {
			t.Fatalf("log line without request_id: %s", l)
		}
	}
	req := httptest.NewRequestWithContext(t.Context(), "GET", "/v1/feeds", nil)
	req.Header.Set("X-Request-Id", "edge-42")
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	if got := rec.Header().Get("X-Request-Id"); got != "edge-42" {
		t.Fatalf("X-Request-Id: got %q, want the caller's edge-42", got)
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	if r := b.do(t, "GET", "", "/v2/nothing", "", nil); r.code != 404 || decode[errorJSON](t, r).Error.Code != "not_found" {
		t.Fatalf("unknown route: got %d %s, want 404 not_found", r.code, r.body)
	}
	if r := b.do(t, "PUT", "", "/v1/feeds", "", nil); r.code != 405 {
		t.Fatalf("wrong method: got %d %s, want 405", r.code, r.body)
	}
}
