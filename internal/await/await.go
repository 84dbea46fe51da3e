// Package await lets a test wait for something another goroutine or
// process will make true: a Redis state, a counter, an emulator's record,
// an HTTP answer. It polls a condition, first every millisecond and then
// less often, until it holds, and fails the test with what it waited for
// when it does not hold in time.
//
// It is the one poll-until helper of nudge's tests:
//
//	await.Until(t, "the job acked", func() bool { return depth(t) == 0 })
//	await.Within(t, 5*time.Second, "the key refused", func() bool { return status(t) == 401 })
//	await.Poll{Timeout: time.Minute}.Check(t, "healthz 200", func() error { return healthz(base) })
//
// Prefer waiting on a channel when the code under test offers one, and
// testing/synctest when it uses only in-process time; poll for state that
// has no signal.
package await

import (
	"cmp"
	"errors"
	"testing"
	"time"
)

// Timeout is how long Until waits, and Poll's default: long enough for a
// loaded 2-core machine, so that only a condition that never comes true
// fails.
const Timeout = 20 * time.Second

// Interval is Poll's default longest pause between two checks.
const Interval = 20 * time.Millisecond

// errNotYet is what Until's check reports while its condition is false.
var errNotYet = errors.New("condition not met")

// Poll is a poll-until with its own timeout and pause. The zero value
// waits Timeout and pauses at most Interval.
type Poll struct {
	// Timeout is how long to wait before failing the test. Default Timeout.
	Timeout time.Duration
	// Interval is the longest pause between two checks: the first pause
	// is a millisecond, and each next one twice as long up to Interval.
	// Default Interval.
	Interval time.Duration
}

// Until calls cond until it returns true; it fails tb (Fatalf) with what
// when cond has not returned true within Timeout.
func Until(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	Poll{}.Until(tb, what, cond)
}

// Within is Until with its own timeout, for a test whose subject is a
// bound on time (a key refused within 5 s) or a step known to be slow.
func Within(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	Poll{Timeout: timeout}.Until(tb, what, cond)
}

// Until calls cond until it returns true; it fails tb (Fatalf) with what
// when cond has not returned true within p.Timeout.
func (p Poll) Until(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	p.Check(tb, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// Check calls check until it returns nil; it fails tb (Fatalf) with what
// and check's last error when check has not returned nil within
// p.Timeout. check's error says why the condition does not hold yet (the
// last status, the last count), so a failure shows how far it got. check
// runs on the calling goroutine and may itself fail tb, for a state that
// makes waiting pointless (the process under test exited).
func (p Poll) Check(tb testing.TB, what string, check func() error) {
	tb.Helper()
	timeout := cmp.Or(p.Timeout, Timeout)
	longest := cmp.Or(p.Interval, Interval)
	deadline := time.Now().Add(timeout)
	pause := min(time.Millisecond, longest)
	for {
		err := check()
		if err == nil {
			return
		}
		if !time.Now().Before(deadline) {
			if errors.Is(err, errNotYet) {
				tb.Fatalf("timed out after %v waiting for %s", timeout, what)
			} else {
				tb.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
			}
			return
		}
		// The pause between two checks of state that has no signal.
		time.Sleep(min(pause, time.Until(deadline)))
		pause = min(2*pause, longest)
	}
}
