package deploy_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stacktest"
)

// Push worker settings of the multi-replica test: small batches and few
// workers, so the fan-out to a few thousand devices takes seconds and the
// kill lands in the middle of it.
const (
	pushWorkers = 1
	pushBatch   = 50
)

// TestMultiReplicaOnCluster runs 2 apis and 2 dispatchers on a 3-master
// Redis Cluster with the push emulator. Devices register through both apis;
// one feed update reaches every subscribed device exactly once. Then a
// dispatcher is killed with SIGKILL in the middle of a bigger fan-out, and
// every device still gets its push: jobs the dead replica held are
// reclaimed by the survivor after NUDGE_RECLAIM_AFTER, duplicates stay
// within what at-least-once allows and carry the same collapse id.
func TestMultiReplicaOnCluster(t *testing.T) {
	t.Parallel()
	cluster := redistest.StartCluster(t)
	rdb := cluster.Client(t)
	emu, creds := pushemutest.Start(t, service.Archetype{}, pushemu.Config{})
	fsrv := newFeedServer(t)
	feedsFile := fsrv.feedsFile(t, "small", "big")
	redisURL := "redis://" + cluster.Seeds()
	editor, err := auth.Mint("deploy-test", auth.RoleEditor)
	if err != nil {
		t.Fatal(err)
	}
	keysFile := filepath.Join(t.TempDir(), "api-keys.txt")
	if err := os.WriteFile(keysFile, []byte(editor.Line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var apis []string
	for range 2 {
		addr := freeAddr(t)
		p := stacktest.Start(t, "api", []string{
			"NUDGE_REDIS_URL=" + redisURL, "NUDGE_HTTP_ADDR=" + addr, "NUDGE_FEEDS_FILE=" + feedsFile, "NUDGE_API_KEYS_FILE=" + keysFile,
			"NUDGE_REGISTER_RATE_LIMIT=-1", "NUDGE_LOG_LEVEL=warn",
		})
		p.WaitHealthy(t, "http://"+addr+"/readyz", 90*time.Second)
		apis = append(apis, "http://"+addr)
	}
	var dispatchers []*stacktest.Process
	var metricsURLs []string
	for range 2 {
		addr := freeAddr(t)
		env := append(creds.Env(),
			"NUDGE_REDIS_URL="+redisURL, "NUDGE_HTTP_ADDR="+addr, "NUDGE_LOG_LEVEL=warn",
			"NUDGE_RECLAIM_AFTER=3s", "NUDGE_DEBOUNCE=1s", "NUDGE_MAX_WAIT=2s",
			"NUDGE_PUSH_WORKERS="+strconv.Itoa(pushWorkers), "NUDGE_PUSH_BATCH="+strconv.Itoa(pushBatch),
			"NUDGE_APNS_CONCURRENCY=8", "NUDGE_FCM_CONCURRENCY=1",
			"NUDGE_FEED_ALLOW_NETS=127.0.0.1/32", // the test's feed server is on loopback
		)
		p := stacktest.Start(t, "dispatcher", env)
		p.WaitHealthy(t, "http://"+addr+"/readyz", 90*time.Second)
		dispatchers = append(dispatchers, p)
		metricsURLs = append(metricsURLs, "http://"+addr+"/metrics")
	}
	for _, f := range []string{"small", "big"} {
		waitFor(t, 30*time.Second, "first poll of feed "+f, func() (bool, error) {
			h, err := feeds.ReadHealth(t.Context(), rdb, f)
			return !h.LastPoll.IsZero() && h.Notified == h.Head, err
		})
	}
	// The first poll's event must be planned before devices register, or
	// they would get its push too.
	waitFor(t, 30*time.Second, "first events planned", func() (bool, error) { return quiet(t.Context(), rdb) })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 30 * time.Second}
	registerAll := func(from, n int, feed string) []device {
		devs := make([]device, n)
		var wg sync.WaitGroup
		var failed atomic.Value
		work := make(chan int)
		for range 16 {
			wg.Go(func() {
				for i := range work {
					devs[i-from] = newDevice(i)
					if err := register(t.Context(), client, apis[i%2], devs[i-from], feed); err != nil {
						failed.Store(err)
					}
				}
			})
		}
		for i := from; i < from+n; i++ {
			work <- i
		}
		close(work)
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			t.Fatalf("register: %v", err)
		}
		return devs
	}
	// publish changes the feed and asks for a poll now, as a publisher's
	// CMS would (POST /v1/feeds/{feed}/poll, editor role).
	publish := func(feed string) {
		t.Helper()
		fsrv.publish(feed, "story at "+time.Now().Format(time.RFC3339Nano))
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, apis[1]+"/v1/feeds/"+feed+"/poll", nil)
		req.Header.Set("Authorization", "Bearer "+editor.Key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("POST /v1/feeds/%s/poll: %d", feed, resp.StatusCode)
		}
	}
	waitAll := func(devs []device, timeout time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		for _, d := range devs {
			if _, err := emu.WaitToken(ctx, d.Token, 1); err != nil {
				t.Fatalf("%s device %.12s…: no push within %v (%d pushes in all): %v", d.Provider, d.Token, timeout, emu.Count(), err)
			}
		}
		waitFor(t, 30*time.Second, "queues drained", func() (bool, error) { return quiet(t.Context(), rdb) })
	}

	// 1. One update, every subscribed device exactly one push.
	small := registerAll(0, 40, "small")
	publish("small")
	waitAll(small, 60*time.Second)
	for _, d := range small {
		if n := emu.CountToken(d.Token); n != 1 {
			t.Errorf("%s device %.12s…: got %d pushes, want exactly 1", d.Provider, d.Token, n)
		}
		if ds := emu.Deliveries(d.Token); len(ds) > 0 && !strings.Contains(ds[0].Data["feeds"], "small") {
			t.Errorf("%s device %.12s…: push data %v does not name feed small", d.Provider, d.Token, ds[0].Data)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// 2. A bigger update; SIGKILL one dispatcher mid-way.
	const bigN = 2000
	big := registerAll(1000, bigN, "big")
	emu.AddFault(pushemu.Fault{Latency: 40 * time.Millisecond}) // slow providers: the kill lands mid-fan-out
	before := emu.Count()
	publish("big")
	waitFor(t, 60*time.Second, "a fifth of the big fan-out sent", func() (bool, error) {
		return emu.Count()-before >= bigN/5, nil
	})
	dispatchers[0].Kill()
	killedAt := emu.Count() - before
	waitAll(big, 90*time.Second)

	dups := 0
	for _, d := range big {
		ds := emu.Deliveries(d.Token)
		dups += len(ds) - 1
		for _, x := range ds[1:] {
			if x.CollapseID != ds[0].CollapseID {
				t.Errorf("%s device %.12s…: duplicate push with collapse id %q, first had %q", d.Provider, d.Token, x.CollapseID, ds[0].CollapseID)
			}
		}
	}
	// At-least-once: only the jobs the killed replica had read and not yet
	// acknowledged are sent again, at most one batch per push worker (plus
	// one batch of the events worker's planning, which is idempotent).
	if bound := pushWorkers * pushBatch; dups > bound {
		t.Errorf("big update: %d duplicate pushes, want at most %d (the killed replica's unacknowledged batch)", dups, bound)
	}
	// The vector appears on the survivor's /metrics only once it reclaimed
	// a job: proof that the kill landed while the dead replica held work.
	if scrape(t, metricsURLs[1])["nudge_queue_redeliveries_total"] == nil {
		t.Errorf("the surviving dispatcher reclaimed no job: the kill did not land mid-fan-out")
	}
	t.Logf("big update: %d devices, kill after %d pushes, %d duplicates", bigN, killedAt, dups)
	if n := emu.Count() - before; n < bigN {
		t.Fatalf("big update: %d pushes for %d devices", n, bigN)
	}
}
