package devices

import (
	"context"
	"errors"
	"fmt"
	"math/bits"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/keys"
)

// The registry owns the subscription bitmaps (keys.SubChunk) and the id
// sequence (keys.DeviceSeq). Fan-out walks them through Subscribers and
// MaxID; the caller that deletes a feed from the catalogue clears its
// bitmaps with DropFeed.

// MaxWindow is the largest window Subscribers reads in one call: one
// bitmap chunk of 65,536 ids.
const MaxWindow = 1 << keys.SubChunkBits

// MaxWalkFeeds is the most feeds one Subscribers call walks together (a
// Subscriber's Feeds mask has one bit per feed).
const MaxWalkFeeds = 64

// ErrBadWindow is returned by Subscribers for a window it cannot read.
var ErrBadWindow = errors.New("bad subscriber window")

// Subscriber is a device subscribed to at least one of the feeds a
// Subscribers call asked for.
type Subscriber struct {
	ID uint64
	// Feeds has bit i set when the device follows feeds[i].
	Feeds uint64
}

// MaxID returns the highest device id handed out so far (0 when none).
// Every device id is at most MaxID.
func (r *Registry) MaxID(ctx context.Context) (uint64, error) {
	n, err := r.rdb.Get(ctx, keys.DeviceSeq()).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("read device sequence: %w", err)
	}
	return n, nil
}

// Subscribers returns the devices of app with ids in [start, start+n)
// subscribed to any of feeds, ascending, each with the mask of the feeds it
// follows. An empty app walks every app: the default app and each app of
// the catalogue that offers the feed (a feed change reaches every app's
// subscribers); a named app walks only its own bitmaps, so its devices are
// the only ones listed even for a feed id other apps offer too.
// n is a power of two from 8 to MaxWindow and start a multiple of n, so the
// window lies in one bitmap chunk; the feeds' slices are read in one
// pipeline. A device deleted since it subscribed may still be listed
// until its bits are cleared: callers skip ids without a device.
func (r *Registry) Subscribers(ctx context.Context, app string, feeds []string, start uint64, n int) ([]Subscriber, error) {
	if n < 8 || n > MaxWindow || n&(n-1) != 0 || start%uint64(n) != 0 {
		return nil, fmt.Errorf("window of %d ids at %d: want a power of two from 8 to %d at a multiple of it: %w", n, start, MaxWindow, ErrBadWindow)
	}
	if len(feeds) > MaxWalkFeeds {
		return nil, fmt.Errorf("%d feeds: want at most %d: %w", len(feeds), MaxWalkFeeds, ErrBadWindow)
	}
	k, bit := keys.SubChunkOf(start)
	from := bit / 8
	to := from + int64(n/8) - 1
	scope := r.walkApps(app)
	pipe := r.rdb.Pipeline()
	cmds := make([][]*redis.StringCmd, len(feeds))
	for i, f := range feeds {
		for _, a := range scope {
			if a.Offers(f) {
				cmds[i] = append(cmds[i], pipe.GetRange(ctx, keys.AppSubChunk(a.ID, f, k), from, to))
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read subscriptions: %w", err)
	}
	var union []byte
	maps := make([][]byte, len(cmds))
	for f, cs := range cmds {
		for _, c := range cs {
			b, _ := c.Bytes()
			if len(b) > len(maps[f]) {
				b, maps[f] = maps[f], append(make([]byte, 0, n/8), b...)
			}
			for i := range b {
				maps[f][i] |= b[i]
			}
		}
		b := maps[f]
		if len(b) > len(union) {
			b, union = union, append(make([]byte, 0, n/8), b...)
		}
		for i := range b {
			union[i] |= b[i]
		}
	}
	var subs []Subscriber
	for i, b := range union {
		for b != 0 {
			// SETBIT numbers bits from the most significant bit of each byte.
			j := bits.LeadingZeros8(b)
			bit := byte(0x80) >> j
			var mask uint64
			for f, m := range maps {
				if i < len(m) && m[i]&bit != 0 {
					mask |= 1 << f
				}
			}
			subs = append(subs, Subscriber{ID: start + uint64(i*8+j), Feeds: mask})
			b &^= bit
		}
	}
	return subs, nil
}

// walkApps returns the apps whose bitmaps a walk of app reads: app alone,
// or (app "") the default app and every app of the catalogue. An app
// missing from the catalogue offers every feed here: its devices keep what
// they subscribed to.
func (r *Registry) walkApps(app string) []apps.App {
	if app != "" {
		if r.cfg.Apps != nil {
			if a, ok := r.cfg.Apps.Current().Get(app); ok {
				return []apps.App{a}
			}
		}
		return []apps.App{{ID: app}}
	}
	all := []apps.App{{ID: apps.Default}}
	if r.cfg.Apps != nil {
		for _, a := range r.cfg.Apps.Current().All() {
			if a.ID == apps.Default {
				all[0] = a
			} else {
				all = append(all, a)
			}
		}
	}
	return all
}

// DropFeed deletes every subscription bitmap chunk of feed, in every app,
// up to the highest device id. The caller that deletes a feed removes its catalogue
// entry first (so no new subscription is accepted), then calls DropFeed;
// repeating it after a crash finishes the cleanup. Devices keep the id in
// their feed list; without bits they get no pushes for it.
func (r *Registry) DropFeed(ctx context.Context, feed string) error {
	maxID, err := r.MaxID(ctx)
	if err != nil {
		return fmt.Errorf("drop subscriptions of feed %s: %w", feed, err)
	}
	last, _ := keys.SubChunkOf(maxID)
	scope := r.walkApps("")
	batch := max(1, 256/len(scope))
	for lo := 0; lo <= last; lo += batch {
		pipe := r.rdb.Pipeline()
		for k := lo; k <= min(last, lo+batch-1); k++ {
			for _, a := range scope {
				pipe.Del(ctx, keys.AppSubChunk(a.ID, feed, k))
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("drop subscriptions of feed %s: %w", feed, err)
		}
	}
	return nil
}
