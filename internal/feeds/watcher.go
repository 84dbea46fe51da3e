// Package feeds watches the news feeds of the catalogue: it polls them with
// conditional GETs, parses RSS, Atom and JSON Feed into normalised items,
// keeps a capped per-feed item log in Redis with a monotonic cursor, and
// tells a Notifier when a feed has new or changed items.
//
// Several dispatcher replicas share the feeds through per-feed Redis leases;
// the schedule (next poll time), the validators and the "notified up to"
// mark live in the feed's health hash, so a feed is polled once per interval
// across all replicas and a change is never lost when a replica dies or the
// Notifier fails.
package feeds

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/semaphore"

	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/startstop"
)

// Catalog lists the feeds to watch.
type Catalog interface {
	List(ctx context.Context) ([]catalog.Feed, error)
}

// Notifier is told when a feed's item log grew: the items with cursor in
// (since, head] are new or changed, newItems of them. An error makes the
// Watcher call it again on a later loop with the same since (and a head at
// least as high) until it succeeds.
type Notifier interface {
	FeedChanged(ctx context.Context, feed string, since, head int64, newItems int) error
}

// NotifierFunc adapts a function to a Notifier.
type NotifierFunc func(ctx context.Context, feed string, since, head int64, newItems int) error

// FeedChanged calls f.
func (f NotifierFunc) FeedChanged(ctx context.Context, feed string, since, head int64, newItems int) error {
	return f(ctx, feed, since, head, newItems)
}

// ErrAlreadyStarted is returned by Start on a Watcher that was started or
// stopped before: startstop.ErrStarted.
var ErrAlreadyStarted = startstop.ErrStarted

// Config configures a Watcher. Zero fields take the documented defaults.
type Config struct {
	// Tick is how often the loop looks for due feeds. Default 1s.
	Tick time.Duration
	// DefaultInterval is the poll interval of a feed whose catalogue entry
	// has none. Default 5m.
	DefaultInterval time.Duration
	// Jitter spreads polls: each next poll is moved by up to ±Jitter of the
	// interval. Default 0.1; negative disables it.
	Jitter float64
	// RequestTimeout bounds one fetch, body included. Default 30s.
	RequestTimeout time.Duration
	// MaxBodyBytes caps a feed body; a larger one is an error. Default 10 MiB.
	MaxBodyBytes int64
	// MaxRedirects is how many redirects one fetch follows. Default 5.
	MaxRedirects int
	// UserAgent is sent with every fetch.
	UserAgent string
	// CredentialsDir holds the files that feeds name in their Credentials
	// field (catalog.Feed), each the Authorization header value for that
	// feed's origin. A file is read at every fetch, so replacing it rotates
	// the secret. Empty: a feed that names credentials fails its polls.
	CredentialsDir string
	// MaxBackoff caps the delay after consecutive failures (interval × 2^(n-1)).
	// Default 1h.
	MaxBackoff time.Duration
	// LeaseTTL is how long a replica holds a feed while it polls it; it must
	// exceed RequestTimeout. Default 2×RequestTimeout + 10s.
	LeaseTTL time.Duration
	// Concurrency is how many feeds one replica polls at once. Default 8.
	// One more slot is kept for a feed whose poll was asked for (PollNow),
	// so a publisher's ping never waits for a slow feed's slot.
	Concurrency int
	// MaxPerHost is how many of the slots feeds of one host may hold at
	// once. Default Concurrency/4, at least 1.
	MaxPerHost int
	// FairShare is how long a fetch may run while other due feeds wait for
	// a slot: past it, the longest-running fetch is cut (an error, as a
	// timeout) and its slot goes to the feed waiting longest. Default
	// RequestTimeout/3.
	FairShare time.Duration
	// ParseBudget bounds the feed bytes parsed at once across all polls of
	// the replica (parsing takes several times a body's size in memory).
	// Default 2×MaxBodyBytes.
	ParseBudget int64
	// Store and Parser configure the item log and the normaliser.
	Store  StoreConfig
	Parser ParserConfig
}

