-- send.lua is the fragment through which the budget at the phone reads a
-- device at send time and counts its silent pushes (devices.LuaSend); a
-- script that includes it names the device hash with devices.Key and the
-- partition's counters with devices.UnresponsiveKey, both in KEYS (one
-- slot). See responsive.go for what makes a device unresponsive.
--
-- device_target(key)
--   key      the device hash (devices.Key(id))
--   returns  the fields a push needs, read with one HMGET, as an array
--            indexed by the constants below: D_TK token, D_PV provider,
--            D_PL platform, D_EN environment, D_BG background flag, D_AP
--            app, D_MI min interval; D_UN, D_UK of the unresponsive count.
--            Absent fields are false. The device is gone (deleted,
--            pruned) when d[D_TK] is false, opted out when d[D_BG] is "0".
--
-- device_held(d, tag, now, n, base, cap)
--   d        device_target's array
--   tag      8 hex digits of the push's collapse id
--   now      the worker's clock, unix ms
--   n, base, cap  devices.Unresponsive: After, Base and Cap (ms)
--   returns  true when the silent push is held back: the device has n or
--            more pushes since its last receipt and its next probe
--            (base*2^k past n, at most cap, after the last push counted)
--            is not due. A push already counted under the same tag (a
--            retry or a redelivery) is never held.
--
-- device_count(key, counters, d, tag, now, n)
--   Counts the silent push at the device: "un" +1 and "uk" = now:tag,
--   unless the last push counted has the same tag (counted once per push);
--   a device that reaches n is marked ("ux", its platform) and counted in
--   counters (unr:{pN}).
local D_TK, D_PV, D_PL, D_EN, D_BG, D_AP, D_MI, D_UN, D_UK = 1, 2, 3, 4, 5, 6, 7, 8, 9

local function device_target(key)
  return redis.call('HMGET', key, 'tk', 'pv', 'pl', 'en', 'bg', 'ap', 'mi', 'un', 'uk')
end

-- device_last returns the time and tag of the last push counted ("uk" is
-- "<ms>:<8 hex digits>").
local function device_last(d)
  local uk = d[D_UK]
  if not uk then return 0, nil end
  return tonumber(string.sub(uk, 1, -10)) or 0, string.sub(uk, -8)
end

local function device_held(d, tag, now, n, base, cap)
  local un = tonumber(d[D_UN])
  if not un or un < n then return false end
  local at, last = device_last(d)
  if last == tag then return false end
  return now < at + math.min(base * 2 ^ math.min(un - n, 40), cap)
end

local function device_count(key, counters, d, tag, now, n)
  local _, last = device_last(d)
  if last == tag then return end
  local un = (tonumber(d[D_UN]) or 0) + 1
  redis.call('HSET', key, 'un', un, 'uk', now .. ':' .. tag)
  -- "ux" is read only when the device reaches n: most pushes never do.
  if un >= n and redis.call('HSETNX', key, 'ux', d[D_PL] or 'other') == 1 then
    redis.call('HINCRBY', counters, d[D_PL] or 'other', 1)
  end
end
