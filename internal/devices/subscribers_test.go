package devices_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/keys"
)

func TestSubscribersAndTargets(t *testing.T) {
	t.Parallel()
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "single", true: "cluster"}[cluster], func(t *testing.T) {
			t.Parallel()
			b := setup(t, cluster)
			ctx := t.Context()
			if n, err := b.reg.MaxID(ctx); err != nil || n != 0 {
				t.Fatalf("MaxID before any device = %d, %v; want 0", n, err)
			}
			both, _, _, err := b.reg.Register(ctx, reg(fcmToken(1), "world", "tech"))
			if err != nil {
				t.Fatal(err)
			}
			tech, _, _, err := b.reg.Register(ctx, reg(fcmToken(2), "tech"))
			if err != nil {
				t.Fatal(err)
			}
			sport, _, _, err := b.reg.Register(ctx, reg(fcmToken(3), "sport"))
			if err != nil {
				t.Fatal(err)
			}
			off := false
			if _, err := b.reg.Update(ctx, sport, devices.Patch{SyncEnabled: &off}); err != nil {
				t.Fatal(err)
			}
			maxID, err := b.reg.MaxID(ctx)
			if err != nil || maxID < sport.ID {
				t.Fatalf("MaxID = %d, %v; want at least %d", maxID, err, sport.ID)
			}

			got, err := b.reg.Subscribers(ctx, "", []string{"world", "tech"}, 0, 64)
			if err != nil {
				t.Fatal(err)
			}
			want := []devices.Subscriber{{ID: both.ID, Feeds: 0b11}, {ID: tech.ID, Feeds: 0b10}}
			if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
				t.Fatalf("Subscribers = %+v, want %+v", got, want)
			}
			if got, err := b.reg.Subscribers(ctx, "", []string{"world"}, 64, 64); err != nil || len(got) != 0 {
				t.Fatalf("Subscribers of an empty window = %+v, %v; want none", got, err)
			}
			for _, bad := range []struct {
				start uint64
				n     int
			}{{0, 12}, {8, 16}, {0, devices.MaxWindow * 2}, {0, 4}} {
				if _, err := b.reg.Subscribers(ctx, "", []string{"world"}, bad.start, bad.n); !errors.Is(err, devices.ErrBadWindow) {
					t.Errorf("Subscribers(start %d, n %d) error = %v, want ErrBadWindow", bad.start, bad.n, err)
				}
			}

			tg, err := b.reg.Targets(ctx, []uint64{both.ID, sport.ID, maxID + 100})
			if err != nil {
				t.Fatal(err)
			}
			if tg[0].Token != fcmToken(1) || tg[0].Provider != "fcm" || tg[0].Platform != "android" || !tg[0].Sendable() {
				t.Errorf("target of a registered device = %+v, want its token, fcm, android, sendable", tg[0])
			}
			if tg[1].Token == "" || tg[1].Background || tg[1].Sendable() {
				t.Errorf("target of an opted-out device = %+v, want a token and not sendable", tg[1])
			}
			if tg[2] != (devices.Target{}) {
				t.Errorf("target of a missing device = %+v, want the zero Target", tg[2])
			}
		})
	}
}

func TestDropFeed(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := t.Context()
	// Bits in every chunk up to the highest id are cleared, other feeds' kept.
	if err := b.rdb.Set(ctx, keys.DeviceSeq(), 3*devices.MaxWindow+5, 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{0, 3} {
		if err := b.rdb.SetBit(ctx, keys.SubChunk("world", k), 7, 1).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.rdb.SetBit(ctx, keys.SubChunk("tech", 0), 7, 1).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.reg.DropFeed(ctx, "world"); err != nil {
		t.Fatalf("DropFeed: %v", err)
	}
	if n, _ := b.rdb.Exists(ctx, keys.SubChunk("world", 0), keys.SubChunk("world", 3)).Result(); n != 0 {
		t.Fatalf("world bitmaps left: %d", n)
	}
	if n, _ := b.rdb.Exists(ctx, keys.SubChunk("tech", 0)).Result(); n != 1 {
		t.Fatal("tech bitmap was deleted too")
	}
	if err := b.reg.DropFeed(ctx, "world"); err != nil {
		t.Fatalf("DropFeed again: %v", err)
	}
}

func TestRegistrations(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := t.Context()
	tok := fcmToken(9)
	if n, left, err := b.reg.Registrations(ctx, "fcm", tok); err != nil || n != 0 || left != 0 {
		t.Fatalf("Registrations before any = %d, %s, %v; want 0, 0", n, left, err)
	}
	for range 2 {
		if err := b.reg.CountRegistration(ctx, "fcm", tok, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	n, left, err := b.reg.Registrations(ctx, "fcm", tok)
	if err != nil || n != 2 || left <= 59*time.Minute || left > time.Hour {
		t.Fatalf("Registrations = %d, %s, %v; want 2 with about an hour left", n, left, err)
	}
	if n, _, _ := b.reg.Registrations(ctx, "apns", tok); n != 0 {
		t.Fatalf("the same token on another provider has %d registrations, want 0", n)
	}
}
