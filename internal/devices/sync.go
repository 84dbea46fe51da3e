package devices

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// The receipts of every source (push, background fetch, foreground) leave
// three fields on the device hash, written by RecordSync in one script:
//
//	sy        unix ms of the device's last receipt (Redis's clock)
//	c:<feed>  the last cursor of <feed> the device synced; absent = never
//	un        silent pushes sent since the last receipt; a receipt deletes it

// syncScript records a receipt on a device hash; see sync.lua.
//
//go:embed sync.lua
var syncLua string

var syncScript = redis.NewScript(LuaResume + syncLua)

// NeverSynced is Advance.From of a feed the device had no cursor of.
const NeverSynced = -1

// Advance is a feed whose cursor a receipt moved forward, from From
// (NeverSynced if none) to To.
type Advance struct {
	Feed     string
	From, To int64
}

// Synced is what RecordSync did to a device.
type Synced struct {
	Platform string
	// Background is the device's background-sync setting.
	Background bool
	// At is the time written to sy (Redis's clock).
	At time.Time
	// Advanced lists the feeds whose cursor moved forward, in the order
	// given.
	Advanced []Advance
}

// RecordSync records a receipt of device id: sy becomes Redis's now, un
// is deleted, and each cursor of a feed the device follows is stored when
// it is above the stored one (a late receipt never lowers it). Cursors of
// feeds the device does not follow are ignored. One script, one round
// trip. A device that does not exist is ErrNotFound.
func (r *Registry) RecordSync(ctx context.Context, id uint64, cursors map[string]int64) (Synced, error) {
	args := make([]any, 0, 2*len(cursors))
	for f, c := range cursors {
		args = append(args, f, c)
	}
	res, err := syncScript.Run(ctx, r.rdb, []string{keys.Device(id), UnresponsiveKey(id)}, args...).Slice()
	if errors.Is(err, redis.Nil) {
		return Synced{}, ErrNotFound
	}
	if err != nil {
		return Synced{}, fmt.Errorf("record sync of device %d: %w", id, err)
	}
	if len(res) < 3 || (len(res)-3)%3 != 0 {
		return Synced{}, fmt.Errorf("record sync of device %d: unexpected reply %v", id, res)
	}
	pl, _ := res[0].(string)
	bg, _ := res[1].(string)
	ms, _ := res[2].(int64)
	out := Synced{Platform: pl, Background: bg != "0", At: time.UnixMilli(ms)}
	for i := 3; i < len(res); i += 3 {
		f, _ := res[i].(string)
		from, _ := res[i+1].(int64)
		to, _ := res[i+2].(int64)
		out.Advanced = append(out.Advanced, Advance{Feed: f, From: from, To: to})
	}
	return out, nil
}

// Cursor returns the cursor of feed that device id last synced, and false
// when it never did (or the device is gone).
func (r *Registry) Cursor(ctx context.Context, id uint64, feed string) (int64, bool, error) {
	s, err := r.rdb.HGet(ctx, keys.Device(id), "c:"+feed).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read cursor of device %d: %w", id, err)
	}
	c, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("read cursor of device %d: %q: %w", id, s, err)
	}
	return c, true, nil
}

// LastSync returns the time of device id's last receipt (sy), zero when
// it has none.
func (r *Registry) LastSync(ctx context.Context, id uint64) (time.Time, error) {
	ms, err := r.rdb.HGet(ctx, keys.Device(id), "sy").Int64()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read last sync of device %d: %w", id, err)
	}
	return time.UnixMilli(ms), nil
}

// Audience counts, per platform, the devices subscribed to feed that
// exist and have background sync on: the devices a new item of the feed
// should reach. It walks the feed's subscription bitmaps and reads each
// subscriber's platform and setting, so it costs one read per subscriber;
// callers cache it (freshness takes it at most once per feed per few
// minutes).
func (r *Registry) Audience(ctx context.Context, feed string) (map[string]int64, error) {
	maxID, err := r.MaxID(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for start := uint64(0); start <= maxID; start += MaxWindow {
		subs, err := r.Subscribers(ctx, "", []string{feed}, start, MaxWindow) // every app's
		if err != nil {
			return nil, err
		}
		if len(subs) == 0 {
			continue
		}
		ids := make([]uint64, len(subs))
		for i, s := range subs {
			ids[i] = s.ID
		}
		ts, err := r.Targets(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, t := range ts {
			if t.Sendable() {
				out[t.Platform]++
			}
		}
	}
	return out, nil
}
