package devstack

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
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
	// WakeRate is receipts per push sent over all platforms, -1 when
	// nothing was sent yet.
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
	if out.Sent > 0 {
		out.WakeRate = min(float64(out.Receipts)/float64(out.Sent), 1)
	}
	return out, nil
}

// String renders the summary as one line.
func (m Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "devices %s/%s · articles %s · pushes sent %s, deferred %s, coalesced %s",
		group(m.Registered), group(int64(m.Devices)), group(int64(m.Articles)),
		group(m.Sent), group(m.Deferred), group(m.Coalesced))
	if m.Pruned > 0 || m.Failed > 0 {
		fmt.Fprintf(&b, ", pruned %s, failed %s", group(m.Pruned), group(m.Failed))
	}
	fmt.Fprintf(&b, " · wakes %s", group(m.Receipts))
	if m.WakeRate >= 0 {
		fmt.Fprintf(&b, " (%.1f %%)", 100*m.WakeRate)
	}
	if len(m.WakeP50) > 0 {
		b.WriteString(" · wake p50")
		names := make([]string, 0, len(m.WakeP50))
		for n := range m.WakeP50 {
			names = append(names, n)
		}
		slices.Sort(names)
		for i, n := range names {
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(&b, "%s %s %s", sep, n, humanDuration(m.WakeP50[n]))
		}
	}
	return b.String()
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
