package devices

import (
	"cmp"
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
		out[i] = TargetOf(tk, pv, pl, en, ap, bg != "0")
	}
	return out, nil
}

// TargetOf is the Target of a device hash's fields tk, pv, pl, en and ap
// as stored ("" for an absent field; tk "" when the device is gone), with
// background false when "bg" is "0".
func TargetOf(tk, pv, pl, en, ap string, background bool) Target {
	if tk == "" {
		return Target{}
	}
	return Target{
		Token: tk, Provider: pv, Platform: pl,
		Environment: cmp.Or(en, EnvProduction), // a device of an app other than the default stores only sandbox
		App:         cmp.Or(ap, apps.Default),
		Background:  background,
	}
}
