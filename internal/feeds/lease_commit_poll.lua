-- lease_commit_poll: lease_commit for the outcome of a poll. When the
-- feed's poll generation moved on since the poll began (a PollNow arrived
-- while it ran), the feed is made due at once, whatever next_poll the
-- fields set.
--
-- KEYS[1] feed:{f}:lease   STRING holder token
-- KEYS[2] feed:{f}:health  HASH
-- ARGV[1] the caller's token
-- ARGV[2] the poll generation (field poll_gen) the poll began with
-- ARGV[3..] field, value pairs
--
-- Returns 1 when written, 2 when written and made due again, 0 when the
-- lease was not the caller's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
if (redis.call('HGET', KEYS[2], 'poll_gen') or '0') ~= ARGV[2] then
  redis.call('HSET', KEYS[2], 'next_poll', 0)
  return 2
end
return 1
