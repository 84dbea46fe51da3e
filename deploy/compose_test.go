package deploy_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/stacktest"
)

// composeFile is the part of a compose file the tests read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       map[string]string `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	NetworkMode     string         `yaml:"network_mode"`
	Profiles        []string       `yaml:"profiles"`
	DependsOn       map[string]any `yaml:"depends_on"`
	ReadOnly        bool           `yaml:"read_only"`
	Secrets         []string       `yaml:"secrets"`
	StopGracePeriod string         `yaml:"stop_grace_period"`
}

func readCompose(t *testing.T, path string) composeFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f
}

// nudgeBinaries are the programs of the nudge image.
var nudgeBinaries = []string{"api", "dispatcher", "pushemu"}

// isNudge reports whether the service runs the nudge image.
func (s composeService) isNudge() bool {
	return s.Build["dockerfile"] == "deploy/Dockerfile" && len(s.Command) > 0 && slices.Contains(nudgeBinaries, s.Command[0])
}

// httpAddr is the service's NUDGE_HTTP_ADDR, or the binary's default.
func httpAddr(t *testing.T, s composeService) string {
	t.Helper()
	if a := s.Environment["NUDGE_HTTP_ADDR"]; a != "" {
		return a
	}
	return settingsOf(t, s.Command[0])["NUDGE_HTTP_ADDR"]
}

// metricsAddr is where service s serves /metrics: NUDGE_METRICS_ADDR (the
// api's own listener) when set, else its HTTP address.
func metricsAddr(t *testing.T, s composeService) string {
	t.Helper()
	if a := s.Environment["NUDGE_METRICS_ADDR"]; a != "" {
		return a
	}
	return httpAddr(t, s)
}

