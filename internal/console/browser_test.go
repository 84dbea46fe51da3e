package console_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nudge-dev/nudge/internal/console"
	"github.com/nudge-dev/nudge/internal/console/browsertest"
)

// bundle is one browser case: a fake api serving the console, and a tab.
type bundle struct {
	api  *fakeAPI
	base string // the server's origin, e.g. http://127.0.0.1:1234
	tab  *browsertest.Tab
}

func setup(t *testing.T, browser *browsertest.Browser) *bundle {
	t.Helper()
	api := newFakeAPI()
	mux := http.NewServeMux()
	mux.Handle(console.Path, console.Handler())
	mux.Handle("GET /console", console.Handler())
	api.routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b := &bundle{api: api, base: srv.URL, tab: browser.NewTab(t)}
	t.Cleanup(func() {
		if errs := b.tab.JSErrors(); len(errs) > 0 {
			t.Errorf("the page reported JavaScript errors:\n%s", strings.Join(errs, "\n"))
		}
	})
	return b
}

// js evaluates a JavaScript expression in the page.
func js[T any](t *testing.T, b *bundle, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.tab.Ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// text returns the trimmed text content of the first element matching sel,
// or "<missing>".
func text(t *testing.T, b *bundle, sel string) string {
	t.Helper()
	q, _ := json.Marshal(sel)
	return js[string](t, b, fmt.Sprintf(`(() => { const e = document.querySelector(%s); return e ? e.textContent.trim().replace(/\s+/g, " ") : "<missing>"; })()`, q))
}

func do(t *testing.T, b *bundle, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.tab.Ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// grouped formats n the way the page does in en-US: 1200 → "1,200".
func grouped(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// login opens the console and submits key in the login form.
func login(t *testing.T, b *bundle, key string) {
	t.Helper()
	do(t, b, "open the console",
		chromedp.Navigate(b.base+"/console"),
		chromedp.WaitVisible(chromedp.CSS("#login-key")),
	)
	if key != "" {
		do(t, b, "type the key", chromedp.SendKeys(chromedp.CSS("#login-key"), key))
	}
	do(t, b, "submit the login", chromedp.Click(chromedp.CSS("#login-submit")))
}

// loginOK logs in and waits for the overview to render.
func loginOK(t *testing.T, b *bundle, key string) {
	t.Helper()
	login(t, b, key)
	b.tab.WaitFor(t, "the overview", `!document.querySelector("#console-view").hidden && document.querySelectorAll("#feeds li[data-feed-id]").length > 0`, 10*time.Second)
}

func TestConsoleInBrowser(t *testing.T) {
	t.Parallel()
	browser := browsertest.Start(t, browsertest.Config{})

	t.Run("editor sees the overview", func(t *testing.T) {
		t.Parallel()
		b := setup(t, browser)
		loginOK(t, b, "editor-key")

		if got, want := text(t, b, "#whoami"), "Signed in as Erin Editor (editor)"; got != want {
			t.Fatalf("whoami: got %q, want %q", got, want)
		}
		if got, want := js[string](t, b, `sessionStorage.getItem("nudge.console.key")`), "editor-key"; got != want {
			t.Fatalf("sessionStorage key: got %q, want %q", got, want)
		}
		if got := js[int](t, b, `localStorage.length`); got != 0 {
			t.Fatalf("localStorage entries: got %d, want 0 (the key belongs in sessionStorage)", got)
		}
		if got := js[string](t, b, `document.visibilityState`); got != "visible" {
			t.Fatalf("visibilityState: got %q, want visible (the page only polls while visible)", got)
		}

		checks := []struct{ sel, want string }{
			{`li[data-feed-id=headlines] .feed-title`, "Headlines"},
			{`li[data-feed-id=sport] .feed-title`, "Sport"},
			{`li[data-feed-id=culture] .feed-title`, "Culture & Arts"},
			{`li[data-feed-id=headlines] [data-testid=feed-health]`, "OK"},
			{`li[data-feed-id=sport] [data-testid=feed-health]`, "Failing"},
			{`li[data-feed-id=sport] [data-testid=feed-problem]`, "3 failures in a row (HTTP 503): fetch feed http://feeds.example.test/sport.xml: 503 Service Unavailable"},
			{`li[data-feed-id=headlines] .items li:first-child a`, "Headlines story 3"},
			{`li[data-feed-id=headlines] .feed-meta`, "headlines · every 2m · http://feeds.example.test/headlines.xml"},
			{`[data-platform=ios][data-metric=sent]`, "1,234"},
			{`[data-platform=ios][data-metric=deferred]`, "56"},
			{`[data-platform=ios][data-metric=coalesced]`, "7"},
			{`[data-platform=ios][data-metric=pruned]`, "3"},
			{`[data-platform=ios][data-metric=unresponsive]`, "41"},
			{`[data-platform=ios][data-metric=unresponsive_devices]`, "1,520"},
			{`[data-platform=android][data-metric=unresponsive_devices]`, "0"},
			{`[data-platform=ios][data-metric=wake_rate]`, "89.1 %"},
			{`[data-platform=ios][data-metric=wake_latency_p50_ms]`, "850 ms"},
			{`[data-platform=ios][data-metric=wake_latency_p99_ms]`, "4.2 s"},
			{`[data-platform=android][data-metric=sent]`, "2,345"},
			{`[data-platform=android][data-metric=wake_rate]`, "—"},
			{`[data-queue=push][data-metric=depth]`, "12"},
			{`[data-queue=events][data-metric=dead]`, "2"},
			{`label[for=sync-feed-sport]`, "Sport"},
		}
		for _, c := range checks {
			if got := text(t, b, c.sel); got != c.want {
				t.Errorf("%s: got %q, want %q", c.sel, got, c.want)
			}
		}

		// The chart: two lines, and a text alternative with the totals.
		if got := js[int](t, b, `document.querySelectorAll("#chart-plot svg polyline").length`); got != 2 {
			t.Fatalf("chart lines: got %d, want 2", got)
		}
		label := js[string](t, b, `document.querySelector("#chart-plot svg").getAttribute("aria-label")`)
		_, sent, wakes := series(time.Now())
		var sentSum, wakeSum int
		for i := range sent {
			sentSum += int(sent[i])
			wakeSum += int(wakes[i])
		}
		if want := fmt.Sprintf("Last hour: %s pushes sent and %s app wakes. Busiest minute: 430 pushes at ", grouped(sentSum), grouped(wakeSum)); !strings.HasPrefix(label, want) {
			t.Fatalf("chart aria-label: got %q, want it to start with %q", label, want)
		}
		if got := js[int](t, b, `document.querySelectorAll("#chart-table tbody tr").length`); got != 60 {
			t.Fatalf("chart table rows: got %d, want 60", got)
		}

		// Time-to-fresh: six lines (two platforms × p50/p90/p99), a point
		// per reached share, the table, and the feed selector.
		b.tab.WaitFor(t, "the time-to-fresh plot", `document.querySelectorAll("#fresh-plot svg polyline").length === 6`, 10*time.Second)
		points := js[string](t, b, `[...document.querySelectorAll("#fresh-plot svg polyline")].map(p => p.dataset.series + ":" + p.getAttribute("points").split(" ").filter(Boolean).length).join(" ")`)
		if want := "android_p50:4 android_p90:3 android_p99:3 ios_p50:3 ios_p90:3 ios_p99:0"; points != want {
			t.Errorf("time-to-fresh points: got %q, want %q", points, want)
		}
		if got := js[int](t, b, `document.querySelectorAll("#fresh-table tbody tr").length`); got != 4 {
			t.Errorf("time-to-fresh table rows: got %d, want 4", got)
		}
		if got, want := js[string](t, b, `[...document.querySelectorAll("#fresh-table tbody tr:last-child td")].map(c => c.textContent).join("|")`), "headlines|7.0 s|—|—|—|—|—"; got != want {
			t.Errorf("newest time-to-fresh row: got %q, want %q", got, want)
		}
		if label := js[string](t, b, `document.querySelector("#fresh-plot svg").getAttribute("aria-label")`); !strings.HasPrefix(label, "Time-to-fresh of 4 new items in the last day. Latest item: android p50 7.0 s, p90 —") {
			t.Errorf("time-to-fresh label: got %q", label)
		}
		do(t, b, "pick the sport feed", chromedp.SetValue(chromedp.CSS("#fresh-feed"), "sport"),
			chromedp.Evaluate[chromedp.Void](`document.querySelector("#fresh-feed").dispatchEvent(new Event("change"))`))
		if got := js[int](t, b, `document.querySelectorAll("#fresh-table tbody tr").length`); got != 1 {
			t.Errorf("time-to-fresh rows for sport: got %d, want 1", got)
		}

		// Editors get no admin controls.
		if got := js[int](t, b, `[...document.querySelectorAll("#feed-add, #feed-form, [data-action]")].filter(e => e.checkVisibility()).length`); got != 0 {
			t.Fatalf("visible admin controls for an editor: got %d, want 0", got)
		}

		// A reload keeps the session: the key is in sessionStorage.
		do(t, b, "reload", chromedp.Reload())
		b.tab.WaitFor(t, "the overview after a reload", `!document.querySelector("#console-view").hidden && document.querySelectorAll("#feeds li[data-feed-id]").length === 3`, 10*time.Second)

		do(t, b, "log out", chromedp.Click(chromedp.CSS("#logout")))
		b.tab.WaitFor(t, "the login form after logout", `!document.querySelector("#login-view").hidden && document.querySelector("#console-view").hidden`, 5*time.Second)
		if got := js[bool](t, b, `sessionStorage.getItem("nudge.console.key") === null`); !got {
			t.Fatalf("the key is still in sessionStorage after logout")
		}
		if got := js[int](t, b, `document.querySelectorAll("#feeds li").length`); got != 0 {
			t.Fatalf("feeds left on the page after logout: got %d, want 0", got)
		}
	})

	t.Run("rejected keys", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name, key, want string
		}{
			{"unknown key", "wrong-key", "That key was not accepted."},
			{"key without editor role", "app-key", "This key has no editor role."},
			{"empty key", "", "Enter your API key."},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				b := setup(t, browser)
				login(t, b, tt.key)
				b.tab.WaitFor(t, "the login error", `document.querySelector("#login-error").textContent !== ""`, 10*time.Second)
				if got := text(t, b, "#login-error"); got != tt.want {
					t.Fatalf("login error: got %q, want %q", got, tt.want)
				}
				if got := js[string](t, b, `document.querySelector("#login-error").getAttribute("role")`); got != "alert" {
					t.Fatalf("login error role: got %q, want alert", got)
				}
				do(t, b, "the error is visible", chromedp.WaitVisible(chromedp.CSS("#login-error")))
				b.tab.Screenshot(t, "console-login-"+strings.ReplaceAll(tt.name, " ", "-")+".png")
				if got := js[int](t, b, `[...document.querySelectorAll("#console-view, #session, #logout")].filter(e => e.checkVisibility()).length`); got != 0 {
					t.Fatalf("visible console parts after a rejected key: got %d, want 0", got)
				}
				if got := js[bool](t, b, `sessionStorage.length === 0`); !got {
					t.Fatalf("a rejected key was stored in sessionStorage")
				}
			})
		}
	})

	t.Run("breaking sync shows live progress", func(t *testing.T) {
		t.Parallel()
		b := setup(t, browser)
		loginOK(t, b, "editor-key")

		do(t, b, "fill the sync form",
			chromedp.Click(chromedp.CSS(`input[name=feed][value=headlines]`)),
			chromedp.SendKeys(chromedp.CSS("#alert-title"), "Storm warning"),
			chromedp.SendKeys(chromedp.CSS("#alert-body"), "Heavy rain expected tonight."),
			chromedp.Click(chromedp.CSS("#sync-submit")),
		)
		b.tab.WaitFor(t, "live progress", `document.querySelector("#sync-state").dataset.state === "sending"`, 10*time.Second)
		b.tab.WaitFor(t, "the final summary", `document.querySelector("#sync-state").dataset.state === "done"`, 15*time.Second)

		final := syncSteps[len(syncSteps)-1]
		counts := map[string]int{
			"targeted": final.Targeted, "queued": final.Queued, "sent": final.Sent, "deferred": final.Deferred,
			"coalesced": final.Coalesced, "skipped": final.Skipped, "pruned": final.Pruned, "failed": final.Failed,
			"superseded": final.Superseded, "in_flight": final.InFlight, "held": final.Held,
		}
		for name, want := range counts {
			sel := fmt.Sprintf("[data-count=%s]", name)
			if got, want := text(t, b, sel), grouped(want); got != want {
				t.Errorf("%s: got %q, want %q", sel, got, want)
			}
		}
		if got, want := text(t, b, "#sync-state"), "Finished"; got != want {
			t.Fatalf("sync state: got %q, want %q", got, want)
		}
		if got, want := text(t, b, "#sync-summary"), "Finished: 1,175 of 1,200 targeted devices were sent a push; 5 skipped (background sync off), 10 pruned (token no longer valid), 5 failed, 5 superseded (changed since planning). The alert limit held back the alert on 3 of them: they synced silently."; got != want {
			t.Fatalf("summary: got %q, want %q", got, want)
		}
		// Each outcome has its own bar, filled to its share of targeted.
		for _, o := range []struct {
			name string
			n    int
		}{{"sent", final.Sent}, {"in_flight", final.InFlight}, {"skipped", final.Skipped}, {"pruned", final.Pruned}, {"failed", final.Failed}, {"superseded", final.Superseded}} {
			got := js[[]float64](t, b, fmt.Sprintf(`(b => [b.value, b.max])(document.querySelector("[data-bar=%s]"))`, o.name))
			if got[0] != float64(o.n) || got[1] != float64(final.Targeted) {
				t.Errorf("%s bar: got %v of %v, want %d of %d", o.name, got[0], got[1], o.n, final.Targeted)
			}
		}
		// 100 % sent is timed from the last push's time; 50 and 90 % were
		// seen by a poll, so they are set and no later than it.
		if got, want := text(t, b, `[data-milestone="100"]`), "4.2 s"; got != want {
			t.Errorf("time to 100%% sent: got %q, want %q", got, want)
		}
		for _, m := range []string{"50", "90"} {
			if got := text(t, b, fmt.Sprintf(`[data-milestone="%s"]`, m)); got == "—" || got == "" {
				t.Errorf("time to %s%% sent: not shown", m)
			}
		}
		if got := text(t, b, "[data-testid=sync-explain]"); !strings.Contains(got, "Deferred:") || !strings.Contains(got, "Coalesced:") {
			t.Errorf("explanations of deferred and coalesced: got %q", got)
		}
		if got, want := text(t, b, "#sync-id"), "ev-1"; got != want {
			t.Fatalf("sync id: got %q, want %q", got, want)
		}

		b.api.mu.Lock()
		reqs := b.api.syncRequests
		gets := b.api.syncGets
		b.api.mu.Unlock()
		if len(reqs) != 1 {
			t.Fatalf("sync requests: got %d, want 1", len(reqs))
		}
		r := reqs[0]
		if got := strings.Join(r.Feeds, ","); got != "headlines" {
			t.Fatalf("sync feeds: got %q, want %q", got, "headlines")
		}
		if r.Lane != "breaking" {
			t.Fatalf("sync lane: got %q, want breaking", r.Lane)
		}
		if r.Alert == nil || r.Alert.Title != "Storm warning" || r.Alert.Body != "Heavy rain expected tonight." {
			t.Fatalf("sync alert: got %+v, want Storm warning / Heavy rain expected tonight.", r.Alert)
		}
		if gets != len(syncSteps) {
			t.Fatalf("progress polls: got %d, want %d (polling stops once the sync is finished)", gets, len(syncSteps))
		}

		b.tab.Screenshot(t, "console-after-sync.png")
		do(t, b, "narrow screen", chromedp.EmulateViewport(390, 844))
		b.tab.Screenshot(t, "console-after-sync-narrow.png")
	})

	t.Run("sync without an alert omits it", func(t *testing.T) {
		t.Parallel()
		b := setup(t, browser)
		loginOK(t, b, "editor-key")
		do(t, b, "send a silent sync",
			chromedp.Click(chromedp.CSS(`input[name=feed][value=sport]`)),
			chromedp.Click(chromedp.CSS(`input[name=feed][value=culture]`)),
			chromedp.Click(chromedp.CSS("#sync-submit")),
		)
		b.tab.WaitFor(t, "the sync to start", `!document.querySelector("#sync-progress").hidden`, 10*time.Second)
		b.api.mu.Lock()
		reqs := b.api.syncRequests
		b.api.mu.Unlock()
		if len(reqs) != 1 {
			t.Fatalf("sync requests: got %d, want 1", len(reqs))
		}
		if got := strings.Join(reqs[0].Feeds, ","); got != "sport,culture" {
			t.Fatalf("sync feeds: got %q, want sport,culture", got)
		}
		if reqs[0].Alert != nil {
			t.Fatalf("sync alert: got %+v, want none", reqs[0].Alert)
		}
	})

	t.Run("audience preview counts devices and goes with the sync", func(t *testing.T) {
		t.Parallel()
		b := setup(t, browser)
		loginOK(t, b, "editor-key")
		do(t, b, "fill an audience and preview it",
			chromedp.Click(chromedp.CSS(`input[name=feed][value=headlines]`)),
			chromedp.Click(chromedp.CSS(`input[name=platform][value=ios]`)),
			chromedp.SendKeys(chromedp.CSS("#audience-locales"), "en, de-DE"),
			chromedp.SendKeys(chromedp.CSS("#audience-min-version"), "1.5"),
			chromedp.Click(chromedp.CSS("#audience-preview")),
		)
		// The fake halves 1,200 for each narrowing field: ios, locales, min.
		b.tab.WaitFor(t, "the count", `document.querySelector("#audience-count").textContent.includes("150")`, 10*time.Second)
		if got, want := text(t, b, "#audience-count"), "This sync would reach 150 devices."; got != want {
			t.Fatalf("preview: got %q, want %q", got, want)
		}
		b.api.mu.Lock()
		dry, sent := b.api.dryRuns, len(b.api.syncs)
		b.api.mu.Unlock()
		if dry != 1 || sent != 0 {
			t.Fatalf("preview: %d dry runs and %d syncs, want 1 and 0", dry, sent)
		}
		do(t, b, "send it", chromedp.Click(chromedp.CSS("#sync-submit")))
		b.tab.WaitFor(t, "the sync to start", `!document.querySelector("#sync-progress").hidden`, 10*time.Second)
		b.api.mu.Lock()
		reqs := b.api.syncRequests
		b.api.mu.Unlock()
		last := reqs[len(reqs)-1]
		if a := last.Audience; a == nil || strings.Join(a.Platforms, ",") != "ios" || strings.Join(a.Locales, ",") != "en,de-DE" || a.MinAppVersion != "1.5" || a.MaxAppVersion != "" {
			t.Fatalf("sync audience: got %+v", last.Audience)
		}
	})

	t.Run("editor previews an audience, schedules syncs, cancels one and sees the other start", func(t *testing.T) {
		t.Parallel()
		b := setup(t, browser)
		loginOK(t, b, "editor-key")
		b.tab.WaitFor(t, "the empty schedule", `!document.querySelector("#scheduled-empty").hidden`, 10*time.Second)
		do(t, b, "choose a feed and an audience, and preview it",
			chromedp.Click(chromedp.CSS(`input[name=feed][value=headlines]`)),
			chromedp.Click(chromedp.CSS(`input[name=platform][value=ios]`)),
			chromedp.Click(chromedp.CSS("#audience-preview")),
		)
		// The fake halves 1,200 for the one narrowing field.
		b.tab.WaitFor(t, "the count", `document.querySelector("#audience-count").textContent.includes("600")`, 10*time.Second)
		if got, want := text(t, b, "#audience-count"), "This sync would reach 600 devices."; got != want {
			t.Fatalf("preview: got %q, want %q", got, want)
		}

		// sendAt fills the send-at field with the local time in secs seconds.
		sendAt := func(secs int) {
			t.Helper()
			v := js[string](t, b, fmt.Sprintf(`(() => {
				const d = new Date(Date.now() + %d * 1000), p = (n) => String(n).padStart(2, "0");
				const el = document.querySelector("#sync-send-at");
				el.value = d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
				el.dispatchEvent(new Event("input", { bubbles: true }));
				return el.value; })()`, secs))
			if v == "" {
				t.Fatal("the send-at field took no value")
			}
		}
		sendAt(3600)
		if got := text(t, b, "#sync-submit"); got != "Schedule sync" {
			t.Fatalf("button with a send-at: got %q, want Schedule sync", got)
		}
		do(t, b, "schedule one in an hour",
			chromedp.SendKeys(chromedp.CSS("#alert-title"), "Polls close"),
			chromedp.Click(chromedp.CSS("#sync-submit")),
		)
		b.tab.WaitFor(t, "the first scheduled sync", `document.querySelectorAll("#scheduled li").length === 1`, 10*time.Second)
		if got := text(t, b, "#sync-submit"); got != "Send breaking sync" {
			t.Fatalf("button after scheduling: got %q, want Send breaking sync", got)
		}
		sendAt(8)
		do(t, b, "schedule one in a few seconds", chromedp.Click(chromedp.CSS("#sync-submit")))
		b.tab.WaitFor(t, "both scheduled syncs", `document.querySelectorAll("#scheduled li").length === 2`, 10*time.Second)

		b.api.mu.Lock()
		reqs, started := slices.Clone(b.api.syncRequests), len(b.api.syncs)
		b.api.mu.Unlock()
		if len(reqs) != 3 || started != 0 || !js[bool](t, b, `document.querySelector("#sync-progress").hidden`) {
			t.Fatalf("after scheduling: %d requests (want preview + 2), %d syncs started (want 0)", len(reqs), started)
		}
		for _, r := range reqs[1:] {
			if _, err := time.Parse(time.RFC3339, r.SendAt); err != nil || r.Audience == nil || strings.Join(r.Audience.Platforms, ",") != "ios" {
				t.Fatalf("scheduled request: send_at %q (%v), audience %+v; want a time and the ios audience", r.SendAt, err, r.Audience)
			}
		}
		if reqs[1].Alert == nil || reqs[1].Alert.Title != "Polls close" {
			t.Fatalf("first scheduled request: alert %+v, want Polls close", reqs[1].Alert)
		}
		// Soonest first: ev-2 (seconds away), then ev-1 (an hour away).
		if got := js[string](t, b, `[...document.querySelectorAll("#scheduled li")].map((li) => li.dataset.syncId).join(",")`); got != "ev-2,ev-1" {
			t.Fatalf("scheduled list: got %q, want ev-2,ev-1", got)
		}

		do(t, b, "cancel the one in an hour", chromedp.Click(chromedp.CSS(`#scheduled button[data-sync-id="ev-1"]`)))
		b.tab.WaitFor(t, "the cancel", `document.querySelector("#scheduled-status").textContent.includes("ev-1 is cancelled")`, 10*time.Second)
		if js[bool](t, b, `!!document.querySelector('#scheduled li[data-sync-id="ev-1"]')`) {
			t.Fatal("the cancelled sync is still listed")
		}

		b.tab.WaitFor(t, "the other to start when due", `document.querySelector("#scheduled-status").textContent.includes("ev-2 has started")`, 20*time.Second)
		b.tab.WaitFor(t, "its progress", `!document.querySelector("#sync-progress").hidden && document.querySelector("#sync-id").textContent === "ev-2"`, 10*time.Second)
		b.tab.WaitFor(t, "the empty schedule", `!document.querySelector("#scheduled-empty").hidden`, 10*time.Second)
		b.api.mu.Lock()
		_, cancelledStarted := b.api.syncs["ev-1"]
		cancels := b.api.cancels
		b.api.mu.Unlock()
		if cancelledStarted || cancels != 1 {
			t.Fatalf("the cancelled sync started (%v) or cancels %d, want never and 1", cancelledStarted, cancels)
		}
	})

	t.Run("sync progress pauses while the tab is hidden", func(t *testing.T) {
		t.Parallel()
		b := setup(t, browser)
		loginOK(t, b, "editor-key")
		js[bool](t, b, `Object.defineProperty(document, "hidden", {value: true, configurable: true}) && true`)
		do(t, b, "start a sync in a hidden tab",
			chromedp.Click(chromedp.CSS(`input[name=feed][value=headlines]`)),
			chromedp.Click(chromedp.CSS("#sync-submit")),
		)
		b.tab.WaitFor(t, "the sync to start", `document.querySelector("#sync-id").textContent === "ev-1"`, 10*time.Second)
		b.api.mu.Lock()
		gets := b.api.syncGets
		b.api.mu.Unlock()
		if gets != 0 {
			t.Fatalf("progress polls while hidden: got %d, want 0", gets)
		}
		js[bool](t, b, `delete document.hidden && document.dispatchEvent(new Event("visibilitychange"))`)
		b.tab.WaitFor(t, "the final summary", `document.querySelector("#sync-state").dataset.state === "done"`, 15*time.Second)
	})

	t.Run("sync errors are shown", func(t *testing.T) {
		t.Parallel()
		b := setup(t, browser)
		loginOK(t, b, "editor-key")

		do(t, b, "submit with no feed", chromedp.Click(chromedp.CSS("#sync-submit")))
		b.tab.WaitFor(t, "the no-feed error", `document.querySelector("#sync-error").textContent !== ""`, 5*time.Second)
		if got, want := text(t, b, "#sync-error"), "Choose at least one feed to sync."; got != want {
			t.Fatalf("sync error: got %q, want %q", got, want)
		}

		b.api.set(func(f *fakeAPI) {
			f.syncReject = &apiError{Code: "invalid", Message: "alert title is longer than 100 characters", Field: "alert.title"}
		})
		do(t, b, "submit a rejected sync",
			chromedp.Click(chromedp.CSS(`input[name=feed][value=headlines]`)),
			chromedp.SendKeys(chromedp.CSS("#alert-title"), "Too long"),
			chromedp.Click(chromedp.CSS("#sync-submit")),
		)
		b.tab.WaitFor(t, "the server's error", `document.querySelector("#sync-error").textContent.includes("longer")`, 5*time.Second)
		if got, want := text(t, b, "#sync-error"), "Could not start the sync: alert title is longer than 100 characters"; got != want {
			t.Fatalf("sync error: got %q, want %q", got, want)
		}
		if got := js[string](t, b, `document.activeElement.id + ":" + document.activeElement.getAttribute("aria-invalid")`); got != "alert-title:true" {
			t.Fatalf("focus after a field error: got %q, want alert-title:true", got)
		}

		b.api.set(func(f *fakeAPI) { f.syncReject = nil; f.syncDrop = true })
		do(t, b, "submit during a network failure", chromedp.Click(chromedp.CSS("#sync-submit")))
		b.tab.WaitFor(t, "the network error", `document.querySelector("#sync-error").textContent.includes("network")`, 5*time.Second)
		if got, want := text(t, b, "#sync-error"), "Could not start the sync: Could not reach the nudge server (network error)."; got != want {
			t.Fatalf("sync error: got %q, want %q", got, want)
		}
	})

	t.Run("refresh failure is shown", func(t *testing.T) {
		t.Parallel()
		b := setup(t, browser)
		loginOK(t, b, "editor-key")
		b.api.set(func(f *fakeAPI) { f.overviewFails = true })
		b.tab.WaitFor(t, "the refresh error", `document.querySelector("#app-error").textContent !== ""`, 8*time.Second)
		if got, want := text(t, b, "#app-error"), "Could not refresh the overview: redis: connection refused"; !strings.HasPrefix(got, want) {
			t.Fatalf("app error: got %q, want it to start with %q", got, want)
		}
		// Coming back to the tab refreshes at once, without waiting for the timer.
		b.api.set(func(f *fakeAPI) { f.overviewFails = false })
		js[bool](t, b, `document.dispatchEvent(new Event("visibilitychange")) || true`)
		b.tab.WaitFor(t, "the error to clear", `document.querySelector("#app-error").textContent === ""`, 3*time.Second)
	})

	t.Run("admin adds, edits and deletes a feed", func(t *testing.T) {
		t.Parallel()
		b := setup(t, browser)
		loginOK(t, b, "admin-key")

		do(t, b, "add a feed",
			chromedp.Click(chromedp.CSS("#feed-add")),
			chromedp.WaitVisible(chromedp.CSS("#feed-form")),
			chromedp.SendKeys(chromedp.CSS("#feed-id"), "world"),
			chromedp.SendKeys(chromedp.CSS("#feed-title"), "World news"),
			chromedp.SendKeys(chromedp.CSS("#feed-url"), "http://feeds.example.test/world.xml"),
			chromedp.SetValue(chromedp.CSS("#feed-interval"), "10m"),
			chromedp.Click(chromedp.CSS("#feed-submit")),
		)
		b.tab.WaitFor(t, "the new feed", `document.querySelector("li[data-feed-id=world] .feed-title")?.textContent === "World news"`, 10*time.Second)
		got, ok := b.api.feed("world")
		if !ok {
			t.Fatalf("feed world was not saved")
		}
		if got.Title != "World news" || got.URL != "http://feeds.example.test/world.xml" || got.PollInterval != 10*time.Minute {
			t.Fatalf("saved feed: got %+v, want World news, http://feeds.example.test/world.xml, 10m", got)
		}
		if got, want := text(t, b, "#feed-status"), "Added feed “World news”."; got != want {
			t.Fatalf("feed status: got %q, want %q", got, want)
		}
		if got := js[bool](t, b, `document.querySelector("#feed-form").hidden`); !got {
			t.Fatalf("the feed form is still open after saving")
		}
		if got := text(t, b, "label[for=sync-feed-world]"); got != "World news" {
			t.Fatalf("sync checkbox of the new feed: got %q, want World news", got)
		}

		// A server-side validation error lands on its field.
		do(t, b, "edit with a bad interval",
			chromedp.Click(chromedp.CSS(`button[data-action=edit][data-feed=world]`)),
			chromedp.WaitVisible(chromedp.CSS("#feed-form")),
			chromedp.SetValue(chromedp.CSS("#feed-interval"), "1s"),
			chromedp.Click(chromedp.CSS("#feed-submit")),
		)
		b.tab.WaitFor(t, "the interval error", `document.querySelector("#feed-error").textContent !== ""`, 5*time.Second)
		if got, want := text(t, b, "#feed-error"), "Could not save the feed: poll_interval must be a duration of at least 10s"; got != want {
			t.Fatalf("feed error: got %q, want %q", got, want)
		}
		b.tab.Screenshot(t, "console-admin-feed-error.png")
		if got := js[bool](t, b, `document.querySelector("#feed-id").readOnly`); !got {
			t.Fatalf("the id of an existing feed is editable")
		}

		do(t, b, "fix and save",
			chromedp.SetValue(chromedp.CSS("#feed-interval"), "1h"),
			chromedp.SetValue(chromedp.CSS("#feed-title"), "World"),
			chromedp.Click(chromedp.CSS("#feed-submit")),
		)
		b.tab.WaitFor(t, "the edited feed", `document.querySelector("li[data-feed-id=world] .feed-title")?.textContent === "World"`, 10*time.Second)
		if got := text(t, b, "li[data-feed-id=world] .feed-meta"); !strings.Contains(got, "every 1h") {
			t.Fatalf("edited feed meta: got %q, want every 1h", got)
		}

		do(t, b, "delete the feed",
			chromedp.Click(chromedp.CSS(`button[data-action=delete][data-feed=world]`)),
			chromedp.Click(chromedp.CSS(`button[data-action=delete-confirm][data-feed=world]`)),
		)
		b.tab.WaitFor(t, "the feed to go", `document.querySelector("li[data-feed-id=world]") === null`, 10*time.Second)
		if _, ok := b.api.feed("world"); ok {
			t.Fatalf("feed world still exists after delete")
		}
	})

	t.Run("app switcher scopes figures, scheduled syncs and new syncs", func(t *testing.T) {
		t.Parallel()
		b := setup(t, browser)
		b.api.set(func(f *fakeAPI) {
			f.apps = []fakeApp{{ID: "news", Name: "News"}, {ID: "sports", Name: "Sports"}}
		})
		loginOK(t, b, "editor-key")
		if js[bool](t, b, `document.querySelector("#app-switch").hidden`) {
			t.Fatal("the app switcher is hidden with two apps")
		}
		if got := js[string](t, b, `[...document.querySelectorAll("#app-select option")].map((o) => o.value + "=" + o.textContent).join(",")`); got != "news=News (news),sports=Sports (sports)" {
			t.Fatalf("switcher options: got %q", got)
		}
		sent := `document.querySelector("[data-platform=ios][data-metric=sent]").textContent`
		b.tab.WaitFor(t, "the news app's figures", sent+` === "1,234"`, 10*time.Second)

		// Schedule a sync of the news app.
		js[string](t, b, `(() => {
			const d = new Date(Date.now() + 3600 * 1000), p = (n) => String(n).padStart(2, "0");
			const el = document.querySelector("#sync-send-at");
			el.value = d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
			el.dispatchEvent(new Event("input", { bubbles: true }));
			return el.value; })()`)
		do(t, b, "schedule a news sync",
			chromedp.Click(chromedp.CSS(`input[name=feed][value=headlines]`)),
			chromedp.Click(chromedp.CSS("#sync-submit")),
		)
		b.tab.WaitFor(t, "the news sync in the schedule", `document.querySelectorAll("#scheduled li").length === 1`, 10*time.Second)

		// Switch to sports: its figures, and the news sync disappears.
		js[bool](t, b, `(() => { const s = document.querySelector("#app-select"); s.value = "sports";
			s.dispatchEvent(new Event("change", { bubbles: true })); return true; })()`)
		b.tab.WaitFor(t, "the sports app's figures", sent+` === "10"`, 10*time.Second)
		b.tab.WaitFor(t, "the news sync to disappear", `document.querySelectorAll("#scheduled li").length === 0 && !document.querySelector("#scheduled-empty").hidden`, 10*time.Second)
		do(t, b, "send a sports sync now", chromedp.Click(chromedp.CSS("#sync-submit")))
		b.tab.WaitFor(t, "the sports sync to start", `!document.querySelector("#sync-progress").hidden`, 10*time.Second)

		// Back to news: the news sync is listed again, the sports progress put away.
		js[bool](t, b, `(() => { const s = document.querySelector("#app-select"); s.value = "news";
			s.dispatchEvent(new Event("change", { bubbles: true })); return true; })()`)
		b.tab.WaitFor(t, "the news sync again", `document.querySelectorAll("#scheduled li").length === 1`, 10*time.Second)
		if !js[bool](t, b, `document.querySelector("#sync-progress").hidden`) {
			t.Fatal("the sports sync's progress is still shown in the news app")
		}
		b.api.mu.Lock()
		reqs, views := slices.Clone(b.api.syncRequests), slices.Clone(b.api.overviewApps)
		b.api.mu.Unlock()
		if len(reqs) != 2 || reqs[0].App != "news" || reqs[1].App != "sports" {
			t.Fatalf("sync requests: got %+v, want one for news, then one for sports", reqs)
		}
		if slices.Contains(views, "") || !slices.Contains(views, "sports") {
			t.Fatalf("overview requests by app: got %q, want each naming its app", views)
		}
		if got := js[string](t, b, `sessionStorage.getItem("nudge.console.app")`); got != "news" {
			t.Fatalf("the chosen app in sessionStorage: got %q, want news", got)
		}
	})

	// One app: no switcher, and the requests name the app only when the
	// deployment has an app catalogue (a single-app deployment names none).
	for _, c := range []struct {
		name string
		apps []fakeApp // nil: the single-app default
		want string
	}{
		{"a key for one app names it without a switcher", []fakeApp{{ID: "sports", Name: "Sports"}}, "sports"},
		{"a single app shows no switcher and names no app", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, browser)
			if c.apps != nil {
				b.api.set(func(f *fakeAPI) { f.apps = c.apps })
			}
			loginOK(t, b, "editor-key")
			if !js[bool](t, b, `document.querySelector("#app-switch").hidden`) {
				t.Fatal("the app switcher shows with one app")
			}
			do(t, b, "send a sync", chromedp.Click(chromedp.CSS(`input[name=feed][value=headlines]`)), chromedp.Click(chromedp.CSS("#sync-submit")))
			b.tab.WaitFor(t, "the sync to start", `!document.querySelector("#sync-progress").hidden`, 10*time.Second)
			b.api.mu.Lock()
			reqs, views := slices.Clone(b.api.syncRequests), slices.Clone(b.api.overviewApps)
			b.api.mu.Unlock()
			if len(reqs) != 1 || reqs[0].App != c.want || slices.ContainsFunc(views, func(a string) bool { return a != c.want }) {
				t.Fatalf("sync requests %+v, overview apps %q; want app %q named", reqs, views, c.want)
			}
		})
	}
}
