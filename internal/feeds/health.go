package feeds

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// Fields of the health hash keys.FeedHealth(feed). Times are unix ms.
const (
	hLastPoll     = "last_poll"     // time of the last poll attempt
	hLastSuccess  = "last_success"  // time of the last 200 or 304
	hLastError    = "last_error"    // message of the last error, "" after a success
	hLastErrorAt  = "last_error_at" // time of the last error
	hLastStatus   = "last_status"   // HTTP status of the last response, 0 if none
	hFailures     = "failures"      // consecutive failed polls
	hETag         = "etag"          // validator for If-None-Match
	hLastModified = "last_modified" // validator for If-Modified-Since
	hNextPoll     = "next_poll"     // when the feed is due, shared by all replicas
	hItems        = "items"         // items in the log (written by saveScript)
	hHead         = "head"          // the feed's cursor (written by saveScript)
	hNotified     = "notified"      // cursor up to which the Notifier succeeded
	hTrimmed      = "trimmed"       // highest cursor dropped from the log (saveScript)
	hDropped      = "dropped"       // items left out of the last fetched document (item limit)
	hPollGen      = "poll_gen"      // PollNow calls so far; a poll that saw another value re-polls
	hSeen         = "seen"          // records in the feed's memory (saveScript)
)

// Health is the poll state of one feed, for the console and the API.
type Health struct {
	LastPoll     time.Time
	LastSuccess  time.Time
	LastError    string // empty when the last poll succeeded
	LastErrorAt  time.Time
	LastStatus   int // last HTTP status, 0 when no response came
	Failures     int // consecutive failed polls
	ETag         string
	LastModified string
	NextPoll     time.Time // when some replica polls the feed next
	Items        int       // items in the feed's log
	Head         int64     // the feed's cursor
	Notified     int64     // cursor up to which subscribers were notified
	// Dropped is how many items the last fetched document had over the
	// item limit (NUDGE_FEED_MAX_ITEMS); 0 when it fit.
	Dropped int
	// PollGen counts PollNow calls; a poll compares it at its commit.
	PollGen int64
	// Records is the size of the feed's memory of announced articles (two
	// records for an article with both a GUID and a link).
	Records int
}

// Health reads the health of feed; a feed never polled has a zero Health.
// It is how the api and the console read a feed's poll state.
func (s *Store) Health(ctx context.Context, feed string) (Health, error) {
	return ReadHealth(ctx, s.rdb, feed)
}

// ReadHealth reads the health of feed from rdb; a feed never polled has a
// zero Health. Processes read health through Store.Health (or the
// Watcher); ReadHealth serves the tests and tools that hold only a Redis
// client.
func ReadHealth(ctx context.Context, rdb redis.Cmdable, feed string) (Health, error) {
	m, err := rdb.HGetAll(ctx, keys.FeedHealth(feed)).Result()
	if err != nil {
		return Health{}, fmt.Errorf("read health of feed %s: %w", feed, err)
	}
	return healthFrom(m), nil
}

func healthFrom(m map[string]string) Health {
	i64 := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	ms := func(k string) time.Time {
		if v := i64(k); v > 0 {
			return time.UnixMilli(v).UTC()
		}
		return time.Time{}
	}
	return Health{
		LastPoll:     ms(hLastPoll),
		LastSuccess:  ms(hLastSuccess),
		LastError:    m[hLastError],
		LastErrorAt:  ms(hLastErrorAt),
		LastStatus:   int(i64(hLastStatus)),
		Failures:     int(i64(hFailures)),
		ETag:         m[hETag],
		LastModified: m[hLastModified],
		NextPoll:     ms(hNextPoll),
		Items:        int(i64(hItems)),
		Head:         i64(hHead),
		Notified:     i64(hNotified),
		Dropped:      int(i64(hDropped)),
		PollGen:      i64(hPollGen),
		Records:      int(i64(hSeen)),
	}
}

// PollNow makes feed due at once, so the next watcher pass of any replica
// polls it: a publisher's CMS (or an editor) calls it after publishing,
// instead of waiting for the poll interval. The conditional GET keeps a
// needless poll cheap. It also moves the feed's poll generation on, so a
// poll already running when it arrives is followed by another one at once
// (the running one may have fetched before the publish).
func PollNow(ctx context.Context, rdb redis.Cmdable, feed string) error {
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keys.FeedHealth(feed), hNextPoll, 0)
		p.HIncrBy(ctx, keys.FeedHealth(feed), hPollGen, 1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("schedule poll of feed %s: %w", feed, err)
	}
	return nil
}
