package benchfleet_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/stacktest"
)

const (
	feed     = "headlines" // the fleet's feed
	warmFeed = "warmup"    // a few devices that warm connections, tokens and scripts first
	warm     = 256
)

// fleetSize is $NUDGE_BENCH_DEVICES, default 100,000 (`make bench-1m`
// sets 1,000,000).
func fleetSize(b *testing.B) uint64 {
	s := os.Getenv("NUDGE_BENCH_DEVICES")
	if s == "" {
		return 100_000
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n < 10 {
		b.Fatalf("NUDGE_BENCH_DEVICES=%q: want an integer of at least 10", s)
	}
	return n
}

// stack is nudge running as separate processes: redis-server, pushemu,
// api and dispatcher.
type stack struct {
	redis   *redistest.Server
	rdb     *redis.Client
	emu     *stacktest.Process
	emuCtl  string            // pushemu's control URL (/admin/…)
	creds   map[string]string // the NUDGE_* settings pushemu printed
	api     string            // api base URL
	editor  string            // an editor API key
	disp    *stacktest.Process
	dispOps string // dispatcher's /metrics base URL
	client  *http.Client
}

// freeAddr is a loopback address with a port that was free a moment ago.
func freeAddr(b *testing.B) string {
	return "127.0.0.1:" + strconv.Itoa(redistest.FreePort(b))
}

// startStack starts Redis, the emulator, the api and the dispatcher, each
// configured through its documented settings. NUDGE_* variables of the
// benchmark's environment (NUDGE_PUSH_WORKERS, NUDGE_PUSH_BATCH…) go to
// the api and the dispatcher, and NUDGE_BENCH_DISPATCHER_ENV (space
// separated NAME=value, e.g. "GOGC=50 GOMEMLIMIT=200MiB") to the
// dispatcher alone.
func startStack(b *testing.B) *stack {
	b.Helper()
	dir := b.TempDir()
	s := &stack{client: &http.Client{}}
	s.redis = redistest.StartServer(b)
	s.rdb = s.redis.Client(b)

	ctl := freeAddr(b)
	s.emuCtl = "http://" + ctl
	// -keep 1: one recorded delivery per token, enough to check which
	// event reached a device without the emulator holding a million bodies.
	if err := os.Mkdir(filepath.Join(dir, "emu"), 0o700); err != nil {
		b.Fatal(err)
	}
	s.emu = stacktest.Start(b, "pushemu", nil, "-fcm-addr", freeAddr(b), "-apns-addr", freeAddr(b),
		"-apns-sandbox-addr", freeAddr(b), "-control-addr", ctl, "-dir", filepath.Join(dir, "emu"), "-keep", "1")
	s.emu.WaitHealthy(b, s.emuCtl+"/admin/stats", time.Minute)
	await.Poll{Timeout: 30 * time.Second, Interval: 50 * time.Millisecond}.Until(b, "pushemu printed its settings", func() bool {
		return strings.Contains(s.emu.Log(), "pushemu ready")
	})
	s.creds = map[string]string{}
	var env []string
	for line := range strings.SplitSeq(s.emu.Log(), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && strings.HasPrefix(k, "NUDGE_") {
			s.creds[k] = v
			env = append(env, k+"="+v)
		}
	}
	if s.creds["NUDGE_FCM_ENDPOINT"] == "" || s.creds["NUDGE_APNS_HOST"] == "" {
		b.Fatalf("pushemu printed no credentials:\n%s", s.emu.Log())
	}

	key, err := auth.Mint("bench-desk", auth.RoleEditor)
	if err != nil {
		b.Fatal(err)
	}
	s.editor = key.Key
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			b.Fatal(err)
		}
		return p
	}
	// The feeds' URLs lead nowhere (loopback is not in
	// NUDGE_FEED_ALLOW_NETS): the only events are the benchmark's syncs.
	feedsFile := write("feeds.json", `[
  {"id": "`+feed+`", "title": "Headlines", "url": "http://127.0.0.1:9/headlines.xml", "poll_interval": "1h"},
  {"id": "`+warmFeed+`", "title": "Warm-up", "url": "http://127.0.0.1:9/warmup.xml", "poll_interval": "1h"}
]`)
	env = append(env,
		"NUDGE_REDIS_URL="+s.redis.URL(),
		"NUDGE_LOG_LEVEL=warn",
		"NUDGE_API_KEYS_FILE="+write("keys.txt", key.Line+"\n"),
		"NUDGE_FEEDS_FILE="+feedsFile,
	)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NUDGE_") && !strings.HasPrefix(kv, "NUDGE_BENCH_") && !strings.HasPrefix(kv, "NUDGE_REDIS_SERVER=") {
			env = append(env, kv)
		}
	}

	apiAddr := freeAddr(b)
	s.api = "http://" + apiAddr
	api := stacktest.Start(b, "api", append(env, "NUDGE_HTTP_ADDR="+apiAddr))
	api.WaitHealthy(b, s.api+"/readyz", time.Minute)

	opsAddr := freeAddr(b)
	s.dispOps = "http://" + opsAddr
	denv := append(env, "NUDGE_HTTP_ADDR="+opsAddr)
	denv = append(denv, strings.Fields(os.Getenv("NUDGE_BENCH_DISPATCHER_ENV"))...)
	s.disp = stacktest.Start(b, "dispatcher", denv)
	s.disp.WaitHealthy(b, s.dispOps+"/readyz", time.Minute)
	return s
}

