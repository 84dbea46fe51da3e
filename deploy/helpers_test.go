// Package deploy_test keeps the deployment files in deploy/ true to the
// binaries: it parses the Dockerfile, the compose files, the Kubernetes
// manifests and the observability kit, checks them against the settings,
// ports, probe paths and metric names the binaries really have, runs the
// compose stack's services as local processes, and runs a multi-replica
// stack on a Redis Cluster through a dispatcher crash.
package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/stacktest"
)

// repoRoot is the module root; go test runs in deploy/.
const repoRoot = ".."

// binaries maps each server binary to its default NUDGE_HTTP_ADDR port.
var binaries = map[string]string{"api": "8080", "dispatcher": "9090"}

var (
	settingsMu    sync.Mutex
	settingsCache = map[string]map[string]string{}
	labelRE       = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
	helpLineRE    = regexp.MustCompile(`  \$(NUDGE_[A-Z0-9_]+)(?: \(default ("(?:[^"\\]|\\.)*"|[^)\s]+)\))?\n`)
)

// settingsOf returns the NUDGE_* settings of a binary (env -> default), as
// the built binary itself lists them in -help.
func settingsOf(t *testing.T, binary string) map[string]string {
	t.Helper()
	settingsMu.Lock()
	defer settingsMu.Unlock()
	if s, ok := settingsCache[binary]; ok {
		return s
	}
	cmd := exec.Command(stacktest.Binary(t, binary), "-help")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s -help: %v\n%s", binary, err, out)
	}
	s := map[string]string{}
	// config prints "  -name type   $ENV (default "x")\n" (durations and
	// numbers unquoted: (default 15s)), then the help on the next line.
	for _, m := range helpLineRE.FindAllStringSubmatch(string(out), -1) {
		def := m[2]
		if u, err := strconv.Unquote(def); err == nil {
			def = u
		}
		s[m[1]] = def
	}
	if len(s) < 5 {
		t.Fatalf("%s -help lists only %d NUDGE_* settings:\n%s", binary, len(s), out)
	}
	settingsCache[binary] = s
	return s
}

// checkEnvNames fails for every NUDGE_* name in names that binary does not
// declare. where says which file and object the names come from.
func checkEnvNames(t *testing.T, binary, where string, names []string) {
	t.Helper()
	settings := settingsOf(t, binary)
	for _, n := range names {
		if !strings.HasPrefix(n, "NUDGE_") {
			continue
		}
		if _, ok := settings[n]; !ok {
			t.Errorf("%s: %s is not a setting of %s (see %s -help)", where, n, binary, binary)
		}
	}
}

// portOf returns the port of a listen address such as ":8080".
func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return port
}

// freeAddr returns 127.0.0.1:<a free port>.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitFor polls cond through await until it returns true, failing the
// test with cond's last error after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	await.Poll{Timeout: timeout, Interval: 50 * time.Millisecond}.Check(t, what, func() error {
		ok, err := cond()
		switch {
		case ok:
			return nil
		case err != nil:
			return err
		default:
			return errors.New("not yet")
		}
	})
}

// feedServer serves mutable RSS documents at /<name>.xml.
type feedServer struct {
	mu    sync.Mutex
	items map[string][]string // feed -> item titles, newest last
	URL   string
}

