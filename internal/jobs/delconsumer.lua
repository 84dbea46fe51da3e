-- delconsumer.lua removes a consumer from the group if it has no pending
-- jobs (checked in the same step, so no pending job is ever dropped).
--
-- KEYS[1] stream
-- ARGV[1] group, ARGV[2] consumer
--
-- Returns 1 when the consumer was removed, 0 when it still has jobs.
local pe = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if pe[1] then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
