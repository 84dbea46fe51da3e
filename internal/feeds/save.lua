-- save: store one poll result of a feed atomically.
--
-- KEYS[1] feed:{f}:items   ZSET   log members "<cursor>\31<replaces>\31<id>\31<item JSON>"
--                                 scored by cursor (the item log)
-- KEYS[2] feed:{f}:seen    HASH   the announced memory: key -> record
--                                 "<cursor>\31<hash>\31<id>\31<guid>\31<link>\31<last seen ms>"
--                                 keys: "g:<id>" (item with a GUID), "l:<link>" (item
--                                 without one, or the link alias of one with a GUID),
--                                 "i:<id>" (no GUID and no usable link key)
-- KEYS[3] feed:{f}:cursor  STRING the feed's last assigned cursor
-- KEYS[4] feed:{f}:health  HASH   fields head, items, trimmed, seen, seen_sweep are written
-- ARGV[1] now, unix ms
-- ARGV[2] log cap: the item log keeps the newest N entries
-- ARGV[3] memory, ms: a record not seen for this long is forgotten
-- ARGV[4] sweep period, ms: how often the memory is swept of old records, and
--         how often an unchanged article's last-seen time is refreshed
-- ARGV[5..] quintuples, oldest item first: id, guid, link key, content hash, item JSON;
--         the link key is the item's link, or "<link>#<hash8>" when items of
--         different content share the link in this document (empty: no link)
--
-- Identity: an item is the article of the record found, in this order:
--   1. exactly: "g:<id>" for an item with a GUID, "l:<link>" for one without
--      (when that record has no GUID either), "i:<id>" otherwise; or a record
--      of the format before this one under the bare id (taken as unchanged);
--   2. by alias, for items still unmatched, in id order: a duplicate-GUID copy
--      by "g:<guid>" with the same hash; else "l:<link key>" when at most one
--      of the item and the record has a GUID, or both have the same GUID.
-- A record last seen more than `memory` ms ago is never matched (the sweep
-- below deletes it later). A record matched once in a call is not matched again by another item.
-- A matched record with the same hash changes nothing but its last-seen
-- time; with another hash the item is edited: its old log entry goes, it is
-- appended at the next cursor with replaces = the old cursor, under the id it
-- was first announced with. An unmatched item is new and gets the next cursor.
--
-- Returns {since, head, new, changed, records}: the cursor before and after
-- this call, the counts, and the records in the memory.
local now = tonumber(ARGV[1])
local logCap = tonumber(ARGV[2])
local memory = tonumber(ARGV[3])
local sweepEvery = tonumber(ARGV[4])
local SEP = '\31'

local function parse(v, key)
  if not v then
    return nil
  end
  local c, h, id, g, l, at = string.match(v, '^(%d+)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31(%d+)$')
  if c and tonumber(at) >= now - memory then
    return {cursor = c, hash = h, id = id, guid = g, link = l, key = key, at = tonumber(at)}
  end
  return nil
end

