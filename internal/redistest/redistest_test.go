package redistest

import (
	"context"
	"net"
	"path/filepath"
	"strings"
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

// TestLaunchOnATakenPort starts redis-server on a port another listener
// holds: the server exits, and launch reports that at once (it waits on
// the process's exit, not for its 30 s PING timeout) so start can try
// another port.
func TestLaunchOnATakenPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	s := &Server{Dir: dir, args: []string{"--bind", "127.0.0.1", "--dir", dir, "--save", "", "--logfile", filepath.Join(dir, "redis.log")}}
	err = s.launch(t, l.Addr().(*net.TCPAddr).Port)
	if err == nil || !strings.Contains(err.Error(), "exited before answering PING") {
		t.Fatalf("launch on a taken port: got %v, want the exit reported", err)
	}
	if s.cmd != nil {
		t.Fatalf("launch on a taken port kept the process")
	}
}
