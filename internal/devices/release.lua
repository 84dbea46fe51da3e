-- release.lua removes a token index entry only if it points at a device.
--
-- KEYS[1] token shard (tok:{sN})
-- ARGV[1] token digest (index field)
-- ARGV[2] device id
--
-- Returns 1 if removed, 0 otherwise.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
