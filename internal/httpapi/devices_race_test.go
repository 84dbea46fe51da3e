package httpapi_test

import (
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/redis/go-redis/v9"
)

// TestPatchLostRaceAnswers409 lands a re-registration (which replaces the
// secret) between the PATCH handler's authentication and its write: the
// PATCH answers 409 as docs/mobile.md promises, changes nothing, and only
// the newest secret works.
func TestPatchLostRaceAnswers409(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	hook := &devicestest.RaceHook{}
	b.rdb.AddHook(hook)
	tok := fcmToken(40)
	d := b.register(t, fcmReg(tok, "world"), 201)
	path := fmt.Sprintf("/v1/devices/%d", d.ID)

	var again deviceJSON
	hook.Before(keys.Device(d.ID), func() {
		reg := fcmReg(tok, "world")
		delete(reg, "background_sync")
		again = b.register(t, reg, 200)
	})
	r := b.do(t, "PATCH", "/v1/devices/{id}", path, d.Secret, map[string]any{"background_sync": map[string]any{"enabled": false}})
	if r.code != 409 {
		t.Fatalf("patch that lost the race: got %d %s, want 409", r.code, r.body)
	}
	if e := decode[errorJSON](t, r); e.Error.Code != "conflict" {
		t.Fatalf("error code: got %q, want conflict", e.Error.Code)
	}
	if r := b.do(t, "GET", "/v1/devices/{id}", path, d.Secret, nil); r.code != 404 {
		t.Fatalf("old secret: got %d, want 404", r.code)
	}
	r = b.do(t, "GET", "/v1/devices/{id}", path, again.Secret, nil)
	if r.code != 200 || !decode[deviceJSON](t, r).BackgroundSync.Enabled {
		t.Fatalf("newest secret: got %d %s, want 200 with the lost PATCH not applied", r.code, r.body)
	}
	// The retry with the newest secret applies, and a re-registration that
	// does not name background_sync keeps the opt-out.
	if r := b.do(t, "PATCH", "/v1/devices/{id}", path, again.Secret, map[string]any{"background_sync": map[string]any{"enabled": false}}); r.code != 200 {
		t.Fatalf("retried patch: got %d %s", r.code, r.body)
	}
	reg := fcmReg(tok, "world")
	delete(reg, "background_sync")
	if last := b.register(t, reg, 200); last.BackgroundSync.Enabled || last.BackgroundSync.MinInterval != "30m0s" {
		t.Fatalf("re-registration without background_sync: got %+v, want the stored opt-out and 30m", last.BackgroundSync)
	}
}

// TestPatchSettingsKeepsConcurrentFeeds lands a feeds PATCH inside a
// min_interval PATCH: neither reverts the other, and the handler writes
// only the background_sync part the request named.
func TestPatchSettingsKeepsConcurrentFeeds(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	hook := &devicestest.RaceHook{}
	b.rdb.AddHook(hook)
	d := b.register(t, fcmReg(fcmToken(41), "world"), 201)
	path := fmt.Sprintf("/v1/devices/%d", d.ID)
	hook.Before(keys.Device(d.ID), func() {
		r := b.do(t, "PATCH", "/v1/devices/{id}", path, d.Secret, map[string]any{
			"feeds": []string{"tech"}, "background_sync": map[string]any{"enabled": false}})
		if r.code != 200 {
			t.Errorf("inner patch: got %d %s", r.code, r.body)
		}
	})
	r := b.do(t, "PATCH", "/v1/devices/{id}", path, d.Secret, map[string]any{"background_sync": map[string]any{"min_interval": "2h"}})
	if r.code != 200 {
		t.Fatalf("patch: got %d %s", r.code, r.body)
	}
	got := decode[deviceJSON](t, b.do(t, "GET", "/v1/devices/{id}", path, d.Secret, nil))
	if got.BackgroundSync.Enabled || got.BackgroundSync.MinInterval != "2h0m0s" || len(got.Feeds) != 1 || got.Feeds[0] != "tech" {
		t.Fatalf("after concurrent patches: got %+v feeds %v, want opt-out, 2h, [tech]", got.BackgroundSync, got.Feeds)
	}
	if bitSet(t, b.rdb, "world", d.ID) || !bitSet(t, b.rdb, "tech", d.ID) {
		t.Fatalf("bits do not match feeds [tech]")
	}
}

// TestDeleteForgetsThrottleState: DELETE leaves no throttle state or
// pending push of the device behind.
func TestDeleteForgetsThrottleState(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	d := b.register(t, fcmReg(fcmToken(42), "world"), 201)
	ctx := t.Context()
	p, id := keys.Partition(d.ID), strconv.FormatUint(d.ID, 10)
	// Throttle state as the throttle leaves it for a device with a pending
	// push: a state entry and a due time. Forget drops both whatever their
	// content, so the fixture does not depend on the state's format.
	if err := b.rdb.HSet(ctx, keys.Throttle(p), id, "state").Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.rdb.ZAdd(ctx, keys.Due(p), redis.Z{Score: 1, Member: id}).Err(); err != nil {
		t.Fatal(err)
	}
	if r := b.do(t, "DELETE", "/v1/devices/{id}", fmt.Sprintf("/v1/devices/%d", d.ID), d.Secret, nil); r.code != 204 {
		t.Fatalf("delete: got %d %s, want 204", r.code, r.body)
	}
	if ok, err := b.rdb.HExists(ctx, keys.Throttle(p), id).Result(); err != nil || ok {
		t.Fatalf("throttle state after delete: present %v (%v), want gone", ok, err)
	}
	if _, err := b.rdb.ZScore(ctx, keys.Due(p), id).Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("due entry after delete: %v, want gone", err)
	}
}
