package schedule

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/service"
)

// Runner submits scheduled syncs when they fall due. Run one in every
// dispatcher replica: the claims share the work between them.
type Runner struct {
	store *Store
	heads Heads
	sub   Submitter
	log   *slog.Logger

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// NewRunner returns a Runner that takes due syncs from store and submits
// them through Submit with heads and sub. It logs to a's logger.
func NewRunner(a service.Archetype, store *Store, heads Heads, sub Submitter) (*Runner, error) {
	a = a.WithDefaults()
	if store == nil || heads == nil || sub == nil {
		return nil, errors.New("schedule: runner needs a store, heads and a submitter")
	}
	return &Runner{store: store, heads: heads, sub: sub, log: a.Logger}, nil
}

// Start starts the loop, which looks for due syncs every Config.Tick. It
// returns an error if the loop is already running. The loop ends when ctx
// ends or Stop is called.
func (r *Runner) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done != nil {
		return errors.New("schedule runner: already started")
	}
	ctx, cancel := context.WithCancel(ctx)
	r.cancel, r.done = cancel, make(chan struct{})
	go r.loop(ctx, r.done)
	return nil
}

// Stop stops the loop and waits for it to exit. It is safe to call twice
// or before Start.
func (r *Runner) Stop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel, r.done = nil, nil
	r.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

func (r *Runner) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(r.store.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := r.Step(ctx); err != nil && ctx.Err() == nil {
			r.log.ErrorContext(ctx, "scheduled syncs", "err", err)
		}
	}
}

// Step takes the syncs that are due (up to Config.Batch), submits each and
// forgets it. It returns the ids it submitted. A sync whose submit fails
// stays claimed; it is taken again when the lease runs out. One the
// pipeline refuses as invalid (fanout.ErrInvalidEvent) is dropped and
// logged, since every retry would fail the same way.
func (r *Runner) Step(ctx context.Context) ([]string, error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	due, err := r.store.Claim(ctx, token, r.store.cfg.Batch)
	if err != nil {
		return nil, err
	}
	var started []string
	var errs []error
	for _, sy := range due {
		// A sync scheduled before apps names none: it was for the one app
		// there was, which is the default app.
		sy.Event.App = cmp.Or(sy.Event.App, apps.Default)
		id, err := Submit(ctx, r.heads, r.sub, sy.Event)
		if errors.Is(err, fanout.ErrInvalidEvent) {
			// It would fail at every retry: drop it, loudly.
			r.log.ErrorContext(ctx, "scheduled sync dropped: the pipeline refuses it", "event", sy.Event.ID, "err", err)
			if _, err := r.store.Finish(ctx, sy.Event.ID, token); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("submit scheduled sync %s: %w", sy.Event.ID, err))
			continue
		}
		started = append(started, id)
		mine, err := r.store.Finish(ctx, id, token)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.log.InfoContext(ctx, "scheduled sync started", "event", id, "send_at", sy.SendAt, "late_ms", time.Since(sy.SendAt).Milliseconds(), "finished", mine)
	}
	return started, errors.Join(errs...)
}