local items = {}
for i = 5, #ARGV, 5 do
  items[#items + 1] = {id = ARGV[i], guid = ARGV[i + 1], link = ARGV[i + 2], hash = ARGV[i + 3], body = ARGV[i + 4]}
end

local claimed = {}
local function claim(it, r)
  if r and not claimed[r.id] then
    claimed[r.id] = true
    it.rec = r
    return true
  end
  return false
end

-- 1. exact matches
for _, it in ipairs(items) do
  local r
  if it.guid ~= '' then
    local k = 'g:' .. it.id
    r = parse(redis.call('HGET', KEYS[2], k), k)
  elseif it.link ~= '' and it.id == it.link then
    local k = 'l:' .. it.link
    r = parse(redis.call('HGET', KEYS[2], k), k)
    if r and r.guid ~= '' then
      r = nil -- the link alias of an article with a GUID: step 2
    end
  else
    local k = 'i:' .. it.id
    r = parse(redis.call('HGET', KEYS[2], k), k)
  end
  if not r then
    local legacy = redis.call('HGET', KEYS[2], it.id)
    if legacy then
      local lc, lat = string.match(legacy, '^%S+ (%d+) (%d+)$')
      if lc and tonumber(lat) >= now - memory then
        r = {cursor = lc, hash = it.hash, id = it.id, guid = it.guid, link = it.link, legacy = it.id}
      end
    end
  end
  claim(it, r)
end

-- 2. aliases, in id order so that the outcome does not depend on document order
local rest = {}
for _, it in ipairs(items) do
  if not it.rec then
    rest[#rest + 1] = it
  end
end
table.sort(rest, function(a, b) return a.id < b.id end)
for _, it in ipairs(rest) do
  local done = false
  if it.guid ~= '' and it.id ~= it.guid then
    local k = 'g:' .. it.guid
    local r = parse(redis.call('HGET', KEYS[2], k), k)
    if r and r.hash == it.hash then
      done = claim(it, r)
    end
  end
  if not done and it.link ~= '' then
    local k = 'l:' .. it.link
    local r = parse(redis.call('HGET', KEYS[2], k), k)
    if r then
      if it.guid == '' or r.guid == '' or r.guid == it.guid then
        claim(it, r)
      end
    end
  end
end

-- 3. cursors and records, oldest item first
local since = tonumber(redis.call('GET', KEYS[3]) or '0')
local head = since
local new, changed = 0, 0
for _, it in ipairs(items) do
  local r = it.rec
  local cur, id, guid = nil, it.id, it.guid
  if r then
    id = r.id
    if guid == '' then
      guid = r.guid
    end
    if r.legacy then
      redis.call('HDEL', KEYS[2], r.legacy)
    end
  end
  if r and r.hash == it.hash then
    cur = r.cursor
  else
    local replaces = '0'
    if r then
      redis.call('ZREMRANGEBYSCORE', KEYS[1], r.cursor, r.cursor)
      replaces = r.cursor
      changed = changed + 1
      if r.link ~= '' and r.link ~= it.link then
        local old = parse(redis.call('HGET', KEYS[2], 'l:' .. r.link))
        if old and old.id == r.id then
          redis.call('HDEL', KEYS[2], 'l:' .. r.link)
        end
      end
    else
      new = new + 1
    end
    head = head + 1
    cur = tostring(head)
    redis.call('ZADD', KEYS[1], head, cur .. SEP .. replaces .. SEP .. id .. SEP .. it.body)
  end
  local primary
  if it.guid ~= '' then
    primary = 'g:' .. it.id
  elseif it.link ~= '' and it.id == it.link then
    primary = 'l:' .. it.link
  else
    primary = 'i:' .. it.id
  end
  -- An unchanged article found under its own key whose records were
  -- written less than sweepEvery ago keeps them as they are: last-seen
  -- times are refreshed at most that often (so an article may be forgotten
  -- up to sweepEvery before `memory` has passed since it was last seen).
  local fresh = r and r.at and r.hash == it.hash and r.key == primary and now - r.at < sweepEvery
  local rec = cur .. SEP .. it.hash .. SEP .. id .. SEP .. guid .. SEP .. it.link .. SEP .. ARGV[1]
  if fresh then
    -- nothing to write
  elseif it.guid ~= '' then
    redis.call('HSET', KEYS[2], 'g:' .. it.id, rec)
    if it.link ~= '' then
      redis.call('HSET', KEYS[2], 'l:' .. it.link, rec)
    end
  elseif it.link ~= '' and it.id == it.link then
    redis.call('HSET', KEYS[2], 'l:' .. it.link, rec)
  else
    redis.call('HSET', KEYS[2], 'i:' .. it.id, rec)
  end
  if r and r.key and not fresh then
    redis.call('HSET', KEYS[2], r.key, rec)
  end
end
if head ~= since then
  redis.call('SET', KEYS[3], head)
end

-- the item log keeps the newest logCap entries
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

-- the memory forgets records not seen for `memory` ms (records of the
-- format before this one too), swept every sweepEvery ms
local sweepAt = tonumber(redis.call('HGET', KEYS[4], 'seen_sweep') or '0')
if now >= sweepAt then
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    local at = tonumber(string.match(all[i + 1], '(%d+)$'))
    if not at or at < now - memory then
      redis.call('HDEL', KEYS[2], all[i])
    end
  end
  redis.call('HSET', KEYS[4], 'seen_sweep', now + sweepEvery)
end
local records = redis.call('HLEN', KEYS[2])
redis.call('HSET', KEYS[4], 'head', head, 'items', n, 'seen', records)
return {since, head, new, changed, records}
