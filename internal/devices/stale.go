package devices

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// The stale sweep (internal/stale) reads what tells whether a device is
// stale (sy and c:<feed>, written by RecordSync, and ct) through
// Freshness, and leaves one field of its own on the devices it nudged:
//
//	sn  unix ms of the device's last stale nudge (Redis's clock)

// markScript sets sn on the devices of one partition; see stale.lua.
//
//go:embed stale.lua
var staleLua string

var markScript = redis.NewScript(staleLua)

// freshnessBatch is how many devices one Freshness pipeline reads.
const freshnessBatch = 1024

// Freshness is what the stale sweep reads of one device.
type Freshness struct {
	// Exists is false for an id without a device hash.
	Exists bool
	// Last is the latest of the device's last receipt (sy), its last
	// stale nudge (sn) and its registration (ct), in unix ms: the device
	// has been left alone since Last.
	Last int64
	// Cursors holds, for each feed asked for, the last cursor of it the
	// device synced (c:<feed>), 0 when it never synced that feed.
	Cursors []int64
}

// Freshness returns the Freshness of each device ids[i] for the feeds
// feeds[i], read with one HMGET per device in pipelines of 1,024. It adds
// nothing to the device hash.
func (r *Registry) Freshness(ctx context.Context, ids []uint64, feeds [][]string) ([]Freshness, error) {
	if len(ids) != len(feeds) {
		return nil, fmt.Errorf("freshness of %d devices with %d feed lists: want one list per device", len(ids), len(feeds))
	}
	out := make([]Freshness, len(ids))
	for lo := 0; lo < len(ids); lo += freshnessBatch {
		hi := min(len(ids), lo+freshnessBatch)
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, hi-lo)
		for i := lo; i < hi; i++ {
			fields := make([]string, 0, 3+len(feeds[i]))
			fields = append(fields, "ct", "sy", "sn")
			for _, f := range feeds[i] {
				fields = append(fields, "c:"+f)
			}
			cmds[i-lo] = pipe.HMGet(ctx, keys.Device(ids[i]), fields...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("read freshness of devices %d-%d: %w", ids[lo], ids[hi-1], err)
		}
		for i := lo; i < hi; i++ {
			v := cmds[i-lo].Val()
			ct, ok := v[0].(string)
			if !ok {
				continue // no hash: every device has ct
			}
			fr := Freshness{Exists: true, Cursors: make([]int64, len(v)-3)}
			if s, err := strconv.ParseInt(ct, 10, 64); err == nil {
				fr.Last = s * 1000
			}
			for _, x := range v[1:3] {
				if s, ok := x.(string); ok {
					if ms, err := strconv.ParseInt(s, 10, 64); err == nil && ms > fr.Last {
						fr.Last = ms
					}
				}
			}
			for j, x := range v[3:] {
				if s, ok := x.(string); ok {
					fr.Cursors[j], _ = strconv.ParseInt(s, 10, 64)
				}
			}
			out[i] = fr
		}
	}
	return out, nil
}

// MarkNudged sets sn of each device of ids that exists to Redis's now:
// the stale sweep nudged it, so it is not stale again before
// NUDGE_STALE_AFTER has passed once more. One script call per partition,
// pipelined; a device that is gone is not recreated.
func (r *Registry) MarkNudged(ctx context.Context, ids []uint64) error {
	var groups [keys.Partitions][]string
	for _, id := range ids {
		p := keys.Partition(id)
		groups[p] = append(groups[p], keys.Device(id))
	}
	pipe := r.rdb.Pipeline()
	var cmds []*redis.Cmd
	var batches [][]string
	for _, ks := range groups {
		if len(ks) > 0 {
			cmds = append(cmds, markScript.EvalSha(ctx, pipe, ks))
			batches = append(batches, ks)
		}
	}
	if len(cmds) == 0 {
		return nil
	}
	_, _ = pipe.Exec(ctx) // errors are per command, checked below
	for i, c := range cmds {
		err := c.Err()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = markScript.Run(ctx, r.rdb, batches[i]).Err()
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("mark %d devices nudged: %w", len(ids), err)
		}
	}
	return nil
}
