-- admit.lua checks and reserves the send time of a batch of attempts of
-- one partition, on the server's TIME (phone.lua and devices.LuaPolicy
-- are prepended).
--
-- KEYS[1]   thr:{pN}
-- KEYS[1+i] dev:{pN}:<id> (devices.Key) of attempt i
-- ARGV[1..3] iOS limit, window ms, min gap ms; ARGV[4..6] Android's
-- ARGV[5+2i], ARGV[6+2i] device id and tag of attempt i; a tag that
--           starts with "!" is an alert: admitted at once, logged without
--           the "!"
--
-- Returns one number per attempt: 0 when admitted (the time is reserved),
-- else the milliseconds to wait. Attempts are decided in order, so a later
-- attempt for the same device sees an earlier one's reservation.
local pols = {
  ios = {k = tonumber(ARGV[1]), w = tonumber(ARGV[2]), gap = tonumber(ARGV[3])},
  android = {k = tonumber(ARGV[4]), w = tonumber(ARGV[5]), gap = tonumber(ARGV[6])},
}
local fields = {}
for i = 1, #KEYS - 1 do fields[i] = 'p' .. ARGV[5 + 2 * i] end
load(KEYS[1], fields)
local out = {}
for i = 1, #KEYS - 1 do
  local tag, field = ARGV[6 + 2 * i], fields[i]
  local alert = string.sub(tag, 1, 1) == '!'
  if alert then tag = string.sub(tag, 2) end
  local raw = get(field)
  if not raw then
    -- Nothing may have reached the phone within the window: no policy
    -- to read.
    put(field, tag .. RS .. now)
    out[i] = 0
  else
    local pl, _, mi = device_policy(KEYS[1 + i])
    local pol = pols.android
    if pl == 'ios' then pol = pols.ios end
    local gap = math.max(pol.gap, (tonumber(mi) or 0) * 1000)
    local es = entries(raw)
    local others = {}
    for _, e in ipairs(es) do
      if e[1] ~= tag then others[#others + 1] = e end
    end
    table.sort(others, function(a, b) return a[2] > b[2] end)
    local at = now
    if others[1] then at = math.max(at, others[1][2] + gap) end
    if others[pol.k] then at = math.max(at, others[pol.k][2] + pol.w) end
    if at > now and not alert then
      out[i] = at - now
    else
      others[#others + 1] = {tag, now}
      put(field, encode(others, pol.k, math.max(pol.w, gap)))
      out[i] = 0
    end
  end
end
save(KEYS[1])
return out
