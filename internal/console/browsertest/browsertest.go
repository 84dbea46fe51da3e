// Package browsertest starts a headless Chromium for browser tests through
// chromedp, with flags that work as root on a machine without network.
//
// A test starts one browser and opens a tab per case:
//
//	browser := browsertest.Start(t, browsertest.Config{})
//	tab := browser.NewTab(t)
//	err := chromedp.Do(tab.Ctx, chromedp.Navigate(url))
//	...
//	tab.WaitFor(t, "the list", `document.querySelector("#list") !== null`, 10*time.Second)
//	tab.Screenshot(t, "after-sync.png")
//	if errs := tab.JSErrors(); len(errs) > 0 { t.Fatalf(...) }
//
// The browser binary is $NUDGE_CHROMIUM, else /usr/bin/chromium, else
// chromium on PATH. When none is found the test fails (it does not skip):
// install it with apt-get install chromium.
package browsertest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nudge-dev/nudge/internal/await"
)

// ErrNoChromium is returned by FindChromium when no browser binary exists.
var ErrNoChromium = errors.New("no chromium found: install it with apt-get install chromium, or set NUDGE_CHROMIUM to its path")

// Config configures the browser. The zero value works.
type Config struct {
	// ExecPath is the browser binary. Default: FindChromium(os.Getenv, exec.LookPath).
	ExecPath string
	// Width and Height are the window size in CSS pixels. Default 1280×900.
	Width, Height int
	// TabTimeout bounds everything one tab does, so a wait that never ends
	// fails the test instead of hanging it. Default 60 s.
	TabTimeout time.Duration
	// Lang is the browser's UI and Accept-Language locale. Default "en-US",
	// so number and date formats are the same on every machine.
	Lang string
}

func (c Config) withDefaults() Config {
	c.Width = cmp.Or(c.Width, 1280)
	c.Height = cmp.Or(c.Height, 900)
	c.TabTimeout = cmp.Or(c.TabTimeout, 60*time.Second)
	c.Lang = cmp.Or(c.Lang, "en-US")
	return c
}

func (c Config) validate() error {
	if c.Width < 200 || c.Height < 200 {
		return fmt.Errorf("browser window %dx%d is too small: set Config.Width and Config.Height to at least 200", c.Width, c.Height)
	}
	if c.TabTimeout < 0 {
		return fmt.Errorf("tab timeout %s is negative: set Config.TabTimeout to a positive duration", c.TabTimeout)
	}
	return nil
}

// FindChromium returns the browser binary: $NUDGE_CHROMIUM when set, else
// /usr/bin/chromium, else chromium or chromium-browser on PATH. It returns
// ErrNoChromium when there is none.
func FindChromium(getenv func(string) string, lookPath func(string) (string, error)) (string, error) {
	if p := getenv("NUDGE_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("NUDGE_CHROMIUM=%s: %w", p, err)
		}
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium", nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := lookPath(name); err == nil {
			return p, nil
		}
	}
	return "", ErrNoChromium
}

// ArtifactsDir is where tests save screenshots and other artifacts:
// $NUDGE_ARTIFACTS_DIR when set (created if missing), else t.TempDir().
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("NUDGE_ARTIFACTS_DIR")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create artifacts dir: %v", err)
	}
	return dir
}

// Browser is one headless Chromium owned by a test. It stops in the test's
// cleanup.
type Browser struct {
	cfg Config
	ctx context.Context // the browser's chromedp context (first tab)
}

