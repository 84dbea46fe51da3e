-- lease_commit: write fields of a feed's health hash only while the caller
-- holds the feed's lease (fencing: a replica whose lease expired mid-poll
-- must not overwrite the schedule its successor wrote).
--
-- KEYS[1] feed:{f}:lease   STRING holder token
-- KEYS[2] feed:{f}:health  HASH
-- ARGV[1] the caller's token
-- ARGV[2..] field, value pairs
--
-- Returns 1 when written, 0 when the lease was not the caller's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
return 1