// do sends an HTTP request and decodes a JSON answer into out; it fails
// the benchmark unless the status is want.
func (s *stack) do(b *testing.B, method, u, bearer string, body any, want int, out any) {
	b.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			b.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(b.Context(), method, u, rd)
	if err != nil {
		b.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		b.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatalf("%s %s: read answer: %v", method, u, err)
	}
	if resp.StatusCode != want {
		b.Fatalf("%s %s: status %d, want %d: %s", method, u, resp.StatusCode, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			b.Fatalf("%s %s: decode %s: %v", method, u, raw, err)
		}
	}
}

// trigger is an editor's POST /v1/syncs of one feed; it returns the sync id.
func (s *stack) trigger(b *testing.B, feed string) string {
	b.Helper()
	var out struct{ ID string }
	s.do(b, http.MethodPost, s.api+"/v1/syncs", s.editor, map[string]any{"feeds": []string{feed}}, http.StatusAccepted, &out)
	if out.ID == "" {
		b.Fatal("POST /v1/syncs answered no id")
	}
	return out.ID
}

// progress is GET /v1/syncs/{id}.
type progress struct {
	State                                                string
	Targeted, Queued, Sent, Deferred, Coalesced, Skipped int64
	Pruned, Failed, Superseded                           int64
	InFlight                                             int64 `json:"in_flight"`
}

func (s *stack) progress(b *testing.B, id string) progress {
	b.Helper()
	var p progress
	s.do(b, http.MethodGet, s.api+"/v1/syncs/"+url.PathEscape(id), s.editor, nil, http.StatusOK, &p)
	return p
}

// waitDone polls the sync's progress until its state is done.
func (s *stack) waitDone(b *testing.B, id string, timeout time.Duration) progress {
	b.Helper()
	var p progress
	await.Poll{Timeout: timeout, Interval: 50 * time.Millisecond}.Until(b, "sync "+id+" is done", func() bool {
		p = s.progress(b, id)
		return p.State == "done"
	})
	return p
}

// emuStats is the emulator's GET /admin/stats.
type emuStats struct {
	Delivered  int            `json:"delivered"`
	Rejected   int            `json:"rejected"`
	ByProvider map[string]int `json:"by_provider"`
}

func (s *stack) emuStats(b *testing.B) emuStats {
	b.Helper()
	var st emuStats
	s.do(b, http.MethodGet, s.emuCtl+"/admin/stats", "", nil, http.StatusOK, &st)
	return st
}

