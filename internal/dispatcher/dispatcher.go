// Package dispatcher assembles the dispatcher process: the feed watcher, the
// fan-out planner on the events queue, the throttle's due scheduler, the
// push workers on the push queue, the runner of scheduled syncs, and the
// queue monitor.
//
// The flow through it:
//
//	feed watcher ──FeedChanged──▶ Submitter ──▶ events queue
//	editor (api) ──POST /v1/syncs─▶ Submitter ──▶ events queue
//	events worker ──Plan──▶ throttle (decide + enqueue) ──▶ push queue / due set
//	scheduler ──due set──▶ push queue
//	scheduled syncs ──send_at reached──▶ Submitter ──▶ events queue
//	stale sweeps ──stale devices, paced over a window──▶ throttle
//	push workers ──delivery──▶ FCM / APNs ──▶ prune, retry, progress, stats
//
// Every part keeps its state in Redis, so any number of replicas can run:
// the watcher shares feeds through leases, the queues through consumer
// groups, and the scheduler's moves are atomic scripts.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/delivery"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/events"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/freshness"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/push"
	"github.com/nudge-dev/nudge/internal/schedule"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stale"
	"github.com/nudge-dev/nudge/internal/startstop"
	"github.com/nudge-dev/nudge/internal/stats"
	"github.com/nudge-dev/nudge/internal/stores"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// Config configures every part of the dispatcher. Zero fields take each
// part's defaults.
type Config struct {
	Apps        apps.Config // the app catalogue (NUDGE_APPS_FILE); its Feeds is the feed catalogue
	Devices     devices.Config
	Watcher     feeds.Config
	Throttle    throttle.Config
	Scheduler   throttle.SchedulerConfig
	Fanout      fanout.Config
	Push        push.Config
	PushWorker  jobs.WorkerConfig
	EventWorker jobs.WorkerConfig
	Monitor     jobs.MonitorConfig
	Schedule    schedule.Config
	Stale       stale.Config
	// Unresponsive is the back-off of devices that stopped answering.
	Unresponsive devices.Unresponsive
}

// Deps are the dispatcher's collaborators.
type Deps struct {
	Redis redis.UniversalClient // required
	// FeedClient fetches feeds; default a client on a clone of
	// http.DefaultTransport.
	FeedClient *http.Client
	// Apps are the apps the push senders send for; nil: the live app
	// catalogue (Config.Apps: the apps file, or the default app of the
	// single-app settings, Config.Push's NUDGE_APNS_* and NUDGE_FCM_*
	// fields, with the admin edits).
	Apps apps.Source
}

// parts are the Redis stores the dispatcher runs on.
type parts struct {
	Catalog   *catalog.Store
	Devices   *devices.Registry
	Throttle  *throttle.Throttle
	Planner   *fanout.Planner
	Progress  *events.Store // the events' definitions and progress
	Events    *jobs.Queue
	Pushes    *jobs.Queue
	Submitter *fanout.Submitter
	Stats     *stats.Recorder
	Items     *feeds.Store    // feed heads, for scheduled syncs
	Schedule  *schedule.Store // editors' syncs scheduled for later
	// Apps is the live app catalogue, an apps.Source for whatever needs
	// the apps; its watch loop runs with the dispatcher's.
	Apps      *apps.Catalogue
	Freshness *freshness.Tracker // new items' time-to-fresh, tracked from publication
}

// openStores opens the stores on rdb. a.Registerer receives the metrics
// of the parts that have them.
func openStores(ctx context.Context, a service.Archetype, cfg Config, rdb redis.UniversalClient) (*parts, error) {
	cat, err := catalog.NewStore(a, rdb, catalog.Config{})
	if err != nil {
		return nil, err
	}
	ac := cfg.Apps
	ac.Feeds = cat
	if ac.File == "" && ac.Single.ID == "" { // the single-app settings define the default app
		ac.Single = cfg.Push.SingleApp()
	}
	appCat, err := apps.NewCatalogue(ctx, a, rdb, ac)
	if err != nil {
		return nil, err
	}
	// The devices' apps (registration checks) and the throttle's (policy
	// overrides) are the live catalogue unless a test set its own.
	if cfg.Devices.Apps == nil {
		cfg.Devices.Apps = appCat
	}
	if cfg.Throttle.Apps == nil {
		cfg.Throttle.Apps = appCat
	}
	devs, err := stores.Devices(a, rdb, cat, cfg.Devices)
	if err != nil {
		return nil, err
	}
	th, err := throttle.New(a, cfg.Throttle, rdb)
	if err != nil {
		return nil, err
	}
	st, err := stats.NewRecorder(a, rdb)
	if err != nil {
		return nil, err
	}
	evs, err := stores.Events(rdb)
	if err != nil {
		return nil, err
	}
	planner, err := stores.Planner(a, cfg.Fanout, rdb, evs, devs, th, st)
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
	items, err := feeds.NewStore(cfg.Watcher.Store, rdb)
	if err != nil {
		return nil, err
	}
	sched, err := schedule.NewStore(cfg.Schedule, rdb)
	if err != nil {
		return nil, err
	}
	fresh, err := freshness.New(a, rdb, devs, freshness.Config{})
	if err != nil {
		return nil, err
	}
	return &parts{
		Catalog: cat, Devices: devs, Throttle: th, Planner: planner, Progress: evs, Events: events, Pushes: pushes,
		Submitter: fanout.NewSubmitter(planner, events), Stats: st, Items: items, Schedule: sched, Apps: appCat,
		Freshness: fresh,
	}, nil
}

