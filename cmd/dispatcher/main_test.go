package main

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/dispatcher"
)

// quotedValue matches a default shown in quotes although it is a duration
// or a number.
var quotedValue = regexp.MustCompile(`\(default "[0-9.]+[a-zµ]*"\)`)

// TestHelp checks dispatcher -help: one line saying what the binary is,
// and durations and numbers shown as such.
func TestHelp(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := dispatcher.Run(t.Context(), []string{"-help"}, func(string) string { return "" }, &stdout, &stderr)
	if !errors.Is(err, config.ErrHelp) {
		t.Fatalf("dispatcher -help: got %v, want config.ErrHelp", err)
	}
	out := stderr.String()
	if first, _, _ := strings.Cut(out, "\n"); !strings.HasPrefix(first, "dispatcher watches the news feeds") {
		t.Errorf("first line %q does not say what dispatcher is", first)
	}
	for _, w := range []string{"-debounce duration   $NUDGE_DEBOUNCE (default 2m)", "-push-batch int   $NUDGE_PUSH_BATCH (default 500)"} {
		if !strings.Contains(out, w) {
			t.Errorf("dispatcher -help lacks %q:\n%s", w, out)
		}
	}
	if m := quotedValue.FindString(out); m != "" {
		t.Errorf("dispatcher -help quotes a duration or number: %s", m)
	}
}
