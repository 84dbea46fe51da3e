package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeModule writes a throwaway module with the given files (path →
// content) and returns its directory.
func writeModule(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	files["go.mod"] = "module example.test/m\n\ngo 1.26\n"
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// lastLine is the output's closing line.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestRunRealGoTest runs the real go test on small modules: one where a
// test fails and a package does not build (the faults), one where all
// pass. It checks the per-package lines, the failed test's output, the
// closing count and the exit status.
func TestRunRealGoTest(t *testing.T) {
	// Not parallel: the go commands it runs must not inherit a GOFLAGS such
	// as CI's -count=1, which would turn off the cache the "cached" case
	// relies on.
	t.Setenv("GOFLAGS", "")
	broken := writeModule(t, map[string]string{
		"good/good.go":      "package good\n",
		"good/good_test.go": "package good\nimport \"testing\"\nfunc TestA(t *testing.T) {}\nfunc TestB(t *testing.T) { t.Run(\"sub\", func(t *testing.T) {}) }\nfunc TestC(t *testing.T) { t.Skip(\"not here\") }\n",
		"bad/bad.go":        "package bad\n",
		"bad/bad_test.go":   "package bad\nimport \"testing\"\nfunc TestOK(t *testing.T) {}\nfunc TestBroken(t *testing.T) { t.Fatal(\"the injected failure\") }\n",
		"nobuild/x.go":      "package nobuild\nfunc f() int { return \"not an int\" }\n",
		"nobuild/x_test.go": "package nobuild\nimport \"testing\"\nfunc TestX(t *testing.T) {}\n",
		"notests/n.go":      "package notests\n",
	})
	passing := writeModule(t, map[string]string{
		"good/good.go":      "package good\n",
		"good/good_test.go": "package good\nimport \"testing\"\nfunc TestA(t *testing.T) {}\n",
	})
	// cached has run once already, so go test answers from its cache.
	cached := writeModule(t, map[string]string{
		"good/good.go":      "package good\n",
		"good/good_test.go": "package good\nimport \"testing\"\nfunc TestCached(t *testing.T) {}\n",
	})
	if code := run(t.Context(), cached, []string{"./..."}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("first run of the cached module: exit status %d", code)
	}
	for _, tc := range []struct {
		name     string
		dir      string
		args     []string // default -count=1 ./...
		wantCode bool     // non-zero
		want     []string
		last     string
	}{
		{
			name: "failures", dir: broken, wantCode: true,
			want: []string{
				"ok  \texample.test/m/good\t",
				"?   \texample.test/m/notests\t[no test files]",
				"the injected failure",
				"--- FAIL: TestBroken",
				"FAIL\texample.test/m/bad\t",
				"FAIL\texample.test/m/nobuild [build failed]",
				"cannot use \"not an int\"",
				"packages: 1 ok, 2 failed, 1 without tests",
			},
			last: "tests: 4 passed, 1 failed, 1 skipped", // TestA, TestB, TestB/sub, TestOK
		},
		{
			name: "all pass", dir: passing,
			want: []string{"ok  \texample.test/m/good\t", "packages: 1 ok, 0 failed, 0 without tests"},
			last: "tests: 1 passed, 0 failed, 0 skipped",
		},
		{
			name: "cached", dir: cached, args: []string{"./..."},
			want: []string{"ok  \texample.test/m/good\t(cached)\n"},
			last: "tests: 1 passed, 0 failed, 0 skipped", // the cache replays the events
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			args := tc.args
			if args == nil {
				args = []string{"-count=1", "./..."}
			}
			code := run(t.Context(), tc.dir, args, &out, &errb)
			if (code != 0) != tc.wantCode {
				t.Errorf("exit status %d, want non-zero %v\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, out.String(), errb.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if got := lastLine(out.String()); got != tc.last {
				t.Errorf("last line %q, want %q", got, tc.last)
			}
			if strings.Contains(out.String(), "TestOK") {
				t.Errorf("a passing test's output was printed:\n%s", out.String())
			}
		})
	}
}
