package throttle

import "github.com/redis/go-redis/v9"

// luaCommon holds the helpers shared by the decide and move scripts. It is
// prepended to each script body, so each script stays self-contained.
//
// Throttle state of one device (field <id> of thr:{pN}) is a packed string,
// read with plain substring searches (memchr speed) rather than a JSON
// decode or a pattern over the whole string, and written with one
// concatenation. RS, GS and US are bytes 0x1e, 0x1d and 0x1f. Event ids,
// feeds and the reason are stored as JSON string literals (quoted and
// escaped by the Go side), which never contain a control byte, so the
// separators cannot occur inside them, and which are prefix-free, so a
// plain search for GS..<quoted id> finds exactly that id.
//
//	state = ne "," k "," n "," t "," lane RS S RS PF RS PC RS reason RS E RS PE
//	ne      number of entries in E
//	k       number of event ids in PE; 0 when no push is pending
//	n       event ids dropped from PE because of MaxEvents
//	t       since of the pending push (unix ms of its first update)
//	lane    "feed" | "breaking" of the pending push
//	S       send times of the last K pushes, unix ms, oldest first, "," separated
//	PF      feeds of the pending push, in arrival order: US (<quoted feed> US)*
//	PC      its min since cursor by feed: US (<quoted feed>:<cursor> US)*
//	reason  its reason, quoted
//	E       the last Remember applied events: (GS <quoted event id><outcome>)*
//	        outcome q queued, d deferred, c coalesced
//	PE      its event ids, oldest first: (US <quoted id>)*
//
// Without a pending push k and n are 0 and t, lane, PF, PC, reason and PE
// are empty. The due time of a pending push is its score in due:{pN}. A
// state that starts with "{" is in the earlier JSON format and is
// converted when read.
//
// The hash thr:{pN} is kept in Redis's hash-table encoding once it holds
// more than 128 devices: a listpack (used up to hash-max-listpack-entries,
// 512 by default, when values are short) finds a field by a linear scan,
// which made every state read and write of a 512-device batch cost several
// microseconds. Field "~" holds a 4 KiB filler whose length exceeds any
// sane hash-max-listpack-value, so the hash stays a hash table, also after
// a restart. It is not a device.
//
// Policies arrive as ten ARGV numbers starting at a script-specific index:
// iOS limit, window, min gap, debounce, max wait (ms), then Android's.
const luaCommon = `
local call, find, sub, match, gsub, byte = redis.call, string.find, string.sub, string.match, string.gsub, string.byte
local concat, tonumber = table.concat, tonumber
local RS, GS, US = '\30', '\29', '\31'
local HEAD = '^(%d+),(%d+),(%d+),(%d*),(%a*)()'
local NOSENDS = {}

local function policies(base)
  local function one(i)
    return {k = tonumber(ARGV[i]), w = tonumber(ARGV[i+1]), gap = tonumber(ARGV[i+2]),
            deb = tonumber(ARGV[i+3]), maxw = tonumber(ARGV[i+4])}
  end
  return {ios = one(base), android = one(base + 5)}
end

-- effective min gap: the policy's, or the user's min_interval if stricter.
local function gap_of(pol, mi)
  local g = pol.gap
  local m = tonumber(mi or '0') or 0
  if m * 1000 > g then g = m * 1000 end
  return g
end

-- sends_of splits S into its send times (strings), oldest first.
local function sends_of(S)
  if S == '' then return NOSENDS end
  local s, n = {}, 0
  for t in string.gmatch(S, '%d+') do n = n + 1; s[n] = t end
  return s
end

-- allow_at is the earliest time at which a push keeps both limits.
local function allow_at(s, pol, gap, now)
  local a = now
  local n = #s
  if n == 0 then return a end
  if pol.k > 0 and n >= pol.k then
    local t = tonumber(s[n - pol.k + 1]) + pol.w
    if t > a then a = t end
  end
  local t = tonumber(s[n]) + gap
  if t > a then a = t end
  return a
end

-- server_now is the time of the call in unix ms, as a string: arg when the
-- caller passed one (a test clock), else this server's TIME, read here so
-- that a decision and the stream id of the push it writes share one
-- instant (a TIME read by the caller would be a round trip older).
local function server_now(arg)
  if arg ~= '' then return arg end
  local tm = redis.call('TIME')
  return string.format('%d', tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000))
end

-- record returns S with the send time now_s appended, keeping the last k.
local function record(s, pol, now_s)
  local keep = pol.k
  if keep < 1 then keep = 1 end
  local n = #s
  local from = n + 2 - keep
  if from > n then return now_s end
  if from < 1 then from = 1 end
  return concat(s, ',', from, n) .. ',' .. now_s
end

-- state_of splits a state into its fields (numbers for ne, k and n).
local function state_of(raw)
  local ne, k, n, t, lane, p = match(raw, HEAD)
  local p1 = find(raw, RS, p + 1, true)
  local p2 = find(raw, RS, p1 + 1, true)
  local p3 = find(raw, RS, p2 + 1, true)
  local p4 = find(raw, RS, p3 + 1, true)
  local p5 = find(raw, RS, p4 + 1, true)
  return tonumber(ne), tonumber(k), tonumber(n), t, lane, sub(raw, p + 1, p1 - 1), sub(raw, p1 + 1, p2 - 1),
    sub(raw, p2 + 1, p3 - 1), sub(raw, p3 + 1, p4 - 1), sub(raw, p4 + 1, p5 - 1), sub(raw, p5 + 1)
end

local function state(ne, k, n, t, lane, S, PF, PC, reason, E, PE)
  return ne .. ',' .. k .. ',' .. n .. ',' .. t .. ',' .. lane .. RS .. S .. RS .. PF .. RS .. PC .. RS ..
    reason .. RS .. E .. RS .. PE
end

-- list_json turns a US list into the body of a JSON array or object.
local function list_json(l)
  if byte(l, -1) == 31 then l = sub(l, 1, -2) end
  return (gsub(sub(l, 2), US, ','))
end

-- JOB_HEAD starts a push job payload; tail returns the rest after the
-- device id, so one tail serves every device with the same pending push.
local JOB_HEAD = '{"device":"'

local function tail(PE, n, PF, PC, lane, reason, now_s)
  return '","events":[' .. list_json(PE) .. '],"dropped":' .. n ..
    ',"feeds":[' .. list_json(PF) .. '],"since":{' .. list_json(PC) .. '},"lane":"' .. lane ..
    '","reason":' .. reason .. ',"queued_at":' .. now_s .. '}'
end

-- legacy converts a state in the earlier JSON format.
local function legacy(raw)
  local st = cjson.decode(raw)
  local q = cjson.encode
  local s = {}
  for i, t in ipairs(st.s or {}) do s[i] = string.format('%d', t) end
  local e = {}
  for _, m in ipairs(st.e or {}) do e[#e + 1] = GS .. q(sub(m, 3)) .. sub(m, 1, 1) end
  local p = st.p
  if not p then return state(#e, 0, 0, '', '', concat(s, ','), '', '', '', concat(e), '') end
  local pe, pf, pc = {}, {US}, {US}
  for _, v in ipairs(p.e) do pe[#pe + 1] = US .. q(v) end
  for _, v in ipairs(p.f) do pf[#pf + 1] = q(v) .. US end
  for f, v in pairs(p.c) do pc[#pc + 1] = q(f) .. ':' .. string.format('%d', v) .. US end
  return state(#e, #pe, p.n or 0, string.format('%d', p.t), p.l, concat(s, ','), concat(pf), concat(pc),
    q(p.r), concat(e), concat(pe))
end

-- bulk runs cmd key list... in slices of at most 1000 arguments (whole
-- groups of size per), keeping unpack within Lua's stack limit.
local function bulk(cmd, key, list, per)
  local step = 1000 - 1000 % per
  for i = 1, #list, step do
    call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

-- keep_hashtable converts a grown throttle hash to a hash table (see above).
-- A server without OBJECT ENCODING (the embedded dev Redis) is left as is.
local function keep_hashtable(thr)
  local ok, enc = pcall(call, 'OBJECT', 'ENCODING', thr)
  if ok and enc == 'listpack' and call('HLEN', thr) > 128 then
    call('HSET', thr, '~', string.rep('~', 4096))
  end
end
`

