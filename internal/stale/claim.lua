-- claim.lua takes (or renews) the lease of the stale sweep, starting the
-- next sweep when the last one is done and the next is due.
--
-- KEYS[1]  stale:{sweep}  HASH  the sweep (keys.StaleSweep), fields:
--            n    sweep number (counts up from 1)
--            ph   phase: count | send | done
--            cur  next device id the walk looks at
--            ord  stale devices found before cur (count), or the ordinal
--                 of the next stale device (send)
--            tot  stale devices the count phase found
--            at   the sweep's start (unix ms): a device left alone since
--                 before at - NUDGE_STALE_AFTER is stale
--            t0   start of the send phase (unix ms)
--            max  the highest device id when the sweep started
--            next earliest start of the next sweep (unix ms)
--            own  lease holder's token ("" when released)
--            exp  lease end (unix ms)
-- ARGV[1]  the caller's token
-- ARGV[2]  lease, ms
-- ARGV[3]  the highest device id now (the walk's bound if a sweep starts)
--
-- Times are Redis's (TIME).
--
-- Returns {0, now, wait}: another replica holds the lease, or the last
-- sweep is done and the next starts in wait ms; nothing was written.
-- Otherwise the caller holds the lease until now + lease:
-- {1, now, n, ph, cur, ord, tot, at, t0, max} (numbers as strings).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local k = KEYS[1]
local own, exp, ph, nxt = unpack(redis.call('HMGET', k, 'own', 'exp', 'ph', 'next'))
local lease = tonumber(ARGV[2])
if own and own ~= '' and own ~= ARGV[1] and tonumber(exp) > now then
  return {0, now, tonumber(exp) - now}
end
if not ph or ph == 'done' then
  if nxt and tonumber(nxt) > now then
    return {0, now, tonumber(nxt) - now}
  end
  local n = tonumber(redis.call('HGET', k, 'n') or '0') + 1
  redis.call('HSET', k, 'n', n, 'ph', 'count', 'cur', 0, 'ord', 0, 'tot', 0,
    'at', now, 't0', 0, 'max', ARGV[3])
end
redis.call('HSET', k, 'own', ARGV[1], 'exp', now + lease)
local v = redis.call('HMGET', k, 'n', 'ph', 'cur', 'ord', 'tot', 'at', 't0', 'max')
return {1, now, v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]}
