package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudge-dev/nudge/internal/service"
)

// TestAccessLogLevels checks that at the default level (info) only server
// errors and slow requests are logged, at WARN and INFO, and that at debug
// every request is. The slow request advances an injected clock by 1.5s
// instead of sleeping.
func TestAccessLogLevels(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		level slog.Level
		want  map[string]string // path → level of its access line
	}{
		{level: slog.LevelInfo, want: map[string]string{"/fail": "WARN", "/slow": "INFO"}},
		{level: slog.LevelDebug, want: map[string]string{"/ok": "DEBUG", "/missing": "DEBUG", "/fail": "WARN", "/slow": "INFO"}},
	} {
		t.Run(tc.level.String(), func(t *testing.T) {
			t.Parallel()
			var (
				mu  sync.Mutex
				now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }

			var logs bytes.Buffer
			m, err := newMetrics(service.Archetype{Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			s := &Server{log: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: tc.level})),
				metrics: m, clock: clock}
			r := chi.NewRouter()
			r.Use(s.observe)
			r.Get("/ok", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
			r.Get("/fail", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
			r.Get("/slow", func(w http.ResponseWriter, _ *http.Request) {
				advance(1500 * time.Millisecond)
				w.WriteHeader(http.StatusOK)
			})
			r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
			for _, p := range []string{"/ok", "/missing", "/fail", "/slow", "/healthz"} {
				r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(t.Context(), "GET", p, nil))
			}

			got := map[string]string{}
			sc := bufio.NewScanner(&logs)
			for sc.Scan() {
				var line struct {
					Level, Msg, Path string
					DurationMS       float64 `json:"duration_ms"`
				}
				if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
					t.Fatalf("log line %q: %v", sc.Text(), err)
				}
				if line.Msg != "http request" {
					continue
				}
				if _, dup := got[line.Path]; dup {
					t.Errorf("%s logged twice", line.Path)
				}
				got[line.Path] = line.Level
				if line.Path == "/slow" && line.DurationMS != 1500 {
					t.Errorf("/slow duration_ms %v, want 1500 (the injected clock)", line.DurationMS)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("access lines for %v, want %v", got, tc.want)
			}
			for p, lvl := range tc.want {
				if got[p] != lvl {
					t.Errorf("%s logged at %q, want %q (all: %v)", p, got[p], lvl, got)
				}
			}
		})
	}
}