func (c Config) withDefaults() Config {
	c.Tick = cmp.Or(c.Tick, time.Second)
	c.DefaultInterval = cmp.Or(c.DefaultInterval, 5*time.Minute)
	c.Jitter = cmp.Or(c.Jitter, 0.1)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, 30*time.Second)
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, 10<<20)
	c.MaxRedirects = cmp.Or(c.MaxRedirects, 5)
	c.UserAgent = cmp.Or(c.UserAgent, "nudge-feed-watcher/1 (+https://github.com/nudge-dev/nudge)")
	c.MaxBackoff = cmp.Or(c.MaxBackoff, time.Hour)
	c.LeaseTTL = cmp.Or(c.LeaseTTL, 2*c.RequestTimeout+10*time.Second)
	c.Concurrency = cmp.Or(c.Concurrency, 8)
	c.MaxPerHost = cmp.Or(c.MaxPerHost, max(1, c.Concurrency/4))
	c.FairShare = cmp.Or(c.FairShare, c.RequestTimeout/3)
	c.ParseBudget = cmp.Or(c.ParseBudget, 2*c.MaxBodyBytes)
	return c
}

func (c Config) validate() error {
	switch {
	case c.Tick <= 0:
		return fmt.Errorf("feed watcher: Tick is %v: set it above 0 (default 1s)", c.Tick)
	case c.DefaultInterval <= 0:
		return fmt.Errorf("feed watcher: DefaultInterval is %v: set it above 0 (default 5m)", c.DefaultInterval)
	case c.Jitter >= 1:
		return fmt.Errorf("feed watcher: Jitter is %v: set it below 1 (a fraction of the interval; default 0.1, negative disables)", c.Jitter)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("feed watcher: RequestTimeout is %v: set it above 0 (default 30s)", c.RequestTimeout)
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("feed watcher: MaxBodyBytes is %d: set it to at least 1024 (default 10 MiB)", c.MaxBodyBytes)
	case c.MaxRedirects < 0:
		return fmt.Errorf("feed watcher: MaxRedirects is %d: set it to 0 or more (default 5)", c.MaxRedirects)
	case c.MaxBackoff <= 0:
		return fmt.Errorf("feed watcher: MaxBackoff is %v: set it above 0 (default 1h)", c.MaxBackoff)
	case c.LeaseTTL <= c.RequestTimeout:
		return fmt.Errorf("feed watcher: LeaseTTL %v must exceed RequestTimeout %v: raise LeaseTTL (default 2×RequestTimeout+10s)", c.LeaseTTL, c.RequestTimeout)
	case c.Concurrency < 1:
		return fmt.Errorf("feed watcher: Concurrency is %d: set it to at least 1 (default 8)", c.Concurrency)
	case c.MaxPerHost < 1:
		return fmt.Errorf("feed watcher: MaxPerHost is %d: set NUDGE_FEED_MAX_PER_HOST to at least 1 (default NUDGE_FEED_CONCURRENCY/4)", c.MaxPerHost)
	case c.FairShare <= 0:
		return fmt.Errorf("feed watcher: FairShare is %v: set NUDGE_FEED_FAIR_SHARE above 0 (default NUDGE_FEED_TIMEOUT/3)", c.FairShare)
	case c.ParseBudget < c.MaxBodyBytes:
		return fmt.Errorf("feed watcher: ParseBudget %d is below MaxBodyBytes %d: raise NUDGE_FEED_PARSE_BUDGET (default 2×NUDGE_FEED_MAX_BYTES)", c.ParseBudget, c.MaxBodyBytes)
	}
	return nil
}

// Deps are the Watcher's collaborators.
type Deps struct {
	Redis    redis.UniversalClient // required
	Catalog  Catalog               // required
	Notifier Notifier              // required
	// HTTPClient fetches feeds; its CheckRedirect is replaced by the redirect
	// limit. Default: a client on a clone of http.DefaultTransport.
	HTTPClient *http.Client
}

type metrics struct {
	polls    *prometheus.CounterVec
	items    *prometheus.CounterVec
	latency  prometheus.Histogram
	failures *prometheus.GaugeVec
	notifyEr prometheus.Counter
	loops    prometheus.Counter
	lost     prometheus.Counter
	dropped  prometheus.Counter
	cut      prometheus.Counter
}

