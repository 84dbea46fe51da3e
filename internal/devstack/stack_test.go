package devstack_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/stacktest"

	"github.com/nudge-dev/nudge/internal/devstack"
)

// testDevices is the fleet size of the tests: big enough for every kind of
// device, small enough for two shared cores under -race.
const testDevices = 200

// startStack starts a devstack on free loopback ports with the embedded
// Redis and a fast news room. It is stopped in the test's cleanup; a
// failing test gets the stack's logs.
func startStack(t *testing.T, cfg devstack.Config) *devstack.Stack {
	t.Helper()
	cfg.Devices = cmp.Or(cfg.Devices, testDevices)
	cfg.ArticleInterval = cmp.Or(cfg.ArticleInterval, time.Second)
	logs := &stacktest.Buffer{}
	s, err := devstack.New(cfg, nil, logs)
	if err != nil {
		t.Fatalf("new devstack: %v", err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("---- devstack logs ----\n%s", tail(logs.String(), 200))
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatalf("start devstack: %v", err)
	}
	return s
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// waitSummary polls the stack's summary until ok holds or the deadline
// passes, and returns the last summary. A summary that cannot be read (a
// Redis read timeout on a loaded machine) is tried again until the
// deadline.
func waitSummary(t *testing.T, s *devstack.Stack, what string, timeout time.Duration, ok func(devstack.Summary) bool) devstack.Summary {
	t.Helper()
	var last devstack.Summary
	await.Poll{Timeout: timeout, Interval: 250 * time.Millisecond}.Check(t, what, func() error {
		select {
		case <-s.Failed():
			t.Fatalf("a process of the stack stopped: %v", s.Err())
		default:
		}
		sum, err := s.Summary(t.Context())
		if err != nil {
			return fmt.Errorf("last summary: %s (error: %w); fleet: %+v", last, err, s.Fleet().Stats())
		}
		last = sum
		if !ok(sum) {
			return fmt.Errorf("last summary: %s; fleet: %+v", sum, s.Fleet().Stats())
		}
		return nil
	})
	return last
}

// TestStackWakesTheFleet is the newcomer's acceptance: within 60 s of the
// start, nudge's own figures show pushes sent to the simulated devices and
// receipts coming back from them.
func TestStackWakesTheFleet(t *testing.T) {
	t.Parallel()
	s := startStack(t, devstack.Config{Seed: 7})

	sum := waitSummary(t, s, "pushes sent, receipts back and a wake rate", 60*time.Second, func(m devstack.Summary) bool {
		return m.Sent > 0 && m.Receipts > 0 && m.WakeRate >= 0
	})
	t.Logf("summary: %s", sum)

	if sum.Registered == 0 || sum.Registered > testDevices {
		t.Fatalf("registered devices: got %d, want 1..%d", sum.Registered, testDevices)
	}
	if sum.Articles == 0 {
		t.Fatalf("articles published: got 0, want some")
	}
	if sum.WakeRate <= 0 || sum.WakeRate > 1 {
		t.Fatalf("wake rate: got %v, want within (0, 1]", sum.WakeRate)
	}
	if len(sum.WakeP50) == 0 {
		t.Fatalf("wake latency p50: got none, want one per platform with receipts")
	}
	// The pushes nudge counts as sent really reached the fleet through
	// the emulators, and the receipts nudge counts came from the fleet.
	fs := s.Fleet().Stats()
	if fs.Deliveries == 0 {
		t.Fatalf("deliveries the fleet saw: got 0, want some (nudge says %d sent)", sum.Sent)
	}
	if fs.Unknown != 0 {
		t.Fatalf("deliveries to tokens outside the fleet: got %d, want 0", fs.Unknown)
	}
	// A receipt whose answer is still on its way (Posting), or whose answer
	// the fleet gave up waiting for (among Failed), may be counted by nudge
	// but not by the fleet.
	if sum.Receipts > fs.Receipts+fs.Posting+fs.Failed {
		t.Fatalf("receipts nudge counted: got %d, more than the fleet posted (%d accepted, %d in flight, %d failed)", sum.Receipts, fs.Receipts, fs.Posting, fs.Failed)
	}
	if !strings.Contains(sum.String(), "wakes ") {
		t.Fatalf("summary line %q lacks the wakes", sum.String())
	}

	// The fleet also syncs on its own (background fetches, foreground
	// opens), and the receipts' cursors give the console its time-to-fresh.
	await.Poll{Timeout: 60 * time.Second, Interval: 500 * time.Millisecond}.Check(t, "a time-to-fresh p50 and receipts of every source", func() error {
		if fs := s.Fleet().Stats(); fs.Refreshes == 0 {
			return fmt.Errorf("no background fetch or foreground receipt accepted yet: %+v", fs)
		}
		req, err := http.NewRequestWithContext(t.Context(), "GET", s.APIURL()+"/v1/stats/freshness", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+s.AdminKey())
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		var fr struct {
			Items []struct {
				Platforms map[string]struct {
					Synced int64
					P50    *float64 `json:"p50_seconds"`
				}
			}
		}
		if err := json.NewDecoder(res.Body).Decode(&fr); err != nil || res.StatusCode != 200 {
			return fmt.Errorf("freshness: %d %v", res.StatusCode, err)
		}
		for _, it := range fr.Items {
			for _, p := range it.Platforms {
				if p.Synced > 0 && p.P50 != nil {
					return nil
				}
			}
		}
		return fmt.Errorf("no item has a p50 yet among %d", len(fr.Items))
	})
}

// TestStackTwoApps checks the devstack's two apps: an apps file that
// parses, with a news and a sports app on distinct emulator credentials
// (APNs topic and key, FCM project, hosts), the sports app offering a
// subset of the feeds. Where the api serves the apps file, the fleet is
// split between them and the sports app's emulators deliver too; an api
// that reads no apps file registers every phone with the default app.
func TestStackTwoApps(t *testing.T) {
	t.Parallel()
	s := startStack(t, devstack.Config{Seed: 11})
	f, err := os.Open(s.AppsFile())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	list, err := apps.Parse(f, s.AppsFile())
	if err != nil {
		t.Fatalf("the devstack's apps file: %v", err)
	}
	if len(list) != 2 || list[0].ID != "news" || list[1].ID != "sports" {
		t.Fatalf("apps: got %+v, want news and sports", list)
	}
	news, sports := list[0], list[1]
	if news.APNs.Topic == sports.APNs.Topic || news.APNs.KeyID == sports.APNs.KeyID || news.APNs.Host == sports.APNs.Host ||
		news.FCM.ProjectID == sports.FCM.ProjectID || news.FCM.Endpoint == sports.FCM.Endpoint || news.FCM.CredentialsFile == sports.FCM.CredentialsFile {
		t.Fatalf("the apps share credentials: news %+v %+v, sports %+v %+v", *news.APNs, *news.FCM, *sports.APNs, *sports.FCM)
	}
	if len(news.Feeds) != 0 || len(sports.Feeds) == 0 || len(sports.Feeds) >= len(devstack.NewsroomFeeds) {
		t.Fatalf("feeds: news %v (want all), sports %v (want a subset)", news.Feeds, sports.Feeds)
	}
	urls := s.AppEmulatorURLs()
	if len(urls) != 2 || urls["news"] != s.EmulatorURL() || urls["sports"] == urls["news"] {
		t.Fatalf("emulator control URLs: %v", urls)
	}

	served := apiApps(t, s)
	if !slices.Contains(served, "sports") {
		t.Logf("the api serves apps %v, not the apps file: every phone is the default app's", served)
		waitSummary(t, s, "pushes sent", 60*time.Second, func(m devstack.Summary) bool { return m.Sent > 0 })
		return
	}
	await.Within(t, 60*time.Second, "deliveries from the sports app's emulators", func() bool {
		return emulatorDeliveries(t, urls["sports"]) > 0 && emulatorDeliveries(t, urls["news"]) > 0
	})
}

// apiApps lists the app ids the api serves, as the admin key sees them.
func apiApps(t *testing.T, s *devstack.Stack) []string {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", s.APIURL()+"/v1/apps", nil)
	req.Header.Set("Authorization", "Bearer "+s.AdminKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /v1/apps: %v", err)
	}
	defer resp.Body.Close()
	var out struct{ Apps []struct{ ID string } }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/apps: %d, %v", resp.StatusCode, err)
	}
	var ids []string
	for _, a := range out.Apps {
		ids = append(ids, a.ID)
	}
	return ids
}

// emulatorDeliveries is the deliveries an emulator's control API counts.
func emulatorDeliveries(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/admin/stats")
	if err != nil {
		t.Fatalf("emulator stats: %v", err)
	}
	defer resp.Body.Close()
	var st pushemu.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("emulator stats: %v", err)
	}
	return st.Delivered
}

