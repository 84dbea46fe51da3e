package feeds

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/catalog"
)

// authOrigin serves an RSS document only to requests whose Authorization
// header is the current want, and records what arrived.
type authOrigin struct {
	mu   sync.Mutex
	want string
	got  []string
}

func (o *authOrigin) setWant(v string) { o.mu.Lock(); o.want = v; o.mu.Unlock() }

func (o *authOrigin) seen() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.got...)
}

func (o *authOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.got = append(o.got, r.Header.Get("Authorization"))
	ok := r.Header.Get("Authorization") == o.want
	o.mu.Unlock()
	if !ok {
		http.Error(w, "who are you", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/rss+xml")
	w.Write([]byte(`<rss version="2.0"><channel><title>t</title>` + rssItem("a", "Alpha") + `</channel></rss>`))
}

func TestWatcherSendsFeedCredentialsFromTheirFile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	origin := &authOrigin{want: "Bearer first-secret"}
	os1 := httptest.NewServer(origin)
	t.Cleanup(os1.Close)
	// A second origin that the first one's /moved redirects to under another
	// host name: it must not receive the credentials.
	other := &authOrigin{want: ""}
	os2 := httptest.NewServer(other)
	t.Cleanup(os2.Close)
	moved := http.NewServeMux()
	moved.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, strings.Replace(os2.URL, "127.0.0.1", "localhost", 1)+"/feed", http.StatusFound)
	})
	os3 := httptest.NewServer(moved)
	t.Cleanup(os3.Close)

	dir := t.TempDir()
	write := func(name, v string) {
		t.Helper()
		// Replace atomically, as an operator (or a secret mount) does.
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("origin", "Bearer first-secret")
	write("moved", "Bearer moved-secret")
	feeds := sliceCatalog{
		{ID: "private", URL: os1.URL + "/feed", PollInterval: time.Hour, Credentials: "origin"},
		{ID: "absent", URL: os1.URL + "/feed", PollInterval: time.Hour, Credentials: "no-such-file"},
		{ID: "moved", URL: os3.URL + "/feed", PollInterval: time.Hour, Credentials: "moved"},
	}
	b.start(t, Config{CredentialsDir: dir}, feeds)

	await.Until(t, "the private feed polled with its credentials", func() bool {
		h := health(t, b.rdb, "private")
		return !h.LastSuccess.IsZero() && h.Head > 0
	})
	await.Until(t, "the other feeds polled", func() bool {
		return !health(t, b.rdb, "absent").LastPoll.IsZero() && !health(t, b.rdb, "moved").LastPoll.IsZero()
	})
	if h := health(t, b.rdb, "absent"); !strings.Contains(h.LastError, "NUDGE_FEED_CREDENTIALS_DIR") || h.LastSuccess != (time.Time{}) {
		t.Errorf("a missing credentials file: health %+v, want an error naming NUDGE_FEED_CREDENTIALS_DIR", h)
	}
	for _, v := range other.seen() {
		if v != "" {
			t.Errorf("the redirect target on another host got Authorization %q", v)
		}
	}
	if len(other.seen()) == 0 {
		t.Error("the redirect was not followed")
	}

	// Rotation: the origin now wants a new secret, the file is replaced, and
	// the next poll uses it without a restart.
	origin.setWant("Bearer second-secret")
	write("origin", "Bearer second-secret")
	before := len(origin.seen())
	if err := PollNow(t.Context(), b.rdb, "private"); err != nil {
		t.Fatal(err)
	}
	await.Until(t, "a poll after the rotation", func() bool { return len(origin.seen()) > before })
	await.Until(t, "the poll's result recorded", func() bool {
		h := health(t, b.rdb, "private")
		return h.LastPoll.After(h.LastErrorAt) && h.LastError == "" && h.PollGen > 0
	})
	if got := origin.seen()[before]; got != "Bearer second-secret" {
		t.Errorf("after rotation the origin got %q, want the new secret", got)
	}
	for _, id := range []string{"private", "absent", "moved"} {
		h := health(t, b.rdb, id)
		for _, secret := range []string{"first-secret", "second-secret", "moved-secret"} {
			if strings.Contains(h.LastError, secret) {
				t.Errorf("feed %s: health error shows a secret: %q", id, h.LastError)
			}
		}
	}
}

func TestCredentialsNameStaysInItsDirectory(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"../etc/passwd", "a/b", ".hidden", "..", strings.Repeat("x", 65), "sp ace"} {
		f := catalog.Feed{ID: "f", Title: "T", URL: "https://example.com/f.xml", Credentials: name}
		if err := f.Validate(); err == nil {
			t.Errorf("credentials %q: accepted, want refused", name)
		}
	}
	f := catalog.Feed{ID: "f", Title: "T", URL: "https://example.com/f.xml", Credentials: "origin.token"}
	if err := f.Validate(); err != nil {
		t.Errorf("credentials origin.token: %v", err)
	}
	// Even a name stored without validation cannot leave the directory.
	dir := t.TempDir()
	if _, err := readCredentials(dir, catalog.Feed{ID: "f", Credentials: "../../../../etc/hostname"}); err == nil {
		t.Error("a name with a path read a file outside the directory")
	}
}
