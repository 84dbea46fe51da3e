package await_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
)

// fakeTB records a Fatalf and ends the goroutine that called it, as
// testing.T does; any other method of testing.TB panics (nil embedded).
type fakeTB struct {
	testing.TB
	fatal string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls wait with a fake TB on its own goroutine, as a test body, and
// returns the fake once wait returned or failed.
func run(wait func(tb testing.TB)) *fakeTB {
	tb := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		wait(tb)
	}()
	<-done
	return tb
}

func TestWaits(t *testing.T) {
	t.Parallel()
	errLast := errors.New("status 503")
	tests := []struct {
		name string
		// wait waits for the condition that becomes true at its checks'th
		// call (never if 0), counting calls in *calls.
		wait      func(tb testing.TB, checks int, calls *int)
		checks    int
		wantFatal []string // substrings of the failure; none: it must pass
		wantTook  time.Duration
		wantCalls int
	}{
		{
			name: "Until: holds at once", checks: 1, wantCalls: 1, wantTook: 0,
			wait: func(tb testing.TB, checks int, calls *int) {
				await.Until(tb, "x", func() bool { *calls++; return *calls == checks })
			},
		},
		{
			// Pauses of 1, 2, 4 and 8 ms between the five checks.
			name: "Until: holds at the fifth check", checks: 5, wantCalls: 5, wantTook: 15 * time.Millisecond,
			wait: func(tb testing.TB, checks int, calls *int) {
				await.Until(tb, "x", func() bool { *calls++; return *calls == checks })
			},
		},
		{
			name: "Until: never holds", checks: 0, wantTook: await.Timeout,
			wantFatal: []string{"timed out after 20s waiting for the queue to drain"},
			wait: func(tb testing.TB, checks int, calls *int) {
				await.Until(tb, "the queue to drain", func() bool { *calls++; return false })
			},
		},
		{
			name: "Within: its own timeout", checks: 0, wantTook: 5 * time.Second,
			wantFatal: []string{"timed out after 5s waiting for the key refused"},
			wait: func(tb testing.TB, checks int, calls *int) {
				await.Within(tb, 5*time.Second, "the key refused", func() bool { *calls++; return false })
			},
		},
		{
			name: "Check: the last error in the failure", checks: 0, wantTook: time.Second,
			wantFatal: []string{"timed out after 1s waiting for healthz", "status 503"},
			wait: func(tb testing.TB, checks int, calls *int) {
				await.Poll{Timeout: time.Second}.Check(tb, "healthz", func() error { *calls++; return errLast })
			},
		},
		{
			name: "Check: passes on nil", checks: 3, wantCalls: 3, wantTook: 3 * time.Millisecond,
			wait: func(tb testing.TB, checks int, calls *int) {
				await.Poll{}.Check(tb, "x", func() error {
					*calls++
					if *calls == checks {
						return nil
					}
					return errLast
				})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				calls := 0
				start := time.Now()
				tb := run(func(tb testing.TB) { tt.wait(tb, tt.checks, &calls) })
				took := time.Since(start)
				if len(tt.wantFatal) == 0 && tb.fatal != "" {
					t.Fatalf("failed the test: %q, want a pass", tb.fatal)
				}
				if len(tt.wantFatal) > 0 && tb.fatal == "" {
					t.Fatalf("passed, want a failure with %q", tt.wantFatal)
				}
				for _, want := range tt.wantFatal {
					if !strings.Contains(tb.fatal, want) {
						t.Fatalf("failure %q lacks %q", tb.fatal, want)
					}
				}
				if took != tt.wantTook {
					t.Fatalf("took %v, want %v", took, tt.wantTook)
				}
				if tt.wantCalls > 0 && calls != tt.wantCalls {
					t.Fatalf("condition called %d times, want %d", calls, tt.wantCalls)
				}
			})
		})
	}
}

// TestPauses checks the pause between two checks: doubling from a
// millisecond to Poll.Interval, never past it, and the last check at the
// deadline.
func TestPauses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		poll     await.Poll
		longest  time.Duration
		deadline time.Duration
	}{
		{"defaults", await.Poll{}, await.Interval, await.Timeout},
		{"own interval", await.Poll{Timeout: time.Second, Interval: 100 * time.Millisecond}, 100 * time.Millisecond, time.Second},
		{"interval under a millisecond", await.Poll{Timeout: 10 * time.Millisecond, Interval: 100 * time.Microsecond}, 100 * time.Microsecond, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var at []time.Duration
				tb := run(func(tb testing.TB) {
					tt.poll.Until(tb, "x", func() bool { at = append(at, time.Since(start)); return false })
				})
				if tb.fatal == "" {
					t.Fatal("passed, want a failure")
				}
				if last := at[len(at)-1]; last != tt.deadline {
					t.Fatalf("last check at %v, want at the deadline %v", last, tt.deadline)
				}
				want := min(time.Millisecond, tt.longest)
				for i := 1; i < len(at)-1; i++ {
					if gap := at[i] - at[i-1]; gap != want {
						t.Fatalf("pause %d: got %v, want %v (checks at %v)", i, gap, want, at[:i+1])
					}
					want = min(2*want, tt.longest)
				}
				if want != tt.longest {
					t.Fatalf("pauses never reached the interval %v: %d checks", tt.longest, len(at))
				}
			})
		})
	}
}
