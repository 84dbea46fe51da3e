// Package audit owns the audit stream (keys.Audit): the record of editor,
// admin and device-security actions. Record appends an entry, Read returns
// the latest ones; no other package reads or writes the stream.
//
// The stream is capped at about MaxLen entries (XADD MAXLEN ~). An entry's
// fields are action, target, app (the app the action was for, where there
// is one), then key and role (an API key's action) or
// token_hash and client_ip (a device's), then request_id and at (RFC 3339,
// UTC, second precision).
package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// MaxLen is about how many entries the stream keeps.
const MaxLen = 100_000

// Entry is one audited action. Empty optional fields are not written.
type Entry struct {
	// ID is the stream entry id, set by Read.
	ID     string
	Action string // e.g. "feed.delete", "device.reregister"
	Target string // what it acted on: a feed id, a device id, a sync
	// App is the app the action was for; empty for app-wide actions (the
	// shared feed catalogue) and for records written before apps.
	App string
	// Key and Role name the API key that acted (never the key itself).
	Key  string
	Role string
	// TokenHash and ClientIP describe a device-side action (never the token).
	TokenHash string
	ClientIP  string
	RequestID string
	At        time.Time
}

// Log reads and writes the audit stream.
type Log struct {
	rdb redis.UniversalClient
}

// New returns a Log on rdb.
func New(rdb redis.UniversalClient) *Log { return &Log{rdb: rdb} }

// Record appends e to the stream.
func (l *Log) Record(ctx context.Context, e Entry) error {
	v := []any{"action", e.Action, "target", e.Target}
	if e.App != "" {
		v = append(v, "app", e.App)
	}
	if e.Key != "" || e.Role != "" {
		v = append(v, "key", e.Key, "role", e.Role)
	}
	if e.TokenHash != "" || e.ClientIP != "" {
		v = append(v, "token_hash", e.TokenHash, "client_ip", e.ClientIP)
	}
	v = append(v, "request_id", e.RequestID, "at", e.At.UTC().Format(time.RFC3339))
	err := l.rdb.XAdd(ctx, &redis.XAddArgs{Stream: keys.Audit(), MaxLen: MaxLen, Approx: true, Values: v}).Err()
	if err != nil {
		return fmt.Errorf("write audit record %s: %w", e.Action, err)
	}
	return nil
}

// Read returns up to n of the latest entries, oldest first.
func (l *Log) Read(ctx context.Context, n int64) ([]Entry, error) {
	msgs, err := l.rdb.XRevRangeN(ctx, keys.Audit(), "+", "-", n).Result()
	if err != nil {
		return nil, fmt.Errorf("read audit records: %w", err)
	}
	out := make([]Entry, len(msgs))
	for i, m := range msgs {
		s := func(k string) string { v, _ := m.Values[k].(string); return v }
		at, _ := time.Parse(time.RFC3339, s("at"))
		out[len(msgs)-1-i] = Entry{
			ID: m.ID, Action: s("action"), Target: s("target"), App: s("app"), Key: s("key"), Role: s("role"),
			TokenHash: s("token_hash"), ClientIP: s("client_ip"), RequestID: s("request_id"), At: at,
		}
	}
	return out, nil
}
