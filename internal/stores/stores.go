// Package stores builds the Redis stores that both processes open, the api
// and the dispatcher, with the settings that shape their data in one
// place, so the two always agree on them (the queues' names and
// partitions, the planner's settings). It is not an assembly of either
// process: each Run calls only the constructors of the stores it uses.
package stores

import (
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/events"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/service"
)

// EventQueue opens the events queue: one partition, whose worker plans
// each submitted event.
func EventQueue(rdb redis.UniversalClient) (*jobs.Queue, error) {
	return jobs.New(rdb, jobs.Config{Name: keys.EventQueue, Partitions: 1})
}

// PushQueue opens the push queue, partitioned as the device ids are
// (keys.Partitions).
func PushQueue(rdb redis.UniversalClient) (*jobs.Queue, error) {
	return jobs.New(rdb, jobs.Config{Name: keys.PushQueue, Partitions: keys.Partitions})
}

// Devices opens the device registry over the catalogue cat, on a's clock.
// cfg.MaxFeeds is the api's NUDGE_MAX_FEEDS_PER_DEVICE; other fields take
// their defaults.
func Devices(a service.Archetype, rdb redis.UniversalClient, cat *catalog.Store, cfg devices.Config) (*devices.Registry, error) {
	return devices.New(a, rdb, cat, cfg)
}

// Events opens the event store: the events' definitions and progress.
func Events(rdb redis.UniversalClient) (*events.Store, error) {
	return events.New(events.Config{}, rdb)
}

// Planner opens the fan-out planner over the event store evs and the
// registry devs (its subscriber walk, and the devices' profiles for events
// with an audience). It plans through d and counts deferred and coalesced
// decisions into st (nil: not counted). Its metrics go to a.Registerer; a
// nil one registers none (the api, which publishes and reads events but
// never plans them). rdb holds the wake pacing slots (cfg.WakeRate).
func Planner(a service.Archetype, cfg fanout.Config, rdb redis.UniversalClient, evs *events.Store, devs *devices.Registry, d fanout.Decider, st fanout.Stats) (*fanout.Planner, error) {
	return fanout.New(a, cfg, fanout.Deps{
		Events: evs, Subscribers: devs, Decider: d, Stats: st, Profiles: devs, Redis: rdb,
	})
}
