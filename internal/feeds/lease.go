package feeds

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// ErrLeaseLost is returned when a replica writes feed state under a lease
// that expired and moved to another replica.
var ErrLeaseLost = errors.New("feed lease lost")

// releaseScript deletes a feed lease if the caller still holds it.
//
// KEYS[1] feed:{f}:lease  STRING holder token
// ARGV[1] the caller's token
// Returns 1 when released, 0 when the lease was not the caller's.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// renewScript extends a feed lease if the caller still holds it.
//
// KEYS[1] feed:{f}:lease  STRING holder token
// ARGV[1] the caller's token
// ARGV[2] new time to live, ms
// Returns 1 when renewed, 0 when the lease was not the caller's.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// commitScript writes fields of a feed's health hash only while the caller
// holds the feed's lease (fencing: a replica whose lease expired mid-poll
// must not overwrite the schedule its successor wrote).
//
// KEYS[1] feed:{f}:lease   STRING holder token
// KEYS[2] feed:{f}:health  HASH
// ARGV[1] the caller's token
// ARGV[2..] field, value pairs
// Returns 1 when written, 0 when the lease was not the caller's.
var commitScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
return 1
`)

// commitPollScript is commitScript for the outcome of a poll: when the
// feed's poll generation moved on since the poll began (a PollNow arrived
// while it ran), the feed is made due at once, whatever next_poll the
// fields set.
//
// KEYS[1] feed:{f}:lease   STRING holder token
// KEYS[2] feed:{f}:health  HASH
// ARGV[1] the caller's token
// ARGV[2] the poll generation (field poll_gen) the poll began with
// ARGV[3..] field, value pairs
// Returns 1 when written, 2 when written and made due again, 0 when the
// lease was not the caller's.
var commitPollScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
if (redis.call('HGET', KEYS[2], 'poll_gen') or '0') ~= ARGV[2] then
  redis.call('HSET', KEYS[2], 'next_poll', 0)
  return 2
end
return 1
`)

// leases hands out and returns the per-feed polling leases of one replica.
type leases struct {
	rdb   redis.UniversalClient
	token string
	ttl   time.Duration
}

func (l *leases) acquire(ctx context.Context, feed string) (bool, error) {
	ok, err := l.rdb.SetNX(ctx, keys.FeedLease(feed), l.token, l.ttl).Result()
	if err != nil {
		return false, fmt.Errorf("acquire lease of feed %s: %w", feed, err)
	}
	return ok, nil
}

func (l *leases) renew(ctx context.Context, feed string) error {
	n, err := renewScript.Run(ctx, l.rdb, []string{keys.FeedLease(feed)}, l.token, l.ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("renew lease of feed %s: %w", feed, err)
	}
	if n == 0 {
		return fmt.Errorf("renew lease of feed %s: %w", feed, ErrLeaseLost)
	}
	return nil
}

func (l *leases) release(ctx context.Context, feed string) error {
	if err := releaseScript.Run(ctx, l.rdb, []string{keys.FeedLease(feed)}, l.token).Err(); err != nil {
		return fmt.Errorf("release lease of feed %s: %w", feed, err)
	}
	return nil
}

// commit writes health fields of feed if this replica holds its lease.
func (l *leases) commit(ctx context.Context, feed string, fields ...any) error {
	args := append([]any{l.token}, fields...)
	n, err := commitScript.Run(ctx, l.rdb, []string{keys.FeedLease(feed), keys.FeedHealth(feed)}, args...).Int()
	if err != nil {
		return fmt.Errorf("write health of feed %s: %w", feed, err)
	}
	if n == 0 {
		return fmt.Errorf("write health of feed %s: %w", feed, ErrLeaseLost)
	}
	return nil
}

// commitPoll writes the outcome of a poll that began at poll generation
// gen, if this replica holds the lease (see commitPollScript).
func (l *leases) commitPoll(ctx context.Context, feed string, gen int64, fields ...any) error {
	args := append([]any{l.token, gen}, fields...)
	n, err := commitPollScript.Run(ctx, l.rdb, []string{keys.FeedLease(feed), keys.FeedHealth(feed)}, args...).Int()
	if err != nil {
		return fmt.Errorf("write health of feed %s: %w", feed, err)
	}
	if n == 0 {
		return fmt.Errorf("write health of feed %s: %w", feed, ErrLeaseLost)
	}
	return nil
}