// TestStackWakeRateBelowOne checks the simulated wake behaviour: with a
// large miss rate, fewer pushes wake the app than were sent.
func TestStackWakeRateBelowOne(t *testing.T) {
	t.Parallel()
	s := startStack(t, devstack.Config{Devices: 100, Seed: 3, MissRate: 0.5})
	sum := waitSummary(t, s, "a wake rate below 1 over 20+ pushes", 60*time.Second, func(m devstack.Summary) bool {
		fs := s.Fleet().Stats()
		return m.Sent >= 20 && fs.Missed > 0 && m.Receipts > 0 && m.WakeRate >= 0
	})
	fs := s.Fleet().Stats()
	if fs.Missed == 0 {
		t.Fatalf("pushes that did not wake the app: got 0, want some")
	}
	if sum.WakeRate >= 1 {
		t.Fatalf("wake rate with half the pushes missed: got %v, want below 1", sum.WakeRate)
	}
}

func TestStackStopIsSafe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		start bool
	}{
		{"before start", false},
		{"twice after start", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !tt.start {
				s, err := devstack.New(devstack.Config{}, nil, nil)
				if err != nil {
					t.Fatalf("new: %v", err)
				}
				s.Stop()
				s.Stop()
				return
			}
			s := startStack(t, devstack.Config{Devices: 10})
			s.Stop()
			s.Stop()
			select {
			case <-s.Failed():
				t.Fatalf("stopping the stack counted as a process failure: %v", s.Err())
			default:
			}
		})
	}
}

