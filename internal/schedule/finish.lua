-- finish.lua: forgets a scheduled sync once it was submitted, if the
-- caller's claim is still the current one (a runner whose lease ran out
-- leaves the sync to the runner that took it next).
--
-- KEYS[1] sched:{sched}:due     ZSET
-- KEYS[2] sched:{sched}:syncs   HASH
-- KEYS[3] sched:{sched}:claims  HASH
-- ARGV[1] sync id
-- ARGV[2] the caller's token
--
-- Returns 1 forgotten, 0 another claim holds the sync (or it is gone).
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
