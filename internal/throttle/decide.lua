-- decide.lua applies one update to a batch of devices of one partition
-- (common.lua, jobs.LuaAdd and devices.LuaPolicy are prepended).
--
-- KEYS[1]  thr:{pN}       throttle state hash
-- KEYS[2]  due:{pN}       deferred pushes, score = due unix ms
-- KEYS[3]  q:push:{pN}    push stream (jobs.Stream)
-- KEYS[4..] dev:{pN}:<id> device hashes (devices.Key), one per device of
--                         the batch
-- ARGV[1]  the alert of an alert-lane update, as the JSON object member
--          ',"alert":{...}' spliced into its push jobs; "" for none
-- ARGV[2]  event id, as a JSON string literal
-- ARGV[3]  lane "feed"|"breaking"|"alert"
-- ARGV[4]  reason, as a JSON string literal
-- ARGV[5]  feeds (non-empty): US (<JSON string literal> US)*
-- ARGV[6]  since cursors: US (<JSON string literal>:<cursor> US)*
-- ARGV[7..17] policies and the apps' overrides (see policies.lua)
-- ARGV[18] Remember: applied events remembered per device
-- ARGV[19] MaxEvents: event ids carried by one pending push
-- ARGV[20] alert limit: alerts per device in any alert window
-- ARGV[21] alert window, ms
-- ARGV[22..] device ids, ARGV[18+i] belongs to KEYS[i]
--
-- Each device is decided under its app's policy for its platform.
--
-- The time of the decision is the server's TIME, read once per call.
--
-- Event ids that leave a pending push without being sent (beyond
-- MaxEvents, or the push of a device whose hash is gone) are stashed for
-- the scheduler to report (see DROPS in common.lua).
--
-- The alert lane is queued at once whatever the silent budget: the push
-- carries the device's pending push too (which leaves the due set), and its
-- send time is recorded in S like any other push. Only alert-lane push
-- jobs carry ARGV[1]. The alert guard keeps the device's alert times in
-- field "a<id>" of thr:{pN} ("," separated unix ms); a device that
-- already had the alert limit within the alert window is held back: it
-- gets the update on the breaking lane instead (silent, under the budget)
-- and is counted as held as well as under that outcome.
--
-- Returns {queued, deferred, coalesced, skipped, missing, duplicate,
-- deferred iOS, coalesced iOS, deferred Android, coalesced Android, held}.
-- A duplicate (event already applied to the device) is counted under its
-- original outcome and also under duplicate; the per-platform counts are of
-- fresh decisions only.
local now_s = server_now()
local now = tonumber(now_s)
local alertJ = ARGV[1]
local qev = ARGV[2]
local lane = ARGV[3]
local qreason = ARGV[4]
local feedsL = ARGV[5]
local sinceL = ARGV[6]
local policy_of, defIOS, defAndroid = policies(7)
local remember = tonumber(ARGV[18])
local maxev = tonumber(ARGV[19])
local alim, awin = tonumber(ARGV[20]), tonumber(ARGV[21])
local stream = KEYS[3]
local held = 0
local cnt = {q = 0, d = 0, c = 0}
local ios, android = {q = 0, d = 0, c = 0}, {q = 0, d = 0, c = 0}
local skipped, missing, dup = 0, 0, 0
local hset, zadd, zrem, gone, drops = {}, {}, {}, {}, {}

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
    (l == 'alert' and alertJ or '') .. ',"queued_at":' .. now_s .. '}'
end
local newTail = newTailOf(lane)

-- A decision is a table: st the new state, out its outcome, d the due
-- time to set, unq true to remove the device from the due set, job the
-- payload tail of a push to queue now, drop the quoted event ids dropped
-- from the pending push beyond MaxEvents, dup true for an event already
-- applied (out is then the original outcome and nothing is written).

