package throttle

import "github.com/redis/go-redis/v9"

// luaCommon holds the helpers shared by the decide and move scripts. It is
// prepended to each script body, so each script stays self-contained.
//
// Throttle state of one device (field <id> of thr:{pN}, cjson):
//
//	s  array  send times of the last K pushes, unix ms, oldest first
//	e  array  the last Remember applied events, "<outcome>|<event id>"
//	          (outcome q queued, d deferred, c coalesced)
//	p  table  the pending push, absent when none:
//	          t since (unix ms of the first update it holds)
//	          u due (unix ms, also its score in due:{pN})
//	          e event ids, oldest first, at most MaxEvents
//	          n event ids dropped from e because of MaxEvents
//	          f feeds, in arrival order
//	          c feed -> min since cursor
//	          l lane ("feed"|"breaking"), r reason
//
// Policies arrive as ten ARGV numbers starting at a script-specific index:
// iOS limit, window, min gap, debounce, max wait (ms), then Android's.
const luaCommon = `
local function policies(base)
  local function one(i)
    return {k = tonumber(ARGV[i]), w = tonumber(ARGV[i+1]), gap = tonumber(ARGV[i+2]),
            deb = tonumber(ARGV[i+3]), maxw = tonumber(ARGV[i+4])}
  end
  return {ios = one(base), android = one(base + 5)}
end

local function policy_of(pols, pl)
  if pl == 'ios' then return pols.ios end
  return pols.android
end

-- effective min gap: the policy's, or the user's min_interval if stricter.
local function gap_of(pol, mi)
  local g = pol.gap
  local m = tonumber(mi or '0') or 0
  if m * 1000 > g then g = m * 1000 end
  return g
end

-- allow_at is the earliest time at which a push keeps both limits.
local function allow_at(st, pol, gap, now)
  local a = now
  local s = st.s
  local n = #s
  if pol.k > 0 and n >= pol.k then
    local t = s[n - pol.k + 1] + pol.w
    if t > a then a = t end
  end
  if n > 0 and s[n] + gap > a then a = s[n] + gap end
  return a
end

local function load_state(thr, id)
  local raw = redis.call('HGET', thr, id)
  if not raw then return {s = {}, e = {}} end
  local st = cjson.decode(raw)
  st.s = st.s or {}
  st.e = st.e or {}
  return st
end

-- bulk runs cmd key list... in slices of at most 1000 arguments (whole
-- groups of size per), keeping unpack within Lua's stack limit.
local function bulk(cmd, key, list, per)
  local step = 1000 - 1000 % per
  for i = 1, #list, step do
    redis.call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

local function save_state(thr, id, st)
  redis.call('HSET', thr, id, cjson.encode(st))
end

-- send writes the pending push p of device id to the stream and records the
-- send time, keeping the last k send times.
local function send(stream, id, st, p, pol, now)
  local job = cjson.encode({device = id, events = p.e, dropped = p.n or 0, feeds = p.f,
                            since = p.c, lane = p.l, reason = p.r, queued_at = now})
  redis.call('XADD', stream, '*', 'p', job)
  local s = st.s
  s[#s + 1] = now
  local keep = pol.k
  if keep < 1 then keep = 1 end
  while #s > keep do table.remove(s, 1) end
  st.p = nil
end
`