// decideScript applies one update to a batch of devices of one partition.
//
// KEYS[1]  thr:{pN}       throttle state hash
// KEYS[2]  due:{pN}       deferred pushes, score = due unix ms
// KEYS[3]  q:push:{pN}    push stream
// KEYS[4..] dev:{pN}:<id> device hashes, one per device of the batch
// ARGV[1]  now, unix ms; empty: the server's TIME, read inside the script
// ARGV[2]  event id, as a JSON string literal
// ARGV[3]  lane "feed"|"breaking"|"alert"
// ARGV[4]  reason, as a JSON string literal
// ARGV[5]  feeds (non-empty): US (<JSON string literal> US)*
// ARGV[6]  since cursors: US (<JSON string literal>:<cursor> US)*
// ARGV[7..16] policies (see luaCommon)
// ARGV[17] Remember: applied events remembered per device
// ARGV[18] MaxEvents: event ids carried by one pending push
// ARGV[19] alert limit: alerts per device in any alert window
// ARGV[20] alert window, ms
// ARGV[21..] device ids, ARGV[17+i] belongs to KEYS[i]
//
// The alert lane is queued at once whatever the silent budget: the push
// carries the device's pending push too (which leaves the due set), and its
// send time is recorded in S like any other push. The alert guard keeps the
// device's alert times in field "a<id>" of thr:{pN} ("," separated unix
// ms); a device that already had the alert limit within the alert window is
// held back: it gets the update on the breaking lane instead (silent, under
// the budget) and is counted as held as well as under that outcome.
//
// Returns {queued, deferred, coalesced, skipped, missing, duplicate,
// deferred iOS, coalesced iOS, deferred Android, coalesced Android, held}.
// A duplicate (event already applied to the device) is counted under its
// original outcome and also under duplicate; the per-platform counts are of
// fresh decisions only.
var decideScript = redis.NewScript(luaCommon + decideLua)

