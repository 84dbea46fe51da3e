-- lease_renew: extend a feed lease if the caller still holds it.
--
-- KEYS[1] feed:{f}:lease  STRING holder token
-- ARGV[1] the caller's token
-- ARGV[2] new time to live, ms
--
-- Returns 1 when renewed, 0 when the lease was not the caller's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