// TestComposeFiles checks docker-compose.yml and the credentials override
// against the binaries: commands, NUDGE_* names, ports, healthcheck URLs,
// mounts, Redis configuration and the shutdown grace periods.
func TestComposeFiles(t *testing.T) {
	t.Parallel()
	base := readCompose(t, "docker-compose.yml")
	pushemuSrc, err := os.ReadFile(filepath.Join(repoRoot, "cmd/pushemu/main.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"redis", "api", "dispatcher", "pushemu"} {
		if _, ok := base.Services[want]; !ok {
			t.Fatalf("docker-compose.yml: no service %s", want)
		}
	}
	for name, s := range base.Services {
		where := "docker-compose.yml service " + name
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("%s: bind mount source %s: %v", where, src, err)
				}
			} else if _, ok := base.Volumes[src]; !ok {
				t.Errorf("%s: volume %s is not declared", where, src)
			}
		}
		if !s.isNudge() {
			continue
		}
		bin := s.Command[0]
		if !s.ReadOnly {
			t.Errorf("%s: want read_only: true (the image needs no writable root)", where)
		}
		names := slices.Collect(mapKeys(s.Environment))
		if bin == "pushemu" {
			for _, n := range names {
				if !strings.Contains(string(pushemuSrc), `"`+n+`"`) {
					t.Errorf("%s: %s is not read by cmd/pushemu", where, n)
				}
			}
			continue
		}
		checkEnvNames(t, bin, where, names)
		port := portOf(t, httpAddr(t, s))
		if port != binaries[bin] {
			t.Logf("%s: %s listens on %s instead of its default %s", where, bin, port, binaries[bin])
		}
		hc := s.Healthcheck.Test
		if len(hc) != 3 || hc[0] != "CMD" || hc[1] != "/usr/local/bin/healthcheck" {
			t.Errorf("%s: healthcheck %v, want [CMD /usr/local/bin/healthcheck <url>]", where, hc)
		} else if u, err := url.Parse(hc[2]); err != nil || u.Port() != port || (u.Path != "/healthz" && u.Path != "/readyz") {
			t.Errorf("%s: healthcheck URL %s, want port %s and /healthz or /readyz", where, hc[2], port)
		}
		// The published port: on the service, or on the service whose
		// network namespace it shares.
		pub := s
		if owner, ok := strings.CutPrefix(s.NetworkMode, "service:"); ok {
			pub = base.Services[owner]
		}
		if !slices.ContainsFunc(pub.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+port) }) {
			t.Errorf("%s: port %s is not published (ports %v)", where, port, pub.Ports)
		}
		grace, err := time.ParseDuration(s.StopGracePeriod)
		shutdown, err2 := time.ParseDuration(cmpOr(s.Environment["NUDGE_SHUTDOWN_TIMEOUT"], settingsOf(t, bin)["NUDGE_SHUTDOWN_TIMEOUT"]))
		if err != nil || err2 != nil || grace <= shutdown {
			t.Errorf("%s: stop_grace_period %q must exceed NUDGE_SHUTDOWN_TIMEOUT %v", where, s.StopGracePeriod, shutdown)
		}
	}
	redisCmd := strings.Join(base.Services["redis"].Command, " ")
	for _, want := range []string{"--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction", "--hash-max-listpack-value 256"} {
		if !strings.Contains(redisCmd, want) {
			t.Errorf("docker-compose.yml redis: command %q lacks %q", redisCmd, want)
		}
	}

	// The credentials override: real providers, secrets as files.
	cred := readCompose(t, "docker-compose.credentials.yml")
	d := cred.Services["dispatcher"]
	checkEnvNames(t, "dispatcher", "docker-compose.credentials.yml dispatcher", slices.Collect(mapKeys(d.Environment)))
	for _, n := range []string{"NUDGE_FCM_CREDENTIALS_FILE", "NUDGE_APNS_KEY_FILE"} {
		secret, ok := strings.CutPrefix(d.Environment[n], "/run/secrets/")
		if !ok || !slices.Contains(d.Secrets, secret) || cred.Secrets[secret].File == "" {
			t.Errorf("docker-compose.credentials.yml: %s=%q, want /run/secrets/<a secret of the dispatcher with a file>", n, d.Environment[n])
		}
	}
	for _, n := range []string{"NUDGE_FCM_ENDPOINT", "NUDGE_APNS_HOST", "NUDGE_APNS_SANDBOX_HOST", "NUDGE_PUSH_CA_FILE"} {
		if _, ok := d.Environment[n]; ok {
			t.Errorf("docker-compose.credentials.yml: %s is set; real credentials must reach Google and Apple", n)
		}
	}
	for _, n := range []string{"NUDGE_REDIS_URL", "NUDGE_HTTP_ADDR", "NUDGE_APNS_KEY_ID", "NUDGE_APNS_TEAM_ID", "NUDGE_APNS_TOPIC"} {
		if d.Environment[n] == "" {
			t.Errorf("docker-compose.credentials.yml: dispatcher environment lacks %s (environment is !override)", n)
		}
	}
	if d.NetworkMode != "null" || len(cred.Services["pushemu"].Profiles) == 0 {
		t.Errorf("docker-compose.credentials.yml: want network_mode !reset and pushemu moved to a profile")
	}

	// Prometheus of the observability profile scrapes the right ports.
	var prom struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile("observability/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prom); err != nil {
		t.Fatalf("observability/prometheus.yml: %v", err)
	}
	if !slices.ContainsFunc(base.Services["prometheus"].Volumes, func(v string) bool {
		return len(prom.RuleFiles) == 1 && strings.Contains(v, "alerts.yml:"+prom.RuleFiles[0])
	}) {
		t.Errorf("prometheus: rule_files %v is not where the compose file mounts alerts.yml", prom.RuleFiles)
	}
	for _, sc := range prom.ScrapeConfigs {
		bin := strings.TrimPrefix(sc.JobName, "nudge-")
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, port, _ := strings.Cut(target, ":")
				s := base.Services[bin]
				// A service in another's network namespace is reached by that one's name.
				wantHost := cmpOr(strings.TrimPrefix(s.NetworkMode, "service:"), bin)
				if host != wantHost || port != portOf(t, metricsAddr(t, s)) || sc.MetricsPath != "/metrics" {
					t.Errorf("prometheus job %s: target %s%s, want %s:%s/metrics", sc.JobName, target, sc.MetricsPath, wantHost, portOf(t, metricsAddr(t, s)))
				}
			}
		}
	}
}

func mapKeys[M ~map[K]V, K comparable, V any](m M) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

var (
	composeHostRE = regexp.MustCompile(`\b(redis|api|dispatcher|pushemu)(:\d{2,5})\b`)
	composePortRE = regexp.MustCompile(`(^|[^0-9])((?:127\.0\.0\.1|0\.0\.0\.0)?:)(\d{2,5})\b`)
)

// localizer rewrites a compose service's configuration for local
// processes: service host names become 127.0.0.1, every container port a
// free local port, and container paths the host paths of their volumes.
type localizer struct {
	ports map[string]string // container port -> local port
	paths map[string]string // container path -> host path
}

