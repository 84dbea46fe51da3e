package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/schedule"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// Submitter publishes an editor's sync and queues it for planning;
// *fanout.Submitter is one.
type Submitter interface {
	Submit(ctx context.Context, ev fanout.Event) (string, error)
}

// Events counts a sync's audience, names a new sync, and reads a published
// sync and its progress; *fanout.Planner is one.
type Events interface {
	NewID(ctx context.Context) (string, error)
	Count(ctx context.Context, ev fanout.Event) (int64, error)
	Event(ctx context.Context, id string) (fanout.Event, error)
	Progress(ctx context.Context, id string) (fanout.Progress, error)
}

// Schedule keeps editors' syncs scheduled for later; *schedule.Store is
// one.
type Schedule interface {
	Add(ctx context.Context, sy schedule.Sync) error
	Get(ctx context.Context, id string) (schedule.Sync, error)
	List(ctx context.Context) ([]schedule.Sync, error)
	Cancel(ctx context.Context, id string) error
	Horizon() time.Duration
}

// Limits of an editor's sync request.
const (
	maxSyncFeeds   = 64
	maxAlertTitle  = 120
	maxAlertBody   = 1000
	maxEventIDSize = 128
)

type syncRequest struct {
	App   string   `json:"app"` // default apps.Default; only its devices are targeted
	Feeds []string `json:"feeds"`
	Lane  string   `json:"lane"`
	Alert *struct {
		Title string `json:"title"`
		Body  string `json:"body"`
	} `json:"alert"`
	Audience *fanout.Audience `json:"audience"`
	// SendAt, RFC 3339, schedules the sync for later instead of now.
	SendAt string `json:"send_at"`
}

// Limits of an audience.
const (
	maxAudienceLocales = 32
	maxAppVersionSize  = 32
)

var audienceLocaleRE = regexp.MustCompile(`^[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8}){0,4}$`)

// checkAudience refuses an audience the planner could not match.
func checkAudience(a *fanout.Audience) error {
	if a == nil {
		return nil
	}
	for _, p := range a.Platforms {
		if p != "ios" && p != "android" {
			return badRequest("audience", `audience.platforms: want "ios" or "android"`)
		}
	}
	if len(a.Locales) > maxAudienceLocales {
		return badRequest("audience", "audience.locales: list at most 32 locales")
	}
	for _, l := range a.Locales {
		if !audienceLocaleRE.MatchString(l) {
			return badRequest("audience", "audience.locales: want locales like en or en-GB")
		}
	}
	if len(a.MinAppVersion) > maxAppVersionSize || len(a.MaxAppVersion) > maxAppVersionSize {
		return badRequest("audience", "audience: app versions up to 32 characters")
	}
	return nil
}

// progressView is the progress of one sync as editors see it.
type progressView struct {
	ID        string    `json:"id"`
	App       string    `json:"app,omitempty"` // empty for a feed change, which reaches every app
	Feeds     []string  `json:"feeds"`
	Lane      string    `json:"lane"`
	CreatedAt time.Time `json:"created_at"`
	// State is planning, sending (planned, pushes on their way) or done
	// (every targeted device has its outcome).
	State string `json:"state"`
	// Targeted is always skipped + sent + pruned + failed + superseded +
	// unresponsive + in_flight: every device found so far, each in exactly one of them.
	// Queued, deferred and coalesced say how the throttle planned them.
	Targeted  int64 `json:"targeted"`
	Queued    int64 `json:"queued"`
	Sent      int64 `json:"sent"`
	Deferred  int64 `json:"deferred"`
	Coalesced int64 `json:"coalesced"`
	Skipped   int64 `json:"skipped"` // opted out or gone at planning, or before a deferred push was due
	Pruned    int64 `json:"pruned"`
	Failed    int64 `json:"failed"`
	// Superseded: dropped at send time (device deleted, opted out or
	// re-tokened since planning).
	Superseded int64 `json:"superseded"`
	// Unresponsive: held back at send time because the device is
	// unresponsive (budget saved).
	Unresponsive int64 `json:"unresponsive"`
	// InFlight: planned pushes that have not ended yet.
	InFlight int64 `json:"in_flight"`
	// Held: devices the alert guard (NUDGE_ALERT_LIMIT) sent the sync to
	// silently, without its alert; inside the counts above.
	Held int64 `json:"held"`
	// LastSentAt is when the latest push of the sync was sent.
	LastSentAt *time.Time `json:"last_sent_at,omitempty"`
	// SendAt is when a scheduled sync starts (states scheduled and starting).
	SendAt *time.Time `json:"send_at,omitempty"`
}