// Dispatcher runs the background parts. Start it once; Stop drains it
// (startstop).
type Dispatcher struct {
	log       *slog.Logger
	pipe      *parts
	sender    *push.Sender
	watcher   *feeds.Watcher
	scheduler *throttle.Scheduler
	events    *jobs.Worker
	pushes    *jobs.Worker
	monitor   *jobs.Monitor
	scheduled *schedule.Runner
	stale     *stale.Sweeper
	life      startstop.Base
	closeOnce sync.Once
}

// New builds a dispatcher. It connects the push sender (reading its
// credentials) but starts nothing. A nil a.Logger discards the logs; a nil
// a.Registerer registers the metrics nowhere that is served.
func New(ctx context.Context, a service.Archetype, cfg Config, d Deps) (*Dispatcher, error) {
	if d.Redis == nil {
		return nil, errors.New("dispatcher: Deps.Redis is required")
	}
	a = a.WithDefaults()
	p, err := openStores(ctx, a, cfg, d.Redis)
	if err != nil {
		return nil, err
	}
	pcfg := cfg.Push
	if pcfg.Apps = d.Apps; pcfg.Apps == nil {
		pcfg.Apps = p.Apps
	}
	sender, err := push.New(ctx, a, pcfg)
	if err != nil {
		return nil, err
	}
	dis := &Dispatcher{log: a.Logger, pipe: p, sender: sender}
	fail := func(err error) (*Dispatcher, error) {
		sender.Close()
		return nil, err
	}

	notify := feeds.NotifierFunc(dis.feedChanged)
	if dis.watcher, err = feeds.NewWatcher(a, cfg.Watcher, feeds.Deps{
		Redis: d.Redis, Catalog: p.Catalog, Notifier: notify, HTTPClient: d.FeedClient,
	}); err != nil {
		return fail(err)
	}
	if dis.scheduler, err = throttle.NewScheduler(a, cfg.Scheduler, p.Throttle, p.Planner); err != nil {
		return fail(err)
	}

	// One event per handler call: planning a big fan-out takes seconds, and
	// the checkpoints let a slice that hits the timeout resume at once.
	ec := cfg.EventWorker
	ec.BatchSize = 1
	if dis.events, err = jobs.NewWorker(a, p.Events, jobs.HandlerFunc(dis.plan), ec); err != nil {
		return fail(err)
	}
	h, err := delivery.New(a, delivery.Config{MaxDeliveries: cfg.PushWorker.MaxDeliveries, Unresponsive: cfg.Unresponsive}, delivery.Deps{
		Redis: d.Redis, Sender: sender, Devices: p.Devices, Events: p.Progress, Throttle: p.Throttle, Stats: p.Stats,
	})
	if err != nil {
		return fail(err)
	}
	pc := cfg.PushWorker
	pc.OnDead = func(ctx context.Context, dead []jobs.DeadJob) { dis.handBack(ctx, dead) }
	if dis.pushes, err = jobs.NewWorker(a, p.Pushes, h, pc); err != nil {
		return fail(err)
	}
	if dis.scheduled, err = schedule.NewRunner(a, p.Schedule, p.Items, p.Submitter); err != nil {
		return fail(err)
	}
	if dis.stale, err = stale.New(a, cfg.Stale, stale.Deps{
		Redis: d.Redis, Devices: p.Devices, Catalog: p.Catalog, Heads: p.Items, Throttle: p.Throttle,
	}); err != nil {
		return fail(err)
	}
	if dis.monitor, err = jobs.NewMonitor(a, []*jobs.Queue{p.Events, p.Pushes}, cfg.Monitor); err != nil {
		return fail(err)
	}
	return dis, nil
}

// Start creates the consumer groups and starts every loop. On an error the
// loops already started are stopped, and Start may be called again.
func (d *Dispatcher) Start(ctx context.Context) error { return d.life.Start(ctx, d.start) }

