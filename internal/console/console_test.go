package console_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/console"
)

func get(t *testing.T, h http.Handler, method, path string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func TestHandlerServesAssets(t *testing.T) {
	t.Parallel()
	h := console.Handler()
	tests := []struct {
		path        string
		contentType string
		contains    string
	}{
		{"/console/", "text/html; charset=utf-8", `id="login-key"`},
		{"/console/index.html", "text/html; charset=utf-8", `id="sync-form"`},
		{"/console/app.js", "text/javascript; charset=utf-8", "/v1/console/overview"},
		{"/console/api.js", "text/javascript; charset=utf-8", "Authorization"},
		{"/console/chart.js", "text/javascript; charset=utf-8", "polyline"},
		{"/console/format.js", "text/javascript; charset=utf-8", "Intl.NumberFormat"},
		{"/console/style.css", "text/css; charset=utf-8", ":focus-visible"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			res := get(t, h, http.MethodGet, tt.path, nil)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status: got %d, want %d", res.StatusCode, http.StatusOK)
			}
			if got := res.Header.Get("Content-Type"); got != tt.contentType {
				t.Fatalf("content type: got %q, want %q", got, tt.contentType)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Fatalf("X-Content-Type-Options: got %q, want nosniff", got)
			}
			if got := res.Header.Get("Content-Security-Policy"); !strings.Contains(got, "script-src 'self'") {
				t.Fatalf("Content-Security-Policy: got %q, want script-src 'self'", got)
			}
			if b := body(t, res); !strings.Contains(b, tt.contains) {
				t.Fatalf("body of %s does not contain %q", tt.path, tt.contains)
			}
		})
	}
}

func TestHandlerRoutes(t *testing.T) {
	t.Parallel()
	h := console.Handler()
	tests := []struct {
		name     string
		method   string
		path     string
		status   int
		location string
	}{
		{"bare mount redirects", http.MethodGet, "/console", http.StatusMovedPermanently, "/console/"},
		{"unknown file", http.MethodGet, "/console/nope.js", http.StatusNotFound, ""},
		{"outside the mount", http.MethodGet, "/app.js", http.StatusNotFound, ""},
		{"no directory listing", http.MethodGet, "/console/static/", http.StatusNotFound, ""},
		{"no path escape", http.MethodGet, "/console/../console.go", http.StatusNotFound, ""},
		{"head", http.MethodHead, "/console/app.js", http.StatusOK, ""},
		{"post refused", http.MethodPost, "/console/", http.StatusMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := get(t, h, tt.method, tt.path, nil)
			if res.StatusCode != tt.status {
				t.Fatalf("%s %s: got status %d, want %d", tt.method, tt.path, res.StatusCode, tt.status)
			}
			if got := res.Header.Get("Location"); got != tt.location {
				t.Fatalf("Location: got %q, want %q", got, tt.location)
			}
		})
	}
}

func TestHandlerRevalidatesWithETag(t *testing.T) {
	t.Parallel()
	h := console.Handler()
	first := get(t, h, http.MethodGet, "/console/app.js", nil)
	etag := first.Header.Get("ETag")
	if etag == "" {
		t.Fatalf("ETag: got none, want one")
	}
	again := get(t, h, http.MethodGet, "/console/app.js", http.Header{"If-None-Match": {etag}})
	if again.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation: got status %d, want %d", again.StatusCode, http.StatusNotModified)
	}
}

// TestIndexReferencesNoExternalURL keeps the console working offline: no
// script, stylesheet, image or link of the page may come from another origin.
func TestIndexReferencesNoExternalURL(t *testing.T) {
	t.Parallel()
	h := console.Handler()
	index := body(t, get(t, h, http.MethodGet, "/console/", nil))

	attr := regexp.MustCompile(`(?i)\b(src|href|action|srcset|poster|data)\s*=\s*["']?([^"'\s>]*)`)
	refs := attr.FindAllStringSubmatch(index, -1)
	if len(refs) < 2 {
		t.Fatalf("found %d src/href attributes in index.html, want at least the script and the stylesheet", len(refs))
	}
	for _, m := range refs {
		v := strings.ToLower(m[2])
		if strings.HasPrefix(v, "http:") || strings.HasPrefix(v, "https:") || strings.HasPrefix(v, "//") {
			t.Fatalf("index.html references an external URL: %s=%q", m[1], m[2])
		}
	}
	if strings.Contains(strings.ToLower(index), "@import") {
		t.Fatalf("index.html imports a stylesheet; keep styles in style.css")
	}

	// The scripts and the stylesheet load nothing from elsewhere either. The
	// only absolute URL allowed is the SVG namespace name, which is never
	// fetched.
	abs := regexp.MustCompile(`(?i)https?://[^\s"'` + "`" + `)]+`)
	for _, name := range []string{"app.js", "api.js", "chart.js", "format.js", "style.css"} {
		src := body(t, get(t, h, http.MethodGet, "/console/"+name, nil))
		for _, u := range abs.FindAllString(src, -1) {
			if u != "http://www.w3.org/2000/svg" {
				t.Fatalf("%s contains the external URL %q", name, u)
			}
		}
	}
}
