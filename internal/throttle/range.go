package throttle

import "strings"

// A push names, per feed, a closed cursor range (since, until]: the items
// the app should read, the same for every device one event wakes, so
// their sync reads share one cacheable URL. The scripts keep one map of
// cursors per pending push and merge it by the smaller cursor per key
// (common.lua, PC); the range's end rides in the same map under the key
// untilPrefix+feed, negated, so the same merge keeps the larger end. A
// merged push thus names the union of its updates' ranges. The prefix
// cannot start a feed id (catalog: [a-z0-9][a-z0-9-]*).
const untilPrefix = "~"

// packRange returns the scripts' cursor map of since and until.
func packRange(since, until map[string]int64) map[string]int64 {
	if len(until) == 0 {
		return since
	}
	out := make(map[string]int64, len(since)+len(until))
	for f, c := range since {
		out[f] = c
	}
	for f, c := range until {
		out[untilPrefix+f] = -c
	}
	return out
}

// unpackRange splits the scripts' cursor map into since and until (nil
// when no entry names an end).
func unpackRange(m map[string]int64) (since, until map[string]int64) {
	for k := range m {
		if strings.HasPrefix(k, untilPrefix) {
			until = make(map[string]int64, len(m)/2)
			break
		}
	}
	if until == nil {
		return m, nil
	}
	since = make(map[string]int64, len(m)-len(until))
	for k, c := range m {
		if f, ok := strings.CutPrefix(k, untilPrefix); ok {
			until[f] = -c
		} else {
			since[k] = c
		}
	}
	return since, until
}
