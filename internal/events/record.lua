-- record: add to a push outcome counter of an event that still exists (an
-- expired event is not recreated); a sent push also moves the event's last
-- send time forward, on Redis's clock.
--
-- KEYS[1] ev:{id}  HASH  the event
-- ARGV[1] counter field: sent, pruned, failed, superseded, unresponsive or
--         dropped
-- ARGV[2] increment
--
-- Returns 1 if counted, 0 if the event is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if ARGV[1] == 'sent' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '0')
  if now > last then redis.call('HSET', KEYS[1], 'last', now) end
end
return 1
