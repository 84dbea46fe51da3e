package delivery

import (
	"context"
	"fmt"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/stats"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// Unresponsive devices (devices.Unresponsive): every silent push of a
// batch is counted at its device before it is sent, in one script per
// partition that runs while the batch's devices are read; a push whose
// device is unresponsive and not due for a probe is dropped and counted
// "unresponsive" in its events' progress and in stats. Alert-lane pushes
// are visible, so they are neither counted nor held back.

// countSilent starts counting the silent pushes among items at their
// devices; wait returns, per item, whether it is held back.
func (h *Handler) countSilent(ctx context.Context, items []*item) (wait func() (map[*item]bool, error)) {
	var silent []*item
	var ps []devices.Silent
	for _, it := range items {
		if it.push.Lane != throttle.LaneAlert {
			silent = append(silent, it)
			ps = append(ps, devices.Silent{Device: it.push.Device, Collapse: it.push.CollapseID()})
		}
	}
	done := make(chan struct{})
	var send []bool
	var err error
	go func() {
		defer close(done)
		if len(ps) > 0 {
			send, err = h.devices.CountSilent(ctx, h.cfg.Unresponsive, h.now(), ps)
		}
	}()
	return func() (map[*item]bool, error) {
		<-done
		if err != nil {
			return nil, fmt.Errorf("count silent pushes: %w", err)
		}
		held := map[*item]bool{}
		for i, ok := range send {
			if !ok {
				held[silent[i]] = true
			}
		}
		return held, nil
	}
}

// holdUnresponsive drops the held items (already composed by lookup) and
// counts them; it returns the others.
func (h *Handler) holdUnresponsive(ctx context.Context, o *jobs.Outcomes, items []*item, held map[*item]bool) []*item {
	if len(held) == 0 {
		return items
	}
	tally := newTally()
	kept := items[:0]
	for _, it := range items {
		if !held[it] {
			kept = append(kept, it)
			continue
		}
		o.Drop(it.job)
		tally.add(it, stats.Unresponsive, fanout.OutcomeUnresponsive)
	}
	h.flush(ctx, tally)
	return kept
}
