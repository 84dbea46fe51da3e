package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/audit"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
)

// Registry is the device registry behind the device routes;
// *devices.Registry is one.
type Registry interface {
	Register(ctx context.Context, reg devices.Registration) (d devices.Device, secret string, created bool, err error)
	Update(ctx context.Context, cur devices.Device, p devices.Patch) (devices.Device, error)
	DeleteIfToken(ctx context.Context, id uint64, token string) (bool, error)
	// App returns an app devices may register with (and syncs may name),
	// or a *devices.FieldError naming "app".
	App(id string) (apps.App, error)
}

// Authenticator finds the device that a device secret opens;
// *devices.Registry is one.
type Authenticator interface {
	Authenticate(ctx context.Context, id uint64, secret string) (devices.Device, error)
}

// Forgetter drops the throttle state of a deleted device;
// *throttle.Throttle is one.
type Forgetter interface {
	Forget(ctx context.Context, id uint64) error
}

// Catalog reads the feed catalogue; *catalog.Store is one.
type Catalog interface {
	List(ctx context.Context) ([]catalog.Feed, error)
	Get(ctx context.Context, id string) (catalog.Feed, error)
	Missing(ctx context.Context, ids []string) ([]string, error)
}

// FeedEditor changes the feed catalogue (admin routes); *catalog.Store is
// one.
type FeedEditor interface {
	Put(ctx context.Context, f catalog.Feed) (created bool, err error)
	Delete(ctx context.Context, id string) error
}

