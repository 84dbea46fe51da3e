-- track.lua starts tracking the time-to-fresh of a feed's new items: each
-- cursor in (since, head] not tracked yet gets a state with its publish
-- time and the audience per platform (the denominator), and the feed
-- keeps at most max items, none older than the window.
--
-- KEYS[1] tracked items (ZSET, member and score: cursor)
-- KEYS[2] item states (HASH, cursor -> JSON state)
-- ARGV[1] since (exclusive)
-- ARGV[2] head (inclusive)
-- ARGV[3] publish time, unix ms
-- ARGV[4] max items tracked per feed
-- ARGV[5] window, ms: items published before publish time - window go
-- ARGV[6..] platform, audience pairs
--
-- State JSON: {"p": publish ms, "d": {platform: audience},
--              "n": {platform: devices synced past it},
--              "l": {"<platform>:<share>": ms from publish to the share}}
--
-- Returns the number of items newly tracked.
local since, head = tonumber(ARGV[1]), tonumber(ARGV[2])
local at, max, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local d = {}
for i = 6, #ARGV, 2 do d[ARGV[i]] = tonumber(ARGV[i + 1]) end
local state = cjson.encode({p = at, d = d, n = {}, l = {}})
local added = 0
for c = math.max(since + 1, head - max + 1), head do
  if redis.call('ZADD', KEYS[1], 'NX', c, c) == 1 then
    redis.call('HSET', KEYS[2], c, state)
    added = added + 1
  end
end
-- Bound: at most max items, none published before the window.
local extra = redis.call('ZCARD', KEYS[1]) - max
if extra > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], extra)
  for i = 1, #popped, 2 do redis.call('HDEL', KEYS[2], popped[i]) end
end
while true do
  local first = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if not first then break end
  local s = redis.call('HGET', KEYS[2], first)
  if s and cjson.decode(s).p >= at - window then break end
  redis.call('ZREM', KEYS[1], first)
  redis.call('HDEL', KEYS[2], first)
end
return added
