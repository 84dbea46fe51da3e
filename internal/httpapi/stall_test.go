package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/httpapi"
	"github.com/nudge-dev/nudge/internal/receipts"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stacktest"
	"github.com/prometheus/client_golang/prometheus"
)

// redisPid finds the pid of the private redis-server listening on addr,
// so the test can SIGSTOP and SIGCONT it.
func redisPid(t *testing.T, addr string) int {
	t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// redis-server rewrites its title to "redis-server 127.0.0.1:<port>".
		cmd := string(b)
		if strings.Contains(cmd, "redis-server") &&
			(strings.Contains(cmd, ":"+port+"\x00") || strings.HasSuffix(cmd, ":"+port) || strings.Contains(cmd, "--port\x00"+port+"\x00")) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	t.Fatalf("no redis-server process with --port %s", port)
	return 0
}

// call is one request of the stall test.
type call struct {
	name, method, path, bearer, body string
}

type answer struct {
	call
	code       int
	retryAfter string
	took       time.Duration
	err        error
}

func fire(client *http.Client, base string, c call) answer {
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, _ := http.NewRequest(c.method, base+c.path, body)
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	start := time.Now()
	resp, err := client.Do(req)
	a := answer{call: c, err: err}
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		a.code, a.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	}
	a.took = time.Since(start)
	return a
}

// TestRedisStallAndDeathAnswer503WithinDeadline opens Redis exactly as the
// api does (config.OpenRedis: production timeouts, context deadlines
// honoured), then SIGSTOPs the private redis-server while every device and
// public route is called several times at once: each answer is a 503 with
// Retry-After within the deadline (the 1s default) plus 100 ms, and
// /readyz answers 503 within its 1s budget plus 100 ms. After SIGCONT the
// same calls succeed again. Then the server is SIGKILLed: a dead Redis is
// a 503 as well, never a 500, and a restarted one is used again.
func TestRedisStallAndDeathAnswer503WithinDeadline(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	logs := &stacktest.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	rdb, err := config.OpenRedis(t.Context(), service.Archetype{Logger: log}, srv.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	pipe, err := httpapi.OpenStores(context.Background(), service.Archetype{Logger: log}, rdb.Client, 4, apps.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pipe.Catalog.Put(t.Context(), catalog.Feed{ID: "world", Title: "World", URL: "https://example.com/world.xml"}); err != nil {
		t.Fatal(err)
	}
	ks, _ := auth.ParseKeys(strings.NewReader(""), "keys.txt")
	pr := prometheus.NewRegistry()
	api, err := httpapi.NewServer(service.Archetype{Logger: log, Registerer: pr}, pipe.Wire(httpapi.Deps{Redis: rdb.Client, Keys: ks, Gatherer: pr, Apps: openApps(t, rdb.Client)}),
		httpapi.Config{RegisterRateLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(api)
	t.Cleanup(hs.Close)
	client := &http.Client{Timeout: 10 * time.Second}

	reg := fire(client, hs.URL, call{method: "POST", path: "/v1/devices", body: regBody})
	if reg.code != 201 {
		t.Fatalf("register: %d %v", reg.code, reg.err)
	}
	d := registerOne(t, client, hs.URL, strings.Replace(regBody, "a3f5", "b3f5", 1))
	dev := "/v1/devices/" + strconv.FormatUint(d.ID, 10)
	pushID, err := receipts.NewSigner(rdb.Client).Sign(t.Context(), d.ID, receipts.PushID("feed", time.Now().Add(-time.Minute), "c1"))
	if err != nil {
		t.Fatal(err)
	}
	receipt := fmt.Sprintf(`{"push_id":%q,"received_at":%q,"outcome":"synced"}`, pushID, time.Now().UTC().Format(time.RFC3339))
	calls := []call{
		{name: "register", method: "POST", path: "/v1/devices", body: strings.Replace(regBody, "a3f5", "c3f5", 1)},
		{name: "get device", method: "GET", path: dev, bearer: d.Secret},
		{name: "patch device", method: "PATCH", path: dev, bearer: d.Secret, body: `{"locale":"de-DE"}`},
		{name: "list feeds", method: "GET", path: "/v1/feeds"},
		{name: "items", method: "GET", path: "/v1/feeds/world/items"},
		{name: "receipt", method: "POST", path: dev + "/receipts", bearer: d.Secret, body: receipt},
		{name: "delete device", method: "DELETE", path: dev, bearer: d.Secret + "x"},
	}
	const deadline, slack = time.Second, 100 * time.Millisecond
	burst := func(t *testing.T, list []call) []answer {
		var mu sync.Mutex
		var out []answer
		var wg sync.WaitGroup
		for range 3 {
			for _, c := range list {
				wg.Go(func() {
					a := fire(client, hs.URL, c)
					mu.Lock()
					out = append(out, a)
					mu.Unlock()
				})
			}
		}
		wg.Wait()
		return out
	}
	check503 := func(t *testing.T, answers []answer) {
		t.Helper()
		var slowest time.Duration
		for _, a := range answers {
			slowest = max(slowest, a.took)
		}
		t.Logf("%d answers, slowest after %v", len(answers), slowest.Round(time.Millisecond))
		for _, a := range answers {
			if a.err != nil || a.code != http.StatusServiceUnavailable || a.retryAfter == "" || a.took > deadline+slack {
				t.Errorf("%s %s: %d Retry-After %q after %v (err %v); want 503 with Retry-After within %v",
					a.method, a.path, a.code, a.retryAfter, a.took.Round(time.Millisecond), a.err, deadline+slack)
			}
		}
	}

	pid := redisPid(t, srv.Addr)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	t.Cleanup(func() {
		if stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	check503(t, burst(t, append(calls, call{name: "readyz", method: "GET", path: "/readyz"})))
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false

	// Recovered: the same device answers again, and every route is served.
	waitFor200(t, client, hs.URL, call{method: "GET", path: dev, bearer: d.Secret})
	for _, a := range burst(t, calls[1:4]) {
		if a.code != http.StatusOK {
			t.Errorf("after SIGCONT: %s %s: %d, want 200", a.method, a.path, a.code)
		}
	}
	if a := fire(client, hs.URL, calls[5]); a.code != http.StatusNoContent {
		t.Errorf("after SIGCONT: receipt: %d, want 204", a.code)
	}

	// A dead Redis is a 503 too, quickly, and a restarted one is used again.
	srv.Kill()
	check503(t, burst(t, append(calls, call{name: "readyz", method: "GET", path: "/readyz"})))
	if strings.Contains(logs.String(), `"status":500`) {
		t.Errorf("a 500 was logged during the faults:\n%s", logs.String())
	}
	srv.Restart(t)
	waitFor200(t, client, hs.URL, call{method: "GET", path: "/readyz"})
}

func registerOne(t *testing.T, client *http.Client, base, body string) deviceJSON {
	t.Helper()
	resp, err := client.Post(base+"/v1/devices", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode != 201 {
		t.Fatalf("register: %d %s", resp.StatusCode, b.String())
	}
	return decode[deviceJSON](t, response{code: resp.StatusCode, body: b.Bytes()})
}

// waitFor200 polls c until it answers 200 or 10s pass.
func waitFor200(t *testing.T, client *http.Client, base string, c call) {
	t.Helper()
	await.Poll{Timeout: 10 * time.Second}.Check(t, c.method+" "+c.path+" to answer 200", func() error {
		if a := fire(client, base, c); a.code != http.StatusOK {
			return fmt.Errorf("last %d %v", a.code, a.err)
		}
		return nil
	})
}