// Subscriptions clears a deleted feed from every device's subscriptions;
// *devices.Registry is one.
type Subscriptions interface {
	DropFeed(ctx context.Context, feed string) error
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	// As for every route: a reserve of the budget is kept for the answer.
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout-min(s.cfg.ReadyTimeout/10, 100*time.Millisecond))
	defer cancel()
	if err := s.deps.Redis.Ping(ctx).Err(); err != nil {
		return &HTTPError{Code: http.StatusServiceUnavailable, Kind: "unavailable", Msg: "redis unreachable", Err: err}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

// syncJSON is background_sync in requests and responses.
type syncJSON struct {
	Enabled     *bool   `json:"enabled"`
	MinInterval *string `json:"min_interval"`
}

type registerRequest struct {
	App            string    `json:"app"`
	Provider       string    `json:"provider"`
	Token          string    `json:"token"`
	Platform       string    `json:"platform"`
	Environment    string    `json:"environment"`
	Feeds          []string  `json:"feeds"`
	BackgroundSync *syncJSON `json:"background_sync"`
	Locale         string    `json:"locale"`
	Timezone       string    `json:"timezone"`
	AppVersion     string    `json:"app_version"`
}

type patchRequest struct {
	App            *string   `json:"app"` // refused unless unchanged: a device's app is fixed
	Token          *string   `json:"token"`
	Environment    *string   `json:"environment"`
	Feeds          *[]string `json:"feeds"`
	BackgroundSync *syncJSON `json:"background_sync"`
	Locale         *string   `json:"locale"`
	Timezone       *string   `json:"timezone"`
	AppVersion     *string   `json:"app_version"`
}

type syncView struct {
	Enabled     bool   `json:"enabled"`
	MinInterval string `json:"min_interval"`
}

type deviceView struct {
	ID             uint64   `json:"id"`
	Secret         string   `json:"secret,omitempty"`
	App            string   `json:"app"`
	Provider       string   `json:"provider"`
	Token          string   `json:"token"`
	Platform       string   `json:"platform"`
	Environment    string   `json:"environment"`
	Feeds          []string `json:"feeds"`
	BackgroundSync syncView `json:"background_sync"`
	Locale         string   `json:"locale"`
	Timezone       string   `json:"timezone"`
	AppVersion     string   `json:"app_version"`
	CreatedAt      string   `json:"created_at"`
	UpdatedAt      string   `json:"updated_at"`
}

func viewOf(d devices.Device) deviceView {
	return deviceView{
		ID: d.ID, App: d.App, Provider: d.Provider, Token: d.Token, Platform: d.Platform, Environment: d.Environment,
		Feeds: d.Feeds, BackgroundSync: syncView{Enabled: d.Sync.Enabled, MinInterval: d.Sync.MinInterval.String()},
		Locale: d.Locale, Timezone: d.Timezone, AppVersion: d.AppVersion,
		CreatedAt: d.Created.Format(time.RFC3339), UpdatedAt: d.Updated.Format(time.RFC3339),
	}
}

func parseSync(in *syncJSON, dst *devices.BackgroundSync) error {
	if in.Enabled != nil {
		dst.Enabled = *in.Enabled
	}
	if in.MinInterval != nil {
		d, err := devices.ParseMinInterval(*in.MinInterval)
		if err != nil {
			return err
		}
		dst.MinInterval = d
	}
	return nil
}

// registerDevice is POST /v1/devices: 201 for a new device, 200 for a
// token that was already registered (same id, fresh secret).
func (s *Server) registerDevice(w http.ResponseWriter, r *http.Request) error {
	var req registerRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{{"provider", req.Provider}, {"token", req.Token}, {"platform", req.Platform}} {
		if f.v == "" {
			return badRequest(f.name, f.name+" is required")
		}
	}
	reg := devices.Registration{
		App: req.App, Provider: req.Provider, Token: req.Token, Platform: req.Platform, Environment: req.Environment,
		Feeds: req.Feeds, Sync: devices.BackgroundSync{Enabled: true},
		Locale: req.Locale, Timezone: req.Timezone, AppVersion: req.AppVersion,
	}
	if req.BackgroundSync != nil {
		if err := parseSync(req.BackgroundSync, &reg.Sync); err != nil {
			return err
		}
	}
	// A known device keeps the parts of the user's setting not named here.
	reg.KeepEnabled = req.BackgroundSync == nil || req.BackgroundSync.Enabled == nil
	reg.KeepMinInterval = req.BackgroundSync == nil || req.BackgroundSync.MinInterval == nil
	if err := s.checkToken(r.Context(), req.Provider, req.Token); err != nil {
		return err
	}
	d, secret, created, err := s.deps.Devices.Register(r.Context(), reg)
	if err != nil {
		return err
	}
	s.countToken(r.Context(), d.Provider, d.Token)
	if !created {
		// The token was registered: its device now has a new secret and
		// the previous holder's secret no longer works.
		s.auditDevice(r, "device.reregister", d.ID, d.Provider, d.Token)
	}
	v := viewOf(d)
	v.Secret = secret
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	logFrom(r.Context()).InfoContext(r.Context(), "device registered", "device_id", d.ID, "app", d.App, "provider", d.Provider,
		"platform", d.Platform, "created", created, "feeds", len(d.Feeds))
	writeJSON(w, status, v)
	return nil
}

// device authenticates the request as the device in the path.
func (s *Server) device(r *http.Request) (devices.Device, error) {
	id, err := strconv.ParseUint(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id == 0 {
		return devices.Device{}, devices.ErrNotFound
	}
	secret, ok := auth.BearerToken(r)
	if !ok {
		return devices.Device{}, auth.ErrUnauthenticated
	}
	return s.deps.DeviceAuth.Authenticate(r.Context(), id, secret)
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := s.device(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewOf(d))
	return nil
}

func (s *Server) patchDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := s.device(r)
	if err != nil {
		return err
	}
	var req patchRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.App != nil && *req.App != d.App {
		return badRequest("app", "a device's app cannot change: register the token with app "+strconv.Quote(*req.App)+" instead")
	}
	if req.Token != nil && *req.Token != d.Token {
		if err := s.checkToken(r.Context(), d.Provider, *req.Token); err != nil {
			return err
		}
	}
	p := devices.Patch{Token: req.Token, Environment: req.Environment, Feeds: req.Feeds,
		Locale: req.Locale, Timezone: req.Timezone, AppVersion: req.AppVersion}
	if bs := req.BackgroundSync; bs != nil {
		// Only the parts named: the other one may be changing concurrently.
		p.SyncEnabled = bs.Enabled
		if bs.MinInterval != nil {
			mi, err := devices.ParseMinInterval(*bs.MinInterval)
			if err != nil {
				return err
			}
			p.MinInterval = &mi
		}
	}
	// Update writes only if d's secret is still current (409 otherwise).
	nd, err := s.deps.Devices.Update(r.Context(), d, p)
	if err != nil {
		return err
	}
	if nd.Token != d.Token {
		// A token another device held moves here and that device is removed.
		s.countToken(r.Context(), nd.Provider, nd.Token)
		s.auditDevice(r, "device.token_change", d.ID, nd.Provider, nd.Token)
	}
	logFrom(r.Context()).InfoContext(r.Context(), "device updated", "device_id", d.ID, "token_rotated", nd.Token != d.Token)
	writeJSON(w, http.StatusOK, viewOf(nd))
	return nil
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := s.device(r)
	if err != nil {
		return err
	}
	if ok, err := s.deps.Devices.DeleteIfToken(r.Context(), d.ID, d.Token); err != nil {
		return err
	} else if !ok {
		return devices.ErrConflict
	}
	// A deleted device leaves no throttle state, even if the client hangs
	// up now. The device is gone already, so a failure is logged, not
	// answered (a retry would only find no device).
	fctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 2*time.Second)
	defer cancel()
	if err := s.deps.Throttle.Forget(fctx, d.ID); err != nil {
		logFrom(r.Context()).ErrorContext(r.Context(), "forget throttle state of deleted device", "device_id", d.ID, "err", err)
	}
	logFrom(r.Context()).InfoContext(r.Context(), "device unregistered", "device_id", d.ID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// publicFeed is a catalogue entry as anyone may see it: no origin URL,
// which may point at a host that is not meant to be public.
type publicFeed struct {
	ID           string `json:"id"`
	Title        string `json:"title"`
	PollInterval string `json:"poll_interval"`
}

// editorFeed is a catalogue entry as editors and admins see it: the URL
// without user info, and the name of its credentials file (never its
// content, which only the dispatcher reads).
type editorFeed struct {
	ID           string `json:"id"`
	Title        string `json:"title"`
	URL          string `json:"url"`
	PollInterval string `json:"poll_interval"`
	Credentials  string `json:"credentials,omitempty"`
}

func editorView(f catalog.Feed) editorFeed {
	return editorFeed{ID: f.ID, Title: f.Title, URL: redactURL(f.URL), PollInterval: f.PollInterval.String(), Credentials: f.Credentials}
}

// listFeeds is GET /v1/feeds: id, title and interval for everyone; with an
// editor or admin key also each feed's URL. A bearer credential that is no
// such key (an app's device secret, say) gets the public view.
func (s *Server) listFeeds(w http.ResponseWriter, r *http.Request) error {
	feeds, err := s.deps.Catalog.List(r.Context())
	if err != nil {
		return err
	}
	if _, err := s.deps.Keys.Check(r, auth.RoleEditor); err == nil {
		out := make([]editorFeed, len(feeds))
		for i, f := range feeds {
			out[i] = editorView(f)
		}
		writeJSON(w, http.StatusOK, map[string]any{"feeds": out})
		return nil
	}
	out := make([]publicFeed, len(feeds))
	for i, f := range feeds {
		out[i] = publicFeed{ID: f.ID, Title: f.Title, PollInterval: f.PollInterval.String()}
	}
	writeJSON(w, http.StatusOK, map[string]any{"feeds": out})
	return nil
}

type feedRequest struct {
	ID           *string `json:"id"`
	Title        string  `json:"title"`
	URL          string  `json:"url"`
	PollInterval string  `json:"poll_interval"`
	Credentials  string  `json:"credentials"`
}

// putFeed is PUT /v1/admin/feeds/{feed}: 201 when created, 200 when replaced.
func (s *Server) putFeed(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "feed")
	if !catalog.ValidID(id) {
		return badRequest("id", "feed id: use 1-64 characters of a-z, 0-9 and '-'")
	}
	var req feedRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.ID != nil && *req.ID != id {
		return badRequest("id", "id in the body differs from the id in the path")
	}
	f := catalog.Feed{ID: id, Title: req.Title, URL: req.URL, Credentials: req.Credentials}
	if req.PollInterval != "" {
		d, err := time.ParseDuration(req.PollInterval)
		if err != nil {
			return badRequest("poll_interval", `want a duration such as "90s" or "5m"`)
		}
		f.PollInterval = d
	}
	created, err := s.deps.FeedEditor.Put(r.Context(), f)
	if err != nil {
		return err
	}
	f, err = s.deps.Catalog.Get(r.Context(), id)
	if err != nil {
		return err
	}
	s.audit(r, "feed.put", id)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, editorView(f))
	return nil
}

