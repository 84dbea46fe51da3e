package devstack_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/console/browsertest"
	"github.com/nudge-dev/nudge/internal/devstack"
)

// page is one browser tab on the devstack's console.
type page struct {
	stack *devstack.Stack
	tab   *browsertest.Tab
}

func openConsole(t *testing.T, s *devstack.Stack, browser *browsertest.Browser) *page {
	t.Helper()
	p := &page{stack: s, tab: browser.NewTab(t)}
	t.Cleanup(func() {
		if errs := p.tab.JSErrors(); len(errs) > 0 {
			t.Errorf("the console reported JavaScript errors:\n%s", strings.Join(errs, "\n"))
		}
	})
	p.do(t, "open the console",
		chromedp.Navigate(s.ConsoleURL()),
		chromedp.WaitVisible(chromedp.CSS("#login-key")),
	)
	return p
}

func (p *page) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(p.tab.Ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// text returns the trimmed text of the first element matching sel, or
// "<missing>".
func (p *page) text(t *testing.T, sel string) string {
	t.Helper()
	q, _ := json.Marshal(sel)
	v, err := chromedp.Run(p.tab.Ctx, chromedp.Evaluate[string](fmt.Sprintf(
		`(() => { const e = document.querySelector(%s); return e ? e.textContent.trim().replace(/\s+/g, " ") : "<missing>"; })()`, q)))
	if err != nil {
		t.Fatalf("read %s: %v", sel, err)
	}
	return v
}

func (p *page) login(t *testing.T, key string) {
	t.Helper()
	p.do(t, "log in",
		chromedp.SendKeys(chromedp.CSS("#login-key"), key),
		chromedp.Click(chromedp.CSS("#login-submit")),
	)
}

// count reads one of the sync progress counts ("1,234" → 1234).
func (p *page) count(t *testing.T, name string) int {
	t.Helper()
	s := p.text(t, fmt.Sprintf("[data-count=%s]", name))
	n, err := strconv.Atoi(strings.ReplaceAll(s, ",", ""))
	if err != nil {
		t.Fatalf("count %s: %q is not a number", name, s)
	}
	return n
}

// syncState is the api's view of one sync, GET /v1/syncs/{id}.
type syncState struct {
	State    string `json:"state"`
	Targeted int    `json:"targeted"`
	Sent     int    `json:"sent"`
}

func getSync(t *testing.T, s *devstack.Stack, id string) syncState {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.APIURL()+"/v1/syncs/"+id, nil)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+s.AdminKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /v1/syncs/%s: %v", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/syncs/%s: status %d", id, resp.StatusCode)
	}
	var st syncState
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("decode sync: %v", err)
	}
	return st
}

