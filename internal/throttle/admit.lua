-- admit.lua checks and reserves the send time of a batch of attempts of
-- one partition, on the server's TIME (phone.lua, devices.LuaPolicy and
-- policies.lua are prepended). Each device is held to its app's policy.
--
-- KEYS[1]   thr:{pN}
-- KEYS[1+i] dev:{pN}:<id> (devices.Key) of attempt i
-- ARGV[1..11] policies and the apps' overrides (see policies.lua)
-- ARGV[10+2i], ARGV[11+2i] device id and tag of attempt i; a tag that
--           starts with "!" is an alert: admitted at once, logged without
--           the "!"
--
-- Returns one number per attempt: 0 when admitted (the time is reserved),
-- else the milliseconds to wait. Attempts are decided in order, so a later
-- attempt for the same device sees an earlier one's reservation.
local policy_of, defIOS, defAndroid = policies(1)
local fields = {}
for i = 1, #KEYS - 1 do fields[i] = 'p' .. ARGV[10 + 2 * i] end
load(KEYS[1], fields)
local out = {}
for i = 1, #KEYS - 1 do
  local tag, field = ARGV[11 + 2 * i], fields[i]
  local alert = string.sub(tag, 1, 1) == '!'
  if alert then tag = string.sub(tag, 2) end
  local raw = get(field)
  if not raw then
    -- Nothing may have reached the phone within the window: no policy
    -- to read.
    put(field, tag .. RS .. now)
    out[i] = 0
  else
    local pl, _, mi, ap = device_policy(KEYS[1 + i])
    local pol = defAndroid
    if ap then pol = policy_of(ap, pl) elseif pl == 'ios' then pol = defIOS end
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
