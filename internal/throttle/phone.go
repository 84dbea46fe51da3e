package throttle

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/keys"
)

// The budget at the phone.
//
// Decide and Step space pushes by the time they are queued. A push can
// still reach the phone later than queued: a retry after a 503, a
// redelivery after a crash, or a worker that picked it up late. Without a
// second check such a push could land right before or after the device's
// next one. So the push worker asks Admit just before it sends: a push
// goes out only if, at the Redis clock, it is at least the device's gap
// after every other push that may have reached the phone, and the
// device's last K such pushes span at least W; otherwise Admit says how
// long to wait. Admit reserves the send time. Settle then records the
// outcome: a delivered push's time moves to the provider's answer (no
// earlier than its arrival at the phone), a push the provider refused is
// released, and a push whose fate is unknown (a timeout) keeps its
// reservation, which errs on the strict side.
//
// The log lives in field "p<id>" of thr:{pN}: at most K entries
// tag RS ms, joined by US, where tag is an 8-hex-digit digest of the push's
// collapse id. A re-attempt of the same push replaces its own entry rather
// than waiting for it. Entries older than max(W, gap) are dropped on every
// write, and Forget (and the scripts' cleanup of deleted devices) removes
// the field.

// Attempt is one push the worker is about to send.
type Attempt struct {
	Device   uint64
	Collapse string // the push's collapse id (Push.CollapseID)
	// Alert marks an alert-lane push: it is admitted at once (visible
	// pushes are not under the silent budget) and its time is logged, so
	// silent pushes keep their gap after it.
	Alert bool
}

// tag is the FNV-1a digest of the collapse id in 8 hex digits.
func (a Attempt) tag() string {
	const hexDigits = "0123456789abcdef"
	h := uint32(2166136261)
	for i := 0; i < len(a.Collapse); i++ {
		h ^= uint32(a.Collapse[i])
		h *= 16777619
	}
	var b [8]byte
	for i := 7; i >= 0; i-- {
		b[i] = hexDigits[h&0xf]
		h >>= 4
	}
	return string(b[:])
}

// Settlement is what Settle records for an admitted attempt.
type Settlement int

// The settlements.
const (
	// Delivered: the provider accepted the push; its time becomes now.
	Delivered Settlement = iota + 1
	// Refused: the provider answered with an error; the push did not reach
	// the phone, and its reservation is released.
	Refused
	// Unknown: no answer (timeout, transport); the reservation stays.
	Unknown
)

// admitScript checks and reserves the send time of a batch of attempts
// at the phone; see admit.lua.
var admitScript = redis.NewScript(luaPhone + devices.LuaPolicy + luaPolicies + admitLua)

// settleScript records the outcome of admitted attempts; see settle.lua.
var settleScript = redis.NewScript(luaPhone + settleLua)

// Admit checks, just before sending, that each attempt respects its
// device's budget at the phone, and reserves the send time of those that
// do. It returns, per attempt, 0 (send now) or how long to wait.
func (t *Throttle) Admit(ctx context.Context, attempts []Attempt) ([]time.Duration, error) {
	byPart := map[int][]int{}
	for i, a := range attempts {
		p := keys.Partition(a.Device)
		byPart[p] = append(byPart[p], i)
	}
	pol := t.policyArgs(ctx)
	var calls []*call
	var order [][]int
	for p, idx := range byPart {
		c := &call{keys: []string{keys.Throttle(p)}, args: append([]any(nil), pol...)}
		for _, i := range idx {
			a := attempts[i]
			c.keys = append(c.keys, devices.Key(a.Device))
			tag := a.tag()
			if a.Alert {
				tag = "!" + tag
			}
			c.args = append(c.args, strconv.FormatUint(a.Device, 10), tag)
		}
		calls = append(calls, c)
		order = append(order, idx)
	}
	if err := t.run(ctx, admitScript, calls); err != nil {
		return nil, fmt.Errorf("admit pushes at the phone: %w", err)
	}
	waits := make([]time.Duration, len(attempts))
	for k, c := range calls {
		v, err := c.cmd.Int64Slice()
		if err != nil || len(v) != len(order[k]) {
			return nil, fmt.Errorf("admit pushes at the phone: script reply %v: %w", c.cmd.Val(), err)
		}
		for j, i := range order[k] {
			waits[i] = time.Duration(v[j]) * time.Millisecond
		}
	}
	return waits, nil
}

// Settle records what became of admitted attempts; s[i] belongs to
// attempts[i]. Unknown outcomes keep their reservation and cost nothing.
func (t *Throttle) Settle(ctx context.Context, attempts []Attempt, s []Settlement) error {
	byPart := map[int]*call{}
	var calls []*call
	for i, a := range attempts {
		what := ""
		switch s[i] {
		case Delivered:
			what = "d"
		case Refused:
			what = "r"
		default:
			continue
		}
		p := keys.Partition(a.Device)
		c, ok := byPart[p]
		if !ok {
			c = &call{keys: []string{keys.Throttle(p)}}
			byPart[p] = c
			calls = append(calls, c)
		}
		c.args = append(c.args, strconv.FormatUint(a.Device, 10), a.tag(), what)
	}
	if err := t.run(ctx, settleScript, calls); err != nil {
		return fmt.Errorf("settle pushes at the phone: %w", err)
	}
	return nil
}
