package devices

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// Profile is what an editor's audience filter can look at of a device.
// A device that does not exist has the zero Profile and Exists false.
type Profile struct {
	Exists     bool
	Platform   string
	Locale     string
	AppVersion string
}

// Profiles reads the profiles of ids in one pipeline, in order.
func (r *Registry) Profiles(ctx context.Context, ids []uint64) ([]Profile, error) {
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, keys.Device(id), "tk", "pl", "lo", "av")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read device profiles: %w", err)
	}
	out := make([]Profile, len(ids))
	for i, c := range cmds {
		v := c.Val()
		tk, _ := v[0].(string)
		pl, _ := v[1].(string)
		lo, _ := v[2].(string)
		av, _ := v[3].(string)
		out[i] = Profile{Exists: tk != "", Platform: pl, Locale: lo, AppVersion: av}
	}
	return out, nil
}
