-- admit.lua checks, just before sending, a batch of attempts of one
-- partition: it reads each device at send time, holds back silent pushes
-- to unresponsive devices, and checks and reserves the send time at the
-- phone on the server's TIME (phone.lua, devices.LuaSend, policies.lua are
-- prepended). Each device is held to its app's policy.
--
-- KEYS[1]   thr:{pN}
-- KEYS[2]   unr:{pN} (devices.UnresponsiveKey), the unresponsive counters
-- KEYS[2+i] dev:{pN}:<id> (devices.Key) of attempt i
-- ARGV[1..11] policies and the apps' overrides (see policies.lua)
-- ARGV[12]  ahead, ms: an admitted attempt's time is reserved at now+ahead
-- ARGV[13]  the worker's clock, unix ms, for the unresponsive back-off
-- ARGV[14..16] devices.Unresponsive: After, Base (ms), Cap (ms)
-- ARGV[15+2i], ARGV[16+2i] device id and tag of attempt i; a tag that
--           starts with "!" is an alert: admitted at once, logged without
--           the "!", never counted or held as unresponsive
--
-- Returns one string per attempt, its parts joined by US (one bulk string
-- costs Redis and the client far less than a nested reply):
--   0 tk pv pl en ap  admitted (the time is reserved; a silent push is
--                     counted at its device), with the device's target
--                     fields ("" when absent)
--   1 ms              not admitted: wait ms
--   2                 the device is gone or opted out: nothing reserved
--   3 tk pv pl en ap  a silent push to an unresponsive device: held back
--                     (nothing reserved or counted)
-- Attempts are decided in order, so a later attempt for the same device
-- sees an earlier one's reservation.
local policy_of, defIOS, defAndroid = policies(1)
local ahead, wnow = tonumber(ARGV[12]), tonumber(ARGV[13])
local un_n, un_base, un_cap = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
local n = #KEYS - 2
local fields = {}
for i = 1, n do fields[i] = 'p' .. ARGV[15 + 2 * i] end
load(KEYS[1], fields)
local out = {}
local function target(code, d)
  return code .. US .. d[D_TK] .. US .. (d[D_PV] or '') .. US .. (d[D_PL] or '') .. US .. (d[D_EN] or '') ..
    US .. (d[D_AP] or '')
end
for i = 1, n do
  local key, tag, field = KEYS[2 + i], ARGV[16 + 2 * i], fields[i]
  local alert = string.sub(tag, 1, 1) == '!'
  if alert then tag = string.sub(tag, 2) end
  local d = device_target(key)
  if not d[D_TK] or d[D_BG] == '0' then
    out[i] = '2'
  elseif not alert and device_held(d, tag, wnow, un_n, un_base, un_cap) then
    out[i] = target('3', d)
  else
    local raw, at, others, k, keep = get(field), now, {}, 1, 0
    if raw then
      local pol = defAndroid
      local ap, pl = d[D_AP], d[D_PL]
      if ap then pol = policy_of(ap, pl) elseif pl == 'ios' then pol = defIOS end
      local gap = math.max(pol.gap, (tonumber(d[D_MI]) or 0) * 1000)
      for _, e in ipairs(entries(raw)) do
        if e[1] ~= tag then others[#others + 1] = e end
      end
      table.sort(others, function(a, b) return a[2] > b[2] end)
      if others[1] then at = math.max(at, others[1][2] + gap) end
      if others[pol.k] then at = math.max(at, others[pol.k][2] + pol.w) end
      k, keep = pol.k, math.max(pol.w, gap)
    end
    if at > now and not alert then
      out[i] = '1' .. US .. (at - now)
    else
      if raw then
        others[#others + 1] = {tag, now + ahead}
        put(field, encode(others, k, keep))
      else
        -- Nothing may have reached the phone within the window: no policy
        -- to apply.
        put(field, tag .. RS .. (now + ahead))
      end
      if not alert then device_count(key, KEYS[2], d, tag, wnow, un_n) end
      out[i] = target('0', d)
    end
  end
end
save(KEYS[1])
return out