// decideScript applies one update to a batch of devices of one partition.
//
// KEYS[1]  thr:{pN}       throttle state hash
// KEYS[2]  due:{pN}       deferred pushes, score = due unix ms
// KEYS[3]  q:push:{pN}    push stream
// KEYS[4..] dev:{pN}:<id> device hashes, one per device of the batch
// ARGV[1]  now, unix ms
// ARGV[2]  event id
// ARGV[3]  lane "feed"|"breaking"
// ARGV[4]  reason
// ARGV[5]  feeds, JSON array (non-empty)
// ARGV[6]  since cursors, JSON object feed -> cursor
// ARGV[7..16] policies (see luaCommon)
// ARGV[17] Remember: applied events remembered per device
// ARGV[18] MaxEvents: event ids carried by one pending push
// ARGV[19..] device ids, ARGV[15+i] belongs to KEYS[i]
//
// Returns {queued, deferred, coalesced, skipped, missing, duplicate}.
// A duplicate (event already applied to the device) is counted under its
// original outcome and also under duplicate.
var decideScript = redis.NewScript(luaCommon + `
local now = tonumber(ARGV[1])
local ev = ARGV[2]
local lane = ARGV[3]
local reason = ARGV[4]
local feeds = cjson.decode(ARGV[5])
local since = cjson.decode(ARGV[6])
local pols = policies(7)
local remember = tonumber(ARGV[17])
local maxev = tonumber(ARGV[18])
local cnt = {q = 0, d = 0, c = 0}
local skipped, missing, dup = 0, 0, 0

-- One HMGET for the whole batch's state; writes are gathered and issued in
-- bulk at the end (per-call overhead dominates small commands in Lua).
local ids = {}
for i = 4, #KEYS do ids[#ids + 1] = ARGV[15 + i] end
local raws = redis.call('HMGET', KEYS[1], unpack(ids))
local states, order, due, gone = {}, {}, {}, {}

for j, id in ipairs(ids) do
  local dev = redis.call('HMGET', KEYS[3 + j], 'pl', 'bg', 'mi')
  if not dev[1] and not dev[2] then
    missing = missing + 1
    if raws[j] then gone[#gone + 1] = id; due[id] = false end
  elseif dev[2] == '0' then
    skipped = skipped + 1
  else
    local st = states[id]
    if not st then
      if raws[j] then
        st = cjson.decode(raws[j])
        st.s = st.s or {}
        st.e = st.e or {}
      else
        st = {s = {}, e = {}}
      end
      states[id] = st
    end
    local seen = nil
    for _, m in ipairs(st.e) do
      if string.sub(m, 3) == ev then seen = string.sub(m, 1, 1) end
    end
    if seen then
      dup = dup + 1
      cnt[seen] = cnt[seen] + 1
    else
      local pol = policy_of(pols, dev[1])
      local gap = gap_of(pol, dev[3])
      local a = allow_at(st, pol, gap, now)
      local out
      local p = st.p
      if p then
        local e = p.e
        e[#e + 1] = ev
        while #e > maxev do table.remove(e, 1); p.n = (p.n or 0) + 1 end
        for _, f in ipairs(feeds) do
          local has = false
          for _, g in ipairs(p.f) do if g == f then has = true end end
          if not has then p.f[#p.f + 1] = f end
        end
        for f, v in pairs(since) do
          if p.c[f] == nil or v < p.c[f] then p.c[f] = v end
        end
        if lane == 'breaking' and p.l ~= 'breaking' then p.l = 'breaking'; p.r = reason end
        local d
        if p.l == 'breaking' then
          d = a
        else
          d = now + pol.deb
          if p.t + pol.maxw < d then d = p.t + pol.maxw end
          if a > d then d = a end
        end
        if d <= now then
          send(KEYS[3], id, st, p, pol, now)
          due[id] = false
          out = 'q'
        else
          p.u = d
          due[id] = d
          out = 'c'
        end
      else
        local c = {}
        for f, v in pairs(since) do c[f] = v end
        p = {t = now, e = {ev}, n = 0, f = feeds, c = c, l = lane, r = reason}
        local d = a
        if lane ~= 'breaking' and now + pol.deb > d then d = now + pol.deb end
        if d <= now then
          send(KEYS[3], id, st, p, pol, now)
          out = 'q'
        else
          p.u = d
          st.p = p
          due[id] = d
          out = 'd'
        end
      end
      local e = st.e
      e[#e + 1] = out .. '|' .. ev
      while #e > remember do table.remove(e, 1) end
      if not st.dirty then st.dirty = true; order[#order + 1] = id end
      cnt[out] = cnt[out] + 1
    end
  end
end

local hset, zadd, zrem = {}, {}, {}
for _, id in ipairs(order) do
  local st = states[id]
  st.dirty = nil
  hset[#hset + 1] = id
  hset[#hset + 1] = cjson.encode(st)
end
for id, d in pairs(due) do
  if d then
    zadd[#zadd + 1] = d
    zadd[#zadd + 1] = id
  else
    zrem[#zrem + 1] = id
  end
end
bulk('HSET', KEYS[1], hset, 2)
bulk('ZADD', KEYS[2], zadd, 2)
bulk('ZREM', KEYS[2], zrem, 1)
bulk('HDEL', KEYS[1], gone, 1)
return {cnt.q, cnt.d, cnt.c, skipped, missing, dup}
`)

// moveScript moves due pending pushes of one partition into its stream.
//
// KEYS[1]  thr:{pN}       throttle state hash
// KEYS[2]  due:{pN}       deferred pushes, score = due unix ms
// KEYS[3]  q:push:{pN}    push stream
// KEYS[4..] dev:{pN}:<id> device hashes of the candidates
// ARGV[1]  now, unix ms
// ARGV[2..11] policies (see luaCommon)
// ARGV[12..] device ids, ARGV[8+i] belongs to KEYS[i]
//
// A candidate whose due score is gone or later than now was handled by
// another scheduler and is counted stale. The policy is checked again with
// the device's current settings: a push the limits do not allow yet is
// rescheduled to the time they do.
//
// Returns {queued, rescheduled, skipped, missing, stale}.
var moveScript = redis.NewScript(luaCommon + `
local now = tonumber(ARGV[1])
local pols = policies(2)
local queued, resched, skipped, missing, stale = 0, 0, 0, 0, 0
for i = 4, #KEYS do
  local id = ARGV[8 + i]
  local score = redis.call('ZSCORE', KEYS[2], id)
  if not score or tonumber(score) > now then
    stale = stale + 1
  else
    local dev = redis.call('HMGET', KEYS[i], 'pl', 'bg', 'mi')
    if not dev[1] and not dev[2] then
      missing = missing + 1
      redis.call('HDEL', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
    else
      local st = load_state(KEYS[1], id)
      if not st.p then
        stale = stale + 1
        redis.call('ZREM', KEYS[2], id)
      elseif dev[2] == '0' then
        skipped = skipped + 1
        st.p = nil
        save_state(KEYS[1], id, st)
        redis.call('ZREM', KEYS[2], id)
      else
        local pol = policy_of(pols, dev[1])
        local a = allow_at(st, pol, gap_of(pol, dev[3]), now)
        if a > now then
          resched = resched + 1
          st.p.u = a
          save_state(KEYS[1], id, st)
          redis.call('ZADD', KEYS[2], a, id)
        else
          queued = queued + 1
          send(KEYS[3], id, st, st.p, pol, now)
          save_state(KEYS[1], id, st)
          redis.call('ZREM', KEYS[2], id)
        end
      end
    end
  end
end
return {queued, resched, skipped, missing, stale}
`)

// forgetScript drops the throttle state and pending push of one device.
//
// KEYS[1] thr:{pN}, KEYS[2] due:{pN}; ARGV[1] device id.
// Returns 1 if there was state, 0 otherwise.
var forgetScript = redis.NewScript(`
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
`)
