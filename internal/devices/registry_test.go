package devices_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/redis/go-redis/v9"
)

type bundle struct {
	rdb redis.UniversalClient
	reg *devices.Registry
}

// setup returns a registry on a private server, or on a 3-master cluster.
func setup(t *testing.T, cluster bool) *bundle {
	t.Helper()
	return setupWith(t, cluster, devices.Config{IDBlock: 4})
}

// setupWith is setup with cfg.
func setupWith(t *testing.T, cluster bool, cfg devices.Config) *bundle {
	t.Helper()
	var rdb redis.UniversalClient
	if cluster {
		rdb = redistest.StartCluster(t).Client(t)
	} else {
		rdb = redistest.Start(t)
	}
	store, err := catalog.NewStore(service.Archetype{}, rdb, catalog.Config{})
	if err != nil {
		t.Fatalf("catalog: %v", err)
	}
	for _, id := range []string{"world", "tech", "sport"} {
		if _, err := store.Put(t.Context(), catalog.Feed{ID: id, Title: id, URL: "https://example.com/" + id}); err != nil {
			t.Fatalf("put feed: %v", err)
		}
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	reg, err := devices.New(service.Archetype{Clock: func() time.Time { return now }}, rdb, store, cfg)
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	return &bundle{rdb: rdb, reg: reg}
}

func fcmToken(n int) string {
	return fmt.Sprintf("f%021d:APA91b", n) + strings.Repeat("k", 124)
}

func reg(tok string, feeds ...string) devices.Registration {
	return devices.Registration{Provider: "fcm", Token: tok, Platform: "android", Feeds: feeds,
		Sync: devices.BackgroundSync{Enabled: true, MinInterval: time.Hour}}
}

func bit(t *testing.T, rdb redis.UniversalClient, feed string, id uint64) int64 {
	t.Helper()
	k, b := keys.SubChunkOf(id)
	v, err := rdb.GetBit(t.Context(), keys.SubChunk(feed, k), b).Result()
	if err != nil {
		t.Fatalf("getbit: %v", err)
	}
	return v
}

func tokenIndexLen(t *testing.T, rdb redis.UniversalClient, tok string) int64 {
	t.Helper()
	var n int64
	// Count the entries of every shard that could hold the token: scanning
	// is fine on a test server.
	scan := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, "tok:*", 100).Iterator()
		for iter.Next(ctx) {
			l, err := c.HLen(ctx, iter.Val()).Result()
			if err != nil {
				return err
			}
			n += l
		}
		return iter.Err()
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		var mu sync.Mutex
		err = c.ForEachMaster(t.Context(), func(ctx context.Context, c *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return scan(ctx, c)
		})
	case *redis.Client:
		err = scan(t.Context(), c)
	}
	if err != nil {
		t.Fatalf("scan token index: %v", err)
	}
	return n
}