// createSync is POST /v1/syncs: an editor asks subscribers of some feeds to
// sync now, or at send_at. The sync is an event on the breaking lane by
// default, which skips the debounce but not the platforms' budgets.
func (s *Server) createSync(w http.ResponseWriter, r *http.Request) error {
	var req syncRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ev := fanout.Event{Lane: cmp.Or(req.Lane, throttle.LaneBreaking), Reason: "breaking"}
	switch ev.Lane {
	case throttle.LaneBreaking:
	case throttle.LaneFeed:
		ev.Reason = "feed"
	default:
		return badRequest("lane", `lane: want "breaking" or "feed"`)
	}
	if len(req.Feeds) == 0 || len(req.Feeds) > maxSyncFeeds {
		return badRequest("feeds", "feeds: list 1 to 64 feed ids")
	}
	app, err := s.deps.Devices.App(req.App)
	if err != nil {
		return err
	}
	ev.App = app.ID
	seen := map[string]bool{}
	for _, f := range req.Feeds {
		if !app.Offers(f) {
			return badRequest("feeds", "feed "+f+" is not offered by app "+app.ID)
		}
		if !seen[f] {
			seen[f] = true
			ev.Feeds = append(ev.Feeds, f)
		}
	}
	missing, err := s.deps.Catalog.Missing(r.Context(), ev.Feeds)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return badRequest("feeds", "unknown feeds: "+strings.Join(missing, ", "))
	}
	if a := req.Alert; a != nil && (a.Title != "" || a.Body != "") {
		if ev.Lane != throttle.LaneBreaking {
			return badRequest("alert", "an alert goes only with the breaking lane")
		}
		if utf8.RuneCountInString(a.Title) > maxAlertTitle || utf8.RuneCountInString(a.Body) > maxAlertBody {
			return badRequest("alert", "alert: title up to 120 characters, body up to 1000")
		}
		if hasControl(a.Title) || hasControl(strings.NewReplacer("\n", "", "\t", "").Replace(a.Body)) {
			return badRequest("alert", "alert: no control characters in the title, none but newlines and tabs in the body")
		}
		ev.Alert = &fanout.Alert{Title: a.Title, Body: a.Body}
	}
	if err := checkAudience(req.Audience); err != nil {
		return err
	}
	var sendAt time.Time
	if req.SendAt != "" {
		if sendAt, err = time.Parse(time.RFC3339, req.SendAt); err != nil {
			return badRequest("send_at", "send_at: want an RFC 3339 time, e.g. 2026-12-06T18:30:00Z")
		}
	}
	if !req.Audience.Empty() {
		ev.Audience = req.Audience
	}
	if err := s.allowApp(r, "app", eventApp(ev)); err != nil {
		return err
	}
	if r.URL.Query().Get("dry_run") == "true" {
		n, err := s.deps.Events.Count(r.Context(), ev)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "targeted": n})
		return nil
	}
	if !sendAt.IsZero() {
		return s.scheduleSync(w, r, ev, sendAt)
	}
	id, err := schedule.Submit(r.Context(), s.deps.Items, s.deps.Syncs, ev)
	if err != nil {
		return err
	}
	s.audit(r, "sync.create", id+" app="+ev.App+" lane="+ev.Lane+" feeds="+strings.Join(ev.Feeds, ","))
	w.Header().Set("Location", "/v1/syncs/"+id)
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id})
	return nil
}

