package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/feeds"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/stats"
)

// Items reads the feeds' item logs; *feeds.Store is one.
type Items interface {
	Page(ctx context.Context, feed string, since int64, limit int) (feeds.Page, error)
	Range(ctx context.Context, feed string, since, until int64, limit int) (feeds.Page, error)
	Latest(ctx context.Context, feed string, n int) ([]feeds.Item, error)
	Heads(ctx context.Context, feeds ...string) ([]int64, error)
	Health(ctx context.Context, feed string) (feeds.Health, error)
}

// Stats records wake receipts and sums the fleet's or some apps' figures
// for the console; *stats.Recorder is one.
type Stats interface {
	Receipt(ctx context.Context, app, platform, lane, outcome string, latency time.Duration) error
	SummarizeApps(ctx context.Context, window time.Duration, apps []string) (stats.Summary, error)
}

// QueueSizer reports the sizes of a job queue for the console;
// *jobs.Queue is one.
type QueueSizer interface {
	Stats(ctx context.Context) (jobs.Stats, error)
}

// Limits of the sync read.
const (
	defaultItemsLimit = 50
	maxItemsLimit     = 200
)

type itemsView struct {
	Feed      string     `json:"feed"`
	Items     []itemView `json:"items"`
	Next      int64      `json:"next"`
	Head      int64      `json:"head"`
	Truncated bool       `json:"truncated"`
}

// itemView is one item as the app reads it.
type itemView struct {
	Cursor    int64      `json:"cursor"`
	ID        string     `json:"id"`
	Title     string     `json:"title"`
	Summary   string     `json:"summary,omitempty"`
	URL       string     `json:"url,omitempty"`
	Image     string     `json:"image,omitempty"`
	Published *time.Time `json:"published,omitempty"`
	Updated   *time.Time `json:"updated,omitempty"`
	// Edited marks an edit of an item the app may hold already (its title,
	// summary, link or date changed): Replaces is the cursor it had, and
	// ID is the same, so the app replaces the item instead of adding it.
	Edited   bool  `json:"edited,omitempty"`
	Replaces int64 `json:"replaces,omitempty"`
}

