-- claimsub.lua claims the token index entry for a device just written
-- under a fresh id and, in the same atomic step, sets its subscription
-- bits and marks them applied. Single server only: the keys span slots.
-- Nobody else knows the fresh id before the claim, so no other writer can
-- have changed its feeds: the bits are those of version 1.
--
-- KEYS[1] token shard (tok:{sN})
-- KEYS[2] the new device hash (dev:{pN}:<id>)
-- KEYS[3..] subscription chunks of the device's feeds
-- ARGV[1] token digest (index field)
-- ARGV[2] device id
-- ARGV[3] id the entry may hold and be overwritten ("" = only if unset)
-- ARGV[4] the device's bit offset within a chunk
--
-- Returns 0 when the entry now holds ARGV[2] (bits set), -1 when the
-- device hash does not exist (nothing written), otherwise the id the entry
-- holds (as a string; nothing written).
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[2] and cur ~= ARGV[3] then return cur end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
for i = 3, #KEYS do
  redis.call('SETBIT', KEYS[i], ARGV[4], 1)
end
redis.call('HDEL', KEYS[2], 'bp')
return 0
