-- add.lua: schedules one sync, deciding "in the future" and "within the
-- horizon" on Redis's clock, so replicas whose clocks disagree agree.
--
-- KEYS[1] sched:{sched}:due     ZSET  id -> due time (unix ms)
-- KEYS[2] sched:{sched}:syncs   HASH  id -> the sync (JSON)
-- ARGV[1] sync id
-- ARGV[2] send_at, unix ms
-- ARGV[3] horizon, ms: send_at must be at most now + horizon
-- ARGV[4] most syncs scheduled at once
-- ARGV[5] the sync, JSON
--
-- Returns 1 scheduled, 0 the id is already scheduled, -1 send_at is not in
-- the future, -2 send_at is beyond the horizon, -3 too many are scheduled.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = tonumber(ARGV[2])
if at <= now then return -1 end
if at > now + tonumber(ARGV[3]) then return -2 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return -3 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
redis.call('ZADD', KEYS[1], at, ARGV[1])
return 1
