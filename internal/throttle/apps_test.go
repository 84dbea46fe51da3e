package throttle

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

// strictApp ("a") allows iOS devices 1 push per hour; "b" has no override
// (the default 3 per hour, 10 min gap).
var twoPolicies = apps.MustSet(
	apps.App{ID: "a", Name: "A", FCM: &apps.FCM{CredentialsFile: "/dev/null"},
		Policy: apps.Policy{IOS: apps.Limits{Limit: 1, Window: apps.Duration(time.Hour)}}},
	apps.App{ID: "b", Name: "B", FCM: &apps.FCM{CredentialsFile: "/dev/null"}},
)

// addAppDevice adds an iOS device of app.
func (e *env) addAppDevice(t testing.TB, id uint64, app string) {
	t.Helper()
	if err := e.rdb.HSet(t.Context(), devices.Key(id), "tk", "t"+strconv.FormatUint(id, 10), "pl", "ios", "bg", "1", "mi", "0", "ap", app).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestAppPolicy bursts breaking syncs at iOS devices of two apps on a
// simulated clock: app a's override (1 per hour) gives its devices one
// push in the hour, app b's devices get the default 3. The scheduler
// holds a's pending push to a's budget too: a due entry made earlier than
// a's budget allows (as a default-policy decision would have) is
// rescheduled, not sent; b's is sent.
func TestAppPolicy(t *testing.T) {
	t.Parallel()
	redistest.Backends(t, func(t *testing.T, rdb redis.UniversalClient) {
		e := setup(t, rdb, Config{Apps: twoPolicies})
		const a1, a2, b1, b2 = 1, 66, 2, 67 // two partitions per app
		for _, d := range []struct {
			id  uint64
			app string
		}{{a1, "a"}, {a2, "a"}, {b1, "b"}, {b2, "b"}} {
			e.addAppDevice(t, d.id, d.app)
		}
		for i := range 5 {
			at := t0.Add(time.Duration(i) * 11 * time.Minute)
			e.decide(t, at, breaking(fmt.Sprint("e", i)), a1, a2, b1, b2)
			e.step(t, at)
		}
		got := e.pushes(t)
		for id, want := range map[uint64]int{a1: 1, a2: 1, b1: 3, b2: 3} {
			if len(got[id]) != want {
				t.Errorf("device %d: %d pushes within the hour, want %d", id, len(got[id]), want)
			}
		}

		// The scheduler: devices a3 and b3 get a push at t1 and a feed
		// update a minute later, pending until a3's budget (t1+1h) and
		// b3's gap (t1+10m). a3's due entry is pulled to t1+20m, as a
		// default-policy decision would have set it: the move at t1+20m
		// reschedules a3 and sends b3.
		e.step(t, t0.Add(2*time.Hour)) // the burst's pending pushes go out
		const a3, b3 = 3, 4
		e.addAppDevice(t, a3, "a")
		e.addAppDevice(t, b3, "b")
		t1 := t0.Add(3 * time.Hour)
		e.decide(t, t1, breaking("s1"), a3, b3)
		e.decide(t, t1.Add(time.Minute), feedUpdate("s2", 1, "news"), a3, b3)
		now := t1.Add(20 * time.Minute)
		if err := rdb.ZAdd(t.Context(), keys.Due(keys.Partition(a3)), redis.Z{Score: float64(now.UnixMilli()), Member: a3}).Err(); err != nil {
			t.Fatal(err)
		}
		m := e.step(t, now)
		if m.Rescheduled != 1 || m.Queued != 1 {
			t.Errorf("step with both due: rescheduled %d queued %d, want 1 and 1 (a's budget holds)", m.Rescheduled, m.Queued)
		}
		got = e.pushes(t)
		if len(got[a3]) != 1 || len(got[b3]) != 2 {
			t.Errorf("after the step: a %d, b %d pushes; want 1 and 2", len(got[a3]), len(got[b3]))
		}
	})
}

// TestAppPolicyAtThePhone: Admit holds a device to its app's budget. Two
// pushes in a row: app a's second waits out the hour (1 per hour), app
// b's only the 10 min gap.
func TestAppPolicyAtThePhone(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	th, err := New(service.Archetype{}, Config{Apps: twoPolicies}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{rdb: rdb, th: th}
	e.addAppDevice(t, 1, "a")
	e.addAppDevice(t, 2, "b")
	for _, c := range []string{"x", "y"} {
		w := waits(t, th, Attempt{Device: 1, Collapse: c}, Attempt{Device: 2, Collapse: c})
		if c == "x" && (w[0] != 0 || w[1] != 0) {
			t.Fatalf("first pushes wait %v", w)
		}
		if c == "y" && (w[0] < 59*time.Minute || w[1] < 9*time.Minute || w[1] > 10*time.Minute) {
			t.Fatalf("second pushes wait %v: want about 1h for app a, 10m for app b", w)
		}
	}
}

// TestAppPolicyArgs: the apps' overrides reach the scripts only for apps
// whose policy differs, the default app's apply to devices without an
// app, and an override that breaks a policy is ignored.
func TestAppPolicyArgs(t *testing.T) {
	t.Parallel()
	set := apps.MustSet(
		apps.App{ID: apps.Default, Name: "D", FCM: &apps.FCM{CredentialsFile: "x"},
			Policy: apps.Policy{Android: apps.Limits{Limit: 5}}},
		apps.App{ID: "same", Name: "S", FCM: &apps.FCM{CredentialsFile: "x"}},
		apps.App{ID: "bad", Name: "B", FCM: &apps.FCM{CredentialsFile: "x"},
			Policy: apps.Policy{IOS: apps.Limits{MaxWait: apps.Duration(time.Second)}}},
	)
	th, err := New(service.Archetype{}, Config{Apps: set}, redistest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	args := th.policyArgs(t.Context())
	if args[5] != int64(5) {
		t.Errorf("default app's Android limit = %v, want 5", args[5])
	}
	// "same" and "bad" both come out at the deployment's policy, which
	// differs from the default app's (Android limit 12, not 5).
	want := "\x1ebad\x1f3,3600000,600000,120000,900000,12,3600000,300000,120000,900000\x1esame\x1f3,3600000,600000,120000,900000,12,3600000,300000,120000,900000\x1e"
	if args[10] != want {
		t.Errorf("overrides = %q, want %q", args[10], want)
	}
	if again := th.policyArgs(t.Context()); &again[0] != &args[0] {
		t.Errorf("policy arguments rebuilt for the same set")
	}
}
