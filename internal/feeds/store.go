package feeds

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// saveScript stores one poll result of a feed atomically; save.lua states
// its KEYS/ARGV contract, the identity rule and its return values.
//
//go:embed save.lua
var saveLua string

var saveScript = redis.NewScript(saveLua)

// StoreConfig configures a Store.
type StoreConfig struct {
	// LogCap is how many items a feed's item log keeps. Default 200.
	LogCap int
	// Memory is how long the Store remembers an article it announced after
	// it was last seen in the feed: an article that leaves the feed and
	// comes back within Memory is not announced again, however often it
	// does. Default 30 days (DefaultMemory).
	Memory time.Duration
}

// DefaultMemory is StoreConfig.Memory when unset.
const DefaultMemory = 30 * 24 * time.Hour

func (c StoreConfig) withDefaults() StoreConfig {
	c.LogCap = cmp.Or(c.LogCap, 200)
	c.Memory = cmp.Or(c.Memory, DefaultMemory)
	return c
}

func (c StoreConfig) validate() error {
	if c.LogCap < 1 {
		return fmt.Errorf("feeds store: LogCap is %d: set it to at least 1", c.LogCap)
	}
	if c.Memory < time.Second {
		return fmt.Errorf("feeds store: Memory is %v: set NUDGE_FEED_MEMORY to at least 1s (default 720h, 30 days)", c.Memory)
	}
	return nil
}

// sweepEvery is how often a feed's memory is swept of records older than
// Memory: a tenth of it, at most an hour.
func (c StoreConfig) sweepEvery() time.Duration { return min(c.Memory/10, time.Hour) }

// Store keeps the per-feed item logs in Redis: capped, ordered by a
// monotonic per-feed cursor, with change detection by identity and hash
// against a memory of every article seen in the last StoreConfig.Memory.
type Store struct {
	rdb redis.UniversalClient
	cfg StoreConfig
}

// NewStore returns a Store on rdb (a *redis.Client or *redis.ClusterClient).
func NewStore(cfg StoreConfig, rdb redis.UniversalClient) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, cfg: cfg}, nil
}

// SaveResult is what one Save changed.
type SaveResult struct {
	Since   int64 // the feed's cursor before the save
	Head    int64 // the feed's cursor after it
	New     int   // items never seen before
	Changed int   // seen items whose content hash changed
	Records int   // records in the feed's memory after the save
}

// Save stores the items of one fetched document (newest first) atomically
// and returns the new cursor range. Items already stored with the same hash
// change nothing, so a re-fetched or re-ordered document is a no-op; an
// item is matched to a stored article by the identity rule of save.lua.
// Cursors go to the oldest item first: by published (else updated) time
// when every item has one, else in reverse of the given order.
func (s *Store) Save(ctx context.Context, feed string, items []Item, now time.Time) (SaveResult, error) {
	args := make([]any, 0, 4+5*len(items))
	args = append(args, now.UnixMilli(), s.cfg.LogCap, s.cfg.Memory.Milliseconds(), s.cfg.sweepEvery().Milliseconds())
	links := linkKeys(items)
	for _, it := range chronological(items) {
		id, guid, link, hash := it.ID, it.GUID, links[it.ID], it.Hash
		// The log member carries the id and the cursors; the JSON the rest.
		it.Cursor, it.ID, it.Replaces = 0, "", 0
		body, err := json.Marshal(it)
		if err != nil {
			return SaveResult{}, fmt.Errorf("encode item %s of feed %s: %w", id, feed, err)
		}
		args = append(args, id, guid, link, hash, body)
	}
	keyList := []string{keys.FeedItems(feed), keys.FeedSeen(feed), keys.FeedCursor(feed), keys.FeedHealth(feed)}
	res, err := saveScript.Run(ctx, s.rdb, keyList, args...).Int64Slice()
	if err != nil {
		return SaveResult{}, fmt.Errorf("store items of feed %s: %w", feed, err)
	}
	if len(res) != 5 {
		return SaveResult{}, fmt.Errorf("store items of feed %s: script returned %d values, want 5", feed, len(res))
	}
	return SaveResult{Since: res[0], Head: res[1], New: int(res[2]), Changed: int(res[3]), Records: int(res[4])}, nil
}

