package throttle

import (
	"bytes"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// decodePushFast decodes a push job payload in the exact form the throttle
// scripts write it (common.lua tail, decide.lua newTailOf): keys in that
// order, no whitespace, plain numbers, no alert, no escapes in strings
// (ids and feeds are plain in practice). It reports false for
// anything else (an alert, an escape in a string, a key out of place…),
// and the caller falls back to encoding/json, so a payload decodes to the
// same Push either way; the fast path only spares the reflection and the
// allocations of encoding/json on the push worker's hot path.
func decodePushFast(b []byte) (Push, bool) {
	d := fastDec{b: b}
	var p Push
	if !d.lit(`{"device":`) {
		return Push{}, false
	}
	ds, ok := d.str()
	if !ok {
		return Push{}, false
	}
	if p.Device, ok = parseUint(ds); !ok {
		return Push{}, false
	}
	if !d.lit(`,"events":`) {
		return Push{}, false
	}
	if p.Events, ok = d.strs(); !ok {
		return Push{}, false
	}
	if !d.lit(`,"dropped":`) {
		return Push{}, false
	}
	n, ok := d.int()
	if !ok || int64(int(n)) != n {
		return Push{}, false
	}
	p.Dropped = int(n)
	if !d.lit(`,"feeds":`) {
		return Push{}, false
	}
	if p.Feeds, ok = d.strs(); !ok {
		return Push{}, false
	}
	if !d.lit(`,"since":`) {
		return Push{}, false
	}
	if p.Since, p.Until, ok = d.ranges(); !ok {
		return Push{}, false
	}
	if !d.lit(`,"lane":`) {
		return Push{}, false
	}
	if p.Lane, ok = d.str(); !ok {
		return Push{}, false
	}
	if !d.lit(`,"reason":`) {
		return Push{}, false
	}
	if p.Reason, ok = d.str(); !ok {
		return Push{}, false
	}
	if !d.lit(`,"queued_at":`) {
		return Push{}, false
	}
	q, ok := d.int()
	if !ok || !d.lit("}") || d.i != len(d.b) {
		return Push{}, false
	}
	p.QueuedAt = time.UnixMilli(q)
	return p, true
}

// fastDec reads b from i on.
type fastDec struct {
	b []byte
	i int
}

// lit consumes s if the input continues with it.
func (d *fastDec) lit(s string) bool {
	if len(d.b)-d.i < len(s) || string(d.b[d.i:d.i+len(s)]) != s {
		return false
	}
	d.i += len(s)
	return true
}

// str reads a JSON string without escapes or control characters, in
// valid UTF-8 (what encoding/json would read the same).
func (d *fastDec) str() (string, bool) {
	if !d.lit(`"`) {
		return "", false
	}
	end := bytes.IndexByte(d.b[d.i:], '"')
	if end < 0 {
		return "", false
	}
	raw := d.b[d.i : d.i+end]
	for _, c := range raw {
		if c < 0x20 || c == '\\' {
			return "", false
		}
	}
	if !utf8.Valid(raw) {
		return "", false
	}
	d.i += end + 1
	return string(raw), true
}

// strs reads an array of strings; [] is an empty, non-nil slice, as
// encoding/json makes it.
func (d *fastDec) strs() ([]string, bool) {
	if !d.lit("[") {
		return nil, false
	}
	out := make([]string, 0, 2)
	if d.lit("]") {
		return out, true
	}
	for {
		s, ok := d.str()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		if d.lit("]") {
			return out, true
		}
		if !d.lit(",") {
			return nil, false
		}
	}
}

// ranges reads the scripts' cursor map, an object of integers, and splits
// it as unpackRange does: since, and until (nil when no key names an end).
// A key given twice keeps its last value, as in encoding/json.
func (d *fastDec) ranges() (since, until map[string]int64, ok bool) {
	if !d.lit("{") {
		return nil, nil, false
	}
	since = make(map[string]int64, 1)
	if d.lit("}") {
		return since, nil, true
	}
	for {
		k, ok := d.str()
		if !ok || !d.lit(":") {
			return nil, nil, false
		}
		v, ok := d.int()
		if !ok {
			return nil, nil, false
		}
		if f, end := strings.CutPrefix(k, untilPrefix); end {
			if until == nil {
				until = make(map[string]int64, 1)
			}
			until[f] = -v
		} else {
			since[k] = v
		}
		if d.lit("}") {
			return since, until, true
		}
		if !d.lit(",") {
			return nil, nil, false
		}
	}
}

// int reads a JSON integer: an optional minus, then 0 or digits without a
// leading zero; a fraction, an exponent or an overflow is left to
// encoding/json.
func (d *fastDec) int() (int64, bool) {
	neg := d.i < len(d.b) && d.b[d.i] == '-'
	if neg {
		d.i++
	}
	n, ok := d.digits()
	if !ok || (d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E')) {
		return 0, false
	}
	switch {
	case !neg && n <= math.MaxInt64:
		return int64(n), true
	case neg && n <= math.MaxInt64+1:
		return -int64(n-1) - 1, true
	}
	return 0, false
}

// digits reads 0 or digits without a leading zero as a uint64.
func (d *fastDec) digits() (uint64, bool) {
	start := d.i
	var n uint64
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		c := uint64(d.b[d.i] - '0')
		if n > (math.MaxUint64-c)/10 {
			return 0, false
		}
		n = n*10 + c
		d.i++
	}
	if d.i == start || (d.b[start] == '0' && d.i-start > 1) {
		return 0, false
	}
	return n, true
}

// parseUint parses the digits of a ",string" uint64 as encoding/json does
// for the form the scripts write: digits only, no sign, no leading zero.
func parseUint(s string) (uint64, bool) {
	d := fastDec{b: []byte(s)}
	n, ok := d.digits()
	return n, ok && d.i == len(d.b)
}
