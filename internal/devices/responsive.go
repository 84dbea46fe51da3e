package devices

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// Unresponsive devices.
//
// A device that got After silent pushes since its last receipt of any
// source (field "un") is unresponsive: iOS after a force-quit, Low Power
// Mode or Background App Refresh off wakes nothing, so its pushes only
// spend the app's budget at Apple. Its silent pushes back off: the k-th
// push past After (k = 0, 1, ...) goes out only Base·2^k (at most Cap)
// after the last one counted, and the pushes in between are held back
// (the push worker drops them and counts them "unresponsive"). Nothing is
// lost by that: the app syncs each feed from the smaller of the payload's
// cursor and its own, and a device that has not synced still holds the
// older one. Any receipt resumes the device at once (Resume, or LuaResume
// inside another script). Visible alerts are not held back.
//
// Counting is idempotent per push: "uk" keeps the time and the tag of the
// last push counted, so a retry or a redelivery of the same push (same
// collapse id) counts once.
//
// The number of unresponsive devices per platform is kept in the
// partition's counter hash unr:{pN}, moved when a device crosses After
// (field "ux" marks it) and when it resumes or is deleted, so reading it
// costs one HGETALL per partition, not a scan.

// Unresponsive is the back-off policy of unresponsive devices. Zero fields
// take the defaults.
type Unresponsive struct {
	// After is the number of silent pushes without a receipt that makes a
	// device unresponsive. Default 5.
	After int
	// Base is the wait before the first probe past After, counted from the
	// last push; each probe doubles it. Default 1h.
	Base time.Duration
	// Cap bounds the wait between two probes. Default 24h.
	Cap time.Duration
}

// WithDefaults fills the zero fields.
func (u Unresponsive) WithDefaults() Unresponsive {
	u.After = cmp.Or(u.After, 5)
	u.Base = cmp.Or(u.Base, time.Hour)
	u.Cap = cmp.Or(u.Cap, 24*time.Hour)
	return u
}

// Validate reports a policy that cannot work.
func (u Unresponsive) Validate() error {
	switch {
	case u.After < 1:
		return errors.New("unresponsive: After must be at least 1")
	case u.Base < time.Second:
		return errors.New("unresponsive: Base must be at least 1s")
	case u.Cap < u.Base:
		return errors.New("unresponsive: Cap must be at least Base")
	}
	return nil
}

// Silent is one silent push about to be sent.
type Silent struct {
	Device uint64
	// Collapse is the push's collapse id: the same push retried or
	// redelivered has the same one and is counted once.
	Collapse string
}

// LuaResume is the Lua fragment that defines device_resume(key, counters),
// which a receipt's script calls to make the device responsive again (see
// resume.lua). counters is UnresponsiveKey of the device's partition.
//
//go:embed resume.lua
var LuaResume string

// UnresponsiveKey is the counter hash of the partition of device id, the
// counters argument of LuaResume's device_resume; it shares the slot of
// Key(id).
func UnresponsiveKey(id uint64) string { return keys.Unresponsive(keys.Partition(id)) }

// LuaSend is the Lua fragment that defines device_target, device_held and
// device_count, through which the budget at the phone's admit script reads
// a device at send time and counts its silent pushes in the same call (see
// send.lua for the contract; TargetOf turns what device_target read into a
// Target).
//
//go:embed send.lua
var LuaSend string

//go:embed responsive.lua
var responsiveLua string

var responsiveScript = redis.NewScript(LuaSend + responsiveLua)

var resumeScript = redis.NewScript(LuaResume + "\nreturn device_resume(KEYS[1], KEYS[2])")

// CountSilent counts the silent pushes ps as sent to their devices (field
// "un") and says, per push, whether it may be sent (true) or is held back
// because its device is unresponsive and its next probe is not due before
// now (false). One script per partition, in one pipeline. A push whose
// device is gone or opted out is true and counts nothing. The push worker
// counts inside the budget at the phone's admit script instead (LuaSend,
// the same functions), so that a batch reads each device once; this is the
// count on its own, for callers without a phone budget (the tests of the
// back-off, fixtures that make a device unresponsive).
func (r *Registry) CountSilent(ctx context.Context, u Unresponsive, now time.Time, ps []Silent) ([]bool, error) {
	u = u.WithDefaults()
	if err := u.Validate(); err != nil {
		return nil, err
	}
	type call struct {
		keys []string
		args []any
		idx  []int
		cmd  *redis.Cmd
	}
	byPart := map[int]*call{}
	var calls []*call
	for i, p := range ps {
		part := keys.Partition(p.Device)
		c := byPart[part]
		if c == nil {
			c = &call{
				keys: []string{keys.Unresponsive(part)},
				args: []any{u.After, u.Base.Milliseconds(), u.Cap.Milliseconds(), now.UnixMilli()},
			}
			byPart[part] = c
			calls = append(calls, c)
		}
		c.keys = append(c.keys, keys.Device(p.Device))
		c.args = append(c.args, tag(p.Collapse))
		c.idx = append(c.idx, i)
	}
	out := make([]bool, len(ps))
	if len(calls) == 0 {
		return out, nil
	}
	pipe := r.rdb.Pipeline()
	for _, c := range calls {
		c.cmd = responsiveScript.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // errors are per command, checked below
	for _, c := range calls {
		if err := c.cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			c.cmd = responsiveScript.Run(ctx, r.rdb, c.keys, c.args...)
		}
		v, err := c.cmd.Int64Slice()
		if err != nil || len(v) != len(c.idx) {
			return nil, fmt.Errorf("count silent pushes: reply %v: %w", c.cmd.Val(), err)
		}
		for j, i := range c.idx {
			out[i] = v[j] == 1
		}
	}
	return out, nil
}

// Resume makes device id responsive again: its count of pushes since the
// last receipt is deleted and, if it was unresponsive, it leaves its
// platform's counter. It reports whether it was unresponsive. A receipt's
// script does the same through LuaResume.
func (r *Registry) Resume(ctx context.Context, id uint64) (bool, error) {
	n, err := resumeScript.Run(ctx, r.rdb, []string{keys.Device(id), UnresponsiveKey(id)}).Int()
	if err != nil {
		return false, fmt.Errorf("resume device %d: %w", id, err)
	}
	return n == 1, nil
}

// Pushes returns the count of silent pushes sent to device id since its
// last receipt ("un"), 0 for a device that is gone.
func (r *Registry) Pushes(ctx context.Context, id uint64) (int, error) {
	n, err := r.rdb.HGet(ctx, keys.Device(id), "un").Int()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("read pushes since receipt of device %d: %w", id, err)
	}
	return n, nil
}

// UnresponsiveCounts returns the number of unresponsive devices per
// platform: one HGETALL per partition, in one pipeline.
func (r *Registry) UnresponsiveCounts(ctx context.Context) (map[string]int64, error) {
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, keys.Partitions)
	for p := range keys.Partitions {
		cmds[p] = pipe.HGetAll(ctx, keys.Unresponsive(p))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read unresponsive counters: %w", err)
	}
	out := map[string]int64{PlatformAndroid: 0, PlatformIOS: 0}
	for _, c := range cmds {
		for pl, v := range c.Val() {
			n, _ := strconv.ParseInt(v, 10, 64)
			out[pl] += n
		}
	}
	return out, nil
}

// tag is the FNV-1a digest of a collapse id in 8 hex digits.
func tag(collapse string) string {
	h := uint32(2166136261)
	for i := 0; i < len(collapse); i++ {
		h ^= uint32(collapse[i])
		h *= 16777619
	}
	return fmt.Sprintf("%08x", h)
}
