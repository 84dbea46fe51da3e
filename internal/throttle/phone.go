package throttle

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
// long to wait. The same script reads the device at send time (a device
// deleted or opted out since planning gets nothing) and holds back and
// counts silent pushes of unresponsive devices (devices.LuaSend), so a
// batch costs one script call per partition for all three.
//
// Admit reserves the send time at now + AdmitOptions.Ahead. Settle then
// records the outcome: a push the provider refused is released; a
// delivered push's time moves to the provider's answer (no earlier than
// its arrival at the phone), which the worker skips when the answer came
// within Ahead, the reservation being at or past it already; a push whose
// fate is unknown (a timeout) keeps its reservation, which errs on the
// strict side.
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

// Settlement is what Settle records for an admitted attempt. An attempt
// without an answer (a timeout, a transport error) is not settled: it may
// have reached the phone, and its reservation stays.
type Settlement int

// The settlements.
const (
	// Delivered: the provider accepted the push; its time becomes now.
	Delivered Settlement = iota + 1
	// Refused: the provider answered with an error; the push did not reach
	// the phone, and its reservation is released.
	Refused
)

// admitScript checks a batch of attempts just before sending; see admit.lua.
var admitScript = redis.NewScript(luaPhone + devices.LuaSend + luaPolicies + admitLua)

// settleScript records the outcome of admitted attempts; see settle.lua.
var settleScript = redis.NewScript(luaPhone + settleLua)

// AdmitOptions are Admit's settings besides the attempts.
type AdmitOptions struct {
	// Now is the push worker's clock, on which the unresponsive back-off
	// runs (devices.Unresponsive).
	Now time.Time
	// Unresponsive is the back-off of devices that stopped answering.
	Unresponsive devices.Unresponsive
	// Ahead moves each reservation past the Redis clock's now: the push
	// counts as at the phone from now+Ahead. A caller whose admitted
	// pushes were all answered within Ahead of calling Admit need not
	// settle them as Delivered: their reservation already lies at or after
	// the answer.
	Ahead time.Duration
}

// Admission is Admit's answer for one attempt.
type Admission struct {
	// Gone is true when the device is gone (deleted, pruned) or its user
	// turned background sync off: nothing was reserved.
	Gone bool
	// Held is true for a silent push to an unresponsive device whose next
	// probe is not due: it is not sent, and nothing was reserved.
	Held bool
	// Wait, when above zero, is how long the attempt must wait: it was not
	// admitted.
	Wait time.Duration
	// Target is the device at send time, read in the same script, of an
	// admitted or held attempt.
	Target devices.Target
}

// Admitted reports whether the attempt may be sent now: its send time is
// reserved and, if it is silent, it was counted at its device.
func (a Admission) Admitted() bool { return !a.Gone && !a.Held && a.Wait <= 0 }

// Admit checks, just before sending, each attempt against its device at
// send time, in one script call per partition, pipelined: it reads the
// device's target (Admission.Target), holds back a silent push to an
// unresponsive device (devices.Unresponsive) and checks that the attempt
// respects the device's budget at the phone. An admitted attempt has its
// send time reserved and, if silent, is counted at its device (once per
// collapse id).
func (t *Throttle) Admit(ctx context.Context, attempts []Attempt, opt AdmitOptions) ([]Admission, error) {
	u := opt.Unresponsive.WithDefaults()
	if err := u.Validate(); err != nil {
		return nil, err
	}
	byPart := map[int][]int{}
	for i, a := range attempts {
		p := keys.Partition(a.Device)
		byPart[p] = append(byPart[p], i)
	}
	head := append(slices.Clip(t.policyArgs(ctx)), opt.Ahead.Milliseconds(), opt.Now.UnixMilli(), u.After, u.Base.Milliseconds(), u.Cap.Milliseconds())
	var calls []*call
	var order [][]int
	for p, idx := range byPart {
		c := &call{keys: make([]string, 2, 2+len(idx)), args: make([]any, len(head), len(head)+2*len(idx))}
		c.keys[0], c.keys[1] = keys.Throttle(p), devices.UnresponsiveKey(attempts[idx[0]].Device)
		copy(c.args, head)
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
	out := make([]Admission, len(attempts))
	for k, c := range calls {
		v, err := c.cmd.Slice()
		if err != nil || len(v) != len(order[k]) {
			return nil, fmt.Errorf("admit pushes at the phone: script reply %v: %w", c.cmd.Val(), err)
		}
		for j, i := range order[k] {
			if out[i], err = admission(v[j]); err != nil {
				return nil, fmt.Errorf("admit pushes at the phone: %w", err)
			}
		}
	}
	return out, nil
}

// admission parses one attempt's reply of admit.lua: a code and its
// fields, joined by US.
func admission(r any) (Admission, error) {
	s, _ := r.(string)
	code, rest, _ := strings.Cut(s, "\x1f")
	switch code {
	case "0", "3":
		f := strings.Split(rest, "\x1f")
		if len(f) != 5 || f[0] == "" {
			break
		}
		return Admission{Held: code == "3", Target: devices.TargetOf(f[0], f[1], f[2], f[3], f[4], true)}, nil
	case "1":
		ms, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			break
		}
		return Admission{Wait: time.Duration(max(ms, 1)) * time.Millisecond}, nil
	case "2":
		return Admission{Gone: true}, nil
	}
	return Admission{}, fmt.Errorf("script reply %q", s)
}

// Settle records what became of admitted attempts; s[i] belongs to
// attempts[i].
func (t *Throttle) Settle(ctx context.Context, attempts []Attempt, s []Settlement) error {
	byPart := map[int]*call{}
	var calls []*call
	for i, a := range attempts {
		var what string
		switch s[i] {
		case Delivered:
			what = "d"
		case Refused:
			what = "r"
		default:
			return fmt.Errorf("settle pushes at the phone: settlement %d of device %d", s[i], a.Device)
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
