package fanout

import (
	"context"
	"fmt"
)

// Enqueuer queues a job once per unique id; *jobs.Queue is one.
type Enqueuer interface {
	EnqueueUnique(ctx context.Context, partition int, uniqueID string, payload []byte) (id string, added bool, err error)
}

// Submitter is the way into the pipeline: it publishes an event and queues
// it for planning on the events queue, whose worker calls Plan. Both steps
// are idempotent per event id, so a caller that is unsure whether a submit
// went through (a timeout, a crash) submits the same event again.
type Submitter struct {
	planner *Planner
	events  Enqueuer
}

// NewSubmitter returns a Submitter that publishes through planner and
// queues on events (a one-partition queue).
func NewSubmitter(planner *Planner, events Enqueuer) *Submitter {
	return &Submitter{planner: planner, events: events}
}

// Submit publishes ev and queues it for planning. An empty ev.ID gets a
// fresh id. It returns the event id.
func (s *Submitter) Submit(ctx context.Context, ev Event) (string, error) {
	if ev.ID == "" {
		id, err := s.planner.NewID(ctx)
		if err != nil {
			return "", err
		}
		ev.ID = id
	}
	if _, err := s.planner.Publish(ctx, ev); err != nil {
		return "", err
	}
	if _, _, err := s.events.EnqueueUnique(ctx, 0, ev.ID, []byte(ev.ID)); err != nil {
		return "", fmt.Errorf("queue event %s for planning: %w", ev.ID, err)
	}
	return ev.ID, nil
}
