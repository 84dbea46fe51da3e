package devstack

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// SummaryWindow is the window of nudge's stats that the summary line
// covers.
const SummaryWindow = time.Hour

// Summary is what the devstack's live line shows. The push and wake
// figures are nudge's own (internal/stats on the shared Redis, as the
// console shows them), not counted by the simulator; Devices, Registered
// and Articles describe the simulation.
type Summary struct {
	Devices    int   // simulated devices
	Registered int64 // of which the api accepted the registration
	Articles   int   // articles the news room published since the start

	Sent      int64
	Deferred  int64
	Coalesced int64
	Pruned    int64
	Failed    int64
	Receipts  int64 // wakes: receipts the apps posted
	// WakeRate is receipts per push sent over all platforms, -1 before
	// receipts can have come back (nothing sent yet, or the first push
	// seen less than the fleet's longest wake delay ago).
	WakeRate float64
	// WakeP50 is each platform's median wake latency (an upper bound from
	// nudge's histogram buckets), for platforms with receipts.
	WakeP50 map[string]time.Duration
}

// Summary reads nudge's figures of the last SummaryWindow.
func (s *Stack) Summary(ctx context.Context) (Summary, error) {
	st, err := s.recorder.Summarize(ctx, SummaryWindow)
	if err != nil {
		return Summary{}, err
	}
	fs := s.fleet.Stats()
	out := Summary{Devices: fs.Devices, Registered: fs.Registered, Articles: s.newsroom.Published(),
		WakeRate: -1, WakeP50: map[string]time.Duration{}}
	for name, p := range st.Platforms {
		out.Sent += p.Sent
		out.Deferred += p.Deferred
		out.Coalesced += p.Coalesced
		out.Pruned += p.Pruned
		out.Failed += p.Failed
		out.Receipts += p.Receipts
		if p.WakeLatencyP50 != nil {
			out.WakeP50[name] = time.Duration(*p.WakeLatencyP50) * time.Millisecond
		}
	}
	var sinceFirst time.Duration
	if out.Sent > 0 {
		now := time.Now()
		s.firstSent.CompareAndSwap(0, now.UnixNano())
		sinceFirst = now.Sub(time.Unix(0, s.firstSent.Load()))
	}
	// A receipt comes back at most the fleet's longest wake delay after
	// its push, plus a fetch and a post.
	out.WakeRate = wakeRate(out.Sent, out.Receipts, sinceFirst, s.fleet.cfg.WakeDelayMax+time.Second)
	return out, nil
}

// wakeRate is receipts per push sent, at most 1, or -1 while it would
// mislead: before any push, and until grace has passed since the first
// one was seen, when receipts cannot yet have come back for most pushes.
func wakeRate(sent, receipts int64, sinceFirstSend, grace time.Duration) float64 {
	if sent == 0 || sinceFirstSend < grace {
		return -1
	}
	return min(float64(receipts)/float64(sent), 1)
}

// SummaryWidth is the width the devstack's summary fits: a standard
// 80-column terminal.
const SummaryWidth = 80

// String renders the summary as the lines of Lines(SummaryWidth).
func (m Summary) String() string { return strings.Join(m.Lines(SummaryWidth), "\n") }

// Lines renders the summary as lines of at most width columns (a part
// wider than width alone on its line), its parts separated by " · ":
//
//	devices 1,000/1,000 · articles 13 · pushes sent 2,463 · deferred 3,211
//	coalesced 4,399 · wakes 2,327 (94.5 %) · wake p50 android 2.0 s, ios 2.0 s
//
// The wake rate shows as "—" until it means something (see WakeRate).
func (m Summary) Lines(width int) []string {
	parts := []string{
		"devices " + group(m.Registered) + "/" + group(int64(m.Devices)),
		"articles " + group(int64(m.Articles)),
		"pushes sent " + group(m.Sent),
		"deferred " + group(m.Deferred),
		"coalesced " + group(m.Coalesced),
	}
	if m.Pruned > 0 || m.Failed > 0 {
		parts = append(parts, "pruned "+group(m.Pruned), "failed "+group(m.Failed))
	}
	rate := "—"
	if m.WakeRate >= 0 {
		rate = strconv.FormatFloat(100*m.WakeRate, 'f', 1, 64) + " %"
	}
	parts = append(parts, "wakes "+group(m.Receipts)+" ("+rate+")")
	if len(m.WakeP50) > 0 {
		var p50 []string
		for _, n := range slices.Sorted(maps.Keys(m.WakeP50)) {
			p50 = append(p50, n+" "+humanDuration(m.WakeP50[n]))
		}
		parts = append(parts, "wake p50 "+strings.Join(p50, ", "))
	}
	const sep = " · "
	var lines []string
	line := ""
	for _, p := range parts {
		switch {
		case line == "":
			line = p
		case utf8.RuneCountInString(line+sep+p) <= width:
			line += sep + p
		default:
			lines = append(lines, line)
			line = p
		}
	}
	return append(lines, line)
}

// group formats n with thousands separators: 12345 → "12,345".
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		return "-" + s
	}
	return s
}

// humanDuration renders a latency as "850 ms" or "2.5 s".
func humanDuration(d time.Duration) string {
	if d < time.Second {
		return strconv.FormatInt(d.Milliseconds(), 10) + " ms"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
}