-- coalesce is the fast path of the common case: the update merges into the
-- pending push without changing its feeds, cursors, lane or due-before-now
-- status, and no list needs more than one entry dropped. It splices the
-- new entries into raw without splitting it. It returns nil when the case
-- is not that simple.
local function coalesce(raw, ne_s, k_s, t, pl, p, pol, mi)
  local k = tonumber(k_s)
  if k == 0 or k >= maxev or (lane == 'breaking' and pl ~= 'breaking') then return nil end
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
-- It also returns the quoted ids it dropped (nil: none).
local function merge(k, n, PE, PF, PC)
  k = k + 1
  PE = PE .. evPE
  local drop
  while k > maxev do
    local x = find(PE, US, 2, true)
    drop = drop or {}
    drop[#drop + 1] = sub(PE, 2, x - 1)
    PE = sub(PE, x)
    k = k - 1
    n = n + 1
  end
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
  return k, n, PE, PF, PC, drop
end

-- alert queues the alert-lane push now, whatever the budget: it absorbs
-- the pending push (whose due entry goes, unq) and its send time counts in
-- S. raw is the device's state (nil: never seen), not a duplicate.
local function alert(raw, pol)
  if not raw then return {st = coldQueued, out = 'q', job = newTail} end
  local ne, k, n, t, pl, S, PF, PC, pr, E, PE = state_of(raw)
  local r = {out = 'q'}
  if k > 0 then
    k, n, PE, PF, PC, r.drop = merge(k, n, PE, PF, PC)
    r.unq = true
  else
    n, PE, PF, PC = 0, evPE, feedsL, sinceL
  end
  r.job = tail(PE, n, PF, PC, lane, qreason, now_s, alertJ)
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
    k, n, PE, PF, PC, r.drop = merge(k, n, PE, PF, PC)
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
  local ne, k, n, t, pl, p = match(raw, HEAD)
  local at = find(raw, evNeedle, p, true)
  if at then return {dup = true, out = sub(raw, at + #evNeedle, at + #evNeedle)} end
  return coalesce(raw, ne, k, t, pl, p, pol, mi) or general(raw, pol, mi)
end

-- One HMGET for the whole batch's state; writes are gathered and issued in
-- bulk at the end (per-call overhead dominates small commands in Lua).
local ids = {}
for i = 4, #KEYS do ids[i - 3] = ARGV[18 + i] end
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
local memo = {[defIOS] = {}, [defAndroid] = {}}

for j = 1, #ids do
  local id = ids[j]
  local dpl, dbg, mi, dap = device_policy(KEYS[3 + j])
  if not dpl and not dbg then
    missing = missing + 1
    if raws[j] then
      gone[#gone + 1] = id; gone[#gone + 1] = 'p' .. id; gone[#gone + 1] = 'a' .. id; zrem[#zrem + 1] = id
      local _, k, _, _, _, _, _, _, _, _, PE = state_of(raws[j])
      if k > 0 then
        for _, q in ipairs(ids_of(PE)) do drops[#drops + 1] = q end
      end
    end
  elseif dbg == '0' then
    skipped = skipped + 1
  else
    local pol = defAndroid
    if dap then pol = policy_of(dap, dpl) elseif dpl == 'ios' then pol = defIOS end
    local raw = fresh[id] or raws[j]
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
    else
      local m = memo[pol]
      if not m then m = {}; memo[pol] = m end
      r = m[raw or '']
      if not r or r.mi ~= mi then
        r = apply(raw, pol, mi)
        r.mi = mi
        m[raw or ''] = r
      end
    end
    if r.dup then
      dup = dup + 1
      cnt[r.out] = cnt[r.out] + 1
    else
      if r.job then jobs_add(stream, JOB_HEAD .. id .. r.job) end
      if r.drop then
        for _, q in ipairs(r.drop) do drops[#drops + 1] = q end
      end
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
      if dpl == 'ios' then per = ios end
      per[r.out] = per[r.out] + 1
    end
  end
end

for id, alog in pairs(aset) do hset[#hset + 1] = 'a' .. id; hset[#hset + 1] = alog end
bulk('HSET', KEYS[1], hset, 2)
bulk('ZADD', KEYS[2], zadd, 2)
bulk('ZREM', KEYS[2], zrem, 1)
bulk('HDEL', KEYS[1], gone, 1)
stash_drops(KEYS[1], drops)
keep_hashtable(KEYS[1])
return {cnt.q, cnt.d, cnt.c, skipped, missing, dup, ios.d, ios.c, android.d, android.c, held}