// listItems is GET /v1/feeds/{feed}/items?since=&until=&limit=: the
// app's sync read, the one small request a woken app makes per feed. The
// ETag is a hash of the page, so a repeated read answers 304 with no body.
// With until it reads the closed range (since, until], which the push
// names and which is the same for every device one event wakes: its
// answer never changes, so it is cached here (itemCache) and marked
// immutable for any shared cache in front.
func (s *Server) listItems(w http.ResponseWriter, r *http.Request) error {
	f, err := s.feedOf(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	since, limit := int64(0), defaultItemsLimit
	if v := q.Get("since"); v != "" {
		if since, err = strconv.ParseInt(v, 10, 64); err != nil || since < 0 {
			return badRequest("since", "since: want the cursor from the push payload or a previous page's next (a whole number ≥ 0)")
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxItemsLimit {
			return badRequest("limit", "limit: want a whole number from 1 to 200")
		}
	}
	if q.Has("until") {
		until, err := strconv.ParseInt(q.Get("until"), 10, 64)
		if err != nil || until < since {
			return badRequest("until", "until: want the range's end from the push payload (a whole number ≥ since)")
		}
		return s.listRange(w, r, rangeKey{feed: f.ID, since: since, until: until, limit: limit})
	}
	page, err := s.deps.Items.Page(r.Context(), f.ID, since, limit)
	if err != nil {
		return err
	}
	body, err := itemsBody(f.ID, page)
	if err != nil {
		return err
	}
	writeItems(w, r, body, etagOf(body), "no-cache")
	return nil
}

// rangeAhead is the answer to a range that ends beyond the feed's head.
func rangeAhead(head int64) error {
	return badRequest("until", "until: beyond the feed's head ("+strconv.FormatInt(head, 10)+"); want the range's end from the push payload")
}

// listRange answers the closed range k: from the item cache when it has
// it, else from one Redis read shared by every concurrent request of k.
func (s *Server) listRange(w http.ResponseWriter, r *http.Request, k rangeKey) error {
	load := func(ctx context.Context) (rangeAnswer, error) {
		page, err := s.deps.Items.Range(ctx, k.feed, k.since, k.until, k.limit)
		if err != nil {
			return rangeAnswer{}, err
		}
		if k.until > page.Head {
			return rangeAnswer{}, rangeAhead(page.Head)
		}
		// head is the range's end: an app pages until next equals head,
		// and the answer does not change as the feed moves on.
		page.Head = k.until
		body, err := itemsBody(k.feed, page)
		if err != nil {
			return rangeAnswer{}, err
		}
		return rangeAnswer{body: body, etag: etagOf(body), truncated: page.Truncated}, nil
	}
	var ans rangeAnswer
	var err error
	if s.items != nil {
		ans, err = s.items.get(r.Context(), k, load)
	} else {
		ans, err = load(r.Context())
	}
	if err != nil {
		return err
	}
	cc := "public, max-age=" + strconv.FormatInt(int64(s.cfg.ItemsMaxAge/time.Second), 10) + ", immutable"
	if ans.truncated {
		// What the log still has of the range; later trims shrink it.
		cc = "no-cache"
	}
	writeItems(w, r, ans.body, ans.etag, cc)
	return nil
}

// itemsBody encodes a page as the sync read answers it, newline included.
func itemsBody(feed string, page feeds.Page) ([]byte, error) {
	items := make([]itemView, len(page.Items))
	for i, it := range page.Items {
		items[i] = itemView{Cursor: it.Cursor, ID: it.ID, Title: it.Title, Summary: it.Summary, URL: it.URL,
			Image: it.Image, Published: timePtr(it.Published), Updated: timePtr(it.Updated),
			Edited: it.Replaces > 0, Replaces: it.Replaces}
	}
	body, err := json.Marshal(itemsView{Feed: feed, Items: items, Next: page.Next, Head: page.Head, Truncated: page.Truncated})
	if err != nil {
		return nil, err
	}
	return append(body, '\n'), nil
}

// etagOf is the strong ETag of body.
func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

// writeItems writes a sync read's answer, or 304 when If-None-Match
// lists its ETag.
func writeItems(w http.ResponseWriter, r *http.Request, body []byte, etag, cacheControl string) {
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", cacheControl)
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// etagMatch reports whether an If-None-Match header lists etag (weak
// comparison, as RFC 9110 asks for If-None-Match).
func etagMatch(header, etag string) bool {
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// statsWindow is the span of the console's figures.
const statsWindow = time.Hour

type feedOverview struct {
	ID                  string       `json:"id"`
	Title               string       `json:"title"`
	URL                 string       `json:"url"`
	PollIntervalSeconds int64        `json:"poll_interval_seconds"`
	Health              healthView   `json:"health"`
	HeadCursor          int64        `json:"head_cursor"`
	Latest              []latestItem `json:"latest"`
}

type healthView struct {
	LastSuccess         *time.Time `json:"last_success"`
	LastError           *string    `json:"last_error"`
	LastStatus          int        `json:"last_status"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	NextPoll            *time.Time `json:"next_poll"`
	// DroppedItems is how many items the feed's last document had over the
	// item limit (NUDGE_FEED_MAX_ITEMS): the oldest, left out.
	DroppedItems int `json:"dropped_items"`
}

type latestItem struct {
	Title     string     `json:"title"`
	URL       string     `json:"url"`
	Published *time.Time `json:"published"`
}

type queueView struct {
	Depth   int64 `json:"depth"`
	Pending int64 `json:"pending"`
	Retry   int64 `json:"retry"`
	Dead    int64 `json:"dead"`
}

type overview struct {
	Whoami    map[string]string          `json:"whoami"`
	Feeds     []feedOverview             `json:"feeds"`
	Queues    map[string]queueView       `json:"queues"`
	Platforms map[string]*stats.Platform `json:"platforms"`
	Series    stats.Series               `json:"series"`
	// UnresponsiveDevices counts, per platform, the devices whose silent
	// pushes back off because their app stopped answering.
	UnresponsiveDevices map[string]int64 `json:"unresponsive_devices"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// consoleOverview is GET /v1/console/overview: everything the console shows
// at a glance, in one request. The figures are those of ?app=, else of
// every app the key may see.
func (s *Server) consoleOverview(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	k, _ := auth.KeyFrom(ctx)
	scope, err := s.readScope(r)
	if err != nil {
		return err
	}
	list, err := s.deps.Catalog.List(ctx)
	if err != nil {
		return err
	}
	out := overview{
		Whoami: map[string]string{"name": k.Name, "role": string(k.Role)},
		Feeds:  make([]feedOverview, 0, len(list)),
		Queues: map[string]queueView{},
	}
	for _, f := range list {
		h, err := s.deps.Items.Health(ctx, f.ID)
		if err != nil {
			return err
		}
		latest, err := s.deps.Items.Latest(ctx, f.ID, 5)
		if err != nil {
			return err
		}
		fo := feedOverview{
			ID: f.ID, Title: f.Title, URL: redactURL(f.URL), PollIntervalSeconds: int64(f.PollInterval / time.Second),
			HeadCursor: h.Head, Latest: make([]latestItem, 0, len(latest)),
			Health: healthView{
				LastSuccess: timePtr(h.LastSuccess), LastStatus: h.LastStatus,
				ConsecutiveFailures: h.Failures, NextPoll: timePtr(h.NextPoll), DroppedItems: h.Dropped,
			},
		}
		if h.LastError != "" {
			fo.Health.LastError = &h.LastError
		}
		for _, it := range latest {
			fo.Latest = append(fo.Latest, latestItem{Title: it.Title, URL: it.URL, Published: timePtr(it.Published)})
		}
		out.Feeds = append(out.Feeds, fo)
	}
	for name, q := range s.deps.Queues {
		st, err := q.Stats(ctx)
		if err != nil {
			return err
		}
		out.Queues[name] = queueView{Depth: st.Depth, Pending: st.Pending, Retry: st.Retry, Dead: st.Dead}
	}
	sum, err := s.deps.Stats.SummarizeApps(ctx, statsWindow, scope)
	if err != nil {
		return err
	}
	out.Platforms, out.Series = sum.Platforms, sum.Series
	if out.UnresponsiveDevices, err = s.deps.Responsive.UnresponsiveCounts(ctx); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
