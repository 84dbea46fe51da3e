package feeds

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// ErrLeaseLost is returned when a replica writes feed state under a lease
// that expired and moved to another replica.
var ErrLeaseLost = errors.New("feed lease lost")

// The lease scripts; each .lua file opens with its KEYS/ARGV/returns contract.
var (
	// releaseScript deletes a feed lease if the caller still holds it.
	//go:embed lease_release.lua
	releaseLua    string
	releaseScript = redis.NewScript(releaseLua)

	// renewScript extends a feed lease if the caller still holds it.
	//go:embed lease_renew.lua
	renewLua    string
	renewScript = redis.NewScript(renewLua)

	// commitScript writes health fields only while the caller holds the
	// feed's lease.
	//go:embed lease_commit.lua
	commitLua    string
	commitScript = redis.NewScript(commitLua)

	// commitPollScript is commitScript for a poll's outcome, making the
	// feed due again when a PollNow arrived during the poll.
	//go:embed lease_commit_poll.lua
	commitPollLua    string
	commitPollScript = redis.NewScript(commitPollLua)
)

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