// scheduleSync stores ev, with a fresh id, to start at sendAt (which the
// schedule checks on Redis's clock: in the future, within the horizon).
func (s *Server) scheduleSync(w http.ResponseWriter, r *http.Request, ev fanout.Event, sendAt time.Time) error {
	id, err := s.deps.Events.NewID(r.Context())
	if err != nil {
		return err
	}
	ev.ID = id
	err = s.deps.Schedule.Add(r.Context(), schedule.Sync{Event: ev, SendAt: sendAt, CreatedAt: s.now()})
	switch {
	case errors.Is(err, schedule.ErrNotFuture):
		return badRequest("send_at", "send_at: want a time in the future")
	case errors.Is(err, schedule.ErrTooFar):
		return badRequest("send_at", fmt.Sprintf("send_at: want a time within %s from now", humanDays(s.deps.Schedule.Horizon())))
	case errors.Is(err, schedule.ErrFull):
		return &HTTPError{Code: http.StatusConflict, Kind: "conflict", Msg: "too many syncs are scheduled; cancel some first", Err: err}
	case err != nil:
		return err
	}
	s.audit(r, "sync.schedule", id+" send_at="+sendAt.UTC().Format(time.RFC3339)+" app="+ev.App+" lane="+ev.Lane+" feeds="+strings.Join(ev.Feeds, ","))
	w.Header().Set("Location", "/v1/syncs/"+id)
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "state": schedule.StateScheduled, "send_at": sendAt.UTC().Format(time.RFC3339)})
	return nil
}

// humanDays is d in days when it is whole days ("30 days"), else as Go prints it.
func humanDays(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}

// syncID is the path's sync id. Clients percent-encode the colons of ids
// like feed:headlines:5; the router leaves the escaped path as it is.
func syncID(r *http.Request) (string, error) {
	id, err := url.PathUnescape(chi.URLParam(r, "id"))
	if err != nil || id == "" || len(id) > maxEventIDSize {
		return "", &HTTPError{Code: http.StatusNotFound, Kind: "not_found", Msg: "sync not found"}
	}
	return id, nil
}

// viewOfScheduled is a scheduled sync that has not started.
func viewOfScheduled(sy schedule.Sync) progressView {
	at := sy.SendAt.UTC()
	return progressView{ID: sy.Event.ID, App: sy.Event.App, Feeds: sy.Event.Feeds, Lane: sy.Event.Lane,
		CreatedAt: sy.CreatedAt.UTC(), State: sy.State, SendAt: &at}
}

// listSyncs is GET /v1/syncs?state=scheduled: the syncs waiting for their
// send_at (and those being started), soonest first.
func (s *Server) listSyncs(w http.ResponseWriter, r *http.Request) error {
	if st := r.URL.Query().Get("state"); st != schedule.StateScheduled {
		return badRequest("state", `state: want "scheduled" (only scheduled syncs are listed)`)
	}
	all, err := s.deps.Schedule.List(r.Context())
	if err != nil {
		return err
	}
	scope, err := s.readScope(r)
	if err != nil {
		return err
	}
	out := make([]progressView, 0, len(all))
	for _, sy := range all {
		if inScope(scope, eventApp(sy.Event)) {
			out = append(out, viewOfScheduled(sy))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"syncs": out})
	return nil
}