// waitEmu blocks (in the emulator, GET /admin/wait, 5 s at a time) until
// it has accepted count pushes in all. Between waits it reads the sync's
// progress and fails at once if the sync is done short of count (devices
// pruned, failed or never queued), or when timeout passes.
func (s *stack) waitEmu(b *testing.B, id string, count int, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	u := fmt.Sprintf("%s/admin/wait?count=%d&timeout=5s", s.emuCtl, count)
	for {
		req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, u, nil)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := s.client.Do(req)
		if err != nil {
			b.Fatalf("wait for %d pushes at the emulator: %v", count, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
			return
		case resp.StatusCode != http.StatusGatewayTimeout:
			b.Fatalf("wait for %d pushes at the emulator: %d %s", count, resp.StatusCode, raw)
		}
		if p := s.progress(b, id); p.State == "done" {
			b.Fatalf("sync %s is done (%+v) but the emulator has %d of %d pushes", id, p, s.emuStats(b).Delivered, count)
		}
		if time.Now().After(deadline) {
			b.Fatalf("the emulator has %d of %d pushes after %v", s.emuStats(b).Delivered, count, timeout)
		}
	}
}

// lastEvent is the event id of the last push the emulator recorded for
// token ("" if none).
func (s *stack) lastEvent(b *testing.B, tok string) string {
	b.Helper()
	var ds []struct{ Data map[string]string }
	s.do(b, http.MethodGet, s.emuCtl+"/admin/deliveries?token="+url.QueryEscape(tok), "", nil, http.StatusOK, &ds)
	if len(ds) == 0 {
		return ""
	}
	return ds[len(ds)-1].Data["event"]
}

// procSample is what /proc says about a process.
type procSample struct {
	RSS, HWM int64         // VmRSS and VmHWM, bytes
	CPU      time.Duration // utime + stime
}

// readProc reads VmRSS and VmHWM from /proc/pid/status and the CPU time
// from /proc/pid/stat (clock ticks of 1/100 s, Linux's USER_HZ).
func readProc(pid int) (procSample, error) {
	var p procSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, fmt.Errorf("read status of %d: %w", pid, err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return p, fmt.Errorf("parse %s of %d: %w", k, pid, err)
		}
		if k == "VmRSS" {
			p.RSS = kb << 10
		} else {
			p.HWM = kb << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return p, fmt.Errorf("short stat of %d: %q", pid, stat)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return p, fmt.Errorf("parse cpu of %d: %q", pid, stat)
	}
	p.CPU = time.Duration(ut+st) * 10 * time.Millisecond
	return p, nil
}

func mustProc(b *testing.B, pid int) procSample {
	b.Helper()
	p, err := readProc(pid)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// selfCPU is the user and system CPU time of this process.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg is the 1-minute load average, 0 if unknown.
func loadAvg() float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(raw))[0], 64)
	return f
}

// usedMemory is Redis's INFO memory used_memory, in bytes.
func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("info memory: %w", err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse used_memory %q: %w", v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("info memory has no used_memory")
}

// goHeap reads the dispatcher's go_memstats_heap_inuse_bytes from its
// /metrics, 0 if it cannot.
func (s *stack) goHeap(ctx context.Context) int64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.dispOps+"/metrics", nil)
	if err != nil {
		return 0
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f)
		}
	}
	return 0
}

// sample is one point of the memory curve.
type sample struct {
	At        time.Duration // since the trigger
	Pushes    int           // accepted by the emulator since the trigger
	RSS       int64         // dispatcher VmRSS
	Heap      int64         // dispatcher Go heap in use
	RedisUsed int64         // Redis used_memory
}

// sampler records the curve every interval until stopped.
type sampler struct {
	mu      sync.Mutex
	samples []sample
	errs    []error
	stop    chan struct{}
	done    chan struct{}
}

func (s *stack) startSampler(ctx context.Context, t0 time.Time, base int, interval time.Duration) *sampler {
	sm := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	pid := s.disp.Pid()
	take := func() {
		p, err := readProc(pid)
		used, err2 := usedMemory(ctx, s.rdb)
		pt := sample{At: time.Since(t0), RSS: p.RSS, Heap: s.goHeap(ctx), RedisUsed: used}
		var st emuStats
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.emuCtl+"/admin/stats", nil)
		if resp, err3 := s.client.Do(req); err3 == nil {
			_ = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			pt.Pushes = st.Delivered - base
		}
		sm.mu.Lock()
		defer sm.mu.Unlock()
		if err != nil || err2 != nil {
			sm.errs = append(sm.errs, fmt.Errorf("sample: %v, %v", err, err2))
			return
		}
		sm.samples = append(sm.samples, pt)
	}
	go func() {
		defer close(sm.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		take()
		for {
			select {
			case <-sm.stop:
				take()
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				take()
			}
		}
	}()
	return sm
}

