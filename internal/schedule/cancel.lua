-- cancel.lua: cancels a scheduled sync that no runner has taken yet. It
-- runs atomically with claim.lua, so a sync is either cancelled (and never
-- taken) or taken (and the cancel refused), never both.
--
-- KEYS[1] sched:{sched}:due     ZSET
-- KEYS[2] sched:{sched}:syncs   HASH
-- KEYS[3] sched:{sched}:claims  HASH
-- ARGV[1] sync id
--
-- Returns 1 cancelled, 0 not scheduled, -1 already taken (starting).
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return -1 end
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