func newMetrics(a service.Archetype) (*metrics, error) {
	m := &metrics{
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_feed_polls_total", Help: "Feed polls by result: ok, not_modified, error.",
		}, []string{"result"}),
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_feed_items_total", Help: "Items stored in feed logs by kind: new, changed.",
		}, []string{"kind"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nudge_feed_poll_duration_seconds", Help: "Time to fetch, parse and store one feed.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 10),
		}),
		failures: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nudge_feed_consecutive_failures", Help: "Consecutive failed polls of a feed, as last seen by this replica.",
		}, []string{"feed"}),
		notifyEr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_feed_notify_errors_total", Help: "Notifier calls that failed and will be retried.",
		}),
		loops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_feed_watcher_loops_total", Help: "Scheduling passes of the feed watcher.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_feed_lease_lost_total", Help: "Polls whose lease expired before their state was written.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_feed_items_dropped_total", Help: "Items left out of fetched documents over the item limit (NUDGE_FEED_MAX_ITEMS).",
		}),
		cut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_feed_fetches_cut_total", Help: "Fetches cut after their fair share while other feeds waited for a slot.",
		}),
	}
	m.polls.WithLabelValues("ok")
	m.polls.WithLabelValues("not_modified")
	m.polls.WithLabelValues("error")
	m.items.WithLabelValues("new")
	m.items.WithLabelValues("changed")
	if err := a.Register(m.polls, m.items, m.latency, m.failures, m.notifyEr, m.loops, m.lost, m.dropped, m.cut); err != nil {
		return nil, fmt.Errorf("feed watcher: %w", err)
	}
	return m, nil
}

// Watcher polls the catalogue's feeds on their schedule, stores their items
// and notifies on changes. Several Watchers on one Redis share the work.
type Watcher struct {
	cfg      Config
	rdb      redis.UniversalClient
	catalog  Catalog
	notifier Notifier
	store    *Store
	parser   *Parser
	fetcher  *fetcher
	leases   *leases
	logger   *slog.Logger
	now      func() time.Time
	metrics  *metrics
	sem      chan struct{} // the Concurrency slots
	urgent   chan struct{} // the one slot kept for asked-for polls
	wake     chan struct{} // a slot came free: run a pass now
	budget   *semaphore.Weighted

	life    startstop.Base
	mu      sync.Mutex
	running map[string]*slot // by feed id
}

// slot is one feed being worked on by this replica.
type slot struct {
	host string
	// fetching is when its fetch started; cut ends the fetch. Both are
	// zero outside the fetch.
	fetching time.Time
	cut      context.CancelCauseFunc
}

// NewWatcher returns a Watcher; cfg's zero fields take their defaults.
func NewWatcher(a service.Archetype, cfg Config, d Deps) (*Watcher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	switch {
	case d.Redis == nil:
		return nil, errors.New("feed watcher: Deps.Redis is nil: pass the Redis client")
	case d.Catalog == nil:
		return nil, errors.New("feed watcher: Deps.Catalog is nil: pass the feed catalogue")
	case d.Notifier == nil:
		return nil, errors.New("feed watcher: Deps.Notifier is nil: pass the fan-out notifier")
	}
	store, err := NewStore(cfg.Store, d.Redis)
	if err != nil {
		return nil, err
	}
	parser, err := NewParser(cfg.Parser)
	if err != nil {
		return nil, err
	}
	a = a.WithDefaults()
	m, err := newMetrics(a)
	if err != nil {
		return nil, err
	}
	client := d.HTTPClient
	if client == nil {
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	logger, now := a.Logger, a.Clock
	tok := make([]byte, 12)
	_, _ = crand.Read(tok)
	return &Watcher{
		cfg:      cfg,
		rdb:      d.Redis,
		catalog:  d.Catalog,
		notifier: d.Notifier,
		store:    store,
		parser:   parser,
		fetcher:  newFetcher(client, cfg.UserAgent, cfg.RequestTimeout, cfg.MaxBodyBytes, cfg.MaxRedirects),
		leases:   &leases{rdb: d.Redis, token: hex.EncodeToString(tok), ttl: cfg.LeaseTTL},
		logger:   logger,
		now:      now,
		metrics:  m,
		sem:      make(chan struct{}, cfg.Concurrency),
		urgent:   make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
		budget:   semaphore.NewWeighted(cfg.ParseBudget),
		running:  make(map[string]*slot),
	}, nil
}

// Store returns the item store the Watcher writes, for the sync read.
func (w *Watcher) Store() *Store { return w.store }

// Health returns the poll state of feed.
func (w *Watcher) Health(ctx context.Context, feed string) (Health, error) {
	return ReadHealth(ctx, w.rdb, feed)
}

// Start starts the polling loop. It returns at once; Stop ends the loop,
// and so does the end of ctx. It follows startstop: a second Start, or a
// Start after Stop, returns ErrAlreadyStarted.
func (w *Watcher) Start(ctx context.Context) error { return w.life.Start(ctx, startstop.Loop(w.run)) }

// Stop ends the loop and waits for in-flight polls to return. It is safe to
// call twice, or before Start.
func (w *Watcher) Stop() { w.life.Stop() }

// Stopped is closed once Stop has finished.
func (w *Watcher) Stopped() <-chan struct{} { return w.life.Stopped() }

func (w *Watcher) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(w.cfg.Tick)
	defer t.Stop()
	for {
		w.pass(ctx, &wg)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.wake:
		}
	}
}

