package httpapi

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/nudge-dev/nudge/internal/audit"
	"github.com/nudge-dev/nudge/internal/devices"
)

// Whoever knows a push token may register it again (apps reinstall and
// lose their secret), which moves the device record to them with a fresh
// secret. docs/mobile.md explains the model. The API limits how often one
// token may be registered or moved to (TokenRateLimit per
// TokenRateWindow, shared by every replica through Redis) and writes an
// audit record for every re-registration and token move.

// TokenRegistrations counts how often a push token was registered, for
// the takeover limit; *devices.Registry is one.
type TokenRegistrations interface {
	Registrations(ctx context.Context, provider, token string) (n int, left time.Duration, err error)
	CountRegistration(ctx context.Context, provider, token string, window time.Duration) error
}

// tokenHash names a token in audit records without the token itself
// (the registry's TokenHash, the name its registration counters use).
func tokenHash(provider, token string) string { return devices.TokenHash(provider, token) }

// checkToken refuses with 429 a token that was registered (or moved to)
// TokenRateLimit times in the current window. countToken counts one
// successful registration; only valid tokens reach it, so bad requests
// leave nothing behind. Concurrent requests may pass the check together:
// the limit can be exceeded by the requests in flight for one token. The
// counters belong to the device registry.
func (s *Server) checkToken(ctx context.Context, provider, token string) error {
	if s.cfg.TokenRateLimit < 0 {
		return nil
	}
	n, left, err := s.deps.Tokens.Registrations(ctx, provider, token)
	if err != nil {
		return err
	}
	if n >= s.cfg.TokenRateLimit {
		wait := max(left, time.Second)
		return &HTTPError{Code: http.StatusTooManyRequests, Kind: "rate_limited", Field: "token", RetryAfter: wait,
			Msg: "this push token was registered too often; retry after the Retry-After seconds"}
	}
	return nil
}

func (s *Server) countToken(ctx context.Context, provider, token string) {
	if s.cfg.TokenRateLimit < 0 {
		return
	}
	if err := s.deps.Tokens.CountRegistration(ctx, provider, token, s.cfg.TokenRateWindow); err != nil {
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
	err = s.auditLog().Record(ctx, audit.Entry{
		Action: action, Target: strconv.FormatUint(device, 10), TokenHash: th, ClientIP: host,
		RequestID: RequestID(ctx), At: s.now(),
	})
	if err != nil {
		log.ErrorContext(ctx, "write audit record", "action", action, "err", err)
	}
}
