package devstack

import (
	"context"
	"fmt"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"

	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/stats"
)

// startRedis opens the Redis the processes will share: NUDGE_REDIS_URL
// when set, else an embedded in-memory server whose URL both processes
// get (each would otherwise start its own). It also opens the client the
// summary reads nudge's stats with.
func (s *Stack) startRedis(ctx context.Context) error {
	s.redisURL = s.cfg.RedisURL
	if s.redisURL == "" {
		m, err := config.StartEmbedded(s.cfg.EmbeddedRedisAddr)
		if err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
		s.embedded = m
		shimObjectEncoding(m)
		s.redisURL = "redis://" + m.Addr()
		s.log.InfoContext(ctx, "embedded in-memory redis (miniredis) started; all state is lost on exit (set NUDGE_REDIS_URL to keep it)",
			"addr", m.Addr())
		s.log.WarnContext(ctx, "embedded redis: miniredis lacks OBJECT ENCODING, which the throttle scripts call (keep_hashtable); the devstack answers it with \"hashtable\"",
			"addr", m.Addr())
	}
	r, err := config.OpenRedis(ctx, s.redisURL, "", s.log)
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	s.rdb = r.Client
	s.recorder = stats.NewRecorder(r.Client, nil, s.log, nil)
	return nil
}

// shimObjectEncoding makes the embedded miniredis answer OBJECT ENCODING,
// which it does not implement (it knows only OBJECT IDLETIME) and which the
// throttle's decide and move scripts call to keep a grown hash a hash
// table. miniredis stores no encodings; "hashtable" is the answer under
// which the scripts leave the hash alone. The hook also runs for commands
// inside Lua scripts.
func shimObjectEncoding(m *miniredis.Miniredis) {
	m.Server().SetPreHook(func(c *server.Peer, cmd string, args ...string) bool {
		if cmd != "OBJECT" || len(args) != 2 || !strings.EqualFold(args[0], "encoding") {
			return false
		}
		c.WriteBulk("hashtable")
		return true
	})
}
