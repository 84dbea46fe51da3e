package httpapi

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/freshness"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/prometheus/client_golang/prometheus"
)

// Freshness counts receipts towards time-to-fresh and reads it;
// *freshness.Tracker is one.
type Freshness interface {
	Synced(ctx context.Context, s devices.Synced) ([]freshness.Reached, error)
	Items(ctx context.Context, feed string, since time.Time) ([]freshness.Item, error)
}

// newFreshnessMetrics are the receipts counted by source and the
// time-to-fresh histogram (one observation per item, platform and share,
// by the replica whose receipt reached it).
func newFreshnessMetrics(a service.Archetype) (*prometheus.CounterVec, *prometheus.HistogramVec, error) {
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nudge_sync_receipts_total",
		Help: "Receipts recorded, by source: push, background_fetch, foreground.",
	}, []string{"source"})
	for _, src := range []string{sourcePush, sourceBackgroundFetch, sourceForeground} {
		received.WithLabelValues(src)
	}
	fresh := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nudge_time_to_fresh_seconds",
		Help:    "Time from a new item's publication until share (50, 90, 99 percent) of its feed's subscribed, background-enabled devices of platform had synced past it.",
		Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 24 * 3600},
	}, []string{"feed", "platform", "share"})
	if err := a.Register(received); err != nil {
		return nil, nil, err
	}
	return received, fresh, a.Register(fresh)
}

// freshnessWindow is the default span of GET /v1/stats/freshness.
const freshnessWindow = 24 * time.Hour

type freshnessView struct {
	Since time.Time           `json:"since"`
	Items []freshnessItemView `json:"items"`
}

type freshnessItemView struct {
	Feed      string                           `json:"feed"`
	Cursor    int64                            `json:"cursor"`
	Published time.Time                        `json:"published"`
	Platforms map[string]freshnessPlatformView `json:"platforms"`
}

// freshnessPlatformView is an item's time-to-fresh on one platform; a
// share not reached (yet, or ever: devices that never sync) is null.
type freshnessPlatformView struct {
	Audience int64    `json:"audience"`
	Synced   int64    `json:"synced"`
	P50      *float64 `json:"p50_seconds"`
	P90      *float64 `json:"p90_seconds"`
	P99      *float64 `json:"p99_seconds"`
}

// getFreshness is GET /v1/stats/freshness?feed=&since=: the time-to-fresh
// of the tracked items of one feed (or every feed) published since since
// (RFC 3339, default 24 h ago), oldest first.
func (s *Server) getFreshness(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	since := s.now().Add(-freshnessWindow)
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return badRequest("since", "since: want an RFC 3339 time, e.g. 2026-01-02T15:04:05Z")
		}
		since = t
	}
	var list []catalog.Feed
	if id := q.Get("feed"); id != "" {
		f, err := s.deps.Catalog.Get(ctx, id)
		if err != nil {
			return err
		}
		list = []catalog.Feed{f}
	} else {
		var err error
		if list, err = s.deps.Catalog.List(ctx); err != nil {
			return err
		}
	}
	out := freshnessView{Since: since.UTC(), Items: []freshnessItemView{}}
	for _, f := range list {
		items, err := s.deps.Freshness.Items(ctx, f.ID, since)
		if err != nil {
			return err
		}
		for _, it := range items {
			v := freshnessItemView{Feed: it.Feed, Cursor: it.Cursor, Published: it.Published.UTC(),
				Platforms: map[string]freshnessPlatformView{}}
			for pl, p := range it.Platforms {
				v.Platforms[pl] = freshnessPlatformView{Audience: p.Audience, Synced: p.Synced,
					P50: seconds(p.Latency, 50), P90: seconds(p.Latency, 90), P99: seconds(p.Latency, 99)}
			}
			out.Items = append(out.Items, v)
		}
	}
	slices.SortStableFunc(out.Items, func(a, b freshnessItemView) int {
		return cmp.Or(a.Published.Compare(b.Published), cmp.Compare(a.Feed, b.Feed), cmp.Compare(a.Cursor, b.Cursor))
	})
	writeJSON(w, http.StatusOK, out)
	return nil
}

func seconds(l map[int]time.Duration, share int) *float64 {
	d, ok := l[share]
	if !ok {
		return nil
	}
	v := d.Seconds()
	return &v
}
