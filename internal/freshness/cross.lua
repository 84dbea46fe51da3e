-- cross.lua counts one device that synced a feed past some of its
-- tracked items, and records the time-to-fresh of each share of the
-- item's audience the count reaches.
--
-- KEYS[1] tracked items (ZSET, member and score: cursor)
-- KEYS[2] item states (HASH, cursor -> JSON state; see track.lua)
-- ARGV[1] the device's platform
-- ARGV[2] the cursor it had (exclusive; -1: never synced)
-- ARGV[3] the cursor it has now (inclusive)
-- ARGV[4] when it synced, unix ms
-- ARGV[5] the most items counted (the newest in the range): bounds the
--         work of a receipt from a device that was away for long
-- ARGV[6..] the shares recorded, in percent (50, 90, 99)
--
-- An item counts the device only if the platform has an audience in its
-- state; a share s is reached when the count first equals
-- ceil(audience * s / 100), and its latency is sync time - publish time
-- (at least 0).
--
-- Returns {cursor, share, latency_ms, ...}: the shares reached by this call.
local pl, at = ARGV[1], tonumber(ARGV[4])
local from = tonumber(ARGV[2])
local lo = '(' .. ARGV[2]
if from < 0 then lo = '-inf' end
local out = {}
for _, c in ipairs(redis.call('ZRANGE', KEYS[1], ARGV[3], lo, 'BYSCORE', 'REV', 'LIMIT', 0, ARGV[5])) do
  local raw = redis.call('HGET', KEYS[2], c)
  if raw then
    local st = cjson.decode(raw)
    local aud = st.d[pl]
    if aud and aud > 0 then
      local n = (st.n[pl] or 0) + 1
      st.n[pl] = n
      for i = 6, #ARGV do
        local share = tonumber(ARGV[i])
        if n == math.ceil(aud * share / 100) then
          local lat = math.max(at - st.p, 0)
          st.l[pl .. ':' .. ARGV[i]] = lat
          out[#out + 1] = tonumber(c)
          out[#out + 1] = share
          out[#out + 1] = lat
        end
      end
      redis.call('HSET', KEYS[2], c, cjson.encode(st))
    end
  end
end
return out
