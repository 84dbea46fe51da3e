package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/delivery"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/pushemu"
)

func TestFeedChangeWakesExactlyTheSubscribedDevices(t *testing.T) {
	t.Parallel()
	s := start(t, options{})
	ios := s.register("apns", "ios", true, "headlines")
	android := s.register("fcm", "android", true, "headlines", "sport")
	iosFCM := s.register("fcm", "ios", true, "headlines")
	optedOut := s.register("fcm", "android", false, "headlines")
	elsewhere := s.register("apns", "ios", true, "sport")
	before, err := feeds.ReadHealth(t.Context(), s.rdb, "headlines")
	if err != nil {
		t.Fatal(err)
	}

	s.publish("headlines", "Parliament votes on the budget")
	eventID := fmt.Sprintf("feed:headlines:%d", before.Head+1)
	await.Within(t, 30*time.Second, "the event's pushes to be sent", func() bool {
		p := s.progress(eventID)
		return p.State != "planning" && p.Sent == 3
	})
	if p := s.progress(eventID); p.Targeted != 4 || p.Skipped != 1 || p.Failed != 0 || p.Pruned != 0 {
		t.Fatalf("progress: got %+v, want 4 targeted, 3 sent, 1 skipped", p)
	}
	for _, d := range []device{ios, android, iosFCM} {
		got := s.emu.Deliveries(d.Token)
		if len(got) != 1 {
			t.Fatalf("%s device: got %d pushes, want 1", d.Platform, len(got))
		}
		p := got[0].Data
		if p["type"] != "nudge.sync" || p["feeds"] != "headlines" || p["reason"] != "feed" || p["event"] != eventID || p["task"] != "nudge.sync" {
			t.Fatalf("%s payload: got %v", d.Platform, p)
		}
		since := sinceOf(t, p, "headlines")
		if since != before.Head {
			t.Fatalf("%s payload since: got %d, want the head before the story, %d", d.Platform, since, before.Head)
		}
		if titles := s.itemTitles("headlines", since); !slices.Equal(titles, []string{"Parliament votes on the budget"}) {
			t.Fatalf("sync read after since=%d: got %q", since, titles)
		}
		if got[0].Alert {
			t.Fatalf("%s: a feed push carried a visible alert", d.Platform)
		}
	}
	for _, d := range []device{optedOut, elsewhere} {
		if n := s.emu.CountToken(d.Token); n != 0 {
			t.Fatalf("device not due a push (%s) got %d", d.Platform, n)
		}
	}

	// The woken app reports back; the console shows the wake.
	p := s.emu.Deliveries(ios.Token)[0].Data
	receipt := map[string]any{"push_id": p["push_id"], "received_at": time.Now().Format(time.RFC3339Nano), "outcome": "synced", "items": 1}
	if code := s.call("POST", fmt.Sprintf("/v1/devices/%d/receipts", ios.ID), ios.Secret, receipt, nil); code != http.StatusNoContent {
		t.Fatalf("receipt: status %d", code)
	}
	var ov struct {
		Platforms map[string]struct{ Sent, Receipts int64 }
	}
	s.call("GET", "/v1/console/overview", s.editorKey, nil, &ov)
	if ov.Platforms["ios"].Sent != 2 || ov.Platforms["ios"].Receipts != 1 || ov.Platforms["android"].Sent != 1 {
		t.Fatalf("console figures: got %+v", ov.Platforms)
	}
}

