package devices_test

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/keys"
)

func ptr[T any](v T) *T { return &v }

// authenticated returns the device as a request authenticated with secret
// sees it.
func authenticated(t *testing.T, reg *devices.Registry, id uint64, secret string) devices.Device {
	t.Helper()
	d, err := reg.Authenticate(t.Context(), id, secret)
	if err != nil {
		t.Fatalf("authenticate device %d: %v", id, err)
	}
	return d
}

// reRegister registers tok again the way an app does when it did not name
// background_sync: the stored setting is kept.
func reRegister(t *testing.T, rg *devices.Registry, tok string, feeds ...string) (devices.Device, string) {
	t.Helper()
	r := reg(tok, feeds...)
	r.KeepEnabled, r.KeepMinInterval = true, true
	d, secret, created, err := rg.Register(t.Context(), r)
	if err != nil || created {
		t.Fatalf("re-register: created %v, %v", created, err)
	}
	return d, secret
}

func TestConcurrentPatchesKeepEachOthersFields(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	hook := &devicestest.RaceHook{}
	b.rdb.AddHook(hook)
	ctx := t.Context()
	d, secret, _, err := b.reg.Register(ctx, reg(fcmToken(1), "world"))
	if err != nil {
		t.Fatal(err)
	}
	read := authenticated(t, b.reg, d.ID, secret)

	// Both PATCHes were authenticated with the same read; the opt-out
	// lands between the feeds PATCH's read and its write.
	hook.Before(keys.Device(d.ID), func() {
		if _, err := b.reg.Update(ctx, read, devices.Patch{SyncEnabled: ptr(false), Locale: ptr("de-DE")}); err != nil {
			t.Errorf("opt-out patch: %v", err)
		}
	})
	if _, err := b.reg.Update(ctx, read, feedsPatch("tech", "sport")); err != nil {
		t.Fatalf("feeds patch: %v", err)
	}
	// And the other way round: a feeds change lands inside a settings PATCH.
	hook.Before(keys.Device(d.ID), func() {
		if _, err := b.reg.Update(ctx, read, feedsPatch("sport")); err != nil {
			t.Errorf("feeds patch: %v", err)
		}
	})
	if _, err := b.reg.Update(ctx, read, devices.Patch{MinInterval: ptr(2 * time.Hour)}); err != nil {
		t.Fatalf("min interval patch: %v", err)
	}

	got := authenticated(t, b.reg, d.ID, secret)
	if got.Sync.Enabled || got.Locale != "de-DE" || got.Sync.MinInterval != 2*time.Hour || !slices.Equal(got.Feeds, []string{"sport"}) {
		t.Fatalf("after concurrent patches: got sync %+v locale %q feeds %v, want opt-out, de-DE, 2h, [sport]",
			got.Sync, got.Locale, got.Feeds)
	}
	checkConverged(t, b.rdb, false)
}

