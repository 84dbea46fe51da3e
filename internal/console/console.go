// Package console serves the editors' console: a single web page, embedded in
// the binary, from which editors watch feed health, queues and push delivery,
// and trigger breaking-news syncs, now or scheduled for later; admins also
// add, edit and delete feeds.
//
// The page needs no CDN and no network beyond its own origin. It talks to the
// api's JSON endpoints under /v1/console, /v1/syncs and /v1/admin/feeds with
// the editor's API key in an Authorization: Bearer header; the key lives in
// the tab's sessionStorage only.
//
// Mount the handler at [Path]. It reads the full request path, so it works
// without http.StripPrefix:
//
//	mux.Handle("/console/", console.Handler())            // net/http
//	r.Handle("/console/*", console.Handler())             // chi
//	r.Handle("/console", console.Handler())               // chi: redirects to /console/
//
// The api redirects "/" to [Path].
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// Path is where the api mounts the console. The page's own asset URLs are
// relative to it.
const Path = "/console/"

// contentSecurityPolicy allows nothing from another origin, no inline script
// and no inline style, so a feed title or error text can never run as code.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

//go:embed static
var static embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	name        string
	body        []byte
	contentType string
	etag        string
}

// contentTypes maps the extensions of the embedded files to their media
// types. It is explicit so that a system mime.types file cannot change what
// the browser receives (module scripts need a JavaScript type).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
}

// Handler returns the handler that serves the console's static files under
// [Path]: GET and HEAD only, with ETags for revalidation, and a strict
// Content-Security-Policy. A request for "/console" is redirected to
// "/console/"; any other path outside [Path] is 404. It panics only if the
// embedded files cannot be read, which would be a build defect.
func Handler() http.Handler {
	assets := make(map[string]*asset)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			ct = "application/octet-stream"
		}
		sum := sha256.Sum256(body)
		name := strings.TrimPrefix(p, "static/")
		assets[name] = &asset{
			name:        name,
			body:        body,
			contentType: ct,
			etag:        `"` + hex.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	if err != nil {
		// The files are compiled in; failing to read them is a build defect.
		panic("console: read embedded files: " + err.Error())
	}
	return &handler{assets: assets}
}

// handler serves the embedded assets.
type handler struct {
	assets map[string]*asset
}

// ServeHTTP implements http.Handler.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == strings.TrimSuffix(Path, "/") {
		target := Path
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently)
		return
	}
	name, ok := strings.CutPrefix(p, Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if name == "" {
		name = "index.html"
	}
	a, ok := h.assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("ETag", a.etag)
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Content-Security-Policy", contentSecurityPolicy)
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}