func TestTenUpdatesInAMinuteStayWithinTheIOSBudget(t *testing.T) {
	t.Parallel()
	// The iOS policy on a faster clock: 3 pushes per 20 s window, 4 s apart.
	const (
		limit  = 3
		window = 20 * time.Second
		gap    = 4 * time.Second
	)
	s := start(t, options{env: map[string]string{
		"NUDGE_IOS_PUSH_LIMIT": "3", "NUDGE_IOS_PUSH_WINDOW": "20s", "NUDGE_IOS_MIN_GAP": "4s",
		"NUDGE_DEBOUNCE": "1s", "NUDGE_MAX_WAIT": "2s",
	}})
	d := s.register("apns", "ios", true, "headlines")
	var last string
	for i := range 10 {
		last = fmt.Sprintf("Live: minute %d of the match", i+1)
		s.publish("headlines", last)
		time.Sleep(time.Second) // time is the subject: ten updates within ten seconds
	}
	// The last update is covered by a push sent after it: fetching from that
	// push's since returns the last story.
	var pushes []pushemu.Delivery
	await.Within(t, 60*time.Second, "a push that covers the last update", func() bool {
		pushes = s.emu.Deliveries(d.Token)
		if len(pushes) == 0 {
			return false
		}
		since := sinceOf(t, pushes[len(pushes)-1].Data, "headlines")
		return slices.Contains(s.itemTitles("headlines", since), last)
	})
	if len(pushes) > 10 || len(pushes) < 1 {
		t.Fatalf("pushes: got %d", len(pushes))
	}
	// The throttle spaces pushes by when it queues them; delivery adds a
	// little jitter on a loaded machine, hence the slack (the throttle's
	// property tests check the exact bounds on a simulated clock).
	const slack = time.Second
	for i := range pushes {
		if i > 0 && pushes[i].At.Sub(pushes[i-1].At) < gap-slack {
			t.Fatalf("pushes %d and %d are %v apart, under the %v gap", i-1, i, pushes[i].At.Sub(pushes[i-1].At), gap)
		}
		inWindow := 0
		for _, q := range pushes[i:] {
			if q.At.Sub(pushes[i].At) < window-slack {
				inWindow++
			}
		}
		if inWindow > limit {
			t.Fatalf("%d pushes within %v of push %d, over the budget of %d", inWindow, window, i, limit)
		}
	}
	// The console counts the updates the budget held back or merged.
	var ov struct {
		Platforms map[string]struct{ Sent, Deferred, Coalesced int64 }
	}
	s.call("GET", "/v1/console/overview", s.editorKey, nil, &ov)
	if ios := ov.Platforms["ios"]; ios.Deferred == 0 || ios.Coalesced == 0 || ios.Sent != int64(len(pushes)) {
		t.Fatalf("console iOS figures: got %+v for %d pushes, want deferred and coalesced updates counted", ios, len(pushes))
	}
	t.Logf("10 updates reached the iOS device as %d pushes", len(pushes))
}

