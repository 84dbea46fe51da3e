package receipts

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The lanes a push id names, spelled as the throttle spells them (a test
// keeps the two in step); receipts does not import the throttle, so the api
// can parse push ids without linking the push path.
const (
	laneFeed     = "feed"
	laneBreaking = "breaking"
	laneAlert    = "alert"
)

// PushID composes the id of a push as the app sees it in data push_id and
// echoes in its receipt: lane initial, send time in unix ms (base 36), and
// the collapse id. It lets a receipt be attributed to a lane and timed
// without storing anything per push.
func PushID(lane string, sent time.Time, collapse string) string {
	l := "f"
	switch lane {
	case laneBreaking:
		l = "b"
	case laneAlert:
		l = "a"
	}
	return l + strconv.FormatInt(sent.UnixMilli(), 36) + "." + collapse
}

// ParsePushID returns the lane and the send time of a push id.
func ParsePushID(id string) (lane string, sent time.Time, err error) {
	head, _, ok := strings.Cut(id, ".")
	if !ok || len(head) < 2 || len(id) > 128 {
		return "", time.Time{}, fmt.Errorf("push id %q is not one nudge sent", id)
	}
	switch head[0] {
	case 'f':
		lane = laneFeed
	case 'b':
		lane = laneBreaking
	case 'a':
		lane = laneAlert
	default:
		return "", time.Time{}, fmt.Errorf("push id %q has an unknown lane", id)
	}
	ms, err := strconv.ParseInt(head[1:], 36, 64)
	if err != nil || ms <= 0 {
		return "", time.Time{}, fmt.Errorf("push id %q has no send time", id)
	}
	return lane, time.UnixMilli(ms), nil
}
