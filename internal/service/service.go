// Package service holds the Archetype: what every constructor of nudge that
// logs, reads the clock or registers metrics is given first (after ctx), so
// the logger, the clock and the metrics registry come in one way
// everywhere.
package service

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Archetype bundles a part's logger, clock and metrics registry. Its zero
// value is usable: WithDefaults fills what is missing.
type Archetype struct {
	// Logger receives the part's logs. Nil: logs are discarded.
	Logger *slog.Logger
	// Clock is the part's clock. Nil: time.Now. Decisions that replicas
	// share take Redis's clock instead.
	Clock func() time.Time
	// Registerer receives the part's metrics. Nil: they are registered on
	// a private registry that nothing serves.
	Registerer prometheus.Registerer
}

// WithDefaults returns a copy of a with every nil field set to its
// default, so a constructor can use the fields without checks.
func (a Archetype) WithDefaults() Archetype {
	if a.Logger == nil {
		a.Logger = slog.New(slog.DiscardHandler)
	}
	if a.Clock == nil {
		a.Clock = time.Now
	}
	if a.Registerer == nil {
		a.Registerer = prometheus.NewRegistry()
	}
	return a
}

// Now reads a's clock (time.Now when it is nil).
func (a Archetype) Now() time.Time {
	if a.Clock == nil {
		return time.Now()
	}
	return a.Clock()
}

// Register registers cs on a's registerer (nowhere when it is nil, which
// is what WithDefaults's private registry amounts to), in order, and stops
// at the first failure. It is the one way a
// constructor registers its metrics.
func (a Archetype) Register(cs ...prometheus.Collector) error {
	reg := a.Registerer
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

// RegisterShared registers c on a's registerer like Register, except that
// a collector already registered with the same description is returned
// instead of an error: several instances of one part (a queue worker per
// queue) share one collector and tell themselves apart by a label.
func RegisterShared[C prometheus.Collector](a Archetype, c C) (C, error) {
	if a.Registerer == nil {
		return c, nil
	}
	if err := a.Registerer.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}
