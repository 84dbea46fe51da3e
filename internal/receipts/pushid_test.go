package receipts_test

import (
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/receipts"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// TestPushIDRoundTrip checks that every lane the throttle knows survives
// PushID and ParsePushID (receipts spells the lanes itself), with the send
// time to the millisecond, and that ids nudge never sent are refused.
func TestPushIDRoundTrip(t *testing.T) {
	t.Parallel()
	sent := time.UnixMilli(1_780_000_000_123)
	for _, lane := range []string{throttle.LaneFeed, throttle.LaneBreaking, throttle.LaneAlert} {
		t.Run(lane, func(t *testing.T) {
			gotLane, gotSent, err := receipts.ParsePushID(receipts.PushID(lane, sent, "c1"))
			if err != nil || gotLane != lane || !gotSent.Equal(sent) {
				t.Fatalf("round trip: got %q %v %v, want %q %v", gotLane, gotSent, err, lane, sent)
			}
		})
	}
	for _, bad := range []string{"", "f", "fzz", "x1.c", "f.c", "f-1.c", "f0.c"} {
		if _, _, err := receipts.ParsePushID(bad); err == nil {
			t.Errorf("ParsePushID(%q): got nil error, want one", bad)
		}
	}
}
