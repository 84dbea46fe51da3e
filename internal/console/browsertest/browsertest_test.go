package browsertest_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/console/browsertest"
)

func TestFindChromiumFromEnv(t *testing.T) {
	t.Parallel()
	fake := filepath.Join(t.TempDir(), "chromium")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatalf("write fake binary: %v", err)
	}
	noPath := func(string) (string, error) { return "", errors.New("not on PATH") }

	tests := []struct {
		name    string
		env     string
		want    string
		wantErr bool
	}{
		{"env names a binary", fake, fake, false},
		{"env names a missing file", filepath.Join(t.TempDir(), "missing"), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			getenv := func(k string) string {
				if k == "NUDGE_CHROMIUM" {
					return tt.env
				}
				return ""
			}
			got, err := browsertest.FindChromium(getenv, noPath)
			if (err != nil) != tt.wantErr {
				t.Fatalf("FindChromium error: got %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("FindChromium: got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestBrowser runs a page in the helper's browser: it fails, not skips,
// when no browser is installed, since the console's browser tests must run on
// every machine that runs the suite.
func TestBrowser(t *testing.T) {
	t.Parallel()
	browser := browsertest.Start(t, browsertest.Config{Width: 640, Height: 480})
	tab := browser.NewTab(t)

	page := `data:text/html,<meta http-equiv="Content-Security-Policy" content="style-src 'none'"><title>t</title><p style="color:red">hello</p><script>console.error("boom from console"); setTimeout(() => { throw new Error("boom thrown") })</script>`
	if err := chromedp.Do(tab.Ctx, chromedp.Navigate(page)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	width, err := chromedp.Run(tab.Ctx, chromedp.Evaluate[int](`window.innerWidth`))
	if err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	if width != 640 {
		t.Fatalf("window width: got %d, want 640", width)
	}
	lang, err := chromedp.Run(tab.Ctx, chromedp.Evaluate[string](`new Intl.NumberFormat().format(1234.5)`))
	if err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	if lang != "1,234.5" {
		t.Fatalf("number format: got %q, want 1,234.5 (en-US)", lang)
	}

	await.Poll{Timeout: 10 * time.Second}.Check(t, "the console error, the exception and the CSP violation in JSErrors", func() error {
		errs := strings.Join(tab.JSErrors(), "\n")
		if !strings.Contains(errs, "boom from console") || !strings.Contains(errs, "boom thrown") || !strings.Contains(errs, "Content Security Policy") {
			return fmt.Errorf("JSErrors %q", errs)
		}
		return nil
	})

	// WaitFor: a predicate that becomes true, and one that never does.
	if _, err := chromedp.Run(tab.Ctx, chromedp.Evaluate[int](`setTimeout(() => { document.title = "ready" }, 50)`)); err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	tab.WaitFor(t, "the title set by a timer", `document.title === "ready"`, 10*time.Second)
	fake := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tab.WaitFor(fake, "a heading", `document.querySelector("h1") !== null`, 200*time.Millisecond)
	}()
	<-done
	for _, want := range []string{"waiting for a heading", "still false", "page text:\nhello"} {
		if !strings.Contains(fake.fatal, want) {
			t.Fatalf("WaitFor's failure %q lacks %q", fake.fatal, want)
		}
	}

	p := tab.Screenshot(t, "browsertest.png")
	png, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read screenshot: %v", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot is not a PNG: starts with %q", png[:min(8, len(png))])
	}
}

// fatalTB records a Fatalf and ends the goroutine that called it, as
// testing.T does, without failing the real test.
type fatalTB struct {
	testing.TB
	fatal string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
