package config

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// program describes a binary for its -help: what it is, in one line, and
// its usage lines.
type program struct {
	about string
	usage []string
}

// programs are the binaries that declare their settings here, by the name
// they pass to Parse.
var programs = map[string]program{
	"api": {
		about: "api serves nudge's HTTP API: device registration, the feed catalogue, editor syncs, the app's sync read and wake receipts, the console, health and metrics.",
		usage: []string{
			"api [flags]                  serve the API",
			"api mint-key <name> <role>   mint an API key (role editor or admin): prints the key once, and the line to add to NUDGE_API_KEYS_FILE",
		},
	},
	"dispatcher": {
		about: "dispatcher watches the news feeds and sends the silent pushes: feed watcher, fan-out planner, throttle scheduler and FCM/APNs push workers.",
		usage: []string{"dispatcher [flags]"},
	},
	"devstack": {
		about: "devstack runs the whole of nudge on this machine, in one process (make run): Redis, api, dispatcher, FCM/APNs emulators, a news room and a simulated fleet.",
		usage: []string{"devstack [flags]"},
	},
}

// kind is how -help names the type of a setting's value: "duration" when
// the default is a Go duration, "int" or "number" for numbers, "file",
// "address" or "url" by the flag's name, else "string".
func kind(s Setting) string {
	d := s.Default
	if d != "" {
		if _, err := time.ParseDuration(d); err == nil && strings.IndexFunc(d, isLetter) >= 0 {
			return "duration"
		}
		if _, err := strconv.ParseInt(d, 10, 64); err == nil {
			return "int"
		}
		if _, err := strconv.ParseFloat(d, 64); err == nil {
			return "number"
		}
	}
	switch {
	case strings.HasSuffix(s.Flag, "-file"):
		return "file"
	case strings.HasSuffix(s.Flag, "-addr"):
		return "address"
	case strings.HasSuffix(s.Flag, "-url"):
		return "url"
	}
	return "string"
}

func isLetter(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }

// defaultText renders a default for -help: durations and numbers as they
// are (15s, 64), other values quoted, an empty one not at all.
func defaultText(s Setting) string {
	switch {
	case s.Default == "":
		return ""
	case kind(s) == "duration" || kind(s) == "int" || kind(s) == "number":
		return " (default " + s.Default + ")"
	default:
		return " (default " + strconv.Quote(s.Default) + ")"
	}
}

// writeUsage prints the -help of the binary name: its one-line description
// (when it is one of programs), its usage lines, then each setting in
// declaration order with its type, variable and default.
func writeUsage(w io.Writer, name string, settings []Setting) {
	p, ok := programs[name]
	if !ok {
		p = program{about: name + ": settings", usage: []string{name + " [flags]"}}
	}
	fmt.Fprintf(w, "%s\n\nUsage:\n", p.about)
	for _, u := range p.usage {
		fmt.Fprintf(w, "  %s\n", u)
	}
	fmt.Fprintf(w, "\nFlags (each also read from its NUDGE_* variable; a flag wins over the variable):\n")
	for _, s := range settings {
		fmt.Fprintf(w, "  -%s %s   $%s%s\n", s.Flag, kind(s), s.Env, defaultText(s))
		fmt.Fprintf(w, "        %s\n", s.Help)
	}
	fmt.Fprintf(w, "  -h, -help\n        print this help\n")
}

// setUsage makes fs print writeUsage on -help and on a flag error.
func setUsage(fs *flag.FlagSet, name string, settings []Setting) {
	fs.Usage = func() { writeUsage(fs.Output(), name, settings) }
}
