-- move.lua moves due pending pushes of one partition into its stream
-- (common.lua, jobs.LuaAdd and devices.LuaPolicy are prepended). Like
-- decide.lua it reads the batch's due scores and states with one call
-- each and writes them back in bulk.
--
-- KEYS[1]  thr:{pN}       throttle state hash
-- KEYS[2]  due:{pN}       deferred pushes, score = due unix ms
-- KEYS[3]  q:push:{pN}    push stream (jobs.Stream)
-- KEYS[4..] dev:{pN}:<id> device hashes (devices.Key) of the candidates
--                         (distinct)
-- ARGV[1..11] policies and the apps' overrides (see policies.lua)
-- ARGV[12..] device ids, ARGV[8+i] belongs to KEYS[i]
--
-- The time of the move is the server's TIME, read once per call. A
-- candidate whose due score is gone or later than now was handled by
-- another scheduler and is counted stale. The policy is checked again with
-- the device's current settings: a push the limits do not allow yet is
-- rescheduled to the time they do. The pending push of a device that
-- turned background sync off (skipped) or whose hash is gone (missing) is
-- dropped; the event ids it covered are returned, so that the caller can
-- count the device out of those events' progress.
--
-- Returns {queued, rescheduled, skipped, missing, stale, dropped} where
-- dropped lists the event ids (JSON string literals) of the dropped
-- pushes, one entry per device and event.
local now_s = server_now()
local now = tonumber(now_s)
local policy_of, defIOS, defAndroid = policies(1)
local queued, resched, skipped, missing, stale = 0, 0, 0, 0, 0
local dropped = {}
local ids = {}
for i = 4, #KEYS do ids[i - 3] = ARGV[8 + i] end
if #ids == 0 then return {0, 0, 0, 0, 0, dropped} end
local scores = call('ZMSCORE', KEYS[2], unpack(ids))
local raws = call('HMGET', KEYS[1], unpack(ids))
local hset, zadd, zrem, gone = {}, {}, {}, {}

-- move decides one due device from its state raw, background sync flag,
-- policy (its app's) and min_interval, without side effects (memoised like decide's
-- apply): stale true when there is no pending push; st the new state (nil:
-- unchanged); at a later due time; job the payload tail of the push;
-- drop the quoted event ids of a push dropped because sync is off.
local function move(raw, bg, pol, mi)
  if not raw then return {stale = true} end
  local ne, k, n, t, pl, S, PF, PC, pr, E, PE = state_of(raw)
  if k == 0 then return {stale = true} end
  if bg == '0' then return {skip = true, drop = ids_of(PE), st = state(ne, 0, 0, '', '', S, '', '', '', E, '')} end
  local s = sends_of(S)
  local a = allow_at(s, pol, gap_of(pol, mi), now)
  if a > now then return {at = a} end
  return {job = tail(PE, n, PF, PC, pl, pr, now_s),
          st = state(ne, 0, 0, '', '', record(s, pol, now_s), '', '', '', E, '')}
end

local memo = {[defIOS] = {}, [defAndroid] = {}}
for j = 1, #ids do
  local id = ids[j]
  local score = scores[j]
  if not score or tonumber(score) > now then
    stale = stale + 1
  else
    local pl, bg, mi, ap = device_policy(KEYS[3 + j])
    if not pl and not bg then
      missing = missing + 1
      local raw = raws[j]
      if raw then
        local _, k, _, _, _, _, _, _, _, _, PE = state_of(raw)
        if k > 0 then
          for _, q in ipairs(ids_of(PE)) do dropped[#dropped + 1] = q end
        end
      end
      gone[#gone + 1] = id
      gone[#gone + 1] = 'p' .. id
      gone[#gone + 1] = 'a' .. id
      zrem[#zrem + 1] = id
    else
      local pol = defAndroid
      if ap then pol = policy_of(ap, pl) elseif pl == 'ios' then pol = defIOS end
      local raw = raws[j]
      local r
      if raw then
        local m = memo[pol]
        if not m then m = {}; memo[pol] = m end
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
          for _, q in ipairs(r.drop) do dropped[#dropped + 1] = q end
        else
          queued = queued + 1
          jobs_add(KEYS[3], JOB_HEAD .. id .. r.job)
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
return {queued, resched, skipped, missing, stale, dropped}
