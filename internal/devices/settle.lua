-- settle.lua marks the subscription bits of a device as applied, if the
-- device's bits version is still the one the caller applied. On a single
-- server the caller passes the bitmap chunks too and the script writes the
-- bits itself, so the check and the bits are one atomic step. On a cluster
-- the chunks live in other slots: the caller writes the bits first (SETBIT
-- pipeline) and passes only the device hash.
--
-- KEYS[1] device hash (dev:{pN}:<id>)
-- KEYS[2..] subscription chunks (single server only): the first ARGV[3]
--           get the device's bit set, the others get it cleared
-- ARGV[1] the bits version ("bv") the chunk list was built from
-- ARGV[2] the device's bit offset within a chunk
-- ARGV[3] how many of KEYS[2..] to set
--
-- Returns 1 when settled ("bp" and "xf" removed), 0 when the hash is gone
-- (nothing written), otherwise the whole hash (HGETALL): the feeds changed
-- since the caller read them; build the chunk list again and retry.
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return 0 end
if (redis.call('HGET', h, 'bv') or '0') ~= ARGV[1] then
  return redis.call('HGETALL', h)
end
local set = tonumber(ARGV[3])
for i = 2, #KEYS do
  redis.call('SETBIT', KEYS[i], ARGV[2], (i - 1 <= set) and 1 or 0)
end
redis.call('HDEL', h, 'bp', 'xf')
return 1
