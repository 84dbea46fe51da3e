-- lease_release: delete a feed lease if the caller still holds it.
--
-- KEYS[1] feed:{f}:lease  STRING holder token
-- ARGV[1] the caller's token
--
-- Returns 1 when released, 0 when the lease was not the caller's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
