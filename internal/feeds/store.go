package feeds

import (
	"cmp"
	"context"
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

// saveScript stores one poll result of a feed atomically.
//
// KEYS[1] feed:{f}:items   ZSET  item JSON scored by cursor (the item log)
// KEYS[2] feed:{f}:seen    HASH  identity -> "<hash> <cursor> <last seen ms>"
// KEYS[3] feed:{f}:cursor  STRING the feed's last assigned cursor
// KEYS[4] feed:{f}:health  HASH  fields head, items, trimmed are written
// ARGV[1] now, unix ms
// ARGV[2] log cap: the item log keeps the newest N entries
// ARGV[3] seen cap: the seen set is trimmed back to 3/4 of this when it grows
//
//	beyond it, forgetting the identities seen longest ago (never one of
//	this poll's)
//
// ARGV[4..] triples, oldest item first: identity, content hash, item JSON
//
// An unseen identity is new; a seen one with another hash is changed: its
// old log entry is removed and it is appended again. Each new or changed
// item gets the next cursor. Returns {since, head, new, changed}: the
// cursor before this call, the cursor after it, and the counts.
var saveScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local logCap = tonumber(ARGV[2])
local seenCap = tonumber(ARGV[3])
local since = tonumber(redis.call('GET', KEYS[3]) or '0')
local head = since
local new, changed = 0, 0
for i = 4, #ARGV, 3 do
  local id, hash, body = ARGV[i], ARGV[i+1], ARGV[i+2]
  local prev = redis.call('HGET', KEYS[2], id)
  local cur
  if prev then
    local h, c = string.match(prev, '^(%S+) (%d+)')
    if h == hash then
      cur = c
    else
      redis.call('ZREMRANGEBYSCORE', KEYS[1], c, c)
      changed = changed + 1
    end
  else
    new = new + 1
  end
  if not cur then
    head = head + 1
    cur = tostring(head)
    redis.call('ZADD', KEYS[1], head, cur .. ' ' .. body)
  end
  redis.call('HSET', KEYS[2], id, hash .. ' ' .. cur .. ' ' .. ARGV[1])
end
if head ~= since then
  redis.call('SET', KEYS[3], head)
end
local n = redis.call('ZCARD', KEYS[1])
if n > logCap then
  local last = redis.call('ZRANGE', KEYS[1], n - logCap - 1, n - logCap - 1, 'WITHSCORES')
  local old = tonumber(redis.call('HGET', KEYS[4], 'trimmed') or '0')
  if tonumber(last[2]) > old then
    redis.call('HSET', KEYS[4], 'trimmed', last[2])
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - logCap - 1)
  n = logCap
end
redis.call('HSET', KEYS[4], 'head', head, 'items', n)
if redis.call('HLEN', KEYS[2]) > seenCap then
  local all = redis.call('HGETALL', KEYS[2])
  local old = {}
  for i = 1, #all, 2 do
    local at = tonumber(string.match(all[i+1], '(%d+)$'))
    if at < now then
      old[#old + 1] = {all[i], at}
    end
  end
  table.sort(old, function(a, b) return a[2] < b[2] end)
  local drop = #all / 2 - math.floor(seenCap * 3 / 4)
  for i = 1, math.min(drop, #old) do
    redis.call('HDEL', KEYS[2], old[i][1])
  end
end
return {since, head, new, changed}
`)

// StoreConfig configures a Store.
type StoreConfig struct {
	// LogCap is how many items a feed's item log keeps. Default 200.
	LogCap int
	// SeenCap bounds the seen set used for change detection. Default
	// 2*LogCap. Identities seen longest ago are forgotten first; those in
	// the latest document never are.
	SeenCap int
}

func (c StoreConfig) withDefaults() StoreConfig {
	c.LogCap = cmp.Or(c.LogCap, 200)
	c.SeenCap = cmp.Or(c.SeenCap, 2*c.LogCap)
	return c
}

func (c StoreConfig) validate() error {
	if c.LogCap < 1 {
		return fmt.Errorf("feeds store: LogCap is %d: set it to at least 1", c.LogCap)
	}
	if c.SeenCap < c.LogCap {
		return fmt.Errorf("feeds store: SeenCap %d is below LogCap %d: set SeenCap to at least LogCap (default 2*LogCap)", c.SeenCap, c.LogCap)
	}
	return nil
}

// Store keeps the per-feed item logs in Redis: capped, ordered by a
// monotonic per-feed cursor, with change detection by identity and hash.
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
}

// Save stores the items of one fetched document atomically and returns the
// new cursor range. Items already stored with the same hash change nothing,
// so a re-fetched or re-ordered document is a no-op. Cursors go to the
// oldest item first: by published (else updated) time when every item has
// one, else in reverse document order (feeds list newest first).
func (s *Store) Save(ctx context.Context, feed string, items []Item, now time.Time) (SaveResult, error) {
	args := make([]any, 0, 3+3*len(items))
	args = append(args, now.UnixMilli(), s.cfg.LogCap, s.cfg.SeenCap)
	for _, it := range chronological(items) {
		it.Cursor = 0
		body, err := json.Marshal(it)
		if err != nil {
			return SaveResult{}, fmt.Errorf("encode item %s of feed %s: %w", it.ID, feed, err)
		}
		args = append(args, it.ID, it.Hash, body)
	}
	keyList := []string{keys.FeedItems(feed), keys.FeedSeen(feed), keys.FeedCursor(feed), keys.FeedHealth(feed)}
	res, err := saveScript.Run(ctx, s.rdb, keyList, args...).Int64Slice()
	if err != nil {
		return SaveResult{}, fmt.Errorf("store items of feed %s: %w", feed, err)
	}
	if len(res) != 4 {
		return SaveResult{}, fmt.Errorf("store items of feed %s: script returned %d values, want 4", feed, len(res))
	}
	return SaveResult{Since: res[0], Head: res[1], New: int(res[2]), Changed: int(res[3])}, nil
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

// Head returns the feed's current cursor (0 for a feed never stored).
func (s *Store) Head(ctx context.Context, feed string) (int64, error) {
	h, err := s.rdb.Get(ctx, keys.FeedCursor(feed)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read head of feed %s: %w", feed, err)
	}
	return h, nil
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
	out := make([]Item, 0, len(zs))
	for _, z := range zs {
		m, _ := z.Member.(string)
		// A member is "<cursor> <json>": the cursor prefix keeps members
		// unique even if an identity's content returns to an old state.
		if i := strings.IndexByte(m, ' '); i >= 0 {
			m = m[i+1:]
		}
		var it Item
		if err := json.Unmarshal([]byte(m), &it); err != nil {
			return nil, fmt.Errorf("decode item of feed %s at cursor %d: %w", feed, int64(z.Score), err)
		}
		it.Cursor = int64(z.Score)
		out = append(out, it)
	}
	return out, nil
}
