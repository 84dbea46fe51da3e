// Package redistest starts private redis-server processes for tests: a
// single server or a 3-master Redis Cluster, each on free ports in a temp dir,
// stopped when the test ends. Tests never share a server, so they can run in
// parallel and flush freely.
//
// The redis-server binary comes from $NUDGE_REDIS_SERVER or the PATH.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/await"
)

// Server is one private redis-server process.
type Server struct {
	Addr string // host:port
	Dir  string // working dir (AOF and RDB files, log)
	cmd  *exec.Cmd
	gone chan struct{} // closed when cmd has exited
	args []string
}

// binary returns the redis-server executable, or skips nothing: a missing
// binary fails the test, because every test here needs real Redis.
func binary(tb testing.TB) string {
	tb.Helper()
	if b := os.Getenv("NUDGE_REDIS_SERVER"); b != "" {
		return b
	}
	b, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server not found: install it (apt-get install redis-server) or set NUDGE_REDIS_SERVER: %v", err)
	}
	return b
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartServer starts a redis-server with the given extra config directives
// (for example "appendonly", "yes") and stops it at the end of the test.
func StartServer(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	dir := tb.TempDir()
	s := &Server{Dir: dir}
	s.args = append([]string{
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--save", "",
		"--appendonly", "no",
		"--logfile", filepath.Join(dir, "redis.log"),
		"--hash-max-listpack-value", "256",
	}, prefixArgs(extra)...)
	s.start(tb)
	tb.Cleanup(s.Kill)
	return s
}

func prefixArgs(extra []string) []string {
	out := make([]string, 0, len(extra))
	for i, a := range extra {
		if i%2 == 0 && !strings.HasPrefix(a, "--") {
			a = "--" + a
		}
		out = append(out, a)
	}
	return out
}

func (s *Server) start(tb testing.TB) {
	tb.Helper()
	var lastErr error
	for range 5 {
		port := FreePort(tb)
		if s.Addr != "" { // restart on the same port
			_, p, _ := net.SplitHostPort(s.Addr)
			port, _ = strconv.Atoi(p)
		}
		if lastErr = s.launch(tb, port); lastErr == nil {
			return
		}
	}
	log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	tb.Fatalf("redis-server did not start: %v\n%s", lastErr, log)
}

// launch runs redis-server on port and waits until it answers PING. It
// returns an error when the process exits first (another process took
// the port since FreePort looked) and fails the test when it neither
// answers nor exits within 30 s.
func (s *Server) launch(tb testing.TB, port int) error {
	tb.Helper()
	cmd := exec.Command(binary(tb), append([]string{"--port", strconv.Itoa(port)}, s.args...)...)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	gone := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(gone)
	}()
	ready := false
	defer func() {
		if !ready { // it exited, or the wait failed the test
			_ = cmd.Process.Kill()
			<-gone
		}
	}()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	exited := false
	await.Poll{Timeout: 30 * time.Second}.Check(tb, "redis-server to answer PING at "+addr, func() error {
		select {
		case <-gone:
			exited = true
			return nil
		default:
			return ping(addr)
		}
	})
	if exited {
		return fmt.Errorf("redis-server on port %d exited before answering PING", port)
	}
	ready = true
	s.cmd, s.gone, s.Addr = cmd, gone, addr
	return nil
}

// Kill stops the server with SIGKILL. It is safe to call twice.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.gone
	s.cmd = nil
}

// Restart kills the server and starts it again on the same port and dir, so
// whatever it persisted (AOF, RDB) is loaded again.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Kill()
	s.start(tb)
}

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr }

// Client returns a client for the server, closed at the end of the test.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Start starts a private server and returns a client for it. It is the
// usual entry point for a test.
func Start(tb testing.TB) *redis.Client {
	tb.Helper()
	return StartServer(tb).Client(tb)
}

// ping sends PING to addr and reads the answer.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("ping answered %q", strings.TrimSpace(line))
	}
	return nil
}

// Cluster is a private Redis Cluster of three masters and no replicas.
type Cluster struct {
	Nodes []*Server
}

// Seeds is the comma-separated seed list of the cluster.
func (c *Cluster) Seeds() string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return strings.Join(addrs, ",")
}

// Client returns a cluster client, closed at the end of the test.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	addrs := strings.Split(c.Seeds(), ",")
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// StartCluster starts three redis-server processes in cluster mode, splits
// the 16384 slots between them and waits until the cluster state is ok.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	c := &Cluster{}
	for range 3 {
		c.Nodes = append(c.Nodes, StartServer(tb, "cluster-enabled", "yes", "cluster-node-timeout", "2000"))
	}
	ctx := context.Background()
	ranges := [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}
	for i, n := range c.Nodes {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr})
		if err := cl.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", ranges[i][0], ranges[i][1]).Err(); err != nil {
			tb.Fatalf("cluster addslotsrange on %s: %v", n.Addr, err)
		}
		if i > 0 {
			host, port, _ := net.SplitHostPort(c.Nodes[0].Addr)
			if err := cl.ClusterMeet(ctx, host, port).Err(); err != nil {
				tb.Fatalf("cluster meet: %v", err)
			}
		}
		cl.Close()
	}
	await.Poll{Timeout: 30 * time.Second, Interval: 50 * time.Millisecond}.Until(tb, "the redis cluster to reach state ok with 3 nodes", func() bool {
		for _, n := range c.Nodes {
			cl := redis.NewClient(&redis.Options{Addr: n.Addr})
			info, err := cl.ClusterInfo(ctx).Result()
			cl.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3") {
				return false
			}
		}
		return true
	})
	return c
}

// MainThreadCPU returns the CPU seconds the Redis main thread has used
// (INFO cpu), so a benchmark can tell Redis's own cost from time spent
// waiting on a busy shared machine.
func MainThreadCPU(tb testing.TB, rdb redis.UniversalClient) float64 {
	tb.Helper()
	info, err := rdb.Info(tb.Context(), "cpu").Result()
	if err != nil {
		tb.Fatalf("info cpu: %v", err)
	}
	var total float64
	for line := range strings.SplitSeq(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "used_cpu_user_main_thread" || k == "used_cpu_sys_main_thread") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return total
}

// Calls returns how many times the server has run command (INFO
// commandstats, lower case, e.g. "zrange"), so a test can count the reads
// a cache saved.
func Calls(tb testing.TB, rdb redis.UniversalClient, command string) int64 {
	tb.Helper()
	info, err := rdb.Info(tb.Context(), "commandstats").Result()
	if err != nil {
		tb.Fatalf("info commandstats: %v", err)
	}
	prefix := "cmdstat_" + command + ":calls="
	for line := range strings.SplitSeq(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			n, _, _ := strings.Cut(rest, ",")
			c, _ := strconv.ParseInt(n, 10, 64)
			return c
		}
	}
	return 0
}

// Backends runs fn in two parallel subtests, "single" on a single server
// and "cluster" on a 3-master cluster, for code that must behave the same
// on both.
func Backends(t *testing.T, fn func(t *testing.T, rdb redis.UniversalClient)) {
	t.Helper()
	for _, kind := range []string{"single", "cluster"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var rdb redis.UniversalClient
			if kind == "single" {
				rdb = Start(t)
			} else {
				rdb = StartCluster(t).Client(t)
			}
			fn(t, rdb)
		})
	}
}
