package e2e

import (
	"context"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/stacktest"
	"github.com/redis/go-redis/v9"
)

// TestKilledDispatcherLosesNoPush runs two dispatcher replicas and kills
// one of them (the two in turn) with SIGKILL at random points of a
// breaking fan-out to 100k devices, starting a new one each time. The
// survivor claims the dead replica's pending jobs once its heartbeat
// expires. Every device must get the push; the only duplicates allowed
// are the pushes in flight at a kill (at most push workers × batch per
// kill), and a duplicate carries the same collapse id, so a phone shows it
// once.
func TestKilledDispatcherLosesNoPush(t *testing.T) {
	t.Parallel()
	const (
		fleet   = 100_000
		workers = 4
		batch   = 250
		kills   = 3
	)
	s := start(t, options{dispatchers: 2, env: map[string]string{
		"NUDGE_PUSH_WORKERS": "4", "NUDGE_PUSH_BATCH": "250",
	}})
	live := []*stacktest.Process{s.dispatchers[0], s.dispatchers[1]}
	devicestest.Write(t, s.rdb, 1, fleet, func(uint64) string { return "headlines" })

	var created struct{ ID string }
	if code := s.call("POST", "/v1/syncs", s.editorKey, map[string]any{"feeds": []string{"headlines"}}, &created); code != http.StatusAccepted {
		t.Fatalf("create sync: status %d", code)
	}
	// Kill at random fractions of the fan-out, each time once the
	// deliveries have passed that point.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for k := range kills {
		at := fleet * (k*30 + 5 + rng.IntN(25)) / 100 // in 5–30%, 35–60%, 65–90%
		await.Within(t, 3*time.Minute, "deliveries to pass the kill point", func() bool { return s.emu.Stats().Delivered >= at })
		live[k%2].Kill()
		t.Logf("kill %d (replica %d) at %d deliveries", k+1, k%2, s.emu.Stats().Delivered)
		live[k%2] = s.startDispatcher()
	}
	// Progress counters are best effort (a kill between a send and its
	// count loses the count); the emulator's record is the truth.
	missing := func() int {
		n := 0
		for id := uint64(1); id <= fleet; id++ {
			if s.emu.CountToken(devicestest.Token(id)) == 0 {
				n++
			}
		}
		return n
	}
	await.Within(t, 6*time.Minute, "every device to get its push", func() bool {
		return s.emu.Stats().Delivered >= fleet && missing() == 0
	})
	// Let the last redeliveries land before counting duplicates.
	await.Within(t, time.Minute, "the push queue to drain", func() bool { return pushesPending(t, s) == 0 })
	var dups int
	for id := uint64(1); id <= fleet; id++ {
		tok := devicestest.Token(id)
		dups += s.emu.CountToken(tok) - 1
		ds := s.emu.Deliveries(tok)
		for _, d := range ds[1:] {
			if d.CollapseID != ds[0].CollapseID {
				t.Fatalf("device %d: duplicate with collapse id %q, first had %q", id, d.CollapseID, ds[0].CollapseID)
			}
		}
	}
	if limit := kills * workers * batch; dups > limit {
		t.Fatalf("duplicates: %d, over the in-flight bound of %d (%d kills × %d workers × %d per batch)", dups, limit, kills, workers, batch)
	}
	t.Logf("%d devices, %d kills: %d duplicate pushes (bound %d), none lost", fleet, kills, dups, kills*workers*batch)
}

// pushesPending counts the push jobs still in the streams or waiting to be
// retried.
func pushesPending(t *testing.T, s *stack) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return sumPartitions(t, ctx, s, func(pipe redis.Pipeliner, p int) {
		pipe.XLen(ctx, keys.Stream(keys.PushQueue, p))
		pipe.ZCard(ctx, keys.Retry(keys.PushQueue, p))
	})
}

// sumPartitions queues add's counting commands for every partition in one
// pipeline and returns the sum of their answers.
func sumPartitions(t *testing.T, ctx context.Context, s *stack, add func(pipe redis.Pipeliner, p int)) int64 {
	t.Helper()
	pipe := s.rdb.Pipeline()
	for p := range keys.Partitions {
		add(pipe, p)
	}
	cmds, err := pipe.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, c := range cmds {
		n += c.(interface{ Val() int64 }).Val()
	}
	return n
}