func TestNewRejectsShortPollInterval(t *testing.T) {
	t.Parallel()
	_, err := devstack.New(devstack.Config{FeedPollInterval: time.Second}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "NUDGE_DEVSTACK_FEED_POLL_INTERVAL") {
		t.Fatalf("error: got %v, want one naming NUDGE_DEVSTACK_FEED_POLL_INTERVAL", err)
	}
}

// TestStartNamesTheBusyAddress holds each listen address of the devstack
// with another listener (the fault) and checks that Start fails with an
// error naming the setting that moves that part, and stops what it had
// started.
func TestStartNamesTheBusyAddress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		part, setting string
		set           func(*devstack.Config, string)
	}{
		{"api", "NUDGE_DEVSTACK_API_ADDR", func(c *devstack.Config, a string) { c.APIAddr = a }},
		{"dispatcher", "NUDGE_DEVSTACK_DISPATCHER_ADDR", func(c *devstack.Config, a string) { c.DispatcherAddr = a }},
		{"news room", "NUDGE_DEVSTACK_NEWSROOM_ADDR", func(c *devstack.Config, a string) { c.NewsroomAddr = a }},
		{"push emulators' control API", "NUDGE_DEVSTACK_PUSHEMU_ADDR", func(c *devstack.Config, a string) { c.EmulatorAddr = a }},
		{"embedded Redis", "NUDGE_EMBEDDED_REDIS_ADDR", func(c *devstack.Config, a string) { c.EmbeddedRedisAddr = a }},
	}
	for _, tt := range tests {
		t.Run(tt.setting, func(t *testing.T) {
			t.Parallel()
			busy, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()
			cfg := devstack.Config{Devices: 5}
			tt.set(&cfg, busy.Addr().String())
			s, err := devstack.New(cfg, nil, nil)
			if err != nil {
				t.Fatalf("new: %v", err)
			}
			defer s.Stop()
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			err = s.Start(ctx)
			inUse, ok := errors.AsType[*devstack.AddrInUseError](err)
			if !ok {
				t.Fatalf("Start with %s busy: got %v, want an *AddrInUseError", busy.Addr(), err)
			}
			if inUse.Part != tt.part || inUse.Addr != busy.Addr().String() || !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("error %+v: want part %q, addr %s, wrapping EADDRINUSE", inUse, tt.part, busy.Addr())
			}
			if msg := err.Error(); !strings.Contains(msg, "set "+tt.setting+" (-") || !strings.Contains(msg, tt.setting+"=127.0.0.1:") {
				t.Errorf("message does not say to set %s: %s", tt.setting, msg)
			}
		})
	}
}
