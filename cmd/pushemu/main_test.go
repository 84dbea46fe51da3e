package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestRunPrintsEnvAndServes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"pushemu", "-fcm-addr", "127.0.0.1:0", "-apns-addr", "127.0.0.1:0",
			"-apns-sandbox-addr", "127.0.0.1:0", "-control-addr", "127.0.0.1:0", "-dir", t.TempDir()},
			func(string) string { return "" }, pw, io.Discard)
		pw.Close()
	}()
	env := map[string]string{}
	sc := bufio.NewScanner(pr)
	for len(env) < 10 && sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		env[k] = v
	}
	go io.Copy(io.Discard, pr)
	if !strings.HasSuffix(env["NUDGE_FCM_ENDPOINT"], "/v1") {
		t.Fatalf("NUDGE_FCM_ENDPOINT: got %q, want a URL ending in /v1", env["NUDGE_FCM_ENDPOINT"])
	}
	if env["NUDGE_PUSH_CA_FILE"] == "" || env["NUDGE_APNS_HOST"] == "" {
		t.Fatalf("env: got %v, want CA file and APNs host", env)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// TestHelp checks that -help starts with a line saying what pushemu is and
// ends as a request for help, not an error.
func TestHelp(t *testing.T) {
	t.Parallel()
	var stderr strings.Builder
	err := run(t.Context(), []string{"pushemu", "-help"}, func(string) string { return "" }, io.Discard, &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run -help: got %v, want flag.ErrHelp", err)
	}
	if first, _, _ := strings.Cut(stderr.String(), "\n"); !strings.HasPrefix(first, "pushemu runs nudge's FCM and APNs emulators") {
		t.Errorf("first line %q does not say what pushemu is", first)
	}
	if !strings.Contains(stderr.String(), "-latency duration") {
		t.Errorf("help lacks -latency duration:\n%s", stderr.String())
	}
}
