package redistest

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestStartAndRestartKeepsAOF(t *testing.T) {
	t.Parallel()
	s := StartServer(t, "appendonly", "yes", "appendfsync", "always")
	ctx := context.Background()
	c := s.Client(t)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	got, err := c.Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("after restart: got %q, %v; want v", got, err)
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	cl := StartCluster(t)
	ctx := context.Background()
	c := cl.Client(t)
	for _, k := range []string{"a", "b", "c", "{p1}x", "{p2}y"} {
		if err := c.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
	}
	var masters atomic.Int32 // ForEachMaster calls back concurrently
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		masters.Add(1)
		return nil
	})
	if err != nil || masters.Load() != 3 {
		t.Fatalf("masters = %d, %v; want 3", masters.Load(), err)
	}
}
