package apps_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/metrictest"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stacktest"
)

// replica is one process's catalogue with its registry and log.
type replica struct {
	cat *apps.Catalogue
	reg *prometheus.Registry
	log *stacktest.Buffer
}

// startCatalogue opens and starts a catalogue on rdb; refresh is long by
// default so that only files and change notices move it.
func startCatalogue(t *testing.T, rdb redis.UniversalClient, cfg apps.Config) replica {
	t.Helper()
	r := replica{reg: prometheus.NewRegistry(), log: &stacktest.Buffer{}}
	cfg.FilePoll = 20 * time.Millisecond
	if cfg.Refresh == 0 {
		cfg.Refresh = time.Hour
	}
	a := service.Archetype{Logger: slog.New(slog.NewTextHandler(r.log, nil)), Registerer: r.reg}
	c, err := apps.NewCatalogue(t.Context(), a, rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	r.cat = c
	return r
}

// metric is the value of the series name (with label source, when not
// empty) in r's registry.
func (r replica) metric(t *testing.T, name, source string) float64 {
	t.Helper()
	var match map[string]string
	if source != "" {
		match = map[string]string{"source": source}
	}
	v, _ := metrictest.Sum(t, r.reg, name, match)
	return v
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	// Write and rename, as a deploy tool or a ConfigMap update does.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func fcmApp(id string) apps.App {
	return apps.App{ID: id, Name: strings.ToUpper(id), FCM: &apps.FCM{CredentialsFile: "/run/secrets/" + id + ".json"}}
}

func has(c *apps.Catalogue, id string) bool { _, ok := c.Current().Get(id); return ok }

const threeApps = twoApps + `
  - id: regional
    name: Regional
    apns: {topic: com.example.regional, cert_file: /run/secrets/regional.p12}
`

func TestCatalogueFollowsTheAppsFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "apps.yaml")
	writeFile(t, path, twoApps)
	r := startCatalogue(t, redistest.Start(t), apps.Config{File: path})
	if got := r.cat.Current().String(); got != "news,sports" {
		t.Fatalf("apps at start = %s, want news,sports", got)
	}
	changes, cancel := r.cat.Subscribe()
	defer cancel()

	writeFile(t, path, threeApps)
	await.Until(t, "the new app of the rewritten file", func() bool { return has(r.cat, "regional") })
	select {
	case <-changes:
	case <-time.After(10 * time.Second):
		t.Fatal("no change notice after the file changed")
	}
	if got := r.metric(t, "nudge_apps", ""); got != 3 {
		t.Fatalf("nudge_apps = %v, want 3", got)
	}

	// A broken rewrite is refused, counted and logged once; the apps stay.
	writeFile(t, path, "apps:\n  - id: news\n    colour: red\n")
	await.Until(t, "the broken file to be counted", func() bool { return r.metric(t, "nudge_apps_reload_errors_total", "file") == 1 })
	if got := r.cat.Current().String(); got != "news,regional,sports" {
		t.Fatalf("apps after a broken file = %s, want the previous three", got)
	}
	if !strings.Contains(r.log.String(), "colour") {
		t.Fatalf("the log does not name the bad field:\n%s", r.log.String())
	}
	// A missing file is an error too, and the apps stay.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	await.Until(t, "the missing file to be counted", func() bool { return r.metric(t, "nudge_apps_reload_errors_total", "file") == 2 })
	if got := r.cat.Current().Len(); got != 3 {
		t.Fatalf("%d apps after the file went, want 3", got)
	}

	// Restoring a good file recovers.
	writeFile(t, path, twoApps)
	await.Until(t, "the restored file", func() bool { return r.cat.Current().String() == "news,sports" })
	if got := r.metric(t, "nudge_apps_reload_errors_total", "file"); got != 2 {
		t.Fatalf("reload errors = %v after the restore, want still 2", got)
	}
}

func TestCatalogueStartRefusesABrokenFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "apps.yaml")
	writeFile(t, path, "apps:\n  - {id: a, name: A}\n")
	_, err := apps.NewCatalogue(t.Context(), service.Archetype{}, redistest.Start(t), apps.Config{File: path})
	if err == nil || !strings.Contains(err.Error(), `app "a": apns/fcm`) {
		t.Fatalf("err = %v, want one naming the app and field", err)
	}
	_, err = apps.NewCatalogue(t.Context(), service.Archetype{}, redistest.Start(t), apps.Config{File: path + ".missing"})
	if err == nil || !strings.Contains(err.Error(), "apps.yaml.missing") {
		t.Fatalf("err = %v, want one naming the file", err)
	}
}

// feedsIn is a feed catalogue that knows a fixed list.
type feedsIn []string

func (f feedsIn) Missing(_ context.Context, ids []string) ([]string, error) {
	var out []string
	for _, id := range ids {
		if !strings.Contains(strings.Join(f, ","), id) {
			out = append(out, id)
		}
	}
	return out, nil
}

func TestCatalogueWarnsOfUnknownFeedsInTheFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "apps.yaml")
	writeFile(t, path, twoApps) // news offers headlines and recent
	r := startCatalogue(t, redistest.Start(t), apps.Config{File: path, Feeds: feedsIn{"headlines"}})
	if !has(r.cat, "news") {
		t.Fatal("an app with an unknown feed was refused")
	}
	if log := r.log.String(); !strings.Contains(log, "not in the feed catalogue") || !strings.Contains(log, "recent") {
		t.Fatalf("no warning naming the unknown feed:\n%s", log)
	}
}

func TestCatalogueEdits(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	path := filepath.Join(t.TempDir(), "apps.yaml")
	writeFile(t, path, twoApps)
	r := startCatalogue(t, rdb, apps.Config{File: path})
	ctx := t.Context()

	created, err := r.cat.Put(ctx, fcmApp("regional"))
	if err != nil || !created {
		t.Fatalf("Put(new) = %v, %v; want created", created, err)
	}
	edited := fcmApp("news")
	edited.Name = "News (edited)"
	if created, err := r.cat.Put(ctx, edited); err != nil || created {
		t.Fatalf("Put(file app) = %v, %v; want replaced", created, err)
	}
	if a, _ := r.cat.Current().Get("news"); a.Name != "News (edited)" || a.APNs != nil {
		t.Fatalf("news = %+v, want the edit over the file", a)
	}
	if _, err := r.cat.Put(ctx, apps.App{ID: "x", Name: "X"}); err == nil {
		t.Fatal("Put took an app without a provider")
	} else if fe, ok := errors.AsType[*apps.FieldError](err); !ok || fe.Field != "apns/fcm" {
		t.Fatalf("Put(invalid) = %v, want a *FieldError on apns/fcm", err)
	}

	// Deleting a file app hides it behind a tombstone; an edited app goes.
	for _, id := range []string{"sports", "regional"} {
		if err := r.cat.Delete(ctx, id); err != nil {
			t.Fatalf("Delete(%s) = %v", id, err)
		}
	}
	if err := r.cat.Delete(ctx, "sports"); !errors.Is(err, apps.ErrNotFound) {
		t.Fatalf("Delete(deleted) = %v, want ErrNotFound", err)
	}
	if err := r.cat.Delete(ctx, "news"); !errors.Is(err, apps.ErrLastApp) {
		t.Fatalf("Delete(last app) = %v, want ErrLastApp", err)
	}
	if got := r.cat.Current().String(); got != "news" {
		t.Fatalf("apps = %s, want news", got)
	}
	if n, err := rdb.HLen(ctx, keys.Apps()).Result(); err != nil || n != 2 {
		t.Fatalf("edits hash has %d fields (%v), want 2: news and the tombstone of sports", n, err)
	}
	// A PUT brings a deleted file app back.
	if created, err := r.cat.Put(ctx, fcmApp("sports")); err != nil || !created {
		t.Fatalf("Put(deleted file app) = %v, %v; want created", created, err)
	}

	// A record that is not a valid app is skipped and counted; the rest loads.
	if err := rdb.HSet(ctx, keys.Apps(), "broken", `{"app":{"id":"broken"}}`).Err(); err != nil {
		t.Fatal(err)
	}
	other := startCatalogue(t, rdb, apps.Config{File: path})
	if got := other.cat.Current().String(); got != "news,sports" {
		t.Fatalf("second replica's apps = %s, want news,sports", got)
	}
	// Each read counts it again, so the counter keeps rising while it stays.
	if got := other.metric(t, "nudge_apps_reload_errors_total", "redis"); got < 1 {
		t.Fatalf("redis reload errors = %v, want at least 1 for the broken record", got)
	}
	if !strings.Contains(other.log.String(), "app catalogue edit skipped") {
		t.Fatalf("the broken record is not logged:\n%s", other.log.String())
	}
}

