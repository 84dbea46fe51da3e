-- sync.lua records a receipt of any source on a device hash: the time of
-- the device's last sync (sy, Redis's clock), the cursor it now has per
-- feed (c:<feed>, never lowered) and the end of its unanswered pushes
-- (device_resume: un and its bookkeeping deleted, the unresponsive count
-- moved). Needs the resume.lua fragment (devices.LuaResume) before it.
--
-- KEYS[1] device hash (dev:{pN}:<id>)
-- KEYS[2] unr:{pN}, the partition's unresponsive counters
-- ARGV    feed, cursor pairs: the cursors the app now has. A feed the
--         device does not follow (not in fd) is ignored; a cursor at or
--         below the stored one leaves it as it is.
--
-- Returns nil when the device is gone, else
--   {platform, background, now_ms, feed_1, from_1, to_1, ...}
-- with background "1" or "0" (unset is on), now_ms the time written to
-- sy, and one triple per feed whose cursor moved forward: from is the
-- cursor it had (-1: never synced), to the one it has now.
local v = redis.call('HMGET', KEYS[1], 'tk', 'pl', 'bg', 'fd')
if not v[1] then return false end
local follows = {}
for f in string.gmatch(v[4] or '', '[^,]+') do follows[f] = true end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {v[2] or '', v[3] or '1', now}
for i = 1, #ARGV, 2 do
  local f, to = ARGV[i], tonumber(ARGV[i + 1])
  if follows[f] then
    local field = 'c:' .. f
    local from = tonumber(redis.call('HGET', KEYS[1], field) or '-1')
    if to > from then
      redis.call('HSET', KEYS[1], field, ARGV[i + 1])
      out[#out + 1] = f
      out[#out + 1] = from
      out[#out + 1] = to
    end
  end
end
redis.call('HSET', KEYS[1], 'sy', now)
device_resume(KEYS[1], KEYS[2])
return out
