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
	cfg.Now = a.Clock
	return devices.New(rdb, cat, cfg)
}

// Planner opens the fan-out planner, which publishes events and plans
// them through d, and reads the devices' profiles from profiles for
// events with an audience. Its metrics go to a.Registerer; a nil one
// registers none (the api, which publishes and reads events but never
// plans them).
func Planner(a service.Archetype, cfg fanout.Config, rdb redis.UniversalClient, d fanout.Decider, profiles fanout.Profiles) (*fanout.Planner, error) {
	a.Logger = a.WithDefaults().Logger
	p, err := fanout.New(cfg, rdb, d, a.Logger, a.Registerer, a.Clock)
	if err != nil {
		return nil, err
	}
	p.UseProfiles(profiles)
	return p, nil
}