// pass looks for feeds that are due (or have an unnotified change), takes
// their leases and hands them to workers: the longest-due first, at most
// MaxPerHost per host, a feed asked for by PollNow in the spare slot when
// the others are taken. When due feeds are left waiting, fetches past their
// FairShare are cut to make room.
func (w *Watcher) pass(ctx context.Context, wg *sync.WaitGroup) {
	defer w.metrics.loops.Inc()
	list, err := w.catalog.List(ctx)
	if err != nil {
		if ctx.Err() == nil {
			w.logger.ErrorContext(ctx, "list feed catalogue", "err", err)
		}
		return
	}
	cands := make([]catalog.Feed, 0, len(list))
	w.mu.Lock()
	for _, f := range list {
		if w.running[f.ID] == nil {
			cands = append(cands, f)
		}
	}
	w.mu.Unlock()
	if len(cands) == 0 {
		return
	}
	cmds := make([]*redis.SliceCmd, len(cands))
	_, err = w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, f := range cands {
			cmds[i] = p.HMGet(ctx, keys.FeedHealth(f.ID), hNextPoll, hHead, hNotified)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			w.logger.ErrorContext(ctx, "read feed schedule", "err", err)
		}
		return
	}
	now := w.now().UnixMilli()
	type dueFeed struct {
		f   catalog.Feed
		due int64 // next poll time, or now for a pending notification
	}
	var due []dueFeed
	for i, f := range cands {
		v := cmds[i].Val()
		next, head, notified := anyInt(v, 0), anyInt(v, 1), anyInt(v, 2)
		if next > now && head <= notified {
			continue
		}
		due = append(due, dueFeed{f, min(next, now)})
	}
	slices.SortStableFunc(due, func(a, b dueFeed) int { return cmp.Compare(a.due, b.due) })
	waiting := 0
	for _, d := range due {
		host := hostOf(d.f.URL)
		w.mu.Lock()
		n := 0
		for _, s := range w.running {
			if s.host == host {
				n++
			}
		}
		w.mu.Unlock()
		if n >= w.cfg.MaxPerHost {
			continue // its host has its share; the feed waits for its own host
		}
		var release chan struct{}
		select {
		case w.sem <- struct{}{}:
			release = w.sem
		default:
			if d.due != 0 {
				waiting++
				continue
			}
			select { // asked for by PollNow: the spare slot
			case w.urgent <- struct{}{}:
				release = w.urgent
			default:
				waiting++
				continue
			}
		}
		ok, err := w.leases.acquire(ctx, d.f.ID)
		if err != nil || !ok {
			<-release
			if err != nil && ctx.Err() == nil {
				w.logger.ErrorContext(ctx, "acquire feed lease", "feed", d.f.ID, "err", err)
			}
			continue
		}
		s := &slot{host: host}
		w.mu.Lock()
		w.running[d.f.ID] = s
		w.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				w.mu.Lock()
				delete(w.running, d.f.ID)
				w.mu.Unlock()
				<-release
				select {
				case w.wake <- struct{}{}:
				default:
				}
			}()
			w.work(ctx, d.f, s)
		}()
	}
	if waiting > 0 {
		w.cutLongest(waiting)
	}
}

// ErrFairShare ends a fetch that ran past Config.FairShare while other
// feeds waited for a slot.
var ErrFairShare = errors.New("fetch cut after its fair share: other feeds were waiting")

// cutLongest cuts up to n fetches that have run past FairShare, the
// longest-running first.
func (w *Watcher) cutLongest(n int) {
	// Elapsed time on this replica, not the shared (injectable) clock.
	limit := time.Now().Add(-w.cfg.FairShare)
	w.mu.Lock()
	defer w.mu.Unlock()
	var long []*slot
	for _, s := range w.running {
		if s.cut != nil && s.fetching.Before(limit) {
			long = append(long, s)
		}
	}
	slices.SortFunc(long, func(a, b *slot) int { return a.fetching.Compare(b.fetching) })
	for _, s := range long[:min(n, len(long))] {
		s.cut(ErrFairShare)
		s.cut = nil
		w.metrics.cut.Inc()
	}
}