func TestCatalogueWithoutFileIsTheDefaultApp(t *testing.T) {
	t.Parallel()
	r := startCatalogue(t, redistest.Start(t), apps.Config{})
	a, ok := r.cat.Current().Get(apps.Default)
	if !ok || r.cat.Current().Len() != 1 || a.APNs != nil || a.FCM != nil {
		t.Fatalf("apps = %s, default = %+v", r.cat.Current(), a)
	}
	if err := r.cat.Delete(t.Context(), apps.Default); !errors.Is(err, apps.ErrLastApp) {
		t.Fatalf("Delete(default) = %v, want ErrLastApp", err)
	}
}

// TestCatalogueReplicasFollowEditsThroughARedisRestart runs two replicas
// on one Redis with the periodic refresh off: an edit on one reaches the
// other by its change notice, also after Redis restarted in between (the
// subscription reconnects and re-reads).
func TestCatalogueReplicasFollowEditsThroughARedisRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t, "appendonly", "yes", "appendfsync", "always")
	one := startCatalogue(t, srv.Client(t), apps.Config{})
	two := startCatalogue(t, srv.Client(t), apps.Config{})
	ctx := t.Context()

	if _, err := one.cat.Put(ctx, fcmApp("sports")); err != nil {
		t.Fatal(err)
	}
	await.Within(t, 10*time.Second, "the PUT on replica one to reach replica two", func() bool { return has(two.cat, "sports") })
	if err := two.cat.Delete(ctx, "sports"); err != nil {
		t.Fatal(err)
	}
	await.Within(t, 10*time.Second, "the DELETE on replica two to reach replica one", func() bool { return !has(one.cat, "sports") })

	srv.Restart(t)
	await.Poll{Timeout: 20 * time.Second}.Check(t, "a PUT after the restart", func() error {
		_, err := one.cat.Put(ctx, fcmApp("regional"))
		return err
	})
	await.Within(t, 10*time.Second, "the PUT after the Redis restart to reach replica two", func() bool { return has(two.cat, "regional") })
	if err := one.cat.Delete(ctx, "regional"); err != nil {
		t.Fatal(err)
	}
	await.Within(t, 10*time.Second, "the DELETE after the Redis restart to reach replica two", func() bool { return !has(two.cat, "regional") })
	if has(two.cat, "sports") {
		t.Fatal("the deleted app came back after the restart")
	}
}

// TestCatalogueOnCluster: the edit script and its notice work on Redis
// Cluster, where the subscription and the script may be on other nodes.
func TestCatalogueOnCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	one := startCatalogue(t, cl.Client(t), apps.Config{})
	two := startCatalogue(t, cl.Client(t), apps.Config{})
	if _, err := one.cat.Put(t.Context(), fcmApp("sports")); err != nil {
		t.Fatal(err)
	}
	await.Within(t, 10*time.Second, "the PUT on replica one to reach replica two", func() bool { return has(two.cat, "sports") })
	if err := two.cat.Delete(t.Context(), "sports"); err != nil {
		t.Fatal(err)
	}
	await.Within(t, 10*time.Second, "the DELETE on replica two to reach replica one", func() bool { return !has(one.cat, "sports") })
}