// linkKeys maps each item's id to its link key: its URL, or, when items of
// different content share that URL in the document, "<URL>#<hash8>" (as
// assignIDs names items without GUID), so that a link alias never joins
// two articles of one document.
func linkKeys(items []Item) map[string]string {
	hashes := make(map[string]map[string]bool, len(items))
	for _, it := range items {
		if it.URL == "" {
			continue
		}
		if hashes[it.URL] == nil {
			hashes[it.URL] = map[string]bool{}
		}
		hashes[it.URL][it.Hash] = true
	}
	out := make(map[string]string, len(items))
	for _, it := range items {
		switch {
		case it.URL == "":
		case len(hashes[it.URL]) > 1:
			out[it.ID] = it.URL + "#" + hashPrefix(it.Hash)
		default:
			out[it.ID] = it.URL
		}
	}
	return out
}

func chronological(items []Item) []Item {
	out := slices.Clone(items)
	slices.Reverse(out)
	for _, it := range out {
		if itemTimeKey(it).IsZero() {
			return out
		}
	}
	slices.SortStableFunc(out, func(a, b Item) int { return itemTimeKey(a).Compare(itemTimeKey(b)) })
	return out
}

func itemTimeKey(it Item) time.Time {
	if !it.Published.IsZero() {
		return it.Published
	}
	return it.Updated
}

// Page is one page of a feed's item log.
type Page struct {
	Items []Item // cursor > since, in cursor order
	// Next is the cursor to pass as since for the following page: the last
	// returned item's cursor when the page is full, else the feed's head.
	Next int64
	// Head is the feed's current cursor.
	Head int64
	// Truncated reports a gap: items after since were dropped from the
	// capped log before they were read (since is older than the log keeps),
	// or since is beyond the head (the feed's log was reset). The page then
	// starts at the oldest retained item; the app should refresh fully.
	Truncated bool
}

// Items returns up to limit items of feed with cursor > since, in cursor
// order, and the cursor to pass next. See Page for the gap flag.
func (s *Store) Items(ctx context.Context, feed string, since int64, limit int) (items []Item, next int64, err error) {
	p, err := s.Page(ctx, feed, since, limit)
	return p.Items, p.Next, err
}

// Page is Items with the head and the gap flag.
func (s *Store) Page(ctx context.Context, feed string, since int64, limit int) (Page, error) {
	if limit <= 0 {
		limit = 50
	}
	if since < 0 {
		since = 0
	}
	head, trimmed, err := s.headTrimmed(ctx, feed)
	if err != nil {
		return Page{}, err
	}
	p := Page{Head: head}
	if since > head || since < trimmed {
		p.Truncated = true
	}
	from := since
	if since > head {
		from = 0
	}
	zs, err := s.zrange(ctx, feed, &redis.ZRangeArgs{
		Key: keys.FeedItems(feed), Start: "(" + strconv.FormatInt(from, 10), Stop: "+inf",
		ByScore: true, Count: int64(limit),
	})
	if err != nil {
		return Page{}, err
	}
	p.Items = zs
	p.Next = head
	if len(zs) == limit {
		p.Next = zs[len(zs)-1].Cursor
	}
	return p, nil
}

// Heads returns each feed's current cursor (0 for a feed never stored),
// in order, read in one pipeline.
func (s *Store) Heads(ctx context.Context, feeds ...string) ([]int64, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(feeds))
	for i, f := range feeds {
		cmds[i] = pipe.Get(ctx, keys.FeedCursor(f))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read heads of feeds %v: %w", feeds, err)
	}
	out := make([]int64, len(feeds))
	for i, c := range cmds {
		h, err := c.Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read head of feed %s: %w", feeds[i], err)
		}
		out[i] = h
	}
	return out, nil
}