// finish stops the sampler and returns its samples.
func (sm *sampler) finish(b *testing.B) []sample {
	b.Helper()
	close(sm.stop)
	<-sm.done
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if len(sm.errs) > 0 {
		b.Fatalf("%d samples failed, first: %v", len(sm.errs), sm.errs[0])
	}
	return sm.samples
}

// envInt is the benchmark environment's integer NUDGE_* setting key, or
// def (the dispatcher's default) when unset.
func envInt(b *testing.B, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", key, v)
	}
	return n
}

// newBare builds the bare SDK loop, the ceiling, for the emulator process
// from the settings pushemu printed, with the dispatcher's provider
// concurrency.
func (s *stack) newBare(b *testing.B) *pushemutest.Bare {
	b.Helper()
	creds := pushemu.Credentials{
		FCMCredentialsFile: s.creds["NUDGE_FCM_CREDENTIALS_FILE"], FCMEndpoint: s.creds["NUDGE_FCM_ENDPOINT"],
		FCMProjectID: s.creds["NUDGE_FCM_PROJECT_ID"], APNsKeyFile: s.creds["NUDGE_APNS_KEY_FILE"],
		APNsKeyID: s.creds["NUDGE_APNS_KEY_ID"], APNsTeamID: s.creds["NUDGE_APNS_TEAM_ID"],
		APNsTopic: s.creds["NUDGE_APNS_TOPIC"], APNsHost: s.creds["NUDGE_APNS_HOST"], CAFile: s.creds["NUDGE_PUSH_CA_FILE"],
	}
	return pushemutest.NewBare(b, creds, envInt(b, "NUDGE_APNS_CONCURRENCY", 128), envInt(b, "NUDGE_FCM_CONCURRENCY", 4))
}

// sendTimed builds the pushes of from..to (untimed) and sends them,
// returning the wall time and this process's plus the emulator's CPU.
func (s *stack) sendTimed(b *testing.B, bs *pushemutest.Bare, from, to uint64, event string) (wall, cpu time.Duration) {
	b.Helper()
	bp, err := bs.Build(from, to, feed, 0, 0, event)
	if err != nil {
		b.Fatal(err)
	}
	e0, c0, t0 := mustProc(b, s.emu.Pid()), selfCPU(), time.Now()
	if err := bs.Send(b.Context(), bp); err != nil {
		b.Fatal(err)
	}
	wall = time.Since(t0)
	cpu = selfCPU() - c0 + mustProc(b, s.emu.Pid()).CPU - e0.CPU
	return wall, cpu
}