func newFeedServer(t *testing.T) *feedServer {
	t.Helper()
	fs := &feedServer{items: map[string][]string{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: fs, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	fs.URL = "http://" + l.Addr().String()
	return fs
}

// publish adds an item to feed.
func (fs *feedServer) publish(feed, title string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.items[feed] = append(fs.items[feed], title)
}

func (fs *feedServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	feed := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), ".xml")
	fs.mu.Lock()
	titles := append([]string(nil), fs.items[feed]...)
	fs.mu.Unlock()
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>%s</title><link>%s/</link><description>test feed</description>`, feed, fs.URL)
	for i, title := range titles {
		fmt.Fprintf(&b, `<item><title>%s</title><link>%s/%s/%d</link><guid>%s-%d</guid><pubDate>%s</pubDate></item>`,
			title, fs.URL, feed, i, feed, i, time.Date(2026, 1, 1, 0, i, 0, 0, time.UTC).Format(time.RFC1123Z))
	}
	b.WriteString(`</channel></rss>`)
	w.Header().Set("Content-Type", "application/rss+xml")
	w.Write(b.Bytes())
}

// feedsFile writes a catalogue seed file with one entry per feed name,
// served by fs.
func (fs *feedServer) feedsFile(t *testing.T, names ...string) string {
	t.Helper()
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "- id: %s\n  title: Test feed %s\n  url: %s/%s.xml\n  poll_interval: 5m\n", n, n, fs.URL, n)
	}
	p := filepath.Join(t.TempDir(), "feeds.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// device is one registered test device.
type device struct {
	Provider, Token string
}

// fcmToken and apnsToken make well-formed, distinct tokens.
func fcmToken(i int) string {
	return fmt.Sprintf("t%07d:APA91b", i) + strings.Repeat("Q", 145)
}

func apnsToken(i int) string { return fmt.Sprintf("%064x", 0xa000000+i) }

// newDevice returns device i: even ones FCM (Android), odd ones APNs (iOS
// sandbox).
func newDevice(i int) device {
	if i%2 == 0 {
		return device{Provider: "fcm", Token: fcmToken(i)}
	}
	return device{Provider: "apns", Token: apnsToken(i)}
}

// register registers d at the api at base, subscribed to feeds.
func register(ctx context.Context, client *http.Client, base string, d device, feeds ...string) error {
	body := map[string]any{
		"provider": d.Provider, "token": d.Token, "feeds": feeds,
		"background_sync": map[string]any{"enabled": true},
		"locale":          "en-US", "timezone": "Europe/Berlin", "app_version": "1.0.0",
	}
	if d.Provider == "fcm" {
		body["platform"] = "android"
	} else {
		body["platform"], body["environment"] = "ios", "sandbox"
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/devices", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("register %s device: %d %s", d.Provider, resp.StatusCode, out)
	}
	return nil
}

// quiet reports whether no push work is left anywhere: the push and events
// queues are empty (nothing waiting, pending or in retry) and no device has
// a deferred push.
func quiet(ctx context.Context, rdb redis.UniversalClient) (bool, error) {
	for _, c := range []jobs.Config{
		{Name: keys.PushQueue, Partitions: keys.Partitions},
		{Name: keys.EventQueue, Partitions: 1},
	} {
		q, err := jobs.New(rdb, c)
		if err != nil {
			return false, err
		}
		s, err := q.Stats(ctx)
		if err != nil {
			return false, err
		}
		if s.Depth+s.Pending+s.Retry > 0 {
			return false, fmt.Errorf("queue %s: %+v", c.Name, s)
		}
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.IntCmd, keys.Partitions)
	for p := range keys.Partitions {
		cmds[p] = pipe.ZCard(ctx, keys.Due(p))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return false, err
	}
	for p, c := range cmds {
		if c.Val() > 0 {
			return false, fmt.Errorf("due:{p%d} holds %d devices", p, c.Val())
		}
	}
	return true, nil
}

// scrape returns the metric families a /metrics endpoint exposes, with
// their label names (from the samples).
func scrape(t *testing.T, url string) map[string]map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d", url, resp.StatusCode)
	}
	fams := map[string]map[string]bool{}
	types := map[string]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(f, " ")
			types[name] = typ
			fams[name] = map[string]bool{}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		fam := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suf); ok && (types[base] == "histogram" || types[base] == "summary") {
				fam = base
			}
		}
		if fams[fam] == nil {
			fams[fam] = map[string]bool{}
		}
		for _, m := range labelRE.FindAllStringSubmatch(rest, -1) {
			if m[1] != "le" && m[1] != "quantile" {
				fams[fam][m[1]] = true
			}
		}
	}
	return fams
}