// cancelSync is DELETE /v1/syncs/{id}: cancels a scheduled sync before it
// starts; 409 once it has started, 404 for an id nothing knows.
func (s *Server) cancelSync(w http.ResponseWriter, r *http.Request) error {
	id, err := syncID(r)
	if err != nil {
		return err
	}
	started := &HTTPError{Code: http.StatusConflict, Kind: "conflict", Msg: "the sync has started; it can no longer be cancelled"}
	notFound := &HTTPError{Code: http.StatusNotFound, Kind: "not_found", Msg: "sync not found"}
	sy, err := s.deps.Schedule.Get(r.Context(), id)
	if err == nil {
		if !seesApp(r, eventApp(sy.Event)) {
			return notFound
		}
		err = s.deps.Schedule.Cancel(r.Context(), id)
	}
	switch {
	case err == nil:
		s.audit(r, "sync.cancel", id)
		w.WriteHeader(http.StatusNoContent)
		return nil
	case errors.Is(err, schedule.ErrStarted):
		started.Err = err
		return started
	case !errors.Is(err, schedule.ErrNotFound):
		return err
	}
	// Not scheduled: a sync that started left the schedule after its
	// event was published, so the event tells the two apart.
	if ev, err := s.deps.Events.Event(r.Context(), id); err == nil {
		if !seesApp(r, eventApp(ev)) {
			return notFound
		}
		return started
	} else if !errors.Is(err, fanout.ErrNotFound) {
		return err
	}
	return notFound
}

// getSync is GET /v1/syncs/{id}: live progress of a sync, or a scheduled
// sync that has not started.
func (s *Server) getSync(w http.ResponseWriter, r *http.Request) error {
	id, err := syncID(r)
	if err != nil {
		return err
	}
	notFound := &HTTPError{Code: http.StatusNotFound, Kind: "not_found", Msg: "sync not found"}
	ev, err := s.deps.Events.Event(r.Context(), id)
	if err == nil && !seesApp(r, eventApp(ev)) {
		return notFound
	}
	if err == nil {
		var p fanout.Progress
		p, err = s.deps.Events.Progress(r.Context(), id)
		if err == nil {
			writeJSON(w, http.StatusOK, viewOfProgress(ev, p))
			return nil
		}
	}
	if !errors.Is(err, fanout.ErrNotFound) {
		return err
	}
	sy, err := s.deps.Schedule.Get(r.Context(), id)
	if errors.Is(err, schedule.ErrNotFound) {
		notFound.Err = err
		return notFound
	}
	if err != nil {
		return err
	}
	if !seesApp(r, eventApp(sy.Event)) {
		return notFound
	}
	writeJSON(w, http.StatusOK, viewOfScheduled(sy))
	return nil
}

func viewOfProgress(ev fanout.Event, p fanout.Progress) progressView {
	v := progressView{
		ID: ev.ID, App: ev.App, Feeds: ev.Feeds, Lane: ev.Lane, CreatedAt: ev.CreatedAt.UTC(), State: p.State(),
		Targeted: p.Accounted(), Queued: p.Queued, Sent: p.Sent, Deferred: p.Deferred, Coalesced: p.Coalesced,
		Skipped: p.Skipped + p.Missing, Pruned: p.Pruned, Failed: p.Failed, Superseded: p.Superseded,
		Unresponsive: p.Unresponsive, InFlight: p.InFlight(), Held: p.Held,
	}
	if !p.LastSentAt.IsZero() {
		t := p.LastSentAt.UTC()
		v.LastSentAt = &t
	}
	return v
}

// pollFeed is POST /v1/feeds/{feed}/poll: a CMS or an editor asks for the
// feed to be polled at once rather than at its next interval.
func (s *Server) pollFeed(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "feed")
	if _, err := s.deps.Catalog.Get(r.Context(), id); err != nil {
		return err
	}
	if err := feeds.PollNow(r.Context(), s.deps.Redis, id); err != nil {
		return err
	}
	s.audit(r, "feed.poll", id)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// feedOf returns the catalogue entry of the path's feed, or a 404.
func (s *Server) feedOf(r *http.Request) (catalog.Feed, error) {
	return s.deps.Catalog.Get(r.Context(), chi.URLParam(r, "feed"))
}
