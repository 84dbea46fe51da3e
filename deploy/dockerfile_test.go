package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/stacktest"
)

// dockerInstr is one Dockerfile instruction with its continuation lines
// joined.
type dockerInstr struct {
	Stage int // index of the FROM it belongs to
	Cmd   string
	Args  string
}

func parseDockerfile(t *testing.T, path string) (instrs []dockerInstr, stages []string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stages = append(stages, args)
		}
		instrs = append(instrs, dockerInstr{Stage: len(stages) - 1, Cmd: cmd, Args: strings.TrimSpace(args)})
	}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	return instrs, stages
}

// TestDockerfile checks deploy/Dockerfile without a Docker engine: a
// multi-stage build of static binaries from the cmd/ packages that exist,
// a distroless final stage running as a non-root user, COPY sources that
// exist and pass the .dockerignore, EXPOSE ports that match the binaries'
// default listen addresses, and a HEALTHCHECK that runs a binary the image
// has against a path the binaries serve.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	instrs, stages := parseDockerfile(t, "Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a build stage and a runtime stage", len(stages))
	}
	final := len(stages) - 1
	if base := strings.Fields(stages[final])[0]; !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		t.Errorf("final stage FROM %s, want distroless/static or scratch", base)
	}
	ignore, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var allowed []string
	for line := range strings.Lines(string(ignore)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "!"); ok {
			allowed = append(allowed, strings.TrimSuffix(p, "**"))
		}
	}

	var (
		user, cmd, healthcheck string
		exposed                []string
		built                  []string
	)
	buildRE := regexp.MustCompile(`go build .*?-o (\S+)((?: \./cmd/[a-z0-9-]+)+)`)
	for _, in := range instrs {
		switch in.Cmd {
		case "USER":
			if in.Stage == final {
				user = in.Args
			}
		case "CMD":
			if in.Stage == final {
				cmd = in.Args
			}
		case "HEALTHCHECK":
			healthcheck = in.Args
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.Args)...)
		case "RUN":
			if m := buildRE.FindStringSubmatch(in.Args); m != nil {
				if !strings.Contains(in.Args, "CGO_ENABLED=0") {
					t.Errorf("go build without CGO_ENABLED=0: %s", in.Args)
				}
				for _, pkg := range strings.Fields(m[2]) {
					src, err := os.ReadFile(filepath.Join(repoRoot, pkg, "main.go"))
					if err != nil || !strings.Contains(string(src), "package main") {
						t.Errorf("go build %s: no main package there (%v)", pkg, err)
					}
					built = append(built, filepath.Base(pkg))
				}
			}
		case "COPY":
			if strings.Contains(in.Args, "--from=") {
				continue
			}
			var fields []string
			for _, f := range strings.Fields(in.Args) {
				if !strings.HasPrefix(f, "--") {
					fields = append(fields, f)
				}
			}
			for _, src := range fields[:len(fields)-1] {
				if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
					t.Errorf("COPY %s: not in the repo: %v", src, err)
				}
				if !slices.ContainsFunc(allowed, func(a string) bool { return strings.HasPrefix(src, a) }) {
					t.Errorf("COPY %s: excluded by Dockerfile.dockerignore", src)
				}
			}
		}
	}
	for _, want := range []string{"api", "dispatcher", "pushemu", "healthcheck"} {
		if !slices.Contains(built, want) {
			t.Errorf("the image does not build %s (built: %v)", want, built)
		}
	}
	if user == "" || user == "root" || user == "0" || strings.HasPrefix(user, "0:") {
		t.Errorf("final stage USER %q, want a non-root user", user)
	}
	if m := regexp.MustCompile(`"(\w+)"`).FindStringSubmatch(cmd); m == nil || !slices.Contains(built, m[1]) {
		t.Errorf("CMD %s: want one of the built binaries", cmd)
	}

	// EXPOSE covers every default listen port of the binaries.
	want := []string{portOf(t, settingsOf(t, "api")["NUDGE_HTTP_ADDR"]), portOf(t, settingsOf(t, "dispatcher")["NUDGE_HTTP_ADDR"])}
	// pushemu exits 1 after printing its usage for -help.
	out, _ := exec.Command(stacktest.Binary(t, "pushemu"), "-help").CombinedOutput()
	for _, m := range regexp.MustCompile(`-[a-z-]+-addr string\n.*\(default "([^"]+)"\)`).FindAllStringSubmatch(string(out), -1) {
		want = append(want, portOf(t, m[1]))
	}
	if len(want) != 6 {
		t.Fatalf("found %d default ports (%v), want api, dispatcher and pushemu's four", len(want), want)
	}
	for _, p := range want {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE %v lacks port %s", exposed, p)
		}
	}

	// HEALTHCHECK runs the healthcheck binary, whose default is the api's
	// /healthz; both server binaries serve /healthz.
	if !strings.Contains(healthcheck, `CMD ["/usr/local/bin/healthcheck"]`) {
		t.Errorf("HEALTHCHECK %q, want CMD [\"/usr/local/bin/healthcheck\"]", healthcheck)
	}
	if !slices.ContainsFunc(instrs, func(in dockerInstr) bool {
		return in.Stage == final && in.Cmd == "COPY" && strings.Contains(in.Args, "/usr/local/bin/")
	}) {
		t.Errorf("the final stage does not copy the binaries to /usr/local/bin/")
	}
	for file, route := range map[string]string{
		"cmd/healthcheck/main.go":    `"/healthz"`,
		"internal/httpapi/routes.go": `"/healthz"`,
		"internal/dispatcher/run.go": `"GET /healthz"`,
	} {
		src, err := os.ReadFile(filepath.Join(repoRoot, file))
		if err != nil || !strings.Contains(string(src), route) {
			t.Errorf("%s does not have %s (%v)", file, route, err)
		}
	}
}