func (s *Server) deleteFeed(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "feed")
	// The catalogue entry goes first, so no new subscription is accepted;
	// then the registry clears the feed's bitmaps, also when the entry was
	// already gone, so repeating a DELETE that crashed half-way finishes.
	err := s.deps.FeedEditor.Delete(r.Context(), id)
	if err != nil && (!errors.Is(err, catalog.ErrNotFound) || !catalog.ValidID(id)) {
		return err
	}
	if derr := s.deps.Subscriptions.DropFeed(r.Context(), id); derr != nil {
		return derr
	}
	if err != nil {
		return err
	}
	s.audit(r, "feed.delete", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// audit logs an admin or editor action and appends it to the audit stream
// (package audit, capped at about 100k entries). It names the API key,
// never the key itself. A failed audit write is logged, not returned: the
// action has already happened.
func (s *Server) audit(r *http.Request, action, target string) {
	ctx := r.Context()
	k, _ := auth.KeyFrom(ctx)
	log := logFrom(ctx)
	log.InfoContext(ctx, "audit", "action", action, "target", target, "role", string(k.Role)) // api_key is on the logger
	err := s.auditLog().Record(ctx, audit.Entry{
		Action: action, Target: target, App: auditApp(ctx), Key: k.Name, Role: string(k.Role),
		RequestID: RequestID(ctx), At: s.now(),
	})
	if err != nil {
		log.ErrorContext(ctx, "write audit record", "action", action, "err", err)
	}
}

// auditLog is the audit stream's owner on the server's Redis client.
func (s *Server) auditLog() *audit.Log { return audit.New(s.deps.Redis) }

// redactURL is a feed URL as editors may see it: without user info.
func redactURL(raw string) string { return catalog.RedactURL(raw) }
