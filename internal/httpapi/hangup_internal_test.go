package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudge-dev/nudge/internal/service"
)

// lockedBuffer is a log buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}

// LogBuffer is lockedBuffer for the external tests.
type LogBuffer = lockedBuffer

// TestHungUpClientIs499WhateverTheError: a handler works on a context
// detached from the request's cancellation (as the device registry settles
// subscription bits), so when the client hangs up its error is that
// context's own DeadlineExceeded, not context.Canceled. A real HTTP client
// hangs up mid-request; the request is still logged as a 499 at DEBUG and
// nothing at ERROR or WARN, where it used to be a 503 at ERROR.
func TestHungUpClientIs499WhateverTheError(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	m, err := newMetrics(service.Archetype{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{log: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), metrics: m}
	entered, served := make(chan struct{}), make(chan struct{})
	r := chi.NewRouter()
	r.Use(s.observe)
	r.With(deadline(10*time.Second)).Get("/detached", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		close(entered)
		<-r.Context().Done() // the client hangs up
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Millisecond)
		defer cancel()
		<-ctx.Done()
		return fmt.Errorf("settle bits: %w", ctx.Err())
	}))
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer close(served)
		r.ServeHTTP(w, req)
	}))
	t.Cleanup(hs.Close)

	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/detached", nil)
	answered := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		answered <- err
	}()
	<-entered
	cancel()
	if err := <-answered; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: got %v, want context.Canceled", err)
	}
	<-served

	var access int
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line struct {
			Level, Msg string
			Status     int
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if line.Level != "DEBUG" {
			t.Errorf("logged at %s, want only DEBUG: %s", line.Level, sc.Text())
		}
		if line.Msg == "http request" {
			access++
			if line.Status != statusClientClosed {
				t.Errorf("access line: status %d, want 499", line.Status)
			}
		}
	}
	if access != 1 {
		t.Errorf("%d access lines, want 1:\n%s", access, logs.String())
	}
}