// hostOf is the host (with port) of a feed URL, the unit of MaxPerHost.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return strings.ToLower(u.Host)
}

func anyInt(v []any, i int) int64 {
	if i >= len(v) {
		return 0
	}
	s, _ := v[i].(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// work polls a leased feed if it is still due, then notifies pending
// changes, then gives the lease back.
func (w *Watcher) work(ctx context.Context, f catalog.Feed, s *slot) {
	defer func() {
		// Release even when ctx is done, so the feed moves at once.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := w.leases.release(rctx, f.ID); err != nil {
			w.logger.WarnContext(ctx, "release feed lease", "feed", f.ID, "err", err)
		}
	}()
	h, err := ReadHealth(ctx, w.rdb, f.ID)
	if err != nil {
		if ctx.Err() == nil {
			w.logger.ErrorContext(ctx, "read feed health", "feed", f.ID, "err", err)
		}
		return
	}
	// Re-checked under the lease: another replica may have polled the feed
	// between our schedule read and our lease.
	if !h.NextPoll.After(w.now()) {
		if err := w.poll(ctx, f, h, s); err != nil {
			return
		}
	}
	w.notify(ctx, f.ID)
}

// poll fetches, parses and stores one feed and records the outcome in its
// health hash. It returns an error only when the state could not be
// written (ctx done, Redis down, lease lost). A PollNow that arrives while
// it runs (the health's poll generation moved past h's) makes the feed due
// again at once instead of an interval later.
func (w *Watcher) poll(ctx context.Context, f catalog.Feed, h Health, s *slot) error {
	start := w.now()
	interval := cmp.Or(f.PollInterval, w.cfg.DefaultInterval)
	res, err := w.fetch(ctx, f, h, s, start)
	result := "ok"
	var saved SaveResult
	dropped := 0
	if err == nil && res.Status == http.StatusOK {
		var doc Document
		doc, err = w.parse(ctx, res)
		if err == nil {
			if err = w.leases.renew(ctx, f.ID); err != nil {
				w.metrics.lost.Inc()
				return err
			}
			items := doc.Items
			if doc.OldestFirst {
				items = slices.Clone(items)
				slices.Reverse(items) // Save takes them newest first
			}
			dropped = doc.Dropped
			saved, err = w.store.Save(ctx, f.ID, items, start)
			if err != nil && ctx.Err() == nil {
				w.logger.ErrorContext(ctx, "store feed items", "feed", f.ID, "err", err)
			}
		}
	} else if err == nil {
		result = "not_modified"
	}
	if ctx.Err() != nil {
		return ctx.Err() // stopping: the feed stays due for whoever polls next
	}
	now := w.now()
	fields := []any{hLastPoll, now.UnixMilli(), hLastStatus, res.Status}
	if err == nil {
		fields = append(fields,
			hLastSuccess, now.UnixMilli(), hLastError, "", hFailures, 0,
			hNextPoll, now.Add(w.jitter(interval)).UnixMilli())
		if res.Status == http.StatusOK || res.ETag != "" || res.LastModified != "" {
			fields = append(fields, hETag, res.ETag, hLastModified, res.LastModified)
		}
		if res.Status == http.StatusOK {
			fields = append(fields, hDropped, dropped)
		}
		w.metrics.failures.WithLabelValues(f.ID).Set(0)
		if dropped > 0 {
			w.metrics.dropped.Add(float64(dropped))
			w.logger.WarnContext(ctx, "feed over the item limit", "feed", f.ID, "dropped", dropped, "limit", w.parser.cfg.MaxItems)
		}
		if saved.New+saved.Changed > 0 {
			w.metrics.items.WithLabelValues("new").Add(float64(saved.New))
			w.metrics.items.WithLabelValues("changed").Add(float64(saved.Changed))
			w.logger.InfoContext(ctx, "feed changed", "feed", f.ID, "new", saved.New, "changed", saved.Changed, "head", saved.Head)
		}
	} else {
		result = "error"
		failures := h.Failures + 1
		delay := w.backoff(interval, failures)
		if se, ok := errors.AsType[*StatusError](err); ok && se.RetryAfter > delay {
			delay = min(se.RetryAfter, w.cfg.MaxBackoff)
		}
		fields = append(fields,
			hLastError, err.Error(), hLastErrorAt, now.UnixMilli(), hFailures, failures,
			hNextPoll, now.Add(delay).UnixMilli())
		w.metrics.failures.WithLabelValues(f.ID).Set(float64(failures))
		w.logger.WarnContext(ctx, "poll feed", "feed", f.ID, "failures", failures, "retry_in", delay, "err", err)
	}
	w.metrics.polls.WithLabelValues(result).Inc()
	w.metrics.latency.Observe(now.Sub(start).Seconds())
	if cerr := w.leases.commitPoll(ctx, f.ID, h.PollGen, fields...); cerr != nil {
		if errors.Is(cerr, ErrLeaseLost) {
			w.metrics.lost.Inc()
		}
		if ctx.Err() == nil {
			w.logger.ErrorContext(ctx, "record feed poll", "feed", f.ID, "err", cerr)
		}
		return cerr
	}
	return nil
}

// fetch fetches the feed under a context that cutLongest can end while
// the fetch runs.
func (w *Watcher) fetch(ctx context.Context, f catalog.Feed, h Health, s *slot, now time.Time) (fetchResult, error) {
	auth, err := readCredentials(w.cfg.CredentialsDir, f)
	if err != nil {
		return fetchResult{}, err
	}
	fctx, cut := context.WithCancelCause(ctx)
	defer cut(nil)
	w.mu.Lock()
	s.fetching, s.cut = time.Now(), cut
	w.mu.Unlock()
	res, err := w.fetcher.fetch(fctx, f.URL, auth, h.ETag, h.LastModified, now)
	w.mu.Lock()
	s.fetching, s.cut = time.Time{}, nil
	w.mu.Unlock()
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(fctx), ErrFairShare) {
		err = fmt.Errorf("fetch feed %s: %w", f.URL, ErrFairShare)
	}
	return res, err
}