// registryOps runs the registry's whole life cycle; the same code runs on a
// single server and on a cluster.
func registryOps(t *testing.T, b *bundle) {
	ctx := t.Context()
	tokA, tokB, tokC := fcmToken(1), fcmToken(2), fcmToken(3)

	a, secretA, created, err := b.reg.Register(ctx, reg(tokA, "world", "tech"))
	if err != nil || !created {
		t.Fatalf("register a: created %v err %v, want created", created, err)
	}
	if got, err := b.reg.Authenticate(ctx, a.ID, secretA); err != nil || got.Token != tokA || got.Sync.MinInterval != time.Hour {
		t.Fatalf("authenticate a: got %+v, %v", got, err)
	}
	a2, secretA2, created, err := b.reg.Register(ctx, reg(tokA, "sport"))
	if err != nil || created || a2.ID != a.ID {
		t.Fatalf("re-register a: id %d created %v err %v, want id %d updated", a2.ID, created, err, a.ID)
	}
	if _, err := b.reg.Authenticate(ctx, a.ID, secretA); err == nil {
		t.Fatalf("old secret still works after re-registration")
	}
	if bit(t, b.rdb, "world", a.ID) != 0 || bit(t, b.rdb, "sport", a.ID) != 1 {
		t.Fatalf("re-registration did not replace subscriptions")
	}

	// Rotation: a moves to tokB; a prune of tokA must not delete it.
	newTok := tokB
	if _, err := b.reg.Update(ctx, a2, devices.Patch{Token: &newTok}); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if ok, err := b.reg.DeleteIfToken(ctx, a.ID, tokA); err != nil || ok {
		t.Fatalf("prune of the old token: deleted %v err %v, want kept", ok, err)
	}
	if got, err := b.reg.Get(ctx, a.ID); err != nil || got.Token != tokB {
		t.Fatalf("after prune of old token: got %+v %v, want token B", got, err)
	}
	if _, err := b.reg.Authenticate(ctx, a.ID, secretA2); err != nil {
		t.Fatalf("secret after rotation: %v", err)
	}

	// Rotating another device onto a token that a holds moves the token.
	c, _, _, err := b.reg.Register(ctx, reg(tokC, "world"))
	if err != nil {
		t.Fatalf("register c: %v", err)
	}
	if _, err := b.reg.Update(ctx, c, devices.Patch{Token: &newTok}); err != nil {
		t.Fatalf("rotate c onto a's token: %v", err)
	}
	if _, err := b.reg.Get(ctx, a.ID); err == nil {
		t.Fatalf("device a still exists after its token moved to c")
	}
	if bit(t, b.rdb, "sport", a.ID) != 0 {
		t.Fatalf("a's subscription bit survived")
	}
	again, _, created, err := b.reg.Register(ctx, reg(tokB, "world"))
	if err != nil || created || again.ID != c.ID {
		t.Fatalf("register token B: id %d created %v err %v, want c (%d)", again.ID, created, err, c.ID)
	}

	// Prune with the current token deletes everything.
	if ok, err := b.reg.DeleteIfToken(ctx, c.ID, tokB); err != nil || !ok {
		t.Fatalf("prune c: deleted %v err %v", ok, err)
	}
	if _, err := b.reg.Get(ctx, c.ID); err == nil {
		t.Fatalf("c survived its prune")
	}
	if bit(t, b.rdb, "world", c.ID) != 0 {
		t.Fatalf("c's subscription bit survived")
	}
	if n := tokenIndexLen(t, b.rdb, tokB); n != 0 {
		t.Fatalf("token index: got %d entries, want 0", n)
	}
	if err := b.reg.Delete(ctx, c.ID); err == nil {
		t.Fatalf("delete of a deleted device: got nil error, want not found")
	}
}

func TestRegistryLifecycle(t *testing.T) {
	t.Parallel()
	registryOps(t, setup(t, false))
}

func TestRegistryLifecycleOnCluster(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	registryOps(t, b)
	concurrentSameToken(t, b)
}

// concurrentSameToken registers one token from many goroutines at once:
// they must all end on one device.
func concurrentSameToken(t *testing.T, b *bundle) {
	tok := fcmToken(99)
	const n = 16
	ids := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			d, _, _, err := b.reg.Register(t.Context(), reg(tok, "world"))
			ids[i], errs[i] = d.ID, err
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("registration %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("registration %d: got id %d, want %d (one device per token)", i, ids[i], ids[0])
		}
	}
	d, err := b.reg.Get(t.Context(), ids[0])
	if err != nil || d.Token != tok {
		t.Fatalf("the device: got %+v %v", d, err)
	}
	// Every losing hash was dropped: no other device holds the token.
	for id := uint64(1); id <= ids[0]+n*4; id++ {
		if id == ids[0] {
			continue
		}
		if o, err := b.reg.Get(t.Context(), id); err == nil && o.Token == tok {
			t.Fatalf("device %d also holds the token", id)
		}
	}
}

