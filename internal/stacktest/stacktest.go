// Package stacktest runs nudge's binaries as real processes for end-to-end
// tests: it builds them once per test binary, starts them with an
// environment as an operator would, waits until they are healthy, and stops
// them (SIGTERM, then SIGKILL) when the test ends. A failing test gets each
// process's log.
package stacktest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Binary returns the path of a nudge binary ("api", "dispatcher",
// "pushemu", …), building all of cmd/ on first use. The binaries are built
// with the race detector when the test binary has it.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "nudge-bin-")
		if buildErr != nil {
			return
		}
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		args := []string{"build", "-o", buildDir + string(filepath.Separator)}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/...")...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/...: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatalf("build nudge binaries: %v", buildErr)
	}
	p := filepath.Join(buildDir, name)
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("binary %s: %v", name, err)
	}
	return p
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the nudge module")
	}
	return filepath.Dir(mod), nil
}

// Process is one running binary.
type Process struct {
	Name string
	cmd  *exec.Cmd
	out  *Buffer
	done chan struct{}
	err  error
}

// Buffer is a log sink safe for concurrent writes and reads: the output
// of a process, or of a Run called in-process.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs binary name with env (NAME=value entries, added to a minimal
// environment) and args. It is stopped at the end of the test, and its log
// is printed if the test failed.
func Start(tb testing.TB, name string, env []string, args ...string) *Process {
	tb.Helper()
	cmd := exec.Command(Binary(tb, name), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p := &Process{Name: name, cmd: cmd, out: &Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.Stop(10 * time.Second)
		if tb.Failed() {
			tb.Logf("---- log of %s (pid %d) ----\n%s", name, cmd.Process.Pid, p.Log())
		}
	})
	return p
}

// Log returns what the process wrote so far.
func (p *Process) Log() string { return p.out.String() }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended, and its exit error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it. It reports whether the process exited by itself, cleanly.
func (p *Process) Stop(grace time.Duration) bool {
	select {
	case <-p.done:
		return p.err == nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err == nil
	case <-time.After(grace):
		p.Kill()
		return false
	}
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// WaitHealthy polls url until it answers 200, and fails the test when the
// process exits first or the timeout passes.
func (p *Process) WaitHealthy(tb testing.TB, url string, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), timeout)
	defer cancel()
	await.Poll{Timeout: timeout, Interval: 25 * time.Millisecond}.Check(tb, p.Name+" healthy at "+url, func() error {
		if exited, err := p.Exited(); exited {
			tb.Fatalf("%s exited before it was healthy (%v):\n%s", p.Name, err, p.Log())
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			tb.Fatalf("health check of %s: %v", p.Name, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("%w; log:\n%s", err, p.Log())
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d; log:\n%s", resp.StatusCode, p.Log())
		}
		return nil
	})
}
