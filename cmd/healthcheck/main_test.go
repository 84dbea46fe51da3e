package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte(`{"status":"ok"}`))
		default:
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	closed := func() string { // a port nothing listens on
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()

	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // "" for success
	}{
		{"explicit url ok", []string{srv.URL + "/healthz"}, nil, ""},
		{"explicit url 503", []string{srv.URL + "/readyz"}, nil, "status 503"},
		{"port from NUDGE_HTTP_ADDR", nil, map[string]string{"NUDGE_HTTP_ADDR": ":" + port}, ""},
		{"nothing listening", []string{"http://" + closed + "/healthz"}, nil, "connect"},
		{"addr without port", nil, map[string]string{"NUDGE_HTTP_ADDR": "localhost"}, "NUDGE_HTTP_ADDR"},
		{"two args", []string{"a", "b"}, nil, "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := run(t.Context(), tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("run: got %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("run: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestTargetDefault(t *testing.T) {
	t.Parallel()
	got, err := target(nil, func(string) string { return "" })
	if want := "http://127.0.0.1:8080/healthz"; got != want || err != nil {
		t.Fatalf("target: got %q, %v, want %q", got, err, want)
	}
}

// TestHelp checks that -help prints what healthcheck is instead of
// fetching "-help" as a URL.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"-h", "-help", "--help"} {
		var out strings.Builder
		if err := run(t.Context(), []string{arg}, func(string) string { return "" }, &out); err != nil {
			t.Fatalf("healthcheck %s: %v", arg, err)
		}
		if !strings.HasPrefix(out.String(), "healthcheck GETs one URL") || !strings.Contains(out.String(), "NUDGE_HTTP_ADDR") {
			t.Errorf("healthcheck %s printed:\n%s", arg, out.String())
		}
	}
}