// TestConsoleAgainstDevstack drives the editors' console in a real browser
// against a running devstack: the minted admin key logs in, a breaking
// sync reaches the simulated fleet, and a wrong key is turned away.
func TestConsoleAgainstDevstack(t *testing.T) {
	t.Parallel()
	s := startStack(t, devstack.Config{Seed: 11, ArticleInterval: 2 * time.Second})
	select {
	case <-s.Fleet().Registered():
	case <-time.After(60 * time.Second):
		t.Fatalf("the fleet did not finish registering within 60s: %+v", s.Fleet().Stats())
	}
	if st := s.Fleet().Stats(); st.Registered != testDevices {
		t.Fatalf("registered devices: got %d, want %d (%+v)", st.Registered, testDevices, st)
	}
	browser := browsertest.Start(t, browsertest.Config{Width: 1280, Height: 1000})

	t.Run("wrong key is rejected", func(t *testing.T) {
		t.Parallel()
		p := openConsole(t, s, browser)
		p.login(t, "nk_not-a-key-of-this-devstack")
		p.tab.WaitFor(t, "the login error", `document.querySelector("#login-error").textContent !== ""`, 10*time.Second)
		if got, want := p.text(t, "#login-error"), "That key was not accepted."; got != want {
			t.Fatalf("login error: got %q, want %q", got, want)
		}
		v, err := chromedp.Run(p.tab.Ctx, chromedp.Evaluate[bool](`document.querySelector("#console-view").hidden`))
		if err != nil || !v {
			t.Fatalf("console view hidden after a rejected key: got %v (%v), want true", v, err)
		}
	})

	t.Run("breaking sync reaches the fleet", func(t *testing.T) {
		t.Parallel()
		const feed = "headlines"
		// The console acts for the first app it lists: the news app
		// where the api serves the devstack's apps file, else every device's.
		app := ""
		if slices.Contains(apiApps(t, s), devstack.DevApps[0].ID) {
			app = devstack.DevApps[0].ID
		}
		targeted, _ := s.Fleet().Subscribers(app, feed)
		if targeted == 0 {
			t.Fatalf("no fleet device subscribes to %s", feed)
		}
		breakingBefore := s.Fleet().Stats().Breaking

		p := openConsole(t, s, browser)
		p.login(t, s.AdminKey())
		p.tab.WaitFor(t, "the overview with the news room's feeds",
			`!document.querySelector("#console-view").hidden && document.querySelectorAll("#feeds li[data-feed-id]").length === 3`, 15*time.Second)
		if got, want := p.text(t, "#whoami"), "Signed in as devstack-admin (admin)"; got != want {
			t.Fatalf("whoami: got %q, want %q", got, want)
		}

		p.do(t, "send a breaking sync from the form",
			chromedp.Click(chromedp.CSS(`input[name=feed][value=`+feed+`]`)),
			chromedp.SendKeys(chromedp.CSS("#alert-title"), "Storm warning"),
			chromedp.SendKeys(chromedp.CSS("#alert-body"), "Heavy rain expected tonight."),
			chromedp.Click(chromedp.CSS("#sync-submit")),
		)
		p.tab.WaitFor(t, "the sync to finish", `document.querySelector("#sync-state").dataset.state === "done"`, 45*time.Second)

		if got := p.count(t, "targeted"); got != targeted {
			t.Fatalf("targeted: got %d, want %d (the fleet's subscribers of %s)", got, targeted, feed)
		}
		outcomes := 0
		for _, c := range []string{"sent", "pruned", "failed", "deferred", "coalesced", "skipped"} {
			outcomes += p.count(t, c)
		}
		if outcomes < targeted {
			t.Fatalf("outcomes: got %d, want at least the %d targeted", outcomes, targeted)
		}
		sent := p.count(t, "sent")
		if sent == 0 {
			t.Fatalf("sent: got 0, want the breaking push sent to the syncing devices")
		}
		// The api agrees with the page.
		id := p.text(t, "#sync-id")
		if st := getSync(t, s, id); st.Targeted != targeted || st.State == "planning" {
			t.Fatalf("GET /v1/syncs/%s: got targeted %d state %q, want %d, planning done", id, st.Targeted, st.State, targeted)
		}
		// The pushes really reached the simulated phones.
		await.Poll{Timeout: 20 * time.Second, Interval: 100 * time.Millisecond}.Check(t, "the breaking pushes delivered to the fleet", func() error {
			if got := s.Fleet().Stats().Breaking - breakingBefore; got < int64(sent) {
				return fmt.Errorf("got %d, want %d", got, sent)
			}
			return nil
		})

		// For the screenshot: wait until the overview shows wakes.
		p.tab.WaitFor(t, "wakes in the overview",
			`[...document.querySelectorAll("[data-metric=wake_rate]")].some(e => e.textContent.includes("%"))`, 30*time.Second)
		shot := p.tab.Screenshot(t, "console-after-sync.png")
		if os.Getenv("NUDGE_UPDATE_SCREENSHOT") == "1" {
			b, err := os.ReadFile(shot)
			if err != nil {
				t.Fatalf("read screenshot: %v", err)
			}
			dst := filepath.Join("..", "..", "docs", "console.png")
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				t.Fatalf("update %s: %v", dst, err)
			}
			t.Logf("updated %s", dst)
		}
	})
}