func (l *localizer) value(t *testing.T, v string) string {
	t.Helper()
	v = composeHostRE.ReplaceAllString(v, "127.0.0.1$2")
	v = composePortRE.ReplaceAllStringFunc(v, func(m string) string {
		sub := composePortRE.FindStringSubmatch(m)
		p, ok := l.ports[sub[3]]
		if !ok {
			p = portOf(t, freeAddr(t))
			l.ports[sub[3]] = p
		}
		return sub[1] + sub[2] + p
	})
	for from, to := range l.paths {
		if v == from || strings.HasPrefix(v, from+"/") {
			v = to + strings.TrimPrefix(v, from)
		}
	}
	return v
}

func (l *localizer) env(t *testing.T, s composeService) []string {
	t.Helper()
	var out []string
	for k, v := range s.Environment {
		out = append(out, k+"="+l.value(t, v))
	}
	return out
}

// healthy runs the service's compose healthcheck (localized) until it
// passes.
func (l *localizer) healthy(t *testing.T, name string, s composeService, p *stacktest.Process) {
	t.Helper()
	hc := s.Healthcheck.Test
	if len(hc) < 2 || hc[1] != "/usr/local/bin/healthcheck" {
		t.Fatalf("service %s: healthcheck %v is not the image's healthcheck", name, hc)
	}
	bin := stacktest.Binary(t, "healthcheck")
	args := make([]string, 0, len(hc)-2)
	for _, a := range hc[2:] {
		args = append(args, l.value(t, a))
	}
	var out []byte
	waitFor(t, 90*time.Second, "healthcheck of "+name, func() (bool, error) {
		if exited, err := p.Exited(); exited {
			t.Fatalf("service %s exited (%v):\n%s", name, err, p.Log())
		}
		var err error
		out, err = exec.Command(bin, args...).CombinedOutput()
		return err == nil, fmt.Errorf("%v: %s", err, out)
	})
}

