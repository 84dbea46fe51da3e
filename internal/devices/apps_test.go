package devices_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/keys"
)

// testApp is an app offering feeds (every feed when none).
func testApp(id string, feeds ...string) apps.App {
	return apps.App{ID: id, Name: id, FCM: &apps.FCM{CredentialsFile: "/dev/null"}, Feeds: feeds}
}

// twoApps are the default app, news (world, sport) and sports (sport, tech).
var twoApps = apps.MustSet(testApp(apps.Default), testApp("news", "world", "sport"), testApp("sports", "sport", "tech"))

func ids(subs []devices.Subscriber) []uint64 {
	out := []uint64{}
	for _, s := range subs {
		out = append(out, s.ID)
	}
	return out
}

func TestApps(t *testing.T) {
	t.Parallel()
	for _, cluster := range []bool{false, true} {
		name := "single"
		if cluster {
			name = "cluster"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setupWith(t, cluster, devices.Config{IDBlock: 4, Apps: twoApps})
			ctx := t.Context()
			tok := fcmToken(1)

			fieldErr := func(t *testing.T, err error, field, reason string) {
				t.Helper()
				fe, ok := errors.AsType[*devices.FieldError](err)
				if !ok || fe.Field != field || (reason != "" && fe.Reason != reason) {
					t.Fatalf("err = %v, want a FieldError on %s %q", err, field, reason)
				}
			}
			t.Run("unknown app refused", func(t *testing.T) {
				r := reg(tok, "world")
				r.App = "radio"
				_, _, _, err := b.reg.Register(ctx, r)
				fieldErr(t, err, "app", `unknown app "radio"`)
			})
			t.Run("feed not offered refused", func(t *testing.T) {
				r := reg(tok, "sport", "world")
				r.App = "sports"
				_, _, _, err := b.reg.Register(ctx, r)
				fieldErr(t, err, "feeds", "feed world is not offered by app sports")
			})

			// The same token in the default app, news and sports: three devices.
			byApp := map[string]devices.Device{}
			for _, app := range []string{"", "news", "sports"} {
				r := reg(tok, "sport")
				r.App = app
				d, _, created, err := b.reg.Register(ctx, r)
				if err != nil || !created {
					t.Fatalf("register in %q: created %v, %v", app, created, err)
				}
				byApp[d.App] = d
			}
			def, news, sports := byApp[apps.Default], byApp["news"], byApp["sports"]
			if def.ID == 0 || news.ID == 0 || sports.ID == 0 || def.ID == news.ID || news.ID == sports.ID || def.ID == sports.ID {
				t.Fatalf("want three devices, got %+v", byApp)
			}
			if ap, _ := b.rdb.HExists(ctx, keys.Device(def.ID), "ap").Result(); ap {
				t.Errorf("default app device has field ap: want none (no byte more than before apps)")
			}
			if got, _ := b.reg.Get(ctx, news.ID); got.App != "news" {
				t.Errorf("Get news device: app %q", got.App)
			}

			t.Run("re-registration stays in its app", func(t *testing.T) {
				r := reg(tok, "sport", "world")
				r.App = "news"
				d, _, created, err := b.reg.Register(ctx, r)
				if err != nil || created || d.ID != news.ID || d.App != "news" {
					t.Fatalf("re-register in news: %+v created %v, %v; want device %d", d, created, err, news.ID)
				}
			})

			walk := func(t *testing.T, app string, feeds ...string) []uint64 {
				t.Helper()
				subs, err := b.reg.Subscribers(ctx, app, feeds, 0, 64)
				if err != nil {
					t.Fatal(err)
				}
				return ids(subs)
			}
			t.Run("walks are per app", func(t *testing.T) {
				if got := walk(t, "news", "sport"); !slices.Equal(got, []uint64{news.ID}) {
					t.Errorf("news walk of sport = %v, want [%d]", got, news.ID)
				}
				if got := walk(t, "sports", "sport"); !slices.Equal(got, []uint64{sports.ID}) {
					t.Errorf("sports walk of sport = %v, want [%d]", got, sports.ID)
				}
				if got := walk(t, apps.Default, "sport"); !slices.Equal(got, []uint64{def.ID}) {
					t.Errorf("default walk of sport = %v, want [%d]", got, def.ID)
				}
				want := []uint64{def.ID, news.ID, sports.ID}
				slices.Sort(want)
				if got := walk(t, "", "sport"); !slices.Equal(got, want) {
					t.Errorf("every-app walk of sport = %v, want %v", got, want)
				}
				if got := walk(t, "", "world"); !slices.Equal(got, []uint64{news.ID}) {
					t.Errorf("every-app walk of world = %v, want [%d]", got, news.ID)
				}
			})

			t.Run("PATCH feeds checks the app's offer", func(t *testing.T) {
				cur, err := b.reg.Get(ctx, sports.ID)
				if err != nil {
					t.Fatal(err)
				}
				_, err = b.reg.Update(ctx, cur, devices.Patch{Feeds: &[]string{"world"}})
				fieldErr(t, err, "feeds", "feed world is not offered by app sports")
			})

			t.Run("a prune stays in its app", func(t *testing.T) {
				ok, err := b.reg.DeleteIfToken(ctx, sports.ID, tok)
				if err != nil || !ok {
					t.Fatalf("prune sports device: %v %v", ok, err)
				}
				if got := walk(t, "", "sport"); slices.Contains(got, sports.ID) || !slices.Contains(got, news.ID) {
					t.Errorf("after the prune the walk is %v: want news %d, not sports %d", got, news.ID, sports.ID)
				}
				r := reg(tok, "sport")
				r.App = "news"
				if d, _, created, err := b.reg.Register(ctx, r); err != nil || created || d.ID != news.ID {
					t.Errorf("news token index after the sports prune: device %d created %v %v, want %d", d.ID, created, err, news.ID)
				}
			})

			t.Run("an app's device stores the environment only for sandbox", func(t *testing.T) {
				apns := func(env string) devices.Registration {
					return devices.Registration{App: "news", Provider: "apns", Platform: "ios", Environment: env,
						Token: strings.Repeat("ab", 32), Feeds: []string{"world"}, Sync: devices.BackgroundSync{Enabled: true}}
				}
				envOf := func(t *testing.T, id uint64) (stored, read, target string) {
					t.Helper()
					stored, _ = b.rdb.HGet(ctx, keys.Device(id), "en").Result()
					d, err := b.reg.Get(ctx, id)
					if err != nil {
						t.Fatal(err)
					}
					ts, err := b.reg.Targets(ctx, []uint64{id})
					if err != nil {
						t.Fatal(err)
					}
					return stored, d.Environment, ts[0].Environment
				}
				d, _, _, err := b.reg.Register(ctx, apns("sandbox"))
				if err != nil {
					t.Fatal(err)
				}
				if s, r, tg := envOf(t, d.ID); s != "sandbox" || r != "sandbox" || tg != "sandbox" {
					t.Errorf("sandbox: stored %q, read %q, target %q", s, r, tg)
				}
				if _, _, _, err := b.reg.Register(ctx, apns("production")); err != nil {
					t.Fatal(err)
				}
				if s, r, tg := envOf(t, d.ID); s != "" || r != "production" || tg != "production" {
					t.Errorf("re-registered for production: stored %q, read %q, target %q; want none stored", s, r, tg)
				}
				cur, _ := b.reg.Get(ctx, d.ID)
				sandbox := "sandbox"
				if _, err := b.reg.Update(ctx, cur, devices.Patch{Environment: &sandbox}); err != nil {
					t.Fatal(err)
				}
				if s, r, _ := envOf(t, d.ID); s != "sandbox" || r != "sandbox" {
					t.Errorf("PATCH to sandbox: stored %q, read %q", s, r)
				}
				if s, _ := b.rdb.HGet(ctx, keys.Device(def.ID), "en").Result(); s != "production" {
					t.Errorf("default app device: en %q, want production stored as before apps", s)
				}
			})

			t.Run("devices from before apps are the default app's", func(t *testing.T) {
				maxID, err := b.reg.MaxID(ctx)
				if err != nil {
					t.Fatal(err)
				}
				old := maxID + 1
				devicestest.Write(t, b.rdb, old, old, func(uint64) string { return "tech" })
				d, err := b.reg.Get(ctx, old)
				if err != nil || d.App != apps.Default {
					t.Fatalf("old device: app %q, %v", d.App, err)
				}
				subs, err := b.reg.Subscribers(ctx, apps.Default, []string{"tech"}, old/64*64, 64)
				if err != nil || !slices.Contains(ids(subs), old) {
					t.Errorf("default walk of tech: %v %v, want device %d", ids(subs), err, old)
				}
				subs, err = b.reg.Subscribers(ctx, "sports", []string{"tech"}, old/64*64, 64)
				if err != nil || slices.Contains(ids(subs), old) {
					t.Errorf("sports walk of tech: %v %v, want no device %d", ids(subs), err, old)
				}
			})
		})
	}
}
