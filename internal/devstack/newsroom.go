package devstack

import (
	"cmp"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/startstop"
)

// NewsroomFeeds are the feeds the simulated news room publishes, with their
// titles, in catalogue order.
var NewsroomFeeds = []struct{ ID, Title string }{
	{"headlines", "Headlines"},
	{"recent", "Most recent"},
	{"popular", "Most popular"},
}

// Pinger tells nudge that a feed changed, as a CMS does after publishing
// (POST /v1/feeds/{feed}/poll).
type Pinger interface {
	Poll(ctx context.Context, feed string) error
}

// NewsroomConfig configures a Newsroom.
type NewsroomConfig struct {
	// Addr is the listen address of the feed server; default "127.0.0.1:0".
	Addr string
	// Interval is the time between two published articles; default 5s.
	Interval time.Duration
	// Keep is how many articles each feed document lists; default 30.
	Keep int
	// Initial is how many articles each feed starts with; default 5.
	Initial int
	// Seed seeds the headline generator; default 1.
	Seed uint64
}

func (c NewsroomConfig) withDefaults() NewsroomConfig {
	c.Addr = cmp.Or(c.Addr, "127.0.0.1:0")
	c.Interval = cmp.Or(c.Interval, 5*time.Second)
	c.Keep = cmp.Or(c.Keep, 30)
	c.Initial = cmp.Or(c.Initial, 5)
	c.Seed = cmp.Or(c.Seed, 1)
	return c
}

func (c NewsroomConfig) validate() error {
	switch {
	case c.Interval < 100*time.Millisecond:
		return fmt.Errorf("newsroom: article interval %s is too short: set NUDGE_DEVSTACK_ARTICLE_INTERVAL (-article-interval) to 100ms or more", c.Interval)
	case c.Keep < 1 || c.Initial < 0 || c.Initial > c.Keep:
		return fmt.Errorf("newsroom: Keep (%d) must be at least 1 and Initial (%d) within [0, Keep]", c.Keep, c.Initial)
	}
	return nil
}

// article is one published story.
type article struct {
	guid      string
	title     string
	summary   string
	published time.Time
}

// feedDoc is one feed's published articles, newest first.
type feedDoc struct {
	articles []article
	version  int // bumped on every publish; the ETag
	modified time.Time
}

// Newsroom is a sample news site: an HTTP server of RSS 2.0 feeds that
// publishes a new article every Interval to a random feed and then pings
// nudge, as a CMS would. Start it once; Stop ends it.
type Newsroom struct {
	cfg    NewsroomConfig
	log    *slog.Logger
	now    func() time.Time
	pinger Pinger

	mu        sync.Mutex
	rng       *rand.Rand
	feeds     map[string]*feedDoc
	published int
	seq       int

	life  startstop.Base
	urlMu sync.Mutex
	url   string
}

// NewNewsroom builds a news room. pinger may be nil (no pings). now may be
// nil for time.Now.
func NewNewsroom(a service.Archetype, cfg NewsroomConfig, pinger Pinger) (*Newsroom, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a = a.WithDefaults()
	now := a.Clock
	n := &Newsroom{
		cfg: cfg, log: a.Logger, now: now, pinger: pinger,
		rng:   rand.New(rand.NewPCG(cfg.Seed, 0x6e657773)),
		feeds: map[string]*feedDoc{},
	}
	t := now().Add(-time.Duration(cfg.Initial) * time.Minute)
	for _, f := range NewsroomFeeds {
		n.feeds[f.ID] = &feedDoc{modified: t}
		for i := range cfg.Initial {
			n.addLocked(f.ID, t.Add(time.Duration(i)*time.Minute))
		}
	}
	return n, nil
}

// Start listens and starts publishing. ctx bounds the newsroom's life as
// well as Stop does. It follows startstop: a second Start, or a Start after
// Stop, returns startstop.ErrStarted.
func (n *Newsroom) Start(ctx context.Context) error { return n.life.Start(ctx, n.start) }

func (n *Newsroom) start(ctx context.Context) (func(), error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", n.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("newsroom: listen on %s (NUDGE_DEVSTACK_NEWSROOM_ADDR): %w", n.cfg.Addr, err)
	}
	n.urlMu.Lock()
	n.url = "http://" + ln.Addr().String()
	n.urlMu.Unlock()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /feeds/{feed}", n.serveFeed)
	mux.HandleFunc("GET /articles/{guid}", n.serveArticle)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.ErrorContext(ctx, "newsroom server stopped", "err", err)
		}
	})
	wg.Go(func() { n.publishLoop(ctx) })
	return func() { cancel(); _ = srv.Close(); wg.Wait() }, nil
}

// Stop stops publishing and closes the server. It is safe to call twice or
// before Start.
func (n *Newsroom) Stop() { n.life.Stop() }

// Stopped is closed once Stop has finished.
func (n *Newsroom) Stopped() <-chan struct{} { return n.life.Stopped() }

