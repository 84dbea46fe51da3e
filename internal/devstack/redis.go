package devstack

import (
	"context"
	"fmt"

	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/service"
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
		s.redisURL = "redis://" + m.Addr()
		s.log.InfoContext(ctx, "embedded in-memory redis (miniredis) started; all state is lost on exit (set NUDGE_REDIS_URL to keep it)",
			"addr", m.Addr())
	}
	r, err := config.OpenRedis(ctx, service.Archetype{Logger: s.log}, s.redisURL, "")
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	s.rdb = r.Client
	s.recorder, err = stats.NewRecorder(service.Archetype{Logger: s.log}, r.Client)
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	return nil
}
