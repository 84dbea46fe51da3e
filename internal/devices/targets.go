package devices

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/keys"
)

// Target is what a push worker needs of a device at send time: where to
// send and whether the device still wants silent pushes.
type Target struct {
	Token       string // empty when the device is gone (deleted or pruned)
	Provider    string
	Platform    string
	Environment string
	App         string // the device's app (apps.Default for devices registered before apps)
	// Background is false when the user turned background sync off (or
	// the device is gone).
	Background bool
}

// Sendable reports whether the device exists and still wants silent
// pushes.
func (t Target) Sendable() bool { return t.Token != "" && t.Background }

// Targets reads the send targets of ids in one pipeline, in order; a
// device that does not exist has the zero Target.
func (r *Registry) Targets(ctx context.Context, ids []uint64) ([]Target, error) {
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, keys.Device(id), "tk", "pv", "pl", "en", "bg", "ap")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read push targets: %w", err)
	}
	out := make([]Target, len(ids))
	for i, c := range cmds {
		v := c.Val()
		tk, _ := v[0].(string)
		pv, _ := v[1].(string)
		pl, _ := v[2].(string)
		en, _ := v[3].(string)
		bg, _ := v[4].(string)
		ap, _ := v[5].(string)
		if ap == "" && tk != "" {
			ap = apps.Default
		}
		if en == "" && tk != "" {
			en = EnvProduction // a device of an app other than the default stores only sandbox
		}
		out[i] = Target{Token: tk, Provider: pv, Platform: pl, Environment: en, App: ap, Background: tk != "" && bg != "0"}
	}
	return out, nil
}