// parse parses a fetched body within the replica's ParseBudget: it waits
// until the body's size is free in the budget, so the memory that parsing
// takes is bounded however many polls run at once.
func (w *Watcher) parse(ctx context.Context, res fetchResult) (Document, error) {
	n := min(max(int64(len(res.Body)), 1), w.cfg.ParseBudget)
	if err := w.budget.Acquire(ctx, n); err != nil {
		return Document{}, fmt.Errorf("wait for parse budget: %w", err)
	}
	defer w.budget.Release(n)
	return w.parser.Parse(res.Body, res.ContentType, res.URL)
}

// notify tells the Notifier about items past the feed's "notified" mark and
// moves the mark on success. On failure the mark stays, and the next pass
// (this replica or another) tries again.
func (w *Watcher) notify(ctx context.Context, feed string) {
	h, err := ReadHealth(ctx, w.rdb, feed)
	if err != nil || h.Head <= h.Notified {
		return
	}
	n, err := w.rdb.ZCount(ctx, keys.FeedItems(feed), "("+strconv.FormatInt(h.Notified, 10), "+inf").Result()
	if err != nil {
		return
	}
	if err := w.notifier.FeedChanged(ctx, feed, h.Notified, h.Head, int(n)); err != nil {
		w.metrics.notifyEr.Inc()
		if ctx.Err() == nil {
			w.logger.ErrorContext(ctx, "notify feed change", "feed", feed, "since", h.Notified, "head", h.Head, "err", err)
		}
		return
	}
	if err := w.leases.commit(ctx, feed, hNotified, h.Head); err != nil && ctx.Err() == nil {
		w.logger.ErrorContext(ctx, "record feed notified", "feed", feed, "head", h.Head, "err", err)
	}
}

func (w *Watcher) jitter(d time.Duration) time.Duration {
	if w.cfg.Jitter <= 0 {
		return d
	}
	j := (rand.Float64()*2 - 1) * w.cfg.Jitter
	return d + time.Duration(float64(d)*j)
}

// backoff is the delay after the n-th consecutive failure: the interval
// doubled per failure past the first, capped at MaxBackoff (but never
// below the interval), with jitter.
func (w *Watcher) backoff(interval time.Duration, n int) time.Duration {
	d := interval
	for i := 1; i < n && d < w.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, max(w.cfg.MaxBackoff, interval))
	return w.jitter(d)
}
