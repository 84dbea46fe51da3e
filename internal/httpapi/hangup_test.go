package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/httpapi"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

// enteredRedis is a go-redis hook that reports, once armed, each command
// just before it goes to the server.
type enteredRedis struct {
	mu    sync.Mutex
	armed chan struct{} // closed (once) at the first command after arming
}

func (h *enteredRedis) arm() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed = make(chan struct{})
	return h.armed
}

func (h *enteredRedis) fire() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.armed != nil {
		close(h.armed)
		h.armed = nil
	}
}

func (h *enteredRedis) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *enteredRedis) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.fire()
		return next(ctx, cmd)
	}
}

func (h *enteredRedis) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.fire()
		return next(ctx, cmds)
	}
}

// TestClientHangUpIs499AtDebug: a real HTTP client asks for a feed's items
// while Redis is SIGSTOPped, and hangs up once the handler is waiting on
// Redis. The request is logged as a 499 at DEBUG, and nothing at ERROR or
// WARN. A request that our own deadline ends, with the client still there,
// is a 503 at ERROR. (TestHungUpClientIs499WhateverTheError covers a
// handler whose error does not say the client went.)
func TestClientHangUpIs499AtDebug(t *testing.T) {
	t.Parallel()
	srv := redistest.StartServer(t)
	logs := &httpapi.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rdb, err := config.OpenRedis(t.Context(), service.Archetype{Logger: slog.New(slog.DiscardHandler)}, srv.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	hook := &enteredRedis{}
	rdb.Client.AddHook(hook)
	st, err := httpapi.OpenStores(context.Background(), service.Archetype{Logger: log}, rdb.Client, 0, apps.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Catalog.Put(t.Context(), catalog.Feed{ID: "world", Title: "World", URL: "https://example.com/world.xml"}); err != nil {
		t.Fatal(err)
	}
	ks, _ := auth.ParseKeys(strings.NewReader(""), "keys.txt")
	pr := prometheus.NewRegistry()
	api, err := httpapi.NewServer(service.Archetype{Logger: log, Registerer: pr}, st.Wire(httpapi.Deps{Redis: rdb.Client, Keys: ks, Gatherer: pr, Apps: openApps(t, rdb.Client)}),
		httpapi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// served is closed when the server has finished the request (its
	// access line is written by then).
	var served chan struct{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(served)
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)

	pid := redisPid(t, srv.Addr)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })

	for _, tc := range []struct {
		name    string
		hangUp  bool
		status  int
		level   string
		errLine bool // a "request failed" line at ERROR
	}{
		{name: "client hangs up", hangUp: true, status: 499, level: "DEBUG"},
		{name: "our deadline", hangUp: false, status: http.StatusServiceUnavailable, level: "WARN", errLine: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			served = make(chan struct{})
			inRedis := hook.arm()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/v1/feeds/world/items", nil)
			answered := make(chan error, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					if resp.StatusCode != tc.status {
						err = errors.New("status " + resp.Status)
					}
					resp.Body.Close()
				}
				answered <- err
			}()
			<-inRedis // the handler is on its way into the stalled Redis
			if tc.hangUp {
				cancel()
				if err := <-answered; !errors.Is(err, context.Canceled) {
					t.Fatalf("client: got %v, want context.Canceled", err)
				}
			} else if err := <-answered; err != nil {
				t.Fatalf("client: %v, want %d", err, tc.status)
			}
			<-served

			var access, failed int
			sc := bufio.NewScanner(strings.NewReader(logs.String()))
			for sc.Scan() {
				var line struct {
					Level, Msg string
					Status     int
				}
				if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
					t.Fatalf("log line %q: %v", sc.Text(), err)
				}
				switch {
				case line.Msg == "http request":
					access++
					if line.Status != tc.status || line.Level != tc.level {
						t.Errorf("access line: status %d at %s, want %d at %s", line.Status, line.Level, tc.status, tc.level)
					}
				case line.Level == "ERROR":
					failed++
					if !tc.errLine {
						t.Errorf("logged at ERROR: %s", sc.Text())
					}
				}
			}
			if access != 1 {
				t.Errorf("%d access lines, want 1:\n%s", access, logs.String())
			}
			if tc.errLine && failed == 0 {
				t.Errorf("no ERROR line for a 503:\n%s", logs.String())
			}
		})
	}
}