// BenchmarkFleet fans one breaking sync out to NUDGE_BENCH_DEVICES devices
// (default 100,000; 40 % iOS on APNs, 10 % iOS on FCM, 50 % Android on
// FCM) with the dispatcher as its own process, and reports the fan-out's
// wall time and rate, the dispatcher's peak RSS and CPU, Redis's CPU and
// memory per device, and the rate of a bare SDK loop sending the same
// pushes to the same emulator in the same run (half before, half after
// the pipeline). It fails unless every device got exactly its one push:
// the emulator accepted exactly the fleet's count, split by provider as
// the fleet is, the sync ends done with sent = targeted = the fleet, and a
// sample of devices' last push names the sync.
//
// Run it once per process (-benchtime 1x): a second sync to the same fleet
// would meet the throttle's minimum gap.
func BenchmarkFleet(b *testing.B) {
	n := fleetSize(b)
	load0 := loadAvg()
	s := startStack(b)
	ctx := b.Context()
	dpid := s.disp.Pid()
	idle := mustProc(b, dpid)

	mem0, err := usedMemory(ctx, s.rdb)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	devicestest.Write(b, s.rdb, 1, n, func(uint64) string { return feed })
	seed := time.Since(t0)
	devicestest.Write(b, s.rdb, n+1, n+warm, func(uint64) string { return warmFeed })
	memSeeded, err := usedMemory(ctx, s.rdb)
	if err != nil {
		b.Fatal(err)
	}

	// Warm both paths: TLS connections, the APNs JWT, the OAuth token, the
	// scripts in Redis.
	bare := s.newBare(b)
	s.sendTimed(b, bare, n+1, n+warm, "warm")
	base := s.emuStats(b).Delivered
	wid := s.trigger(b, warmFeed)
	if p := s.waitDone(b, wid, 2*time.Minute); p.Sent != warm {
		b.Fatalf("warm-up sync %s: %+v, want %d sent", wid, p, warm)
	}
	if got := s.emuStats(b).Delivered - base; got != warm {
		b.Fatalf("warm-up pushes at the emulator: got %d, want %d", got, warm)
	}
	warmed := mustProc(b, dpid)

	ops := 0
	for b.Loop() {
		if ops++; ops > 1 {
			b.Fatal("BenchmarkFleet runs one sync per process: use -benchtime 1x")
		}
		bareWall, bareCPU := s.sendTimed(b, bare, 1, n/2, "bare")

		before := s.emuStats(b)
		redis0 := redistest.MainThreadCPU(b, s.rdb)
		mem1, err := usedMemory(ctx, s.rdb)
		if err != nil {
			b.Fatal(err)
		}
		d0, e0 := mustProc(b, dpid), mustProc(b, s.emu.Pid())
		start := time.Now()
		sm := s.startSampler(ctx, start, before.Delivered, 500*time.Millisecond)
		id := s.trigger(b, feed)
		// When planning ends the whole fleet is decided and queued: the
		// streams are near their fullest.
		await.Poll{Timeout: 30 * time.Minute, Interval: 50 * time.Millisecond}.Until(b, "sync "+id+" is planned", func() bool { return s.progress(b, id).State != "planning" })
		planned := time.Since(start)
		atPlanned := s.partitionMemory(b)
		s.waitEmu(b, id, before.Delivered+int(n), time.Hour)
		fanout := time.Since(start)
		d1, e1 := mustProc(b, dpid), mustProc(b, s.emu.Pid())
		redisCPU := redistest.MainThreadCPU(b, s.rdb) - redis0
		p := s.waitDone(b, id, 10*time.Minute)
		samples := sm.finish(b)
		mem2, err := usedMemory(ctx, s.rdb)
		if err != nil {
			b.Fatal(err)
		}

		// Every device got exactly its one push.
		after := s.emuStats(b)
		wantAPNs := int(n/10*4 + min(n%10, 3)) // ids with id%10 < 4; 1..n%10 holds 1, 2, 3
		if got := after.Delivered - before.Delivered; got != int(n) {
			b.Fatalf("pushes at the emulator for sync %s: got %d, want %d", id, got, n)
		}
		if got := after.ByProvider["apns"] - before.ByProvider["apns"]; got != wantAPNs {
			b.Fatalf("APNs pushes at the emulator: got %d, want %d", got, wantAPNs)
		}
		if after.Rejected != before.Rejected {
			b.Fatalf("the emulator rejected %d pushes", after.Rejected-before.Rejected)
		}
		if p.Targeted != int64(n) || p.Sent != int64(n) || p.Queued != int64(n) ||
			p.Failed != 0 || p.Pruned != 0 || p.Superseded != 0 || p.InFlight != 0 {
			b.Fatalf("sync %s ended %+v, want targeted = queued = sent = %d and nothing failed", id, p, n)
		}
		for _, dev := range checkSample(n) {
			if got := s.lastEvent(b, devicestest.Token(dev)); got != id {
				b.Fatalf("device %d: last push at the emulator is of event %q, want %q", dev, got, id)
			}
		}

		w2, c2 := s.sendTimed(b, bare, n/2+1, n, "bare")
		bareWall += w2
		bareCPU += c2
		load1 := loadAvg()

		hwm := mustProc(b, dpid).HWM
		var peakRSS, peakHeap, peakRedis int64
		for _, sp := range samples {
			peakRSS, peakHeap, peakRedis = max(peakRSS, sp.RSS), max(peakHeap, sp.Heap), max(peakRedis, sp.RedisUsed)
		}
		fn := float64(n)
		pps, bps := fn/fanout.Seconds(), fn/bareWall.Seconds()
		dispCPU := d1.CPU - d0.CPU
		emuCPU := e1.CPU - e0.CPU
		b.ReportMetric(fn, "devices")
		b.ReportMetric(seed.Seconds(), "seed_s")
		b.ReportMetric(planned.Seconds(), "planned_s")
		b.ReportMetric(fanout.Seconds(), "fanout_s")
		b.ReportMetric(pps, "pushes/s")
		b.ReportMetric(bps, "bare_pushes/s")
		b.ReportMetric(pps/bps, "ratio")
		b.ReportMetric(float64(hwm)/1e6, "disp_hwm_MB")
		b.ReportMetric(float64(peakRSS)/1e6, "disp_peak_rss_MB")
		b.ReportMetric(float64(peakHeap)/1e6, "disp_peak_heap_MB")
		b.ReportMetric(dispCPU.Seconds(), "disp_cpu_s")
		b.ReportMetric(redisCPU, "redis_cpu_s")
		b.ReportMetric((dispCPU+emuCPU).Seconds()*1e6/fn+redisCPU*1e6/fn, "cpu_µs/push")
		b.ReportMetric(bareCPU.Seconds()*1e6/fn, "bare_cpu_µs/push")
		b.ReportMetric(float64(memSeeded-mem0)/fn, "redis_B/device")
		b.ReportMetric(float64(peakRedis-mem1)/fn, "redis_fanout_peak_B/device")
		b.ReportMetric(float64(mem2-mem1)/fn, "redis_after_B/device")
		b.ReportMetric(load0, "load1_start")
		b.ReportMetric(load1, "load1_end")

		mb := func(v int64) string { return strconv.FormatFloat(float64(v)/1e6, 'f', 0, 64) }
		b.Logf("dispatcher RSS: idle %s MB, after warm-up %s MB, VmHWM %s MB; Redis used_memory before %s MB, seeded %s MB, fan-out peak %s MB, after %s MB",
			mb(idle.RSS), mb(warmed.RSS), mb(hwm), mb(mem0), mb(mem1), mb(peakRedis), mb(mem2))
		b.Logf("curve (t s, pushes at emulator, dispatcher RSS MB, Go heap in use MB, Redis used MB):")
		for _, sp := range thin(samples, 24) {
			b.Logf("  %6.1f %9d %6s %6s %7s", sp.At.Seconds(), sp.Pushes, mb(sp.RSS), mb(sp.Heap), mb(sp.RedisUsed))
		}
		b.Logf("row: | %d | %.1f–%.1f | %.1f | %.1f | %.0f | %.0f | %.2f | %s | %.1f | %.1f | %.0f / %.0f / %.0f |",
			n, load0, load1, seed.Seconds(), fanout.Seconds(), pps, bps, pps/bps, mb(hwm), dispCPU.Seconds(), redisCPU,
			float64(mem1)/fn, float64(peakRedis)/fn, float64(mem2)/fn)
		b.Logf("planning done after %.1f s; Redis memory then, per partitioned family:", planned.Seconds())
		for _, f := range atPlanned {
			b.Logf("  %-28s %6d keys %9.1f MB %7.1f B/device", f.name, f.keys, float64(f.bytes)/1e6, float64(f.bytes)/fn)
		}
		b.Logf("Redis memory after the sync by key family (MEMORY USAGE; the registry's dev, tok and sub keys left out):")
		for _, f := range s.keyFamilies(b) {
			b.Logf("  %-28s %6d keys %9.1f MB %7.1f B/device", f.name, f.keys, float64(f.bytes)/1e6, float64(f.bytes)/fn)
		}
		if path := os.Getenv("NUDGE_BENCH_CURVE"); path != "" {
			writeCurve(b, path, samples)
		}
	}
}

