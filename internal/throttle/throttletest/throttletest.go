// Package throttletest reads what the throttle queued, for the tests of
// the packages that plan pushes through it.
package throttletest

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// Job is a push job in a push stream.
type Job struct {
	Push throttle.Push
	// At is the stream entry's time: Redis's clock when it was queued.
	At time.Time
}

// Queued returns every push job in the push streams, partition by
// partition, each partition's in stream order.
func Queued(tb testing.TB, rdb redis.UniversalClient) []Job {
	tb.Helper()
	var out []Job
	for p := range keys.Partitions {
		msgs, err := rdb.XRange(tb.Context(), jobs.Stream(keys.PushQueue, p), "-", "+").Result()
		if err != nil {
			tb.Fatalf("read push stream %d: %v", p, err)
		}
		for _, m := range msgs {
			s, _ := m.Values["p"].(string)
			push, err := throttle.DecodePush([]byte(s))
			if err != nil {
				tb.Fatalf("decode push job %s: %v", m.ID, err)
			}
			ms, _, _ := strings.Cut(m.ID, "-")
			n, err := strconv.ParseInt(ms, 10, 64)
			if err != nil {
				tb.Fatalf("stream id %s: %v", m.ID, err)
			}
			out = append(out, Job{Push: push, At: time.UnixMilli(n)})
		}
	}
	return out
}
