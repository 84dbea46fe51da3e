package devices

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// The registry owns the per-token registration counters
// (keys.TokenRegistrations) beside the token index: the api's limit on how
// often one push token may be registered or moved to reads and counts
// through Registrations and CountRegistration.

// TokenHash names a push token in Redis keys and audit records without
// the token itself.
func TokenHash(provider, token string) string {
	h := sha256.Sum256([]byte(provider + "\x00" + token))
	return hex.EncodeToString(h[:12])
}

// Registrations returns how many times the token was registered (or moved
// to) in its current window, and how long that window has left (0 when
// no window is open).
func (r *Registry) Registrations(ctx context.Context, provider, token string) (n int, left time.Duration, err error) {
	key := keys.TokenRegistrations(TokenHash(provider, token))
	var cnt *redis.StringCmd
	var ttl *redis.DurationCmd
	if _, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		cnt, ttl = p.Get(ctx, key), p.PTTL(ctx, key)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return 0, 0, fmt.Errorf("read registrations of a token: %w", err)
	}
	n, _ = cnt.Int()
	return n, max(ttl.Val(), 0), nil
}

// CountRegistration counts one registration of the token; the first one
// of a window opens it for window.
func (r *Registry) CountRegistration(ctx context.Context, provider, token string, window time.Duration) error {
	key := keys.TokenRegistrations(TokenHash(provider, token))
	if _, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, key)
		p.ExpireNX(ctx, key, window)
		return nil
	}); err != nil {
		return fmt.Errorf("count registration of a token: %w", err)
	}
	return nil
}
