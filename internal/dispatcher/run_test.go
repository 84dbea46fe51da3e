package dispatcher_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/stacktest"

	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/dispatcher"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

// emulatorEnv starts the push emulator and returns its sender settings.
func emulatorEnv(t *testing.T) map[string]string {
	t.Helper()
	_, creds := pushemutest.Start(t, service.Archetype{}, pushemu.Config{})
	env := map[string]string{}
	for _, kv := range creds.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

func TestRunServesProbesAndMetricsThenDrains(t *testing.T) {
	t.Parallel()
	env := emulatorEnv(t)
	env["NUDGE_REDIS_URL"] = redistest.StartServer(t).URL()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &stacktest.Buffer{}
	logs := config.NewReadyWriter(out, config.ReadyDispatcher)
	done := make(chan error, 1)
	go func() {
		done <- dispatcher.Run(ctx, []string{"-http-addr", "127.0.0.1:0"}, func(k string) string { return env[k] }, logs, io.Discard)
	}()
	var base string
	select {
	case addr := <-logs.Ready():
		base = "http://" + addr
	case err := <-done:
		t.Fatalf("run returned early: %v\n%s", err, out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("dispatcher did not start within 30s\n%s", out.String())
	}
	for path, want := range map[string]string{
		"/healthz": `"ok"`,
		"/readyz":  `"ok"`,
		"/metrics": "nudge_throttle_due_devices",
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("GET %s: %d, body lacks %q:\n%.400s", path, resp.StatusCode, want, body)
		}
	}
	// Without an apps file, the single-app settings are the default app.
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "\nnudge_apps 1\n") || !strings.Contains(out.String(), `"msg":"app catalogue loaded","apps":"default"`) {
		t.Fatalf("the dispatcher's app catalogue is not the default app:\n%s", out.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dispatcher did not drain within 30s")
	}
	if !strings.Contains(out.String(), `"msg":"stopped"`) {
		t.Fatalf("no clean stop in the log:\n%s", out.String())
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string // the setting the error must name
	}{
		{"no provider", map[string]string{}, "NUDGE_FCM_CREDENTIALS_FILE"},
		{"bad duration", map[string]string{"NUDGE_DEBOUNCE": "soon"}, "NUDGE_DEBOUNCE"},
		{"negative number", map[string]string{"NUDGE_IOS_PUSH_LIMIT": "-1"}, "NUDGE_IOS_PUSH_LIMIT"},
		{"not a number", map[string]string{"NUDGE_PUSH_WORKERS": "many"}, "NUDGE_PUSH_WORKERS"},
		{"unresponsive after 0", map[string]string{"NUDGE_UNRESPONSIVE_AFTER": "0"}, "NUDGE_UNRESPONSIVE_AFTER"},
		{"probe cap below probe", map[string]string{"NUDGE_UNRESPONSIVE_PROBE": "2h", "NUDGE_UNRESPONSIVE_PROBE_MAX": "1h"}, "NUDGE_UNRESPONSIVE_PROBE_MAX"},
		{"fcm endpoint", map[string]string{"NUDGE_FCM_CREDENTIALS_FILE": "/nonexistent.json", "NUDGE_FCM_ENDPOINT": "https://fcm.example"}, "NUDGE_FCM_ENDPOINT"},
		{"missing password file", map[string]string{"NUDGE_APNS_CERT_PASSWORD_FILE": "/nonexistent"}, "NUDGE_APNS_CERT_PASSWORD_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.env["NUDGE_REDIS_URL"] = "redis://127.0.0.1:1" // never reached: config fails first
			err := dispatcher.Run(t.Context(), nil, func(k string) string { return tt.env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run: got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
