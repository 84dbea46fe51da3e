package fanout

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/events"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// TestAppScopedSync registers the same tokens in two apps that both offer
// feed "sport" (through the real registry, on a single server and on a
// cluster): a sync for news queues a push for each of news's devices and
// none for sports's, and a feed change targets the devices of both.
func TestAppScopedSync(t *testing.T) {
	t.Parallel()
	redistest.Backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := t.Context()
		cat, err := catalog.NewStore(service.Archetype{}, rdb, catalog.Config{})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"sport", "world"} {
			if _, err := cat.Put(ctx, catalog.Feed{ID: f, Title: f, URL: "https://example.com/" + f}); err != nil {
				t.Fatal(err)
			}
		}
		set := apps.MustSet(
			apps.App{ID: "news", Name: "News", FCM: &apps.FCM{CredentialsFile: "/dev/null"}, Feeds: []string{"sport", "world"}},
			apps.App{ID: "sports", Name: "Sports", FCM: &apps.FCM{CredentialsFile: "/dev/null"}, Feeds: []string{"sport"}},
		)
		reg, err := devices.New(service.Archetype{}, rdb, cat, devices.Config{Apps: set})
		if err != nil {
			t.Fatal(err)
		}
		th, err := throttle.New(service.Archetype{Logger: discard(), Registerer: prometheus.NewRegistry()}, throttle.Config{Apps: set}, rdb)
		if err != nil {
			t.Fatal(err)
		}
		store, err := events.New(events.Config{}, rdb)
		if err != nil {
			t.Fatal(err)
		}
		pl, err := New(service.Archetype{Logger: discard(), Registerer: prometheus.NewRegistry()}, Config{Window: 64},
			Deps{Events: store, Subscribers: reg, Decider: th, Profiles: reg})
		if err != nil {
			t.Fatal(err)
		}
		b := &bundle{rdb: rdb, th: th, pl: pl}

		const perApp = 40
		inApp := map[string]map[uint64]bool{"news": {}, "sports": {}}
		for i := range perApp {
			tok := fmt.Sprintf("t%021d:APA91b", i) + strings.Repeat("k", 124)
			for _, app := range []string{"news", "sports"} {
				d, _, created, err := reg.Register(ctx, devices.Registration{App: app, Provider: "fcm", Token: tok,
					Platform: "android", Feeds: []string{"sport"}, Sync: devices.BackgroundSync{Enabled: true}})
				if err != nil || !created {
					t.Fatalf("register %d in %s: created %v, %v", i, app, created, err)
				}
				inApp[app][d.ID] = true
			}
		}

		b.publish(t, Event{ID: "sync-news", App: "news", Feeds: []string{"sport"}, Lane: throttle.LaneBreaking, Reason: "breaking"})
		if pr := b.plan(t, "sync-news"); pr.Targeted != perApp || pr.Queued != perApp {
			t.Errorf("news sync: targeted %d queued %d, want %d each", pr.Targeted, pr.Queued, perApp)
		}
		got := b.pushes(t, "sync-news")
		news := 0
		for id, n := range got {
			switch {
			case inApp["sports"][id]:
				t.Errorf("news sync pushed sports device %d", id)
			case inApp["news"][id] && n == 1:
				news++
			}
		}
		if news != perApp {
			t.Errorf("news sync reached %d news devices once, want %d", news, perApp)
		}

		b.publish(t, feedEvent("feed:sport:1", "sport"))
		if pr := b.plan(t, "feed:sport:1"); pr.Targeted != 2*perApp {
			t.Errorf("feed change: targeted %d, want both apps' %d", pr.Targeted, 2*perApp)
		}
	})
}
