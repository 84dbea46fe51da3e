package httpapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/stacktest"

	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/httpapi"
	"github.com/nudge-dev/nudge/internal/redistest"
)

// start runs the api and waits until /healthz answers.
func start(t *testing.T, env map[string]string) (base string, out *stacktest.Buffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	out = &stacktest.Buffer{}
	logs := config.NewReadyWriter(out, config.ReadyAPI)
	done := make(chan error, 1)
	go func() {
		done <- httpapi.Run(ctx, []string{"-http-addr", "127.0.0.1:0"}, func(k string) string { return env[k] }, logs, io.Discard)
	}()
	select {
	case addr := <-logs.Ready():
		base = "http://" + addr
	case err := <-done:
		cancel()
		t.Fatalf("run returned early: %v\n%s", err, out.String())
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatalf("api did not start within 20s\n%s", out.String())
	}
	t.Cleanup(cancel)
	await.Poll{Timeout: 10 * time.Second}.Check(t, "healthz to answer 200", func() error {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(20 * time.Second):
				runErr = errors.New("run did not return within 20s of cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return base, out, stop
}

const regBody = `{"provider":"apns","token":"a3f5c0e1d2b4968778695a4b3c2d1e0fa3f5c0e1d2b4968778695a4b3c2d1e0f","platform":"ios","feeds":["world"]}`

func TestRunEmbeddedServesAndDrains(t *testing.T) {
	t.Parallel()
	base, out, stop := start(t, map[string]string{"NUDGE_FEEDS_FILE": "../../examples/feeds.yaml"})
	resp, err := http.Post(base+"/v1/devices", "application/json", strings.NewReader(regBody))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("register: got %d, want 201", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatalf("run after cancel: got %v, want nil (clean drain)", err)
	}
	logs := out.String()
	for _, want := range []string{`"level":"WARN"`, "embedded in-memory Redis", "shutting down", `"msg":"stopped"`} {
		if !strings.Contains(logs, want) {
			t.Fatalf("logs lack %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "a3f5c0e1d2b4968778695a4b3c2d1e0f") {
		t.Fatalf("a raw token reached the logs")
	}
}

func TestRunOnRealRedisWithKeys(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	m, err := auth.Mint("ops", auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	keysFile := t.TempDir() + "/keys.txt"
	if err := writeFile(keysFile, m.Line+"\n"); err != nil {
		t.Fatal(err)
	}
	base, _, _ := start(t, map[string]string{"NUDGE_REDIS_URL": srv.URL(), "NUDGE_API_KEYS_FILE": keysFile})
	req, _ := http.NewRequest("PUT", base+"/v1/admin/feeds/world", strings.NewReader(`{"title":"World","url":"https://e.com/w"}`))
	req.Header.Set("Authorization", "Bearer "+m.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("put feed: got %d, want 201", resp.StatusCode)
	}
	if n, err := srv.Client(t).HLen(t.Context(), "feeds").Result(); err != nil || n != 1 {
		t.Fatalf("feeds in the real redis: got %d %v, want 1", n, err)
	}
	resp, err = http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz: got %d, want 200", resp.StatusCode)
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badKeys := dir + "/keys.txt"
	if err := writeFile(badKeys, "# ok\nalice superuser abc\n"); err != nil {
		t.Fatal(err)
	}
	badApps := dir + "/apps.yaml"
	if err := writeFile(badApps, "apps:\n  - {id: news, name: News, apns: {cert_file: c.p12}}\n"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"bad duration", map[string]string{"NUDGE_SHUTDOWN_TIMEOUT": "soon"}, "NUDGE_SHUTDOWN_TIMEOUT"},
		{"bad rate limit", map[string]string{"NUDGE_REGISTER_RATE_LIMIT": "lots"}, "NUDGE_REGISTER_RATE_LIMIT"},
		{"bad redis url", map[string]string{"NUDGE_REDIS_URL": "mysql://x"}, "NUDGE_REDIS_URL"},
		{"bad keys file line", map[string]string{"NUDGE_API_KEYS_FILE": badKeys}, badKeys + ":2:"},
		{"missing keys file", map[string]string{"NUDGE_API_KEYS_FILE": dir + "/nope"}, "NUDGE_API_KEYS_FILE"},
		{"missing feeds file", map[string]string{"NUDGE_FEEDS_FILE": dir + "/nope"}, "NUDGE_FEEDS_FILE"},
		{"missing apps file", map[string]string{"NUDGE_APPS_FILE": dir + "/nope"}, "NUDGE_APPS_FILE"},
		{"bad apps file", map[string]string{"NUDGE_APPS_FILE": badApps}, `NUDGE_APPS_FILE: apps file ` + badApps + `: app "news": apns.topic`},
		{"bad log level", map[string]string{"NUDGE_LOG_LEVEL": "loud"}, "NUDGE_LOG_LEVEL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := httpapi.Run(t.Context(), nil, func(k string) string { return tt.env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

func TestMintKey(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := httpapi.Run(t.Context(), []string{"mint-key", "alice", "editor"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatalf("mint-key: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	fileLine := lines[len(lines)-1]
	var key string
	for _, l := range lines {
		if k, ok := strings.CutPrefix(strings.TrimSpace(l), "nk_"); ok {
			key = "nk_" + k
		}
	}
	ks, err := auth.ParseKeys(strings.NewReader(fileLine), "out")
	if err != nil {
		t.Fatalf("printed line does not parse: %v", err)
	}
	if k, ok := ks.Lookup(key); !ok || k.Name != "alice" || k.Role != auth.RoleEditor {
		t.Fatalf("printed key does not match the printed line: %+v %v", k, ok)
	}
	if err := httpapi.Run(t.Context(), []string{"mint-key", "alice"}, func(string) string { return "" }, &out, io.Discard); err == nil {
		t.Fatalf("mint-key without a role: got nil error")
	}
}

func TestSettingsAreUnique(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, s := range httpapi.Settings() {
		if s.Flag == "" || !strings.HasPrefix(s.Env, "NUDGE_") || s.Help == "" {
			t.Fatalf("incomplete setting %+v", s)
		}
		if seen[s.Flag] || seen[s.Env] {
			t.Fatalf("duplicate setting %+v", s)
		}
		seen[s.Flag], seen[s.Env] = true, true
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }

// TestRunMetricsOnlyOfWhatTheAPIRuns: the api's /metrics carries its own
// metrics (HTTP, Go runtime) and none of the parts it does not run: the
// planner's and the throttle's counters used to be there, always 0.
func TestRunMetricsOnlyOfWhatTheAPIRuns(t *testing.T) {
	t.Parallel()
	base, _, _ := start(t, nil)
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{"nudge_http_requests_total", "go_goroutines", "\nnudge_apps 1\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s:\n%.600s", want, text)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		for _, foreign := range []string{"nudge_fanout_", "nudge_throttle_", "nudge_queue_", "nudge_push_", "nudge_feed_"} {
			if strings.HasPrefix(strings.TrimPrefix(strings.TrimPrefix(line, "# HELP "), "# TYPE "), foreign) {
				t.Errorf("/metrics of the api shows a metric of a part it does not run: %s", line)
			}
		}
	}
}