func TestReRegistrationKeepsIDsDense(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	first, _, _, err := b.reg.Register(t.Context(), reg(fcmToken(1), "world"))
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		d, _, created, err := b.reg.Register(t.Context(), reg(fcmToken(1), "tech"))
		if err != nil || created || d.ID != first.ID || !d.Created.Equal(first.Created) {
			t.Fatalf("re-register: got id %d created %v at %v (%v), want id %d updated", d.ID, created, d.Created, err, first.ID)
		}
	}
	second, _, _, err := b.reg.Register(t.Context(), reg(fcmToken(2)))
	if err != nil {
		t.Fatal(err)
	}
	if second.ID != first.ID+1 {
		t.Fatalf("next new device: got id %d, want %d (re-registrations must not use up ids)", second.ID, first.ID+1)
	}
	if n, _ := b.rdb.Keys(t.Context(), "dev:*").Result(); len(n) != 2 {
		t.Fatalf("device hashes: got %d, want 2", len(n))
	}
}

func TestConcurrentRegistrationOfOneToken(t *testing.T) {
	t.Parallel()
	concurrentSameToken(t, setup(t, false))
}

// TestCrashLeftovers simulates crashes between the steps of a write.
func TestCrashLeftovers(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := t.Context()
	tok := fcmToken(5)
	d, _, _, err := b.reg.Register(ctx, reg(tok, "world"))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	t.Run("delete crashed after the hash went", func(t *testing.T) {
		// The hash is gone; index entry and bits stay behind.
		if err := b.rdb.Del(ctx, keys.Device(d.ID)).Err(); err != nil {
			t.Fatalf("del: %v", err)
		}
		nd, _, created, err := b.reg.Register(ctx, reg(tok, "tech"))
		if err != nil || !created || nd.ID == d.ID {
			t.Fatalf("register over a stale index entry: id %d created %v err %v, want a new id", nd.ID, created, err)
		}
		if got, err := b.reg.Get(ctx, nd.ID); err != nil || got.Token != tok {
			t.Fatalf("new device: %+v %v", got, err)
		}
		again, _, created, err := b.reg.Register(ctx, reg(tok, "tech"))
		if err != nil || created || again.ID != nd.ID {
			t.Fatalf("index now points at the new device: got %d created %v, want %d", again.ID, created, nd.ID)
		}
	})
	t.Run("register crashed before the index claim", func(t *testing.T) {
		// An orphan hash with a token but no index entry and no bits.
		orphan := uint64(1_000_000)
		if err := b.rdb.HSet(ctx, keys.Device(orphan), "tk", fcmToken(6), "pv", "fcm", "pl", "android").Err(); err != nil {
			t.Fatalf("hset: %v", err)
		}
		nd, _, created, err := b.reg.Register(ctx, reg(fcmToken(6), "world"))
		if err != nil || !created || nd.ID == orphan {
			t.Fatalf("register next to an orphan: id %d created %v err %v", nd.ID, created, err)
		}
		if bit(t, b.rdb, "world", orphan) != 0 {
			t.Fatalf("the orphan has a subscription bit")
		}
	})
}

func TestValidation(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	tests := []struct {
		name  string
		reg   devices.Registration
		field string
	}{
		{"unknown feed", reg(fcmToken(1), "nope"), "feeds"},
		{"too many feeds", func() devices.Registration {
			r := reg(fcmToken(1))
			for i := range 65 {
				r.Feeds = append(r.Feeds, fmt.Sprintf("f%d", i))
			}
			return r
		}(), "feeds"},
		{"apns android", devices.Registration{Provider: "apns", Token: strings.Repeat("ab", 32), Platform: "android"}, "platform"},
		{"negative min interval", devices.Registration{Provider: "fcm", Token: fcmToken(1), Platform: "ios",
			Sync: devices.BackgroundSync{MinInterval: -time.Second}}, "background_sync.min_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := b.reg.Register(t.Context(), tt.reg)
			fe, ok := err.(*devices.FieldError)
			if !ok || fe.Field != tt.field {
				t.Fatalf("got %v, want a FieldError on %s", err, tt.field)
			}
		})
	}
}
