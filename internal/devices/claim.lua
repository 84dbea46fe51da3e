-- claim.lua points a token index entry at a device id.
--
-- KEYS[1] token shard (tok:{sN})
-- ARGV[1] token digest (index field)
-- ARGV[2] device id to store
-- ARGV[3] id the entry may hold and be overwritten ("" = only if unset)
--
-- Returns 0 when the entry now holds ARGV[2] (set, already equal, or
-- overwritten), otherwise the id it holds (as a string).
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or cur == ARGV[2] or cur == ARGV[3] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 0
end
return cur