// decideLua is the body of decideScript. The tests also run it with the
// coalesce fast path switched off (FAST) to check that both paths write
// the same states.
const decideLua = `
local FAST, MEMO = true, true
local now_s = server_now(ARGV[1])
local now = tonumber(now_s)
local qev = ARGV[2]
local lane = ARGV[3]
local qreason = ARGV[4]
local feedsL = ARGV[5]
local sinceL = ARGV[6]
local pols = policies(7)
local remember = tonumber(ARGV[17])
local maxev = tonumber(ARGV[18])
local alim, awin = tonumber(ARGV[19]), tonumber(ARGV[20])
local stream = KEYS[3]
local held = 0
local cnt = {q = 0, d = 0, c = 0}
local ios, android = {q = 0, d = 0, c = 0}, {q = 0, d = 0, c = 0}
local skipped, missing, dup = 0, 0, 0
local hset, zadd, zrem, gone = {}, {}, {}, {}

-- What every device of the call shares is built once: the needles that
-- find this event and these feeds in a state, the pieces appended to a
-- state, and the state and push payload of a device never seen before.
local evNeedle, evPE = GS .. qev, US .. qev
local feedNeedles, feedEntries = {}, {}
for f in string.gmatch(feedsL, '[^\31]+') do
  feedNeedles[#feedNeedles + 1] = US .. f .. US
  feedEntries[#feedEntries + 1] = f .. US
end
local sinceNeedles, sinceVals, sinceEntries = {}, {}, {}
for f, v in string.gmatch(sinceL, '\31([^\31]*):(%-?%d+)') do
  sinceNeedles[#sinceNeedles + 1] = US .. f .. ':'
  sinceVals[#sinceVals + 1] = tonumber(v)
  sinceEntries[#sinceEntries + 1] = f .. ':' .. v
end
local coldDeferred = state(1, 1, 0, now_s, lane, '', feedsL, sinceL, qreason, evNeedle .. 'd', evPE)
local coldQueued = state(1, 0, 0, '', '', now_s, '', '', '', evNeedle .. 'q', '')
local function newTailOf(l)
  return '","events":[' .. qev .. '],"dropped":0,"feeds":[' .. list_json(feedsL) ..
    '],"since":{' .. list_json(sinceL) .. '},"lane":"' .. l .. '","reason":' .. qreason ..
    ',"queued_at":' .. now_s .. '}'
end
local newTail = newTailOf(lane)

-- A decision is a table: st the new state, out its outcome, d the due
-- time to set, unq true to remove the device from the due set, job the
-- payload tail of a push to queue now, dup true for an event already
-- applied (out is then the original outcome and nothing is written).

-- coalesce is the fast path of the common case: the update merges into the
-- pending push without changing its feeds, cursors, lane or due-before-now
-- status, and no list needs more than one entry dropped. It splices the
-- new entries into raw without splitting it. It returns nil when the case
-- is not that simple.
local function coalesce(raw, ne_s, k_s, t, pl, p, pol, mi)
  local k = tonumber(k_s)
  if not FAST or k == 0 or k >= maxev or (lane == 'breaking' and pl ~= 'breaking') then return nil end
  local sEnd = find(raw, RS, p + 1, true)
  local a = now
  if sEnd > p + 1 then a = allow_at(sends_of(sub(raw, p + 1, sEnd - 1)), pol, gap_of(pol, mi), now) end
  local d = a
  if pl ~= 'breaking' then
    d = now + pol.deb
    local cap = tonumber(t) + pol.maxw
    if cap < d then d = cap end
    if a > d then d = a end
  end
  if d <= now then return nil end
  local fEnd = find(raw, RS, sEnd + 1, true)
  for i = 1, #feedNeedles do
    local x = find(raw, feedNeedles[i], sEnd, true)
    if not x or x > fEnd then return nil end
  end
  for i = 1, #sinceNeedles do
    local needle = sinceNeedles[i]
    local x = find(raw, needle, fEnd, true)
    if not x or sinceVals[i] < tonumber(match(raw, '^%-?%d+', x + #needle)) then return nil end
  end
  local eStart = find(raw, GS, fEnd, true)
  if not eStart then return nil end
  local eEnd = find(raw, RS, eStart, true)
  local ne = tonumber(ne_s) + 1
  local from = eStart
  if ne > remember then
    if ne > remember + 1 then return nil end
    from = find(raw, GS, eStart + 1, true) or eEnd
    ne = ne - 1
  end
  -- raw from the comma before n up to E is kept as it is.
  return {out = 'c', d = d, st = ne .. ',' .. (k + 1) .. sub(raw, #ne_s + #k_s + 2, eStart - 1) ..
    sub(raw, from, eEnd - 1) .. evNeedle .. 'c' .. sub(raw, eEnd) .. evPE}
end

-- merge adds the update to a pending push: its event id (dropping the
-- oldest beyond MaxEvents), its feeds and the smaller since cursors.
local function merge(k, n, PE, PF, PC)
  k = k + 1
  PE = PE .. evPE
  while k > maxev do PE = sub(PE, (find(PE, US, 2, true))); k = k - 1; n = n + 1 end
  for i = 1, #feedNeedles do
    if not find(PF, feedNeedles[i], 1, true) then PF = PF .. feedEntries[i] end
  end
  for i = 1, #sinceNeedles do
    local needle = sinceNeedles[i]
    local x = find(PC, needle, 1, true)
    if not x then
      PC = PC .. sinceEntries[i] .. US
    else
      local v = match(PC, '^%-?%d+', x + #needle)
      if sinceVals[i] < tonumber(v) then
        PC = sub(PC, 1, x) .. sinceEntries[i] .. sub(PC, x + #needle + #v)
      end
    end
  end
  return k, n, PE, PF, PC
end

-- alert queues the alert-lane push now, whatever the budget: it absorbs
-- the pending push (whose due entry goes, unq) and its send time counts in
-- S. raw is the device's state (nil: never seen), not a duplicate.
local function alert(raw, pol)
  if not raw then return {st = coldQueued, out = 'q', job = newTail} end
  if byte(raw, 1) == 123 then raw = legacy(raw) end
  local ne, k, n, t, pl, S, PF, PC, pr, E, PE = state_of(raw)
  local r = {out = 'q'}
  if k > 0 then
    k, n, PE, PF, PC = merge(k, n, PE, PF, PC)
    r.unq = true
  else
    n, PE, PF, PC = 0, evPE, feedsL, sinceL
  end
  r.job = tail(PE, n, PF, PC, lane, qreason, now_s)
  ne = ne + 1
  E = E .. evNeedle .. 'q'
  while ne > remember do E = sub(E, (find(E, GS, 2, true))); ne = ne - 1 end
  r.st = state(ne, 0, 0, '', '', record(sends_of(S), pol, now_s), '', '', '', E, '')
  return r
end

-- general splits the state, applies the policy and joins the state again.
local function general(raw, pol, mi)
  local ne, k, n, t, pl, S, PF, PC, pr, E, PE = state_of(raw)
  local s = sends_of(S)
  local a = allow_at(s, pol, gap_of(pol, mi), now)
  local r = {}
  if k > 0 then
    k, n, PE, PF, PC = merge(k, n, PE, PF, PC)
    if lane == 'breaking' and pl ~= 'breaking' then pl = 'breaking'; pr = qreason end
    local d
    if pl == 'breaking' then
      d = a
    else
      d = now + pol.deb
      local cap = tonumber(t) + pol.maxw
      if cap < d then d = cap end
      if a > d then d = a end
    end
    if d <= now then
      r.job, r.unq, r.out = tail(PE, n, PF, PC, pl, pr, now_s), true, 'q'
      S, k, n, t, pl, PF, PC, pr, PE = record(s, pol, now_s), 0, 0, '', '', '', '', '', ''
    else
      r.d, r.out = d, 'c'
    end
  else
    local d = a
    if lane ~= 'breaking' and now + pol.deb > d then d = now + pol.deb end
    if d <= now then
      r.job, r.out = newTail, 'q'
      S = record(s, pol, now_s)
    else
      r.d, r.out = d, 'd'
      k, n, t, pl, PF, PC, pr, PE = 1, 0, now_s, lane, feedsL, sinceL, qreason, evPE
    end
  end
  ne = ne + 1
  E = E .. evNeedle .. r.out
  while ne > remember do E = sub(E, (find(E, GS, 2, true))); ne = ne - 1 end
  r.st = state(ne, k, n, t, pl, S, PF, PC, pr, E, PE)
  return r
end

-- apply decides one device from its state raw (nil: never seen), policy
-- and min_interval. It has no side effects and depends on nothing else but
-- the call's update, so its result is memoised per call: the devices of
-- one fan-out mostly share a state (same feeds, same events, same sends).
local function apply(raw, pol, mi)
  if not raw then
    -- Never seen: no sends, no pending push, nothing remembered.
    if lane ~= 'breaking' and pol.deb > 0 then
      return {st = coldDeferred, out = 'd', d = now + pol.deb}
    end
    return {st = coldQueued, out = 'q', job = newTail}
  end
  if byte(raw, 1) == 123 then raw = legacy(raw) end
  local ne, k, n, t, pl, p = match(raw, HEAD)
  local at = find(raw, evNeedle, p, true)
  if at then return {dup = true, out = sub(raw, at + #evNeedle, at + #evNeedle)} end
  return coalesce(raw, ne, k, t, pl, p, pol, mi) or general(raw, pol, mi)
end

-- One HMGET for the whole batch's state; writes are gathered and issued in
-- bulk at the end (per-call overhead dominates small commands in Lua).
local ids = {}
for i = 4, #KEYS do ids[i - 3] = ARGV[17 + i] end
local raws = call('HMGET', KEYS[1], unpack(ids))
local fresh = {}
local alane = lane == 'alert'
local alogs, aset = {}, {}
if alane then
  local f = {}
  for j = 1, #ids do f[j] = 'a' .. ids[j] end
  alogs = call('HMGET', KEYS[1], unpack(f))
end
local heldTail = newTailOf('breaking')

-- guard returns the alert log of a device with now added, or nil when the
-- device already had alim alerts within the alert window.
local function guard(alog)
  local keep, n = {}, 0
  if alog then
    for x in string.gmatch(alog, '%d+') do
      if tonumber(x) > now - awin then n = n + 1; keep[n] = x end
    end
  end
  if n >= alim then return nil end
  keep[n + 1] = now_s
  return concat(keep, ',')
end
local memo = {[pols.ios] = {}, [pols.android] = {}}

for j = 1, #ids do
  local id = ids[j]
  local dev = call('HMGET', KEYS[3 + j], 'pl', 'bg', 'mi')
  if not dev[1] and not dev[2] then
    missing = missing + 1
    if raws[j] then gone[#gone + 1] = id; gone[#gone + 1] = 'p' .. id; gone[#gone + 1] = 'a' .. id; zrem[#zrem + 1] = id end
  elseif dev[2] == '0' then
    skipped = skipped + 1
  else
    local pol = pols.android
    if dev[1] == 'ios' then pol = pols.ios end
    local raw = fresh[id] or raws[j]
    local mi = dev[3]
    local r
    if alane then
      local at = raw and find(raw, evNeedle, 1, true)
      if at then
        r = {dup = true, out = sub(raw, at + #evNeedle, at + #evNeedle)}
      else
        local alog = guard(aset[id] or alogs[j])
        if alog then
          aset[id] = alog
          r = alert(raw, pol)
        else
          -- Held back by the alert guard: the breaking lane, silent.
          held = held + 1
          lane, newTail = 'breaking', heldTail
          r = apply(raw, pol, mi)
          lane, newTail = 'alert', newTailOf('alert')
        end
      end
    elseif MEMO then
      local m = memo[pol]
      r = m[raw or '']
      if not r or r.mi ~= mi then
        r = apply(raw, pol, mi)
        r.mi = mi
        m[raw or ''] = r
      end
    else
      r = apply(raw, pol, mi)
    end
    if r.dup then
      dup = dup + 1
      cnt[r.out] = cnt[r.out] + 1
    else
      if r.job then call('XADD', stream, '*', 'p', JOB_HEAD .. id .. r.job) end
      if r.d then
        zadd[#zadd + 1] = r.d
        zadd[#zadd + 1] = id
      elseif r.unq then
        zrem[#zrem + 1] = id
      end
      fresh[id] = r.st
      hset[#hset + 1] = id
      hset[#hset + 1] = r.st
      cnt[r.out] = cnt[r.out] + 1
      local per = android
      if pol == pols.ios then per = ios end
      per[r.out] = per[r.out] + 1
    end
  end
end

for id, alog in pairs(aset) do hset[#hset + 1] = 'a' .. id; hset[#hset + 1] = alog end
bulk('HSET', KEYS[1], hset, 2)
bulk('ZADD', KEYS[2], zadd, 2)
bulk('ZREM', KEYS[2], zrem, 1)
bulk('HDEL', KEYS[1], gone, 1)
keep_hashtable(KEYS[1])
return {cnt.q, cnt.d, cnt.c, skipped, missing, dup, ios.d, ios.c, android.d, android.c, held}
`