func (d *Dispatcher) start(ctx context.Context) (func(), error) {
	for _, q := range []*jobs.Queue{d.pipe.Events, d.pipe.Pushes} {
		if err := q.EnsureGroups(ctx); err != nil {
			return nil, fmt.Errorf("create consumer groups of queue %s: %w", q.Name(), err)
		}
	}
	// Consumers first, producers last; Stop goes the other way.
	parts := []struct {
		name  string
		start func(context.Context) error
		stop  func()
	}{
		{"app catalogue", d.pipe.Apps.Start, d.pipe.Apps.Stop},
		{"push workers", d.pushes.Start, d.pushes.Stop},
		{"events worker", d.events.Start, d.events.Stop},
		{"scheduler", d.scheduler.Start, d.scheduler.Stop},
		{"feed watcher", d.watcher.Start, d.watcher.Stop},
		{"queue monitor", d.monitor.Start, d.monitor.Stop},
		{"scheduled syncs", d.scheduled.Start, d.scheduled.Stop},
		{"stale sweeps", d.stale.Start, d.stale.Stop},
	}
	var stoppers []func()
	stop := func() {
		for i := len(stoppers) - 1; i >= 0; i-- {
			stoppers[i]()
		}
	}
	for _, p := range parts {
		if err := p.start(ctx); err != nil {
			stop()
			return nil, fmt.Errorf("start %s: %w", p.name, err)
		}
		stoppers = append(stoppers, p.stop)
	}
	return stop, nil
}

// Stop stops the producers first, then drains the workers, then closes the
// provider connections. It is safe to call twice, or before Start.
func (d *Dispatcher) Stop() {
	d.life.Stop()
	d.closeOnce.Do(d.sender.Close)
}

// Stopped is closed once Stop has stopped every loop.
func (d *Dispatcher) Stopped() <-chan struct{} { return d.life.Stopped() }

// feedChanged turns a feed's new items into an event. The event id is the
// feed and its head cursor, so a notification repeated after a crash
// submits the same event again, which is a no-op.
func (d *Dispatcher) feedChanged(ctx context.Context, feed string, since, head int64, newItems int) error {
	id := fmt.Sprintf("feed:%s:%d", feed, head)
	_, err := d.pipe.Submitter.Submit(ctx, fanout.Event{
		ID: id, Feeds: []string{feed}, Lane: throttle.LaneFeed, Reason: "feed",
		Since: map[string]int64{feed: since}, Until: map[string]int64{feed: head},
	})
	if err != nil {
		return err
	}
	d.log.InfoContext(ctx, "feed changed", "feed", feed, "event", id, "new_items", newItems, "since", since, "head", head)
	// Measuring must not hold up the push: a failure loses only the
	// items' time-to-fresh.
	if err := d.pipe.Freshness.Published(ctx, feed, since, head); err != nil && ctx.Err() == nil {
		d.log.ErrorContext(ctx, "track time-to-fresh", "feed", feed, "head", head, "err", err)
	}
	return nil
}

// plan is the events queue's handler: it plans the fan-out of one event.
func (d *Dispatcher) plan(ctx context.Context, o *jobs.Outcomes, js []*jobs.Job) error {
	for _, j := range js {
		id := string(j.Payload)
		pr, err := d.pipe.Planner.Plan(ctx, id)
		switch {
		case errors.Is(err, fanout.ErrNotFound):
			d.log.WarnContext(ctx, "event expired before planning", "event", id)
			o.Dead(j, "event not found")
		case errors.Is(err, context.DeadlineExceeded):
			// The slice ran out of time; the checkpoint keeps the progress,
			// so go on at once from there.
			o.Retry(j, time.Millisecond)
		case err != nil:
			return fmt.Errorf("plan event %s: %w", id, err)
		default:
			d.log.InfoContext(ctx, "event planned", "event", id, "targeted", pr.Targeted, "queued", pr.Queued,
				"deferred", pr.Deferred, "coalesced", pr.Coalesced, "skipped", pr.Skipped)
		}
	}
	return nil
}

// handBack gives the work of push jobs that the queue dead-lettered (too
// old to retry, or crashing every worker) back to the throttle as a
// pending update of their device, so that the device's next push carries
// it, and counts them failed in their events' progress. Jobs the handler
// itself declared dead (permanent provider failures, undecodable
// payloads) were already counted by delivery and are not handed back.
func (d *Dispatcher) handBack(ctx context.Context, dead []jobs.DeadJob) {
	for _, dj := range dead {
		if dj.Cause == jobs.CauseHandler {
			continue
		}
		p, err := throttle.DecodePush(dj.Payload)
		if err != nil || len(p.Events) == 0 {
			continue
		}
		if err := d.pipe.Planner.Record(ctx, p.Events, fanout.OutcomeFailed); err != nil {
			d.log.WarnContext(ctx, "record progress of a dead push", "device_id", p.Device, "err", err)
		}
		// A fresh event id: the throttle remembers the ones it applied.
		u := throttle.Update{
			Event: fmt.Sprintf("redo:%d:%s", dj.Partition, dj.OriginalID),
			Feeds: p.Feeds, Lane: p.Lane, Reason: p.Reason, Since: p.Since, Until: p.Until, Alert: p.Alert,
		}
		if _, err := d.pipe.Throttle.Decide(ctx, u, []uint64{p.Device}); err != nil {
			d.log.ErrorContext(ctx, "hand a dead push back to the throttle", "device_id", p.Device, "job", dj.OriginalID, "cause", dj.Cause, "err", err)
			continue
		}
		d.log.InfoContext(ctx, "dead push handed back to the throttle", "device_id", p.Device, "job", dj.OriginalID, "cause", dj.Cause, "reason", dj.Reason)
	}
}
