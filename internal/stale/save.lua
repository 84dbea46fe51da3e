-- save.lua checkpoints the stale sweep and renews its lease, only for the
-- replica that holds the lease.
--
-- KEYS[1]  stale:{sweep}  HASH  the sweep (fields: see claim.lua)
-- ARGV[1]  the caller's token
-- ARGV[2]  lease, ms
-- ARGV[3]  a field to set to Redis's now + ARGV[4] ms ("" for none)
-- ARGV[4]  offset of that field, ms
-- ARGV[5..] field, value pairs to set
--
-- Returns {1, now} when the caller held the lease: the fields are set and
-- the lease runs until now + lease (or is released, if the pairs set own
-- to ""). Returns {0, now} when another replica holds it (or it lapsed and
-- was taken): nothing is written.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local k = KEYS[1]
if redis.call('HGET', k, 'own') ~= ARGV[1] then
  return {0, now}
end
redis.call('HSET', k, 'exp', now + tonumber(ARGV[2]))
if ARGV[3] ~= '' then
  redis.call('HSET', k, ARGV[3], now + tonumber(ARGV[4]))
end
if #ARGV > 4 then
  redis.call('HSET', k, unpack(ARGV, 5))
end
return {1, now}