// Start starts a headless Chromium with a fresh, temporary user data
// directory (created and removed by chromedp) and fails the test if it
// cannot. The browser is stopped when the test and its subtests finish.
func Start(t testing.TB, cfg Config) *Browser {
	t.Helper()
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	if cfg.ExecPath == "" {
		p, err := FindChromium(os.Getenv, exec.LookPath)
		if err != nil {
			t.Fatalf("browsertest: %v", err)
		}
		cfg.ExecPath = p
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(cfg.ExecPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter"),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("lang", cfg.Lang),
		chromedp.Flag("accept-lang", cfg.Lang),
		chromedp.WindowSize(cfg.Width, cfg.Height),
		chromedp.Env("LANG="+strings.ReplaceAll(cfg.Lang, "-", "_")+".UTF-8", "TZ=UTC"),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	// The first Run starts the process; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browsertest: start %s: %v (install it with apt-get install chromium, or set NUDGE_CHROMIUM)", cfg.ExecPath, err)
	}
	return &Browser{cfg: cfg, ctx: ctx}
}

// Tab is one browser tab. Ctx is its chromedp context, bounded by
// Config.TabTimeout; pass it to chromedp.Do and chromedp.Run.
type Tab struct {
	Ctx context.Context

	mu       sync.Mutex
	jsErrors []string
}

// NewTab opens a tab that is closed in the test's cleanup. Its sessionStorage
// and in-memory state are its own; cookies are shared with the browser's
// other tabs. Uncaught exceptions, console.error calls and CSP violations of
// the page are collected; read them with JSErrors.
func (b *Browser) NewTab(t testing.TB) *Tab {
	t.Helper()
	tabCtx, cancelTab := chromedp.NewContext(b.ctx)
	ctx, cancelTimeout := context.WithTimeout(tabCtx, b.cfg.TabTimeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
	})
	tab := &Tab{Ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browsertest: open tab: %v", err)
	}
	// Console subscribes now, before any page runs; the goroutine ends when
	// the tab's context ends.
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			// Source is empty for exceptions and console API calls. Of the
			// browser's own log entries only security ones count (a blocked
			// Content-Security-Policy violation); a failed request, such as
			// a 401, is something the page is expected to handle.
			if m.IsException() || (m.Type == chromedp.ConsoleError && (m.Source == "" || m.Source == "security")) {
				tab.mu.Lock()
				tab.jsErrors = append(tab.jsErrors, m.String())
				tab.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancelTimeout()
		<-done
	})
	return tab
}

// JSErrors returns the uncaught exceptions, console.error calls and
// security errors (Content-Security-Policy violations) of the tab's pages so
// far. Other browser log entries, such as a failed request, are not included:
// a page is expected to handle those itself.
func (tab *Tab) JSErrors() []string {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return append([]string(nil), tab.jsErrors...)
}

// Screenshot saves a full-page PNG of the tab into ArtifactsDir and returns
// its path. name is a file name such as "console-after-sync.png".
func (tab *Tab) Screenshot(t testing.TB, name string) string {
	t.Helper()
	png, err := chromedp.Run(tab.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(ArtifactsDir(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatalf("save screenshot: %v", err)
	}
	t.Logf("screenshot: %s", p)
	return p
}

// WaitFor evaluates the JavaScript expression predicate in the tab until
// it is true, and fails the test with what and the page's visible text
// when it is not true within timeout. An evaluation that fails (the page
// is navigating) counts as not yet true.
func (tab *Tab) WaitFor(t testing.TB, what, predicate string, timeout time.Duration) {
	t.Helper()
	await.Poll{Timeout: timeout, Interval: 50 * time.Millisecond}.Check(t, what, func() error {
		ok, err := chromedp.Run(tab.Ctx, chromedp.Evaluate[bool](predicate))
		if err != nil {
			return fmt.Errorf("evaluate %s: %w", predicate, err)
		}
		if !ok {
			return falsePredicate{tab: tab, predicate: predicate}
		}
		return nil
	})
}

// falsePredicate is WaitFor's "not yet": its message, read only when the
// wait fails, holds the page's visible text.
type falsePredicate struct {
	tab       *Tab
	predicate string
}

func (e falsePredicate) Error() string {
	page, err := chromedp.Run(e.tab.Ctx, chromedp.Evaluate[string](`document.body.innerText.slice(0, 3000)`))
	if err != nil {
		page = fmt.Sprintf("(unreadable: %v)", err)
	}
	return fmt.Sprintf("still false: %s\npage text:\n%s", e.predicate, page)
}
