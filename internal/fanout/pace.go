package fanout

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// paceScript reserves wake slots of a feed; pace.lua states its contract.
//
//go:embed pace.lua
var paceLua string

var paceScript = redis.NewScript(paceLua)

// paceSlices is how many slices a second of the wake rate is planned in:
// at 200 pushes per second, 20 devices every 100 ms.
const paceSlices = 10

// pacer spaces the pushes a feed's events plan at Config.WakeRate per
// feed, across every planner replica: the slots are reserved in Redis on
// its clock (pace.lua), so the replicas share one schedule per feed. It
// paces the devices handed to the throttle, so a device the throttle then
// defers or coalesces uses a slot too: the rate is an upper bound.
type pacer struct {
	rdb      redis.UniversalClient
	rate     int
	interval int64 // µs between two slots
}

func newPacer(rdb redis.UniversalClient, rate int) *pacer {
	return &pacer{rdb: rdb, rate: rate, interval: int64(time.Second/time.Microsecond) / int64(rate)}
}

// chunk is how many devices one reservation covers.
func (p *pacer) chunk() int { return max(1, p.rate/paceSlices) }

// window is the subscription window a paced plan walks: a power of two of
// at most the rate (and at least 8), so one window is planned within
// about a second and a plan slice that runs out of time loses little.
func (p *pacer) window(limit int) int {
	w := 8
	for w*2 <= p.rate && w*2 <= limit {
		w *= 2
	}
	return w
}

// wait reserves n slots of each of feeds and waits for the latest first
// slot among them: a push that names several feeds counts against each.
func (p *pacer) wait(ctx context.Context, feeds []string, n int) error {
	var wait int64
	for _, f := range feeds {
		w, err := paceScript.Run(ctx, p.rdb, []string{keys.Pace(f)}, n, p.interval).Int64()
		if err != nil {
			return fmt.Errorf("pace feed %s: %w", f, err)
		}
		wait = max(wait, w)
	}
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(wait) * time.Microsecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
