package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/redis/go-redis/v9"
)

// Whoever knows a push token may register it again (apps reinstall and
// lose their secret), which moves the device record to them with a fresh
// secret. docs/mobile.md explains the model. The API limits how often one
// token may be registered or moved to (TokenRateLimit per
// TokenRateWindow, shared by every replica through Redis) and writes an
// audit record for every re-registration and token move.

// tokenHash names a token in Redis keys and audit records without the
// token itself.
func tokenHash(provider, token string) string {
	h := sha256.Sum256([]byte(provider + "\x00" + token))
	return hex.EncodeToString(h[:12])
}

// checkToken refuses with 429 a token that was registered (or moved to)
// TokenRateLimit times in the current window. countToken counts one
// successful registration; only valid tokens reach it, so bad requests
// leave nothing behind. Concurrent requests may pass the check together:
// the limit can be exceeded by the requests in flight for one token.
func (s *Server) checkToken(ctx context.Context, provider, token string) error {
	if s.cfg.TokenRateLimit < 0 {
		return nil
	}
	key := keys.TokenRegistrations(tokenHash(provider, token))
	var n *redis.StringCmd
	var ttl *redis.DurationCmd
	if _, err := s.deps.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		n, ttl = p.Get(ctx, key), p.PTTL(ctx, key)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	if c, _ := n.Int(); c >= s.cfg.TokenRateLimit {
		wait := max(ttl.Val(), time.Second)
		return &HTTPError{Code: http.StatusTooManyRequests, Kind: "rate_limited", Field: "token", RetryAfter: wait,
			Msg: "this push token was registered too often; retry after the Retry-After seconds"}
	}
	return nil
}

func (s *Server) countToken(ctx context.Context, provider, token string) {
	if s.cfg.TokenRateLimit < 0 {
		return
	}
	key := keys.TokenRegistrations(tokenHash(provider, token))
	if _, err := s.deps.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, key)
		p.ExpireNX(ctx, key, s.cfg.TokenRateWindow)
		return nil
	}); err != nil {
		logFrom(ctx).WarnContext(ctx, "count token registration", "err", err)
	}
}

// auditDevice appends a device-side security event (a re-registration that
// replaced a device's secret, a token moved by PATCH) to the audit stream
// and the log. It names the device, the token's hash and the client
// address, never the token.
func (s *Server) auditDevice(r *http.Request, action string, device uint64, provider, token string) {
	ctx := r.Context()
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	th := tokenHash(provider, token)
	log := logFrom(ctx)
	log.InfoContext(ctx, "audit", "action", action, "device_id", device, "token_hash", th, "client_ip", host)
	err = s.deps.Redis.XAdd(ctx, &redis.XAddArgs{
		Stream: keys.Audit(), MaxLen: 100_000, Approx: true,
		Values: []any{"action", action, "target", strconv.FormatUint(device, 10), "token_hash", th, "client_ip", host,
			"request_id", RequestID(ctx), "at", s.cfg.Now().UTC().Format(time.RFC3339)},
	}).Err()
	if err != nil {
		log.ErrorContext(ctx, "write audit record", "action", action, "err", err)
	}
}
