-- checkpoint: advance an event's cursor and add a window's counts, only if
-- the cursor is still where the planner started the window (a second
-- planner of the same event may have moved it).
--
-- KEYS[1] ev:{id}  HASH  the event
-- ARGV[1] expected cursor (field cur; a missing cur is "0")
-- ARGV[2] next cursor
-- ARGV[3..] pairs of counter field and increment
--
-- Returns 1 if applied, 0 if the cursor had moved, -1 if the event hash is
-- gone (expired): it is not recreated, which would leave it without a TTL.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local cur = redis.call('HGET', KEYS[1], 'cur') or '0'
if cur ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'cur', ARGV[2])
return 1
