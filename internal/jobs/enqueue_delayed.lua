-- enqueue_delayed.lua adds a job to the retry set, due after a delay on
-- Redis's clock (now.lua is prepended).
--
-- KEYS[1] retry set
-- ARGV[1] delay ms
-- ARGV[2] uniq (keeps equal payloads apart)
-- ARGV[3] payload
--
-- Returns the due time in unix ms.
local due = nowUp + tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], due, '0|' .. now .. '|' .. ARGV[2] .. '|' .. ARGV[3])
return due
