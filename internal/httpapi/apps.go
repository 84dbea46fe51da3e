package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/auth"
)

// Apps is the live app catalogue: read by the routes, edited by the admin
// routes; *apps.Catalogue is one. Edits reach every replica (the api's
// and the dispatcher's) within seconds.
type Apps interface {
	Current() *apps.Set
	Put(ctx context.Context, app apps.App) (created bool, err error)
	Delete(ctx context.Context, id string) error
}

// appRequest is the body of PUT /v1/admin/apps/{app}: the app, whose id
// may be left out (the path names it). Credentials are file paths that
// the dispatcher reads; the api neither reads nor returns their contents.
type appRequest = apps.App

// appList is the body of GET /v1/admin/apps.
type appList struct {
	Apps []apps.App `json:"apps"`
}

// listAdminApps is GET /v1/admin/apps: the apps the key may act for,
// ordered by id, with their settings.
func (s *Server) listAdminApps(w http.ResponseWriter, r *http.Request) error {
	k, _ := auth.KeyFrom(r.Context())
	out := appList{Apps: []apps.App{}}
	for _, a := range s.deps.Apps.Current().All() {
		if k.AllowsApp(a.ID) {
			out.Apps = append(out.Apps, a)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getApp is GET /v1/admin/apps/{app}; an app the key may not act for is
// not found, like one that does not exist.
func (s *Server) getApp(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "app")
	a, ok := s.deps.Apps.Current().Get(id)
	if !ok || !seesApp(r, id) {
		return apps.ErrNotFound
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

// putApp is PUT /v1/admin/apps/{app}: 201 when created, 200 when replaced
// (an app of the apps file included: the edit overlays it).
func (s *Server) putApp(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "app")
	if !apps.ValidID(id) {
		return badRequest("id", "app id: use 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit")
	}
	var a appRequest
	if err := decodeJSON(r, &a); err != nil {
		return err
	}
	if a.ID != "" && a.ID != id {
		return badRequest("id", "id in the body differs from the id in the path")
	}
	a.ID = id
	if _, exists := s.deps.Apps.Current().Get(id); !exists {
		if err := requireAllApps(r); err != nil { // creating an app takes a key for every app
			return err
		}
	} else if !seesApp(r, id) {
		return apps.ErrNotFound
	}
	if hasControl(a.Name) {
		return badRequest("name", "name: one line of text, without control characters")
	}
	if err := a.Validate(); err != nil {
		return err
	}
	missing, err := s.deps.Catalog.Missing(r.Context(), a.Feeds)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return badRequest("feeds", "feeds not in the feed catalogue: "+strings.Join(missing, ", ")+"; add them first (PUT /v1/admin/feeds/{feed})")
	}
	created, err := s.deps.Apps.Put(r.Context(), a)
	if err != nil {
		return err
	}
	s.audit(r, "app.put", id)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, a)
	return nil
}

// deleteApp is DELETE /v1/admin/apps/{app}: only a key for every app may
// delete one, and the last app cannot go (409).
func (s *Server) deleteApp(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "app")
	if err := requireAllApps(r); err != nil {
		return err
	}
	if err := s.deps.Apps.Delete(r.Context(), id); err != nil {
		return err
	}
	s.audit(r, "app.delete", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
