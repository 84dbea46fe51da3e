package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/redis/go-redis/v9"
)

// fanOut registers fleet devices on feed headlines and creates a sync of
// it; it returns the sync's event id.
func fanOut(t *testing.T, s *stack, fleet int) string {
	t.Helper()
	devicestest.Write(t, s.rdb, 1, uint64(fleet), func(uint64) string { return "headlines" })
	var created struct{ ID string }
	if code := s.call("POST", "/v1/syncs", s.editorKey, map[string]any{"feeds": []string{"headlines"}}, &created); code != http.StatusAccepted {
		t.Fatalf("create sync: status %d", code)
	}
	return created.ID
}

// deliveriesPerDevice returns how many devices of 1..fleet got no push and
// how many pushes beyond the first the others got.
func deliveriesPerDevice(s *stack, fleet int) (missing, dups int) {
	for id := uint64(1); id <= uint64(fleet); id++ {
		switch n := s.emu.CountToken(devicestest.Token(id)); {
		case n == 0:
			missing++
		default:
			dups += n - 1
		}
	}
	return missing, dups
}

// deadPushes counts the entries of the push queue's dead-letter streams.
func deadPushes(t *testing.T, s *stack) int64 {
	t.Helper()
	return sumPartitions(t, t.Context(), s, func(pipe redis.Pipeliner, p int) {
		pipe.XLen(t.Context(), keys.DeadLetter(keys.PushQueue, p))
	})
}

// TestTwoDispatchersSlowProviderNoDuplicates runs two live dispatchers
// over one fan-out while the emulator answers every push 300 ms late, so
// that each replica holds read jobs waiting for a handler slot for
// seconds, longer than the heartbeat TTL (1s here). No process crashes, so
// no device may get a second push: a live replica never takes the other's
// jobs.
func TestTwoDispatchersSlowProviderNoDuplicates(t *testing.T) {
	t.Parallel()
	const fleet = 3000
	s := start(t, options{dispatchers: 2, env: map[string]string{
		"NUDGE_PUSH_WORKERS": "2", "NUDGE_PUSH_BATCH": "50",
		"NUDGE_HEARTBEAT_TTL": "1s",
	}})
	s.emu.AddFault(pushemu.Fault{Latency: 300 * time.Millisecond})
	fanOut(t, s, fleet)
	await.Within(t, 3*time.Minute, "every device to get its push", func() bool {
		missing, _ := deliveriesPerDevice(s, fleet)
		return missing == 0
	})
	await.Within(t, time.Minute, "the push queue to drain", func() bool { return pushesPending(t, s) == 0 })
	if _, dups := deliveriesPerDevice(s, fleet); dups != 0 {
		logDuplicates(t, s, fleet)
		t.Fatalf("duplicates without a crash: got %d, want 0", dups)
	}
	for i, d := range s.dispatchers {
		if exited, err := d.Exited(); exited {
			t.Fatalf("dispatcher %d exited: %v", i, err)
		}
	}
}

// TestProviderOutageDeliversOnceAfterRecovery runs a 20k-device fan-out
// through a provider outage in three phases: 503s, then 503s with the
// APNs connection closed after each answer (GOAWAY) and FCM 500s, then
// 429s with Retry-After. The outage is scaled down from minutes to about
// 9 s (3 s per phase, Retry-After 3 s instead of 120 s), with
// NUDGE_PUSH_DEVICE_BACKOFF lowered to 1s to match. Every device must get
// exactly one push after the recovery and nothing may be dead-lettered:
// retries are bounded by the push TTL, not by NUDGE_MAX_DELIVERIES (left
// at 5, far fewer than the retries an outage takes).
func TestProviderOutageDeliversOnceAfterRecovery(t *testing.T) {
	t.Parallel()
	const fleet = 20_000
	// The send and handler deadlines are raised (60 s, 120 s/2) so that
	// a loaded 2-core CI box, where a burst of retried sends can take more
	// than the default 10 s, does not cut off sends the emulator accepted:
	// those would be retried and counted as duplicates, which is the
	// at-least-once of a client deadline, not of the queue.
	s := start(t, options{dispatchers: 2, env: map[string]string{
		"NUDGE_PUSH_DEVICE_BACKOFF": "1s",
		"NUDGE_PUSH_SEND_TIMEOUT":   "60s", "NUDGE_RECLAIM_AFTER": "120s",
	}})
	phases := [][]pushemu.Fault{
		{{Provider: pushemu.APNs, Reason: "ServiceUnavailable"}, {Provider: pushemu.FCM, Reason: "UNAVAILABLE"}},
		{{Provider: pushemu.APNs, Reason: "ServiceUnavailable", GoAway: true}, {Provider: pushemu.FCM, Reason: "INTERNAL"}},
		{{Provider: pushemu.APNs, Reason: "TooManyRequests", RetryAfter: 3 * time.Second},
			{Provider: pushemu.FCM, Reason: "QUOTA_EXCEEDED", RetryAfter: 3 * time.Second}},
	}
	add := func(fs []pushemu.Fault) {
		for _, f := range fs {
			s.emu.AddFault(f)
		}
	}
	add(phases[0])
	fanOut(t, s, fleet)
	for _, ph := range phases[1:] {
		time.Sleep(3 * time.Second) // time is the subject: the length of an outage phase, scaled down
		s.emu.ClearFaults()
		add(ph)
	}
	time.Sleep(3 * time.Second) // time is the subject: the last outage phase
	if n := s.emu.Stats().Delivered; n != 0 {
		t.Fatalf("deliveries during the outage: got %d, want 0", n)
	}
	s.emu.ClearFaults()
	await.Within(t, 5*time.Minute, "every device to get its push after the outage", func() bool {
		missing, _ := deliveriesPerDevice(s, fleet)
		return missing == 0
	})
	await.Within(t, time.Minute, "the push queue to drain", func() bool { return pushesPending(t, s) == 0 })
	if _, dups := deliveriesPerDevice(s, fleet); dups != 0 {
		logDuplicates(t, s, fleet)
		t.Fatalf("duplicates: got %d, want 0 (no process died)", dups)
	}
	if n := deadPushes(t, s); n != 0 {
		t.Fatalf("dead-lettered pushes: got %d, want 0", n)
	}
}