// TestComposeStackRunsLocally runs docker-compose.yml's default services as
// local processes with the same commands and environment (Redis as a
// private redis-server with the same directives), checks every one gets
// healthy through its own compose healthcheck, that the emulator wiring in
// the file is exactly what pushemu prints, and that a registration plus a
// feed change produces a push at the emulator. It then checks the
// observability kit's metric names against the live /metrics, and that
// SIGTERM drains every process cleanly.
//
// One deviation from the file: the catalogue mounted at
// /etc/nudge/feeds.yaml points at public feeds, so the test mounts a local
// one instead (tests reach nothing beyond loopback).
func TestComposeStackRunsLocally(t *testing.T) {
	t.Parallel()
	cf := readCompose(t, "docker-compose.yml")
	fsrv := newFeedServer(t)
	fsrv.publish("local", "first story")

	l := &localizer{ports: map[string]string{}, paths: map[string]string{}}
	for _, s := range cf.Services {
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			switch {
			case len(parts) < 2:
			case parts[1] == "/etc/nudge/feeds.yaml":
				l.paths[parts[1]] = fsrv.feedsFile(t, "local")
			case strings.HasPrefix(parts[0], "."):
				abs, _ := filepath.Abs(parts[0])
				l.paths[parts[1]] = abs
			default:
				if _, ok := l.paths[parts[1]]; !ok {
					l.paths[parts[1]] = t.TempDir()
				}
			}
		}
	}

	// redis: a private server with the service's directives.
	var redisArgs []string
	for _, a := range cf.Services["redis"].Command[1:] {
		redisArgs = append(redisArgs, strings.TrimPrefix(a, "--"))
	}
	srv := redistest.StartServer(t, redisArgs...)
	l.ports["6379"] = portOf(t, srv.Addr)
	rdb := srv.Client(t)
	if got, err := rdb.ConfigGet(t.Context(), "maxmemory-policy").Result(); err != nil || got["maxmemory-policy"] != "noeviction" {
		t.Fatalf("redis config: got %v, %v, want noeviction", got, err)
	}

	// The nudge services in dependency order.
	order := []string{"pushemu", "api", "dispatcher"}
	for name, s := range cf.Services {
		if s.isNudge() && len(s.Profiles) == 0 && !slices.Contains(order, name) {
			t.Fatalf("service %s: add it to this test's start order", name)
		}
	}
	envs := map[string][]string{}
	for _, name := range order {
		envs[name] = l.env(t, cf.Services[name])
	}
	envs["dispatcher"] = append(envs["dispatcher"], "NUDGE_FEED_ALLOW_NETS=127.0.0.1/32") // the test's feed server is on loopback
	procs := map[string]*stacktest.Process{}
	for _, name := range order {
		s := cf.Services[name]
		for dep := range s.DependsOn {
			if dep != "redis" && procs[dep] == nil {
				t.Fatalf("service %s depends on %s, which starts later here", name, dep)
			}
		}
		p := stacktest.Start(t, s.Command[0], envs[name], s.Command[1:]...)
		procs[name] = p
		l.healthy(t, name, s, p)
		if name == "pushemu" {
			de := map[string]string{}
			for _, kv := range envs["dispatcher"] {
				k, v, _ := strings.Cut(kv, "=")
				de[k] = v
			}
			checkPushemuWiring(t, p, de)
		}
	}

	// A registration and a feed change produce a push.
	api := "http://" + l.value(t, "127.0.0.1:"+portOf(t, httpAddr(t, cf.Services["api"])))
	waitFor(t, 30*time.Second, "first poll of feed local", func() (bool, error) {
		h, err := feeds.ReadHealth(t.Context(), rdb, "local")
		return !h.LastPoll.IsZero() && h.Head == 1 && h.Notified == h.Head, err
	})
	// The first poll's event must be planned before devices register, or
	// they would get its push too.
	waitFor(t, 30*time.Second, "first event planned", func() (bool, error) { return quiet(t.Context(), rdb) })
	devs := []device{newDevice(0), newDevice(1)}
	for _, d := range devs {
		if err := register(t.Context(), http.DefaultClient, api, d, "local"); err != nil {
			t.Fatal(err)
		}
	}
	fsrv.publish("local", "second story")
	if err := feeds.PollNow(t.Context(), rdb, "local"); err != nil {
		t.Fatal(err)
	}
	control := "http://" + l.value(t, cf.Services["pushemu"].Environment["PUSHEMU_CONTROL_ADDR"])
	control = strings.Replace(control, "0.0.0.0", "127.0.0.1", 1)
	for _, d := range devs {
		resp, err := http.Get(control + "/admin/wait?n=1&timeout=60s&token=" + url.QueryEscape(d.Token))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s device: no push at the emulator: %d", d.Provider, resp.StatusCode)
		}
	}

	// The alert rules and the dashboard read metrics the binaries export.
	scraped := map[string]map[string]bool{}
	for _, name := range []string{"api", "dispatcher"} {
		u := "http://" + l.value(t, "127.0.0.1:"+portOf(t, metricsAddr(t, cf.Services[name]))) + "/metrics"
		for fam, labels := range scrape(t, u) {
			if scraped[fam] == nil {
				scraped[fam] = map[string]bool{}
			}
			for k := range labels {
				scraped[fam][k] = true
			}
		}
	}
	onlySource := checkMetricNames(t, scraped)
	t.Logf("metrics read by the kit but not exported yet (vectors without children; found in the code): %v", onlySource)

	// SIGTERM drains every process within its stop_grace_period.
	for _, name := range slices.Backward(order) {
		grace, _ := time.ParseDuration(cmpOr(cf.Services[name].StopGracePeriod, "10s"))
		if !procs[name].Stop(grace) {
			t.Errorf("service %s did not exit cleanly on SIGTERM within %v:\n%s", name, grace, procs[name].Log())
		}
	}
}

// checkPushemuWiring waits for pushemu's credentials and compares the
// NUDGE_* lines it prints with the dispatcher's (localized) environment:
// the file hard-codes the emulator's endpoints, key id and file names.
func checkPushemuWiring(t *testing.T, p *stacktest.Process, dispatcherEnv map[string]string) {
	t.Helper()
	waitFor(t, 30*time.Second, "pushemu credentials", func() (bool, error) {
		return strings.Contains(p.Log(), "pushemu ready"), nil
	})
	printed := map[string]string{}
	for line := range strings.Lines(p.Log()) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && strings.HasPrefix(k, "NUDGE_") {
			printed[k] = v
		}
	}
	if len(printed) < 8 {
		t.Fatalf("pushemu printed %d NUDGE_* lines:\n%s", len(printed), p.Log())
	}
	for k, v := range printed {
		if got := dispatcherEnv[k]; got != v {
			t.Errorf("dispatcher %s: compose file gives %q, pushemu prints %q", k, got, v)
		}
	}
}
