package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestHelp checks -help: the first line says what the binary is, the usage
// lines follow, and each setting shows its type and default as a value of
// that type (durations and numbers unquoted).
func TestHelp(t *testing.T) {
	t.Parallel()
	settings := []Setting{
		{Flag: "http-addr", Env: "NUDGE_HTTP_ADDR", Default: ":8080", Help: "HTTP listen address"},
		{Flag: "shutdown-timeout", Env: "NUDGE_SHUTDOWN_TIMEOUT", Default: "15s", Help: "drain time"},
		{Flag: "max-feeds", Env: "NUDGE_MAX_FEEDS", Default: "64", Help: "most feeds"},
		{Flag: "miss-rate", Env: "NUDGE_MISS_RATE", Default: "0.05", Help: "fraction"},
		{Flag: "keys-file", Env: "NUDGE_KEYS_FILE", Help: "keys"},
		{Flag: "task", Env: "NUDGE_TASK", Default: "nudge.sync", Help: "task name"},
	}
	for _, tc := range []struct {
		name, first string
		want        []string
	}{
		{name: "api", first: programs["api"].about, want: []string{
			"\nUsage:\n  api [flags]", "api mint-key <name> <role>",
		}},
		{name: "dispatcher", first: programs["dispatcher"].about},
		{name: "devstack", first: programs["devstack"].about},
		{name: "other", first: "other: settings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			_, err := Parse(tc.name, settings, []string{"-help"}, func(string) string { return "" }, &stderr)
			if !errors.Is(err, ErrHelp) {
				t.Fatalf("Parse -help: got %v, want ErrHelp", err)
			}
			out := stderr.String()
			if first, _, _ := strings.Cut(out, "\n"); first != tc.first {
				t.Errorf("first line %q, want %q", first, tc.first)
			}
			for _, w := range append(tc.want,
				"  -http-addr address   $NUDGE_HTTP_ADDR (default \":8080\")\n        HTTP listen address\n",
				"  -shutdown-timeout duration   $NUDGE_SHUTDOWN_TIMEOUT (default 15s)\n",
				"  -max-feeds int   $NUDGE_MAX_FEEDS (default 64)\n",
				"  -miss-rate number   $NUDGE_MISS_RATE (default 0.05)\n",
				"  -keys-file file   $NUDGE_KEYS_FILE\n",
				"  -task string   $NUDGE_TASK (default \"nudge.sync\")\n",
			) {
				if !strings.Contains(out, w) {
					t.Errorf("help lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestHelpOnFlagError(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	_, err := Parse("api", nil, []string{"-no-such-flag"}, func(string) string { return "" }, &stderr)
	if err == nil || errors.Is(err, ErrHelp) {
		t.Fatalf("Parse -no-such-flag: got %v, want a flag error", err)
	}
	if !strings.Contains(stderr.String(), "flag provided but not defined: -no-such-flag") ||
		!strings.Contains(stderr.String(), programs["api"].about) {
		t.Errorf("flag error output:\n%s", stderr.String())
	}
}
