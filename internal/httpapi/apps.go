package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/nudge-dev/nudge/internal/apps"
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

// listApps is GET /v1/admin/apps: every app, ordered by id.
func (s *Server) listApps(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, appList{Apps: s.deps.Apps.Current().All()})
	return nil
}

// getApp is GET /v1/admin/apps/{app}.
func (s *Server) getApp(w http.ResponseWriter, r *http.Request) error {
	a, ok := s.deps.Apps.Current().Get(chi.URLParam(r, "app"))
	if !ok {
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

// deleteApp is DELETE /v1/admin/apps/{app}; the last app cannot go (409).
func (s *Server) deleteApp(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "app")
	if err := s.deps.Apps.Delete(r.Context(), id); err != nil {
		return err
	}
	s.audit(r, "app.delete", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
