-- settle.lua marks the subscription bits of a device as applied, if the
-- device's bits version is still the one the caller applied. On a single
-- server the caller passes the bitmap chunks too and the script writes the
-- bits itself, so the check and the bits are one atomic step. On a cluster
-- the chunks live in other slots: the caller writes the bits first (SETBIT
-- pipeline) and passes only the device hash and the feeds it set.
--
-- KEYS[1] device hash (dev:{pN}:<id>)
-- KEYS[2..] subscription chunks (single server only): the first ARGV[3]
--           get the device's bit set, the others get it cleared
-- ARGV[1] the bits version ("bv") the caller's bits were built from
-- ARGV[2] the device's bit offset within a chunk
-- ARGV[3] how many of KEYS[2..] to set
-- ARGV[4] "1" when the caller already wrote bits (cluster), else "0"
-- ARGV[5..] the feeds whose bits the caller set (cluster)
--
-- Returns 1 when settled ("bp" and "xf" removed), 0 when the hash is gone
-- (nothing written), otherwise the whole hash (HGETALL): the feeds changed
-- since the caller read them; build the chunk list again and retry.
--
-- When a caller that already wrote bits finds a newer version, its writes
-- may have landed after that version was applied: the feeds it set that
-- the device no longer lists join "xf", and bv is bumped and bp set, so
-- that the bits are applied again (and a concurrent settle of the version
-- it overtook fails too).
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return 0 end
if (redis.call('HGET', h, 'bv') or '0') ~= ARGV[1] then
  if ARGV[4] == '1' then
    local fd = redis.call('HGET', h, 'fd') or ''
    local keep, xf = {}, {}
    for f in string.gmatch(fd, '[^,]+') do keep[f] = true end
    for f in string.gmatch(redis.call('HGET', h, 'xf') or '', '[^,]+') do
      if not keep[f] then
        keep[f] = true
        xf[#xf + 1] = f
      end
    end
    for i = 5, #ARGV do
      if not keep[ARGV[i]] then
        keep[ARGV[i]] = true
        xf[#xf + 1] = ARGV[i]
      end
    end
    if #xf > 0 then redis.call('HSET', h, 'xf', table.concat(xf, ',')) end
    redis.call('HINCRBY', h, 'bv', 1)
    redis.call('HSET', h, 'bp', '1')
  end
  return redis.call('HGETALL', h)
end
local set = tonumber(ARGV[3])
for i = 2, #KEYS do
  redis.call('SETBIT', KEYS[i], ARGV[2], (i - 1 <= set) and 1 or 0)
end
redis.call('HDEL', h, 'bp', 'xf')
return 1
