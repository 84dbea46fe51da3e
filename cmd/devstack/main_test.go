package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/stacktest"
)

// TestRunPrintsWhereToLookAndStopsCleanly runs the program as `make run`
// does (on free ports, with a small fleet), waits for the banner and a
// summary line, then cancels, as Ctrl-C does, and expects a clean exit.
func TestRunPrintsWhereToLookAndStopsCleanly(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"NUDGE_DEVSTACK_API_ADDR":           "127.0.0.1:0",
		"NUDGE_DEVSTACK_DISPATCHER_ADDR":    "127.0.0.1:0",
		"NUDGE_DEVSTACK_NEWSROOM_ADDR":      "127.0.0.1:0",
		"NUDGE_DEVSTACK_PUSHEMU_ADDR":       "127.0.0.1:0",
		"NUDGE_DEVSTACK_DEVICES":            "20",
		"NUDGE_DEVSTACK_SUMMARY_INTERVAL":   "200ms",
		"NUDGE_DEVSTACK_LOG_FILE":           t.TempDir() + "/devstack.log",
		"NUDGE_DEVSTACK_ARTICLE_INTERVAL":   "1s",
		"NUDGE_DEVSTACK_FEED_POLL_INTERVAL": "30s",
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stdout, stderr := &stacktest.Buffer{}, &stacktest.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, stdout, stderr) }()

	await.Poll{Timeout: 60 * time.Second, Interval: 50 * time.Millisecond}.Check(t, "a summary line with all 20 devices registered", func() error {
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
		default:
		}
		if out := stdout.String(); !strings.Contains(out, "devices 20/20") {
			return fmt.Errorf("stdout:\n%s", out)
		}
		return nil
	})
	out := stdout.String()
	for _, want := range []string{"console      http://127.0.0.1:", "admin key    nk_", "/metrics", "/admin/stats",
		"DEMO TIME SCALE", "DEBOUNCE=5s", "embedded, in memory"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Everything fits an 80-column terminal but the log file's path.
	for _, l := range strings.Split(out, "\n") {
		if w := utf8.RuneCountInString(l); w > 80 && !strings.HasPrefix(l, "  logs ") {
			t.Errorf("line of %d columns: %q", w, l)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: got %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not return within 30s of the cancel")
	}
	if out := stdout.String(); !strings.HasSuffix(out, "nudge devstack: stopped\n") {
		t.Fatalf("output does not end with the stop line:\n%s", out[max(0, len(out)-500):])
	}
}

func TestRunRejectsBadSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, env, value, want string
	}{
		{"devices", "NUDGE_DEVSTACK_DEVICES", "0", "NUDGE_DEVSTACK_DEVICES"},
		{"miss rate", "NUDGE_DEVSTACK_MISS_RATE", "1.5", "NUDGE_DEVSTACK_MISS_RATE"},
		{"article interval", "NUDGE_DEVSTACK_ARTICLE_INTERVAL", "soon", "NUDGE_DEVSTACK_ARTICLE_INTERVAL"},
		{"poll interval", "NUDGE_DEVSTACK_FEED_POLL_INTERVAL", "1s", "NUDGE_DEVSTACK_FEED_POLL_INTERVAL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{tt.env: tt.value, "NUDGE_DEVSTACK_LOG_FILE": t.TempDir() + "/log"}
			err := run(t.Context(), nil, func(k string) string { return env[k] }, &stacktest.Buffer{}, &stacktest.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run with %s=%s: got %v, want an error naming %s", tt.env, tt.value, err, tt.want)
			}
		})
	}
}
