-- stale.lua marks devices that the stale sweep nudged
-- (Registry.MarkNudged).
--
-- KEYS[1..n]  dev:{pN}:<id>  device hashes, all of one partition
-- ARGV        none
--
-- Sets field sn of each hash that exists to Redis's now (unix ms); a hash
-- that is gone (deleted, pruned) is not recreated.
--
-- Returns the number of hashes marked.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HSET', KEYS[i], 'sn', now)
    n = n + 1
  end
end
return n
