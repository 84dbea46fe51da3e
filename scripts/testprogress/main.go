// Command testprogress runs `go test -json` with its arguments and prints
// one line per package as it finishes, in go test's own format ("ok",
// "FAIL", "?"), with the output of each failed test, then a closing count
// of tests:
//
//	tests: 1234 passed, 0 failed, 12 skipped
//
// Its exit status is non-zero when go test's is or when any test failed.
// `make test` runs it so that a long race-detector run is not silent.
//
// Usage:
//
//	testprogress [go test flags] [packages]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	// Ctrl-C reaches go test too (same process group); keep reading until
	// it has printed what it has and exited.
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	os.Exit(run(context.Background(), "", os.Args[1:], os.Stdout, os.Stderr))
}

// run runs go test -json with args in dir (empty: the current one),
// reports to stdout and returns the exit status.
func run(ctx context.Context, dir string, args []string, stdout, stderr io.Writer) int {
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", append([]string{"test", "-json"}, args...)...)
	cmd.Dir = dir
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(stderr, "testprogress:", err)
		return 2
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "testprogress: start go test:", err)
		return 2
	}
	r := newReport(stdout)
	if err := r.read(out); err != nil {
		fmt.Fprintln(stderr, "testprogress: read go test output:", err)
	}
	code := 0
	if err := cmd.Wait(); err != nil {
		code = 1
		if ee, ok := errors.AsType[*exec.ExitError](err); ok && ee.ExitCode() > 0 {
			code = ee.ExitCode()
		}
	}
	return r.finish(code, time.Since(start))
}

// event is one line of go test -json (cmd/test2json), with the build
// events go test adds.
type event struct {
	Action      string
	Package     string
	Test        string
	Elapsed     float64
	Output      string
	ImportPath  string // build-output and build-fail
	FailedBuild string // set on a package's fail when its build failed
}

// pkgState collects one package's output until it finishes.
type pkgState struct {
	output []string            // package-level output
	tests  map[string][]string // output by test
	failed []string            // failed tests, in order
}

// report turns a go test -json stream into the progress lines.
type report struct {
	w        io.Writer
	pkgs     map[string]*pkgState
	builds   map[string][]string // build output by import path
	passed   int
	failed   int
	skipped  int
	pkgOK    int
	pkgFail  int
	pkgNone  int
	failures []string // packages that failed
}

func newReport(w io.Writer) *report {
	return &report{w: w, pkgs: map[string]*pkgState{}, builds: map[string][]string{}}
}

func (r *report) pkg(name string) *pkgState {
	p, ok := r.pkgs[name]
	if !ok {
		p = &pkgState{tests: map[string][]string{}}
		r.pkgs[name] = p
	}
	return p
}

// read consumes the stream. Lines that are not JSON events (go test
// prints some, for example when it cannot load a package) pass through.
func (r *report) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintln(r.w, string(line))
			continue
		}
		r.event(e)
	}
	return sc.Err()
}

func (r *report) event(e event) {
	switch e.Action {
	case "build-output":
		r.builds[e.ImportPath] = append(r.builds[e.ImportPath], e.Output)
		return
	case "build-fail":
		return // printed with the package's fail
	}
	if e.Package == "" {
		return
	}
	p := r.pkg(e.Package)
	if e.Test != "" {
		switch e.Action {
		case "output":
			p.tests[e.Test] = append(p.tests[e.Test], e.Output)
		case "pass":
			r.passed++
			delete(p.tests, e.Test)
		case "skip":
			r.skipped++
			delete(p.tests, e.Test)
		case "fail":
			r.failed++
			p.failed = append(p.failed, e.Test)
		}
		return
	}
	switch e.Action {
	case "output":
		p.output = append(p.output, e.Output)
	case "pass":
		r.pkgOK++
		fmt.Fprintf(r.w, "ok  \t%s\t%s%s\n", e.Package, took(e.Elapsed, p.output), noTests(p.output))
		delete(r.pkgs, e.Package)
	case "skip":
		r.pkgNone++
		fmt.Fprintf(r.w, "?   \t%s\t[no test files]\n", e.Package)
		delete(r.pkgs, e.Package)
	case "fail":
		r.pkgFail++
		r.failures = append(r.failures, e.Package)
		if e.FailedBuild != "" {
			for _, l := range r.builds[e.FailedBuild] {
				io.WriteString(r.w, l)
			}
		}
		for _, t := range p.failed {
			for _, l := range p.tests[t] {
				io.WriteString(r.w, l)
			}
		}
		for _, l := range p.output {
			if !summaryLine(l) {
				io.WriteString(r.w, l)
			}
		}
		if e.FailedBuild != "" {
			fmt.Fprintf(r.w, "FAIL\t%s [build failed]\n", e.Package)
		} else {
			fmt.Fprintf(r.w, "FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
		}
		delete(r.pkgs, e.Package)
	}
}

// took is how go test shows a passed package's time: "(cached)" when the
// result came from the test cache, else the seconds.
func took(elapsed float64, output []string) string {
	for _, l := range output {
		if strings.HasPrefix(l, "ok  \t") && strings.Contains(l, "(cached)") {
			return "(cached)"
		}
	}
	return fmt.Sprintf("%.3fs", elapsed)
}

// noTests is go test's note for a package whose tests matched nothing.
func noTests(output []string) string {
	for _, l := range output {
		if strings.Contains(l, "[no tests to run]") {
			return " [no tests to run]"
		}
	}
	return ""
}

// summaryLine reports whether l is one of go test's closing lines for a
// package, which the report prints itself.
func summaryLine(l string) bool {
	l = strings.TrimRight(l, "\n")
	return l == "PASS" || l == "FAIL" || strings.HasPrefix(l, "ok  \t") || strings.HasPrefix(l, "FAIL\t")
}

// finish prints the closing lines and returns the exit status: code (go
// test's), or 1 when a test or package failed although go test said 0.
func (r *report) finish(code int, took time.Duration) int {
	if r.failed > 0 || r.pkgFail > 0 {
		if code == 0 {
			code = 1
		}
		fmt.Fprintf(r.w, "failed packages: %s\n", strings.Join(r.failures, " "))
		fmt.Fprintln(r.w, "FAIL")
	} else if code != 0 {
		fmt.Fprintf(r.w, "go test exited with status %d\n", code)
		fmt.Fprintln(r.w, "FAIL")
	}
	fmt.Fprintf(r.w, "packages: %d ok, %d failed, %d without tests, in %s\n",
		r.pkgOK, r.pkgFail, r.pkgNone, took.Round(time.Second))
	fmt.Fprintf(r.w, "tests: %d passed, %d failed, %d skipped\n", r.passed, r.failed, r.skipped)
	return code
}
