package httpapi

import (
	"cmp"
	"context"
	"errors"
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
	"github.com/nudge-dev/nudge/internal/throttle"
)

// Submitter publishes an editor's sync and queues it for planning;
// *fanout.Submitter is one.
type Submitter interface {
	Submit(ctx context.Context, ev fanout.Event) (string, error)
}

// Events counts a sync's audience and reads a published sync and its
// progress; *fanout.Planner is one.
type Events interface {
	Count(ctx context.Context, ev fanout.Event) (int64, error)
	Event(ctx context.Context, id string) (fanout.Event, error)
	Progress(ctx context.Context, id string) (fanout.Progress, error)
}

// Limits of an editor's sync request.
const (
	maxSyncFeeds   = 64
	maxAlertTitle  = 120
	maxAlertBody   = 1000
	maxEventIDSize = 128
)

type syncRequest struct {
	Feeds []string `json:"feeds"`
	Lane  string   `json:"lane"`
	Alert *struct {
		Title string `json:"title"`
		Body  string `json:"body"`
	} `json:"alert"`
	Audience *fanout.Audience `json:"audience"`
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
	Feeds     []string  `json:"feeds"`
	Lane      string    `json:"lane"`
	CreatedAt time.Time `json:"created_at"`
	// State is planning, sending (planned, pushes on their way) or done
	// (every targeted device has its outcome).
	State string `json:"state"`
	// Targeted is always skipped + sent + pruned + failed + superseded +
	// in_flight: every device found so far, each in exactly one of them.
	// Queued, deferred and coalesced say how the throttle planned them.
	Targeted  int64 `json:"targeted"`
	Queued    int64 `json:"queued"`
	Sent      int64 `json:"sent"`
	Deferred  int64 `json:"deferred"`
	Coalesced int64 `json:"coalesced"`
	Skipped   int64 `json:"skipped"` // opted out, or gone before planning
	Pruned    int64 `json:"pruned"`
	Failed    int64 `json:"failed"`
	// Superseded: dropped at send time (device deleted, opted out or
	// re-tokened since planning).
	Superseded int64 `json:"superseded"`
	// InFlight: planned pushes that have not ended yet.
	InFlight int64 `json:"in_flight"`
	// Held: devices the alert guard (NUDGE_ALERT_LIMIT) sent the sync to
	// silently, without its alert; inside the counts above.
	Held int64 `json:"held"`
	// LastSentAt is when the latest push of the sync was sent.
	LastSentAt *time.Time `json:"last_sent_at,omitempty"`
}

// createSync is POST /v1/syncs: an editor asks subscribers of some feeds to
// sync now. The sync is an event on the breaking lane by default, which
// skips the debounce but not the platforms' budgets.
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
	seen := map[string]bool{}
	for _, f := range req.Feeds {
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
	if !req.Audience.Empty() {
		ev.Audience = req.Audience
	}
	if r.URL.Query().Get("dry_run") == "true" {
		n, err := s.deps.Events.Count(r.Context(), ev)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "targeted": n})
		return nil
	}
	// A sync names no new items: it carries each feed's head, and the app
	// fetches from the smaller of that and its own cursor, as always.
	ev.Since = map[string]int64{}
	for _, f := range ev.Feeds {
		head, err := s.deps.Items.Head(r.Context(), f)
		if err != nil {
			return err
		}
		ev.Since[f] = head
	}
	id, err := s.deps.Syncs.Submit(r.Context(), ev)
	if err != nil {
		return err
	}
	s.audit(r, "sync.create", id+" lane="+ev.Lane+" feeds="+strings.Join(ev.Feeds, ","))
	w.Header().Set("Location", "/v1/syncs/"+id)
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id})
	return nil
}

// getSync is GET /v1/syncs/{id}: live progress of a sync.
func (s *Server) getSync(w http.ResponseWriter, r *http.Request) error {
	// Clients percent-encode the colons of ids like feed:headlines:5; the
	// router leaves the escaped path as it is.
	id, err := url.PathUnescape(chi.URLParam(r, "id"))
	if err != nil || id == "" || len(id) > maxEventIDSize {
		return &HTTPError{Code: http.StatusNotFound, Kind: "not_found", Msg: "sync not found"}
	}
	ev, err := s.deps.Events.Event(r.Context(), id)
	if err == nil {
		var p fanout.Progress
		p, err = s.deps.Events.Progress(r.Context(), id)
		if err == nil {
			writeJSON(w, http.StatusOK, viewOfProgress(ev, p))
			return nil
		}
	}
	if errors.Is(err, fanout.ErrNotFound) {
		return &HTTPError{Code: http.StatusNotFound, Kind: "not_found", Msg: "sync not found", Err: err}
	}
	return err
}

func viewOfProgress(ev fanout.Event, p fanout.Progress) progressView {
	v := progressView{
		ID: ev.ID, Feeds: ev.Feeds, Lane: ev.Lane, CreatedAt: ev.CreatedAt.UTC(), State: p.State(),
		Targeted: p.Accounted(), Queued: p.Queued, Sent: p.Sent, Deferred: p.Deferred, Coalesced: p.Coalesced,
		Skipped: p.Skipped + p.Missing, Pruned: p.Pruned, Failed: p.Failed, Superseded: p.Superseded,
		InFlight: p.InFlight(), Held: p.Held,
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
