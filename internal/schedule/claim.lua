-- claim.lua: takes the scheduled syncs that are due on Redis's clock. Each
-- one taken is leased to the caller: its due time moves to the end of the
-- lease and its claim records the caller's token. A runner that dies before
-- it finishes a sync leaves the claim to expire; the sync is then due again
-- and the next runner takes it (submitting a sync is idempotent by its id).
--
-- KEYS[1] sched:{sched}:due     ZSET
-- KEYS[2] sched:{sched}:syncs   HASH
-- KEYS[3] sched:{sched}:claims  HASH  id -> token
-- ARGV[1] lease, ms
-- ARGV[2] most syncs to take
-- ARGV[3] the caller's token
--
-- Returns a flat list: id1, sync1 (JSON), id2, sync2, ...
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local sync = redis.call('HGET', KEYS[2], id)
  if sync then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
    redis.call('HSET', KEYS[3], id, ARGV[3])
    out[#out + 1] = id
    out[#out + 1] = sync
  else
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[3], id)
  end
end
return out
