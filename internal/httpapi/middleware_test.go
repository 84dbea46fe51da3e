package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudge-dev/nudge/internal/service"
)

func TestPanicRecovery(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	m, err := newMetrics(service.Archetype{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{log: slog.New(slog.NewJSONHandler(&logs, nil)), metrics: m}
	r := chi.NewRouter()
	r.Use(s.observe)
	r.Get("/boom", func(http.ResponseWriter, *http.Request) { panic("kaboom") })
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), "GET", "/boom", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status: got %d, want 500", rec.Code)
	}
	var body errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code != "internal" {
		t.Fatalf("body: got %s (%v), want an internal error", rec.Body.String(), err)
	}
	if strings.Contains(rec.Body.String(), "kaboom") {
		t.Fatalf("the panic value leaked to the client")
	}
	if !strings.Contains(logs.String(), "kaboom") || !strings.Contains(logs.String(), `"request_id"`) {
		t.Fatalf("the panic was not logged with its request id: %s", logs.String())
	}
}