// family is the memory of the keys of one family.
type family struct {
	name        string
	keys, bytes int64
}

// keyFamilies scans every key and sums MEMORY USAGE (SAMPLES 0) by
// family (the key with its hash tag and trailing ids blanked), leaving out
// the registry's device hashes, token index and subscription bitmaps,
// which the fleet needs anyway.
func (s *stack) keyFamilies(b *testing.B) []family {
	b.Helper()
	ctx := b.Context()
	byName := map[string]*family{}
	var names []string
	iter := s.rdb.Scan(ctx, 0, "", 10000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if strings.HasPrefix(k, "dev:") || strings.HasPrefix(k, "tok:") || strings.HasPrefix(k, "sub:") {
			continue
		}
		name := k
		if i, j := strings.IndexByte(name, '{'), strings.IndexByte(name, '}'); i >= 0 && j > i {
			name = name[:i+1] + "*" + name[j:]
		}
		if i := strings.Index(name, ":hb:"); i >= 0 { // a replica's heartbeat
			name = name[:i+4] + "*"
		} else if i := strings.LastIndexByte(name, ':'); i >= 0 && strings.Trim(name[i+1:], "0123456789") == "" {
			name = name[:i+1] + "N"
		}
		used, err := s.rdb.MemoryUsage(ctx, k, 0).Result()
		if err != nil {
			b.Fatalf("memory usage %s: %v", k, err)
		}
		f := byName[name]
		if f == nil {
			f = &family{name: name}
			byName[name] = f
			names = append(names, name)
		}
		f.keys++
		f.bytes += used
	}
	if err := iter.Err(); err != nil {
		b.Fatalf("scan: %v", err)
	}
	out := make([]family, 0, len(names))
	for _, n := range names {
		out = append(out, *byName[n])
	}
	slices.SortFunc(out, func(a, b family) int { return cmp.Compare(b.bytes, a.bytes) })
	return out
}