// Latest returns the newest n items of feed, newest first.
func (s *Store) Latest(ctx context.Context, feed string, n int) ([]Item, error) {
	if n <= 0 {
		return nil, nil
	}
	return s.zrange(ctx, feed, &redis.ZRangeArgs{Key: keys.FeedItems(feed), Start: 0, Stop: n - 1, Rev: true})
}

func (s *Store) headTrimmed(ctx context.Context, feed string) (head, trimmed int64, err error) {
	c := s.rdb
	var hc *redis.StringCmd
	var tc *redis.StringCmd
	_, err = c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		hc = p.Get(ctx, keys.FeedCursor(feed))
		tc = p.HGet(ctx, keys.FeedHealth(feed), "trimmed")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, 0, fmt.Errorf("read head of feed %s: %w", feed, err)
	}
	head, _ = hc.Int64()
	trimmed, _ = tc.Int64()
	return head, trimmed, nil
}

func (s *Store) zrange(ctx context.Context, feed string, a *redis.ZRangeArgs) ([]Item, error) {
	zs, err := s.rdb.ZRangeArgsWithScores(ctx, *a).Result()
	if err != nil {
		return nil, fmt.Errorf("read items of feed %s: %w", feed, err)
	}
	return decodeItems(feed, zs)
}

// decodeItems decodes item log members with their cursors.
func decodeItems(feed string, zs []redis.Z) ([]Item, error) {
	out := make([]Item, 0, len(zs))
	for _, z := range zs {
		m, _ := z.Member.(string)
		id, replaces, body := splitMember(m)
		var it Item
		if err := json.Unmarshal([]byte(body), &it); err != nil {
			return nil, fmt.Errorf("decode item of feed %s at cursor %d: %w", feed, int64(z.Score), err)
		}
		if id != "" {
			it.ID = id
		}
		it.Replaces = replaces
		it.Cursor = int64(z.Score)
		out = append(out, it)
	}
	return out, nil
}

// splitMember splits an item log member "<cursor>\x1f<replaces>\x1f<id>\x1f<json>";
// a member of the earlier format "<cursor> <json>" gives no id (the JSON
// has it) and no replaces.
func splitMember(m string) (id string, replaces int64, body string) {
	parts := strings.SplitN(m, "\x1f", 4)
	if len(parts) == 4 {
		replaces, _ = strconv.ParseInt(parts[1], 10, 64)
		return parts[2], replaces, parts[3]
	}
	if i := strings.IndexByte(m, ' '); i >= 0 {
		m = m[i+1:]
	}
	return "", 0, m
}

// Range is the page of a closed cursor range (since, until] of feed: up to
// limit items with since < cursor ≤ until, in cursor order, read with the
// head and the trim point in one round trip (one MULTI in the feed's
// slot). Next is the last item's cursor when the page is full, else until;
// Head is the feed's current cursor, so the caller can refuse a range that
// ends beyond it. Truncated reports that items after since were trimmed
// from the capped log: the page then holds only what the log still has.
func (s *Store) Range(ctx context.Context, feed string, since, until int64, limit int) (Page, error) {
	if limit <= 0 {
		limit = 50
	}
	var hc, tc *redis.StringCmd
	var zc *redis.ZSliceCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		hc = p.Get(ctx, keys.FeedCursor(feed))
		tc = p.HGet(ctx, keys.FeedHealth(feed), "trimmed")
		zc = p.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
			Key: keys.FeedItems(feed), Start: "(" + strconv.FormatInt(since, 10), Stop: strconv.FormatInt(until, 10),
			ByScore: true, Count: int64(limit),
		})
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return Page{}, fmt.Errorf("read range of feed %s: %w", feed, err)
	}
	head, _ := hc.Int64()
	trimmed, _ := tc.Int64()
	items, err := decodeItems(feed, zc.Val())
	if err != nil {
		return Page{}, err
	}
	p := Page{Items: items, Next: until, Head: head, Truncated: since < trimmed}
	if len(items) == limit {
		p.Next = items[len(items)-1].Cursor
	}
	return p, nil
}
