package main

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/httpapi"
)

// quotedValue matches a default shown in quotes although it is a duration
// or a number.
var quotedValue = regexp.MustCompile(`\(default "[0-9.]+[a-zµ]*"\)`)

// TestHelp checks api -help: one line saying what the binary is, the
// mint-key subcommand, and durations and numbers shown as such.
func TestHelp(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := httpapi.Run(t.Context(), []string{"-help"}, func(string) string { return "" }, &stdout, &stderr)
	if !errors.Is(err, config.ErrHelp) {
		t.Fatalf("api -help: got %v, want config.ErrHelp", err)
	}
	out := stderr.String()
	if first, _, _ := strings.Cut(out, "\n"); !strings.HasPrefix(first, "api serves nudge's HTTP API") {
		t.Errorf("first line %q does not say what api is", first)
	}
	for _, w := range []string{"api mint-key <name> <role>", "-shutdown-timeout duration   $NUDGE_SHUTDOWN_TIMEOUT (default 15s)",
		"-max-feeds-per-device int   $NUDGE_MAX_FEEDS_PER_DEVICE (default 64)"} {
		if !strings.Contains(out, w) {
			t.Errorf("api -help lacks %q:\n%s", w, out)
		}
	}
	if m := quotedValue.FindString(out); m != "" {
		t.Errorf("api -help quotes a duration or number: %s", m)
	}
}
