package httpapi_test

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/await"
)

// replaceFile writes content to path the way secret mounts and config
// tools do: a new file renamed over the old one.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// keyStatus is the status of an editor route called with key.
func keyStatus(t *testing.T, base, key string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/v1/console/overview", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("overview: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// untilStatus polls key's status until it is want and returns how long
// that took, failing after limit.
func untilStatus(t *testing.T, base, key string, want int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	await.Within(t, limit, fmt.Sprintf("the key to answer %d", want), func() bool { return keyStatus(t, base, key) == want })
	return time.Since(start)
}

func mint(t *testing.T, name string, role auth.Role) auth.Minted {
	t.Helper()
	m, err := auth.Mint(name, role)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRemovedKeyFailsWithin5s runs the api with the default reload
// interval, removes a key from the file, and measures until the key
// answers 401: at most 5s (the documented promise). The remaining key
// keeps working, and a broken file keeps the previous keys.
func TestRemovedKeyFailsWithin5s(t *testing.T) {
	t.Parallel()
	admin, editor := mint(t, "ops", auth.RoleAdmin), mint(t, "desk", auth.RoleEditor)
	file := t.TempDir() + "/keys.txt"
	replaceFile(t, file, admin.Line+"\n"+editor.Line+"\n")
	base, out, _ := start(t, map[string]string{"NUDGE_API_KEYS_FILE": file})
	if c := keyStatus(t, base, editor.Key); c != 200 {
		t.Fatalf("editor key before removal: %d, want 200", c)
	}

	replaceFile(t, file, admin.Line+"\n")
	took := untilStatus(t, base, editor.Key, http.StatusUnauthorized, 5*time.Second)
	t.Logf("removed key refused after %v", took.Round(time.Millisecond))
	if c := keyStatus(t, base, admin.Key); c != 200 {
		t.Fatalf("remaining key after reload: %d, want 200", c)
	}

	// A half-written file is not loaded: the admin key keeps working.
	replaceFile(t, file, admin.Line+"\nbroken line\n")
	waitLog(t, out, "api keys file not reloaded")
	if c := keyStatus(t, base, admin.Key); c != 200 {
		t.Fatalf("admin key after a broken file: %d, want 200 (previous keys stay)", c)
	}
}

// TestSIGHUPReloadsKeysAndKeepsServing sends a real SIGHUP to the process
// while the api runs, with the periodic reload set to an hour so only the
// signal can load the new key: the api keeps serving and the key added to
// the file works.
func TestSIGHUPReloadsKeysAndKeepsServing(t *testing.T) {
	t.Parallel()
	admin, added := mint(t, "ops", auth.RoleAdmin), mint(t, "late", auth.RoleEditor)
	file := t.TempDir() + "/keys.txt"
	replaceFile(t, file, admin.Line+"\n")
	base, out, stop := start(t, map[string]string{"NUDGE_API_KEYS_FILE": file, "NUDGE_API_KEYS_RELOAD": "1h"})
	replaceFile(t, file, admin.Line+"\n"+added.Line+"\n")
	if c := keyStatus(t, base, added.Key); c != http.StatusUnauthorized {
		t.Fatalf("added key before SIGHUP: %d, want 401 (no periodic reload within 1h)", c)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	untilStatus(t, base, added.Key, http.StatusOK, 5*time.Second)
	waitLog(t, out, `"trigger":"signal"`)
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("healthz after SIGHUP: %v", err)
	}
	resp.Body.Close()
	if err := stop(); err != nil {
		t.Fatalf("run after SIGHUP and cancel: %v, want a clean stop", err)
	}
}

// waitLog polls the api's log until it contains want or 5s pass.
func waitLog(t *testing.T, out interface{ String() string }, want string) {
	t.Helper()
	await.Poll{Timeout: 5 * time.Second}.Check(t, fmt.Sprintf("%q in the log", want), func() error {
		if s := out.String(); !strings.Contains(s, want) {
			return fmt.Errorf("log:\n%s", s)
		}
		return nil
	})
}