// moveScript moves due pending pushes of one partition into its stream.
// Like decideScript it reads the batch's due scores and states with one
// call each and writes them back in bulk.
//
// KEYS[1]  thr:{pN}       throttle state hash
// KEYS[2]  due:{pN}       deferred pushes, score = due unix ms
// KEYS[3]  q:push:{pN}    push stream
// KEYS[4..] dev:{pN}:<id> device hashes of the candidates (distinct)
// ARGV[1]  now, unix ms; empty: the server's TIME, read inside the script
// ARGV[2..11] policies (see luaCommon)
// ARGV[12..] device ids, ARGV[8+i] belongs to KEYS[i]
//
// A candidate whose due score is gone or later than now was handled by
// another scheduler and is counted stale. The policy is checked again with
// the device's current settings: a push the limits do not allow yet is
// rescheduled to the time they do.
//
// Returns {queued, rescheduled, skipped, missing, stale}.
var moveScript = redis.NewScript(luaCommon + moveLua)

// moveLua is the body of moveScript; MEMO switches its memo off in tests.
const moveLua = `
local MEMO = true
local now_s = server_now(ARGV[1])
local now = tonumber(now_s)
local pols = policies(2)
local queued, resched, skipped, missing, stale = 0, 0, 0, 0, 0
local ids = {}
for i = 4, #KEYS do ids[i - 3] = ARGV[8 + i] end
if #ids == 0 then return {0, 0, 0, 0, 0} end
local scores = call('ZMSCORE', KEYS[2], unpack(ids))
local raws = call('HMGET', KEYS[1], unpack(ids))
local hset, zadd, zrem, gone = {}, {}, {}, {}

-- move decides one due device from its state raw, background sync flag,
-- policy and min_interval, without side effects (memoised like decide's
-- apply): stale true when there is no pending push; st the new state (nil:
-- unchanged); at a later due time; job the payload tail of the push.
local function move(raw, bg, pol, mi)
  if not raw then return {stale = true} end
  if byte(raw, 1) == 123 then raw = legacy(raw) end
  local ne, k, n, t, pl, S, PF, PC, pr, E, PE = state_of(raw)
  if k == 0 then return {stale = true} end
  if bg == '0' then return {skip = true, st = state(ne, 0, 0, '', '', S, '', '', '', E, '')} end
  local s = sends_of(S)
  local a = allow_at(s, pol, gap_of(pol, mi), now)
  if a > now then return {at = a} end
  return {job = tail(PE, n, PF, PC, pl, pr, now_s),
          st = state(ne, 0, 0, '', '', record(s, pol, now_s), '', '', '', E, '')}
end

local memo = {[pols.ios] = {}, [pols.android] = {}}
for j = 1, #ids do
  local id = ids[j]
  local score = scores[j]
  if not score or tonumber(score) > now then
    stale = stale + 1
  else
    local dev = call('HMGET', KEYS[3 + j], 'pl', 'bg', 'mi')
    if not dev[1] and not dev[2] then
      missing = missing + 1
      gone[#gone + 1] = id
      gone[#gone + 1] = 'p' .. id
      gone[#gone + 1] = 'a' .. id
      zrem[#zrem + 1] = id
    else
      local pol = pols.android
      if dev[1] == 'ios' then pol = pols.ios end
      local raw, bg, mi = raws[j], dev[2], dev[3]
      local r
      if MEMO and raw then
        local m = memo[pol]
        r = m[raw]
        if not r or r.mi ~= mi or r.bg ~= bg then
          r = move(raw, bg, pol, mi)
          r.mi, r.bg = mi, bg
          m[raw] = r
        end
      else
        r = move(raw, bg, pol, mi)
      end
      if r.stale then
        stale = stale + 1
        zrem[#zrem + 1] = id
      elseif r.at then
        resched = resched + 1
        zadd[#zadd + 1] = r.at
        zadd[#zadd + 1] = id
      else
        if r.skip then
          skipped = skipped + 1
        else
          queued = queued + 1
          call('XADD', KEYS[3], '*', 'p', JOB_HEAD .. id .. r.job)
        end
        hset[#hset + 1] = id
        hset[#hset + 1] = r.st
        zrem[#zrem + 1] = id
      end
    end
  end
end
bulk('HSET', KEYS[1], hset, 2)
bulk('ZADD', KEYS[2], zadd, 2)
bulk('ZREM', KEYS[2], zrem, 1)
bulk('HDEL', KEYS[1], gone, 1)
keep_hashtable(KEYS[1])
return {queued, resched, skipped, missing, stale}
`

// forgetScript drops the throttle state, the phone log, the alert log and
// the pending push of one device.
//
// KEYS[1] thr:{pN}, KEYS[2] due:{pN}; ARGV[1] device id.
// Returns the number of fields removed (0: there was no state).
var forgetScript = redis.NewScript(`
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1], 'p' .. ARGV[1], 'a' .. ARGV[1])
`)