// URL is the server's base URL, e.g. http://127.0.0.1:8090; empty before
// Start.
func (n *Newsroom) URL() string {
	n.urlMu.Lock()
	defer n.urlMu.Unlock()
	return n.url
}

// FeedURL is the URL of one feed's RSS document.
func (n *Newsroom) FeedURL(feed string) string { return n.URL() + "/feeds/" + feed + ".xml" }

// Published is the number of articles published since the start (the
// initial ones not counted).
func (n *Newsroom) Published() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.published
}

func (n *Newsroom) publishLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		feed := n.Publish()
		if n.pinger == nil {
			continue
		}
		if err := n.pinger.Poll(ctx, feed); err != nil && ctx.Err() == nil {
			n.log.WarnContext(ctx, "newsroom: ping after publishing failed; nudge will see the article at the next poll", "feed", feed, "err", err)
		}
	}
}

// Publish adds one article to a random feed (headlines most often) and
// returns the feed's id.
func (n *Newsroom) Publish() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var feed string
	switch r := n.rng.IntN(10); {
	case r < 5:
		feed = "headlines"
	case r < 8:
		feed = "recent"
	default:
		feed = "popular"
	}
	n.addLocked(feed, n.now())
	n.published++
	return feed
}

func (n *Newsroom) addLocked(feed string, at time.Time) {
	d := n.feeds[feed]
	n.seq++
	a := article{
		guid:      feed + "-" + strconv.Itoa(n.seq),
		title:     headline(n.rng),
		published: at.UTC().Truncate(time.Second),
	}
	a.summary = "Simulated story " + strconv.Itoa(n.seq) + " of the nudge devstack news room: " + a.title + "."
	d.articles = append([]article{a}, d.articles...)
	if len(d.articles) > n.cfg.Keep {
		d.articles = d.articles[:n.cfg.Keep]
	}
	d.version++
	d.modified = a.published
}

var (
	subjects = []string{"City council", "Central bank", "Local team", "University lab", "Rail operator", "Weather service",
		"Museum", "Health ministry", "Tech startup", "Harbour authority", "School board", "Orchestra"}
	verbs = []string{"approves", "delays", "unveils", "questions", "celebrates", "cancels", "expands", "reviews",
		"wins", "announces"}
	objects = []string{"new budget", "night trains", "record season", "flood defences", "bike lanes", "summer festival",
		"vaccine trial", "harbour expansion", "open data plan", "ticket prices", "stadium plan", "heat warning"}
)

func headline(r *rand.Rand) string {
	return subjects[r.IntN(len(subjects))] + " " + verbs[r.IntN(len(verbs))] + " " + objects[r.IntN(len(objects))]
}

// rss is the RSS 2.0 document.
type rss struct {
	XMLName xml.Name   `xml:"rss"`
	Version string     `xml:"version,attr"`
	Channel rssChannel `xml:"channel"`
}

type rssChannel struct {
	Title       string    `xml:"title"`
	Link        string    `xml:"link"`
	Description string    `xml:"description"`
	Items       []rssItem `xml:"item"`
}

type rssItem struct {
	GUID        rssGUID `xml:"guid"`
	Title       string  `xml:"title"`
	Link        string  `xml:"link"`
	Description string  `xml:"description"`
	PubDate     string  `xml:"pubDate"`
}

type rssGUID struct {
	IsPermaLink string `xml:"isPermaLink,attr"`
	Value       string `xml:",chardata"`
}

// serveFeed serves /feeds/{feed}.xml with ETag and Last-Modified, and 304
// for a matching conditional GET, as a real news site's CDN does.
func (n *Newsroom) serveFeed(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("feed"), ".xml")
	title := ""
	for _, f := range NewsroomFeeds {
		if f.ID == id {
			title = f.Title
		}
	}
	if !ok || title == "" {
		http.NotFound(w, r)
		return
	}
	n.mu.Lock()
	d := n.feeds[id]
	etag := `"` + id + "-" + strconv.Itoa(d.version) + `"`
	modified := d.modified
	doc := rss{Version: "2.0", Channel: rssChannel{
		Title: title, Link: n.url + "/", Description: title + " from the nudge devstack news room",
	}}
	for _, a := range d.articles {
		doc.Channel.Items = append(doc.Channel.Items, rssItem{
			GUID:  rssGUID{IsPermaLink: "false", Value: a.guid},
			Title: a.title, Link: n.url + "/articles/" + a.guid, Description: a.summary,
			PubDate: a.published.Format(time.RFC1123Z),
		})
	}
	n.mu.Unlock()

	w.Header().Set("ETag", etag)
	w.Header().Set("Last-Modified", modified.UTC().Format(http.TimeFormat))
	w.Header().Set("Cache-Control", "no-cache")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body, err := xml.MarshalIndent(doc, "", "  ")
	if err != nil {
		http.Error(w, "encode feed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/rss+xml; charset=utf-8")
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}

// serveArticle serves a minimal page for an article link.
func (n *Newsroom) serveArticle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Article %s of the nudge devstack news room.\n", r.PathValue("guid"))
}
