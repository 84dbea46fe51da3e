package httpapi

import (
	"container/list"
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/nudge-dev/nudge/internal/service"
)

// rangeKey names one closed-range answer: a feed, its range (since,
// until] and the page size.
type rangeKey struct {
	feed         string
	since, until int64
	limit        int
}

func (k rangeKey) String() string {
	return k.feed + "\x00" + strconv.FormatInt(k.since, 10) + "\x00" + strconv.FormatInt(k.until, 10) + "\x00" + strconv.Itoa(k.limit)
}

// rangeAnswer is the encoded answer of a closed range.
type rangeAnswer struct {
	body []byte // the JSON body, newline included
	etag string // strong: a hash of body
	// truncated answers (the range's start fell out of the capped log)
	// are never kept: later trims may shrink them further.
	truncated bool
}

// entryOverhead is what one entry costs beyond its body and feed id: the
// list element, the map entry, the key and the ETag.
const entryOverhead = 160

// itemCache keeps the answers of hot closed ranges of the sync read in
// memory, least recently used first out, within a byte budget. A closed
// range never gains items (its end is at or below the feed's head), so
// an entry stays right until it is evicted; an edit of one of its items
// moves the item to a new cursor beyond the range, where the app reads
// it as an edit (docs/mobile.md). Loads are single-flight: concurrent
// misses of one range share one Redis read.
type itemCache struct {
	max     int64
	timeout time.Duration // bound of a shared load, detached from its first caller

	mu    sync.Mutex
	ll    *list.List // of *cacheEntry, most recently used at the front
	m     map[rangeKey]*list.Element
	bytes int64

	sf singleflight.Group

	hits, misses prometheus.Counter
	size         prometheus.Gauge
}

type cacheEntry struct {
	key rangeKey
	ans rangeAnswer
}

func (e *cacheEntry) cost() int64 { return int64(len(e.ans.body)+len(e.key.feed)) + entryOverhead }

// newItemCache returns a cache of at most maxBytes (at least 1) that
// registers its metrics on a's registerer.
func newItemCache(a service.Archetype, maxBytes int64, timeout time.Duration) (*itemCache, error) {
	c := &itemCache{
		max: maxBytes, timeout: timeout, ll: list.New(), m: map[rangeKey]*list.Element{},
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_api_item_cache_hits_total",
			Help: "Closed-range sync reads answered from the in-process cache.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_api_item_cache_misses_total",
			Help: "Closed-range sync reads that read Redis (one per range however many requests waited for it).",
		}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nudge_api_item_cache_bytes",
			Help: "Bytes held by the in-process cache of closed ranges.",
		}),
	}
	if err := a.Register(c.hits, c.misses, c.size); err != nil {
		return nil, err
	}
	return c, nil
}

// get returns the answer of k: from memory, or from load, which runs
// once for all concurrent callers of k on a context detached from the
// caller that started it (bounded by the cache's timeout), so a caller
// that hangs up does not fail the others. Each caller still returns when
// its own ctx ends. Answers load returns untruncated are kept.
func (c *itemCache) get(ctx context.Context, k rangeKey, load func(context.Context) (rangeAnswer, error)) (rangeAnswer, error) {
	if ans, ok := c.lookup(k); ok {
		c.hits.Inc()
		return ans, nil
	}
	ch := c.sf.DoChan(k.String(), func() (any, error) {
		if ans, ok := c.lookup(k); ok { // filled while this caller waited for the flight
			c.hits.Inc()
			return ans, nil
		}
		c.misses.Inc()
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		ans, err := load(lctx)
		if err == nil && !ans.truncated {
			c.put(k, ans)
		}
		return ans, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return rangeAnswer{}, r.Err
		}
		return r.Val.(rangeAnswer), nil
	case <-ctx.Done():
		return rangeAnswer{}, ctx.Err()
	}
}

func (c *itemCache) lookup(k rangeKey) (rangeAnswer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if !ok {
		return rangeAnswer{}, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*cacheEntry).ans, true
}

// put keeps ans under k and evicts the least recently used entries over
// the budget. An answer larger than a quarter of the budget is not kept.
func (c *itemCache) put(k rangeKey, ans rangeAnswer) {
	e := &cacheEntry{key: k, ans: ans}
	if e.cost() > c.max/4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; ok {
		return
	}
	c.m[k] = c.ll.PushFront(e)
	c.bytes += e.cost()
	for c.bytes > c.max {
		old := c.ll.Back()
		oe := old.Value.(*cacheEntry)
		c.ll.Remove(old)
		delete(c.m, oe.key)
		c.bytes -= oe.cost()
	}
	c.size.Set(float64(c.bytes))
}