// partitionMemory sums MEMORY USAGE (SAMPLES 0: every element counted)
// of the per-partition keys a fan-out fills (throttle state, due sets, the
// push streams, their retry sets and done records), in one pipeline: a few
// hundred commands, cheap enough to take mid-run.
func (s *stack) partitionMemory(b *testing.B) []family {
	b.Helper()
	ctx := b.Context()
	fams := []struct {
		name string
		key  func(int) string
	}{
		{"thr:{*}", keys.Throttle},
		{"due:{*}", keys.Due},
		{"q:push:{*}", func(p int) string { return keys.Stream(keys.PushQueue, p) }},
		{"q:push:{*}:retry", func(p int) string { return keys.Retry(keys.PushQueue, p) }},
		{"q:push:{*}:sent", func(p int) string { return keys.Done(keys.PushQueue, p) }},
	}
	pipe := s.rdb.Pipeline()
	cmds := make([][]*redis.IntCmd, len(fams))
	for i, f := range fams {
		for p := range keys.Partitions {
			cmds[i] = append(cmds[i], pipe.MemoryUsage(ctx, f.key(p), 0))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		b.Fatalf("memory usage of the partitions: %v", err)
	}
	out := make([]family, len(fams))
	for i, f := range fams {
		out[i].name = f.name
		for _, c := range cmds[i] {
			if v, err := c.Result(); err == nil {
				out[i].keys++
				out[i].bytes += v
			}
		}
	}
	return out
}

// checkSample is the devices whose last push the benchmark checks: the
// first, the last, and about a thousand spread over the fleet.
func checkSample(n uint64) []uint64 {
	out := []uint64{1, n}
	step := max(n/1000, 1)
	for id := uint64(1) + step/2; id <= n; id += step {
		out = append(out, id)
	}
	return out
}

// thin returns at most k samples spread evenly over ss, with the first and
// the last.
func thin(ss []sample, k int) []sample {
	if len(ss) <= k {
		return ss
	}
	out := make([]sample, 0, k)
	for i := range k {
		out = append(out, ss[i*(len(ss)-1)/(k-1)])
	}
	return out
}

// writeCurve writes every sample as CSV to path.
func writeCurve(b *testing.B, path string, ss []sample) {
	b.Helper()
	var buf bytes.Buffer
	buf.WriteString("t_s,pushes,dispatcher_rss_bytes,dispatcher_heap_inuse_bytes,redis_used_memory_bytes\n")
	for _, sp := range ss {
		fmt.Fprintf(&buf, "%.3f,%d,%d,%d,%d\n", sp.At.Seconds(), sp.Pushes, sp.RSS, sp.Heap, sp.RedisUsed)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		b.Fatalf("write curve: %v", err)
	}
}