// redisPid reads the redis-server's process id.
func redisPid(t *testing.T, s *stack) int {
	t.Helper()
	info, err := s.rdb.Info(t.Context(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("process_id %q: %v", v, err)
			}
			return pid
		}
	}
	t.Fatalf("no process_id in INFO server")
	return 0
}

// TestRedisStallDuringFanout stops the redis-server (SIGSTOP) for 15 s in
// the middle of a 20k-device fan-out served by two dispatchers, then lets
// it go on (SIGCONT). The dispatchers back off and resume: every device
// gets its push, the sync's progress reaches its target, and duplicates
// stay within the pushes in flight (two replicas × push workers × batch).
func TestRedisStallDuringFanout(t *testing.T) {
	t.Parallel()
	const (
		fleet   = 20_000
		workers = 4
		batch   = 250
	)
	s := start(t, options{dispatchers: 2, env: map[string]string{
		"NUDGE_PUSH_WORKERS": "4", "NUDGE_PUSH_BATCH": "250",
	}})
	pid := redisPid(t, s)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	id := fanOut(t, s, fleet)
	await.Within(t, 3*time.Minute, "a quarter of the fan-out delivered", func() bool { return s.emu.Stats().Delivered >= fleet/4 })
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	at := s.emu.Stats().Delivered
	time.Sleep(15 * time.Second) // time is the subject: the length of the Redis stall
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("redis stalled 15s at %d deliveries", at)
	await.Within(t, 5*time.Minute, "every device to get its push after the stall", func() bool {
		missing, _ := deliveriesPerDevice(s, fleet)
		return missing == 0
	})
	await.Within(t, time.Minute, "the push queue to drain", func() bool { return pushesPending(t, s) == 0 })
	var p progress
	await.Within(t, time.Minute, "the sync's progress to reach its target", func() bool {
		p = s.progress(id)
		return p.Targeted == fleet && p.Sent+p.Pruned+p.Failed >= p.Targeted
	})
	_, dups := deliveriesPerDevice(s, fleet)
	if limit := 2 * workers * batch; dups > limit {
		logDuplicates(t, s, fleet)
		t.Fatalf("duplicates: %d, over the in-flight bound %d", dups, limit)
	}
	t.Logf("redis stall: %d duplicates (bound %d), progress %+v", dups, 2*workers*batch, p)
	for i, d := range s.dispatchers {
		if exited, err := d.Exited(); exited {
			t.Fatalf("dispatcher %d exited: %v", i, err)
		}
	}
}

// logDuplicates logs the deliveries of the first devices that got more
// than one push.
func logDuplicates(t *testing.T, s *stack, fleet int) {
	t.Helper()
	shown := 0
	byProvider := map[pushemu.Provider]int{}
	for id := uint64(1); id <= uint64(fleet); id++ {
		if ds := s.emu.Deliveries(devicestest.Token(id)); len(ds) > 1 {
			byProvider[ds[0].Provider] += len(ds) - 1
			if shown++; shown > 5 {
				continue
			}
			for _, d := range ds {
				t.Logf("device %d: %s %s at %s id %s collapse %s data %v", id, d.Provider, d.Environment, d.At.Format(time.StampMilli), d.ID, d.CollapseID, d.Data)
			}
		}
	}
	t.Logf("duplicates by provider: %v", byProvider)
}
