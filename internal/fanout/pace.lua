-- pace: reserve wake slots of one feed at a rate shared by every planner
-- replica (NUDGE_WAKE_RATE), on this server's clock.
--
-- KEYS[1] pace:{<feed>}  STRING  the feed's next free slot, unix µs; it
--                                expires a second after that slot, so an
--                                idle feed keeps no state
-- ARGV[1] n: the slots to reserve (pushes about to be planned)
-- ARGV[2] the interval between two slots, µs (1e6 / rate)
--
-- Returns the wait in µs (≥ 0) until the first reserved slot: the caller
-- plans its n pushes then. The next caller's slots start n intervals later.
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local n = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local at = tonumber(redis.call('GET', KEYS[1]) or '0')
if at < now then
  at = now
end
local nextFree = at + n * interval
redis.call('SET', KEYS[1], string.format('%d', nextFree), 'PX', math.floor((nextFree - now) / 1000) + 1000)
return at - now