func TestPatchAgainstReRegistration(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	hook := &devicestest.RaceHook{}
	b.rdb.AddHook(hook)
	ctx := t.Context()
	tok := fcmToken(2)
	d, s1, _, err := b.reg.Register(ctx, reg(tok, "world"))
	if err != nil {
		t.Fatal(err)
	}
	works := func(secret string) bool {
		_, err := b.reg.Authenticate(ctx, d.ID, secret)
		return err == nil
	}

	t.Run("re-registration lands inside the PATCH", func(t *testing.T) {
		var s2 string
		hook.Before(keys.Device(d.ID), func() { _, s2 = reRegister(t, b.reg, tok, "tech") })
		_, err := b.reg.Update(ctx, authenticated(t, b.reg, d.ID, s1), devices.Patch{SyncEnabled: ptr(false)})
		if !errors.Is(err, devices.ErrConflict) {
			t.Fatalf("patch authenticated with the replaced secret: got %v, want ErrConflict", err)
		}
		if works(s1) || !works(s2) {
			t.Fatalf("secrets: old works %v, newest works %v; want false, true", works(s1), works(s2))
		}
		// The app retries with its newest secret; the opt-out then sticks
		// through a later re-registration that does not name it.
		if _, err := b.reg.Update(ctx, authenticated(t, b.reg, d.ID, s2), devices.Patch{SyncEnabled: ptr(false)}); err != nil {
			t.Fatalf("retried patch: %v", err)
		}
		_, s3 := reRegister(t, b.reg, tok, "tech")
		if got := authenticated(t, b.reg, d.ID, s3); got.Sync.Enabled {
			t.Fatalf("re-registration turned the opt-out back on")
		}
		if works(s2) {
			t.Fatalf("secret before the last re-registration still works")
		}
		s1 = s3
	})
	t.Run("PATCH lands inside the re-registration", func(t *testing.T) {
		if _, err := b.reg.Update(ctx, authenticated(t, b.reg, d.ID, s1), devices.Patch{SyncEnabled: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		hook.Before(keys.Device(d.ID), func() {
			if _, err := b.reg.Update(ctx, authenticated(t, b.reg, d.ID, s1), devices.Patch{SyncEnabled: ptr(false)}); err != nil {
				t.Errorf("opt-out patch: %v", err)
			}
		})
		got, s2 := reRegister(t, b.reg, tok, "world")
		if got.Sync.Enabled {
			t.Fatalf("re-registration answered sync %+v, want the opt-out it kept", got.Sync)
		}
		if works(s1) || !works(s2) {
			t.Fatalf("secrets: old works %v, newest works %v; want false, true", works(s1), works(s2))
		}
		if got := authenticated(t, b.reg, d.ID, s2); got.Sync.Enabled {
			t.Fatalf("the opt-out was reverted")
		}
		s1 = s2
	})
	t.Run("re-registration lands inside a token rotation", func(t *testing.T) {
		var s2 string
		hook.Before(keys.Device(d.ID), func() { _, s2 = reRegister(t, b.reg, tok, "world") })
		_, err := b.reg.Update(ctx, authenticated(t, b.reg, d.ID, s1), devices.Patch{Token: ptr(fcmToken(3))})
		if !errors.Is(err, devices.ErrConflict) {
			t.Fatalf("rotation authenticated with the replaced secret: got %v, want ErrConflict", err)
		}
		got := authenticated(t, b.reg, d.ID, s2)
		if got.Token != tok || works(s1) {
			t.Fatalf("after the lost rotation: token changed %v, old secret works %v", got.Token != tok, works(s1))
		}
		// The stale index entry of the new token does not route to d.
		other, _, created, err := b.reg.Register(ctx, reg(fcmToken(3), "sport"))
		if err != nil || !created || other.ID == d.ID {
			t.Fatalf("register the rotation's token: id %d created %v %v, want a new device", other.ID, created, err)
		}
	})
	checkConverged(t, b.rdb, false)
}

// concurrentWriters runs re-registrations and PATCHes of one device from
// several goroutines at once, then one more write, and checks that bits
// equal feeds and that exactly one secret ever handed out still works.
func concurrentWriters(t *testing.T, b *bundle) {
	ctx := t.Context()
	tok := fcmToken(50)
	first, s0, _, err := b.reg.Register(ctx, reg(tok, "world"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	secrets := []string{s0}
	latest := s0
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 30 {
				feeds := slices.DeleteFunc(slices.Clone(catalogFeeds), func(string) bool { return rng.IntN(2) == 0 })
				switch rng.IntN(3) {
				case 0:
					r := reg(tok, feeds...)
					r.KeepEnabled, r.KeepMinInterval = true, true
					_, s, _, err := b.reg.Register(ctx, r)
					if err != nil && !errors.Is(err, devices.ErrConflict) {
						t.Errorf("re-register: %v", err)
						return
					}
					mu.Lock()
					if err == nil {
						secrets, latest = append(secrets, s), s
					}
					mu.Unlock()
				default:
					mu.Lock()
					s := latest
					mu.Unlock()
					d, err := b.reg.Authenticate(ctx, first.ID, s)
					if errors.Is(err, devices.ErrNotFound) {
						continue // re-registered meanwhile
					}
					if err != nil {
						t.Errorf("authenticate: %v", err)
						return
					}
					p := devices.Patch{Feeds: &feeds}
					if rng.IntN(2) == 0 {
						p = devices.Patch{Locale: ptr("de-DE")}
					}
					if _, err := b.reg.Update(ctx, d, p); err != nil && !errors.Is(err, devices.ErrConflict) {
						t.Errorf("patch: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Bits may still be marked pending where a call gave up on contention
	// (ErrConflict); the app's next write finishes them.
	r := reg(tok, "tech")
	r.KeepEnabled, r.KeepMinInterval = true, true
	_, last, _, err := b.reg.Register(ctx, r)
	if err != nil {
		t.Fatalf("final re-registration: %v", err)
	}
	checkConverged(t, b.rdb, false)
	for _, s := range append(secrets, last) {
		_, err := b.reg.Authenticate(ctx, first.ID, s)
		if (err == nil) != (s == last) {
			t.Fatalf("secret %.6s…: authenticates %v, want only the newest to work", s, err == nil)
		}
	}
	if n := strings.Count(strings.Join(allKeys(t, b.rdb, "dev:*"), " "), "dev:"); n != 1 {
		t.Fatalf("device hashes: got %d, want 1", n)
	}
}

func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	concurrentWriters(t, setup(t, false))
}

func TestConcurrentWritersOnCluster(t *testing.T) {
	t.Parallel()
	concurrentWriters(t, setup(t, true))
}