func TestBreakingSyncArrivesInsideTheDebounce(t *testing.T) {
	t.Parallel()
	s := start(t, options{env: map[string]string{"NUDGE_DEBOUNCE": "2m", "NUDGE_MAX_WAIT": "15m"}})
	ios := s.register("apns", "ios", true, "headlines")
	android := s.register("fcm", "android", true, "headlines")
	// A feed change first: it waits out the two-minute debounce.
	s.publish("headlines", "Storm warning for the coast")
	s.waitFeedSettled("headlines")

	var created struct{ ID string }
	sent := time.Now()
	code := s.call("POST", "/v1/syncs", s.editorKey, map[string]any{
		"feeds": []string{"headlines"}, "alert": map[string]string{"title": "Breaking", "body": "The storm has reached the coast"},
	}, &created)
	if code != http.StatusAccepted {
		t.Fatalf("create sync: status %d", code)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for _, d := range []device{ios, android} {
		got, err := s.emu.WaitToken(ctx, d.Token, 1)
		if err != nil {
			t.Fatalf("%s: no breaking push within 20s: %v", d.Platform, err)
		}
		p := got[0].Data
		if p["reason"] != "breaking" || !got[0].Alert || p["event"] != created.ID {
			t.Fatalf("%s: got %v (alert %v), want the breaking sync %s with its alert", d.Platform, p, got[0].Alert, created.ID)
		}
		if lane, _, err := delivery.ParsePushID(p["push_id"]); err != nil || lane != "alert" { // a sync with an alert goes on the alert lane (issue 13)
			t.Fatalf("push id %q: lane %q, %v", p["push_id"], lane, err)
		}
		// The pending feed push was folded into the breaking one.
		if !strings.Contains(p["feeds"], "headlines") {
			t.Fatalf("feeds %q", p["feeds"])
		}
		if waited := got[0].At.Sub(sent); waited > 15*time.Second {
			t.Fatalf("%s: breaking push took %v", d.Platform, waited)
		}
	}
	await.Within(t, 10*time.Second, "sync progress to count both pushes", func() bool {
		p := s.progress(created.ID)
		return p.State != "planning" && p.Targeted == 2 && p.Sent == 2
	})
}

func TestUnregisteredTokenIsPrunedAfterOneSend(t *testing.T) {
	t.Parallel()
	s := start(t, options{})
	gone := s.register("apns", "ios", true, "headlines")
	kept := s.register("fcm", "android", true, "headlines")
	// APNs's timestamp must follow the token's registration, or the device
	// is kept as re-registered since (docs/push.md).
	s.emu.Unregister(pushemu.APNs, gone.Token, time.Now().Add(2*time.Second))

	var created struct{ ID string }
	s.call("POST", "/v1/syncs", s.editorKey, map[string]any{"feeds": []string{"headlines"}}, &created)
	await.Within(t, 30*time.Second, "one push sent and one token pruned", func() bool {
		p := s.progress(created.ID)
		return p.Sent == 1 && p.Pruned == 1
	})
	if code := s.call("GET", fmt.Sprintf("/v1/devices/%d", gone.ID), gone.Secret, nil, nil); code != http.StatusNotFound {
		t.Fatalf("pruned device: GET answered %d, want 404", code)
	}
	if code := s.call("GET", fmt.Sprintf("/v1/devices/%d", kept.ID), kept.Secret, nil, nil); code != http.StatusOK {
		t.Fatalf("kept device: GET answered %d, want 200", code)
	}
	if n := s.emu.Stats().Rejected; n != 1 {
		t.Fatalf("emulator rejections: got %d, want the one send to the dead token", n)
	}
}

func TestTwoDispatchersPollEachFeedOncePerInterval(t *testing.T) {
	t.Parallel()
	s := start(t, options{dispatchers: 2, feeds: []feedEntry{{ID: "headlines", PollInterval: "10s"}}})
	first := len(s.news.fetchTimes("headlines"))
	time.Sleep(32 * time.Second) // time is the subject: how often the feed is polled over three intervals
	at := s.news.fetchTimes("headlines")[first:]
	// Three intervals at 10 s ± 10% jitter: three polls, never two close
	// together (two replicas without the lease would poll twice each time).
	if len(at) < 2 || len(at) > 4 {
		t.Fatalf("polls in 32 s after the first: got %d, want about 3", len(at))
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 5*time.Second {
			t.Fatalf("polls %d and %d only %v apart: two replicas polled one interval", i-1, i, gap)
		}
	}
	t.Logf("two dispatchers polled the feed %d times in 32 s (interval 10 s)", len(at))
}

func TestBadFeedsKeepTheDispatcherHealthy(t *testing.T) {
	t.Parallel()
	bad := http.NewServeMux()
	bad.HandleFunc("/malformed.xml", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`<?xml version="1.0"?><rss version="2.0"><channel><title>Broken<item><title>x`))
	})
	bad.HandleFunc("/error.xml", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream exploded", http.StatusInternalServerError)
	})
	bad.HandleFunc("/loop.xml", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop.xml?again", http.StatusFound)
	})
	bad.HandleFunc("/huge.xml", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`<?xml version="1.0"?><rss version="2.0"><channel><title>Huge</title>`))
		chunk := []byte(strings.Repeat("<item><title>filler</title></item>", 1000))
		for written := 0; written < 50<<20; written += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	bad.HandleFunc("/endless.xml", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`<?xml version="1.0"?><rss version="2.0"><channel><title>Endless</title>`))
		for r.Context().Err() == nil {
			if _, err := w.Write([]byte("<item><title>more</title></item>")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(10 * time.Millisecond) // time is the subject: a feed that trickles forever
		}
	})
	srv := httptest.NewServer(bad)
	t.Cleanup(srv.Close)
	names := []string{"malformed", "error", "loop", "huge", "endless"}
	entries := []feedEntry{{ID: "headlines", PollInterval: "1h"}}
	for _, n := range names {
		entries = append(entries, feedEntry{ID: n, URL: srv.URL + "/" + n + ".xml", PollInterval: "1h"})
	}
	s := start(t, options{feeds: entries, skipSettle: true, env: map[string]string{"NUDGE_FEED_TIMEOUT": "3s", "NUDGE_FEED_MAX_BYTES": "5000000"}})
	s.waitFeedSettled("headlines")
	for _, n := range names {
		await.Within(t, 30*time.Second, "feed "+n+" to show its failure", func() bool {
			h, err := feeds.ReadHealth(t.Context(), s.rdb, n)
			return err == nil && h.Failures >= 1 && h.LastError != ""
		})
	}
	var ov struct {
		Feeds []struct {
			ID     string
			Health struct {
				LastError           *string `json:"last_error"`
				ConsecutiveFailures int     `json:"consecutive_failures"`
			}
		}
	}
	s.call("GET", "/v1/console/overview", s.editorKey, nil, &ov)
	for _, f := range ov.Feeds {
		failing := f.Health.ConsecutiveFailures > 0 && f.Health.LastError != nil
		if failing != (f.ID != "headlines") {
			t.Fatalf("feed %s: failing=%v (%+v)", f.ID, failing, f.Health)
		}
	}
	// The good feed still works, and the dispatcher is healthy.
	d := s.register("fcm", "android", true, "headlines")
	s.publish("headlines", "Still here")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := s.emu.WaitToken(ctx, d.Token, 1); err != nil {
		t.Fatalf("good feed's push: %v", err)
	}
	for _, p := range s.dispatchers {
		if exited, err := p.Exited(); exited {
			t.Fatalf("dispatcher exited: %v", err)
		}
	}
}
