package httpapi

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/freshness"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/schedule"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stats"
	"github.com/nudge-dev/nudge/internal/stores"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// Stores are the concrete stores the api reads and writes, opened on one
// Redis client. Only what the api uses is opened: no push sender, no
// worker, no watcher.
type Stores struct {
	Catalog   *catalog.Store
	Devices   *devices.Registry
	Throttle  *throttle.Throttle // only to forget a deleted device
	Planner   *fanout.Planner    // publishes and reads events; the dispatcher plans them
	Submitter *fanout.Submitter
	Items     *feeds.Store
	Stats     *stats.Recorder
	Events    *jobs.Queue
	Pushes    *jobs.Queue
	Schedule  *schedule.Store
	// Apps is the live app catalogue (devices register with its apps, the
	// admin routes edit it); Run starts its watch loop.
	Apps      *apps.Catalogue
	Freshness *freshness.Tracker // counts receipts, reads time-to-fresh
}

// OpenStores opens the api's stores as Run does. maxFeeds is
// NUDGE_MAX_FEEDS_PER_DEVICE (0: the default); ac configures the app
// catalogue (NUDGE_APPS_FILE), which ctx bounds the first load of. Only the metrics of what
// the api runs go to a.Registerer (the receipts' and wake latency): the
// throttle and the planner register none, since the api never decides or
// plans a push.
func OpenStores(ctx context.Context, a service.Archetype, rdb redis.UniversalClient, maxFeeds int, ac apps.Config) (*Stores, error) {
	log := a.WithDefaults().Logger
	cat, err := catalog.NewStore(a, rdb, catalog.Config{})
	if err != nil {
		return nil, err
	}
	ac.Feeds = cat
	appCat, err := apps.NewCatalogue(ctx, a, rdb, ac)
	if err != nil {
		return nil, err
	}
	reg, err := stores.Devices(a, rdb, cat, devices.Config{MaxFeeds: maxFeeds, Apps: appCat})
	if err != nil {
		return nil, err
	}
	quiet := service.Archetype{Logger: log, Clock: a.Clock}
	th, err := throttle.New(quiet, throttle.Config{Apps: appCat}, rdb)
	if err != nil {
		return nil, err
	}
	evs, err := stores.Events(rdb)
	if err != nil {
		return nil, err
	}
	planner, err := stores.Planner(quiet, fanout.Config{}, rdb, evs, reg, th, nil)
	if err != nil {
		return nil, err
	}
	events, err := stores.EventQueue(rdb)
	if err != nil {
		return nil, err
	}
	pushes, err := stores.PushQueue(rdb)
	if err != nil {
		return nil, err
	}
	items, err := feeds.NewStore(feeds.StoreConfig{}, rdb)
	if err != nil {
		return nil, err
	}
	sched, err := schedule.NewStore(schedule.Config{}, rdb)
	if err != nil {
		return nil, err
	}
	st, err := stats.NewRecorder(a, rdb)
	if err != nil {
		return nil, err
	}
	fresh, err := freshness.New(a, rdb, reg, freshness.Config{})
	if err != nil {
		return nil, err
	}
	return &Stores{
		Freshness: fresh,
		Catalog:   cat, Devices: reg, Throttle: th, Planner: planner,
		Submitter: fanout.NewSubmitter(planner, events), Items: items,
		Stats:  st,
		Events: events, Pushes: pushes, Schedule: sched, Apps: appCat,
	}, nil
}

// Wire returns d with every store field set from s.
func (s *Stores) Wire(d Deps) Deps {
	d.Devices, d.DeviceAuth, d.Throttle = s.Devices, s.Devices, s.Throttle
	d.Catalog, d.FeedEditor, d.Items, d.Stats = s.Catalog, s.Catalog, s.Items, s.Stats
	d.Syncs, d.Events, d.Schedule = s.Submitter, s.Planner, s.Schedule
	d.Subscriptions, d.Tokens, d.Apps, d.Responsive = s.Devices, s.Devices, s.Apps, s.Devices
	d.SyncState, d.Freshness = s.Devices, s.Freshness
	d.Queues = map[string]QueueSizer{"push": s.Pushes, "events": s.Events}
	return d
}
