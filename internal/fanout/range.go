package fanout

// withRangeEnd adds the end of ev's range of feed to until, if ev names
// one, and returns it: a push names the closed range (since, until] of
// each feed, the same for every device the event wakes (throttle's
// range.go carries it to the payload).
func withRangeEnd(until map[string]int64, ev Event, feed string) map[string]int64 {
	c, ok := ev.Until[feed]
	if !ok {
		return until
	}
	if until == nil {
		until = map[string]int64{}
	}
	until[feed] = c
	return until
}
